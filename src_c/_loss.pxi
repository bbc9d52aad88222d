# Losses (Keras semantics) and their gradients; softmax+CE and sigmoid+BCE fused as P - Y.

from libc.stdint cimport int64_t


cdef extern from "_loss.h":
    # the element-wise losses of the X-macro list there; 0 where kind is not one of them
    int fastbp_element_loss_f(int kind, const float* P, const float* Y, float* dP, long size,
                              float inv, int fused, double* total) noexcept nogil
    int fastbp_element_loss_d(int kind, const double* P, const double* Y, double* dP, long size,
                              double inv, int fused, double* total) noexcept nogil
    # rows of at most one AVX-512 vector of outputs (formulas there); 0 / -1: not that narrow
    int fastbp_sparse_ce_narrow_f(const float* P, const int64_t* labels, float* dP, long m,
                                  long n, double* loss) noexcept nogil
    int fastbp_sparse_ce_narrow_d(const double* P, const int64_t* labels, double* dP, long m,
                                  long n, double* loss) noexcept nogil
    long fastbp_count_sparse_narrow_f(const float* P, const int64_t* labels, long m,
                                      long n) noexcept nogil
    long fastbp_count_sparse_narrow_d(const double* P, const int64_t* labels, long m,
                                      long n) noexcept nogil


cdef inline floating clip(floating q, floating lo, floating hi) noexcept nogil:
    return lo if q < lo else (hi if q > hi else q)


cdef double c_loss(int kind, const floating* P, const floating* Y, floating* dP,
                   Py_ssize_t m, Py_ssize_t n, bint fused) noexcept nogil:
    """Loss value; dP = ∂L/∂P, or ∂L/∂Z of the fused softmax/sigmoid when ``fused``."""
    cdef Py_ssize_t i, j
    cdef double total = 0
    cdef floating eps = 1e-7, one = 1, q, r, s, sy, c
    cdef floating inv = one / <floating>(m * n) if kind != CATEGORICAL_CE else one / <floating>m
    cdef const floating* p
    cdef const floating* y
    cdef floating* d
    # element-wise (mean over all elements): the formulas of _loss.h's list
    if floating is float:
        if fastbp_element_loss_f(kind, P, Y, dP, m * n, inv, fused, &total):
            return total * inv
    else:
        if fastbp_element_loss_d(kind, P, Y, dP, m * n, inv, fused, &total):
            return total * inv
    # categorical: Keras normalizes P by its row sum, clips, then -Σ y log q (mean over rows)
    for i in range(m):
        p = P + i * n
        y = Y + i * n
        d = dP + i * n
        s = 0
        sy = 0
        for j in range(n):
            s += p[j]
            sy += y[j]
        c = 0  # Σ y over unclipped entries
        for j in range(n):
            q = p[j] / s
            r = clip(q, eps, one - eps)
            if y[j] != 0:  # log of every class was most of a one-hot row's cost; 0·log r is 0
                total -= y[j] * log(r)
            if r == q:
                c += y[j]
        for j in range(n):
            if fused:
                d[j] = (p[j] * sy - y[j]) * inv
            else:
                q = p[j] / s
                r = clip(q, eps, one - eps)
                d[j] = (c - (y[j] / q if r == q else 0)) / s * inv
    return total * inv


cdef double c_loss_sparse(const floating* P, const int64_t* labels, floating* dP,
                          Py_ssize_t m, Py_ssize_t n, bint fused) noexcept nogil:
    """Sparse categorical CE: -mean log q[label]; fused: dZ = (P - onehot)/m."""
    cdef Py_ssize_t i, j, l
    cdef double total = 0
    cdef floating eps = 1e-7, one = 1, q, r, s, inv = one / <floating>m
    cdef const floating* p
    cdef floating* d
    if fused:
        if floating is float:
            if fastbp_sparse_ce_narrow_f(P, labels, dP, m, n, &total):
                return total
        else:
            if fastbp_sparse_ce_narrow_d(P, labels, dP, m, n, &total):
                return total
    for i in range(m):
        p = P + i * n
        d = dP + i * n
        l = labels[i]
        s = 0
        for j in range(n):
            s += p[j]
        q = p[l] / s
        r = clip(q, eps, one - eps)
        total -= log(r)
        if fused:
            for j in range(n):
                d[j] = p[j] * inv
            d[l] -= inv
        else:
            for j in range(n):
                d[j] = (inv / s) if r == q else 0
            if r == q:
                d[l] -= inv / (s * q)
    return total * inv


