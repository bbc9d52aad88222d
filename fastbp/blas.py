"""Which BLAS the compiled kernels call: SciPy's OpenBLAS (default) or MKL, switched at run time.

MKL from PyPI (``pip install mkl``, ~1 GB installed) ran SGEMM ~20% faster than OpenBLAS on
this project's machines (260 vs 215 GFLOP/s for 2048³ and 4096³ SGEMM), which is what PyTorch
uses on CPU.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

_loaded: dict[str, ctypes.CDLL] = {}  # keep the library loaded while its pointers are in use
_current = "openblas"


def _find_mkl() -> str | None:
    for folder in (os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")):
        hits = sorted(glob.glob(os.path.join(folder, "libmkl_rt.so*")))
        if hits:
            return hits[-1]
    import ctypes.util

    return ctypes.util.find_library("mkl_rt")


def use_blas(name: str = "openblas") -> str:
    """Route the compiled kernels' GEMMs to ``name``: "openblas" (SciPy's) or "mkl".

    Parameters
    ----------
    name : {"openblas", "mkl"}

    Returns
    -------
    str
        The BLAS in use before the call.
    """
    global _current
    from fastbp import _ckernels

    if name not in ("openblas", "mkl"):
        raise ValueError(f"name must be 'openblas' or 'mkl', got {name!r}")
    previous = _current
    if name == "openblas":
        _ckernels._set_gemm(0, 0)
    else:
        if "mkl" not in _loaded:
            path = _find_mkl()
            if path is None:
                raise RuntimeError("MKL not found: pip install mkl (libmkl_rt.so in the venv)")
            # Intel OpenMP threads spin 200 ms after each call by default and then slow every
            # other thread pool (OpenBLAS, PyTorch) on a small machine: sleep at once instead.
            os.environ.setdefault("KMP_BLOCKTIME", "0")
            _loaded["mkl"] = ctypes.CDLL(path)
        lib = _loaded["mkl"]
        addr = [ctypes.cast(getattr(lib, f), ctypes.c_void_p).value for f in ("sgemm_", "dgemm_")]
        _ckernels._set_gemm(*addr)
    _current = name
    return previous


def current_blas() -> str:
    """The BLAS the compiled kernels call now."""
    return _current
