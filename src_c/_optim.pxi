# ONE fused optimizer update over the flat parameter buffer.
#
# Per segment (one variable: a layer's W or b) the effective gradient is
#   g = clip_value(scale · (grad + 2·l2·p + l1·sign(p)))
# where scale comes from clipnorm (per variable, as Keras) or global_clipnorm.

# Positions in the ``hyper`` vector (fastbp/backends/contract.py HYPER lists the same names).
cdef enum:
    H_LR = 0
    H_BETA_1 = 1
    H_BETA_2 = 2
    H_EPSILON = 3
    H_WEIGHT_DECAY = 4
    H_MOMENTUM = 5
    H_NESTEROV = 6
    H_RHO = 7
    H_CLIPNORM = 8
    H_CLIPVALUE = 9
    H_GLOBAL_CLIPNORM = 10
    H_EPSILON_HAT = 11
    N_HYPER = 12


cdef extern from "_optim.h":
    # the element-wise updates (formulas there)
    double fastbp_sqnorm_f(const float* p, const float* grad, long n, float l1,
                           float l2x2) noexcept nogil
    double fastbp_sqnorm_d(const double* p, const double* grad, long n, double l1,
                           double l2x2) noexcept nogil
    void fastbp_update_f(int kind, float* p, const float* grad, float* s0, float* s1, long n,
                         float l1, float l2x2, float scale, float cv, float lr, float mom,
                         int nesterov, float b1, float b2, float eps, float rho, float step,
                         float ibc2, float decay) noexcept nogil
    void fastbp_update_d(int kind, double* p, const double* grad, double* s0, double* s1,
                         long n, double l1, double l2x2, double scale, double cv, double lr,
                         double mom, int nesterov, double b1, double b2, double eps, double rho,
                         double step, double ibc2, double decay) noexcept nogil


cdef double seg_sqnorm(const floating* p, const floating* g, Py_ssize_t a, Py_ssize_t b,
                       floating l1, floating l2x2) noexcept nogil:
    """Σ over [a, b) of the squared effective gradient (scale 1, no clip_value)."""
    if floating is float:
        return fastbp_sqnorm_f(p + a, g + a, b - a, l1, l2x2)
    else:
        return fastbp_sqnorm_d(p + a, g + a, b - a, l1, l2x2)


cdef struct StepCoef:
    # Adam's step-dependent coefficients, computed once per step (two pow() calls per
    # segment were ~2% of a digits step)
    double step  # lr / (1 - β1^t)
    double inv_sqrt_bc2  # 1 / √(1 - β2^t)
    double decay  # AdamW: 1 - lr·wd


cdef StepCoef step_coef(int kind, const double* h, double t) noexcept nogil:
    cdef StepCoef k
    k.step, k.inv_sqrt_bc2, k.decay = 0, 0, 1
    if kind == ADAM or kind == ADAMW:
        # libm's pow: Cython's ** on doubles goes through complex numbers (a negative base
        # to a fractional power), ~1% of a digits step in complex log/exp/division
        if h[H_EPSILON_HAT] != 0:  # ε on the uncorrected √v (optimizers.Adam)
            k.step = h[H_LR] * sqrt(1.0 - pow(h[H_BETA_2], t)) / (1.0 - pow(h[H_BETA_1], t))
            k.inv_sqrt_bc2 = 1.0
        else:
            k.step = h[H_LR] / (1.0 - pow(h[H_BETA_1], t))
            k.inv_sqrt_bc2 = 1.0 / sqrt(1.0 - pow(h[H_BETA_2], t))
        if kind == ADAMW:
            k.decay = 1.0 - h[H_LR] * h[H_WEIGHT_DECAY]
    return k


