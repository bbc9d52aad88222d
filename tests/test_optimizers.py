"""Each optimizer's step against its formula written out here, and PyTorch's trajectories."""

import numpy as np
import pytest
from conftest import BACKENDS, dense_model

import fastbp as fb
from fastbp.backends.contract import OPTIMIZER_IDS

LR = 0.05


def _run(backend, opt, grads, p0):
    """Apply ``opt`` through the backend kernel for each gradient in turn; return params."""
    be = fb.backends.get(backend)
    p = p0.copy()
    opt.build(p.size, p.dtype)
    seg, reg = np.array([[0, p.size]], dtype=np.int64), np.zeros((1, 2))
    for g in grads:
        opt.step(be, p, g, seg, reg)
    return p


def _formula(name, grads, p0, **h):
    """The update rules, one line each, as the docs state them."""
    p, s0, s1 = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    if name == "adagrad":
        s0 += 0.1  # Keras' initial_accumulator_value
    for t, g in enumerate(grads, start=1):
        if name == "adagrad":
            s0 = s0 + g**2
            p = p - LR * g / np.sqrt(s0 + 1e-7)
        elif name == "sgd":
            p = p - LR * g
        elif name == "momentum":
            s0 = h["m"] * s0 - LR * g
            p = p + s0
        elif name == "nesterov":
            s0 = h["m"] * s0 - LR * g
            p = p + h["m"] * s0 - LR * g
        elif name == "rmsprop":
            s0 = 0.9 * s0 + 0.1 * g**2
            p = p - LR * g / np.sqrt(s0 + 1e-7)
        elif name == "rmsprop_momentum":
            s0 = 0.9 * s0 + 0.1 * g**2
            s1 = 0.5 * s1 + LR * g / np.sqrt(s0 + 1e-7)
            p = p - s1
        elif name == "adam_epsilon_hat":  # scikit-learn's AdamOptimizer, Keras' Adam
            s0 = 0.9 * s0 + 0.1 * g
            s1 = 0.999 * s1 + 0.001 * g**2
            p = p - LR * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * s0 / (np.sqrt(s1) + 1e-7)
        else:  # adam / adamw
            if name == "adamw":
                p = p - LR * 0.1 * p
            s0 = 0.9 * s0 + 0.1 * g
            s1 = 0.999 * s1 + 0.001 * g**2
            m_hat, v_hat = s0 / (1 - 0.9**t), s1 / (1 - 0.999**t)
            p = p - LR * m_hat / (np.sqrt(v_hat) + 1e-7)
    return p


