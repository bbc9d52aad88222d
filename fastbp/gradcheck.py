"""Finite-difference gradient checking of a whole model."""

import numpy as np

from .model import Sequential


def loss_and_gradient(model: Sequential, X: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss (with regularization) and its gradient w.r.t. the flat parameters, by backprop."""
    model.ensure_capacity(X.shape[0], X.shape[1:])
    ex = model.executor
    loss, _ = ex.backprop(X, Y, count=False)
    model.pull()  # a device model: its gradient, and host parameters to perturb
    grad = model.store.grads.astype(np.float64)
    for layer in model.layers:
        for p, start, reg in zip(layer.params, layer.offsets, layer.regularizers(), strict=True):
            if reg is not None:  # the same penalty the optimizer kernel adds
                grad[start : start + p.size] += (reg.l1 * np.sign(p) + 2 * reg.l2 * p).ravel()
    return loss + ex.regularization_loss(), grad


def _loss(model: Sequential, X, Y) -> float:
    ex = model.executor
    P = ex.forward(X, training=True)  # the same masks and batch statistics as backprop
    return ex.loss_kernel(P, Y, model.layers[-1].dA[: X.shape[0]]) + ex.regularization_loss()


def gradcheck(model: Sequential, x, y, eps: float = 1e-5) -> float:
    """Max relative error between backprop and central finite differences.

    ``(L(p + ε) − L(p − ε)) / 2ε`` for every parameter; the error of entry i is
    ``|g_i − n_i| / max(|g_i|, |n_i|, 1e-3·max|g|)`` (the floor keeps near-zero entries, whose
    finite difference is all rounding, from dominating). Use a float64 model.

    Parameters
    ----------
    model : Sequential
        A compiled model.
    x : array (n_samples, n_features)
    y : array of targets as ``fit`` takes them
    eps : float
        Step of the central difference.

    Returns
    -------
    float
        The largest relative error over all parameters.
    """
    X, Y = model.prepare(x, y)
    _, grad = loss_and_gradient(model, X, Y)
    p = model.store.params
    numeric = np.empty_like(grad)
    for i in range(p.size):
        old = p[i]
        p[i] = old + eps  # (the next forward pushes a device model's parameters over again)
        up = _loss(model, X, Y)
        model.pull()
        p[i] = old - eps
        down = _loss(model, X, Y)
        model.pull()
        p[i] = old
        numeric[i] = (up - down) / (2 * eps)
    floor = max(1e-3 * float(np.abs(grad).max(initial=0.0)), 1e-12)
    denom = np.maximum(np.maximum(np.abs(grad), np.abs(numeric)), floor)
    return float(np.max(np.abs(grad - numeric) / denom))
