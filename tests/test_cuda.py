"""What only the numba.cuda backend has: its own GEMM, device arrays in and out, the fused MLP,
cuBLAS, launch replay, and whole models kept on the device.

Its kernels are tested against the NumPy reference with every other backend's, in the contract
tests (tests/test_kernels.py, test_norm_layers.py, test_recurrent.py: KERNEL_BACKENDS). Without
a GPU this runs in numba's CUDA simulator (conftest sets NUMBA_ENABLE_CUDASIM=1), where every GPU
thread is a Python thread: shapes stay tiny. On a GPU the larger shapes run too.
"""

import numpy as np
import pytest
from conftest import CUDA_SIM, DTYPES, TOL

import fastbp as fb
from fastbp.backends import reference as R
from fastbp.backends.contract import (
    ACTIVATION_IDS,
)

try:
    C = fb.backends.get("cuda")
except ImportError as exc:  # no GPU and no simulator
    pytest.skip(f"backend 'cuda' unavailable: {exc}", allow_module_level=True)

from fastbp.backends import cuda_gemm  # noqa: E402

SHAPES = [(1, 1, 1), (3, 5, 4), (9, 7, 10)] + ([] if CUDA_SIM else [(300, 257, 129), (1, 64, 5)])
gpu_only = pytest.mark.skipif(CUDA_SIM, reason="needs a real GPU (simulator: tiny shapes only)")


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)  # every element must be written


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(5, 300, 6)] + ([] if CUDA_SIM else [(64, 70000, 64)]))
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_transposes_alpha_beta(rng, dtype, shape, ta, tb):
    m, k, n = shape
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    C0 = rng.standard_normal((m, n)).astype(dtype)
    dA, dB, dC = (C.as_device(a) for a in (A, B, C0))
    cuda_gemm.gemm_launch(dA, dB, dC, ta=ta, tb=tb, alpha=0.5, beta=2.0)
    want = 0.5 * (A.T if ta else A).astype(float) @ (B.T if tb else B).astype(float) + 2 * C0
    tol = dict(TOL[dtype], atol=TOL[dtype]["atol"] * np.sqrt(k))  # long sums round more
    np.testing.assert_allclose(dC.copy_to_host(), want, **tol)


