"""NumPy oracle of the recurrent kernels (SimpleRNN, LSTM, GRU): whole sequences, BPTT inside.

Layout (shared with src_c/_rnn.pxi): the caller's X (m, T, F) is copied time-major into
``Xt`` (T, m, F) so that the input projection of all steps is ONE GEMM ``Xt·Wx`` and every step's
rows are contiguous; hidden states ``H`` (T+1, m, n) keep ``H[0] = 0`` so that ``dWh = Σ_t
H[t]ᵀ·dG[t]`` is one GEMM too. The output ``Y`` is 2-D: (m, T·n) for return_sequences, else
(m, n) (the last step); ``dY`` has the shape of ``Y``.

Truncated BPTT (``bptt`` = k > 0): the sequence is cut into chunks [0, k), [k, 2k), ... and no
gradient flows from a step at a chunk start to the step before it (what detaching the hidden
state every k steps does in PyTorch); the weights still get every step's direct term.
"""

import numpy as np
from scipy.special import expit as _sigmoid  # the reference's sigmoid (fastbp.activations')

from ..activations import numpy_backward as activation_backward
from ..activations import numpy_forward as activation


def _cut(bptt: int, t: int) -> bool:
    """No gradient from step t to step t − 1."""
    return t == 0 or (bptt > 0 and t % bptt == 0)


def _output(H, Y):
    """Y = all hidden states batch-major (return_sequences) or the last one."""
    T, m, n = H.shape[0] - 1, H.shape[1], H.shape[2]
    if Y.shape[1] == T * n:
        Y.reshape(m, T, n)[...] = H[1:].transpose(1, 0, 2)
    else:
        Y[...] = H[T]


def _output_grad(dY, T, m, n):
    """dY as (T, m, n) time-major (zeros before the last step if only it was output)."""
    if dY.shape[1] == T * n:
        return dY.reshape(m, T, n).transpose(1, 0, 2)
    out = np.zeros((T, m, n), dtype=dY.dtype)
    out[T - 1] = dY
    return out


def _project(X, Wx, b, Xt):
    """Xt = X time-major; returns Xt·Wx + b for all steps at once, (T, m, g·n)."""
    Xt[...] = X.transpose(1, 0, 2)
    T, m, F = Xt.shape
    Z = Xt.reshape(T * m, F) @ Wx
    if b is not None:
        Z += b
    return Z.reshape(T, m, -1)


def _weight_grads(Xt, Wx, H, dGx, dGh, dWx, dWh, dX):
    """dWx = Xtᵀ·dGx, dWh = Σ_t H[t]ᵀ·dGh[t], dX = (dGx·Wxᵀ) batch-major (None: skipped)."""
    T, m, F = Xt.shape
    n = H.shape[2]
    dWx[...] = Xt.reshape(T * m, F).T @ dGx.reshape(T * m, -1)
    dWh[...] = H[:T].reshape(T * m, n).T @ dGh.reshape(T * m, -1)
    if dX is not None:
        dX[...] = (dGx.reshape(T * m, -1) @ Wx.T).reshape(T, m, F).transpose(1, 0, 2)


def rnn_forward(X, Wx, Wh, b, act, alpha, Xt, H, Y):
    """h_t = act(x_t·Wx + h_{t−1}·Wh + b), h_{−1} = 0; H[t+1] = h_t."""
    Z = _project(X, Wx, b, Xt)
    H[0] = 0
    for t in range(Z.shape[0]):
        H[t + 1] = activation(act, Z[t] + H[t] @ Wh, H.dtype.type(alpha))
    _output(H, Y)


def rnn_backward(Xt, Wx, Wh, H, dY, act, alpha, bptt, dG, dWx, dWh, db, dX):
    """dG[t] = (dY_t + dG[t+1]·Whᵀ) ⊙ act'(h_t); dWx, dWh, db = Σ dG, dX. Xt is left as is."""
    T, m, n = dG.shape
    dYt = _output_grad(dY, T, m, n)
    dh = np.zeros((m, n), dtype=dG.dtype)
    for t in range(T - 1, -1, -1):
        dG[t] = activation_backward(act, None, H[t + 1], dYt[t] + dh, H.dtype.type(alpha))
        dh = np.zeros_like(dh) if _cut(bptt, t) else dG[t] @ Wh.T
    _weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX)
    if db is not None:
        db[...] = dG.sum(axis=(0, 1))


