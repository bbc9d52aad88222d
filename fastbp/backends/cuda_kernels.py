"""numba.cuda element-wise and reduction kernels of the contract, compiled per dtype.

``kernels(np.float32)`` returns a namespace of kernels (launch shapes: ``cuda_gemm.blocks``).
Sums that go back to the host (loss, correct rows, regularization, gradient norms) accumulate in
float64 with one atomic add per block; per-column sums (bias and batch-norm gradients) take one
atomic add per (column, chunk of rows). Row-wise kernels (softmax, losses) run a thread per row.
"""

import math
from functools import cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from .. import losses, optimizers
from .._formulas import dispatch
from .contract import CATEGORICAL_CE
from .cuda_device import FASTMATH, THREADS, _act, _act_backward, device_function
from .cuda_launch import cached

# the optimizers' formulas as device functions, picked by id (checked on the host before launch)
_update = dispatch(
    device_function, optimizers.UPDATES, "p, g, s0, s1, " + optimizers.COEFS, "update", False
)
_loss_element = dispatch(
    device_function, losses.ELEMENTS, "p, y, lo, hi", "loss_element", False, "(p, p)"
)

CHUNK = 256  # rows per block of the column-sum kernels (blocks of 32 columns x 8 row lanes)


@device_function
def block_sum(v, buf):
    """Σ v over a 1-D block of THREADS threads (every thread gets it); buf: shared float64."""
    t = cuda.threadIdx.x
    buf[t] = v
    cuda.syncthreads()
    s = THREADS // 2
    while s > 0:
        if t < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    total = buf[0]
    cuda.syncthreads()
    return total


@device_function
def splitmix_uniform(base, i):
    """u ∈ [0, 1) of splitmix64(base + i): the dropout hash every backend uses."""
    z = base + np.uint64(i)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@cache
