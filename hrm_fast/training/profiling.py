"""NVTX ranges for Nsight Systems traces.

``nvtx_range(name)`` marks a region (``data``, ``train_step``, ``eval``); :func:`mark_levels` marks the model's
H and L module calls (``inner/H``, ``inner/L``). It is a no-op without CUDA (the CPU build of torch raises on
``torch.cuda.nvtx``) and while ``torch.compile`` traces (NVTX calls would break the graph).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def nvtx_range(name: str) -> contextlib.AbstractContextManager:
    """A context manager pushing an NVTX range ``name`` on CUDA; ``nullcontext`` otherwise."""
    if torch.compiler.is_compiling() or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.cuda.nvtx.range(name)


def mark_levels(model: torch.nn.Module) -> None:
    """NVTX ranges ``inner/H`` and ``inner/L`` around every call of the model's reasoning modules (eager CUDA runs),
    put on as module hooks so that the model code carries no profiling."""
    if not torch.cuda.is_available():
        return
    for name, module in model.named_modules():
        label = {"H_level": "inner/H", "L_level": "inner/L"}.get(name.rsplit(".", 1)[-1])
        if label is None:
            continue

        def push(_module: torch.nn.Module, _args: object, label: str = label) -> None:
            if not torch.compiler.is_compiling():
                torch.cuda.nvtx.range_push(label)

        def pop(_module: torch.nn.Module, _args: object, _out: object) -> None:
            if not torch.compiler.is_compiling():
                torch.cuda.nvtx.range_pop()

        module.register_forward_pre_hook(push)
        module.register_forward_hook(pop)


class StepWindowProfiler:
    """``profile.steps = N``: skip ``warmup`` steps (compilation, allocator warm-up), then capture N steps.

    The window is marked with ``cudaProfilerStart/Stop`` (for ``nsys profile --capture-range=cudaProfilerApi``)
    when CUDA is present and, with ``use_torch``, recorded by ``torch.profiler`` (CPU and CUDA activities):
    ``trace.json`` (chrome://tracing, Perfetto) and ``summary.txt`` (top ops by self time) in ``out_dir``.
    """

    def __init__(self, steps: int, use_torch: bool, out_dir: Path, start_step: int, warmup: int = 3) -> None:
        self.steps, self.use_torch, self.out_dir = steps, use_torch, Path(out_dir)
        self.first = start_step + warmup  # the window covers steps first+1 .. first+steps
        self.active = False
        self.done = steps <= 0
        self._torch_prof: torch.profiler.profile | None = None

    def before_step(self, step: int) -> None:
        """Call with the number of steps completed so far, before running the next one."""
        if self.done or self.active or step != self.first:
            return
        self.active = True
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaProfilerStart()
        if self.use_torch:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._torch_prof = torch.profiler.profile(activities=activities, record_shapes=False)
            self._torch_prof.__enter__()

    def after_step(self, step: int) -> str | None:
        """Call after a step; returns a message when the window has just closed."""
        if not self.active or step < self.first + self.steps:
            return None
        return self.close()

    def close(self) -> str | None:
        if not self.active:
            return None
        self.active, self.done = False, True
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaProfilerStop()
        message = f"profiled steps {self.first + 1}..{self.first + self.steps}"
        if self._torch_prof is not None:
            self._torch_prof.__exit__(None, None, None)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._torch_prof.export_chrome_trace(str(self.out_dir / "trace.json"))
            sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            table = self._torch_prof.key_averages().table(sort_by=sort, row_limit=40)
            (self.out_dir / "summary.txt").write_text(table)
            message += f": torch profiler trace and summary in {self.out_dir}"
            self._torch_prof = None
        return message
