"""What the Numba CPU backend's dense and recurrent kernels share: the jit settings, the checks
at the edge, and the fused bias + activation steps (the registry's formulas compiled for
scalars, picked by id: fastbp.activations)."""

import numpy as np
from numba import njit

from .. import activations
from .contract import SOFTMAX

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
jit = njit(fastmath=FASTMATH, cache=True, nogil=True)
# the registries' formulas compiled for scalars, picked by id (fastbp.activations, .optimizers)
_scalar = njit(fastmath=FASTMATH, nogil=True)
_act_fwd, _act_bwd = activations.compile_scalar(_scalar)


# -- checks at the edge -------------------------------------------------------------------------


def _check(dtype, **arrays):
    """Every array C-contiguous with ``dtype``; returns nothing, raises naming the argument."""
    for key, a in arrays.items():
        if a is None:
            continue
        if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
            got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise ValueError(f"{key} must be a C-contiguous {dtype} array, got {got}")


def _shape(key, a, want):
    if a is not None and a.shape != tuple(want):
        raise ValueError(f"{key} must have shape {tuple(want)}, got {a.shape}")


def _act_ok(act, alpha, recurrent=False):
    activations.check_id(act, alpha, recurrent)


# -- dense --------------------------------------------------------------------------------------


@jit
def _bias_act(A, b, act, alpha, Z=None):
    """A = act(A + b) row by row (b may be None); Z = A + b where given."""
    m, n = A.shape
    for i in range(m):
        a = A[i]
        if b is not None:
            for j in range(n):
                a[j] += b[j]
        if Z is not None:
            Z[i, :] = a
        if act == SOFTMAX:
            mx = a.max()
            s = a.dtype.type(0)
            for j in range(n):
                a[j] = np.exp(a[j] - mx)
                s += a[j]
            for j in range(n):
                a[j] /= s
        elif act != 0:
            for j in range(n):
                a[j] = _act_fwd(act, a[j], alpha)


@jit
def _act_backward(A, dA, db, act, alpha, Z=None):
    """dA ← dA ⊙ act'(Z, A) in place; db = Σ_rows (db may be None; Z only where act needs it)."""
    m, n = A.shape
    if db is not None:
        db[:] = 0
    for i in range(m):
        a, d = A[i], dA[i]
        if act == SOFTMAX:
            s = a.dtype.type(0)
            for j in range(n):
                s += d[j] * a[j]
            for j in range(n):
                d[j] = a[j] * (d[j] - s)
        elif act != 0:
            for j in range(n):
                z = Z[i, j] if Z is not None else a[j]
                d[j] = _act_bwd(act, z, a[j], d[j], alpha)
        if db is not None:
            for j in range(n):
                db[j] += d[j]