def lstm_forward(X, Wx, Wh, b, Xt, H, C, G, Y):
    """Keras/PyTorch LSTM, gates [i f g o]: c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t).

    G[t] keeps the gate activations (σ for i, f, o; tanh for g).
    """
    G[...] = _project(X, Wx, b, Xt)
    n = H.shape[2]
    H[0] = C[0] = 0
    for t in range(G.shape[0]):
        z = G[t] + H[t] @ Wh
        i, f, g, o = (z[:, k * n : (k + 1) * n] for k in range(4))
        G[t] = np.concatenate([_sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)], axis=1)
        i, f, g, o = (G[t][:, k * n : (k + 1) * n] for k in range(4))
        C[t + 1] = f * C[t] + i * g
        H[t + 1] = o * np.tanh(C[t + 1])
    _output(H, Y)


def lstm_backward(Xt, Wx, Wh, H, C, G, dY, bptt, dG, dh, dc, dWx, dWh, db, dX):
    """BPTT through the LSTM cell; dG[t] = ∂L/∂(gate pre-activations) at step t."""
    T, m, n = H.shape[0] - 1, H.shape[1], H.shape[2]
    dYt = _output_grad(dY, T, m, n)
    dh[...] = 0
    dc[...] = 0
    for t in range(T - 1, -1, -1):
        i, f, g, o = (G[t][:, k * n : (k + 1) * n] for k in range(4))
        tc = np.tanh(C[t + 1])
        dht = dYt[t] + dh
        dct = dc + dht * o * (1 - tc * tc)
        dG[t] = np.concatenate(
            [dct * g * i * (1 - i), dct * C[t] * f * (1 - f), dct * i * (1 - g * g),
             dht * tc * o * (1 - o)],
            axis=1,
        )  # fmt: skip
        cut = _cut(bptt, t)
        dh[...] = 0 if cut else dG[t] @ Wh.T
        dc[...] = 0 if cut else dct * f
    _weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX)
    if db is not None:
        db[...] = dG.sum(axis=(0, 1))


def gru_forward(X, Wx, Wh, b, Xt, H, G, Rh, S, Y):
    """Keras GRU (reset_after=True, = PyTorch's), gates [z r h], b (2, 3n) = [input, recurrent]:
    z, r = σ(x·Wx + b₀ + h·Wh + b₁) per gate; ĥ = tanh(xWx_h + b₀_h + r⊙(hWh_h + b₁_h));
    h_t = z⊙h_{t−1} + (1 − z)⊙ĥ. G[t] keeps [z r ĥ], Rh[t] = hWh_h + b₁_h, S is scratch."""
    G[...] = _project(X, Wx, None if b is None else b[0], Xt)
    n = H.shape[2]
    H[0] = 0
    for t in range(G.shape[0]):
        S[...] = H[t] @ Wh + (0 if b is None else b[1])
        z = _sigmoid(G[t][:, :n] + S[:, :n])
        r = _sigmoid(G[t][:, n : 2 * n] + S[:, n : 2 * n])
        Rh[t] = S[:, 2 * n :]
        hh = np.tanh(G[t][:, 2 * n :] + r * Rh[t])
        G[t] = np.concatenate([z, r, hh], axis=1)
        H[t + 1] = z * H[t] + (1 - z) * hh
    _output(H, Y)


def gru_backward(Xt, Wx, Wh, H, G, Rh, dY, bptt, dG, dGh, dh, dWx, dWh, db, dX):
    """BPTT through the GRU cell; dG[t] = ∂L/∂(input-side pre-activations), dGh[t] the same for
    the recurrent side (they differ by r in the candidate block); db = [Σ dG, Σ dGh]."""
    T, m, n = H.shape[0] - 1, H.shape[1], H.shape[2]
    dYt = _output_grad(dY, T, m, n)
    dh[...] = 0
    for t in range(T - 1, -1, -1):
        z, r, hh = (G[t][:, k * n : (k + 1) * n] for k in range(3))
        dht = dYt[t] + dh
        dz = dht * (H[t] - hh) * z * (1 - z)
        dhh = dht * (1 - z) * (1 - hh * hh)
        dr = dhh * Rh[t] * r * (1 - r)
        dG[t] = np.concatenate([dz, dr, dhh], axis=1)
        dGh[t] = np.concatenate([dz, dr, dhh * r], axis=1)
        dh[...] = 0 if _cut(bptt, t) else dht * z + dGh[t] @ Wh.T
    _weight_grads(Xt, Wx, H, dG, dGh, dWx, dWh, dX)
    if db is not None:
        db[0] = dG.sum(axis=(0, 1))
        db[1] = dGh.sum(axis=(0, 1))
