"""The markdown summary of a ``python -m bench.gpu_check`` report (the dict written to gpu_check.json)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _step_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, runs in results.items():
        if not (key.endswith("train steps") or key.endswith("eval segments")) or not isinstance(runs, list):
            continue
        kind = "train step" if key.endswith("train steps") else "eval segment"
        preset = key.rsplit(" ", 2)[0]
        for r in runs:
            rows.append([preset, kind, r["impl"], r["rows"], r.get("ms"), r.get("tokens_per_s"), r.get("tflops"),
                         r.get("pct_of_peak"), r.get("peak_gib"), r.get("first_step_s", r.get("first_episode_s"))])
    return rows


def markdown(report: dict[str, Any]) -> str:
    """Stage table, failed checks, kernel error ratios and timings, step rates, the train.run numbers."""
    stages = report.get("stages", {})
    env = stages.get("env", {}).get("results", {})
    gpu = env.get("gpu", {})
    title = "gpu_check (dry run on CPU: the numbers mean nothing)" if report.get("dry") else "gpu_check"
    out = [f"# {title}", "",
           f"{report.get('started', '')}; GPU {gpu.get('name', '-')} (capability {gpu.get('capability', '-')}), "
           f"driver/smi {env.get('nvidia_smi', '-')}; python {env.get('python', '-')}, torch {env.get('torch', '-')}, "
           f"triton {env.get('triton', '-')}, CUDA {env.get('torch_cuda', '-')}; budget {report.get('budget_s')} s, "
           f"stages took {report.get('seconds', '-')} s.", ""]  # fmt: skip
    setup = report.get("setup") or {}
    if setup:
        out += ["Setup (bench/gpu_check.sh): " + ", ".join(f"{k} {v}" for k, v in setup.items()), ""]
    out += ["## Stages", ""]
    out += _table(["stage", "status", "seconds", "time box s", "checks ok", "note"],
                  [[name, s.get("status"), s.get("seconds"), s.get("time_box_s"),
                    f"{sum(c['ok'] for c in s.get('checks', []))}/{len(s.get('checks', []))}",
                    s.get("error") or s.get("reason") or "; ".join(s.get("notes", []))[:200]]
                   for name, s in stages.items()])  # fmt: skip
    failed = [(name, c) for name, s in stages.items() for c in s.get("checks", []) if not c["ok"]]
    if failed:
        out += ["## Failed checks", ""]
        out += [f"- {name}: {c['name']}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in c.items()
                                                       if k not in ("name", "ok"))[:600]
                for name, c in failed]  # fmt: skip
        out.append("")
    kernels = stages.get("kernels", {})
    ratios = [[c["name"], r["t"], r["kernel_err"], r["ref_err"], r["ratio"], "ok" if c["ok"] else "FAIL"]
              for c in kernels.get("checks", []) for r in c.get("rows", [])]  # fmt: skip
    if ratios:
        out += ["## Kernels vs reference (error vs fp64; rule: kernel <= 2x reference + floor)", ""]
        out += _table(["case", "tensor", "kernel err", "reference err", "ratio", ""], ratios)
    timings = kernels.get("results", {}).get("timings", [])
    if timings:
        out += ["## Kernel timings (bf16 on GPU; TFLOP/s and % of the device's dense bf16 peak)", ""]
        out += _table(["op", "shape", "mode", "provider", "ms", "TFLOP/s", "% peak", "error"],
                      [[t["op"], t["shape"], t["mode"], t["provider"], t.get("ms"), t.get("tflops"),
                        t.get("pct_of_peak"), t.get("error")] for t in timings])  # fmt: skip
    steps = [row for name in ("train_seed", "train_paper", "eval_seed", "eval_paper")
             for row in _step_rows(stages.get(name, {}).get("results", {}))]  # fmt: skip
    if steps:
        out += ["## Training and eval steps (model FLOPs from hrm_fast/flops.py; dropout 0)", ""]
        out += _table(["preset", "what", "impl", "batch", "ms", "tokens/s", "TFLOP/s", "MFU %", "peak GiB",
                       "first call s"], steps)  # fmt: skip
    same = [[name, c["name"], "ok" if c["ok"] else "FAIL",
             ", ".join(f"{k} {_fmt(v)}" for k, v in c.items() if k not in ("name", "ok"))]
            for name in ("act_op", "train_seed", "train_paper", "eval_seed", "eval_paper")
            for c in stages.get(name, {}).get("checks", []) if "==" in c["name"]]  # fmt: skip
    if same:
        out += ["## Equality checks", ""]
        out += _table(["stage", "check", "", "numbers"], same)
    run = stages.get("train_run", {}).get("results", {})
    if run:
        out += ["## train.run", "", f"`{run.get('command', '')}`: wall {run.get('wall_s', '-')} s, steady step time "
                f"{_fmt(run.get('steady step_time_s (median after the first log window)'))} s.", ""]  # fmt: skip
    return "\n".join(out) + "\n"
