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
