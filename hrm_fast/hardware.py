"""Peak numbers of the GPUs we report against (dense bf16 tensor-core FLOP/s with fp32 accumulate).

Sources: NVIDIA's whitepapers and product pages (docs/performance.md, "GPU peaks"). Used to turn measured FLOP/s into
% of peak ("MFU"); never to claim a speed that was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DevicePeak:
    name: str
    bf16_tflops: float  # dense, fp32 accumulate
    dram_gbps: float
    smem_per_block_kib: int


PEAKS: dict[str, DevicePeak] = {
    "RTX 4090": DevicePeak("RTX 4090", 165.2, 1008.0, 99),
    "A100": DevicePeak("A100 SXM4 80GB", 312.0, 2039.0, 163),
    "H100": DevicePeak("H100 SXM5", 989.0, 3350.0, 227),
    "H200": DevicePeak("H200 SXM", 989.0, 4800.0, 227),
}


def peak_for(device_name: str) -> DevicePeak | None:
    """Match a torch.cuda.get_device_name() string (e.g. 'NVIDIA GeForce RTX 4090') to a known peak."""
    name = device_name.upper()
    for key, peak in PEAKS.items():
        if key.upper() in name:
            return peak
    return None


def current_peak() -> DevicePeak | None:
    """The peak of the current CUDA device, or None on CPU / unknown GPUs."""
    import torch

    if not torch.cuda.is_available():
        return None
    return peak_for(torch.cuda.get_device_name())
