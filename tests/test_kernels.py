"""Every compiled kernel against the NumPy reference, float32 and float64, awkward shapes."""

import contextlib

import numpy as np
import pytest
from conftest import COMPILED, DTYPES, KERNEL_BACKENDS, TOL, too_big

import fastbp as fb
from fastbp.activations import needs_z
from fastbp.backends import contract, reference
from fastbp.backends.contract import ACTIVATION_IDS, LOSS_IDS, OPTIMIZER_IDS

# (10, 37, 70): several column vectors with a masked tail; (3, 80, 60): a dX = dZ·Wᵀ whose Wᵀ is
# too large to transpose on the stack (BLAS) in the small-GEMM path; softmax rows of one vector
# or less (_act.h: float32 n <= 16, float64 n <= 8) go 8 rows at a time, then the rest: (17, 6, 8);
# a float32 dW of n <= 16 columns and k >= 32 rows is computed transposed (_blas.pxi): (20, 37, 12)
SHAPES = [(1, 1, 1), (1, 5, 3), (7, 1, 4), (6, 3, 1), (33, 17, 9), (128, 64, 10), (10, 37, 70),
          (3, 80, 60), (17, 6, 8), (20, 37, 12)]  # fmt: skip


@pytest.fixture(params=KERNEL_BACKENDS)
def be(request):
    return fb.backends.get(request.param)


@contextlib.contextmanager
def gemm_path(path: str):
    """The Cython backend's GEMMs as tuned ("default"), all through BLAS, all through the plain
    loops, or all that read B by rows through the register-blocked kernel (AVX-512 builds;
    else BLAS)."""
    if path == "default":
        yield
        return
    from fastbp import _ckernels

    small, rows = {"blas": (0, 0), "loops": (10**12, 0), "rows": (0, 10**12)}[path]
    old = _ckernels.set_small_gemm_limit(small), _ckernels.set_rows_gemm_limit(rows)
    try:
        yield
    finally:
        _ckernels.set_small_gemm_limit(old[0])
        _ckernels.set_rows_gemm_limit(old[1])


# every backend on every shape (the simulated CUDA kernels on the small ones), the Cython
# backend through each of its GEMM paths
DENSE_CASES = [
    (backend, path, shape)
    for backend in KERNEL_BACKENDS
    for path in (["default", "blas", "loops", "rows"] if backend == "cython" else ["default"])
    for shape in SHAPES
    if not too_big(backend, shape[:2], shape[1:], shape[::2])
]


def test_ids_agree_with_compiled_module():
    from fastbp import _ckernels

    assert _ckernels.ACTIVATION_IDS == ACTIVATION_IDS
    assert _ckernels.LOSS_IDS == LOSS_IDS
    assert _ckernels.OPTIMIZER_IDS == OPTIMIZER_IDS


@pytest.mark.parametrize("backend", ["numpy", *COMPILED])
def test_unknown_ids_raise(backend):
    """An id outside the registries is refused at every backend's edge, never run as another
    activation or optimizer."""
    be = fb.backends.get(backend)
    X, W = np.ones((2, 2)), np.ones((2, 2))
    with pytest.raises(ValueError, match="act"):
        be.dense_forward(X, W, None, 99, 0.2, np.empty((2, 2)))
    p, seg = np.ones(2), np.array([[0, 2]])
    with pytest.raises(ValueError, match="kind"):
        be.optimizer_step(99, p, p.copy(), np.zeros((2, 2)), fb.optimizers.SGD().hyper(), 1,
                          seg, np.zeros((1, 2)))  # fmt: skip


