"""pytest-benchmark suites: every contract kernel at the benchmark workloads' shapes.

    pytest bench/ --benchmark-enable --benchmark-group-by=group --benchmark-columns=median,iqr

Groups: "<wl> layer <i> (m, k, n)" holds that layer's forward and backward side by side (the
backward does two GEMMs of the forward's size, one for the first layer); "<wl> loss",
"<wl> optimizer" and "<wl> step" hold the loss kernel, the fused update over the workload's
parameter count, and whole training steps (fastbp's backends, and PyTorch where installed);
"plain SGD epoch" compares the update fused into the backward pass with a separate one.
"""

import numpy as np
import pytest

import fastbp as fb
from fastbp.backends.contract import ACTIVATION_IDS, LOSS_IDS, OPTIMIZER_IDS
from fastbp.peers import torch_peer
from fastbp.workloads import WORKLOADS, build

BACKENDS = fb.backends.available()
LAYERS = [
    (wid, i, (spec[4], k, n), spec[1] if i < len(spec[0]) - 2 else spec[2])
    for wid, spec in sorted(WORKLOADS.items())
    for i, (k, n) in enumerate(zip(spec[0][:-1], spec[0][1:], strict=False))
    if not (wid == "W4" and 0 < i < 4)  # W4's four 2048x2048 layers are alike: bench one
]
IDS = [f"{wid}-layer{i}" for wid, i, _, _ in LAYERS]


def _arrays(shape, seed=0):
    m, k, n = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, k)).astype(np.float32)
    W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    return X, W, np.zeros(n, np.float32), np.empty((m, n), np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wid,i,shape,act", LAYERS, ids=IDS)
def test_dense_forward(benchmark, backend, wid, i, shape, act):
    be = fb.backends.get(backend)
    X, W, b, A = _arrays(shape)
    benchmark.group = f"{wid} layer {i} {shape}"
    benchmark(be.dense_forward, X, W, b, ACTIVATION_IDS[act], 0.2, A)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wid,i,shape,act", LAYERS, ids=IDS)
def test_dense_backward(benchmark, backend, wid, i, shape, act):
    be = fb.backends.get(backend)
    X, W, b, A = _arrays(shape)
    be.dense_forward(X, W, b, ACTIVATION_IDS[act], 0.2, A)
    dA = np.random.default_rng(1).standard_normal(A.shape).astype(np.float32)
    dW, db = np.empty_like(W), np.empty_like(b)
    dX = None if i == 0 else np.empty_like(X)  # as in training: no dX for the first layer
    benchmark.group = f"{wid} layer {i} {shape}"
    # the derivative is applied to dA in place; later rounds reuse it (same work, same shapes)
    benchmark(be.dense_backward, X, W, A, dA, ACTIVATION_IDS[act], 0.2, dW, db, dX)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wid", sorted(WORKLOADS))
def test_loss(benchmark, backend, wid):
    sizes, _, _, loss, batch, _ = WORKLOADS[wid]
    be = fb.backends.get(backend)
    rng = np.random.default_rng(0)
    P = rng.uniform(0.01, 1, (batch, sizes[-1])).astype(np.float32)
    P /= P.sum(axis=1, keepdims=True)
    dP = np.empty_like(P)
    benchmark.group = f"{wid} loss"
    if loss == "sparse_categorical_crossentropy":
        labels = rng.integers(0, sizes[-1], batch)
        benchmark(be.loss_sparse, P, labels, dP, True)
    else:
        Y = rng.integers(0, 2, P.shape).astype(np.float32)
        benchmark(be.loss, LOSS_IDS[loss], P, Y, dP, False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wid", sorted(WORKLOADS))
def test_optimizer_step(benchmark, backend, wid):
    model, _, _ = build(wid, backend)
    opt = model.optimizer
    store = model.store
    store.refresh_segments()
    benchmark.group = f"{wid} optimizer ({type(opt).__name__}, {model.count_params()} params)"
    store.grads[:] = 1e-3
    step = model.backend.optimizer_step
    kind = OPTIMIZER_IDS[type(opt).__name__.lower()]
    args = (store.params, store.grads, opt.state, opt._hyper, 3.0, store.seg, store.seg_reg)
    benchmark(step, kind, *args)


@pytest.mark.parametrize("peer", BACKENDS + ["torch"])
@pytest.mark.parametrize("wid", sorted(WORKLOADS))
def test_train_step(benchmark, wid, peer):
    benchmark.group = f"{wid} step"
    if peer == "torch":
        model, X, y = build(wid)
        run = torch_peer(wid, model, X[None], y[None])
        if run is None:
            pytest.skip("PyTorch is not installed")
        benchmark(run)
        return
    model, X, y = build(wid, peer)
    benchmark(model.train_on_batch, X, y)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "separate"])
def test_plain_sgd_epoch(benchmark, fused):
    """Nielsen's 784-30-10 (sigmoid, MSE, batch 10) for one epoch of 4000 rows: plain SGD
    updated inside the backward pass (fused into dW's store) vs one update pass over the flat
    buffer after it (a never-reached clipvalue takes that path: same weights, but its loop also
    evaluates the clip, so it bounds the separate pass from above)."""
    benchmark.group = "plain SGD epoch, 784-30-10, batch 10"
    rng = np.random.default_rng(0)
    X = rng.random((4000, 784), dtype=np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 4000)]
    model = fb.Sequential(
        [fb.layers.Dense(30, "sigmoid", input_dim=784), fb.layers.Dense(10, "sigmoid")], seed=0
    )
    opt = fb.optimizers.SGD(3.0) if fused else fb.optimizers.SGD(3.0, clipvalue=1e30)
    model.compile(opt, "mse")
    benchmark(model.fit, X, Y, batch_size=10, epochs=1, verbose=0)
