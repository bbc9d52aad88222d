"""Numba CPU backend (``backend="numba"``): the whole kernel contract as ``@njit`` functions.

GEMMs go through ``np.dot`` (Numba calls SciPy's BLAS, the one the Cython backend uses);
everything element-wise is a fused loop. ``fastmath`` allows reassociation and contraction but
not "no NaN / no inf": a sigmoid of -1000 must still give exactly 0 through exp() = inf.
Compiled code is cached on disk (``cache=True``): the first import of a session compiles
(~1 min for both dtypes), later ones load. Each public function checks shapes, dtypes and
contiguity before entering compiled code (the same messages as the Cython backend).
"""

import numpy as np

from .. import activations, losses, optimizers
from .._formulas import dispatch
from .contract import (
    CATEGORICAL_CE,
    EPSILON,
)
from .numba_common import (  # noqa: F401  (_act_ok: shared with the CUDA backend's checks)
    _act_backward,
    _act_ok,
    _bias_act,
    _check,
    _scalar,
    _shape,
    jit,
)
from .numba_rnn import (  # noqa: F401  (part of this backend)
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)

name = "numba"
_update = dispatch(_scalar, optimizers.UPDATES, "p, g, s0, s1, " + optimizers.COEFS, "update")
_loss_element = dispatch(_scalar, losses.ELEMENTS, "p, y, lo, hi", "loss_element")


# -- dense --------------------------------------------------------------------------------------


@jit
def _dense_forward(X, W, b, act, alpha, A, Z):
    np.dot(X, W, out=A)
    _bias_act(A, b, act, alpha, Z)


@jit
def _dense_backward(X, W, A, dA, act, alpha, dW, db, dX, Z):
    _act_backward(A, dA, db, act, alpha, Z)
    np.dot(X.T, dA, out=dW)
    if dX is not None:
        np.dot(dA, W.T, out=dX)


def dense_forward(X, W, b, act, alpha, A, Z=None):
    """A = act(X·W + b); Z = X·W + b where given (activations whose derivative needs z)."""
    _check(A.dtype, X=X, W=W, b=b, A=A, Z=Z)
    m, k = X.shape
    n = W.shape[1]
    _shape("W", W, (k, n)), _shape("A", A, (m, n)), _shape("b", b, (n,))
    _act_ok(act, alpha)
    activations.check_z(act, Z, (m, n))
    if 0 in (m, k, n):
        raise ValueError(f"dense_forward needs non-empty shapes, got m={m}, k={k}, n={n}")
    _dense_forward(X, W, b, act, A.dtype.type(alpha), A, Z)


def dense_backward(X, W, A, dA, act, alpha, dW, db, dX, Z=None):
    """dZ = dA ⊙ act'(Z, A) (into dA); dW = Xᵀ·dZ; db = Σ_rows dZ; dX = dZ·Wᵀ."""
    _check(A.dtype, X=X, W=W, A=A, dA=dA, dW=dW, db=db, dX=dX, Z=Z)
    m, k = X.shape
    n = W.shape[1]
    for key, a, want in (("W", W, (k, n)), ("A", A, (m, n)), ("dA", dA, (m, n)),
                         ("dW", dW, (k, n)), ("db", db, (n,)), ("dX", dX, (m, k))):  # fmt: skip
        _shape(key, a, want)
    _act_ok(act, alpha)
    activations.check_z(act, Z, (m, n))
    if 0 in (m, k, n):
        raise ValueError(f"dense_backward needs non-empty shapes, got m={m}, k={k}, n={n}")
    _dense_backward(X, W, A, dA, act, A.dtype.type(alpha), dW, db, dX, Z)


# -- losses ---------------------------------------------------------------------------------------