def kernels(dtype) -> SimpleNamespace:
    """The kernels for ``dtype`` (np.float32 or np.float64)."""
    zero, one = dtype(0), dtype(1)

    # -- dense epilogues ------------------------------------------------------------------------
    @cuda.jit(fastmath=FASTMATH)
    def softmax_rows(A, m, n):
        """A ← softmax(A) row by row."""
        i = cuda.grid(1)
        if i < m:
            mx = A[i, 0]
            for j in range(1, n):
                mx = max(mx, A[i, j])
            s = zero
            for j in range(n):
                e = math.exp(A[i, j] - mx)
                A[i, j] = e
                s += e
            for j in range(n):
                A[i, j] /= s

    @cuda.jit(fastmath=FASTMATH)
    def bias_act(A, b, has_bias, m, n, act, slope):
        """A ← act(A + b) (the GEMM epilogue, where the GEMM ran elsewhere)."""
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            i, j = e // n, e % n
            v = A[i, j] + b[j] if has_bias else A[i, j]
            A[i, j] = _act(v, act, slope)

    @cuda.jit(fastmath=FASTMATH)
    def softmax_backward_rows(A, dA, m, n):
        """dA ← A ⊙ (dA − Σ_j dA·A) row by row."""
        i = cuda.grid(1)
        if i < m:
            dot = zero
            for j in range(n):
                dot += dA[i, j] * A[i, j]
            for j in range(n):
                dA[i, j] = A[i, j] * (dA[i, j] - dot)

    @cuda.jit(fastmath=FASTMATH)
    def act_backward(A, Z, has_z, dA, db, has_db, m, n, act, slope):
        """dA ← dA ⊙ act'(Z, A) (softmax's is applied before, with act = linear here; Z read
        where has_z); db += Σ of this block's rows (if has_db; db zeroed before)."""
        part = cuda.shared.array((8, 32), dtype)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        c = cuda.blockIdx.x * 32 + tx
        r0 = cuda.blockIdx.y * CHUNK
        s = zero
        if c < n:
            for r in range(r0 + ty, min(m, r0 + CHUNK), 8):
                a = A[r, c]
                d = _act_backward(act, Z[r, c] if has_z else a, a, dA[r, c], slope)
                dA[r, c] = d
                s += d
        if has_db:
            part[ty, tx] = s
            cuda.syncthreads()
            if ty == 0 and c < n:
                for k in range(1, 8):
                    s += part[k, tx]
                cuda.atomic.add(db, c, s)

    @cuda.jit
    def count_bad(x, lo, hi, acc):
        """acc[0] += elements that are NaN, inf or outside [lo, hi] (no fastmath: NaN counts)."""
        bad = 0.0
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[i]
            if not (v - v == 0 and lo <= v <= hi):
                bad += 1.0
        if bad:
            cuda.atomic.add(acc, 0, bad)

    @cuda.jit
    def scale(x, value):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            x[i] *= value

    @cuda.jit
    def fill(x, value):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            x[i] = value

    @cuda.jit
    def take_rows(X, idx, out, m, d):
        """out[r] = X[idx[r]] for r < m (X, out as (rows, d))."""
        for e in range(cuda.grid(1), m * d, cuda.gridsize(1)):
            r = e // d
            out[r, e - r * d] = X[idx[r], e - r * d]

    # -- losses: a thread per row, Σ into acc[0] (float64) ---------------------------------------
    # no fastmath: it turns log(double(q)) into a fast float log, inaccurate next to q = 1
    @cuda.jit
    def loss_dense(kind, P, Y, dP, fused, m, n, eps, acc):
        """MSE / binary CE / categorical CE of Keras; dP = ∂L/∂P (∂L/∂Z when fused)."""
        i = cuda.grid(1)
        if i >= m:
            return
        total = 0.0
        if kind != CATEGORICAL_CE:  # element-wise: the registry's formula (fastbp.losses)
            inv = dtype(1.0 / (m * n))
            for j in range(n):
                p, y = P[i, j], Y[i, j]
                value, grad = _loss_element(kind, p, y, eps, one - eps)
                total += float(value)
                dP[i, j] = ((p - y) if fused else grad) * inv
        else:  # categorical: rows renormalized, as Keras
            s, ysum, c = zero, zero, zero
            for j in range(n):
                s += P[i, j]
                ysum += Y[i, j]
            for j in range(n):
                q = P[i, j] / s
                r = min(max(q, eps), one - eps)
                total -= float(Y[i, j]) * math.log(float(r))
                if r == q:
                    c += Y[i, j]
            for j in range(n):
                if fused:
                    dP[i, j] = (P[i, j] * ysum - Y[i, j]) / m
                else:
                    q = P[i, j] / s
                    free = min(max(q, eps), one - eps) == q
                    dP[i, j] = (c - (Y[i, j] / q if free else zero)) / s / m
        cuda.atomic.add(acc, 0, total)

    @cuda.jit
    def loss_sparse(P, labels, dP, fused, m, n, eps, acc):
        """Categorical CE against one-hot(labels), the one-hot never built."""
        i = cuda.grid(1)
        if i >= m:
            return
        s = zero
        for j in range(n):
            s += P[i, j]
        k = labels[i]
        q = P[i, k] / s
        r = min(max(q, eps), one - eps)
        free = r == q
        c = one if free else zero
        for j in range(n):
            y = one if j == k else zero
            if fused:
                dP[i, j] = (P[i, j] - y) / m
            else:
                dP[i, j] = (c - (one / q if (j == k and free) else zero)) / s / m
        cuda.atomic.add(acc, 0, -math.log(float(r)))

    @cuda.jit
    def count(P, Y, labels, sparse, m, n, acc):
        """acc[1] += rows predicted right (threshold 0.5 if n = 1, else argmax; against labels
        if sparse, else against Y)."""
        i = cuda.grid(1)
        if i >= m:
            return
        if not sparse and n == 1:
            right = (P[i, 0] > 0.5) == (Y[i, 0] > 0.5)
        else:  # np.argmax's rule: the first of equal maxima, or the first NaN
            bp, by = 0, 0
            for j in range(1, n):
                p = P[i, bp]
                if p == p and (P[i, j] > p or P[i, j] != P[i, j]):
                    bp = j
                if not sparse and Y[i, j] > Y[i, by]:
                    by = j
            right = bp == (labels[i] if sparse else by)
        if right:
            cuda.atomic.add(acc, 1, 1.0)

    # -- optimizer: blockIdx.y = segment, a grid-stride loop inside it -----------------------------
    @cuda.jit(fastmath=FASTMATH)
    def seg_norms(params, grads, segments, seg_reg, norms):
        """norms[s] += Σ g_eff² over segment s, g_eff = g + 2·l2·p + l1·sign(p)."""
        buf = cuda.shared.array(THREADS, np.float64)
        s = cuda.blockIdx.y
        l1, l2 = dtype(seg_reg[s, 0]), dtype(2 * seg_reg[s, 1])
        total = 0.0
        start = segments[s, 0] + cuda.blockIdx.x * THREADS + cuda.threadIdx.x
        for i in range(start, segments[s, 1], THREADS * cuda.gridDim.x):
            p = params[i]
            sign = one if p > 0 else (-one if p < 0 else zero)
            g = grads[i] + l2 * p + l1 * sign
            total += float(g) * float(g)
        total = block_sum(total, buf)
        if cuda.threadIdx.x == 0:
            cuda.atomic.add(norms, s, total)

    @cuda.jit(fastmath=FASTMATH)
    def optimizer(kind, params, grads, s0, s1, segments, seg_reg, norms, h, lr, mom, nesterov,
                  rho, b1, b2, eps, step, ibc2, decay, tiny):  # fmt: skip
        """One fused update of every trainable parameter (formulas: fastbp.optimizers; lr ..
        tiny: optimizers.COEFS); h is the hyper vector (contract.HYPER) on the device."""
        s = cuda.blockIdx.y
        scale = 1.0
        if h[10] > 0:  # global_clipnorm: the norm over all segments
            tot = 0.0
            for k in range(norms.size):
                tot += norms[k]
            norm = math.sqrt(tot)
            if norm > h[10]:
                scale = h[10] / norm
        elif h[8] > 0:
            norm = math.sqrt(norms[s])
            if norm > h[8]:
                scale = h[8] / norm
        sc = dtype(scale)
        l1, l2 = dtype(seg_reg[s, 0]), dtype(2 * seg_reg[s, 1])
        cv = dtype(h[9])
        start = segments[s, 0] + cuda.blockIdx.x * THREADS + cuda.threadIdx.x
        for i in range(start, segments[s, 1], THREADS * cuda.gridDim.x):
            p = params[i]
            sign = one if p > 0 else (-one if p < 0 else zero)
            g = (grads[i] + l2 * p + l1 * sign) * sc
            if cv > 0:
                g = min(max(g, -cv), cv)
            params[i], s0[i], s1[i] = _update(
                kind, p, g, s0[i], s1[i], lr, mom, nesterov, rho, b1, b2, eps, step, ibc2,
                decay, tiny,
            )  # fmt: skip

    @cuda.jit(fastmath=FASTMATH)
    def reg_loss(params, segments, coef, acc, weight):
        """acc[0] += weight·(l1·Σ|p| + l2·Σp²) over segment blockIdx.y."""
        buf = cuda.shared.array(THREADS, np.float64)
        s = cuda.blockIdx.y
        l1, l2 = coef[s, 0], coef[s, 1]
        total = 0.0
        start = segments[s, 0] + cuda.blockIdx.x * THREADS + cuda.threadIdx.x
        for i in range(start, segments[s, 1], THREADS * cuda.gridDim.x):
            p = float(params[i])
            total += l1 * abs(p) + l2 * p * p
        total = block_sum(total, buf)
        if cuda.threadIdx.x == 0:
            cuda.atomic.add(acc, 0, weight * total)

    # -- dropout and batch normalization --------------------------------------------------------
    @cuda.jit(fastmath=FASTMATH)
    def dropout(X, rate, base, mask, A):
        """mask = [u ≥ rate]/(1 − rate), u = splitmix64(base + i); A = X ⊙ mask (flat views)."""
        keep = dtype(1.0 / (1.0 - rate))
        for i in range(cuda.grid(1), X.size, cuda.gridsize(1)):
            k = keep if splitmix_uniform(base, i) >= rate else zero
            mask[i] = k
            A[i] = X[i] * k

    @cuda.jit(fastmath=FASTMATH)
    def multiply(a, b, out):
        for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            out[i] = a[i] * b[i]

    @cuda.jit(fastmath=FASTMATH)
    def bn_stats(X, training, mom, eps, mmean, mvar, mean, inv_std, m, n):
        """Per column (a thread each): batch mean / biased variance, moving averages updated
        (training), or the moving ones; inv_std = 1/√(σ² + ε)."""
        j = cuda.grid(1)
        if j >= n:
            return
        if training:
            mu = zero
            for i in range(m):
                mu += X[i, j]
            mu /= m
            var = zero
            for i in range(m):
                d = X[i, j] - mu
                var += d * d
            var /= m
            mmean[j] = mom * mmean[j] + (one - mom) * mu
            mvar[j] = mom * mvar[j] + (one - mom) * var
        else:
            mu, var = mmean[j], mvar[j]
        mean[j] = mu
        inv_std[j] = one / math.sqrt(var + eps)

    @cuda.jit(fastmath=FASTMATH)
    def bn_apply(X, gamma, beta, mean, inv_std, Xhat, A, m, n):
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            i = e // n
            j = e - i * n
            xh = (X[i, j] - mean[j]) * inv_std[j]
            Xhat[i, j] = xh
            A[i, j] = gamma[j] * xh + beta[j]

    @cuda.jit(fastmath=FASTMATH)
    def bn_sums(dA, Xhat, dgamma, dbeta, m, n):
        j = cuda.grid(1)
        if j >= n:
            return
        sb, sg = zero, zero
        for i in range(m):
            sb += dA[i, j]
            sg += dA[i, j] * Xhat[i, j]
        dbeta[j], dgamma[j] = sb, sg

    @cuda.jit(fastmath=FASTMATH)
    def bn_dx(dA, Xhat, gamma, inv_std, dgamma, dbeta, dX, m, n):
        inv_m = one / m
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            i = e // n
            j = e - i * n
            dX[i, j] = (
                gamma[j] * inv_std[j] * (dA[i, j] - inv_m * (dbeta[j] + Xhat[i, j] * dgamma[j]))
            )

    @cuda.jit(fastmath=FASTMATH)
    def bn_frozen_dx(dA, gamma, inv_std, dX, m, n):
        for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            j = e % n
            dX[e // n, j] = dA[e // n, j] * gamma[j] * inv_std[j]

    found = {k: v for k, v in locals().items() if callable(v) and hasattr(v, "__getitem__")}
    return SimpleNamespace(**{k: cached(v) for k, v in found.items()})