@pytest.mark.parametrize("backend", ["numpy", *COMPILED])
def test_z_given_exactly_where_needed(backend):
    be = fb.backends.get(backend)
    X, W, A = np.ones((2, 2)), np.ones((2, 2)), np.empty((2, 2))
    with pytest.raises(ValueError, match="Z"):
        be.dense_forward(X, W, None, ACTIVATION_IDS["gelu"], 0.2, A)  # gelu needs Z
    with pytest.raises(ValueError, match="Z"):
        be.dense_forward(X, W, None, ACTIVATION_IDS["relu"], 0.2, A, np.empty((2, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend,path,shape", DENSE_CASES)
@pytest.mark.parametrize("act", sorted(ACTIVATION_IDS))
@pytest.mark.parametrize("bias", [True, False])
def test_dense_forward_backward(backend, path, rng, dtype, shape, act, bias):
    with gemm_path(path):
        _dense_forward_backward(fb.backends.get(backend), rng, dtype, shape, act, bias)


def _dense_forward_backward(be, rng, dtype, shape, act, bias):
    m, k, n = shape
    a = ACTIVATION_IDS[act]
    X = rng.standard_normal((m, k)).astype(dtype)
    W = rng.standard_normal((k, n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype) if bias else None
    A, A_ref = np.full((m, n), np.nan, dtype), np.full((m, n), np.nan, dtype)
    # pre-activations, kept exactly for activations whose derivative needs them (gelu)
    keeps_z = fb.activations.needs_z(a)
    Z = np.full((m, n), np.nan, dtype) if keeps_z else None
    Z_ref = np.full((m, n), np.nan) if keeps_z else None
    be.dense_forward(X, W, b, a, 0.2, A, Z)
    reference.dense_forward(
        X.astype(np.float64),
        W.astype(np.float64),
        None if b is None else b.astype(np.float64),
        a,
        0.2,
        A_ref,
        Z_ref,
    )
    np.testing.assert_allclose(A, A_ref, **TOL[dtype])
    if keeps_z:
        np.testing.assert_allclose(Z, Z_ref, **TOL[dtype])

    dA = rng.standard_normal((m, n)).astype(dtype)
    dA_ref = dA.astype(np.float64)
    out = [np.full(s, np.nan, dtype) for s in ((k, n), (n,), (m, k))]
    ref = [np.full(s, np.nan) for s in ((k, n), (n,), (m, k))]
    be.dense_backward(X, W, A, dA, a, 0.2, out[0], out[1] if bias else None, out[2], Z)
    reference.dense_backward(
        X.astype(np.float64),
        W.astype(np.float64),
        A.astype(np.float64),
        dA_ref,
        a,
        0.2,
        ref[0],
        ref[1],
        ref[2],
        None if Z is None else Z.astype(np.float64),
    )
    np.testing.assert_allclose(dA, dA_ref, **TOL[dtype])  # dZ written in place
    scale = max(1.0, m / 8)  # sums over the batch grow with it
    for got, want in zip(
        out if bias else [out[0], out[2]], ref if bias else [ref[0], ref[2]], strict=True
    ):
        np.testing.assert_allclose(
            got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale
        )


@pytest.fixture
def sparse_rows():
    """The float32 zero-skipping forward kernel (_sparse_rows.h), put back on afterwards."""
    from fastbp import _ckernels

    if not _ckernels.HAS_GEMM_ROWS:
        pytest.skip("built without AVX-512: no small-GEMM kernels")
    yield _ckernels._set_sparse_rows
    _ckernels._set_sparse_rows(True)


# (m, k, n): one row; k with a masked last word; two column blocks (64 + 36); k·n over 8192
# (taken only at density <= 0.3); narrow outputs (one vector, masked)
SPARSE_SHAPES = [(1, 64, 64), (2, 70, 48), (3, 64, 100), (33, 130, 64), (5, 200, 10), (32, 64, 17)]


@pytest.mark.parametrize("shape", SPARSE_SHAPES)
def test_sparse_inputs_skip_zeros_with_the_same_numbers(rng, shape, sparse_rows):
    m, k, n = shape
    X = (rng.standard_normal((m, k)) * (rng.random((m, k)) < 0.2)).astype(np.float32)
    W = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    be = fb.backends.get("cython")
    A, dense = np.full((m, n), np.nan, np.float32), np.full((m, n), np.nan, np.float32)
    be.dense_forward(X, W, b, contract.RELU, 0.0, A)
    sparse_rows(False)
    be.dense_forward(X, W, b, contract.RELU, 0.0, dense)
    np.testing.assert_array_equal(A, dense)  # each element the same FMA chain without zeros
    ref = np.empty((m, n))
    reference.dense_forward(X.astype(np.float64), W.astype(np.float64), b, contract.RELU, 0, ref)
    np.testing.assert_allclose(A, ref, **TOL[np.float32])


# (batch, features, n): dW = Xᵀ·dZ with the features in groups of four (_sparse_rows.h): one
# batch row; feature counts not a multiple of 4 or 16; more than 64 features; two column blocks
SPARSE_DW_SHAPES = [(1, 20, 48), (7, 37, 64), (32, 64, 64), (32, 130, 50), (13, 64, 100)]


@pytest.mark.parametrize("shape", SPARSE_DW_SHAPES)
def test_sparse_inputs_weight_gradients_skip_zeros(rng, shape, sparse_rows):
    m, k, n = shape
    X = (rng.standard_normal((m, k)) * (rng.random((m, k)) < 0.4)).astype(np.float32)
    X[:, ::5] = 0  # features zero in the whole batch, as pixels at a digit's border
    W = rng.standard_normal((k, n)).astype(np.float32)
    dA = rng.standard_normal((m, n)).astype(np.float32)
    A = np.ones((m, n), np.float32)
    be = fb.backends.get("cython")
    got = [np.full(s, np.nan, np.float32) for s in ((k, n), (n,))]
    dense = [np.full(s, np.nan, np.float32) for s in ((k, n), (n,))]
    be.dense_backward(X, W, A, dA.copy(), contract.LINEAR, 0.0, got[0], got[1], None)
    sparse_rows(False)
    be.dense_backward(X, W, A, dA.copy(), contract.LINEAR, 0.0, dense[0], dense[1], None)
    np.testing.assert_array_equal(got[0], dense[0])
    scale = max(1.0, m / 8)
    np.testing.assert_allclose(
        got[0], X.astype(np.float64).T @ dA, rtol=2e-4, atol=TOL[np.float32]["atol"] * scale
    )


def test_sparse_weight_gradients_skip_what_multiplies_zero(rng, sparse_rows):
    """dW = Xᵀ·dZ: an infinite dZ leaves the gradients of the features zero in the whole batch
    finite only where their zeros are skipped (the grouped kernel ran; the features zero in
    one row only share it with their group's others)."""
    X = (rng.standard_normal((32, 64)) * (rng.random((32, 64)) < 0.4)).astype(np.float32)
    X[:, ::4] = 0
    dA = rng.standard_normal((32, 64)).astype(np.float32)
    dA[7] = np.inf
    W = np.zeros((64, 64), np.float32)
    A, dW = np.ones((32, 64), np.float32), np.empty((64, 64), np.float32)
    be = fb.backends.get("cython")
    be.dense_backward(X, W, A, dA.copy(), contract.LINEAR, 0.0, dW, None, None)
    assert np.isfinite(dW[::4]).all()
    sparse_rows(False)
    be.dense_backward(X, W, A, dA.copy(), contract.LINEAR, 0.0, dW, None, None)
    assert np.isnan(dW[::4]).all()  # 0·inf summed in


def test_sparse_inputs_beyond_the_small_gemm_sizes(rng, sparse_rows):
    """A mostly-zero A takes the zero-skipping kernel before BLAS too (rows in chunks whose
    masks fit its buffer: 1000 rows of 784 inputs, 78 at a time); BLAS sums in another order."""
    X = (rng.random((1000, 784)) * (rng.random((1000, 784)) < 0.15)).astype(np.float32)
    X[:, 5] = 0
    W = rng.standard_normal((784, 30)).astype(np.float32)
    A = np.empty((1000, 30), np.float32)
    be = fb.backends.get("cython")
    be.dense_forward(X, W, None, contract.LINEAR, 0.0, A)
    np.testing.assert_allclose(A, X.astype(np.float64) @ W, rtol=1e-4, atol=1e-4)
    W[5] = np.inf  # met only by zeros: skipped here, 0·inf = NaN in BLAS
    be.dense_forward(X, W, None, contract.LINEAR, 0.0, A)
    assert np.isfinite(A).all()
    sparse_rows(False)
    be.dense_forward(X, W, None, contract.LINEAR, 0.0, A)
    assert np.isnan(A).all()


@pytest.mark.parametrize("opt", ["sgd", "sgd_l2", "adam"])
def test_sparse_input_fits_identical_with_and_without_skipping(rng, opt, sparse_rows):
    """A compiled fit on pixel-like inputs (features zero in whole batches): the forward and
    the first layer's dW skip zeros (plain SGD: fused into the update, a zero feature's weights
    untouched without L2, decayed with it); every weight as without skipping."""
    X = (rng.random((60, 100)) * (rng.random((60, 100)) < 0.25)).astype(np.float32)
    X[:, :40] *= rng.random((60, 1)) < 0.1  # these features mostly zero together
    y = rng.integers(0, 10, 60)
    runs = []
    for on in (True, False):
        sparse_rows(on)
        reg = fb.regularizers.L2(1e-3) if opt == "sgd_l2" else None
        model = fb.Sequential(
            [
                fb.layers.Dense(30, "sigmoid", input_dim=100, kernel_regularizer=reg),
                fb.layers.Dense(10, "softmax"),
            ],
            dtype="float32",
            seed=2,
        )
        o = fb.optimizers.Adam(0.01) if opt == "adam" else fb.optimizers.SGD(0.5)
        model.compile(o, "sparse_categorical_crossentropy")
        model.fit(X, y, batch_size=10, epochs=3, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sparse_inputs_skip_what_multiplies_zero(rng, sparse_rows):
    """Only where the zeros are skipped does a column of zeros meet an infinite weight without
    a NaN (a test that the kernel ran); a NaN input is a nonzero and reaches its row."""
    X = (rng.standard_normal((8, 64)) * (rng.random((8, 64)) < 0.3)).astype(np.float32)
    X[:, 5] = 0
    X[3, 9] = np.nan
    W = rng.standard_normal((64, 64)).astype(np.float32)
    W[5, :] = np.inf
    A = np.empty((8, 64), np.float32)
    fb.backends.get("cython").dense_forward(X, W, None, contract.LINEAR, 0.0, A)
    assert np.isnan(A[3]).all() and np.isfinite(np.delete(A, 3, axis=0)).all()
    sparse_rows(False)
    fb.backends.get("cython").dense_forward(X, W, None, contract.LINEAR, 0.0, A)
    assert np.isnan(A).all()  # 0·inf in every row


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_without_dX(be, rng, dtype):
    X = rng.standard_normal((4, 3)).astype(dtype)
    W = rng.standard_normal((3, 2)).astype(dtype)
    A = np.empty((4, 2), dtype)
    be.dense_forward(X, W, None, contract.TANH, 0.0, A)
    dW = np.empty((3, 2), dtype)
    be.dense_backward(X, W, A, np.ones((4, 2), dtype), contract.TANH, 0.0, dW, None, None)
    np.testing.assert_allclose(dW, X.T @ (1 - A * A), **TOL[dtype])


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softmax", "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_stable_for_huge_inputs(be, act, dtype):
    X = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [3e3, 1e4, -2e3]], dtype)
    A = np.empty((3, 3), dtype)
    with np.errstate(all="raise"):
        be.dense_forward(X, np.eye(3, dtype=dtype), None, ACTIVATION_IDS[act], 0.2, A)
    assert np.isfinite(A).all()
    if act == "sigmoid":
        np.testing.assert_array_equal(A[0], [1.0, 0.0, 0.5])
    if act == "softmax":
        np.testing.assert_allclose(A.sum(axis=1), 1, rtol=1e-6)
        np.testing.assert_allclose(A[1], 1 / 3, rtol=1e-6)


def _probs(rng, m, n, dtype):
    P = rng.uniform(0.05, 1, (m, n))
    return (P / P.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [3, 8, 10, 16, 17])
def test_count_sparse_takes_the_first_of_equal_maxima(be, dtype, n):
    P = np.zeros((4, n), dtype)
    P[:, [1, n - 1]] = 0.5  # ties: the first (1) is the prediction
    P[3, 2] = np.nan  # a NaN output is the prediction (np.argmax's rule)
    assert be.count_correct_sparse(P, np.array([1, 1, n - 1, 2], np.int64)) == 3
    assert be.count_correct_sparse(P, np.full(4, 0, np.int64)) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 1), (16, 10)])
