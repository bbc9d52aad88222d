# Recurrent layers: whole sequences per call, backpropagation through time inside the kernel.
# Math and layout: fastbp/backends/reference_rnn.py (the oracle). Per step: ONE GEMM for the
# recurrence and one fused element-wise pass for the gates; the input projection of all steps,
# dWx, dWh and dX are one GEMM each over T·m time-major rows.

from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cdef extern from "_cells.h":
    void lstm_fwd_row_f(float* g, const float* b, const float* cp, float* c, float* h,
                        long n, long s) noexcept nogil
    void lstm_fwd_row_d(double* g, const double* b, const double* cp, double* c, double* h,
                        long n, long s) noexcept nogil
    void lstm_bwd_row_f(const float* g, const float* c, const float* cp, const float* y,
                        float* dh, float* dc, float* d, long n, long s, int stop) noexcept nogil
    void lstm_bwd_row_d(const double* g, const double* c, const double* cp, const double* y,
                        double* dh, double* dc, double* d, long n, long s,
                        int stop) noexcept nogil
    void gru_fwd_row_f(float* g, const float* s, const float* hp, float* rh, float* h,
                       long n, long ld) noexcept nogil
    void gru_fwd_row_d(double* g, const double* s, const double* hp, double* rh, double* h,
                       long n, long ld) noexcept nogil
    void gru_bwd_row_f(const float* g, const float* hp, const float* rh, const float* y,
                       float* dh, float* d, float* e, long n, long ld, int stop) noexcept nogil
    void gru_bwd_row_d(const double* g, const double* hp, const double* rh, const double* y,
                       double* dh, double* d, double* e, long n, long ld,
                       int stop) noexcept nogil
    void col_sums_f(const float* A, float* out, long rows, long cols, long lda) noexcept nogil
    void col_sums_d(const double* A, double* out, long rows, long cols, long lda) noexcept nogil


cdef inline bint cut(Py_ssize_t bptt, Py_ssize_t t) noexcept nogil:
    """No gradient from step t to step t − 1 (first step, or a truncated-BPTT chunk start)."""
    return t == 0 or (bptt > 0 and t % bptt == 0)


cdef void swap_axes(const floating* src, floating* dst, Py_ssize_t a, Py_ssize_t b,
                    Py_ssize_t w) noexcept nogil:
    """dst (b, a, w)[j, i] = src (a, b, w)[i, j]: rows of w copied whole."""
    cdef Py_ssize_t i, j
    for i in range(a):
        for j in range(b):
            memcpy(dst + (j * a + i) * w, src + (i * b + j) * w, w * sizeof(floating))


cdef void write_output(const floating* H, floating* Y, Py_ssize_t m, Py_ssize_t T,
                       Py_ssize_t n, bint seq) noexcept nogil:
    """Y = H[1:] batch-major (return_sequences) or H[T]."""
    if seq:
        swap_axes(H + m * n, Y, T, m, n)
    else:
        memcpy(Y, H + T * m * n, m * n * sizeof(floating))


cdef inline const floating* dy_row(const floating* dY, Py_ssize_t i, Py_ssize_t t,
                                   Py_ssize_t T, Py_ssize_t n, bint seq) noexcept nogil:
    """Row i of ∂L/∂h_t given from above, or NULL where it is zero."""
    if seq:
        return dY + (i * T + t) * n
    return dY + i * n if t == T - 1 else NULL


cdef void project(const floating* Xt, const floating* Wx, const floating* b, floating* Z,
                  Py_ssize_t rows, int F, int cols) noexcept nogil:
    """Z (rows, cols) = Xt·Wx + b for all steps at once."""
    gemm_rm(False, False, <int>rows, cols, F, <floating>1, <floating*>Xt, F, <floating*>Wx, cols,
            <floating>0, Z, cols)
    if b != NULL:
        bias_act(Z, b, rows, cols, cols, LINEAR, 0)


cdef inline void col_sums(const floating* A, floating* out, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t lda) noexcept nogil:
    """out (cols,) = Σ_r A[r] over rows lda apart: the bias gradient of all steps (in C: a simd
    loop)."""
    if floating is float:
        col_sums_f(A, out, rows, cols, lda)
    else:
        col_sums_d(A, out, rows, cols, lda)


cdef void weight_grads(floating* Xt, const floating* Wx, const floating* H, const floating* dGx,
                       const floating* dGh, floating* dWx, floating* dWh, floating* dX,
                       Py_ssize_t m, Py_ssize_t T, int F, int n, int cols) noexcept nogil:
    """dWx = Xtᵀ·dGx; dWh = Σ_{t≥1} H[t]ᵀ·dGh[t] (H[0] = 0); dX = (dGx·Wxᵀ) batch-major,
    computed in Xt (no longer needed) and then reordered."""
    cdef int rows = <int>(T * m)
    gemm_rm(True, False, F, cols, rows, <floating>1, Xt, F, <floating*>dGx, cols, <floating>0,
            dWx, cols)
    if T > 1:
        gemm_rm(True, False, n, cols, <int>((T - 1) * m), <floating>1, <floating*>H + m * n, n,
                <floating*>dGh + m * cols, cols, <floating>0, dWh, cols)
    else:
        memset(dWh, 0, n * cols * sizeof(floating))
    if dX != NULL:
        gemm_rm(False, True, rows, F, cols, <floating>1, <floating*>dGx, cols, <floating*>Wx,
                cols, <floating>0, Xt, F)
        swap_axes(Xt, dX, T, m, F)


# -- SimpleRNN ----------------------------------------------------------------------------------