cdef Py_ssize_t c_count_correct(const floating* P, const floating* Y, Py_ssize_t m,
                                Py_ssize_t n) noexcept nogil:
    """Width 1: (p > 0.5) == (y > 0.5); else argmax P == argmax Y."""
    cdef Py_ssize_t i, j, ap, ay, count = 0
    if n == 1:
        for i in range(m):
            count += (P[i] > 0.5) == (Y[i] > 0.5)
        return count
    for i in range(m):
        ap = 0
        ay = 0
        for j in range(1, n):
            if P[i * n + j] > P[i * n + ap]:
                ap = j
            if Y[i * n + j] > Y[i * n + ay]:
                ay = j
        count += ap == ay
    return count


cdef Py_ssize_t c_count_correct_sparse(const floating* P, const int64_t* labels, Py_ssize_t m,
                                       Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j, ap, count
    if floating is float:
        count = fastbp_count_sparse_narrow_f(P, labels, m, n)
    else:
        count = fastbp_count_sparse_narrow_d(P, labels, m, n)
    if count >= 0:
        return count
    count = 0
    for i in range(m):
        ap = 0
        for j in range(1, n):
            # the first maximum, or the first NaN (np.argmax's rule, as _loss.h)
            if P[i * n + j] > P[i * n + ap] or (P[i * n + j] != P[i * n + j]
                                                 and P[i * n + ap] == P[i * n + ap]):
                ap = j
        count += ap == labels[i]
    return count


cdef Py_ssize_t first_outside(const int64_t[::1] idx, Py_ssize_t n):
    """Position of the first entry of idx outside [0, n), or -1 (one pass, nogil)."""
    cdef Py_ssize_t i, first = -1
    with nogil:
        for i in range(idx.shape[0]):
            if idx[i] < 0 or idx[i] >= n:
                first = i
                break
    return first


def first_label_outside(const int64_t[::1] labels, Py_ssize_t n):
    """Position of the first label outside [0, n), or -1: the API edge's range check in one C
    pass (labels.min() and .max(): two NumPy reductions, ~3 µs of every train_on_batch)."""
    return first_outside(labels, n)


cdef int check_labels(const int64_t[::1] labels, Py_ssize_t m, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    if labels.shape[0] != m:
        raise ValueError(f"labels must have shape ({m},), got ({labels.shape[0]},)")
    i = first_outside(labels, n)
    if i >= 0:
        raise ValueError(f"labels must lie in [0, {n}), got {labels[i]} at row {i}")
    return 0


def loss(int kind, const floating[:, ::1] P, const floating[:, ::1] Y, floating[:, ::1] dP,
         bint fused=False):
    """L = mse | bce | cce of (P, Y), mean as in Keras; dP = ∂L/∂P (∂L/∂Z when fused)."""
    cdef Py_ssize_t m = P.shape[0], n = P.shape[1]
    if kind < MSE or kind > CATEGORICAL_CE:
        raise ValueError(f"kind must be a dense-label loss id in 0..2, got {kind}")
    check_shape("Y", (Y.shape[0], Y.shape[1]), (m, n))
    check_shape("dP", (dP.shape[0], dP.shape[1]), (m, n))
    if m == 0 or n == 0:
        raise ValueError(f"loss needs a non-empty P, got shape ({m}, {n})")
    cdef double out
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        out = c_loss(kind, &P[0, 0], &Y[0, 0], &dP[0, 0], m, n, fused)
        fastbp_ftz_restore(csr)
    return out


def loss_sparse(const floating[:, ::1] P, const int64_t[::1] labels, floating[:, ::1] dP,
                bint fused=False):
    """L = -mean log(P[i, labels[i]] / Σ_j P[i, j]); dP = ∂L/∂P (∂L/∂Z when fused)."""
    cdef Py_ssize_t m = P.shape[0], n = P.shape[1]
    check_shape("dP", (dP.shape[0], dP.shape[1]), (m, n))
    if m == 0 or n == 0:
        raise ValueError(f"loss needs a non-empty P, got shape ({m}, {n})")
    check_labels(labels, m, n)
    cdef double out
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        out = c_loss_sparse(&P[0, 0], &labels[0], &dP[0, 0], m, n, fused)
        fastbp_ftz_restore(csr)
    return out


def count_correct(const floating[:, ::1] P, const floating[:, ::1] Y):
    """Number of rows where the prediction matches (threshold 0.5 for width 1, else argmax)."""
    cdef Py_ssize_t m = P.shape[0], n = P.shape[1], out
    check_shape("Y", (Y.shape[0], Y.shape[1]), (m, n))
    if m == 0 or n == 0:
        return 0
    with nogil:
        out = c_count_correct(&P[0, 0], &Y[0, 0], m, n)
    return out


def count_correct_sparse(const floating[:, ::1] P, const int64_t[::1] labels):
    """Number of rows where argmax P equals the label."""
    cdef Py_ssize_t m = P.shape[0], n = P.shape[1], out
    if m == 0 or n == 0:
        return 0
    check_labels(labels, m, n)
    with nogil:
        out = c_count_correct_sparse(&P[0, 0], &labels[0], m, n)
    return out
