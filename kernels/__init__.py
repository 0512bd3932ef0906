"""Triton kernels for HRM's hot ops (CUDA; on CPU only under TRITON_INTERPRET=1, for tests).

- :mod:`kernels.rope_attention`: non-causal flash attention with RoPE fused into the Q/K loads, on the
  packed QKV projection output; forward + backward.
- :mod:`kernels.swiglu`: silu(gate) * up on the packed gate/up projection; forward + backward.
- :mod:`kernels.add_rms_norm`: fused residual add + parameter-free RMSNorm; forward + backward.
- :mod:`kernels.aot`: ``python -m kernels.aot`` compiles every shipped configuration for sm_89/sm_90
  and checks registers, spills and shared memory (no GPU needed).
- :mod:`kernels.testing`: the 2x-reference-error comparison used by the tests.

The torch.library custom ops wrapping these live in :mod:`hrm_fast.ops`, one module per op. TRITON_INTERPRET
must be set before this package is imported for the interpreter to be used.
"""
