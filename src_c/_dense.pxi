# Dense layer: GEMM + fused bias/activation epilogue, and its transposed backward.


cdef extern from "_act.h":
    void fastbp_bias_act_f(float* A, const float* b, long m, long n, long ld, int act,
                           float alpha) noexcept nogil
    void fastbp_bias_act_d(double* A, const double* b, long m, long n, long ld, int act,
                           double alpha) noexcept nogil
    void fastbp_act_backward_db_f(const float* A, float* dA, float* db, long m, long n, long ld,
                                  int act, float alpha) noexcept nogil
    void fastbp_act_backward_db_d(const double* A, double* dA, double* db, long m, long n,
                                  long ld, int act, double alpha) noexcept nogil


cdef inline void bias_act(floating* A, const floating* b, Py_ssize_t m, Py_ssize_t n,
                          Py_ssize_t ld, int act, floating alpha) noexcept nogil:
    """A = act(A + b) on m rows of n numbers, ld apart (b may be NULL); in C (_act.h)."""
    if floating is float:
        fastbp_bias_act_f(A, b, m, n, ld, act, alpha)
    else:
        fastbp_bias_act_d(A, b, m, n, ld, act, alpha)


cdef inline void act_backward_db(const floating* A, floating* dA, floating* db, Py_ssize_t m,
                                 Py_ssize_t n, Py_ssize_t ld, int act,
                                 floating alpha) noexcept nogil:
    """dA ← dZ = dA ⊙ act'(A) in place (derivative from outputs; m rows of n numbers, ld
    apart in both); db = Σ_rows dZ (db may be NULL); in C (_act.h)."""
    if floating is float:
        fastbp_act_backward_db_f(A, dA, db, m, n, ld, act, alpha)
    else:
        fastbp_act_backward_db_d(A, dA, db, m, n, ld, act, alpha)


cdef void c_dense_forward(const floating* X, const floating* W, const floating* b, int act,
                          floating alpha, floating* A, int m, int k, int n) noexcept nogil:
    # BLAS takes non-const pointers but only reads A and B
    gemm_rm(False, False, m, n, k, <floating>1, <floating*>X, k, <floating*>W, n, <floating>0,
            A, n)
    bias_act(A, b, m, n, n, act, alpha)


cdef void c_dense_backward(const floating* X, const floating* W, const floating* A,
                           floating* dA, int act, floating alpha, floating* dW, floating* db,
                           floating* dX, int m, int k, int n) noexcept nogil:
    act_backward_db(A, dA, db, m, n, n, act, alpha)
    if dW != NULL:  # NULL: the caller fuses dW's product with the update (_train.pxi)
        # dW(k,n) = Xᵀ(k,m)·dZ(m,n): X is read transposed by flag.
        gemm_rm(True, False, k, n, m, <floating>1, <floating*>X, k, dA, n, <floating>0, dW, n)
    if dX != NULL:
        # dX(m,k) = dZ(m,n)·Wᵀ(n,k)
        gemm_rm(False, True, m, k, n, <floating>1, dA, n, <floating*>W, n, <floating>0, dX, k)


cdef int check_act(int act, double alpha) except -1:
    if act < LINEAR or act > SOFTMAX:
        raise ValueError(f"act must be an activation id in 0..5, got {act}")
    if alpha < 0:
        raise ValueError(f"alpha (leaky_relu slope) must be >= 0, got {alpha}")
    return 0


cdef int check_shape(str name, tuple got, tuple want) except -1:
    if got != want:
        raise ValueError(f"{name} must have shape {want}, got {got}")
    return 0


def dense_forward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                  int act, double alpha, floating[:, ::1] A):
    """A = act(X·W + b).  X (m,k), W (k,n), b (n,) or None, A (m,n) written."""
    cdef int m = blas_dim(X.shape[0], "m"), k = blas_dim(X.shape[1], "k")
    cdef int n = blas_dim(W.shape[1], "n")
    check_act(act, alpha)
    check_shape("W", (W.shape[0], W.shape[1]), (k, n))
    check_shape("A", (A.shape[0], A.shape[1]), (m, n))
    if b is not None:
        check_shape("b", (b.shape[0],), (n,))
    if m == 0 or k == 0 or n == 0:
        raise ValueError(f"dense_forward needs non-empty X (m,k) and W (k,n), got m={m}, k={k}, n={n}")
    cdef const floating* pb = &b[0] if b is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_dense_forward(&X[0, 0], &W[0, 0], pb, act, <floating>alpha, &A[0, 0], m, k, n)
        fastbp_ftz_restore(csr)


def dense_backward(const floating[:, ::1] X, const floating[:, ::1] W,
                   const floating[:, ::1] A, floating[:, ::1] dA, int act, double alpha,
                   floating[:, ::1] dW,
                   floating[::1] db, floating[:, ::1] dX):
    """dZ = dA ⊙ act'(A) (into dA); dW = Xᵀ·dZ; db = Σ_rows dZ; dX = dZ·Wᵀ (db, dX may be None)."""
    cdef int m = blas_dim(X.shape[0], "m"), k = blas_dim(X.shape[1], "k")
    cdef int n = blas_dim(W.shape[1], "n")
    check_act(act, alpha)
    check_shape("W", (W.shape[0], W.shape[1]), (k, n))
    check_shape("A", (A.shape[0], A.shape[1]), (m, n))
    check_shape("dA", (dA.shape[0], dA.shape[1]), (m, n))
    check_shape("dW", (dW.shape[0], dW.shape[1]), (k, n))
    if db is not None:
        check_shape("db", (db.shape[0],), (n,))
    if dX is not None:
        check_shape("dX", (dX.shape[0], dX.shape[1]), (m, k))
    if m == 0 or k == 0 or n == 0:
        raise ValueError(f"dense_backward needs non-empty shapes, got m={m}, k={k}, n={n}")
    cdef floating* pdb = &db[0] if db is not None else NULL
    cdef floating* pdX = &dX[0, 0] if dX is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_dense_backward(&X[0, 0], &W[0, 0], &A[0, 0], &dA[0, 0], act, <floating>alpha,
                         &dW[0, 0], pdb, pdX, m, k, n)
        fastbp_ftz_restore(csr)
