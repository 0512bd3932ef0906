"""Export of HRM inference for edge deployment: ONNX and ``torch.export`` (``.pt2``), verified against eager.

``python -m hrm_fast.export CKPT --format onnx|pt2 --out DIR`` (see :mod:`hrm_fast.export.__main__`) writes the
file and a ``model.json`` describing its inputs, outputs and the grid encoding; ``python -m
hrm_fast.export.bench DIR`` times onnxruntime against PyTorch eager. The exported computation is
:class:`hrm_fast.export.program.InferenceProgram`. Needs the ``export`` extra (onnx, onnxruntime, onnxscript).
"""
