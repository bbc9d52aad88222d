import os

import numpy as np
import pytest

# Without an NVIDIA GPU the numba.cuda backend is tested in numba's CUDA simulator (set before
# numba is imported). The simulator is slow, so there only tests/test_cuda.py runs it, on tiny
# shapes; on a GPU every backend-parametrized test runs "cuda" too.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import fastbp as fb  # noqa: E402

CUDA_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
BACKENDS = [b for b in fb.backends.available() if not (b == "cuda" and CUDA_SIM)]
COMPILED = [b for b in BACKENDS if b != "numpy"]
# The kernel contract tests run every backend but the reference: the compiled ones, and the
# numba.cuda kernels also without a GPU, in the simulator, on the tiny shapes of `tiny`.
KERNEL_BACKENDS = COMPILED + (["cuda"] if CUDA_SIM and "cuda" in fb.backends.available() else [])
SIM_ELEMENTS = 200  # the most elements a simulated kernel test works on (~1 s a test)


def too_big(backend: str, *shapes) -> bool:
    """Shapes above SIM_ELEMENTS for a simulated-CUDA test (its threads are Python's)."""
    return backend == "cuda" and CUDA_SIM and max(int(np.prod(s)) for s in shapes) > SIM_ELEMENTS


def tiny(backend: str, *shapes) -> None:
    """Skip a simulated-CUDA test on shapes that are ``too_big``."""
    if too_big(backend, *shapes):
        pytest.skip("CUDA simulator: tiny shapes only")


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


def loss_data(loss, rng, n=6, k=4, out=3):
    """Random inputs (n, k) and targets in the form ``loss`` takes."""
    X = rng.standard_normal((n, k))
    if loss == "sparse_categorical_crossentropy":
        return X, rng.integers(0, out, n)
    if loss == "categorical_crossentropy":
        return X, np.eye(out)[rng.integers(0, out, n)]
    if loss == "binary_crossentropy":
        return X, rng.integers(0, 2, (n, out)).astype(float)
    return X, rng.standard_normal((n, out))


@pytest.fixture
def team():
    """The compiled backend's team on, used whatever BLAS did just before (tests call BLAS all
    the time); yields a function counting the regions run on it since."""
    ck = pytest.importorskip("fastbp._ckernels", reason="the team is the compiled backend's")
    if not ck.HAS_GEMM_ROWS:
        pytest.skip("the team runs only on builds with the small-GEMM kernel (AVX-512)")
    threads, quiet = ck.set_team_threads(2), ck._set_team_quiet(0.0)
    start = ck._team_regions()
    yield lambda: ck._team_regions() - start
    ck.set_team_threads(threads)
    ck._set_team_quiet(quiet)
