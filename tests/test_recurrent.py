"""SimpleRNN, LSTM, GRU: kernels vs the NumPy oracle, the oracle vs PyTorch, gradient checks,
truncated BPTT, clipping, bad input, training."""

import numpy as np
import pytest
from conftest import BACKENDS, COMPILED, DTYPES, KERNEL_BACKENDS, TOL, tiny

import fastbp as fb
from fastbp import backends
from fastbp.backends.contract import TANH

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
LAYER = {"rnn": fb.layers.SimpleRNN, "lstm": fb.layers.LSTM, "gru": fb.layers.GRU}
SHAPES = [(3, 5, 4, 6), (1, 1, 1, 1), (2, 7, 3, 1), (5, 2, 9, 33)]  # (m, T, F, n)


def weights(cell, F, n, rng, dtype):
    g = GATES[cell] * n
    Wx = rng.uniform(-0.6, 0.6, (F, g)).astype(dtype)
    Wh = rng.uniform(-0.6, 0.6, (n, g)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, (2, g) if cell == "gru" else (g,)).astype(dtype)
    return Wx, Wh, b


def run(be, cell, X, Wx, Wh, b, seq, bptt, dY=None, need_dX=True):
    """Forward then (if dY given) backward through one backend; returns Y and the gradients."""
    m, T, F = X.shape
    n, dt = Wh.shape[0], X.dtype
    g = GATES[cell] * n
    e = lambda *s: np.full(s, np.nan, dt)  # noqa: E731  (unwritten workspace = NaN, caught)
    w = dict(Xt=e(T, m, F), H=e(T + 1, m, n), C=e(T + 1, m, n), G=e(T, m, g), Rh=e(T, m, n))
    w |= dict(S=e(m, g), dG=e(T, m, g), dGh=e(T, m, g), dh=e(m, n), dc=e(m, n))
    Y = e(m, T * n if seq else n)
    if cell == "rnn":
        be.rnn_forward(X, Wx, Wh, b, TANH, 0.2, w["Xt"], w["H"], Y)
    elif cell == "lstm":
        be.lstm_forward(X, Wx, Wh, b, w["Xt"], w["H"], w["C"], w["G"], Y)
    else:
        be.gru_forward(X, Wx, Wh, b, w["Xt"], w["H"], w["G"], w["Rh"], w["S"], Y)
    if dY is None:
        return [Y]
    dWx, dWh = e(*Wx.shape), e(*Wh.shape)
    db = None if b is None else e(*b.shape)
    dX = e(*X.shape) if need_dX else None
    if cell == "rnn":
        be.rnn_backward(
            w["Xt"], Wx, Wh, w["H"], dY, TANH, 0.2, bptt, w["dG"], dWx, dWh, db, dX
        )  # fmt: skip
    elif cell == "lstm":
        be.lstm_backward(
            w["Xt"], Wx, Wh, w["H"], w["C"], w["G"], dY, bptt, w["dG"], w["dh"], w["dc"],
            dWx, dWh, db, dX,
        )  # fmt: skip
    else:
        be.gru_backward(
            w["Xt"], Wx, Wh, w["H"], w["G"], w["Rh"], dY, bptt, w["dG"], w["dGh"], w["dh"],
            dWx, dWh, db, dX,
        )  # fmt: skip
    return [Y, dWx, dWh, db, dX]


