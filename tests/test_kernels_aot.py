"""Ahead-of-time compile checks (``python -m kernels.aot``): no spills, shared memory within the per-block
limit, tensor-core MMA on the half-precision attention kernels.

They run in a subprocess without TRITON_INTERPRET (the interpreter patches triton.language globally).
No GPU is needed: Triton compiles for a GPUTarget and its bundled ptxas reports the resources.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("attn_fwd", "attn_bwd_delta", "attn_bwd_dkdv", "attn_bwd_dq", "swiglu_fwd", "swiglu_bwd",
           "add_rms_norm_fwd", "add_rms_norm_bwd")  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _python(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    print(proc.stdout)
    return proc


def test_aot_every_kernel_sm89():
    """One shipped configuration of every kernel (the HRM path: head_dim 64, bf16) compiles cleanly for sm_89."""
    proc = _python(["-m", "kernels.aot", "--arch", "89", "--quick"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split() and line.split()[0] in KERNELS]
    assert {r[0] for r in rows} == set(KERNELS)
    for r in rows:
        assert r[-1] == "ok", r
        if r[0] in ("attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq"):
            assert "mma.sync" in r, r  # bf16 products on tensor cores


def test_aot_check_can_fail():
    """An oversized attention tile must be reported (spills) and fail the check."""
    script = (
        "from kernels import rope_attention as ra\n"
        "from kernels._common import AotSpec\n"
        "from kernels.aot import compile_one\n"
        "t = {'QKV': 'bf16', 'COS': 'fp32', 'SIN': 'fp32', 'OUT': 'bf16', 'LSE': 'fp32'}\n"
        "c = {'HEAD_DIM': 128, 'HALF_PAD': 64, 'D_PAD': 128, 'BLOCK_M': 128, 'BLOCK_N': 64, 'DOT_PREC': 'tf32',\n"
        "     'SAME_HALVES': False}\n"
        "r = compile_one(AotSpec('attn_fwd', 'oversized', ra._attn_fwd, t, ('qk_scale',), c, 8, 2, True), 89)\n"
        "print('PROBLEMS', r.problems)\n"
    )
    proc = _python(["-c", script], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "spills" in proc.stdout and "shared" in proc.stdout


@pytest.mark.slow
def test_aot_full_sweep_sm89_sm90():
    """Every shipped configuration, both target architectures (bf16 must use mma.sync on sm_89, wgmma on sm_90)."""
    proc = _python(["-m", "kernels.aot", "--arch", "89", "--arch", "90"], timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "sm_89: mma.sync" in proc.stdout and "sm_90: wgmma" in proc.stdout
