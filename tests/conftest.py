import numpy as np
import pytest

import fastbp as fb

BACKENDS = fb.backends.available()
COMPILED = [b for b in BACKENDS if b != "numpy"]
DTYPES = [np.float32, np.float64]
# Tolerances of a compiled kernel against the float64-accumulating NumPy oracle.
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def dense_model(sizes, acts, backend="cython", dtype="float64", seed=0, **kw):
    layers = [fb.layers.Dense(sizes[1], acts[0], input_dim=sizes[0], **kw)]
    layers += [fb.layers.Dense(n, a) for n, a in zip(sizes[2:], acts[1:], strict=True)]
    return fb.Sequential(layers, backend=backend, dtype=dtype, seed=seed)
