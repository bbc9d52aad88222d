"""NumPy implementation of the kernel contract: the oracle every other backend is tested against.

Written for clarity, not speed; each function mirrors one row of ``contract``'s table.
"""

import numpy as np
from scipy.special import expit

from .contract import (
    ADAMW,
    BINARY_CE,
    CATEGORICAL_CE,
    EPSILON,
    HYPER,
    LEAKY_RELU,
    LINEAR,
    MSE,
    RELU,
    RMSPROP,
    SGD,
    SIGMOID,
    SOFTMAX,
    TANH,
)

name = "numpy"


def _softmax(z, alpha):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# act(z) and dz = da ⊙ act'(z) expressed through a = act(z), as tables (scikit-learn's style).
ACTIVATIONS = {
    LINEAR: lambda z, alpha: z,
    SIGMOID: lambda z, alpha: expit(z),
    TANH: lambda z, alpha: np.tanh(z),
    RELU: lambda z, alpha: np.maximum(z, 0),
    LEAKY_RELU: lambda z, alpha: np.where(z > 0, z, alpha * z),
    SOFTMAX: _softmax,
}
DERIVATIVES = {
    LINEAR: lambda a, da, alpha: da,
    SIGMOID: lambda a, da, alpha: da * a * (1 - a),
    TANH: lambda a, da, alpha: da * (1 - a * a),
    RELU: lambda a, da, alpha: np.where(a > 0, da, 0),
    LEAKY_RELU: lambda a, da, alpha: np.where(a > 0, da, alpha * da),
    SOFTMAX: lambda a, da, alpha: a * (da - (da * a).sum(axis=1, keepdims=True)),
}


def dense_forward(X, W, b, act, alpha, A):
    """A = act(X·W + b)."""
    Z = X @ W
    if b is not None:
        Z += b
    A[...] = ACTIVATIONS[act](Z, A.dtype.type(alpha))


def dense_backward(X, W, A, dA, act, alpha, dW, db, dX):
    """dZ = dA ⊙ act'(A) (into dA); dW = Xᵀ·dZ; db = Σ_rows dZ; dX = dZ·Wᵀ."""
    dA[...] = DERIVATIVES[act](A, dA, A.dtype.type(alpha))
    np.matmul(X.T, dA, out=dW)
    if db is not None:
        db[...] = dA.sum(axis=0)
    if dX is not None:
        np.matmul(dA, W.T, out=dX)


def loss(kind, P, Y, dP, fused=False):
    """Keras losses: mse/bce mean over all elements, cce mean over rows; dP = ∂L/∂P or ∂L/∂Z."""
    m, n = P.shape
    eps = P.dtype.type(EPSILON)
    if kind == MSE:
        dP[...] = 2 * (P - Y) / (m * n)
        return float(np.mean((P.astype(np.float64) - Y) ** 2))
    if kind == BINARY_CE:
        q = np.clip(P, eps, 1 - eps)
        value = -np.mean(
            Y * np.log(q.astype(np.float64)) + (1 - Y) * np.log1p(-q.astype(np.float64))
        )
        if fused:
            dP[...] = (P - Y) / (m * n)
        else:
            dP[...] = np.where(q == P, (q - Y) / (q * (1 - q)), 0) / (m * n)
        return float(value)
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
    raise ValueError(f"kind must be a dense-label loss id in 0..2, got {kind}")


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


def _flush(x):
    """Values below the smallest normal number become 0 (see src_c/_optim.pxi: subnormals)."""
    return np.where(np.abs(x) >= np.finfo(x.dtype).tiny, x, 0).astype(x.dtype)


def optimizer_step(kind, params, grads, state, hyper, t, segments, seg_reg):
    """Fused optimizer update (see src_c/_optim.pxi for the formulas; same order of operations).

    Optimizer state (and AdamW's decayed weights) below the smallest normal number is set to 0.
    """
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
    lr, mom = dt(h["learning_rate"]), dt(h["momentum"])
    for (a, b), g, scale in zip(segments.tolist(), effs, scales, strict=True):
        g = g * dt(scale)
        if h["clipvalue"] > 0:
            g = np.clip(g, -dt(h["clipvalue"]), dt(h["clipvalue"]))
        p, s0, s1 = params[a:b], state[0, a:b], state[1, a:b]
        if kind == SGD:
            if mom == 0:
                p -= lr * g
            else:
                s0[...] = _flush(mom * s0 - lr * g)
                p += (mom * s0 - lr * g) if h["nesterov"] else s0
        elif kind == RMSPROP:
            rho = dt(h["rho"])
            s0[...] = _flush(rho * s0 + (1 - rho) * g * g)
            inc = lr * g / np.sqrt(s0 + dt(h["epsilon"]))
            if mom > 0:
                s1[...] = _flush(mom * s1 + inc)
                p -= s1
            else:
                p -= inc
        else:
            b1, b2 = dt(h["beta_1"]), dt(h["beta_2"])
            if kind == ADAMW:
                p[...] = _flush(p * dt(1.0 - h["learning_rate"] * h["weight_decay"]))
            s0[...] = _flush(b1 * s0 + (1 - b1) * g)
            s1[...] = _flush(b2 * s1 + (1 - b2) * g * g)
            step = dt(h["learning_rate"] / (1 - h["beta_1"] ** t))
            inv_sqrt_bc2 = dt(1 / np.sqrt(1 - h["beta_2"] ** t))
            p -= step * s0 / (np.sqrt(s1) * inv_sqrt_bc2 + dt(h["epsilon"]))


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


from .reference_rnn import (  # noqa: E402, F401  (part of this backend; tables above used there)
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
