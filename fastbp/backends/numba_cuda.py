"""numba.cuda backend (``backend="cuda"``): the kernel contract on the GPU.

Every function takes device arrays (numba's, or any CUDA Array Interface object such as a CuPy
array or a PyTorch CUDA tensor, wrapped without a copy) and works in place; NumPy arrays are
accepted too, copied over and (outputs) back, which is what the contract tests use. The model
keeps parameters, gradients, optimizer state and workspaces on the device for a whole ``fit``
(``device = True`` below), so only the data and the per-epoch sums cross the bus.

Kernels: ``cuda_gemm`` (tiled GEMM with fused epilogue), ``cuda_kernels`` (element-wise and
reductions), ``cuda_rnn`` (recurrent layers), ``cuda_mlp`` (fully fused narrow MLPs). Under
``NUMBA_ENABLE_CUDASIM=1`` all of it runs in numba's simulator (slowly: tiny shapes only).
"""

from functools import cache

import numpy as np
from numba import cuda

from .. import activations, losses, optimizers
from .._validation import feature_shape
from . import cuda_gemm as G
from .contract import (
    CATEGORICAL_CE,
    EPSILON,
    LINEAR,
    SOFTMAX,
)
from .cuda_arrays import (  # noqa: F401  (public: this module is the backend)
    _act_backward,
    _check,
    _fill,
    _flat,
    _OnDevice,
    _rows_grid,
    as_device,
    copy,
    empty,
    is_device,
    synchronize,
    to_host,
    zeros,
)
from .cuda_gemm import use_cublas  # noqa: F401  (public: GEMMs via cuBLAS/CuPy)
from .cuda_kernels import kernels
from .cuda_mlp import FusedMLP, eligible
from .cuda_rnn import (  # noqa: F401  (part of this backend)
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
from .numba_cpu import _act_ok, _loss_args, _segments, _shape  # host-side checks, shared

name = "cuda"
device = True  # the model keeps its buffers on the device (see params.ParameterStore.push)


def available() -> bool:
    """A CUDA GPU (or the simulator) is usable."""
    return bool(cuda.is_available())


if not available():
    raise ImportError("backend 'cuda' needs a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1)")


# -- dense ----------------------------------------------------------------------------------------


def dense_forward(X, W, b, act, alpha, A, Z=None):
    """A = act(X·W + b): one GEMM with the bias and activation in its epilogue (softmax: a row
    kernel after it); where Z is given (activations whose derivative needs z), the GEMM's
    epilogue adds the bias into Z and an element-wise kernel writes A = act(Z)."""
    with _OnDevice(("A", "Z"), X=X, W=W, b=b, A=A, Z=Z) as d:
        X, W, b, A, Z = d["X"], d["W"], d["b"], d["A"], d["Z"]
        _check(A.dtype, X=X, W=W, b=b, A=A, Z=Z)
        m, k = X.shape
        n = W.shape[1]
        _shape("W", W, (k, n)), _shape("b", b, (n,)), _shape("A", A, (m, n))
        _act_ok(act, alpha)
        activations.check_z(act, Z, (m, n))
        if 0 in (m, k, n):
            raise ValueError(f"dense_forward needs non-empty shapes, got m={m}, k={k}, n={n}")
        if Z is not None:
            G.gemm_launch(X, W, Z, bias=b, act=LINEAR)
            A.copy_to_device(Z)
            dt = A.dtype.type
            kernels(dt).bias_act[G.blocks(A.size), G.THREADS](
                A, G.placeholder(A.dtype, 1), False, m, n, act, dt(alpha)
            )
            return
        G.gemm_launch(X, W, A, bias=b, act=LINEAR if act == SOFTMAX else act, slope=alpha)
        if act == SOFTMAX:
            kernels(A.dtype.type).softmax_rows[_rows_grid(m)](A, m, n)


def dense_backward(X, W, A, dA, act, alpha, dW, db, dX, Z=None):
    """dZ = dA ⊙ act'(Z, A) and db = Σ dZ in one pass; dW = Xᵀ·dZ (TN GEMM); dX = dZ·Wᵀ (NT)."""
    arrays = {"X": X, "W": W, "A": A, "dA": dA, "dW": dW, "db": db, "dX": dX, "Z": Z}
    with _OnDevice(("dA", "dW", "db", "dX"), **arrays) as d:
        X, W, A, dA, dW, db, dX, Z = (d[k] for k in arrays)
        _check(A.dtype, X=X, W=W, A=A, dA=dA, dW=dW, db=db, dX=dX, Z=Z)
        m, k = X.shape
        n = W.shape[1]
        _shape("W", W, (k, n)), _shape("A", A, (m, n)), _shape("dA", dA, (m, n))
        _shape("dW", dW, (k, n)), _shape("db", db, (n,)), _shape("dX", dX, (m, k))
        _act_ok(act, alpha)
        activations.check_z(act, Z, (m, n))
        if 0 in (m, k, n):
            raise ValueError(f"dense_backward needs non-empty shapes, got m={m}, k={k}, n={n}")
        _act_backward(A, dA, db, act, alpha, Z)
        G.gemm_launch(X, dA, dW, ta=True)
        if dX is not None:
            G.gemm_launch(dA, W, dX, tb=True)


# -- losses ---------------------------------------------------------------------------------------


def accumulator():
    """A zeroed float64 device vector [loss sum, correct rows] the ``*_into`` kernels add to."""
    return zeros(2, np.float64)


@cache
def _scratch_vector():
    return cuda.device_array(2, dtype=np.float64)


def _scratch_acc():
    """The contract functions' accumulator: allocated once, zeroed per call (train_on_batch
    calls loss() every step; a device allocation each time would cost more than the kernel)."""
    acc = _scratch_vector()
    _fill(acc, 0)
    return acc


def loss_into(kind, P, Y, dP, fused, acc):
    """Add Σ of the unnormalized per-row losses to acc[0] (device); dP as ``loss``. Returns the
    divisor that turns acc[0] into the mean loss (m·n for MSE/BCE, m for CE)."""
    m, n = P.shape
    k = kernels(P.dtype.type)
    eps = P.dtype.type(EPSILON)
    fused = bool(fused) and kind in losses.FUSABLE
    k.loss_dense[_rows_grid(m)](kind, P, Y, dP, fused, m, n, eps, acc)
    return m if kind == CATEGORICAL_CE else m * n


def loss_sparse_into(P, labels, dP, fused, acc):
    m, n = P.shape
    kernels(P.dtype.type).loss_sparse[_rows_grid(m)](
        P, labels, dP, bool(fused), m, n, P.dtype.type(EPSILON), acc
    )
    return m


def count_into(P, Y, labels, acc):
    """Add the rows predicted right to acc[1] (device)."""
    m, n = P.shape
    sparse = labels is not None
    Y = G.placeholder(P.dtype, 2) if sparse else Y
    labels = labels if sparse else G.placeholder(np.int64, 1)
    kernels(P.dtype.type).count[_rows_grid(m)](P, Y, labels, sparse, m, n, acc)


def _read(acc, i):
    return float(acc.copy_to_host()[i])


def loss(kind, P, Y, dP, fused=False):
    """Keras losses: value, and dP = ∂L/∂P (∂L/∂Z when fused)."""
    with _OnDevice("dP", P=P, Y=Y, dP=dP) as d:
        P, Y, dP = d["P"], d["Y"], d["dP"]
        _check(P.dtype, P=P, Y=Y, dP=dP)
        _shape("Y", Y, P.shape), _shape("dP", dP, P.shape)
        _loss_args(kind, P)
        acc = _scratch_acc()
        div = loss_into(kind, P, Y, dP, fused, acc)
        return _read(acc, 0) / div


def _labels(P, labels):
    """Labels: 1-D int64 in [0, n) (checked on the host copy when given one)."""
    if labels is None or labels.dtype != np.int64 or labels.ndim != 1:
        raise ValueError("labels must be a 1-D int64 array")
    if labels.shape[0] != P.shape[0]:
        raise ValueError(f"labels must have shape ({P.shape[0]},), got {tuple(labels.shape)}")
    if isinstance(labels, np.ndarray) and labels.size:
        if labels.min() < 0 or labels.max() >= P.shape[1]:
            raise ValueError(f"labels must lie in [0, {P.shape[1]})")


def loss_sparse(P, labels, dP, fused=False):
    """Sparse categorical cross-entropy = categorical against one-hot(labels)."""
    _labels(P, labels)
    with _OnDevice("dP", P=P, labels=labels, dP=dP) as d:
        P, dP = d["P"], d["dP"]
        _check(P.dtype, P=P, dP=dP)
        _shape("dP", dP, P.shape)
        _loss_args(None, P)
        acc = _scratch_acc()
        div = loss_sparse_into(P, d["labels"], dP, fused, acc)
        return _read(acc, 0) / div


def count_correct(P, Y):
    """Rows predicted right: threshold 0.5 for one output, argmax otherwise."""
    _shape("Y", Y, P.shape)
    with _OnDevice((), P=P, Y=Y) as d:
        acc = _scratch_acc()
        count_into(d["P"], d["Y"], None, acc)
        return int(_read(acc, 1))


def count_correct_sparse(P, labels):
    """Rows whose argmax equals the label."""
    _labels(P, labels)
    with _OnDevice((), P=P, labels=labels) as d:
        acc = _scratch_acc()
        count_into(d["P"], None, d["labels"], acc)
        return int(_read(acc, 1))


# -- optimizer ------------------------------------------------------------------------------------

_SMALL = {}  # small host arrays (segments, coefficients, hyper) -> their device copies


def _small(a: np.ndarray):
    """Device copy of a small host array, uploaded again only when its content changes."""
    if not isinstance(a, np.ndarray):
        return a
    key = (a.dtype.str, a.shape, a.tobytes())
    dev = _SMALL.get(key)
    if dev is None:
        if len(_SMALL) > 256:
            _SMALL.clear()
        dev = _SMALL[key] = cuda.to_device(a)
    return dev


@cache
def _norms(nseg: int):
    """The per-segment gradient norm buffer (reused every step: no allocation per step)."""
    return zeros(nseg, np.float64)


def _seg_grid(segments):
    longest = max(int(b - a) for a, b in segments.tolist())
    return (max(1, min(G.MAX_BLOCKS, -(-longest // G.THREADS))), segments.shape[0]), G.THREADS


def optimizer_step(kind, params, grads, state, hyper, t, segments, seg_reg):
    """Fused optimizer update over the flat buffers (formulas: fastbp.optimizers): ONE launch
    (plus one for the gradient norms when clipnorm / global_clipnorm is set)."""
    optimizers.check_kind(kind)
    if not t >= 1:
        raise ValueError(f"t must be >= 1, got {t}")
    hyper = np.asarray(hyper)
    if hyper.shape != (len(optimizers.HYPER),) or hyper.dtype != np.float64:
        raise ValueError(
            f"hyper must be a float64 array of shape ({len(optimizers.HYPER)},), got {hyper.shape}"
        )
    with _OnDevice(("params", "state"), params=params, grads=grads, state=state) as d:
        params, grads, state = d["params"], d["grads"], d["state"]
        _check(params.dtype, params=params, grads=grads, state=state)
        _shape("grads", grads, params.shape), _shape("state", state, (2, params.size))
        _segments(params, segments, seg_reg)
        if segments.shape[0] == 0:
            return
        dt = params.dtype.type
        k = kernels(dt)
        grid = _seg_grid(segments)
        dseg, dreg = _small(segments), _small(seg_reg)
        norms = _norms(segments.shape[0])
        if hyper[8] > 0 or hyper[10] > 0:
            _fill(norms, 0)
            k.seg_norms[grid](params, grads, dseg, dreg, norms)
        coefs = optimizers.step_coefficients(hyper, float(t), dt)
        k.optimizer[grid](
            kind, params, grads, state[0], state[1], dseg, dreg, norms, _small(hyper), *coefs
        )


def regularization_loss_into(params, segments, coef, acc, weight=1.0):
    """Add weight·Σ_s (l1·Σ|p| + l2·Σp²) to acc[0] (device)."""
    if segments.shape[0]:
        kernels(params.dtype.type).reg_loss[_seg_grid(segments)](
            params, _small(segments), _small(coef), acc, float(weight)
        )


def regularization_loss(params, segments, coef):
    """Σ over segments [start, end) of l1·Σ|p| + l2·Σp²."""
    _segments(params, segments, coef)
    if segments.shape[0] == 0:
        return 0.0
    with _OnDevice((), params=params) as d:
        acc = _scratch_acc()
        regularization_loss_into(d["params"], segments, coef, acc)
        return _read(acc, 0)


# -- dropout and batch normalization ---------------------------------------------------------------


def dropout_forward(X, rate, seed, step, mask, A):
    """mask = [u ≥ rate]/(1 − rate), u = splitmix64(seed, step, index); A = X ⊙ mask."""
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    with _OnDevice(("mask", "A"), X=X, mask=mask, A=A) as d:
        X, mask, A = d["X"], d["mask"], d["A"]
        _check(X.dtype, X=X, mask=mask, A=A)
        _shape("mask", mask, X.shape), _shape("A", A, X.shape)
        if X.size == 0:
            return
        base = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xD1B54A32D192ED03) % 2**64
        kernels(X.dtype.type).dropout[G.blocks(X.size), G.THREADS](
            _flat(X), float(rate), np.uint64(base), _flat(mask), _flat(A)
        )


def dropout_backward(dA, mask, dX):
    """dX = dA ⊙ mask."""
    with _OnDevice("dX", dA=dA, mask=mask, dX=dX) as d:
        dA, mask, dX = d["dA"], d["mask"], d["dX"]
        _check(dA.dtype, dA=dA, mask=mask, dX=dX)
        _shape("mask", mask, dA.shape), _shape("dX", dX, dA.shape)
        if dA.size:
            kernels(dA.dtype.type).multiply[G.blocks(dA.size), G.THREADS](
                _flat(dA), _flat(mask), _flat(dX)
            )


def batchnorm_forward(
    X, gamma, beta, epsilon, training, momentum, moving_mean, moving_var, mean, inv_std, Xhat, A
):
    """x̂ = (X − μ)/√(σ² + ε), A = γ⊙x̂ + β; training: batch statistics, moving ones updated."""
    outs = ("moving_mean", "moving_var", "mean", "inv_std", "Xhat", "A")
    vecs = dict(gamma=gamma, beta=beta, moving_mean=moving_mean, moving_var=moving_var)
    vecs |= dict(mean=mean, inv_std=inv_std)
    with _OnDevice(outs, X=X, Xhat=Xhat, A=A, **vecs) as d:
        X, Xhat, A = d["X"], d["Xhat"], d["A"]
        _check(X.dtype, **d)
        for key in vecs:
            _shape(key, d[key], (X.shape[1],))
        _shape("Xhat", Xhat, X.shape), _shape("A", A, X.shape)
        if X.size == 0 or not epsilon > 0:
            raise ValueError(
                f"batchnorm_forward needs a non-empty X and epsilon > 0, got {X.shape}"
            )
        m, n = X.shape
        dt = X.dtype.type
        k = kernels(dt)
        k.bn_stats[_rows_grid(n)](X, bool(training), dt(momentum), dt(epsilon), d["moving_mean"],
                                  d["moving_var"], d["mean"], d["inv_std"], m, n)  # fmt: skip
        k.bn_apply[G.blocks(X.size), G.THREADS](
            X, d["gamma"], d["beta"], d["mean"], d["inv_std"], Xhat, A, m, n
        )


def batchnorm_backward(dA, Xhat, gamma, inv_std, dgamma, dbeta, dX):
    """dβ = Σ dA; dγ = Σ dA⊙x̂; dX = γσ⁻¹(dA − (dβ + x̂⊙dγ)/m)."""
    vecs = dict(gamma=gamma, inv_std=inv_std, dgamma=dgamma, dbeta=dbeta)
    with _OnDevice(("dgamma", "dbeta", "dX"), dA=dA, Xhat=Xhat, dX=dX, **vecs) as d:
        dA, Xhat, dX = d["dA"], d["Xhat"], d["dX"]
        _check(dA.dtype, **d)
        for key in vecs:
            _shape(key, d[key], (dA.shape[1],))
        _shape("Xhat", Xhat, dA.shape), _shape("dX", dX, dA.shape)
        if dA.size == 0:
            raise ValueError(f"batchnorm_backward needs a non-empty dA, got {dA.shape}")
        m, n = dA.shape
        k = kernels(dA.dtype.type)
        k.bn_sums[_rows_grid(n)](dA, Xhat, d["dgamma"], d["dbeta"], m, n)
        k.bn_dx[G.blocks(dA.size), G.THREADS](
            dA, Xhat, d["gamma"], d["inv_std"], d["dgamma"], d["dbeta"], dX, m, n
        )


def batchnorm_backward_frozen(dA, gamma, inv_std, dX):
    """dX = dA ⊙ γσ⁻¹ (fixed statistics)."""
    with _OnDevice("dX", dA=dA, gamma=gamma, inv_std=inv_std, dX=dX) as d:
        dA, dX = d["dA"], d["dX"]
        _check(dA.dtype, **d)
        _shape("dX", dX, dA.shape)
        m, n = dA.shape
        if dA.size:
            kernels(dA.dtype.type).bn_frozen_dx[G.blocks(dA.size), G.THREADS](
                dA, d["gamma"], d["inv_std"], dX, m, n
            )


def fused_mlp(layers, params, grads, capacity, dtype):
    """The fully fused forward/backward kernels for this layer stack (``cuda_mlp``), or None
    where the stack is not a narrow float32 MLP."""

    return FusedMLP(layers, params, grads, capacity) if eligible(layers, dtype) else None


def take_rows(X, idx, out, m) -> None:
    """out[:m] = X[idx[:m]] on the device (the shuffled mini-batch gather; any dtype)."""
    d = X.size // X.shape[0] if X.shape[0] else 0
    if m and d:
        X2, out2 = X.reshape(X.shape[0], d), out.reshape(out.shape[0], d)
        kernels(np.float64).take_rows[G.blocks(m * d), G.THREADS](X2, idx, out2, m, d)


# -- checks of device-resident inputs (CUDA Array Interface), without a copy to the host ---------


def _count_bad(a, lo=-np.inf, hi=np.inf) -> int:
    acc = _scratch_acc()
    flat = _flat(a)
    kernels(np.float64).count_bad[G.blocks(a.size), G.THREADS](flat, lo, hi, acc)
    return int(_read(acc, 0))


def features(x, name, n_features, dtype, input_shape=None, ndims=(2, 3)):
    """A device ``x`` checked as ``_validation.features`` checks host arrays (no cast: it must
    already be C-contiguous ``dtype``)."""
    x = as_device(x)
    feature_shape(x.shape, name, n_features, input_shape, ndims)
    if x.dtype != dtype or not x.is_c_contiguous():
        raise TypeError(
            f"{name} is a device array: it must be C-contiguous {np.dtype(dtype).name} (the "
            f"model's dtype; no cast on the device), got {x.dtype}"
        )
    if _count_bad(x):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def targets(y, name, n_samples, loss, out_shape, dtype):
    """A device ``y`` checked as ``_validation.targets`` checks host arrays."""
    y = as_device(y)
    lead = tuple(out_shape[:-1])
    if y.ndim == 0 or y.shape[0] != n_samples:
        raise ValueError(f"x and {name} must have the same number of rows ({n_samples})")
    if loss == "sparse_categorical_crossentropy":
        want = (n_samples, *lead)
        if tuple(y.shape) == want + (1,):
            y = y.reshape(*want)
        if tuple(y.shape) != want or y.dtype != np.int64 or not y.is_c_contiguous():
            raise ValueError(
                f"{name} on the device must be C-contiguous int64 labels of shape {want}, got "
                f"{y.dtype} {tuple(y.shape)}"
            )
        if _count_bad(y, 0, out_shape[-1] - 1):
            raise ValueError(f"{name} labels must lie in [0, {out_shape[-1]})")
        return y
    want = (n_samples, *out_shape)
    if tuple(y.shape) == want[:-1] and out_shape[-1] == 1:
        y = y.reshape(*want)
    if tuple(y.shape) != want or y.dtype != dtype or not y.is_c_contiguous():
        raise ValueError(
            f"{name} on the device must be C-contiguous {np.dtype(dtype).name} of shape {want}, "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    lo, hi = (-np.inf, np.inf) if loss == "mse" else (0.0, 1.0)
    if _count_bad(y, lo, hi):
        raise ValueError(f"{name} must be finite{'' if loss == 'mse' else ' and in [0, 1]'}")
    return y
