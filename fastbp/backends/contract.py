"""THE kernel contract: every backend implements these names with these signatures.

Arrays are C-contiguous, all float32 or all float64 (labels int64), preallocated by the caller
and written in place. Activation derivatives are taken from the outputs ``A`` (every supported
activation allows it), so the pre-activation ``Z`` is never stored: ``A`` holds ``Z`` until the
epilogue overwrites it.

=================================================  ===============================================
kernel                                             math
=================================================  ===============================================
dense_forward(X, W, b, act, alpha, A)              A = act(X·W + b)
dense_backward(X, W, A, dA, act, alpha, dW, db,    dZ = dA ⊙ act'(A) (into dA); dW = Xᵀ·dZ;
               dX)                                 db = Σ_rows dZ; dX = dZ·Wᵀ (db, dX may be None)
loss(kind, P, Y, dP, fused) -> float               L(P, Y) as Keras; dP = ∂L/∂P (∂L/∂Z if fused)
loss_sparse(P, labels, dP, fused) -> float         L = -mean log P[i, labels[i]]; dP as above
count_correct(P, Y) -> int                         Σ [argmax P = argmax Y] (threshold 0.5 if n = 1)
count_correct_sparse(P, labels) -> int             Σ [argmax P = label]
optimizer_step(kind, params, grads, state, hyper,  fused SGD/RMSprop/Adam/AdamW update with L1/L2,
               t, segments, seg_reg)               clipnorm, clipvalue, global_clipnorm
regularization_loss(params, segments, coef)        Σ_s l1·Σ|p| + l2·Σp² over [start, end) segments
dropout_forward(X, rate, seed, step, mask, A)      mask = [u ≥ rate]/(1 − rate), u = hash(seed,
                                                   step, index) ∈ [0, 1); A = X ⊙ mask
dropout_backward(dA, mask, dX)                     dX = dA ⊙ mask
batchnorm_forward(X, gamma, beta, eps, training,   x̂ = (X − μ)/√(σ² + ε); A = γ⊙x̂ + β (batch μ,
   momentum, moving_mean, moving_var, mean,        σ² in training, moving ← m·moving + (1 − m)·
   inv_std, Xhat, A)                               batch; the moving ones at inference)
batchnorm_backward(dA, Xhat, gamma, inv_std,       dβ = Σ dA; dγ = Σ dA⊙x̂;
   dgamma, dbeta, dX)                              dX = γσ⁻¹(dA − (dβ + x̂⊙dγ)/m)
rnn_forward(X, Wx, Wh, b, act, alpha, Xt, H, Y)   h_t = act(x_t·Wx + h_{t−1}·Wh + b), h_{−1} = 0
rnn_backward(Xt, Wx, Wh, H, dY, act, alpha, bptt,  BPTT: dG[t] = (dY_t + dG[t+1]·Whᵀ) ⊙ act'(h_t);
   dG, dWx, dWh, db, dX)                           dWx = Σ x_tᵀdG[t], dWh = Σ h_{t−1}ᵀdG[t], db, dX
lstm_forward(X, Wx, Wh, b, Xt, H, C, G, Y)         gates [i f g o]; c_t = f⊙c_{t−1} + i⊙g;
                                                   h_t = o⊙tanh(c_t)
lstm_backward(Xt, Wx, Wh, H, C, G, dY, bptt, dG,   BPTT through (h, c); dG = ∂L/∂gate inputs
   dh, dc, dWx, dWh, db, dX)
gru_forward(X, Wx, Wh, b, Xt, H, G, Rh, S, Y)      gates [z r h], reset after the product (Keras
                                                   default = PyTorch); h_t = z⊙h_{t−1} + (1−z)⊙ĥ
gru_backward(Xt, Wx, Wh, H, G, Rh, dY, bptt, dG,   BPTT; dG input side, dGh recurrent side,
   dGh, dh, dWx, dWh, db, dX)                      db (2, 3n) = [Σ dG, Σ dGh]
=================================================  ===============================================

Recurrent kernels run a whole sequence per call (math and layout: ``reference_rnn``): X (m, T, F)
batch-major; workspaces time-major, Xt (T, m, F), H and C (T+1, m, n) with H[0] = C[0] = 0, G/dG
(T, m, g·n), Rh (T, m, n), S (m, 3n), dh/dc (m, n); Y/dY (m, T·n) for return_sequences, else
(m, n); bptt = k > 0 truncates backpropagation to chunks of k steps (0: whole sequence). A
backward call may overwrite Xt (scratch for dX); dX (m, T, F), db and b may be None.

A backend may also provide ``Plan``, ``train_step`` and ``train_epoch``: whole training steps of a
Dense-only model without Python in between (the Cython backend does; see src_c/_train.pxi).

Shapes: X (m, k), W (k, n), b (n,), A/dA/P/Y/dP (m, n), labels (m,), params/grads (p,),
state (2, p), hyper (11,) float64, segments (s, 2) int64 ``[start, end)``, seg_reg (s, 2)
float64 ``(l1, l2)``.
"""

from typing import Protocol

import numpy as np

# Activation ids (shared with src_c/_ckernels.pyx; tests check they agree).
LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = range(6)
ACTIVATION_IDS = {
    "linear": LINEAR,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "softmax": SOFTMAX,
}

# Loss ids.
MSE, BINARY_CE, CATEGORICAL_CE, SPARSE_CE = range(4)
LOSS_IDS = {
    "mse": MSE,
    "binary_crossentropy": BINARY_CE,
    "categorical_crossentropy": CATEGORICAL_CE,
    "sparse_categorical_crossentropy": SPARSE_CE,
}

# Optimizer ids.
SGD, RMSPROP, ADAM, ADAMW = range(4)
OPTIMIZER_IDS = {"sgd": SGD, "rmsprop": RMSPROP, "adam": ADAM, "adamw": ADAMW}

# Field order of the float64 ``hyper`` vector given to optimizer_step.
HYPER = (
    "learning_rate",
    "beta_1",
    "beta_2",
    "epsilon",
    "weight_decay",
    "momentum",
    "nesterov",
    "rho",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
)

#: Keras clips probabilities to [EPSILON, 1 - EPSILON] inside cross-entropies.
EPSILON = 1e-7


class Backend(Protocol):
    """What a backend module provides (see the table in this module's docstring)."""

    name: str

    def dense_forward(self, X, W, b, act: int, alpha: float, A) -> None: ...

    def dense_backward(self, X, W, A, dA, act: int, alpha: float, dW, db, dX) -> None: ...

    def loss(self, kind: int, P, Y, dP, fused: bool = False) -> float: ...

    def loss_sparse(self, P, labels, dP, fused: bool = False) -> float: ...

    def count_correct(self, P, Y) -> int: ...

    def count_correct_sparse(self, P, labels) -> int: ...

    def optimizer_step(
        self, kind: int, params, grads, state, hyper, t: float, segments, seg_reg
    ) -> None: ...

    def regularization_loss(self, params, segments, coef) -> float: ...


def hyper_vector(**values: float) -> np.ndarray:
    """Pack named hyperparameters into the float64 vector ``optimizer_step`` reads (0 if unset)."""
    unknown = set(values) - set(HYPER)
    if unknown:
        raise TypeError(f"unknown hyperparameters {sorted(unknown)}; expected names in {HYPER}")
    return np.array([float(values.get(k) or 0.0) for k in HYPER], dtype=np.float64)