@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy", "categorical_crossentropy"])
@pytest.mark.parametrize("fused", [False, True])
def test_loss(be, rng, dtype, shape, loss, fused):
    m, n = shape
    P = (
        _probs(rng, m, n, dtype)
        if loss == "categorical_crossentropy"
        else rng.uniform(0.02, 0.98, shape).astype(dtype)
    )
    Y = rng.uniform(0, 1, shape).astype(dtype)
    # the reference runs in the same dtype: Keras clips at 1 - 1e-7 rounded to that dtype
    dP, dP_ref = np.empty_like(P), np.empty_like(P)
    got = be.loss(LOSS_IDS[loss], P, Y, dP, fused)
    want = reference.loss(LOSS_IDS[loss], P, Y, dP_ref, fused)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(dP, dP_ref, **TOL[dtype])


# rows of one AVX-512 vector or less take the vector path (_loss.h): float32 up to 16 outputs,
# float64 up to 8; wider rows the scalar loops
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (7, 3), (16, 10), (3, 8), (20, 16), (9, 17)])
@pytest.mark.parametrize("fused", [False, True])
def test_loss_sparse_and_counts(be, rng, dtype, shape, fused):
    m, n = shape
    P = _probs(rng, m, n, dtype)
    labels = rng.integers(0, n, m).astype(np.int64)
    dP, dP_ref = np.empty_like(P), np.empty_like(P)
    got = be.loss_sparse(P, labels, dP, fused)
    want = reference.loss_sparse(P, labels, dP_ref, fused)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(dP, dP_ref, **TOL[dtype])
    assert be.count_correct_sparse(P, labels) == reference.count_correct_sparse(P, labels)
    Y = rng.uniform(0, 1, shape).astype(dtype)
    assert be.count_correct(P, Y) == reference.count_correct(P, Y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_clipping_matches(be, dtype):
    # probabilities at 0 and 1: Keras clips to [1e-7, 1 - 1e-7]; clipped entries get no gradient
    P = np.array([[0.0, 1.0, 0.5], [1e-9, 0.3, 0.7]], dtype)
    Y = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype)
    for kind in ("binary_crossentropy", "categorical_crossentropy"):
        dP, dP_ref = np.empty_like(P), np.empty_like(P)
        got = be.loss(LOSS_IDS[kind], P, Y, dP, False)
        with np.errstate(divide="ignore"):  # np.where evaluates the clipped branch too
            want = reference.loss(LOSS_IDS[kind], P, Y, dP_ref)
        assert np.isfinite(got) and np.isfinite(dP).all()
        np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == np.float32 else 1e-9)
        np.testing.assert_allclose(dP, dP_ref, rtol=1e-3 if dtype == np.float32 else 1e-9)


