# Dropout (inverted, counter-based masks) and batch normalization, forward and backward.


cdef inline double uniform01(uint64_t seed, uint64_t step, uint64_t i) noexcept nogil:
    """Counter-based uniform in [0, 1): splitmix64 of (seed, step, index). Reproducible, no
    state, the same numbers on any backend that implements the same hash."""
    cdef uint64_t z = seed * <uint64_t>0x9E3779B97F4A7C15 + step * <uint64_t>0xD1B54A32D192ED03 + i
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    z = z ^ (z >> 31)
    return <double>(z >> 11) * (1.0 / 9007199254740992.0)


def dropout_forward(const floating[:, ::1] X, double rate, uint64_t seed, uint64_t step,
                    floating[:, ::1] mask, floating[:, ::1] A):
    """mask = [u ≥ rate] / (1 − rate), u = hash(seed, step, index); A = X ⊙ mask."""
    cdef Py_ssize_t i, n = X.shape[0] * X.shape[1]
    check_shape("mask", (mask.shape[0], mask.shape[1]), (X.shape[0], X.shape[1]))
    check_shape("A", (A.shape[0], A.shape[1]), (X.shape[0], X.shape[1]))
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    if n == 0:
        return
    cdef floating keep = 1.0 / (1.0 - rate)
    cdef floating* m = &mask[0, 0]
    cdef floating* a = &A[0, 0]
    cdef const floating* x = &X[0, 0]
    with nogil:
        for i in range(n):
            m[i] = keep if uniform01(seed, step, i) >= rate else 0
            a[i] = x[i] * m[i]


def dropout_backward(const floating[:, ::1] dA, const floating[:, ::1] mask,
                     floating[:, ::1] dX):
    """dX = dA ⊙ mask."""
    cdef Py_ssize_t i, n = dA.shape[0] * dA.shape[1]
    check_shape("mask", (mask.shape[0], mask.shape[1]), (dA.shape[0], dA.shape[1]))
    check_shape("dX", (dX.shape[0], dX.shape[1]), (dA.shape[0], dA.shape[1]))
    if n == 0:
        return
    cdef const floating* d = &dA[0, 0]
    cdef const floating* m = &mask[0, 0]
    cdef floating* o = &dX[0, 0]
    with nogil:
        for i in range(n):
            o[i] = d[i] * m[i]


cdef void c_batchnorm_forward(const floating* X, const floating* gamma, const floating* beta,
                              double epsilon, bint training, double momentum,
                              floating* moving_mean, floating* moving_var, floating* mean,
                              floating* inv_std, floating* Xhat, floating* A, Py_ssize_t m,
                              Py_ssize_t n) noexcept nogil:
    """batchnorm_forward on m rows of n (C-contiguous), for the compiled loop as well."""
    cdef Py_ssize_t i, j
    cdef floating d, mom = momentum, one = 1, eps = epsilon
    if training:  # row by row: the inner loops run along contiguous features
        for j in range(n):
            mean[j] = 0
            inv_std[j] = 0
        for i in range(m):
            for j in range(n):
                mean[j] += X[i * n + j]
        for j in range(n):
            mean[j] /= m
        for i in range(m):
            for j in range(n):
                d = X[i * n + j] - mean[j]
                inv_std[j] += d * d  # Σ squared deviations, for now
        for j in range(n):
            inv_std[j] /= m  # biased batch variance
            moving_mean[j] = mom * moving_mean[j] + (one - mom) * mean[j]
            moving_var[j] = mom * moving_var[j] + (one - mom) * inv_std[j]
            inv_std[j] = one / sqrt(inv_std[j] + eps)
    else:
        for j in range(n):
            mean[j] = moving_mean[j]
            inv_std[j] = one / sqrt(moving_var[j] + eps)
    for i in range(m):
        for j in range(n):
            Xhat[i * n + j] = (X[i * n + j] - mean[j]) * inv_std[j]
            A[i * n + j] = gamma[j] * Xhat[i * n + j] + beta[j]


