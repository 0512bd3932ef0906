"""Test session setup.

Without a GPU the Triton kernels run in Triton's interpreter. TRITON_INTERPRET must be set before
any ``@triton.jit`` decorator runs (i.e. before ``kernels`` is imported), hence here, at the top of
the root conftest. The ahead-of-time compile checks run in a subprocess without the variable.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