OPT_CASES = [
    ("sgd", dict(learning_rate=0.1)),
    ("sgd", dict(learning_rate=0.1, momentum=0.9)),
    ("sgd", dict(learning_rate=0.1, momentum=0.9, nesterov=1)),
    ("rmsprop", dict(learning_rate=0.01, rho=0.9, epsilon=1e-7)),
    ("rmsprop", dict(learning_rate=0.01, rho=0.8, momentum=0.5, epsilon=1e-7)),
    ("adam", dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)),
    ("adam", dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, epsilon_hat=1)),
    ("adamw", dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.1)),
    ("adam", dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, clipnorm=0.5)),
    ("adam", dict(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, clipvalue=0.05)),
    ("sgd", dict(learning_rate=0.1, momentum=0.5, global_clipnorm=0.3)),
    ("adagrad", dict(learning_rate=0.1, epsilon=1e-7)),
    ("adagrad", dict(learning_rate=0.1, epsilon=1e-7, clipnorm=0.5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,hyper", OPT_CASES)
@pytest.mark.parametrize("n", [1, 37])
def test_optimizer_step_matches_reference(be, rng, dtype, kind, hyper, n):
    params = rng.standard_normal(n).astype(dtype)
    state = np.abs(rng.standard_normal((2, n))).astype(dtype)
    ref_params, ref_state = params.copy(), state.copy()
    segments = np.array([[0, n // 2], [n // 2, n]], dtype=np.int64)
    seg_reg = np.array([[0.01, 0.02], [0.0, 0.0]])
    h = contract.hyper_vector(**hyper)
    for t in (1, 2, 3):
        grads = rng.standard_normal(n).astype(dtype)
        be.optimizer_step(OPTIMIZER_IDS[kind], params, grads, state, h, t, segments, seg_reg)
        reference.optimizer_step(
            OPTIMIZER_IDS[kind], ref_params, grads, ref_state, h, t, segments, seg_reg
        )
        np.testing.assert_allclose(params, ref_params, **TOL[dtype])
        np.testing.assert_allclose(state, ref_state, **TOL[dtype])


def test_optimizer_skips_params_outside_segments(be):
    params = np.ones(6)
    state = np.zeros((2, 6))
    h = contract.hyper_vector(learning_rate=1.0)
    be.optimizer_step(
        contract.SGD,
        params,
        np.ones(6),
        state,
        h,
        1,
        np.array([[1, 3]], dtype=np.int64),
        np.zeros((1, 2)),
    )
    np.testing.assert_array_equal(params, [1, 0, 0, 1, 1, 1])


def test_kernels_reject_bad_arrays(be):
    X, W, A = np.ones((4, 3)), np.ones((3, 2)), np.empty((4, 2))
    with pytest.raises(ValueError, match=r"W must have shape \(3, 2\)"):
        be.dense_forward(X, np.ones((2, 2)), None, 0, 0.0, A)
    with pytest.raises(ValueError, match="A must have shape"):
        be.dense_forward(X, W, None, 0, 0.0, np.empty((3, 2)))
    with pytest.raises(ValueError, match="b must have shape"):
        be.dense_forward(X, W, np.ones(3), 0, 0.0, A)
    with pytest.raises(ValueError, match="act must be"):
        be.dense_forward(X, W, None, 9, 0.0, A)
    with pytest.raises(ValueError):  # dtype mismatch: memoryview refuses it
        be.dense_forward(X.astype(np.float32), W, None, 0, 0.0, A)
    with pytest.raises(ValueError):  # non-contiguous
        be.dense_forward(np.ones((4, 6))[:, ::2], W, None, 0, 0.0, A)
    with pytest.raises(ValueError, match="labels must lie in"):
        be.loss_sparse(np.full((2, 3), 1 / 3), np.array([0, 3], dtype=np.int64), np.empty((2, 3)))
    with pytest.raises(ValueError, match="state must have shape"):
        be.optimizer_step(
            0,
            np.ones(3),
            np.ones(3),
            np.zeros((1, 3)),
            contract.hyper_vector(learning_rate=0.1),
            1,
            np.array([[0, 3]], dtype=np.int64),
            np.zeros((1, 2)),
        )
    with pytest.raises(ValueError, match="outside"):
        be.optimizer_step(
            0,
            np.ones(3),
            np.ones(3),
            np.zeros((2, 3)),
            contract.hyper_vector(learning_rate=0.1),
            1,
            np.array([[0, 4]], dtype=np.int64),
            np.zeros((1, 2)),
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sgd", "rmsprop", "adamw"])
def test_optimizer_state_never_subnormal(be, dtype, kind):
    # zero gradients make the state decay geometrically; it must reach 0, not subnormals
    tiny = np.finfo(dtype).tiny
    n = 8
    params = np.full(n, 1e-3, dtype)
    state = np.full((2, n), 4 * tiny, dtype)
    h = contract.hyper_vector(
        learning_rate=0.1,
        momentum=0.5,
        rho=0.5,
        beta_1=0.5,
        beta_2=0.5,
        epsilon=1e-7,
        weight_decay=0.1,
    )
    seg, reg = np.array([[0, n]], dtype=np.int64), np.zeros((1, 2))
    ref_params, ref_state = params.copy(), state.copy()
    for t in range(1, 6):
        be.optimizer_step(OPTIMIZER_IDS[kind], params, np.zeros(n, dtype), state, h, t, seg, reg)
        reference.optimizer_step(
            OPTIMIZER_IDS[kind], ref_params, np.zeros(n, dtype), ref_state, h, t, seg, reg
        )
        assert not ((state != 0) & (np.abs(state) < tiny)).any()
        np.testing.assert_array_equal(state, ref_state)
    used = [0] if kind == "sgd" else [0, 1]  # SGD keeps one slot
    assert (state[used] == 0).all()


def test_kernels_restore_the_callers_float_mode(be):
    # kernels run with flush-to-zero for speed; afterwards subnormals must work again
    X = np.full((2, 2), 1e-30, np.float32)
    A = np.empty((2, 2), np.float32)
    be.dense_forward(X, X, None, contract.LINEAR, 0.0, A)
    assert A[0, 0] == 0.0 or A[0, 0] == np.float32(2e-60)  # FTZ inside the kernel is allowed
    tiny = np.finfo(np.float64).tiny
    assert np.float64(tiny) / 4 != 0.0
    assert np.multiply(np.float32(1e-30), np.float32(1e-10)) != 0.0  # 1e-40 is subnormal


def test_gelu_matches_torch(rng):
    """GELU (exact, Keras' default) and its derivative against PyTorch's autograd."""
    torch = pytest.importorskip("torch", reason="PyTorch is the GELU oracle")
    z = rng.standard_normal((5, 7)) * 3
    zt = torch.from_numpy(z).requires_grad_(True)
    a = torch.nn.functional.gelu(zt)
    d = rng.standard_normal(z.shape)
    a.backward(torch.from_numpy(d))
    gelu = ACTIVATION_IDS["gelu"]
    got = reference.activation(gelu, z, 0.2)
    np.testing.assert_allclose(got, a.detach().numpy(), rtol=1e-12, atol=1e-15)
    dz = reference.activation_backward(gelu, z, got, d, 0.2)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-12, atol=1e-15)


NONFINITE = np.array([np.nan, np.inf, -np.inf, 1.0, -1.0, 0.0, 1e30, -1e30, 1e-30])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(ACTIVATION_IDS))
def test_nonfinite_inputs_give_the_references_outputs(be, dtype, act):
    """NaN and ±inf through every activation (forward and backward) as in the reference: NaN
    stays NaN (a compiled ReLU that mapped it to 0 hid a diverged model behind a finite loss),
    relu(-inf) = 0, sigmoid(-inf) = 0."""
    aid = ACTIVATION_IDS[act]
    if act == "softmax":  # rows of three equal inputs: NaN, inf (inf - inf: NaN) and 1
        X, W = np.array([[np.nan], [np.inf], [1.0]], dtype), np.ones((1, 3), dtype)
    else:
        X, W = NONFINITE.astype(dtype)[:, None], np.ones((1, 1), dtype)
    n, out = X.shape[0], W.shape[1]
    results = []
    for b in (fb.backends.get("numpy"), be):
        A = np.empty((n, out), dtype)
        Z = np.empty_like(A) if needs_z(aid) else None
        with np.errstate(all="ignore"):
            b.dense_forward(X, W, None, aid, 0.2, A, Z)
            dA = np.ones_like(A)
            dW, dX = np.empty_like(W), np.empty_like(X)
            b.dense_backward(X, W, A, dA.copy(), aid, 0.2, dW, None, dX, Z)
        results.append((A, dX))
    for ref, got, what in zip(results[0], results[1], ("A", "dX"), strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=what)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref), err_msg=what)
        ok = np.isfinite(ref)
        np.testing.assert_allclose(got[ok], ref[ok], **TOL[dtype], err_msg=what)