cdef floating* transposed(const floating* W, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """Wᵀ (cols, rows) of W (rows, cols) in a malloc'ed buffer (NULL if out of memory)."""
    cdef floating* WT = <floating*>malloc(rows * cols * sizeof(floating))
    if WT != NULL:
        transpose(W, cols, rows, cols, WT)
    return WT


cdef floating* rows_transpose(const floating* Wh, Py_ssize_t m, int n, int gn) noexcept nogil:
    """Whᵀ (gn, n) in a malloc'ed buffer where the per-step dh += dG·Whᵀ ((m, gn)·(gn, n)) runs in
    the small-GEMM kernel, which reads B by rows (LSTM step: 1.2-1.3x OpenBLAS's NT product;
    the copy is one pass over Wh per call); NULL where BLAS takes it with trans_b."""
    if not rows_gemm(m * n * gn, sizeof(floating) == 4):
        return NULL
    return transposed(Wh, n, gn)  # (NULL if out of memory: BLAS, as without the kernel)


cdef inline void dh_step(const floating* dG, const floating* Wh, const floating* WT,
                         Py_ssize_t m, int n, int gn, floating* dh) noexcept nogil:
    """dh += dG·Whᵀ: dG (m, gn), Wh (n, gn); through WT = Whᵀ where rows_transpose made it."""
    if WT != NULL:
        gemm_rm(False, False, <int>m, n, gn, <floating>1, <floating*>dG, gn, <floating*>WT, n,
                <floating>1, dh, n)
    else:
        gemm_rm(False, True, <int>m, n, gn, <floating>1, <floating*>dG, gn, <floating*>Wh, gn,
                <floating>1, dh, n)


cdef void c_rnn_forward(const floating* X, const floating* Wx, const floating* Wh,
                        const floating* b, int act, floating alpha, floating* Xt, floating* H,
                        floating* Y, Py_ssize_t m, Py_ssize_t T, int F, int n,
                        bint seq) noexcept nogil:
    """H[t+1] = act(Xt[t]·Wx + H[t]·Wh + b)."""
    cdef Py_ssize_t t, mn = m * n
    swap_axes(X, Xt, m, T, F)
    project(Xt, Wx, NULL, H + mn, T * m, F, n)
    memset(H, 0, mn * sizeof(floating))
    for t in range(T):
        if t > 0:
            gemm_rm(False, False, <int>m, n, n, <floating>1, H + t * mn, n, <floating*>Wh, n,
                    <floating>1, H + (t + 1) * mn, n)
        bias_act(H + (t + 1) * mn, b, m, n, n, act, alpha)
    write_output(H, Y, m, T, n, seq)


cdef void c_rnn_backward(floating* Xt, const floating* Wx, const floating* Wh,
                         const floating* H, const floating* dY, int act, floating alpha,
                         Py_ssize_t bptt, floating* dG, floating* dWx, floating* dWh,
                         floating* db, floating* dX, Py_ssize_t m, Py_ssize_t T, int F, int n,
                         bint seq) noexcept nogil:
    """dG[t] = (dY_t + dG[t+1]·Whᵀ) ⊙ act'(h_t), accumulated in place: dG starts as dY."""
    cdef Py_ssize_t t, mn = m * n
    if seq:
        swap_axes(dY, dG, m, T, n)
    else:
        memset(dG, 0, (T - 1) * mn * sizeof(floating))
        memcpy(dG + (T - 1) * mn, dY, mn * sizeof(floating))
    cdef floating* WT = rows_transpose(Wh, m, n, n)
    for t in range(T - 1, -1, -1):
        act_backward_db(H + (t + 1) * mn, dG + t * mn, NULL, m, n, n, act, alpha)
        if not cut(bptt, t):
            dh_step(dG + t * mn, Wh, WT, m, n, n, dG + (t - 1) * mn)
    free(WT)
    weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX, m, T, F, n, n)
    if db != NULL:
        col_sums(dG, db, T * m, n, n)


# -- LSTM and GRU on the two-thread team (_team.h): each thread takes half of the units --------
# A unit's gates, cell and state depend on no other unit within a step, so thread k computes the
# gate columns of its units (one column block per gate), their cells and their part of H[t+1];
# the threads meet once per step, before the GEMM that reads all of H[t] (forward) or all of
# dG[t] (backward). Every product runs in the small-GEMM kernel (gemm_blocked): no BLAS call
# inside a region. The serial loop of a layer of the same shapes runs every product there too
# (fastbp_blas_avoid, gemm_rm), each element's sums in the same order: the same numbers whether
# the team ran or not.

ctypedef struct RecTeam:
    bint single
    int gates   # 4: LSTM [i f g o], 3: GRU [z r h]
    void* Xt
    void* Wx
    void* Wh
    void* WT    # Whᵀ (gn, n)
    void* WxT   # Wxᵀ (gn, F), for dX
    void* b
    void* H
    void* C     # LSTM cell states
    void* Rh    # GRU: S_h of each step
    void* S     # GRU: the step's recurrent pre-activations (m, 3n)
    void* G
    void* Y
    void* dY
    void* dG
    void* dGh   # GRU: recurrent-side gradients (LSTM: dG)
    void* dh
    void* dc
    void* dWx
    void* dWh
    void* db
    void* dX
    Py_ssize_t m, T, bptt
    int F, n
    bint seq
    fastbp_barrier bar


cdef inline bint team_worth(Py_ssize_t m, int n, int gn) noexcept nogil:
    """Is a recurrent layer shaped for the team? Where the kernel exists and a step's GEMM
    (m·n·gn multiply-adds) outweighs the ~1 µs per step the two threads spend meeting. From
    shapes only: where the team does not run (one thread wanted, BLAS ran lately, another
    thread holds it) the serial loop computes the same numbers (fastbp_blas_avoid)."""
    return FASTBP_GEMM_ROWS and n >= 32 and m * n * gn >= (1 << 17)


cdef void team_gate_gemm(RecTeam* c, int rows, const floating* A, int lda, const floating* W,
                         floating beta, floating* Z, int u0, int u1) noexcept nogil:
    """Z[:, units u0..u1 of every gate] = A·W[:, the same columns] + beta·Z (rows of Z gn long)."""
    cdef int q, n = c.n, gn = c.gates * c.n
    for q in range(c.gates):
        gemm_blocked(False, rows, u1 - u0, lda, A, lda, W + q * n + u0, gn, beta,
                     Z + q * n + u0, gn)


