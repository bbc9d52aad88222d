"""The same training step written with each peer library, for the comparison runner.

Each ``*_peer(wid, model, X, y)`` builds the workload's network with the fastbp model's initial
weights and returns a callable running ``steps`` training steps over ``X`` / ``y`` (arrays of
shape (steps, batch, ...)), or None when the library is not installed.
"""

from __future__ import annotations

from .workloads import RECURRENT, WORKLOADS


def _spec(wid: str):
    sizes, hidden, out, loss, batch, _ = WORKLOADS[wid]
    return sizes, hidden, out, loss


def torch_peer(wid, model, X, y, device="cpu", tf32=False):
    """PyTorch eager: one Python-driven step per batch (fused Adam where Adam); on ``device``
    ("cuda": data and model on the GPU first, fp32 with TF32 matmuls off or on)."""
    try:
        import torch
    except ImportError:
        return None
    if wid in RECURRENT:
        net, loss = _torch_recurrent(torch, model), "sparse_categorical_crossentropy"
    else:
        net, loss = _torch_dense(torch, wid, model), _spec(wid)[3]
    net = net.to(device)
    opt_cfg = model.optimizer.get_config()
    if type(model.optimizer).__name__ == "Adam":
        opt = torch.optim.Adam(net.parameters(), lr=opt_cfg["learning_rate"], eps=1e-7, fused=True)
    else:
        opt = torch.optim.SGD(
            net.parameters(), lr=opt_cfg["learning_rate"], momentum=opt_cfg.get("momentum", 0.0)
        )
    loss_fn = torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.cross_entropy
    Xt = torch.from_numpy(X).to(device)
    Yt = torch.from_numpy(y).to(device)

    def run():
        if device != "cpu":  # a global switch: set for this peer's rounds
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        for i in range(Xt.shape[0]):
            opt.zero_grad(set_to_none=False)
            value = loss_fn(net(Xt[i]), Yt[i])
            value.backward()
            opt.step()
        return value.item()

    return run


def _torch_recurrent(torch, model):
    """nn.RNN/LSTM/GRU + Linear holding the fastbp model's weights (mapping: fastbp.recurrent)."""
    rec, dense = model.layers
    (F, g), n = rec.Wx.shape, rec.units
    cls = {"SimpleRNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}
    mod = cls[type(rec).__name__](F, n, batch_first=True)
    perm = list(range(n, 2 * n)) + list(range(n)) + list(range(2 * n, 3 * n))
    perm = perm if type(rec).__name__ == "GRU" else list(range(g))
    b = rec.b.reshape(-1, g)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(rec.Wx[:, perm].T.copy()))
        mod.weight_hh_l0.copy_(torch.from_numpy(rec.Wh[:, perm].T.copy()))
        mod.bias_ih_l0.copy_(torch.from_numpy(b[0, perm].copy()))
        mod.bias_hh_l0.copy_(torch.from_numpy(b[-1, perm].copy() if len(b) == 2 else 0 * b[0]))
    lin = torch.nn.Linear(n, dense.units)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(dense.W.T.copy()))
        lin.bias.copy_(torch.from_numpy(dense.b.copy()))

    class LastStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rec, self.lin = mod, lin

        def forward(self, x):
            return self.lin(self.rec(x)[0][:, -1])

    return LastStep()


def _torch_dense(torch, wid, model):
    """nn.Sequential of Linear layers holding the fastbp model's weights."""
    sizes, hidden, out, loss = _spec(wid)
    act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[hidden]
    mods = []
    for i, layer in enumerate(model.layers):
        lin = torch.nn.Linear(*layer.W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.W.T.copy()))
            lin.bias.copy_(torch.from_numpy(layer.b.copy()))
        mods.append(lin)
        if i < len(model.layers) - 1:
            mods.append(act())
    if out == "sigmoid":
        mods.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*mods)


def _jax_parts(wid, model, X, y):
    import jax
    import jax.numpy as jnp

    if wid in RECURRENT:
        raise ImportError("the JAX peer is written for the dense workloads only")
    sizes, hidden, out, loss = _spec(wid)
    act = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}[hidden]
    params = [(jnp.asarray(la.W), jnp.asarray(la.b)) for la in model.layers]
    cfg = model.optimizer.get_config()
    adam = type(model.optimizer).__name__ == "Adam"
    lr, mom = cfg["learning_rate"], cfg.get("momentum", 0.0)

    def loss_fn(ps, xb, yb):
        h = xb
        for W, b in ps[:-1]:
            h = act(h @ W + b)
        z = h @ ps[-1][0] + ps[-1][1]
        if loss == "mse":
            return jnp.mean(((jax.nn.sigmoid(z) if out == "sigmoid" else z) - yb) ** 2)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), yb[:, None], axis=1))

    grad_fn = jax.value_and_grad(loss_fn)

    def step(carry, batch):
        ps, m, v, t = carry
        value, g = grad_fn(ps, *batch)
        t = t + 1
        if adam:  # Kingma & Ba with eps on sqrt(v̂), as fastbp and PyTorch
            m = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
            v = jax.tree.map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            ps = jax.tree.map(
                lambda p, a, b: p - lr * (a / c1) / (jnp.sqrt(b / c2) + 1e-7), ps, m, v
            )
        else:
            m = jax.tree.map(lambda a, b: mom * a - lr * b, m, g)
            ps = jax.tree.map(lambda p, a: p + a, ps, m)
        return (ps, m, v, t), value

    zeros = jax.tree.map(jnp.zeros_like, params)
    carry = (params, zeros, zeros, jnp.float32(0))
    return jax, step, carry, jnp.asarray(X), jnp.asarray(y)


def jax_step_peer(wid, model, X, y):
    """JAX: one jitted step per batch, called from a Python loop."""
    try:
        jax, step, carry, Xj, Yj = _jax_parts(wid, model, X, y)
    except ImportError:
        return None
    jstep = jax.jit(step)
    state = {"carry": carry}
    batches = [(Xj[i], Yj[i]) for i in range(Xj.shape[0])]

    def run():
        c = state["carry"]
        for b in batches:
            c, value = jstep(c, b)
        value.block_until_ready()
        state["carry"] = c

    return run


def jax_scan_peer(wid, model, X, y):
    """JAX: the whole epoch in one jit (``lax.scan`` over the batches)."""
    try:
        jax, step, carry, Xj, Yj = _jax_parts(wid, model, X, y)
    except ImportError:
        return None
    epoch = jax.jit(lambda c, xs, ys: jax.lax.scan(step, c, (xs, ys)))
    state = {"carry": carry}

    def run():
        c, values = epoch(state["carry"], Xj, Yj)
        values.block_until_ready()
        state["carry"] = c

    return run


def numpy_peer(wid, model, X, y):
    """fastbp's NumPy reference backend, one step per batch (a vectorized NumPy trainer)."""
    from .workloads import build

    ref, _, _ = build(wid, "numpy")
    ref.set_weights(model.get_weights())

    def run():
        for i in range(X.shape[0]):
            ref.train_on_batch(X[i], y[i])

    return run


PEERS = {
    "torch": torch_peer,
    "jax": jax_step_peer,
    "jax_scan": jax_scan_peer,
    "numpy": numpy_peer,
}
