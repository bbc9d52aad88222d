"""The same training step written with each peer library, for the comparison runner.

Each ``*_peer(wid, model, X, y)`` builds the workload's network with the fastbp model's initial
weights and returns a callable running ``steps`` training steps over ``X`` / ``y`` (arrays of
shape (steps, batch, ...)), or None when the library is not installed.
"""

from __future__ import annotations

import numpy as np

from .workloads import DROPOUT, RECURRENT, WORKLOADS


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


def _dense_layers(model) -> list:
    return [la for la in model.layers if type(la).__name__ == "Dense"]


def _torch_dense(torch, wid, model):
    """nn.Sequential of Linear layers holding the fastbp model's weights (nn.Dropout after each
    hidden one where the workload has Dropout)."""
    sizes, hidden, out, loss = _spec(wid)
    act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[hidden]
    dense, rate = _dense_layers(model), DROPOUT.get(wid, 0.0)
    mods = []
    for i, layer in enumerate(dense):
        lin = torch.nn.Linear(*layer.W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.W.T.copy()))
            lin.bias.copy_(torch.from_numpy(layer.b.copy()))
        mods.append(lin)
        if i < len(dense) - 1:
            mods += [act(), torch.nn.Dropout(rate)] if rate else [act()]
    if out == "sigmoid":
        mods.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*mods)


def jax_update(jax, opt: str, lr: float, mom: float = 0.0):
    """The optimizer as lean as JAX allows: ``(init(params) -> state, update(params, state,
    grads) -> (params, state))``; plain SGD keeps no state at all (no momentum buffer), SGD with
    momentum one buffer, Adam (Kingma & Ba, epsilon on √v̂ as fastbp and PyTorch) m, v and t."""
    import jax.numpy as jnp

    tmap = jax.tree.map
    if opt == "adam":

        def init(ps):
            return tmap(jnp.zeros_like, ps), tmap(jnp.zeros_like, ps), jnp.float32(0)

        def update(ps, state, g):
            m, v, t = state
            t = t + 1
            m = tmap(lambda a, b: 0.9 * a + 0.1 * b, m, g)
            v = tmap(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            ps = tmap(lambda p, a, b: p - lr * (a / c1) / (jnp.sqrt(b / c2) + 1e-7), ps, m, v)
            return ps, (m, v, t)

    elif mom:

        def init(ps):
            return tmap(jnp.zeros_like, ps)

        def update(ps, m, g):
            m = tmap(lambda a, b: mom * a - lr * b, m, g)
            return tmap(lambda p, a: p + a, ps, m), m

    else:

        def init(ps):
            return ()

        def update(ps, state, g):
            return tmap(lambda p, b: p - lr * b, ps, g), state

    return init, update


def jax_dropout(jax, h, rate: float, key):
    """Inverted dropout of h with ``rate`` (identity at 0)."""
    if not rate:
        return h
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jax.numpy.where(keep, h / (1.0 - rate), 0.0)


def _jax_parts(wid, model, X, y):
    import jax
    import jax.numpy as jnp

    if wid in RECURRENT:
        raise ImportError("the JAX peer is written for the dense workloads only")
    sizes, hidden, out, loss = _spec(wid)
    act = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}[hidden]
    params = [(jnp.asarray(la.W), jnp.asarray(la.b)) for la in _dense_layers(model)]
    cfg = model.optimizer.get_config()
    kind = "adam" if type(model.optimizer).__name__ == "Adam" else "sgd"
    init, update = jax_update(jax, kind, cfg["learning_rate"], cfg.get("momentum", 0.0))
    rate = DROPOUT.get(wid, 0.0)

    def loss_fn(ps, xb, yb, key):
        h = xb
        for i, (W, b) in enumerate(ps[:-1]):
            h = jax_dropout(jax, act(h @ W + b), rate, jax.random.fold_in(key, i) if rate else None)
        z = h @ ps[-1][0] + ps[-1][1]
        if loss == "mse":
            return jnp.mean(((jax.nn.sigmoid(z) if out == "sigmoid" else z) - yb) ** 2)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), yb[:, None], axis=1))

    grad_fn = jax.value_and_grad(loss_fn)

    # the carry: (params, optimizer state), and the dropout key where there is dropout
    def step(carry, batch):
        if rate:
            ps, state, key = carry
            key, sub = jax.random.split(key)
        else:
            (ps, state), sub = carry, None
        value, g = grad_fn(ps, *batch, sub)
        ps, state = update(ps, state, g)
        return ((ps, state, key) if rate else (ps, state)), value

    carry = (params, init(params))
    carry = carry + (jax.random.key(0),) if rate else carry
    return jax, step, carry, jnp.asarray(X), jnp.asarray(y)


