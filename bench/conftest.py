"""Benchmark session setup: stable CPU numbers (1 thread: 2 threads are slower on the CI machines)."""

import torch

if not torch.cuda.is_available():
    torch.set_num_threads(1)
