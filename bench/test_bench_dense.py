"""pytest-benchmark: dense forward vs backward of one layer, and whole training steps.

Run: ``pytest bench/ --benchmark-enable --benchmark-group-by=group``. In each "dense" group the
backward should take about twice the forward (two GEMMs of the forward's size).
"""

import numpy as np
import pytest

import fastbp as fb
from fastbp.backends.contract import RELU
from fastbp.workloads import LAYER_SHAPES, WORKLOADS, build, torch_step

BACKENDS = fb.backends.available()


def _layer(shape, seed=0):
    m, k, n = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, k)).astype(np.float32)
    W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = np.zeros(n, np.float32)
    A = np.empty((m, n), np.float32)
    return X, W, b, A


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wid", sorted(LAYER_SHAPES))
def test_dense_forward(benchmark, wid, backend):
    be = fb.backends.get(backend)
    X, W, b, A = _layer(LAYER_SHAPES[wid])
    benchmark.group = f"dense {wid} {LAYER_SHAPES[wid]}"
    benchmark(be.dense_forward, X, W, b, RELU, 0.0, A)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wid", sorted(LAYER_SHAPES))
def test_dense_backward(benchmark, wid, backend):
    be = fb.backends.get(backend)
    X, W, b, A = _layer(LAYER_SHAPES[wid])
    be.dense_forward(X, W, b, RELU, 0.0, A)
    dA = np.random.default_rng(1).standard_normal(A.shape).astype(np.float32)
    dW, db, dX = np.empty_like(W), np.empty_like(b), np.empty_like(X)
    benchmark.group = f"dense {wid} {LAYER_SHAPES[wid]}"
    # relu' masks dA in place once; later rounds see the same masked values
    benchmark(be.dense_backward, X, W, A, dA, RELU, 0.0, dW, db, dX)


@pytest.mark.parametrize("peer", BACKENDS + ["torch"])
@pytest.mark.parametrize("wid", sorted(WORKLOADS))
def test_train_step(benchmark, wid, peer):
    benchmark.group = f"train step {wid}"
    if peer == "torch":
        step = torch_step(wid)
        if step is None:
            pytest.skip("PyTorch is not installed")
        benchmark(step)
        return
    model, X, y = build(wid, peer)
    benchmark(model.train_on_batch, X, y)
