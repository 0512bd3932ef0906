"""Builds the hrm_fast._C extension (the ACT carry/halting op) from csrc/.

Always: the C++ CPU kernels. Also the CUDA kernels when torch is a CUDA build and nvcc is found (or
HRM_FAST_FORCE_CUDA=1). Environment switches:
  HRM_FAST_SKIP_EXT=1     build no extension at all (the pure-PyTorch reference is used)
  HRM_FAST_NO_CUDA=1      build the CPU kernels only, even with a CUDA torch
  HRM_FAST_FORCE_CUDA=1   fail instead of falling back to CPU-only when CUDA cannot be built
  HRM_FAST_DEBUG=1        -O0 -g instead of -O3 without debug info
  HRM_FAST_PTXAS_VERBOSE=1  print ptxas register/spill reports for every kernel
  TORCH_CUDA_ARCH_LIST    default "8.9;9.0" (RTX 4090, H100)
  CUDA_HOME               the CUDA toolkit; found from nvcc on PATH (wrapper scripts are followed)
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import site
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _real_nvcc(path: str) -> str | None:
    """Follow symlinks and `exec /abs/path/nvcc "$@"`-style wrapper scripts to the real nvcc."""
    for _ in range(8):
        path = os.path.realpath(path)
        try:
            head = Path(path).read_bytes()[:4096]
        except OSError:
            return None
        if not head.startswith(b"#!"):
            return path
        match = re.search(rb"(/[^\s\"']*/bin/nvcc)\b", head)
        if not match:
            return path
        path = match.group(1).decode()
    return path


def find_cuda_home() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and Path(os.environ[var], "bin", "nvcc").exists():
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = _real_nvcc(nvcc)
        if real and Path(real).exists():
            return str(Path(real).parent.parent)
    for guess in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
        if Path(guess, "bin", "nvcc").exists():
            return guess
    return None


def nvidia_wheel_includes() -> list[str]:
    """CUDA headers shipped in the nvidia-* wheels (cusparse.h, cublas_v2.h, ...) that ATen/cuda needs."""
    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    found: list[str] = []
    for root in roots:
        for inc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include"))):
            if inc not in found:
                found.append(inc)
    return found


def extensions():
    if _flag("HRM_FAST_SKIP_EXT"):
        print("hrm_fast: HRM_FAST_SKIP_EXT=1, building no extension (reference ops will be used)")
        return [], {}
    import torch

    cuda_home = None
    want_cuda = torch.version.cuda is not None and not _flag("HRM_FAST_NO_CUDA")
    if want_cuda:
        cuda_home = find_cuda_home()
        if cuda_home is None:
            want_cuda = False
    if _flag("HRM_FAST_FORCE_CUDA") and not want_cuda:
        raise RuntimeError(
            "HRM_FAST_FORCE_CUDA=1 but the CUDA kernels cannot be built: "
            + ("torch is a CPU build" if torch.version.cuda is None else "nvcc not found; set CUDA_HOME")
        )
    if want_cuda:
        # cpp_extension decides CUDA_HOME when it is imported; a wrapper nvcc on PATH misleads its guess.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.9;9.0")
    from torch.utils import cpp_extension

    if want_cuda:
        cpp_extension.CUDA_HOME = cuda_home

    debug = _flag("HRM_FAST_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    sources = ["csrc/act.cpp"]
    extra = {"cxx": opt}  # the C++ standard is torch's choice (C++20 from torch 2.14)
    kwargs = {}
    if want_cuda:
        sources += ["csrc/act_cuda.cpp", "csrc/cuda/act.cu"]
        extra["nvcc"] = ["-O0", "-G"] if debug else ["-O3"]
        if _flag("HRM_FAST_PTXAS_VERBOSE"):
            extra["nvcc"].append("-Xptxas=-v")
        kwargs["include_dirs"] = nvidia_wheel_includes()
        ext_cls = cpp_extension.CUDAExtension
        print(f"hrm_fast: building CPU + CUDA kernels (CUDA_HOME={cuda_home}, "
              f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})")
    else:
        ext_cls = cpp_extension.CppExtension
        print("hrm_fast: building CPU kernels only (torch has no CUDA or nvcc was not found)")
    ext = ext_cls("hrm_fast._C", sources, extra_compile_args=extra, **kwargs)
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}
    return [ext], cmdclass


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