cdef void team_weight_grads(RecTeam* c, floating* dG, const floating* dGh,
                            int tid) noexcept nogil:
    """After the time loop (all of dG, dGh written): this thread's half of the columns of dWx =
    Xtᵀ·dG, dWh = Σ_{t≥1} H[t]ᵀ·dGh[t] and db; then (after a meeting: Xt holds the input until
    both dWx products have read it) its rows of dX = dG·Wxᵀ."""
    cdef Py_ssize_t m = c.m, T = c.T, r, gn = c.gates * c.n
    cdef int F = c.F, n = c.n, c0, c1, r0, r1, i
    cdef floating* Xt = <floating*>c.Xt
    cdef floating* dWh = <floating*>c.dWh
    cdef floating* db = <floating*>c.db
    cdef floating* dX = <floating*>c.dX
    split_at(gn, tid, &c0, &c1)
    gemm_blocked(True, F, c1 - c0, <int>(T * m), Xt, F, dG + c0, <int>gn, 0,
                 <floating*>c.dWx + c0, <int>gn)
    if T > 1:
        gemm_blocked(True, n, c1 - c0, <int>((T - 1) * m), <floating*>c.H + m * n, n,
                     dGh + m * gn + c0, <int>gn, 0, dWh + c0, <int>gn)
    else:
        for i in range(n):
            memset(dWh + i * gn + c0, 0, (c1 - c0) * sizeof(floating))
    if db != NULL:
        col_sums(dG + c0, db + c0, T * m, c1 - c0, gn)
        if dGh != dG:  # GRU: the recurrent bias, the second row of b
            col_sums(dGh + c0, db + gn + c0, T * m, c1 - c0, gn)
    if dX != NULL:
        fastbp_barrier_wait(&c.bar)
        split_at(T * m, tid, &r0, &r1)
        if r1 > r0:
            gemm_blocked(False, r1 - r0, F, <int>gn, dG + r0 * gn, <int>gn,
                         <floating*>c.WxT, F, 0, Xt + r0 * F, F)
        for r in range(r0, r1):  # (T, m, F) -> (m, T, F)
            memcpy(dX + ((r % m) * T + r // m) * F, Xt + r * F, F * sizeof(floating))


cdef void lstm_fwd_part(RecTeam* c, floating* G, int tid) noexcept nogil:
    cdef Py_ssize_t m = c.m, T = c.T, t, i, mn = c.m * c.n, n4 = 4 * c.n
    cdef int n = c.n, u0, u1, nu
    cdef const floating* b = <floating*>c.b
    cdef floating* H = <floating*>c.H
    cdef floating* C = <floating*>c.C
    cdef floating* g
    split_at(n, tid, &u0, &u1)
    nu = u1 - u0
    # this thread's units of each gate, for all steps at once (the cell adds b)
    team_gate_gemm(c, <int>(T * m), <floating*>c.Xt, c.F, <floating*>c.Wx, 0, G, u0, u1)
    for i in range(m):
        memset(H + i * n + u0, 0, nu * sizeof(floating))
        memset(C + i * n + u0, 0, nu * sizeof(floating))
    for t in range(T):
        if t > 0:
            fastbp_barrier_wait(&c.bar)  # all of H[t] is written
            team_gate_gemm(c, <int>m, H + t * mn, n, <floating*>c.Wh, 1, G + t * m * n4, u0, u1)
        for i in range(m):
            g = G + t * m * n4 + i * n4 + u0
            if floating is float:
                lstm_fwd_row_f(g, b + u0 if b != NULL else NULL, C + t * mn + i * n + u0,
                               C + (t + 1) * mn + i * n + u0, H + (t + 1) * mn + i * n + u0,
                               nu, n)
            else:
                lstm_fwd_row_d(g, b + u0 if b != NULL else NULL, C + t * mn + i * n + u0,
                               C + (t + 1) * mn + i * n + u0, H + (t + 1) * mn + i * n + u0,
                               nu, n)
    fastbp_barrier_wait(&c.bar)
    if tid == 0:
        write_output(H, <floating*>c.Y, m, T, n, c.seq)


cdef void lstm_bwd_part(RecTeam* c, floating* dG, int tid) noexcept nogil:
    cdef Py_ssize_t m = c.m, T = c.T, t, i, mn = c.m * c.n, n4 = 4 * c.n
    cdef int n = c.n, u0, u1, nu
    cdef const floating* C = <floating*>c.C
    cdef const floating* G = <floating*>c.G
    cdef const floating* dY = <floating*>c.dY
    cdef floating* dh = <floating*>c.dh
    cdef floating* dc = <floating*>c.dc
    cdef const floating* y
    cdef bint stop
    split_at(n, tid, &u0, &u1)
    nu = u1 - u0
    for i in range(m):  # dh = dY_{T-1}, dc = 0 (this thread's units)
        y = dy_row(dY, i, T - 1, T, n, c.seq)
        memcpy(dh + i * n + u0, y + u0, nu * sizeof(floating))
        memset(dc + i * n + u0, 0, nu * sizeof(floating))
    for t in range(T - 1, -1, -1):
        stop = cut(c.bptt, t)
        for i in range(m):
            y = dy_row(dY, i, t - 1, T, n, c.seq) if t > 0 else NULL
            if floating is float:
                lstm_bwd_row_f(G + t * m * n4 + i * n4 + u0, C + (t + 1) * mn + i * n + u0,
                               C + t * mn + i * n + u0, y + u0 if y != NULL else NULL,
                               dh + i * n + u0, dc + i * n + u0, dG + t * m * n4 + i * n4 + u0,
                               nu, n, stop)
            else:
                lstm_bwd_row_d(G + t * m * n4 + i * n4 + u0, C + (t + 1) * mn + i * n + u0,
                               C + t * mn + i * n + u0, y + u0 if y != NULL else NULL,
                               dh + i * n + u0, dc + i * n + u0, dG + t * m * n4 + i * n4 + u0,
                               nu, n, stop)
        fastbp_barrier_wait(&c.bar)  # all of dG[t] is written
        if not stop:  # dh (this thread's units) += dG[t]·Whᵀ
            gemm_blocked(False, <int>m, nu, <int>n4, dG + t * m * n4, <int>n4,
                         <floating*>c.WT + u0, n, 1, dh + u0, n)
    team_weight_grads(c, dG, dG, tid)


cdef void gru_fwd_part(RecTeam* c, floating* G, int tid) noexcept nogil:
    cdef Py_ssize_t m = c.m, T = c.T, t, i, r, mn = c.m * c.n, n3 = 3 * c.n
    cdef int n = c.n, u0, u1, nu, q
    cdef const floating* b = <floating*>c.b
    cdef floating* H = <floating*>c.H
    cdef floating* S = <floating*>c.S
    cdef floating* Rh = <floating*>c.Rh
    cdef floating* z
    split_at(n, tid, &u0, &u1)
    nu = u1 - u0
    team_gate_gemm(c, <int>(T * m), <floating*>c.Xt, c.F, <floating*>c.Wx, 0, G, u0, u1)
    if b != NULL:  # + b₀ (input bias), this thread's columns
        for r in range(T * m):
            for q in range(3):
                z = G + r * n3 + q * n + u0
                for i in range(nu):
                    z[i] += b[q * n + u0 + i]
    for i in range(m):
        memset(H + i * n + u0, 0, nu * sizeof(floating))
    for t in range(T):
        for i in range(m):  # S = b₁ (recurrent bias), then += H[t]·Wh; this thread's columns
            for q in range(3):
                if b != NULL:
                    memcpy(S + i * n3 + q * n + u0, b + n3 + q * n + u0, nu * sizeof(floating))
                else:
                    memset(S + i * n3 + q * n + u0, 0, nu * sizeof(floating))
        if t > 0:
            fastbp_barrier_wait(&c.bar)  # all of H[t] is written
            team_gate_gemm(c, <int>m, H + t * mn, n, <floating*>c.Wh, 1, S, u0, u1)
        for i in range(m):
            if floating is float:
                gru_fwd_row_f(G + t * m * n3 + i * n3 + u0, S + i * n3 + u0,
                              H + t * mn + i * n + u0, Rh + t * mn + i * n + u0,
                              H + (t + 1) * mn + i * n + u0, nu, n)
            else:
                gru_fwd_row_d(G + t * m * n3 + i * n3 + u0, S + i * n3 + u0,
                              H + t * mn + i * n + u0, Rh + t * mn + i * n + u0,
                              H + (t + 1) * mn + i * n + u0, nu, n)
    fastbp_barrier_wait(&c.bar)
    if tid == 0:
        write_output(H, <floating*>c.Y, m, T, n, c.seq)


cdef void gru_bwd_part(RecTeam* c, floating* dG, int tid) noexcept nogil:
    cdef Py_ssize_t m = c.m, T = c.T, t, i, mn = c.m * c.n, n3 = 3 * c.n
    cdef int n = c.n, u0, u1, nu
    cdef const floating* H = <floating*>c.H
    cdef const floating* G = <floating*>c.G
    cdef const floating* Rh = <floating*>c.Rh
    cdef const floating* dY = <floating*>c.dY
    cdef floating* dGh = <floating*>c.dGh
    cdef floating* dh = <floating*>c.dh
    cdef const floating* y
    cdef bint stop
    split_at(n, tid, &u0, &u1)
    nu = u1 - u0
    for i in range(m):  # dh = dY_{T-1} (this thread's units)
        y = dy_row(dY, i, T - 1, T, n, c.seq)
        memcpy(dh + i * n + u0, y + u0, nu * sizeof(floating))
    for t in range(T - 1, -1, -1):
        stop = cut(c.bptt, t)
        for i in range(m):
            y = dy_row(dY, i, t - 1, T, n, c.seq) if t > 0 else NULL
            if floating is float:
                gru_bwd_row_f(G + t * m * n3 + i * n3 + u0, H + t * mn + i * n + u0,
                              Rh + t * mn + i * n + u0, y + u0 if y != NULL else NULL,
                              dh + i * n + u0, dG + t * m * n3 + i * n3 + u0,
                              dGh + t * m * n3 + i * n3 + u0, nu, n, stop)
            else:
                gru_bwd_row_d(G + t * m * n3 + i * n3 + u0, H + t * mn + i * n + u0,
                              Rh + t * mn + i * n + u0, y + u0 if y != NULL else NULL,
                              dh + i * n + u0, dG + t * m * n3 + i * n3 + u0,
                              dGh + t * m * n3 + i * n3 + u0, nu, n, stop)
        fastbp_barrier_wait(&c.bar)  # all of dGh[t] is written
        if not stop:  # dh (this thread's units) += dGh[t]·Whᵀ
            gemm_blocked(False, <int>m, nu, <int>n3, dGh + t * m * n3, <int>n3,
                         <floating*>c.WT + u0, n, 1, dh + u0, n)
    team_weight_grads(c, dG, dGh, tid)


cdef void rec_fwd_job(void* ctx, int tid) noexcept nogil:
    cdef RecTeam* c = <RecTeam*>ctx
    cdef unsigned int csr = fastbp_ftz_on()  # the helper's own FP mode (the caller's is set)
    if c.gates == 4:
        if c.single:
            lstm_fwd_part(c, <float*>c.G, tid)
        else:
            lstm_fwd_part(c, <double*>c.G, tid)
    else:
        if c.single:
            gru_fwd_part(c, <float*>c.G, tid)
        else:
            gru_fwd_part(c, <double*>c.G, tid)
    fastbp_ftz_restore(csr)


cdef void rec_bwd_job(void* ctx, int tid) noexcept nogil:
    cdef RecTeam* c = <RecTeam*>ctx
    cdef unsigned int csr = fastbp_ftz_on()
    if c.gates == 4:
        if c.single:
            lstm_bwd_part(c, <float*>c.dG, tid)
        else:
            lstm_bwd_part(c, <double*>c.dG, tid)
    else:
        if c.single:
            gru_bwd_part(c, <float*>c.dG, tid)
        else:
            gru_bwd_part(c, <double*>c.dG, tid)
    fastbp_ftz_restore(csr)


cdef bint team_forward(RecTeam* c) noexcept nogil:
    """Run a forward on the team (the caller filled c); False where it did not run."""
    fastbp_barrier_init(&c.bar)
    return fastbp_team_run(rec_fwd_job, c)


cdef bint team_backward(RecTeam* c, const floating* Wh, const floating* Wx,
                        bint dX) noexcept nogil:
    """Run a backward on the team (the caller filled c but WT, WxT); False where it did not."""
    cdef int gn = c.gates * c.n
    cdef floating* WT = transposed(Wh, c.n, gn)
    cdef floating* WxT = transposed(Wx, c.F, gn) if dX else NULL
    cdef bint ran = False
    c.WT, c.WxT = WT, WxT
    fastbp_barrier_init(&c.bar)
    if WT != NULL and (not dX or WxT != NULL):
        ran = fastbp_team_run(rec_bwd_job, c)
    free(WT)
    free(WxT)
    return ran


# -- LSTM ---------------------------------------------------------------------------------------

cdef void c_lstm_forward(const floating* X, const floating* Wx, const floating* Wh,
                         const floating* b, floating* Xt, floating* H, floating* C, floating* G,
                         floating* Y, Py_ssize_t m, Py_ssize_t T, int F, int n,
                         bint seq) noexcept nogil:
    """G[t] = gates [i f g o] of Xt[t]·Wx + H[t]·Wh + b; C[t+1] = f⊙C[t] + i⊙g;
    H[t+1] = o⊙tanh(C[t+1]). The cell adds b (it reads G[t] anyway)."""
    cdef Py_ssize_t t, i, mn = m * n, n4 = 4 * n
    cdef floating* g
    cdef floating* cc
    cdef floating* hc
    cdef const floating* cp
    cdef RecTeam team
    swap_axes(X, Xt, m, T, F)
    cdef bint worth = team_worth(m, n, 4 * n)
    if worth:
        team.single, team.gates, team.m, team.T, team.F, team.n, team.seq = (
            floating is float, 4, m, T, F, n, seq)
        team.Xt, team.Wx, team.Wh, team.b, team.H, team.C, team.G, team.Y = (
            Xt, <void*>Wx, <void*>Wh, <void*>b, H, C, G, Y)
        if team_forward(&team):
            return
    cdef int blas = fastbp_blas_avoid(worth)  # the team refused: no BLAS (_team.h)
    project(Xt, Wx, NULL, G, T * m, F, 4 * n)
    memset(H, 0, mn * sizeof(floating))
    memset(C, 0, mn * sizeof(floating))
    for t in range(T):
        if t > 0:
            gemm_rm(False, False, <int>m, 4 * n, n, <floating>1, H + t * mn, n, <floating*>Wh,
                    4 * n, <floating>1, G + t * m * n4, 4 * n)
        for i in range(m):
            g = G + t * m * n4 + i * n4
            cp = C + t * mn + i * n
            cc = C + (t + 1) * mn + i * n
            hc = H + (t + 1) * mn + i * n
            if floating is float:
                lstm_fwd_row_f(g, b, cp, cc, hc, n, n)
            else:
                lstm_fwd_row_d(g, b, cp, cc, hc, n, n)
    write_output(H, Y, m, T, n, seq)
    fastbp_blas_restore(blas)


cdef void c_lstm_backward(floating* Xt, const floating* Wx, const floating* Wh,
                          const floating* H, const floating* C, const floating* G,
                          const floating* dY, Py_ssize_t bptt, floating* dG, floating* dh,
                          floating* dc, floating* dWx, floating* dWh, floating* db, floating* dX,
                          Py_ssize_t m, Py_ssize_t T, int F, int n, bint seq) noexcept nogil:
    """Per step (reverse): dG[t] from dh = dY_t + dG[t+1]·Whᵀ and dc; then the recurrence GEMM."""
    cdef Py_ssize_t t, i, j, mn = m * n, n4 = 4 * n
    cdef const floating* g
    cdef const floating* y
    cdef floating* d
    cdef bint stop
    cdef RecTeam team
    cdef floating* WT
    cdef bint worth = team_worth(m, n, 4 * n)
    if worth:
        team.single, team.gates, team.m, team.T, team.F, team.n, team.seq = (
            floating is float, 4, m, T, F, n, seq)
        team.bptt, team.Xt, team.H, team.C, team.G, team.dY = (
            bptt, Xt, <void*>H, <void*>C, <void*>G, <void*>dY)
        team.dG, team.dh, team.dc, team.dWx, team.dWh, team.db, team.dX = (
            dG, dh, dc, dWx, dWh, db, dX)
        if team_backward(&team, Wh, Wx, dX != NULL):
            return
    cdef int blas = fastbp_blas_avoid(worth)  # the team refused: no BLAS (_team.h)
    for i in range(m):  # dh = dY_{T-1}
        y = dy_row(dY, i, T - 1, T, n, seq)
        for j in range(n):
            dh[i * n + j] = y[j]
    memset(dc, 0, mn * sizeof(floating))
    WT = rows_transpose(Wh, m, n, 4 * n)
    for t in range(T - 1, -1, -1):
        stop = cut(bptt, t)
        for i in range(m):
            g = G + t * m * n4 + i * n4
            d = dG + t * m * n4 + i * n4
            y = dy_row(dY, i, t - 1, T, n, seq) if t > 0 else NULL
            if floating is float:
                lstm_bwd_row_f(g, C + (t + 1) * mn + i * n, C + t * mn + i * n, y, dh + i * n,
                               dc + i * n, d, n, n, stop)
            else:
                lstm_bwd_row_d(g, C + (t + 1) * mn + i * n, C + t * mn + i * n, y, dh + i * n,
                               dc + i * n, d, n, n, stop)
        if not stop:
            dh_step(dG + t * m * n4, Wh, WT, m, n, 4 * n, dh)
    free(WT)
    weight_grads(Xt, Wx, H, dG, dG, dWx, dWh, dX, m, T, F, n, 4 * n)
    if db != NULL:
        col_sums(dG, db, T * m, 4 * n, 4 * n)
    fastbp_blas_restore(blas)


# -- GRU ----------------------------------------------------------------------------------------

cdef void c_gru_forward(const floating* X, const floating* Wx, const floating* Wh,
                        const floating* b, floating* Xt, floating* H, floating* G, floating* Rh,
                        floating* S, floating* Y, Py_ssize_t m, Py_ssize_t T, int F, int n,
                        bint seq) noexcept nogil:
    """S = H[t]·Wh + b₁; z, r = σ(G[t] + S) per block; ĥ = tanh(G[t]_h + r⊙S_h);
    H[t+1] = z⊙H[t] + (1 − z)⊙ĥ; G[t] ← [z r ĥ], Rh[t] = S_h."""
    cdef Py_ssize_t t, i, mn = m * n, n3 = 3 * n
    cdef floating* g
    cdef floating* s
    cdef const floating* hp
    cdef RecTeam team
    swap_axes(X, Xt, m, T, F)
    cdef bint worth = team_worth(m, n, 3 * n)
    if worth:
        team.single, team.gates, team.m, team.T, team.F, team.n, team.seq = (
            floating is float, 3, m, T, F, n, seq)
        team.Xt, team.Wx, team.Wh, team.b, team.H, team.Rh, team.S, team.G, team.Y = (
            Xt, <void*>Wx, <void*>Wh, <void*>b, H, Rh, S, G, Y)
        if team_forward(&team):
            return
    cdef int blas = fastbp_blas_avoid(worth)  # the team refused: no BLAS (_team.h)
    project(Xt, Wx, b, G, T * m, F, 3 * n)
    memset(H, 0, mn * sizeof(floating))
    for t in range(T):
        for i in range(m):  # S = b₁ (recurrent bias), then += H[t]·Wh
            if b != NULL:
                memcpy(S + i * n3, b + n3, n3 * sizeof(floating))
            else:
                memset(S + i * n3, 0, n3 * sizeof(floating))
        if t > 0:
            gemm_rm(False, False, <int>m, 3 * n, n, <floating>1, H + t * mn, n, <floating*>Wh,
                    3 * n, <floating>1, S, 3 * n)
        for i in range(m):
            g = G + t * m * n3 + i * n3
            s = S + i * n3
            hp = H + t * mn + i * n
            if floating is float:
                gru_fwd_row_f(g, s, hp, Rh + t * mn + i * n, H + (t + 1) * mn + i * n, n, n)
            else:
                gru_fwd_row_d(g, s, hp, Rh + t * mn + i * n, H + (t + 1) * mn + i * n, n, n)
    write_output(H, Y, m, T, n, seq)
    fastbp_blas_restore(blas)


cdef void c_gru_backward(floating* Xt, const floating* Wx, const floating* Wh,
                         const floating* H, const floating* G, const floating* Rh,
                         const floating* dY, Py_ssize_t bptt, floating* dG, floating* dGh,
                         floating* dh, floating* dWx, floating* dWh, floating* db, floating* dX,
                         Py_ssize_t m, Py_ssize_t T, int F, int n, bint seq) noexcept nogil:
    """Per step (reverse): dG[t] (input side), dGh[t] (recurrent side) from dh; then
    dh = dY_{t−1} + dh⊙z + dGh[t]·Whᵀ."""
    cdef Py_ssize_t t, i, j, mn = m * n, n3 = 3 * n
    cdef const floating* g
    cdef const floating* y
    cdef floating* d
    cdef floating* e
    cdef bint stop
    cdef RecTeam team
    cdef bint worth = team_worth(m, n, 3 * n)
    if worth:
        team.single, team.gates, team.m, team.T, team.F, team.n, team.seq = (
            floating is float, 3, m, T, F, n, seq)
        team.bptt, team.Xt, team.H, team.Rh, team.G, team.dY = (
            bptt, Xt, <void*>H, <void*>Rh, <void*>G, <void*>dY)
        team.dG, team.dGh, team.dh, team.dWx, team.dWh, team.db, team.dX = (
            dG, dGh, dh, dWx, dWh, db, dX)
        if team_backward(&team, Wh, Wx, dX != NULL):
            return
    cdef int blas = fastbp_blas_avoid(worth)  # the team refused: no BLAS (_team.h)
    for i in range(m):
        y = dy_row(dY, i, T - 1, T, n, seq)
        for j in range(n):
            dh[i * n + j] = y[j]
    cdef floating* WT = rows_transpose(Wh, m, n, 3 * n)
    for t in range(T - 1, -1, -1):
        stop = cut(bptt, t)
        for i in range(m):
            g = G + t * m * n3 + i * n3
            d = dG + t * m * n3 + i * n3
            e = dGh + t * m * n3 + i * n3
            y = dy_row(dY, i, t - 1, T, n, seq) if t > 0 else NULL
            if floating is float:
                gru_bwd_row_f(g, H + t * mn + i * n, Rh + t * mn + i * n, y, dh + i * n, d, e,
                              n, n, stop)
            else:
                gru_bwd_row_d(g, H + t * mn + i * n, Rh + t * mn + i * n, y, dh + i * n, d, e,
                              n, n, stop)
        if not stop:
            dh_step(dGh + t * m * n3, Wh, WT, m, n, 3 * n, dh)
    free(WT)
    weight_grads(Xt, Wx, H, dG, dGh, dWx, dWh, dX, m, T, F, n, 3 * n)
    if db != NULL:
        col_sums(dG, db, T * m, 3 * n, 3 * n)
        col_sums(dGh, db + 3 * n, T * m, 3 * n, 3 * n)
    fastbp_blas_restore(blas)


# -- API edge -----------------------------------------------------------------------------------

cdef tuple rnn_dims(str kernel, tuple x_shape, bint time_major, tuple wx, tuple wh, int gates):
    """(m, T, F, n) from X (m, T, F) or Xt (T, m, F) and the weights, all checked."""
    cdef Py_ssize_t m, T, F
    if time_major:
        T, m, F = x_shape
    else:
        m, T, F = x_shape
    n = wh[0]
    if m == 0 or T == 0 or F == 0 or n == 0:
        raise ValueError(f"{kernel} needs non-empty shapes, got batch={m}, timesteps={T}, "
                         f"features={F}, units={n}")
    check_shape("Wx", wx, (F, gates * n))
    check_shape("Wh", wh, (n, gates * n))
    blas_dim(T * m * max(F, gates * n), "timesteps·batch·width")
    return m, T, F, n


cdef bint out_seq(str name, tuple shape, Py_ssize_t m, Py_ssize_t T, Py_ssize_t n) except -1:
    """True for (m, T·n) (every step), False for (m, n) (the last step)."""
    if shape == (m, T * n):
        return True
    if shape == (m, n):
        return False
    raise ValueError(f"{name} must have shape {(m, T * n)} (return_sequences) or {(m, n)}, "
                     f"got {shape}")


def rnn_forward(const floating[:, :, ::1] X, const floating[:, ::1] Wx,
                const floating[:, ::1] Wh, const floating[::1] b, int act, double alpha,
                floating[:, :, ::1] Xt, floating[:, :, ::1] H, floating[:, ::1] Y):
    """h_t = act(x_t·Wx + h_{t−1}·Wh + b). X (m,T,F); Xt (T,m,F), H (T+1,m,n), Y written."""
    cdef Py_ssize_t m, T, F, n
    m, T, F, n = rnn_dims("rnn_forward", (X.shape[0], X.shape[1], X.shape[2]), False,
                          (Wx.shape[0], Wx.shape[1]), (Wh.shape[0], Wh.shape[1]), 1)
    check_act(act, alpha)
    if act == SOFTMAX:
        raise ValueError("act must not be softmax in a recurrent layer")
    if b is not None:
        check_shape("b", (b.shape[0],), (n,))
    check_shape("Xt", (Xt.shape[0], Xt.shape[1], Xt.shape[2]), (T, m, F))
    check_shape("H", (H.shape[0], H.shape[1], H.shape[2]), (T + 1, m, n))
    cdef bint seq = out_seq("Y", (Y.shape[0], Y.shape[1]), m, T, n)
    cdef const floating* pb = &b[0] if b is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_rnn_forward(&X[0, 0, 0], &Wx[0, 0], &Wh[0, 0], pb, act, <floating>alpha,
                      &Xt[0, 0, 0], &H[0, 0, 0], &Y[0, 0], m, T, F, n, seq)
        fastbp_ftz_restore(csr)


def rnn_backward(floating[:, :, ::1] Xt, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
                 const floating[:, :, ::1] H, const floating[:, ::1] dY, int act, double alpha,
                 Py_ssize_t bptt, floating[:, :, ::1] dG, floating[:, ::1] dWx,
                 floating[:, ::1] dWh, floating[::1] db, floating[:, :, ::1] dX):
    """BPTT of rnn_forward: dG (T,m,n) = ∂L/∂(pre-activations); dWx, dWh, db, dX (m,T,F) or
    None. Xt is overwritten (scratch for dX) when dX is given."""
    cdef Py_ssize_t m, T, F, n
    m, T, F, n = rnn_dims("rnn_backward", (Xt.shape[0], Xt.shape[1], Xt.shape[2]), True,
                          (Wx.shape[0], Wx.shape[1]), (Wh.shape[0], Wh.shape[1]), 1)
    check_act(act, alpha)
    if act == SOFTMAX:
        raise ValueError("act must not be softmax in a recurrent layer")
    if bptt < 0:
        raise ValueError(f"bptt must be >= 0 (0: whole sequence), got {bptt}")
    check_shape("H", (H.shape[0], H.shape[1], H.shape[2]), (T + 1, m, n))
    check_shape("dG", (dG.shape[0], dG.shape[1], dG.shape[2]), (T, m, n))
    check_shape("dWx", (dWx.shape[0], dWx.shape[1]), (F, n))
    check_shape("dWh", (dWh.shape[0], dWh.shape[1]), (n, n))
    cdef bint seq = out_seq("dY", (dY.shape[0], dY.shape[1]), m, T, n)
    if db is not None:
        check_shape("db", (db.shape[0],), (n,))
    if dX is not None:
        check_shape("dX", (dX.shape[0], dX.shape[1], dX.shape[2]), (m, T, F))
    cdef floating* pdb = &db[0] if db is not None else NULL
    cdef floating* pdX = &dX[0, 0, 0] if dX is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_rnn_backward(&Xt[0, 0, 0], &Wx[0, 0], &Wh[0, 0], &H[0, 0, 0], &dY[0, 0], act,
                       <floating>alpha, bptt, &dG[0, 0, 0], &dWx[0, 0], &dWh[0, 0], pdb, pdX,
                       m, T, F, n, seq)
        fastbp_ftz_restore(csr)


def lstm_forward(const floating[:, :, ::1] X, const floating[:, ::1] Wx,
                 const floating[:, ::1] Wh, const floating[::1] b, floating[:, :, ::1] Xt,
                 floating[:, :, ::1] H, floating[:, :, ::1] C, floating[:, :, ::1] G,
                 floating[:, ::1] Y):
    """LSTM over the sequence. Xt (T,m,F); H, C (T+1,m,n); G (T,m,4n) gate activations; Y."""
    cdef Py_ssize_t m, T, F, n
    m, T, F, n = rnn_dims("lstm_forward", (X.shape[0], X.shape[1], X.shape[2]), False,
                          (Wx.shape[0], Wx.shape[1]), (Wh.shape[0], Wh.shape[1]), 4)
    if b is not None:
        check_shape("b", (b.shape[0],), (4 * n,))
    check_shape("Xt", (Xt.shape[0], Xt.shape[1], Xt.shape[2]), (T, m, F))
    check_shape("H", (H.shape[0], H.shape[1], H.shape[2]), (T + 1, m, n))
    check_shape("C", (C.shape[0], C.shape[1], C.shape[2]), (T + 1, m, n))
    check_shape("G", (G.shape[0], G.shape[1], G.shape[2]), (T, m, 4 * n))
    cdef bint seq = out_seq("Y", (Y.shape[0], Y.shape[1]), m, T, n)
    cdef const floating* pb = &b[0] if b is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_lstm_forward(&X[0, 0, 0], &Wx[0, 0], &Wh[0, 0], pb, &Xt[0, 0, 0], &H[0, 0, 0],
                       &C[0, 0, 0], &G[0, 0, 0], &Y[0, 0], m, T, F, n, seq)
        fastbp_ftz_restore(csr)


def lstm_backward(floating[:, :, ::1] Xt, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
                  const floating[:, :, ::1] H, const floating[:, :, ::1] C,
                  const floating[:, :, ::1] G, const floating[:, ::1] dY, Py_ssize_t bptt,
                  floating[:, :, ::1] dG, floating[:, ::1] dh, floating[:, ::1] dc,
                  floating[:, ::1] dWx, floating[:, ::1] dWh, floating[::1] db,
                  floating[:, :, ::1] dX):
    """BPTT of lstm_forward: dG (T,m,4n); dh, dc (m,n) scratch; dWx, dWh, db, dX or None.
    Xt is overwritten (scratch for dX) when dX is given."""
    cdef Py_ssize_t m, T, F, n
    m, T, F, n = rnn_dims("lstm_backward", (Xt.shape[0], Xt.shape[1], Xt.shape[2]), True,
                          (Wx.shape[0], Wx.shape[1]), (Wh.shape[0], Wh.shape[1]), 4)
    if bptt < 0:
        raise ValueError(f"bptt must be >= 0 (0: whole sequence), got {bptt}")
    check_shape("H", (H.shape[0], H.shape[1], H.shape[2]), (T + 1, m, n))
    check_shape("C", (C.shape[0], C.shape[1], C.shape[2]), (T + 1, m, n))
    check_shape("G", (G.shape[0], G.shape[1], G.shape[2]), (T, m, 4 * n))
    check_shape("dG", (dG.shape[0], dG.shape[1], dG.shape[2]), (T, m, 4 * n))
    check_shape("dh", (dh.shape[0], dh.shape[1]), (m, n))
    check_shape("dc", (dc.shape[0], dc.shape[1]), (m, n))
    check_shape("dWx", (dWx.shape[0], dWx.shape[1]), (F, 4 * n))
    check_shape("dWh", (dWh.shape[0], dWh.shape[1]), (n, 4 * n))
    cdef bint seq = out_seq("dY", (dY.shape[0], dY.shape[1]), m, T, n)
    if db is not None:
        check_shape("db", (db.shape[0],), (4 * n,))
    if dX is not None:
        check_shape("dX", (dX.shape[0], dX.shape[1], dX.shape[2]), (m, T, F))
    cdef floating* pdb = &db[0] if db is not None else NULL
    cdef floating* pdX = &dX[0, 0, 0] if dX is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_lstm_backward(&Xt[0, 0, 0], &Wx[0, 0], &Wh[0, 0], &H[0, 0, 0], &C[0, 0, 0],
                        &G[0, 0, 0], &dY[0, 0], bptt, &dG[0, 0, 0], &dh[0, 0], &dc[0, 0],
                        &dWx[0, 0], &dWh[0, 0], pdb, pdX, m, T, F, n, seq)
        fastbp_ftz_restore(csr)


def gru_forward(const floating[:, :, ::1] X, const floating[:, ::1] Wx,
                const floating[:, ::1] Wh, const floating[:, ::1] b, floating[:, :, ::1] Xt,
                floating[:, :, ::1] H, floating[:, :, ::1] G, floating[:, :, ::1] Rh,
                floating[:, ::1] S, floating[:, ::1] Y):
    """GRU (reset_after) over the sequence. b (2,3n) or None; Xt (T,m,F); H (T+1,m,n);
    G (T,m,3n) [z r ĥ]; Rh (T,m,n); S (m,3n) scratch; Y."""
    cdef Py_ssize_t m, T, F, n
    m, T, F, n = rnn_dims("gru_forward", (X.shape[0], X.shape[1], X.shape[2]), False,
                          (Wx.shape[0], Wx.shape[1]), (Wh.shape[0], Wh.shape[1]), 3)
    if b is not None:
        check_shape("b", (b.shape[0], b.shape[1]), (2, 3 * n))
    check_shape("Xt", (Xt.shape[0], Xt.shape[1], Xt.shape[2]), (T, m, F))
    check_shape("H", (H.shape[0], H.shape[1], H.shape[2]), (T + 1, m, n))
    check_shape("G", (G.shape[0], G.shape[1], G.shape[2]), (T, m, 3 * n))
    check_shape("Rh", (Rh.shape[0], Rh.shape[1], Rh.shape[2]), (T, m, n))
    check_shape("S", (S.shape[0], S.shape[1]), (m, 3 * n))
    cdef bint seq = out_seq("Y", (Y.shape[0], Y.shape[1]), m, T, n)
    cdef const floating* pb = &b[0, 0] if b is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_gru_forward(&X[0, 0, 0], &Wx[0, 0], &Wh[0, 0], pb, &Xt[0, 0, 0], &H[0, 0, 0],
                      &G[0, 0, 0], &Rh[0, 0, 0], &S[0, 0], &Y[0, 0], m, T, F, n, seq)
        fastbp_ftz_restore(csr)


def gru_backward(floating[:, :, ::1] Xt, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
                 const floating[:, :, ::1] H, const floating[:, :, ::1] G,
                 const floating[:, :, ::1] Rh, const floating[:, ::1] dY, Py_ssize_t bptt,
                 floating[:, :, ::1] dG, floating[:, :, ::1] dGh, floating[:, ::1] dh,
                 floating[:, ::1] dWx, floating[:, ::1] dWh, floating[:, ::1] db,
                 floating[:, :, ::1] dX):
    """BPTT of gru_forward: dG, dGh (T,m,3n); dh (m,n) scratch; dWx, dWh, db (2,3n), dX or
    None. Xt is overwritten (scratch for dX) when dX is given."""
    cdef Py_ssize_t m, T, F, n
    m, T, F, n = rnn_dims("gru_backward", (Xt.shape[0], Xt.shape[1], Xt.shape[2]), True,
                          (Wx.shape[0], Wx.shape[1]), (Wh.shape[0], Wh.shape[1]), 3)
    if bptt < 0:
        raise ValueError(f"bptt must be >= 0 (0: whole sequence), got {bptt}")
    check_shape("H", (H.shape[0], H.shape[1], H.shape[2]), (T + 1, m, n))
    check_shape("G", (G.shape[0], G.shape[1], G.shape[2]), (T, m, 3 * n))
    check_shape("Rh", (Rh.shape[0], Rh.shape[1], Rh.shape[2]), (T, m, n))
    check_shape("dG", (dG.shape[0], dG.shape[1], dG.shape[2]), (T, m, 3 * n))
    check_shape("dGh", (dGh.shape[0], dGh.shape[1], dGh.shape[2]), (T, m, 3 * n))
    check_shape("dh", (dh.shape[0], dh.shape[1]), (m, n))
    check_shape("dWx", (dWx.shape[0], dWx.shape[1]), (F, 3 * n))
    check_shape("dWh", (dWh.shape[0], dWh.shape[1]), (n, 3 * n))
    cdef bint seq = out_seq("dY", (dY.shape[0], dY.shape[1]), m, T, n)
    if db is not None:
        check_shape("db", (db.shape[0], db.shape[1]), (2, 3 * n))
    if dX is not None:
        check_shape("dX", (dX.shape[0], dX.shape[1], dX.shape[2]), (m, T, F))
    cdef floating* pdb = &db[0, 0] if db is not None else NULL
    cdef floating* pdX = &dX[0, 0, 0] if dX is not None else NULL
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_gru_backward(&Xt[0, 0, 0], &Wx[0, 0], &Wh[0, 0], &H[0, 0, 0], &G[0, 0, 0],
                       &Rh[0, 0, 0], &dY[0, 0], bptt, &dG[0, 0, 0], &dGh[0, 0, 0], &dh[0, 0],
                       &dWx[0, 0], &dWh[0, 0], pdb, pdX, m, T, F, n, seq)
        fastbp_ftz_restore(csr)