@jit
def _loss(kind, P, Y, dP, fused, eps):
    m, n = P.shape
    total = 0.0
    one = P.dtype.type(1)
    if kind != CATEGORICAL_CE:  # element-wise: the registry's formula (fastbp.losses)
        inv = P.dtype.type(1.0 / (m * n))
        for i in range(m):
            for j in range(n):
                p, y = P[i, j], Y[i, j]
                value, grad = _loss_element(kind, p, y, eps, one - eps)
                total += float(value)
                dP[i, j] = ((p - y) if fused else grad) * inv
        return total / (m * n)
    for i in range(m):  # categorical: rows renormalized, as Keras
        s = P[i].sum()
        ysum = Y[i].sum()
        c = P.dtype.type(0)
        for j in range(n):
            q = P[i, j] / s
            r = min(max(q, eps), one - eps)
            total -= float(Y[i, j]) * np.log(float(r))
            if not fused and r == q:
                c += Y[i, j]
        for j in range(n):
            if fused:
                dP[i, j] = (P[i, j] * ysum - Y[i, j]) / m
            else:
                q = P[i, j] / s
                free = min(max(q, eps), one - eps) == q
                dP[i, j] = (c - (Y[i, j] / q if free else 0)) / s / m
    return total / m


def _loss_args(kind, P) -> None:
    """The loss kernels' value checks (kind None: the sparse loss); host or device P."""
    dense = sorted([*losses.ELEMENTS, CATEGORICAL_CE])
    if kind is not None and kind not in dense:
        raise ValueError(f"kind must be a dense-label loss id in {dense}, got {kind}")
    if P.size == 0:
        raise ValueError(f"loss needs a non-empty P, got {tuple(P.shape)}")


def loss(kind, P, Y, dP, fused=False):
    """Keras losses: value, and dP = ∂L/∂P (∂L/∂Z when fused)."""
    _check(P.dtype, P=P, Y=Y, dP=dP)
    _shape("Y", Y, P.shape), _shape("dP", dP, P.shape)
    _loss_args(kind, P)
    fused = bool(fused) and kind in losses.FUSABLE
    return float(_loss(kind, P, Y, dP, fused, P.dtype.type(EPSILON)))


