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


# ---------------------------------------------------------------------------------------------------------------
# TEST-ONLY (owner: kernels helper): fix two bf16 bugs of the Triton interpreter (triton 3.8.0) so that
# interpreter tests of bf16 kernels mean something. Only the interpreter is patched (nothing happens on a
# GPU run or when the interpreter is off).
# A) tl.dot (docs/toolchain.md §1, Gotcha A): bf16 tensors are held as raw uint16 bits and create_dot calls
#    np.matmul on the bits. Up-casting bf16 operands to fp32 first gives exactly what an fp32-accumulating
#    bf16 MMA computes (bf16 -> fp32 is exact).
# B) fp32 -> bf16 casts (x.to(tl.bfloat16)) truncate the mantissa (cast_impl passes no rounding mode to
#    _convert_float), whereas the GPU's cvt.rn.bf16.f32 rounds to nearest even. Truncation is biased and made
#    bf16 kernels look ~3x less accurate than they are; we round to nearest even as the hardware does.
if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    import numpy as _np
    import triton.language as _tl
    from triton.runtime import interpreter as _interp

    _create_dot = _interp.InterpreterBuilder.create_dot

    def _bf16_bits_to_fp32(handle):
        if handle.dtype == _tl.bfloat16:
            return _interp.TensorHandle((handle.data.astype(_np.uint32) << 16).view(_np.float32), _tl.float32)
        return handle

    def _create_dot_bf16_fixed(self, a, b, d, *args, **kwargs):
        return _create_dot(self, _bf16_bits_to_fp32(a), _bf16_bits_to_fp32(b), d, *args, **kwargs)

    _interp.InterpreterBuilder.create_dot = _create_dot_bf16_fixed

    _cast_impl = _interp.InterpreterBuilder.cast_impl

    def _cast_impl_bf16_rne(self, src, dst_type):
        if src.dtype.scalar == _tl.float32 and dst_type.scalar == _tl.bfloat16:
            bits = _np.ascontiguousarray(src.data, dtype=_np.float32).view(_np.uint32).astype(_np.uint64)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(_np.uint16)
            nan = _np.isnan(src.data)
            if _np.any(nan):
                rounded = _np.where(nan, _np.uint16(0x7FC0), rounded)
            return _interp.TensorHandle(rounded, dst_type.scalar)
        return _cast_impl(self, src, dst_type)

    _interp.InterpreterBuilder.cast_impl = _cast_impl_bf16_rne

    # C) triton 3.6's interpreter turns a runtime int (``range(0, S, BLOCK)``) into a Python int with
    #    int(1-element array), which numpy >= 2.5 refuses ("only 0-dimensional arrays ..."); triton 3.8 squeezes
    #    first. Same fix for the older triton (interpreter only).
    _patch_lang_tensor = getattr(_interp, "_patch_lang_tensor", None)
    if _patch_lang_tensor is not None:

        def _patch_lang_tensor_index(tensor, scope):
            _patch_lang_tensor(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

        _interp._patch_lang_tensor = _patch_lang_tensor_index
