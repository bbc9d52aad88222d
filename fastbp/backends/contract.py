"""THE kernel contract: every backend implements these names with these signatures.

Arrays are C-contiguous, all float32 or all float64 (labels int64), preallocated by the caller
and written in place. Activation derivatives are taken from the outputs ``A`` where the
activation allows it (``A`` holds ``Z`` until the epilogue overwrites it); an activation whose
derivative needs the pre-activation (``fastbp.activations``: ``needs_z``) has ``Z`` kept by the
caller and passed to both dense kernels. Ids of activations and optimizers come from their
registries (``fastbp.activations``, ``fastbp.optimizers``); an unknown id raises ValueError.

=================================================  ===============================================
kernel                                             math
=================================================  ===============================================
dense_forward(X, W, b, act, alpha, A, Z=None)      A = act(X·W + b); Z = X·W + b (given exactly
                                                   for activations that need z: GELU)
dense_backward(X, W, A, dA, act, alpha, dW, db,    dZ = dA ⊙ act'(Z, A) (into dA); dW = Xᵀ·dZ;
               dX, Z=None)                         db = Σ_rows dZ; dX = dZ·Wᵀ (db, dX may be None)
loss(kind, P, Y, dP, fused) -> float               L(P, Y) as Keras; dP = ∂L/∂P (∂L/∂Z if fused)
loss_sparse(P, labels, dP, fused) -> float         L = -mean log P[i, labels[i]]; dP as above
count_correct(P, Y) -> int                         Σ [argmax P = argmax Y] (threshold 0.5 if n = 1)
count_correct_sparse(P, labels) -> int             Σ [argmax P = label]
optimizer_step(kind, params, grads, state, hyper,  fused update (fastbp.optimizers' formula of
               t, segments, seg_reg)               kind) with L1/L2, clipnorm, clipvalue,
                                                   global_clipnorm
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

A backend may also provide ``Plan``, ``train_step``, ``train_epoch``, ``train_epochs``,
``infer``, their CSR-input forms ``train_epochs_sparse``, ``infer_sparse``, and ``loss_grad``
(the full gradient of one batch, no update: L-BFGS) (COMPILED_LOOP):
whole training steps, and inference passes, of a model of Dense and recurrent layers (with
BatchNormalization and Dropout around them) without Python in between (the Cython backend
does; see src_c/_train.pxi).
:func:`missing` lists what a backend module lacks; ``tests/test_contract.py`` runs it over every
backend and checks that every kernel the model and layers call is declared here.

Shapes: X (m, k), W (k, n), b (n,), A/dA/P/Y/dP (m, n), labels (m,), params/grads (p,),
state (2, p), hyper (12,) float64, segments (s, 2) int64 ``[start, end)``, seg_reg (s, 2)
float64 ``(l1, l2)``.
"""

from ..activations import REGISTRY as _ACTIVATIONS
from ..losses import LOSS_IDS
from ..optimizers import HYPER, OPTIMIZER_IDS, hyper_vector  # noqa: F401 (part of the contract)

# Ids: each kind's registry is the one place that declares them (fastbp.activations,
# fastbp.optimizers, fastbp.losses); the C side lists the same ids (a test checks they agree).
ACTIVATION_IDS = {name: a.id for name, a in _ACTIVATIONS.items()}
LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX, GELU = (
    ACTIVATION_IDS[k]
    for k in ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "softmax", "gelu")
)
SGD, RMSPROP, ADAM, ADAMW, ADAGRAD = (
    OPTIMIZER_IDS[k] for k in ("sgd", "rmsprop", "adam", "adamw", "adagrad")
)

MSE, BINARY_CE, CATEGORICAL_CE, SPARSE_CE = (
    LOSS_IDS[k]
    for k in (
        "mse",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    )
)

#: Keras clips probabilities to [EPSILON, 1 - EPSILON] inside cross-entropies.
EPSILON = 1e-7


#: What every backend module provides: the table above (and ``name``).
KERNELS = (
    "dense_forward",
    "dense_backward",
    "loss",
    "loss_sparse",
    "count_correct",
    "count_correct_sparse",
    "optimizer_step",
    "regularization_loss",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_frozen",
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
)
#: What a device backend (``device = True``: the model lives in its memory) provides besides:
#: moving and allocating arrays, checking inputs where they are, and the ``*_into`` kernels that
#: accumulate a loss or count on the device instead of returning it.
DEVICE_KERNELS = (
    "as_device",
    "to_host",
    "is_device",
    "empty",
    "zeros",
    "copy",
    "features",
    "targets",
    "take_rows",
    "accumulator",
    "loss_into",
    "loss_sparse_into",
    "count_into",
    "regularization_loss_into",
    "fused_mlp",
)
#: A backend with a compiled training loop provides all of these (none: layer by layer).
COMPILED_LOOP = (
    "Plan",
    "train_step",
    "train_epoch",
    "train_epochs",
    "infer",
    "train_epochs_sparse",
    "infer_sparse",
    "loss_grad",
)


def missing(module) -> list[str]:
    """The names ``module`` should provide as a backend and does not (empty: complete)."""
    want = ("name", *KERNELS)
    if getattr(module, "device", False):
        want += DEVICE_KERNELS
    if any(hasattr(module, k) for k in COMPILED_LOOP):
        want += COMPILED_LOOP
    return [k for k in want if not callable(getattr(module, k, None)) and k != "name"] + (
        [] if isinstance(getattr(module, "name", None), str) else ["name"]
    )
