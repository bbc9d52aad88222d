"""The benchmark workloads (float32; step = forward + backward + optimizer update): W1-W4 dense
(W3D: W3 with Dropout(0.2) after each hidden layer), W5/W6 recurrent (W6 is the LSTM, W6-GRU the
same with a GRU), W7/W8 dense for the GPU."""

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
    # GPU workloads: large (GEMM-bound) and narrow (fully fused MLP)
    "W7": (
        [4096] * 5 + [10],
        "relu",
        "softmax",
        "sparse_categorical_crossentropy",
        8192,
        lambda: fb.optimizers.Adam(),
    ),
    "W8": ([64] * 6 + [16], "relu", "linear", "mse", 262144, lambda: fb.optimizers.Adam()),
}


WORKLOADS["W3D"] = WORKLOADS["W3"]  # W3 with Dropout after each hidden layer
#: Dropout rate after each hidden layer, where a workload has one
DROPOUT = {"W3D": 0.2}


# id: (recurrent layer, units, features, timesteps, classes, batch): last step -> Dense softmax,
# sparse categorical cross-entropy, Adam.
RECURRENT = {
    "W5": ("SimpleRNN", 128, 32, 50, 10, 32),
    "W6": ("LSTM", 128, 32, 50, 10, 32),
    "W6-GRU": ("GRU", 128, 32, 50, 10, 32),
}
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}


def flops_per_step(wid: str) -> float:
    """6·batch·Σ n_in·n_out: forward GEMM + two backward GEMMs per layer (DESIGN's convention);
    recurrent: the same for the gate GEMMs (features + units inputs) at every step."""
    if wid in RECURRENT:
        cell, n, F, T, k, batch = RECURRENT[wid]
        return 6.0 * batch * (T * (F + n) * GATES[cell] * n + n * k)
    sizes, *_, batch, _ = WORKLOADS[wid]
    return 6.0 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def input_shape(wid: str) -> tuple:
    """Per-sample input shape and the number of classes / outputs."""
    if wid in RECURRENT:
        _, _, F, T, k, _ = RECURRENT[wid]
        return (T, F), k
    sizes = WORKLOADS[wid][0]
    return (sizes[0],), sizes[-1]


def batch_size(wid: str) -> int:
    return RECURRENT[wid][-1] if wid in RECURRENT else WORKLOADS[wid][4]


def loss_of(wid: str) -> str:
    return "sparse_categorical_crossentropy" if wid in RECURRENT else WORKLOADS[wid][3]


def build(wid: str, backend: str = "cython", seed: int = 0):
    """The fastbp model of workload ``wid`` and one batch of data for it."""
    if wid in RECURRENT:
        return _build_recurrent(wid, backend, seed)
    sizes, hidden, out, loss, batch, make_opt = WORKLOADS[wid]
    rate = DROPOUT.get(wid, 0.0)
    layers = [fb.layers.Dense(sizes[1], hidden, input_dim=sizes[0])]
    for n in sizes[2:-1]:
        layers += [fb.layers.Dropout(rate)] if rate else []
        layers.append(fb.layers.Dense(n, hidden))
    layers += [fb.layers.Dropout(rate)] if rate else []
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


def _build_recurrent(wid, backend, seed):
    cell, n, F, T, k, batch = RECURRENT[wid]
    layers = [getattr(fb.layers, cell)(n, input_shape=(T, F)), fb.layers.Dense(k, "softmax")]
    model = fb.Sequential(layers, backend=backend, dtype="float32", seed=seed)
    model.compile(fb.optimizers.Adam(), "sparse_categorical_crossentropy")
    model.build()
    rng = np.random.default_rng(seed)
    return model, rng.standard_normal((batch, T, F)).astype(np.float32), rng.integers(0, k, batch)
