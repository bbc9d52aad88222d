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
    void fastbp_bias_act_z_f(float* A, float* Z, const float* b, long m, long n, long ld,
                             int act, float alpha) noexcept nogil
    void fastbp_bias_act_z_d(double* A, double* Z, const double* b, long m, long n, long ld,
                             int act, double alpha) noexcept nogil
    void fastbp_act_backward_z_f(const float* A, const float* Z, float* dA, float* db, long m,
                                 long n, long ld, int act, float alpha) noexcept nogil
    void fastbp_act_backward_z_d(const double* A, const double* Z, double* dA, double* db,
                                 long m, long n, long ld, int act, double alpha) noexcept nogil
    int fastbp_act_needs_z(int act) noexcept nogil
    const char* const fastbp_act_names[]
    const int fastbp_act_ids[]
    int FASTBP_N_ACTIVATIONS


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
                          floating alpha, floating* A, int m, int k, int n,
                          floating* Z=NULL) noexcept nogil:
    """A = act(X·W + b); Z (m, n) = X·W + b where given (activations whose derivative needs z)."""
    # BLAS takes non-const pointers but only reads A and B
    gemm_rm(False, False, m, n, k, <floating>1, <floating*>X, k, <floating*>W, n, <floating>0,
            A, n)
    if Z == NULL:
        bias_act(A, b, m, n, n, act, alpha)
    elif floating is float:
        fastbp_bias_act_z_f(A, Z, b, m, n, n, act, alpha)
    else:
        fastbp_bias_act_z_d(A, Z, b, m, n, n, act, alpha)


cdef void c_dense_backward(const floating* X, const floating* W, const floating* A,
                           floating* dA, int act, floating alpha, floating* dW, floating* db,
                           floating* dX, int m, int k, int n,
                           const floating* Z=NULL) noexcept nogil:
    if Z == NULL:
        act_backward_db(A, dA, db, m, n, n, act, alpha)
    elif floating is float:
        fastbp_act_backward_z_f(A, Z, dA, db, m, n, n, act, alpha)
    else:
        fastbp_act_backward_z_d(A, Z, dA, db, m, n, n, act, alpha)
    if dW != NULL:  # NULL: the caller fuses dW's product with the update (_train.pxi)
        # dW(k,n) = Xᵀ(k,m)·dZ(m,n): X is read transposed by flag.
        gemm_rm(True, False, k, n, m, <floating>1, <floating*>X, k, dA, n, <floating>0, dW, n)
    if dX != NULL:
        # dX(m,k) = dZ(m,n)·Wᵀ(n,k)
        gemm_rm(False, True, m, k, n, <floating>1, dA, n, <floating*>W, n, <floating>0, dX, k)


cdef int check_act(int act, double alpha, bint keeps_z=False) except -1:
    """act must be an id of _act_list.h; one whose derivative needs z only where the kernel
    keeps Z (keeps_z)."""
    cdef int i
    for i in range(FASTBP_N_ACTIVATIONS):
        if fastbp_act_ids[i] == act:
            break
    else:
        raise ValueError(f"act must be an activation id in {sorted(ACTIVATION_IDS.values())}, "
                         f"got {act}")
    if fastbp_act_needs_z(act) and not keeps_z:
        raise ValueError(f"act {act} needs the pre-activations Z, which this kernel does not keep")
    if alpha < 0:
        raise ValueError(f"alpha (leaky_relu slope) must be >= 0, got {alpha}")
    return 0


cdef int check_z(int act, object Z, int m, int n) except -1:
    if fastbp_act_needs_z(act) and Z is None:
        raise ValueError(f"act {act} needs Z, the (m, n) pre-activations")
    if Z is not None:
        if not fastbp_act_needs_z(act):
            raise ValueError(f"Z must be None for act {act} (its derivative reads A)")
        check_shape("Z", (Z.shape[0], Z.shape[1]), (m, n))
    return 0


cdef int check_shape(str name, tuple got, tuple want) except -1:
    if got != want:
        raise ValueError(f"{name} must have shape {want}, got {got}")
    return 0


def dense_forward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                  int act, double alpha, floating[:, ::1] A, floating[:, ::1] Z=None):
    """A = act(X·W + b).  X (m,k), W (k,n), b (n,) or None, A (m,n) written; Z (m,n) = X·W + b
    written, given exactly for activations whose derivative needs it."""
    cdef int m = blas_dim(X.shape[0], "m"), k = blas_dim(X.shape[1], "k")
    cdef int n = blas_dim(W.shape[1], "n")
    check_act(act, alpha, Z is not None)
    check_z(act, Z, m, n)
    check_shape("W", (W.shape[0], W.shape[1]), (k, n))
    check_shape("A", (A.shape[0], A.shape[1]), (m, n))
    if b is not None:
        check_shape("b", (b.shape[0],), (n,))
    if m == 0 or k == 0 or n == 0:
        raise ValueError(f"dense_forward needs non-empty X (m,k) and W (k,n), got m={m}, k={k}, n={n}")
    cdef const floating* pb = &b[0] if b is not None else NULL
    cdef floating* pZ = &Z[0, 0] if Z is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_dense_forward(&X[0, 0], &W[0, 0], pb, act, <floating>alpha, &A[0, 0], m, k, n, pZ)
        fastbp_ftz_restore(csr)


def dense_backward(const floating[:, ::1] X, const floating[:, ::1] W,
                   const floating[:, ::1] A, floating[:, ::1] dA, int act, double alpha,
                   floating[:, ::1] dW,
                   floating[::1] db, floating[:, ::1] dX, const floating[:, ::1] Z=None):
    """dZ = dA ⊙ act'(Z, A) (into dA); dW = Xᵀ·dZ; db = Σ_rows dZ; dX = dZ·Wᵀ (db, dX may be
    None; Z, the forward's pre-activations, exactly for activations whose derivative needs it)."""
    cdef int m = blas_dim(X.shape[0], "m"), k = blas_dim(X.shape[1], "k")
    cdef int n = blas_dim(W.shape[1], "n")
    check_act(act, alpha, Z is not None)
    check_z(act, Z, m, n)
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
    cdef const floating* pZ = &Z[0, 0] if Z is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_dense_backward(&X[0, 0], &W[0, 0], &A[0, 0], &dA[0, 0], act, <floating>alpha,
                         &dW[0, 0], pdb, pdX, m, k, n, pZ)
        fastbp_ftz_restore(csr)