cdef void update_segment(int kind, floating* p, const floating* grad, floating* s0,
                         floating* s1, Py_ssize_t a, Py_ssize_t b, floating l1, floating l2x2,
                         floating scale, const double* h, StepCoef k) noexcept nogil:
    """The update of elements [a, b) with their effective gradient (l1, l2x2: the segment's
    regularization; scale: clipnorm's), by optimizer kind (_optim.h)."""
    cdef bint nesterov = h[H_NESTEROV] != 0
    if floating is float:
        fastbp_update_f(kind, p + a, grad + a, s0 + a, s1 + a, b - a, l1, l2x2, scale,
                        h[H_CLIPVALUE], h[H_LR], h[H_MOMENTUM], nesterov, h[H_BETA_1],
                        h[H_BETA_2], h[H_EPSILON], h[H_RHO], k.step, k.inv_sqrt_bc2, k.decay)
    else:
        fastbp_update_d(kind, p + a, grad + a, s0 + a, s1 + a, b - a, l1, l2x2, scale,
                        h[H_CLIPVALUE], h[H_LR], h[H_MOMENTUM], nesterov, h[H_BETA_1],
                        h[H_BETA_2], h[H_EPSILON], h[H_RHO], k.step, k.inv_sqrt_bc2, k.decay)


cdef void c_optimizer_step(int kind, floating* p, const floating* g, floating* s0,
                           floating* s1, const double* h, double t, const int64_t* seg,
                           const double* reg, Py_ssize_t nseg) noexcept nogil:
    cdef Py_ssize_t s
    cdef double norm2, scale = 1, clipnorm = h[H_CLIPNORM], gclip = h[H_GLOBAL_CLIPNORM]
    cdef StepCoef k = step_coef(kind, h, t)
    if gclip > 0:
        norm2 = 0
        for s in range(nseg):
            norm2 += seg_sqnorm(p, g, seg[2 * s], seg[2 * s + 1], <floating>reg[2 * s],
                                <floating>(2 * reg[2 * s + 1]))
        if norm2 > gclip * gclip:
            scale = gclip / sqrt(norm2)
    for s in range(nseg):
        if clipnorm > 0:
            norm2 = seg_sqnorm(p, g, seg[2 * s], seg[2 * s + 1], <floating>reg[2 * s],
                               <floating>(2 * reg[2 * s + 1]))
            scale = clipnorm / sqrt(norm2) if norm2 > clipnorm * clipnorm else 1
        update_segment(kind, p, g, s0, s1, seg[2 * s], seg[2 * s + 1], <floating>reg[2 * s],
                       <floating>(2 * reg[2 * s + 1]), <floating>scale, h, k)


def optimizer_step(int kind, floating[::1] params, const floating[::1] grads,
                   floating[:, ::1] state, const double[::1] hyper, double t,
                   const int64_t[:, ::1] segments, const double[:, ::1] seg_reg):
    """Fused update of params from grads over [start, end) segments (l1, l2 per segment).

    state (2, n): SGD velocity | RMSprop (ms, momentum) | Adam (m, v). t: step number ≥ 1.
    """
    cdef Py_ssize_t n = params.shape[0], nseg = segments.shape[0], s
    if kind < 0 or kind >= FASTBP_N_OPTIMIZERS:
        raise ValueError(f"kind must be an optimizer id in 0..{FASTBP_N_OPTIMIZERS - 1}, got {kind}")
    check_shape("grads", (grads.shape[0],), (n,))
    check_shape("state", (state.shape[0], state.shape[1]), (2, n))
    if hyper.shape[0] != N_HYPER:
        raise ValueError(f"hyper must have shape ({N_HYPER},), got ({hyper.shape[0]},)")
    if segments.shape[1] != 2 or (seg_reg.shape[0], seg_reg.shape[1]) != (nseg, 2):
        raise ValueError(f"segments must be (nseg, 2) int64 and seg_reg (nseg, 2), got "
                         f"({nseg}, {segments.shape[1]}) and ({seg_reg.shape[0]}, {seg_reg.shape[1]})")
    if t < 1:
        raise ValueError(f"t (step number) must be >= 1, got {t}")
    for s in range(nseg):
        if not 0 <= segments[s, 0] <= segments[s, 1] <= n:
            raise ValueError(f"segments[{s}] = {tuple(segments[s])} is outside [0, {n}]")
    if n == 0 or nseg == 0:
        return
    cdef unsigned int csr
    with nogil:
        csr = fastbp_ftz_on()
        c_optimizer_step(kind, &params[0], &grads[0], &state[0, 0], &state[1, 0], &hyper[0], t,
                         &segments[0, 0], &seg_reg[0, 0], nseg)
        fastbp_ftz_restore(csr)