def test_bad_input_named():
    X = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="W must have shape"):
        C.dense_forward(X, np.zeros((5, 2), np.float32), None, 0, 0.0, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        C.dense_forward(X, np.zeros((4, 2)), None, 0, 0.0, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="labels must lie"):
        C.loss_sparse(np.ones((2, 3)), np.array([0, 3]), np.empty((2, 3)))


def _model(backend, dtype="float64"):
    model = fb.Sequential(
        [
            fb.layers.Dense(6, "tanh", input_dim=5),
            fb.layers.Dropout(0.2),
            fb.layers.BatchNormalization(),
            fb.layers.Dense(2, "softmax"),
        ],
        backend=backend,
        dtype=dtype,
        seed=1,
    )
    model.compile(
        fb.optimizers.Adam(0.01, global_clipnorm=1.0),
        "sparse_categorical_crossentropy",
        ["accuracy"],
    )
    return model


def test_model_trains_as_the_reference(rng):
    """fit / evaluate / predict / train_on_batch on the device give the NumPy backend's numbers
    (float64), and the weights come back to NumPy after fit."""
    X = rng.standard_normal((24, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    runs = []
    for be in ("numpy", "cuda"):
        m = _model(be)
        h = m.fit(X, y, epochs=2, batch_size=10, verbose=0, validation_split=0.25)
        assert all(isinstance(w, np.ndarray) for w in m.get_weights())
        runs.append((h.history, m.get_weights(), m.predict(X[:4]), m.evaluate(X, y)))
        runs[-1] += (m.train_on_batch(X[:8], y[:8]), m.get_weights())
    (h0, w0, p0, e0, t0, v0), (h1, w1, p1, e1, t1, v1) = runs
    for key in h0:
        np.testing.assert_allclose(h1[key], h0[key], rtol=1e-9)
    for a, b in zip(w0 + v0, w1 + v1, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(p1, p0, rtol=1e-9)
    np.testing.assert_allclose(e1, e0, rtol=1e-9)
    assert t1 == pytest.approx(t0, rel=1e-9)


def test_device_arrays_in_without_host_copy(rng, tmp_path):
    """x, y already on the device (any CUDA Array Interface object) are used where they are;
    bad device input is refused with the argument named."""
    X = rng.standard_normal((12, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    host, dev = _model("numpy", "float32"), _model("cuda", "float32")
    host.fit(X, y, epochs=1, batch_size=12, verbose=0)
    dev.fit(C.as_device(X), C.as_device(y), epochs=1, batch_size=12, verbose=0)
    np.testing.assert_allclose(dev.predict(C.as_device(X)), host.predict(X), **TOL[np.float32])
    with pytest.raises(TypeError, match="x is a device array: it must be C-contiguous float32"):
        dev.fit(C.as_device(X.astype(np.float64)), y, verbose=0)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        dev.predict(C.as_device(bad))
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 2\)"):
        dev.fit(C.as_device(X), C.as_device(y + 1), verbose=0)
    dev.save(tmp_path / "m.fastbp")  # saved from the host copy
    np.testing.assert_allclose(
        fb.load(tmp_path / "m.fastbp").predict(X), host.predict(X), rtol=1e-5
    )


@gpu_only
def test_cupy_and_torch_tensors_are_taken_zero_copy(rng):
    X = rng.standard_normal((64, 5)).astype(np.float32)
    host = _model("numpy", "float32")
    want = host.predict(X)
    took = 0
    for mod in ("cupy", "torch"):
        lib = pytest.importorskip(mod) if mod == "cupy" else None
        try:
            lib = lib or __import__(mod)
            dX = lib.asarray(X) if mod == "cupy" else lib.tensor(X, device="cuda")
        except Exception:  # noqa: BLE001  (the library without a usable GPU build)
            continue
        same = dX.__cuda_array_interface__["data"][0]
        assert C.as_device(dX).__cuda_array_interface__["data"][0] == same  # no copy
        dev = _model("cuda", "float32")
        dev.set_weights(host.get_weights())
        np.testing.assert_allclose(dev.predict(dX), want, **TOL[np.float32])
        took += 1
    assert took, "neither CuPy nor PyTorch could put an array on the GPU"


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_fused_mlp_matches_layer_by_layer(rng, loss):
    """A narrow float32 MLP runs forward and backward in one launch each: same training as the
    layer-by-layer kernels (and, within float32 rounding, as the NumPy reference)."""
    X = rng.standard_normal((21, 6)).astype(np.float32)
    y = (rng.uniform(size=(21, 3)) > 0.5).astype(np.float32)
    out = "sigmoid" if loss == "binary_crossentropy" else "linear"
    results = []
    for be, fused in (("cuda", True), ("cuda", False), ("numpy", False)):
        model = fb.Sequential(
            [
                fb.layers.Dense(9, "relu", input_dim=6),
                fb.layers.Dense(5, "tanh", use_bias=False),
                fb.layers.Dense(3, out, kernel_regularizer=fb.regularizers.L1L2(l2=0.01)),
            ],
            backend=be,
            seed=3,
        )
        model.use_compiled_loop = fused
        model.compile(fb.optimizers.Adam(0.01), loss)
        h = model.fit(X, y, epochs=2, batch_size=12, verbose=0)
        if be == "cuda":
            assert (model.executor.fused_mlp() is not None) == fused
        results.append((h.history["loss"], model.get_weights(), model.predict(X[:5])))
    for other in results[1:]:
        np.testing.assert_allclose(results[0][0], other[0], rtol=2e-5)
        for a, b in zip(results[0][1] + [results[0][2]], other[1] + [other[2]], strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_recurrent_model_trains_as_the_reference(rng):
    X = rng.standard_normal((6, 4, 3))
    y = rng.integers(0, 2, 6)
    runs = []
    for be in ("numpy", "cuda"):
        model = fb.Sequential(
            [fb.layers.GRU(3, return_sequences=True, input_shape=(4, 3)), fb.layers.LSTM(2),
             fb.layers.Dense(2, "softmax")],
            backend=be, dtype="float64", seed=0,
        )  # fmt: skip
        model.compile(fb.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        h = model.fit(X, y, epochs=2, batch_size=3, verbose=0)
        runs.append((h.history["loss"], model.get_weights()))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-9)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-12)


@gpu_only
@pytest.mark.parametrize("act", ["relu", "softmax", "tanh"])
def test_cublas_option_matches_reference(rng, act):
    pytest.importorskip("cupy")
    m, k, n = 70, 33, 17
    X, W = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (k, n)))
    b = rng.standard_normal(n).astype(np.float32)
    a = ACTIVATION_IDS[act]
    cuda_gemm.use_cublas(True)
    try:
        A = _nan((m, n), np.float32)
        C.dense_forward(X, W, b, a, 0.2, A)
        dA = rng.standard_normal((m, n)).astype(np.float32)
        out = [_nan(s, np.float32) for s in ((k, n), (n,), (m, k))]
        C.dense_backward(X, W, A, dA.copy(), a, 0.2, *out)
    finally:
        cuda_gemm.use_cublas(False)
    A_ref, ref = _nan((m, n), np.float64), [_nan(s, np.float64) for s in ((k, n), (n,), (m, k))]
    R.dense_forward(X.astype(float), W.astype(float), b.astype(float), a, 0.2, A_ref)
    R.dense_backward(X.astype(float), W.astype(float), A.astype(float), dA.astype(float), a, 0.2,
                     *ref)  # fmt: skip
    np.testing.assert_allclose(A, A_ref, **TOL[np.float32])
    for got, want in zip(out, ref, strict=True):
        np.testing.assert_allclose(got, want, **TOL[np.float32])


class _FakeDeviceArray:
    """What the launch table reads of a numba device array."""

    def __init__(self, ptr, shape=(4, 3), dtype=np.float32):
        self.gpu_data, self.shape, self.dtype = object(), shape, np.dtype(dtype)
        self.strides = (shape[1] * self.dtype.itemsize, self.dtype.itemsize)
        self.device_ctypes_pointer = type("P", (), {"value": ptr})()


def test_launch_converter_converts_each_calls_scalars(monkeypatch):
    """A plan's C arguments: the arrays' as converted once, the scalars of every call converted
    again by the kernel's own conversion, in their slots (one per scalar here, several per
    array); host arrays (copied back after a launch) are never planned."""
    import ctypes

    from fastbp.backends import cuda_launch as L

    monkeypatch.setattr(L, "_DEVICE_ARRAY", _FakeDeviceArray)

    class Kernel:
        argument_types = ("array", "float32", "int64")

        def _prepare_args(self, ty, value, stream, writeback, out):
            if ty == "array":
                if not isinstance(value, _FakeDeviceArray):
                    writeback.append(value)
                out.extend([ctypes.c_void_p(id(value)), ctypes.c_int64(7)])
            else:
                out.append(ctypes.c_float(value) if ty == "float32" else ctypes.c_int64(value))

    a = _FakeDeviceArray(1000)
    convert = L._converter(Kernel(), (a, np.float32(0.5), 3))
    first, again = convert((a, np.float32(0.5), 3)), convert((a, np.float32(-2.0), 11))
    assert [c.value for c in first[2:]] == [0.5, 3]
    assert [c.value for c in again[2:]] == [-2.0, 11]
    assert again[:2] == first[:2]  # the array's slots: the very objects converted once
    assert L._converter(Kernel(), (np.zeros(3), np.float32(0.5), 3)) is L._NEVER


def test_launch_table_replays_only_identical_launches(monkeypatch):
    """Cached launches (GPU only; faked here): the dispatcher for a first and a second sight, the
    plan from then on, given each call's arguments; a new pointer, shape, dtype or scalar type is
    another launch, a new scalar value is not."""
    from fastbp.backends import cuda_launch as L

    calls = []

    class Dispatcher:
        def __getitem__(self, config):
            return lambda *args: calls.append(("dispatcher", args))

    def plan(dispatcher, grid, block, args):
        return lambda args: calls.append(("plan", args))

    monkeypatch.setattr(L, "_plan", plan)
    monkeypatch.setattr(L, "_DEVICE_ARRAY", _FakeDeviceArray)
    k = L.Cached(Dispatcher())
    a, b = _FakeDeviceArray(1000), _FakeDeviceArray(2000)
    for _ in range(4):
        k[4, 32](a, np.float32(0.5), 3)
    assert [c[0] for c in calls] == ["dispatcher", "dispatcher", "plan", "plan"]
    calls.clear()
    k[4, 32](_FakeDeviceArray(1000), np.float32(0.5), 3)  # a new view of the same memory
    k[4, 32](b, np.float32(0.5), 3)  # other memory
    k[4, 32](a, np.float64(0.5), 3)  # another scalar type
    k[4, 32](_FakeDeviceArray(1000, dtype=np.float64), np.float32(0.5), 3)
    k[8, 32](a, np.float32(0.5), 3)  # another grid
    assert [c[0] for c in calls] == ["plan"] + ["dispatcher"] * 4
    calls.clear()
    k[4, 32](a, np.float32(0.25), 4)  # other values: the plan, with this call's arguments
    assert calls == [("plan", (a, np.float32(0.25), 4))]
    calls.clear()
    for _ in range(3):  # neither a host array nor an unhashable argument is ever replayed
        k[4, 32](np.zeros(3), 1)
        k[4, 32](a, [1, 2])
    assert [c[0] for c in calls] == ["dispatcher"] * 6
    monkeypatch.setattr(L, "LIMIT", 2)
    k.plans.clear()
    for p in range(5):
        k[4, 32](_FakeDeviceArray(p), 1)
    assert len(k.plans) <= 2
