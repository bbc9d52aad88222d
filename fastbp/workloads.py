"""The DESIGN.md workloads W1-W4 (float32; step = forward + backward + optimizer update)."""

import numpy as np

import fastbp as fb

# id: (layer sizes, hidden activation, output activation, loss, batch, optimizer factory)
WORKLOADS = {
    "W1": ([2, 2, 1], "sigmoid", "sigmoid", "mse", 4, lambda: fb.optimizers.SGD(0.5)),
    "W2": (
        [64, 64, 10],
        "relu",
        "softmax",
        "sparse_categorical_crossentropy",
        32,
        lambda: fb.optimizers.Adam(),
    ),
    "W3": (
        [784, 256, 256, 10],
        "relu",
        "softmax",
        "sparse_categorical_crossentropy",
        128,
        lambda: fb.optimizers.Adam(),
    ),
    "W4": (
        [2048] * 5 + [10],
        "relu",
        "softmax",
        "sparse_categorical_crossentropy",
        512,
        lambda: fb.optimizers.SGD(0.01, momentum=0.9),
    ),
}

# One representative dense layer per workload for kernel benchmarks: (batch, n_in, n_out).
LAYER_SHAPES = {"W3": (128, 784, 256), "W4": (512, 2048, 2048)}


def flops_per_step(wid: str) -> float:
    """6·batch·Σ n_in·n_out: forward GEMM + two backward GEMMs per layer (DESIGN's convention)."""
    sizes, *_, batch, _ = WORKLOADS[wid]
    return 6.0 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def build(wid: str, backend: str = "cython", seed: int = 0):
    """The fastbp model of workload ``wid`` and one batch of data for it."""
    sizes, hidden, out, loss, batch, make_opt = WORKLOADS[wid]
    layers = [fb.layers.Dense(sizes[1], hidden, input_dim=sizes[0])]
    layers += [fb.layers.Dense(n, hidden) for n in sizes[2:-1]]
    layers.append(fb.layers.Dense(sizes[-1], out))
    model = fb.Sequential(layers, backend=backend, dtype="float32", seed=seed)
    model.compile(make_opt(), loss)
    model.build()
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    if loss == "mse":
        y = rng.integers(0, 2, (batch, sizes[-1])).astype(np.float32)
    else:
        y = rng.integers(0, sizes[-1], batch)
    return model, X, y


def torch_step(wid: str, seed: int = 0):
    """The same workload as a PyTorch eager training step (fused Adam where Adam); or None."""
    try:
        import torch
    except ImportError:
        return None
    sizes, hidden, out, loss, batch, _ = WORKLOADS[wid]
    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[hidden]
    mods = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=False):
        mods += [torch.nn.Linear(a, b), act()]
    mods.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    if out == "sigmoid":
        mods.append(torch.nn.Sigmoid())
    net = torch.nn.Sequential(*mods)
    params = list(net.parameters())
    if wid == "W1":
        opt = torch.optim.SGD(params, lr=0.5)
    elif wid == "W4":
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7, fused=True)
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    if loss == "mse":
        Y = torch.from_numpy(rng.integers(0, 2, (batch, sizes[-1])).astype(np.float32))
        loss_fn = torch.nn.functional.mse_loss
    else:
        Y = torch.from_numpy(rng.integers(0, sizes[-1], batch))
        loss_fn = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad(set_to_none=False)
        value = loss_fn(net(X), Y)
        value.backward()
        opt.step()
        return value.item()

    return step