def jax_step_peer(wid, model, X, y):
    """JAX: one jitted step per batch, called from a Python loop (parameters and optimizer
    state donated: updated in place)."""
    try:
        jax, step, carry, Xj, Yj = _jax_parts(wid, model, X, y)
    except ImportError:
        return None
    jstep = jax.jit(step, donate_argnums=0)
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
    """JAX: the whole epoch in one jit (``lax.scan`` over the batches; the carry donated)."""
    try:
        jax, step, carry, Xj, Yj = _jax_parts(wid, model, X, y)
    except ImportError:
        return None
    epoch = jax.jit(lambda c, xs, ys: jax.lax.scan(step, c, (xs, ys)), donate_argnums=0)
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


def keras_peer(wid, model, X, y):
    """Keras 3 (JAX backend where none is chosen): the workload's layers with the fastbp model's
    weights, one ``fit`` per epoch with ``steps_per_execution`` = the epoch's steps (one compiled
    call per epoch, Keras' leanest loop)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return None
    if wid in RECURRENT:
        return None
    sizes, hidden, out, loss = _spec(wid)
    dense, rate = _dense_layers(model), DROPOUT.get(wid, 0.0)
    stack = [keras.Input((sizes[0],))]
    for i, la in enumerate(dense):
        last = i == len(dense) - 1
        stack.append(keras.layers.Dense(la.units, out if last else hidden))
        if rate and not last:
            stack.append(keras.layers.Dropout(rate))
    km = keras.Sequential(stack)
    km.set_weights([p for la in dense for p in la.params])
    cfg = model.optimizer.get_config()
    if type(model.optimizer).__name__ == "Adam":
        opt = keras.optimizers.Adam(cfg["learning_rate"], epsilon=1e-7)
    else:
        opt = keras.optimizers.SGD(cfg["learning_rate"], momentum=cfg.get("momentum", 0.0))
    steps, batch = X.shape[0], X.shape[1]
    km.compile(opt, loss, steps_per_execution=steps)
    Xf, yf = X.reshape((-1,) + X.shape[2:]), y.reshape((-1,) + y.shape[2:])

    def run():
        km.fit(Xf, yf, batch_size=batch, epochs=1, shuffle=False, verbose=0)

    return run


# -- the digits model (Dense relu → [Dropout | BatchNormalization] → Dense softmax, Adam, batch
# 32, shuffled epochs) as each peer writes it leanly; ``model``: a built fastbp model of it, for
# the initial weights. Each returns ``(fit(), accuracy(X, y))``; fit continues training.


def torch_digits(model, middle: str | None, X, y, epochs: int, bs: int = 32):
    """PyTorch eager: a shuffled index per epoch, slices of it per step (no DataLoader), fused
    Adam; Dropout(0.2) or BatchNorm1d with Keras' epsilon and momentum."""
    try:
        import torch
    except ImportError:
        return None
    W1, b1, W2, b2 = (torch.from_numpy(la.copy()) for la in _digits_weights(model))
    lin1, lin2 = torch.nn.Linear(*W1.shape), torch.nn.Linear(*W2.shape)
    with torch.no_grad():
        lin1.weight.copy_(W1.T), lin1.bias.copy_(b1), lin2.weight.copy_(W2.T), lin2.bias.copy_(b2)
    mid = {
        None: [],
        "Dropout": [torch.nn.Dropout(0.2)],
        "BatchNorm": [torch.nn.BatchNorm1d(W1.shape[1], eps=1e-3, momentum=0.01)],
    }[middle]
    net = torch.nn.Sequential(lin1, torch.nn.ReLU(), *mid, lin2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7, fused=True)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    lossf = torch.nn.functional.cross_entropy

    def fit():
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(Xt))
            for a in range(0, len(Xt), bs):
                idx = order[a : a + bs]
                opt.zero_grad(set_to_none=False)
                lossf(net(Xt[idx]), yt[idx]).backward()
                opt.step()

    def accuracy(Xe, ye):
        net.eval()
        with torch.no_grad():
            return float((net(torch.from_numpy(Xe)).argmax(1).numpy() == ye).mean())

    return fit, accuracy


