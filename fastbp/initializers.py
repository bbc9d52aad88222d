"""Weight initializers (Keras definitions). Each draws in float64 from a NumPy Generator."""

from collections.abc import Callable

import numpy as np

# Keras' truncated normals cut at 2σ; dividing by this restores the intended variance.
_TRUNC_STD = 0.87962566103423978


def _truncated_normal(rng: np.random.Generator, std: float, shape: tuple) -> np.ndarray:
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():  # resample the tails: the expected number of rounds is tiny
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * (std / _TRUNC_STD)


def _fans(shape: tuple) -> tuple[int, int]:
    return (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])


def glorot_uniform(shape, rng):
    """U(-l, l), l = √(6 / (fan_in + fan_out))."""
    fi, fo = _fans(shape)
    limit = np.sqrt(6.0 / (fi + fo))
    return rng.uniform(-limit, limit, shape)


def glorot_normal(shape, rng):
    """Truncated N(0, 2 / (fan_in + fan_out))."""
    fi, fo = _fans(shape)
    return _truncated_normal(rng, np.sqrt(2.0 / (fi + fo)), shape)


def he_uniform(shape, rng):
    """U(-l, l), l = √(6 / fan_in)."""
    limit = np.sqrt(6.0 / _fans(shape)[0])
    return rng.uniform(-limit, limit, shape)


def he_normal(shape, rng):
    """Truncated N(0, 2 / fan_in)."""
    return _truncated_normal(rng, np.sqrt(2.0 / _fans(shape)[0]), shape)


def lecun_normal(shape, rng):
    """Truncated N(0, 1 / fan_in)."""
    return _truncated_normal(rng, np.sqrt(1.0 / _fans(shape)[0]), shape)


def orthogonal(shape, rng):
    """Q of the QR decomposition of a normal matrix (signs fixed by R's diagonal): orthonormal
    rows or columns, whichever are fewer (Keras' default for recurrent kernels)."""
    rows, cols = shape[0], int(np.prod(shape[1:]))
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q *= np.sign(np.diag(r))
    return (q.T if rows < cols else q).reshape(shape)


def zeros(shape, rng):
    """All zeros."""
    return np.zeros(shape)


def ones(shape, rng):
    """All ones."""
    return np.ones(shape)


INITIALIZERS: dict[str, Callable] = {
    f.__name__: f
    for f in (
        glorot_uniform,
        glorot_normal,
        he_uniform,
        he_normal,
        lecun_normal,
        orthogonal,
        zeros,
        ones,
    )
}


def get(identifier: str) -> Callable:
    """Return the initializer function called ``identifier``."""
    if identifier not in INITIALIZERS:
        raise ValueError(f"initializer must be one of {sorted(INITIALIZERS)}, got {identifier!r}")
    return INITIALIZERS[identifier]