CASES = [
    ("sgd", fb.optimizers.SGD(LR), {}),
    ("momentum", fb.optimizers.SGD(LR, momentum=0.9), {"m": 0.9}),
    ("nesterov", fb.optimizers.SGD(LR, momentum=0.9, nesterov=True), {"m": 0.9}),
    ("rmsprop", fb.optimizers.RMSprop(LR), {}),
    ("rmsprop_momentum", fb.optimizers.RMSprop(LR, momentum=0.5), {}),
    ("adam", fb.optimizers.Adam(LR), {}),
    ("adam_epsilon_hat", fb.optimizers.Adam(LR, epsilon_hat=True), {}),
    ("adamw", fb.optimizers.AdamW(LR, weight_decay=0.1), {}),
    ("adagrad", fb.optimizers.Adagrad(LR), {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,opt,h", CASES, ids=[c[0] for c in CASES])
def test_step_matches_formula(backend, name, opt, h, dtype):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(37)  # two 16-wide vectors and a remainder
    grads = [rng.standard_normal(37) for _ in range(4)]
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)
    got = _run(backend, opt, [g.astype(dtype) for g in grads], p0.astype(dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, _formula(name, grads, p0, **h), **tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_float32_adam_step_to_an_ulp(backend, name):
    """float32 Adam's step within a few ulp of the exact one at lr 1 (the formula test above,
    at LR 0.05 and rtol 2e-5, would not see an update term off by 1e-5 relative: a reciprocal
    estimate in place of the division, say)."""
    rng = np.random.default_rng(1)
    p0 = rng.uniform(-1, 1, 37).astype(np.float32)
    g = rng.standard_normal(37).astype(np.float32)
    opt = fb.optimizers.Adam(1.0) if name == "adam" else fb.optimizers.AdamW(1.0, weight_decay=0.1)
    got = _run(backend, opt, [g], p0)
    # one step from m = v = 0 in float64 with the kernel's float32 constants:
    # m = (1 − β1)·g, v = (1 − β2)·g², update = lr/(1 − β1) · m / (√v / √(1 − β2) + ε)
    f = np.float32
    g64, b1, b2 = g.astype(np.float64), float(f(0.9)), float(f(0.999))
    m, v = float(f(1 - b1)) * g64, float(f(1 - b2)) * g64 * g64
    step, ibc2 = float(f(1 / (1 - 0.9))), float(f(1 / np.sqrt(1 - 0.999)))
    q = p0.astype(np.float64) * (float(f(0.9)) if name == "adamw" else 1.0)
    want = q - step * m / (np.sqrt(v) * ibc2 + float(f(1e-7)))
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.spacing(np.float32(2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_formulas(backend):
    g = np.array([3.0, -4.0, 0.0, 12.0])  # |g[:2]| = 5, |g[2:]| = 12, global 13
    p0 = np.zeros(4)
    be = fb.backends.get(backend)
    seg = np.array([[0, 2], [2, 4]], dtype=np.int64)

    def step(**clip):
        opt = fb.optimizers.SGD(1.0, **clip)
        opt.build(4, np.float64)
        p = p0.copy()
        opt.step(be, p, g, seg, np.zeros((2, 2)))
        return -p

    np.testing.assert_allclose(step(clipvalue=3.5), [3.0, -3.5, 0.0, 3.5])
    np.testing.assert_allclose(step(clipnorm=1.0), [0.6, -0.8, 0.0, 1.0])  # per variable
    np.testing.assert_allclose(step(global_clipnorm=1.3), g * 0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_regularizers_in_update(backend):
    # SGD lr 1 on zero gradient: the step is exactly the penalty's gradient l1·sign(W) + 2·l2·W
    model = dense_model(
        [3, 2],
        ["linear"],
        backend=backend,
        kernel_regularizer=fb.regularizers.L1L2(l1=0.1, l2=0.25),
    )
    model.build()
    W0, b0 = model.get_weights()
    model.compile(fb.optimizers.SGD(1.0), "mse")
    store = model.store
    store.refresh_segments()
    store.grads[:] = 0
    model.optimizer.step(model.backend, store.params, store.grads, store.seg, store.seg_reg)
    W1, b1 = model.get_weights()
    np.testing.assert_allclose(W0 - W1, 0.1 * np.sign(W0) + 0.5 * W0)
    np.testing.assert_array_equal(b1, b0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,opt,h", CASES, ids=[c[0] for c in CASES])
def test_effective_gradient_feeds_every_optimizer(backend, name, opt, h, dtype):
    """L1, L2 and clipvalue (the kernels' general path) give the plain path's step on the
    effective gradient clip((g + 2·l2·p + l1·sign p), ±cv)."""
    rng = np.random.default_rng(1)
    p0, g = rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype)
    p0[5] = 0  # sign(0) = 0
    be = fb.backends.get(backend)
    seg = np.array([[0, 37]], dtype=np.int64)
    general = type(opt)(**{**opt.get_config(), "clipvalue": 0.5})
    general.build(37, dtype)
    p = p0.copy()
    general.step(be, p, g, seg, np.array([[0.1, 0.2]]))
    plain = type(opt)(**opt.get_config())
    plain.build(37, dtype)
    q = p0.copy()
    g_eff = np.clip(g + 0.4 * p0 + 0.1 * np.sign(p0), -0.5, 0.5).astype(dtype)
    plain.step(be, q, g_eff, seg, np.zeros((1, 2)))
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, q, **tol)


def test_optimizer_validation():
    with pytest.raises(ValueError, match="learning_rate"):
        fb.optimizers.Adam(learning_rate=-1)
    with pytest.raises(ValueError, match="momentum"):
        fb.optimizers.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="at most one"):
        fb.optimizers.SGD(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(TypeError, match="beta_1"):
        fb.optimizers.Adam(beta_1="0.9")
    assert set(OPTIMIZER_IDS) == set(fb.optimizers.OPTIMIZERS)


# -- PyTorch as the oracle for whole training trajectories ------------------------------------


def _torch_trajectory(torch, model, X, y, make_opt, steps):
    layers = []
    for layer in model.layers:
        lin = torch.nn.Linear(layer.W.shape[0], layer.W.shape[1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.W.T.copy()))
            lin.bias.copy_(torch.from_numpy(layer.b.copy()))
        # the output softmax is inside torch's cross_entropy, which takes logits
        act = {"tanh": torch.nn.Tanh(), "softmax": torch.nn.Identity()}[layer.activation]
        layers += [lin, act]
    net = torch.nn.Sequential(*layers)
    opt = make_opt(net.parameters())
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(Xt), yt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    weights = []
    for lin in net[::2]:
        weights += [lin.weight.detach().numpy().T, lin.bias.detach().numpy()]
    return losses, weights


TORCH_CASES = {
    "sgd_nesterov": (
        lambda: fb.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        lambda t, ps: t.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    ),
    "adam": (lambda: fb.optimizers.Adam(0.01), lambda t, ps: t.optim.Adam(ps, lr=0.01, eps=1e-7)),
    "adamw": (
        lambda: fb.optimizers.AdamW(0.01, weight_decay=0.05),
        lambda t, ps: t.optim.AdamW(ps, lr=0.01, eps=1e-7, weight_decay=0.05),
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_trajectory_matches_pytorch(backend, case):
    torch = pytest.importorskip("torch", reason="PyTorch is the trajectory oracle")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((16, 5))
    y = rng.integers(0, 3, 16)
    model = dense_model([5, 7, 3], ["tanh", "softmax"], backend=backend)
    ours, theirs = TORCH_CASES[case]
    model.compile(ours(), "sparse_categorical_crossentropy")
    model.build()
    t_losses, t_weights = _torch_trajectory(torch, model, X, y, lambda ps: theirs(torch, ps), 5)
    f_losses = [model.train_on_batch(X, y) for _ in range(5)]
    np.testing.assert_allclose(f_losses, t_losses, rtol=1e-9)
    for a, b in zip(model.get_weights(), t_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