def jax_digits(model, middle: str | None, X, y, epochs: int, bs: int = 32):
    """JAX: one jit per epoch (the shuffle, a ``lax.scan`` over the full batches, the last
    partial batch), the carry donated; Dropout(0.2) with a split key per step, or batch
    normalization (Keras' epsilon and momentum) with the moving statistics carried."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    init, update = jax_update(jax, "adam", 1e-3)
    W1, b1, W2, b2 = (jnp.asarray(a) for a in _digits_weights(model))
    ps = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    if middle == "BatchNorm":
        ps |= {"gamma": jnp.ones_like(b1), "beta": jnp.zeros_like(b1)}
    stats = (jnp.zeros_like(b1), jnp.ones_like(b1))
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    n = len(X)

    def hidden(ps, stats, xb, key, training):
        h = jax.nn.relu(xb @ ps["W1"] + ps["b1"])
        if middle == "BatchNorm":
            mm, mv = stats
            if training:
                mu, var = h.mean(0), h.var(0)
                stats = (0.99 * mm + 0.01 * mu, 0.99 * mv + 0.01 * var)
            else:
                mu, var = mm, mv
            h = (h - mu) / jnp.sqrt(var + 1e-3) * ps["gamma"] + ps["beta"]
        elif middle == "Dropout" and training:
            h = jax_dropout(jax, h, 0.2, key)
        return h @ ps["W2"] + ps["b2"], stats

    def loss_fn(ps, stats, xb, yb, key):
        z, stats = hidden(ps, stats, xb, key, True)
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), yb[:, None], axis=1))
        return ce, stats

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(carry, idx):
        ps, state, stats, key = carry
        key, sub = jax.random.split(key)
        (_, stats), g = grad_fn(ps, stats, Xj[idx], yj[idx], sub)
        ps, state = update(ps, state, g)
        return (ps, state, stats, key), None

    full = n // bs * bs

    def epoch(carry):
        key, sub = jax.random.split(carry[3])
        order = jax.random.permutation(sub, n)
        carry = carry[:3] + (key,)
        carry, _ = jax.lax.scan(step, carry, order[:full].reshape(-1, bs))
        if full < n:
            carry, _ = step(carry, order[full:])
        return carry

    jepoch = jax.jit(epoch, donate_argnums=0)
    box = {"carry": (ps, init(ps), stats, jax.random.key(0))}

    def fit():
        c = box["carry"]
        for _ in range(epochs):
            c = jepoch(c)
        jax.block_until_ready(c)
        box["carry"] = c

    def accuracy(Xe, ye):
        ps, _, stats, _ = box["carry"]
        z, _ = hidden(ps, stats, jnp.asarray(Xe), None, False)
        return float((np.asarray(z).argmax(1) == ye).mean())

    return fit, accuracy


def _digits_weights(model) -> list:
    """W1, b1, W2, b2 of the digits model's two Dense layers (float32 copies)."""
    return [p.astype(np.float32) for la in _dense_layers(model) for p in la.params]


PEERS = {
    "torch": torch_peer,
    "jax": jax_step_peer,
    "jax_scan": jax_scan_peer,
    "numpy": numpy_peer,
    "keras": keras_peer,
}