def _labels(P, labels):
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
        raise ValueError("labels must be a 1-D int64 array")
    if labels.shape[0] != P.shape[0]:
        raise ValueError(f"labels must have shape ({P.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= P.shape[1]):
        raise ValueError(f"labels must lie in [0, {P.shape[1]})")


@jit
def _loss_sparse(P, labels, dP, fused, eps):
    """Categorical cross-entropy against one-hot(labels), without building the one-hot rows."""
    m, n = P.shape
    one, zero = P.dtype.type(1), P.dtype.type(0)
    total = 0.0
    for i in range(m):
        s = P[i].sum()
        k = labels[i]
        q = P[i, k] / s
        r = min(max(q, eps), one - eps)
        total -= np.log(float(r))
        free = r == q  # the clip did not act: the gradient flows
        c = one if free else zero
        for j in range(n):
            y = one if j == k else zero
            if fused:
                dP[i, j] = (P[i, j] * one - y) / m
            else:
                dP[i, j] = (c - (one / q if (j == k and free) else zero)) / s / m
    return total / m


def loss_sparse(P, labels, dP, fused=False):
    """Sparse categorical cross-entropy = categorical against one-hot(labels)."""
    _check(P.dtype, P=P, dP=dP)
    _shape("dP", dP, P.shape)
    _labels(P, labels)
    _loss_args(None, P)
    return float(_loss_sparse(P, labels, dP, bool(fused), P.dtype.type(EPSILON)))


@jit
def _count(P, Y):
    m, n = P.shape
    right = 0
    for i in range(m):
        if n == 1:
            right += (P[i, 0] > 0.5) == (Y[i, 0] > 0.5)
        else:
            right += np.argmax(P[i]) == np.argmax(Y[i])
    return right


def count_correct(P, Y):
    """Rows predicted right: threshold 0.5 for one output, argmax otherwise."""
    _shape("Y", Y, P.shape)
    return int(_count(P, Y))


@jit
def _count_sparse(P, labels):
    right = 0
    for i in range(P.shape[0]):
        right += np.argmax(P[i]) == labels[i]
    return right


def count_correct_sparse(P, labels):
    """Rows whose argmax equals the label."""
    _labels(P, labels)
    return int(_count_sparse(P, labels))


# -- optimizer ------------------------------------------------------------------------------------


@jit
def _reg_loss(params, segments, coef):
    total = 0.0
    for s in range(segments.shape[0]):
        l1, l2 = coef[s, 0], coef[s, 1]
        for i in range(segments[s, 0], segments[s, 1]):
            p = float(params[i])
            total += l1 * abs(p) + l2 * p * p
    return total


def regularization_loss(params, segments, coef):
    """Σ over segments [start, end) of l1·Σ|p| + l2·Σp²."""
    _segments(params, segments, coef)
    return float(_reg_loss(params, segments, coef))


@jit
def _optimizer_step(kind, params, grads, state, h, segments, seg_reg, coefs):
    dt = params.dtype.type
    nseg = segments.shape[0]
    # per segment: g_eff = g + 2·l2·p + l1·sign(p); norms in float64
    norms = np.zeros(nseg)
    for s in range(nseg):
        l1, l2 = dt(seg_reg[s, 0]), dt(2 * seg_reg[s, 1])
        for i in range(segments[s, 0], segments[s, 1]):
            p = params[i]
            g = grads[i] + l2 * p + l1 * np.sign(p)
            norms[s] += float(g) * float(g)
    scales = np.ones(nseg)
    if h[10] > 0:
        norm = np.sqrt(norms.sum())
        if norm > h[10]:
            scales[:] = h[10] / norm
    elif h[8] > 0:
        for s in range(nseg):
            norm = np.sqrt(norms[s])
            if norm > h[8]:
                scales[s] = h[8] / norm
    cv = dt(h[9])
    for s in range(nseg):
        l1, l2 = dt(seg_reg[s, 0]), dt(2 * seg_reg[s, 1])
        scale = dt(scales[s])
        for i in range(segments[s, 0], segments[s, 1]):
            p = params[i]
            g = (grads[i] + l2 * p + l1 * np.sign(p)) * scale
            if cv > 0:
                g = min(max(g, -cv), cv)
            params[i], state[0, i], state[1, i] = _update(
                kind, p, g, state[0, i], state[1, i], *coefs
            )


def _segments(params, segments, coef):
    if not isinstance(segments, np.ndarray) or segments.dtype != np.int64 or segments.ndim != 2:
        raise ValueError("segments must be an (s, 2) int64 array")
    if coef.shape != segments.shape or coef.dtype != np.float64:
        raise ValueError(f"coefficients must be a float64 array shaped {segments.shape}")
    for s, (a, b) in enumerate(segments.tolist()):
        if not 0 <= a <= b <= params.size:
            raise ValueError(f"segments[{s}] = {(a, b)} is outside [0, {params.size}]")


def optimizer_step(kind, params, grads, state, hyper, t, segments, seg_reg):
    """Fused optimizer update over the flat buffers (formulas: fastbp.optimizers)."""
    _check(params.dtype, params=params, grads=grads, state=state)
    _shape("grads", grads, params.shape), _shape("state", state, (2, params.size))
    _segments(params, segments, seg_reg)
    if hyper.shape != (len(optimizers.HYPER),) or hyper.dtype != np.float64:
        raise ValueError(
            f"hyper must be a float64 array of shape ({len(optimizers.HYPER)},), got {hyper.shape}"
        )
    optimizers.check_kind(kind)
    if not t >= 1:
        raise ValueError(f"t must be >= 1, got {t}")
    coefs = optimizers.step_coefficients(hyper, float(t), params.dtype.type)
    _optimizer_step(kind, params, grads, state, hyper, segments, seg_reg, coefs)


# -- dropout and batch normalization --------------------------------------------------------------


@jit
def _dropout(X, rate, seed, step, mask, A):
    keep = X.dtype.type(1.0 / (1.0 - rate))
    x, mk, a = X.ravel(), mask.ravel(), A.ravel()
    base = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(step) * np.uint64(
        0xD1B54A32D192ED03
    )
    for i in range(x.size):
        z = base + np.uint64(i)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        u = float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        mk[i] = keep if u >= rate else 0
        a[i] = x[i] * mk[i]


def dropout_forward(X, rate, seed, step, mask, A):
    """mask = [u ≥ rate]/(1 − rate), u = splitmix64(seed, step, index); A = X ⊙ mask."""
    _check(X.dtype, X=X, mask=mask, A=A)
    _shape("mask", mask, X.shape), _shape("A", A, X.shape)
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    _dropout(X, float(rate), np.uint64(seed), np.uint64(step), mask, A)


def dropout_backward(dA, mask, dX):
    """dX = dA ⊙ mask."""
    _check(dA.dtype, dA=dA, mask=mask, dX=dX)
    _shape("mask", mask, dA.shape), _shape("dX", dX, dA.shape)
    np.multiply(dA, mask, out=dX)


@jit
def _bn_forward(X, gamma, beta, eps, training, mom, mmean, mvar, mean, inv_std, Xhat, A):
    m, n = X.shape
    if training:
        mean[:] = 0
        inv_std[:] = 0
        for i in range(m):
            for j in range(n):
                mean[j] += X[i, j]
        mean /= m
        for i in range(m):
            for j in range(n):
                d = X[i, j] - mean[j]
                inv_std[j] += d * d
        for j in range(n):
            inv_std[j] /= m
            mmean[j] = mom * mmean[j] + (1 - mom) * mean[j]
            mvar[j] = mom * mvar[j] + (1 - mom) * inv_std[j]
            inv_std[j] = 1 / np.sqrt(inv_std[j] + eps)
    else:
        for j in range(n):
            mean[j] = mmean[j]
            inv_std[j] = 1 / np.sqrt(mvar[j] + eps)
    for i in range(m):
        for j in range(n):
            Xhat[i, j] = (X[i, j] - mean[j]) * inv_std[j]
            A[i, j] = gamma[j] * Xhat[i, j] + beta[j]


def batchnorm_forward(
    X, gamma, beta, epsilon, training, momentum, moving_mean, moving_var, mean, inv_std, Xhat, A
):
    """x̂ = (X − μ)/√(σ² + ε), A = γ⊙x̂ + β; training: batch statistics, moving ones updated."""
    vecs = dict(gamma=gamma, beta=beta, moving_mean=moving_mean, moving_var=moving_var)
    vecs |= dict(mean=mean, inv_std=inv_std)
    _check(X.dtype, X=X, Xhat=Xhat, A=A, **vecs)
    for key, v in vecs.items():
        _shape(key, v, (X.shape[1],))
    _shape("Xhat", Xhat, X.shape), _shape("A", A, X.shape)
    if X.size == 0 or not epsilon > 0:
        raise ValueError(f"batchnorm_forward needs a non-empty X and epsilon > 0, got {X.shape}")
    dt = X.dtype.type
    _bn_forward(X, gamma, beta, dt(epsilon), bool(training), dt(momentum), moving_mean,
                moving_var, mean, inv_std, Xhat, A)  # fmt: skip


@jit
def _bn_backward(dA, Xhat, gamma, inv_std, dgamma, dbeta, dX):
    m, n = dA.shape
    dgamma[:] = 0
    dbeta[:] = 0
    for i in range(m):
        for j in range(n):
            dbeta[j] += dA[i, j]
            dgamma[j] += dA[i, j] * Xhat[i, j]
    inv_m = dA.dtype.type(1.0 / m)
    for i in range(m):
        for j in range(n):
            dX[i, j] = (
                gamma[j] * inv_std[j] * (dA[i, j] - inv_m * (dbeta[j] + Xhat[i, j] * dgamma[j]))
            )


def batchnorm_backward_frozen(dA, gamma, inv_std, dX):
    """dX = dA ⊙ γσ⁻¹ (fixed statistics)."""
    _check(dA.dtype, dA=dA, gamma=gamma, inv_std=inv_std, dX=dX)
    np.multiply(dA, gamma * inv_std, out=dX)


def batchnorm_backward(dA, Xhat, gamma, inv_std, dgamma, dbeta, dX):
    """dβ = Σ dA; dγ = Σ dA⊙x̂; dX = γσ⁻¹(dA − (dβ + x̂⊙dγ)/m)."""
    vecs = dict(gamma=gamma, inv_std=inv_std, dgamma=dgamma, dbeta=dbeta)
    _check(dA.dtype, dA=dA, Xhat=Xhat, dX=dX, **vecs)
    for key, v in vecs.items():
        _shape(key, v, (dA.shape[1],))
    _shape("Xhat", Xhat, dA.shape), _shape("dX", dX, dA.shape)
    if dA.size == 0:
        raise ValueError(f"batchnorm_backward needs a non-empty dA, got {dA.shape}")
    _bn_backward(dA, Xhat, gamma, inv_std, dgamma, dbeta, dX)
