"""Device arrays for the numba.cuda backend: moving, allocating and filling them, checking
them, and the activation-backward launch the dense and recurrent kernels share."""

import numpy as np
from numba import cuda

from . import cuda_gemm as G
from .contract import LINEAR, SOFTMAX
from .cuda_kernels import CHUNK, kernels

# -- device arrays --------------------------------------------------------------------------------


def is_device(a) -> bool:
    """Is ``a`` a device array (numba's, or an object with the CUDA Array Interface)?"""
    return hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__")


def as_device(a):
    """``a`` as a numba device array: device arrays as they are (zero copy), NumPy copied over."""
    if hasattr(a, "copy_to_host"):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return cuda.to_device(np.ascontiguousarray(a))


def synchronize() -> None:
    """Wait for every launched kernel (timing)."""
    cuda.synchronize()


def empty(shape, dtype):
    """An uninitialized device array."""
    return cuda.device_array(shape, dtype=dtype)


def zeros(shape, dtype):
    out = cuda.device_array(shape, dtype=dtype)
    _fill(out, 0)
    return out


def to_host(a) -> np.ndarray:
    """A NumPy copy of a device array (NumPy arrays are returned as they are)."""
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def copy(src, dst) -> None:
    """dst[...] = src between any mix of host and device arrays of the same shape."""
    if isinstance(dst, np.ndarray):
        dst[...] = to_host(as_device(src) if not isinstance(src, np.ndarray) else src)
    elif isinstance(src, np.ndarray):
        dst.copy_to_device(np.ascontiguousarray(src))
    else:
        dst.copy_to_device(src)


def _flat(a):
    return a.reshape(a.size)


def _fill(a, value) -> None:
    if a.size:
        k = kernels(a.dtype.type)
        k.fill[G.blocks(a.size), G.THREADS](_flat(a), a.dtype.type(value))


class _OnDevice:
    """Convert the arguments to device arrays; on exit copy the outputs that came from the host
    back into them (the contract writes in place)."""

    def __init__(self, outputs, **arrays):
        for k, a in arrays.items():  # a copy would hide that an output is not written in place
            if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
                raise ValueError(f"{k} must be a C-contiguous {a.dtype} array")
        self.host = {k: a for k, a in arrays.items() if isinstance(a, np.ndarray) and k in outputs}
        self.arrays = {k: (None if a is None else as_device(a)) for k, a in arrays.items()}

    def __enter__(self):
        return self.arrays

    def __exit__(self, *exc):
        if exc[0] is None:
            for k, a in self.host.items():
                self.arrays[k].copy_to_host(a)


def _check(dtype, **arrays):
    """Every array C-contiguous with ``dtype``; raises naming the argument."""
    for key, a in arrays.items():
        if a is None:
            continue
        if a.dtype != dtype or not a.is_c_contiguous():
            raise ValueError(f"{key} must be a C-contiguous {dtype} array, got {a.dtype}")


def _rows_grid(m):
    return max(1, -(-m // G.THREADS)), G.THREADS


# -- dense ----------------------------------------------------------------------------------------


def _act_backward(A, dA, db, act, alpha, Z=None):
    """dA ← dA ⊙ act'(Z, A) in place; db = Σ_rows of it (db and Z may be None)."""
    m, n = A.shape
    k = kernels(A.dtype.type)
    if act == SOFTMAX:
        k.softmax_backward_rows[_rows_grid(m)](A, dA, m, n)
        act = LINEAR
    if db is not None:
        _fill(db, 0)
    if act != LINEAR or db is not None:
        grid = (-(-n // 32), -(-m // CHUNK))
        has_db = db is not None
        db = db if has_db else G.placeholder(A.dtype, 1)
        has_z = Z is not None
        Z = Z if has_z else G.placeholder(A.dtype, 2)
        k.act_backward[grid, (32, 8)](A, Z, has_z, dA, db, has_db, m, n, act, A.dtype.type(alpha))
