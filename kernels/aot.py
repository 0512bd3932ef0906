"""Ahead-of-time compile of every shipped kernel configuration, with resource checks (no GPU needed).

    python -m kernels.aot [--arch 89 --arch 90] [--quick] [--kernel NAME ...]

Each configuration is compiled with Triton's ``ASTSource`` + ``GPUTarget`` (pointers and ``stride*``
arguments marked 16-divisible, as a real launch specializes them), the PTX is run through Triton's
bundled ``ptxas -v``, and a table (kernel, config, arch, regs, spill bytes, shared bytes, tensor-core
instructions) is printed. Exit status 1 on any spill, shared memory over the arch's per-block limit,
a block needing more than 64K registers, or a half-precision dot kernel without mma/wgmma; exit 2 on
bad arguments. The interpreter patches ``triton.language`` globally, so when TRITON_INTERPRET is
set this module re-runs itself in a child process without it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Per-block shared memory limits (opt-in maximum): sm_89 (RTX 4090) 99 KB, sm_90 (H100) 227 KB.
SHARED_LIMIT = {89: 101376, 90: 232448}
REGISTERS_PER_SM = 65536


@dataclass(frozen=True)
class Result:
    kernel: str
    config: str
    arch: int
    regs: int
    spill_stores: int
    spill_loads: int
    stack: int
    shared: int
    mma: str
    warnings: tuple[str, ...]
    problems: tuple[str, ...]


def _specs(quick: bool, names: list[str] | None, parser: argparse.ArgumentParser):
    from kernels import add_rms_norm, rope_attention, swiglu

    specs = rope_attention.aot_specs(quick) + swiglu.aot_specs(quick) + add_rms_norm.aot_specs(quick)
    if names:
        known = {s.kernel for s in specs}
        unknown = sorted(set(names) - known)
        if unknown:
            parser.error(f"unknown kernel(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")  # exit 2
        specs = [s for s in specs if s.kernel in names]
    return specs


def _signature(spec) -> tuple[dict[str, str], dict[tuple[int, ...], list]]:
    signature, attrs = {}, {}
    for i, arg in enumerate(spec.fn.arg_names):
        if arg in spec.constexprs:
            signature[arg] = "constexpr"
        elif arg in spec.pointers:
            signature[arg] = "*" + spec.pointers[arg]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif arg in spec.floats:
            signature[arg] = "fp32"
        else:
            signature[arg] = "i32"
            if arg.startswith("stride"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def _ptxas(ptx: str, arch_name: str) -> tuple[dict[str, int], tuple[str, ...]]:
    from triton import knobs

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        proc = subprocess.run([knobs.nvidia.ptxas.path, "-v", f"--gpu-name={arch_name}", path, "-o", os.devnull],
                              capture_output=True, text=True)  # fmt: skip
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed for {arch_name}:\n{log}")

    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    counts = {
        "regs": grab(r"Used (\d+) registers"),
        "spill_stores": grab(r"(\d+) bytes spill stores"),
        "spill_loads": grab(r"(\d+) bytes spill loads"),
        "stack": grab(r"(\d+) bytes stack frame"),
    }
    warnings = tuple(line.strip() for line in log.splitlines() if "warning" in line.lower())
    return counts, warnings


def compile_one(spec, arch: int) -> Result:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, attrs = _signature(spec)
    src = ASTSource(fn=spec.fn, signature=signature, constexprs=spec.constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})  # fmt: skip
    ptx = compiled.asm["ptx"]
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M)
    counts, warnings = _ptxas(ptx, target.group(1) if target else f"sm_{arch}")
    mma = "wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if re.search(r"\bmma\.sync", ptx) else "-"
    shared = int(compiled.metadata.shared)

    problems = []
    if counts["spill_stores"] or counts["spill_loads"]:
        problems.append(f"spills {counts['spill_stores']}/{counts['spill_loads']} B")
    if shared > SHARED_LIMIT[arch]:
        problems.append(f"shared {shared} B > {SHARED_LIMIT[arch]} B")
    if counts["regs"] * 32 * spec.num_warps > REGISTERS_PER_SM:
        problems.append(f"{counts['regs']} regs x {32 * spec.num_warps} threads > {REGISTERS_PER_SM}")
    if spec.needs_mma and mma == "-":
        problems.append("half-precision dot without tensor-core mma")
    return Result(spec.kernel, spec.config, arch, counts["regs"], counts["spill_stores"], counts["spill_loads"],
                  counts["stack"], shared, mma, warnings, tuple(problems))  # fmt: skip


def format_table(results: list[Result]) -> str:
    header = f"{'kernel':<18} {'config':<30} {'arch':<6} {'regs':>4} {'spill st/ld B':>13} {'stack':>5} " \
             f"{'shared B':>8} {'mma':<8} status"  # fmt: skip
    lines = [header, "-" * len(header)]
    for r in results:
        status = "ok" if not r.problems else "FAIL: " + "; ".join(r.problems)
        spills = f"{r.spill_stores}/{r.spill_loads}"
        lines.append(f"{r.kernel:<18} {r.config:<30} sm_{r.arch:<3} {r.regs:>4} {spills:>13} {r.stack:>5} "
                     f"{r.shared:>8} {r.mma:<8} {status}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT),
                        help="compute capability to compile for (repeatable; default: 89 and 90)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="one representative config per kernel (HRM shapes, bf16)")
    parser.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    args = parser.parse_args(argv)

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        cmd = [sys.executable, "-m", "kernels.aot", *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(cmd, env=env).returncode

    from tqdm import tqdm

    archs = args.arch or [89, 90]
    specs = _specs(args.quick, args.kernel, parser)
    results, mma_ptx_seen = [], set()
    for spec in tqdm([(s, a) for a in archs for s in specs], desc="AOT compile", unit="cfg", file=sys.stderr):
        results.append(compile_one(*spec))
    print(format_table(results))
    for r in results:
        for w in r.warnings:
            print(f"ptxas ({r.kernel} {r.config} sm_{r.arch}): {w}")
        if r.mma != "-":
            mma_ptx_seen.add((r.arch, r.mma))
    print("tensor-core instructions in the PTX:", ", ".join(f"sm_{a}: {m}" for a, m in sorted(mma_ptx_seen)) or "none")
    failed = [r for r in results if r.problems]
    print(f"{len(results) - len(failed)}/{len(results)} configurations ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
