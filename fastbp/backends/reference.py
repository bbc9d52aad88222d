"""NumPy implementation of the kernel contract: the oracle every other backend is tested against.

Written for clarity, not speed; each function mirrors one row of ``contract``'s table.
"""

import numpy as np

from .. import _formulas, activations
from ..losses import ELEMENTS, FUSABLE
from ..optimizers import UPDATES, check_kind, step_coefficients
from .contract import (
    CATEGORICAL_CE,
    EPSILON,
    HYPER,
)
from .reference_rnn import (  # noqa: F401  (part of this backend)
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)

name = "numpy"

# {id: (value, gradient)}: the element-wise losses' formulas on arrays (fastbp.losses); a value
# clipped in the arrays' dtype goes on in float64, as the compiled kernels take its logarithm
_LOSS_NAMES = _formulas.numpy_names() | {
    "clip": lambda x, lo, hi: np.clip(x, lo, hi).astype(np.float64)
}
_LOSS_ELEMENTS = {k: _formulas.bind(f, _LOSS_NAMES) for k, f in ELEMENTS.items()}
_DENSE_LOSSES = sorted([*ELEMENTS, CATEGORICAL_CE])
# {id: update}: the optimizers' formulas on arrays (fastbp.optimizers)
_UPDATES = {k: _formulas.bind(f, _formulas.numpy_names()) for k, f in UPDATES.items()}
activation = activations.numpy_forward
activation_backward = activations.numpy_backward


def dense_forward(X, W, b, act, alpha, A, Z=None):
    """A = act(X·W + b); Z = X·W + b where given (activations whose derivative needs z)."""
    activations.check_id(act, alpha)
    activations.check_z(act, Z, (X.shape[0], W.shape[1]))
    z = X @ W
    if b is not None:
        z += b
    if Z is not None:
        Z[...] = z
    A[...] = activation(act, z, A.dtype.type(alpha))


def dense_backward(X, W, A, dA, act, alpha, dW, db, dX, Z=None):
    """dZ = dA ⊙ act'(Z, A) (into dA); dW = Xᵀ·dZ; db = Σ_rows dZ; dX = dZ·Wᵀ."""
    activations.check_id(act, alpha)
    activations.check_z(act, Z, dA.shape)
    dA[...] = activation_backward(act, Z, A, dA, A.dtype.type(alpha))
    np.matmul(X.T, dA, out=dW)
    if db is not None:
        db[...] = dA.sum(axis=0)
    if dX is not None:
        np.matmul(dA, W.T, out=dX)


def loss(kind, P, Y, dP, fused=False):
    """Keras losses: mse/bce mean over all elements, cce mean over rows; dP = ∂L/∂P or ∂L/∂Z."""
    m, n = P.shape
    eps = P.dtype.type(EPSILON)
    if kind in _LOSS_ELEMENTS:  # the registry's formula on every element, the mean of them
        value, grad = _LOSS_ELEMENTS[kind](P, Y, eps, 1 - eps)
        dP[...] = ((P - Y) if fused and kind in FUSABLE else grad) / (m * n)
        return float(np.mean(value, dtype=np.float64))
    if kind == CATEGORICAL_CE:
        s = P.sum(axis=1, keepdims=True)
        q = P / s
        r = np.clip(q, eps, 1 - eps)
        value = -np.sum(Y * np.log(r.astype(np.float64))) / m
        if fused:
            dP[...] = (P * Y.sum(axis=1, keepdims=True) - Y) / m
        else:
            free = r == q
            c = np.sum(np.where(free, Y, 0), axis=1, keepdims=True)
            dP[...] = (c - np.where(free, Y / q, 0)) / s / m
        return float(value)
    raise ValueError(f"kind must be a dense-label loss id in {_DENSE_LOSSES}, got {kind}")


def loss_sparse(P, labels, dP, fused=False):
    """Sparse categorical CE = categorical CE against one-hot(labels)."""
    Y = np.zeros_like(P)
    Y[np.arange(P.shape[0]), labels] = 1
    return loss(CATEGORICAL_CE, P, Y, dP, fused)


def count_correct(P, Y):
    """Rows predicted right: threshold 0.5 for one output, argmax otherwise."""
    if P.shape[1] == 1:
        return int(np.sum((P > 0.5) == (Y > 0.5)))
    return int(np.sum(P.argmax(axis=1) == Y.argmax(axis=1)))


def count_correct_sparse(P, labels):
    """Rows whose argmax equals the label."""
    return int(np.sum(P.argmax(axis=1) == labels))