# -- kernels vs the oracle --------------------------------------------------------------------


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", GATES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seq", [True, False])
@pytest.mark.parametrize("bptt", [0, 2])
def test_kernels_match_reference(backend, dtype, cell, shape, seq, bptt, rng):
    m, T, F, n = shape
    tiny(backend, (m, T, F), (T, m, GATES[cell] * n))
    X = rng.standard_normal((m, T, F)).astype(dtype)
    Wx, Wh, b = weights(cell, F, n, rng, dtype)
    dY = rng.standard_normal((m, T * n if seq else n)).astype(dtype)
    ref = run(backends.get("numpy"), cell, X, Wx, Wh, b, seq, bptt, dY)
    got = run(backends.get(backend), cell, X, Wx, Wh, b, seq, bptt, dY)
    for name, r, g in zip(["Y", "dWx", "dWh", "db", "dX"], ref, got, strict=True):
        np.testing.assert_allclose(g, r, **TOL[dtype], err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", GATES)
def test_no_bias_and_no_dX(backend, cell, rng):
    X = rng.standard_normal((3, 4, 2))
    Wx, Wh, _ = weights(cell, 2, 5, rng, np.float64)
    dY = rng.standard_normal((3, 5))
    Y, dWx, dWh, db, dX = run(backends.get(backend), cell, X, Wx, Wh, None, False, 0, dY, False)
    assert db is None and dX is None
    ref = run(backends.get("numpy"), cell, X, Wx, Wh, None, False, 0, dY)
    np.testing.assert_allclose(dWh, ref[2], **TOL[np.float64])


# -- the oracle vs PyTorch --------------------------------------------------------------------


def torch_module(cell, Wx, Wh, b):
    """A PyTorch module holding fastbp's weights (the mapping in fastbp/recurrent.py)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the recurrent oracle")
    F, g = Wx.shape
    n = Wh.shape[0]
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    mod = cls(F, n, batch_first=True, dtype=torch.float64, bias=b is not None)
    # PyTorch's GRU orders its gates [r z n], Keras' [z r h]
    perm = np.r_[n : 2 * n, 0:n, 2 * n : 3 * n] if cell == "gru" else np.arange(g)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.tensor(Wx[:, perm].T))
        mod.weight_hh_l0.copy_(torch.tensor(Wh[:, perm].T))
        if b is not None:
            mod.bias_ih_l0.copy_(torch.tensor((b[0] if cell == "gru" else b)[perm]))
            mod.bias_hh_l0.copy_(torch.tensor(b[1][perm] if cell == "gru" else 0 * b))
    return torch, mod, perm


def torch_run(cell, X, Wx, Wh, b, seq, bptt, dY):
    """PyTorch's outputs and gradients; truncated BPTT by detaching the state every bptt steps."""
    torch, mod, perm = torch_module(cell, Wx, Wh, b)
    x = torch.tensor(X, requires_grad=True)
    if bptt:
        h, outs = None, []
        for t in range(X.shape[1]):
            if t % bptt == 0 and h is not None:
                h = tuple(v.detach() for v in h) if cell == "lstm" else h.detach()
            o, h = mod(x[:, t : t + 1], h)
            outs.append(o)
        out = torch.cat(outs, 1)
    else:
        out, _ = mod(x)
    y = (out if seq else out[:, -1]).reshape(X.shape[0], -1)
    (y * torch.tensor(dY)).sum().backward()
    inv = np.argsort(perm)  # back to fastbp's column order
    dWx = mod.weight_ih_l0.grad.numpy().T[:, inv]
    dWh = mod.weight_hh_l0.grad.numpy().T[:, inv]
    bi, bh = mod.bias_ih_l0.grad.numpy()[inv], mod.bias_hh_l0.grad.numpy()[inv]
    db = np.stack([bi, bh]) if cell == "gru" else bi
    if cell != "gru":
        np.testing.assert_allclose(bh, bi, rtol=1e-12, atol=1e-14)  # the same sum both ways
    return [y.detach().numpy(), dWx, dWh, db, x.grad.numpy()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", GATES)
@pytest.mark.parametrize("seq", [True, False])
@pytest.mark.parametrize("bptt", [0, 2, 3])
def test_outputs_and_gradients_equal_pytorch(backend, cell, seq, bptt, rng):
    m, T, F, n = 3, 7, 4, 5
    X = rng.standard_normal((m, T, F))
    Wx, Wh, b = weights(cell, F, n, rng, np.float64)
    dY = rng.standard_normal((m, T * n if seq else n))
    want = torch_run(cell, X, Wx, Wh, b, seq, bptt, dY)
    got = run(backends.get(backend), cell, X, Wx, Wh, b, seq, bptt, dY)
    for name, w, g in zip(["Y", "dWx", "dWh", "db", "dX"], want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", GATES)
def test_layer_weights_map_to_pytorch(cell, rng):
    """get_weights() in Keras layout predicts what PyTorch predicts with the documented mapping."""
    X = rng.standard_normal((4, 6, 3))
    model = fb.Sequential([LAYER[cell](5, return_sequences=True)], dtype="float64", seed=1)
    P = model.predict(X)
    Wx, Wh, b = model.get_weights()
    if cell == "lstm":
        assert np.all(b[5:10] == 1) and np.all(b[:5] == 0)  # unit_forget_bias
        q = Wh @ Wh.T
        np.testing.assert_allclose(q, np.eye(5), atol=1e-12)  # orthogonal rows
    torch, mod, _ = torch_module(cell, Wx, Wh, b)
    out, _ = mod(torch.tensor(X))
    np.testing.assert_allclose(P, out.detach().numpy(), rtol=1e-10, atol=1e-12)


# -- layers: gradient checks and training -------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", GATES)
def test_gradcheck_many_to_many(backend, cell, rng):
    """Dense per time step before and after a recurrent layer, sparse labels per step."""
    model = fb.Sequential(
        [
            fb.layers.Dense(4, "relu", input_shape=(None, 3)),
            LAYER[cell](5, return_sequences=True, kernel_regularizer=fb.regularizers.L1L2(l2=0.01)),
            fb.layers.Dense(3, "softmax"),
        ],
        backend=backend,
        dtype="float64",
        seed=0,
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    X, y = rng.standard_normal((6, 4, 3)), rng.integers(0, 3, (6, 4))
    assert fb.gradcheck(model, X, y) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", GATES)
def test_gradcheck_stacked_many_to_one(backend, cell, rng):
    model = fb.Sequential(
        [
            LAYER[cell](4, return_sequences=True, use_bias=False),
            LAYER[cell](3, recurrent_regularizer=fb.regularizers.L1L2(l1=0.01)),
            fb.layers.Dense(2, "sigmoid"),
        ],
        backend=backend,
        dtype="float64",
        seed=2,
    )
    model.compile("adam", "binary_crossentropy")
    X, y = rng.standard_normal((5, 6, 2)), rng.integers(0, 2, (5, 2))
    assert fb.gradcheck(model, X, y) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_simple_rnn_activations_gradcheck(backend, rng):
    X, y = rng.standard_normal((4, 5, 3)), rng.standard_normal((4, 2))
    for act in ["sigmoid", "relu", "leaky_relu", "linear"]:
        model = fb.Sequential(
            [fb.layers.SimpleRNN(3, act), fb.layers.Dense(2)],
            backend=backend,
            dtype="float64",
            seed=3,
        )
        model.compile("sgd", "mse")
        assert fb.gradcheck(model, X, y) < 1e-6, act


@pytest.mark.parametrize("cell", GATES)
def test_truncated_bptt_is_not_the_full_gradient(cell, rng):
    """bptt_steps changes the gradient (so gradcheck fails) and equals PyTorch's detach."""
    X, y = rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 2))
    grads = []
    for k in [None, 2]:
        model = fb.Sequential([LAYER[cell](3, bptt_steps=k), fb.layers.Dense(2)], seed=4)
        model.compile("sgd", "mse")
        model.build(2)
        model.train_on_batch(X, y)  # allocates; then one more backprop to read the gradient
        model.executor.backprop(*model.prepare(X, y), count=False)
        grads.append(model.store.grads.copy())
    assert not np.allclose(grads[0], grads[1])


@pytest.mark.parametrize("cell", GATES)
def test_backends_train_alike(cell, rng):
    X, y = rng.standard_normal((20, 5, 3)), rng.integers(0, 2, 20)
    weights_after = []
    for backend in BACKENDS:
        model = fb.Sequential(
            [LAYER[cell](6), fb.layers.Dense(1, "sigmoid")],
            backend=backend,
            dtype="float64",
            seed=0,
        )
        model.compile(fb.optimizers.Adam(0.01, global_clipnorm=0.5), "binary_crossentropy")
        model.fit(X, y, epochs=3, batch_size=7, verbose=0)
        weights_after.append(model.get_weights())
    for other in weights_after[1:]:
        for a, b in zip(weights_after[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("clip", [dict(clipnorm=0.01), dict(global_clipnorm=0.01)])
def test_clipping_bounds_recurrent_updates(clip, rng):
    """SGD(lr=1) with a clip of 0.01: each variable (clipnorm) / all of them (global_clipnorm)
    moves by a vector of norm <= 0.01, equal to it when the gradient was larger."""
    X, y = rng.standard_normal((8, 5, 3)) * 3, rng.standard_normal((8, 2)) * 10
    model = fb.Sequential([fb.layers.LSTM(4), fb.layers.Dense(2)], dtype="float64", seed=0)
    model.compile(fb.optimizers.SGD(1.0, **clip), "mse")
    model.build(3)
    before = model.get_weights()
    model.train_on_batch(X, y)
    steps = [a - b for a, b in zip(model.get_weights(), before, strict=True)]
    if "clipnorm" in clip:
        for s in steps:
            assert np.linalg.norm(s) == pytest.approx(0.01, rel=1e-9)
    else:
        total = np.sqrt(sum(np.sum(s * s) for s in steps))
        assert total == pytest.approx(0.01, rel=1e-9)


@pytest.mark.parametrize("cell", GATES)
def test_learns_sequence_sign_task(cell):
    """Sign of the sum of a sequence: needs memory over all steps; float32, default backend."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 8, 1)).astype(np.float32)
    y = (X.sum(axis=(1, 2)) > 0).astype(np.int64)
    model = fb.Sequential([LAYER[cell](16), fb.layers.Dense(2, "softmax")], seed=0)
    model.compile(fb.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(X[:400], y[:400], epochs=30, batch_size=32, verbose=0)
    assert model.evaluate(X[400:], y[400:])[1] >= 0.9


def test_save_load_round_trip(tmp_path, rng):
    X = rng.standard_normal((4, 3, 2))
    model = fb.Sequential(
        [fb.layers.GRU(3, return_sequences=True, input_shape=(3, 2)), fb.layers.LSTM(2)], seed=0
    )
    model.compile("adam", "mse")
    model.fit(X, rng.standard_normal((4, 2)), epochs=2, verbose=0)
    model.save(tmp_path / "m.fastbp")
    loaded = fb.load(tmp_path / "m.fastbp")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.layers[0].return_sequences and loaded.layers[0].input_shape == (3, 2)


def test_variable_sequence_length(rng):
    model = fb.Sequential([fb.layers.SimpleRNN(3), fb.layers.Dense(1)], seed=0)
    model.compile("sgd", "mse")
    for T in [5, 2, 7]:
        model.train_on_batch(rng.standard_normal((4, T, 2)), rng.standard_normal(4))
        assert model.predict(rng.standard_normal((3, T, 2))).shape == (3, 1)


# -- bad input --------------------------------------------------------------------------------


def test_bad_input_is_refused(rng):
    model = fb.Sequential([fb.layers.LSTM(3), fb.layers.Dense(1)], seed=0)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples, timesteps, n_features\)"):
        model.fit(rng.standard_normal((4, 2)), np.ones(4), verbose=0)
    with pytest.raises(ValueError, match=r"x is empty.*timesteps >= 1"):
        model.fit(np.ones((4, 0, 2)), np.ones(4), verbose=0)
    model.fit(rng.standard_normal((4, 5, 2)), np.ones(4), verbose=0)
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples, timesteps, 2\)"):
        model.predict(rng.standard_normal((4, 5, 3)))
    with pytest.raises(ValueError, match=r"y must have shape \(4, 1\)"):
        model.fit(rng.standard_normal((4, 5, 2)), np.ones((4, 5)), verbose=0)
    fixed = fb.Sequential([fb.layers.GRU(3, input_shape=(5, 2))])
    fixed.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples, 5, 2\), got \(4, 6, 2\)"):
        fixed.predict(np.ones((4, 6, 2)))
    # a recurrent layer behind a many-to-one one gets 2-D input
    stacked = fb.Sequential([fb.layers.LSTM(3), fb.layers.LSTM(2)])
    with pytest.raises(ValueError, match="LSTM expects 3-D input"):
        stacked.predict(np.ones((2, 4, 1)))


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="units must be a positive int"):
        fb.layers.GRU(0)
    with pytest.raises(ValueError, match="bptt_steps must be a positive int or None"):
        fb.layers.LSTM(3, bptt_steps=0)
    with pytest.raises(ValueError, match="input_shape must be \\(timesteps, features\\)"):
        fb.layers.SimpleRNN(3, input_shape=(4,))
    with pytest.raises(ValueError, match="not a recurrent activation"):
        fb.layers.SimpleRNN(3, activation="softmax")
    with pytest.raises(ValueError, match="input_shape must be"):
        fb.layers.Dense(3, input_shape=(0, 2))
    with pytest.raises(ValueError, match="needs a last layer with activation"):
        model = fb.Sequential([fb.layers.LSTM(3)])
        model.compile("sgd", "binary_crossentropy")


@pytest.mark.parametrize("backend", COMPILED)
def test_kernel_edge_refuses_bad_shapes(backend, rng):
    be = backends.get(backend)
    X = rng.standard_normal((2, 3, 4))
    Wx, Wh, b = weights("lstm", 4, 5, rng, np.float64)
    Xt, H, C, G = (
        np.empty((3, 2, 4)),
        np.empty((4, 2, 5)),
        np.empty((4, 2, 5)),
        np.empty((3, 2, 20)),
    )
    with pytest.raises(ValueError, match=r"Y must have shape \(2, 15\) \(return_sequences\)"):
        be.lstm_forward(X, Wx, Wh, b, Xt, H, C, G, np.empty((2, 4)))
    with pytest.raises(ValueError, match=r"Wx must have shape \(4, 20\)"):
        be.lstm_forward(X, Wx[:, :16].copy(), Wh, b, Xt, H, C, G, np.empty((2, 5)))
    with pytest.raises(ValueError, match=r"H must have shape \(4, 2, 5\)"):
        be.lstm_forward(X, Wx, Wh, b, Xt, H[:3], C, G, np.empty((2, 5)))
    with pytest.raises(ValueError, match="needs non-empty shapes"):
        be.lstm_forward(X[:, :0], Wx, Wh, b, Xt[:0], H[:1], C[:1], G[:0], np.empty((2, 5)))
    with pytest.raises(ValueError, match="Buffer dtype mismatch|X must be a C-contiguous float64"):
        be.lstm_forward(X.astype(np.float32), Wx, Wh, b, Xt, H, C, G, np.empty((2, 5)))


# -- the two-thread team of the compiled LSTM and GRU (src_c/_team.h) --------------------------


# (m, T, F, n), each m·n·3n >= 2^17 (the team's size): n = 64 splits 32/32 units, n = 40 32/8;
# F = 300 and n = 544 take gemm_blocked's K and N chunks; m = 1 leaves thread 1 no rows of dX
TEAM_SHAPES = [(12, 5, 7, 64), (32, 3, 300, 40), (16, 1, 2, 64), (1, 2, 3, 544)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", TEAM_SHAPES)
@pytest.mark.parametrize("seq", [True, False])
@pytest.mark.parametrize("bptt", [0, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_team_matches_reference_and_serial(cell, dtype, shape, seq, bptt, bias, team, rng):
    m, T, F, n = shape
    X = rng.standard_normal((m, T, F)).astype(dtype)
    Wx, Wh, b = weights(cell, F, n, rng, dtype)
    Wx /= np.sqrt(F)  # F = 300: keep the gates out of saturation
    b = b if bias else None
    dY = rng.standard_normal((m, T * n if seq else n)).astype(dtype)
    ref = run(backends.get("numpy"), cell, X, Wx, Wh, b, seq, bptt, dY)
    got = run(backends.get("cython"), cell, X, Wx, Wh, b, seq, bptt, dY)
    assert team() == 2  # forward and backward ran on the team
    from fastbp import _ckernels

    _ckernels.set_team_threads(1)
    serial = run(backends.get("cython"), cell, X, Wx, Wh, b, seq, bptt, dY)
    assert team() == 2
    names = ["Y", "dWx", "dWh", "db", "dX"]
    for name, r, g, s in zip(names, ref, got, serial, strict=True):
        if r is None:
            assert g is None and s is None
            continue
        np.testing.assert_allclose(g, r, **TOL[dtype], err_msg=name)
        np.testing.assert_array_equal(g, s, err_msg=name)  # the same numbers, team or not
    # without dX: the region skips it (and its meeting)
    _ckernels.set_team_threads(2)
    got2 = run(backends.get("cython"), cell, X, Wx, Wh, b, seq, bptt, dY, need_dX=False)
    assert team() == 4
    assert got2[4] is None
    np.testing.assert_allclose(got2[1], got[1], **TOL[dtype])


def test_team_off_and_small_steps_run_serially(team, rng):
    from fastbp import _ckernels

    X = rng.standard_normal((2, 3, 4))
    Wx, Wh, b = weights("lstm", 4, 6, rng, np.float64)
    run(backends.get("cython"), "lstm", X, Wx, Wh, b, True, 0, np.ones((2, 18)))
    assert team() == 0  # a 2x6x24 step is too small to split
    X = rng.standard_normal((8, 3, 4))
    Wx, Wh, b = weights("lstm", 4, 64, rng, np.float64)
    _ckernels.set_team_threads(1)
    run(backends.get("cython"), "lstm", X, Wx, Wh, b, True, 0, np.ones((8, 192)))
    assert team() == 0
    _ckernels.set_team_threads(2)
    run(backends.get("cython"), "lstm", X, Wx, Wh, b, True, 0, np.ones((8, 192)))
    assert team() == 2
    with pytest.raises(ValueError, match="n must be >= 1"):
        _ckernels.set_team_threads(0)


def test_team_waits_for_blas_to_quiet_down(team, rng):
    """Right after a BLAS call (its workers may still spin) the layer runs serially."""
    from fastbp import _ckernels

    _ckernels._set_team_quiet(60.0)
    a = rng.standard_normal((300, 300))
    backends.get("cython").dense_forward(a, a, None, 0, 0.0, np.empty((300, 300)))  # BLAS
    X = rng.standard_normal((8, 3, 4))
    Wx, Wh, b = weights("lstm", 4, 64, rng, np.float64)
    run(backends.get("cython"), "lstm", X, Wx, Wh, b, True, 0, np.ones((8, 192)))
    assert team() == 0


def test_team_comes_back_after_a_refused_region(team, rng):
    """A region the team refused (BLAS ran within the quiet time) runs serially without BLAS:
    if its own BLAS-sized products (this LSTM's input projection and weight gradients) called
    BLAS, each call would refuse the next region too, and layers trained back to back would
    stay serial for good (the runner's W6 after W5: 8-9 ms a step instead of 5)."""
    import time

    from fastbp import _ckernels

    _ckernels._set_team_quiet(0.05)
    a = rng.standard_normal((300, 300))
    backends.get("cython").dense_forward(a, a, None, 0, 0.0, np.empty((300, 300)))  # BLAS
    X = rng.standard_normal((32, 20, 40))  # projection 640x40 by 40x128: BLAS-sized
    Wx, Wh, b = weights("lstm", 40, 32, rng, np.float64)
    dY = np.ones((32, 32))
    run(backends.get("cython"), "lstm", X, Wx, Wh, b, False, 0, dY)
    assert team() == 0  # refused: within 0.05 s of the BLAS call
    end = time.perf_counter() + 2.0
    while team() == 0 and time.perf_counter() < end:  # back to back, no pause
        run(backends.get("cython"), "lstm", X, Wx, Wh, b, False, 0, dY)
    assert team() > 0