cdef void c_batchnorm_backward(const floating* dA, const floating* Xhat, const floating* gamma,
                               const floating* inv_std, floating* dgamma, floating* dbeta,
                               floating* dX, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """batchnorm_backward on m rows of n, for the compiled loop as well."""
    cdef Py_ssize_t i, j
    cdef floating inv_m = 1.0 / m
    for j in range(n):
        dgamma[j] = 0
        dbeta[j] = 0
    for i in range(m):
        for j in range(n):
            dbeta[j] += dA[i * n + j]
            dgamma[j] += dA[i * n + j] * Xhat[i * n + j]
    for i in range(m):
        for j in range(n):
            dX[i * n + j] = gamma[j] * inv_std[j] * (
                dA[i * n + j] - inv_m * (dbeta[j] + Xhat[i * n + j] * dgamma[j]))


cdef void c_batchnorm_backward_frozen(const floating* dA, const floating* gamma,
                                      const floating* inv_std, floating* dX, Py_ssize_t m,
                                      Py_ssize_t n) noexcept nogil:
    """dX = dA ⊙ (γσ⁻¹) (statistics held fixed), as NumPy's multiply by the product."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            dX[i * n + j] = dA[i * n + j] * (gamma[j] * inv_std[j])


def batchnorm_forward(const floating[:, ::1] X, const floating[::1] gamma,
                      const floating[::1] beta, double epsilon, bint training, double momentum,
                      floating[::1] moving_mean, floating[::1] moving_var, floating[::1] mean,
                      floating[::1] inv_std, floating[:, ::1] Xhat, floating[:, ::1] A):
    """x̂ = (X − μ)/√(σ² + ε), A = γ⊙x̂ + β. Training: μ, σ² of the batch (biased, as Keras),
    moving ← momentum·moving + (1 − momentum)·batch; inference: the moving statistics."""
    cdef Py_ssize_t m = X.shape[0], n = X.shape[1], i, j
    for name, v in (("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean),
                    ("moving_var", moving_var), ("mean", mean), ("inv_std", inv_std)):
        check_shape(name, (v.shape[0],), (n,))
    check_shape("Xhat", (Xhat.shape[0], Xhat.shape[1]), (m, n))
    check_shape("A", (A.shape[0], A.shape[1]), (m, n))
    if m == 0 or n == 0:
        raise ValueError(f"batchnorm_forward needs a non-empty X, got ({m}, {n})")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    with nogil:
        c_batchnorm_forward(&X[0, 0], &gamma[0], &beta[0], epsilon, training, momentum,
                            &moving_mean[0], &moving_var[0], &mean[0], &inv_std[0],
                            &Xhat[0, 0], &A[0, 0], m, n)


def batchnorm_backward(const floating[:, ::1] dA, const floating[:, ::1] Xhat,
                       const floating[::1] gamma, const floating[::1] inv_std,
                       floating[::1] dgamma, floating[::1] dbeta, floating[:, ::1] dX):
    """dβ = Σ dA; dγ = Σ dA⊙x̂; dX = γ/(m·σ)·(m·dA − dβ − x̂⊙dγ) (training-mode statistics)."""
    cdef Py_ssize_t m = dA.shape[0], n = dA.shape[1], i, j
    check_shape("Xhat", (Xhat.shape[0], Xhat.shape[1]), (m, n))
    check_shape("dX", (dX.shape[0], dX.shape[1]), (m, n))
    for name, v in (("gamma", gamma), ("inv_std", inv_std), ("dgamma", dgamma), ("dbeta", dbeta)):
        check_shape(name, (v.shape[0],), (n,))
    if m == 0 or n == 0:
        raise ValueError(f"batchnorm_backward needs a non-empty dA, got ({m}, {n})")
    with nogil:
        c_batchnorm_backward(&dA[0, 0], &Xhat[0, 0], &gamma[0], &inv_std[0], &dgamma[0],
                             &dbeta[0], &dX[0, 0], m, n)