def regularization_loss(params, segments, coef):
    """Σ over segments [start, end) of l1·Σ|p| + l2·Σp²."""
    total = 0.0
    for (a, b), (l1, l2) in zip(segments.tolist(), coef.tolist(), strict=True):
        p = params[a:b].astype(np.float64)
        total += l1 * np.abs(p).sum() + l2 * np.square(p).sum()
    return float(total)


def optimizer_step(kind, params, grads, state, hyper, t, segments, seg_reg):
    """Fused optimizer update: the effective gradient g = (grad + 2·l2·p + l1·sign(p))·scale,
    clipped by value, then the optimizer's formula (fastbp.optimizers) on each segment."""
    check_kind(kind)
    h = dict(zip(HYPER, hyper.tolist(), strict=True))
    dt = params.dtype.type
    effs = []
    for (a, b), (l1, l2) in zip(segments.tolist(), seg_reg.tolist(), strict=True):
        p = params[a:b]
        effs.append(grads[a:b] + dt(2 * l2) * p + dt(l1) * np.sign(p))
    scales = [1.0] * len(effs)
    if h["global_clipnorm"] > 0:
        norm = np.sqrt(sum(float(np.sum(e.astype(np.float64) ** 2)) for e in effs))
        scales = [h["global_clipnorm"] / norm if norm > h["global_clipnorm"] else 1.0] * len(effs)
    elif h["clipnorm"] > 0:
        norms = [np.sqrt(float(np.sum(e.astype(np.float64) ** 2))) for e in effs]
        scales = [h["clipnorm"] / nm if nm > h["clipnorm"] else 1.0 for nm in norms]
    coefs = step_coefficients(hyper, t, dt)
    update = _UPDATES[kind]
    for (a, b), g, scale in zip(segments.tolist(), effs, scales, strict=True):
        g = g * dt(scale)
        if h["clipvalue"] > 0:
            g = np.clip(g, -dt(h["clipvalue"]), dt(h["clipvalue"]))
        params[a:b], state[0, a:b], state[1, a:b] = update(
            params[a:b], g, state[0, a:b], state[1, a:b], *coefs
        )


def _uniform01(seed, step, n):
    """The counter-based uniforms of src_c/_norm.pxi (splitmix64 of seed, step, index)."""
    with np.errstate(over="ignore"):
        z = (
            np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
            + np.uint64(step) * np.uint64(0xD1B54A32D192ED03)
            + np.arange(n, dtype=np.uint64)
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 9007199254740992.0


def dropout_forward(X, rate, seed, step, mask, A):
    """mask = [u ≥ rate] / (1 − rate); A = X ⊙ mask."""
    u = _uniform01(seed, step, X.size).reshape(X.shape)
    mask[...] = np.where(u >= rate, 1.0 / (1.0 - rate), 0.0)
    A[...] = X * mask


def dropout_backward(dA, mask, dX):
    """dX = dA ⊙ mask."""
    dX[...] = dA * mask


def batchnorm_forward(
    X, gamma, beta, epsilon, training, momentum, moving_mean, moving_var, mean, inv_std, Xhat, A
):
    """x̂ = (X − μ)/√(σ² + ε), A = γ⊙x̂ + β; training: batch statistics, moving averages updated."""
    if training:
        mu, var = X.mean(axis=0), X.var(axis=0)
        moving_mean[...] = momentum * moving_mean + (1 - momentum) * mu
        moving_var[...] = momentum * moving_var + (1 - momentum) * var
    else:
        mu, var = moving_mean, moving_var
    mean[...] = mu
    inv_std[...] = 1.0 / np.sqrt(var + epsilon)
    Xhat[...] = (X - mean) * inv_std
    A[...] = gamma * Xhat + beta


def batchnorm_backward(dA, Xhat, gamma, inv_std, dgamma, dbeta, dX):
    """dβ = Σ dA; dγ = Σ dA⊙x̂; dX = γσ⁻¹(dA − (dβ + x̂⊙dγ)/m)."""
    dbeta[...] = dA.sum(axis=0)
    dgamma[...] = (dA * Xhat).sum(axis=0)
    dX[...] = gamma * inv_std * (dA - (dbeta + Xhat * dgamma) / dA.shape[0])


def batchnorm_backward_frozen(dA, gamma, inv_std, dX):
    """dX = dA ⊙ γσ⁻¹ (statistics held fixed: a frozen layer, or inference-mode batches)."""
    np.multiply(dA, gamma * inv_std, out=dX)
