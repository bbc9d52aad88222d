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
    N_HYPER = 11


cdef inline floating fsqrt(floating x) noexcept nogil:
    # sqrtf keeps float32 in single precision: sqrt() would round-trip through double
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef extern from "float.h":
    float FLT_MIN
    double DBL_MIN


cdef inline floating flush(floating x) noexcept nogil:
    # State that decays geometrically (Adam's m and v, momentum of weights whose gradient is
    # exactly 0, e.g. always-zero input pixels) reaches subnormal numbers, on which x86 float
    # arithmetic is ~100x slower: digits training slowed from 19 to 45 us/step. Values below
    # the smallest normal number are set to 0 (a vectorized compare-and-blend).
    if floating is float:
        return x if fabs(x) >= FLT_MIN else 0
    else:
        return x if fabs(x) >= DBL_MIN else 0


cdef inline floating eff_grad(floating g, floating p, floating l1, floating l2x2,
                              floating scale, floating cv) noexcept nogil:
    g = g + l2x2 * p
    if l1 != 0:
        g = g + (l1 if p > 0 else (-l1 if p < 0 else 0))
    g = g * scale
    if cv > 0:
        g = cv if g > cv else (-cv if g < -cv else g)
    return g


cdef double seg_sqnorm(const floating* p, const floating* g, Py_ssize_t a, Py_ssize_t b,
                       floating l1, floating l2x2) noexcept nogil:
    cdef double acc = 0
    cdef floating e
    cdef Py_ssize_t i
    for i in range(a, b):
        e = eff_grad(g[i], p[i], l1, l2x2, 1, 0)
        acc += e * e
    return acc


cdef inline floating ffma(floating a, floating b, floating c) noexcept nogil:
    # a·b + c rounded once, written out where another kernel must round the same way (GCC's
    # own contraction of a·b + c into an FMA is its choice, per expression)
    if floating is float:
        return fmaf(a, b, c)
    else:
        return fma(a, b, c)


cdef inline void sgd_one(floating* p, floating* v, Py_ssize_t i, floating g, floating lr,
                         floating mom, bint nesterov) noexcept nogil:
    # Keras: v = μv - lr·g; p += v (Nesterov: p += μv - lr·g); plain SGD (μ = 0) keeps no v.
    # Plain SGD rounds as gemm_rows_sgd's epilogue (fused into dW in the compiled loop).
    if mom == 0:
        p[i] = ffma(-lr, g, p[i])
    else:
        v[i] = flush(mom * v[i] - lr * g)
        p[i] += (mom * v[i] - lr * g) if nesterov else v[i]


cdef inline void rmsprop_one(floating* p, floating* ms, floating* buf, Py_ssize_t i, floating g,
                             floating lr, floating rho, floating eps, floating mom) noexcept nogil:
    # Keras: v = ρv + (1-ρ)g²; inc = lr·g/√(v+ε); p -= inc (or a momentum buffer of inc)
    cdef floating inc
    ms[i] = flush(rho * ms[i] + (<floating>1 - rho) * g * g)
    inc = lr * g / fsqrt(ms[i] + eps)
    if mom > 0:
        buf[i] = flush(mom * buf[i] + inc)
        p[i] -= buf[i]
    else:
        p[i] -= inc


cdef inline void adam_one(floating* p, floating* m, floating* v, Py_ssize_t i, floating g,
                          floating b1, floating b2, floating eps, floating step,
                          floating inv_sqrt_bc2, floating decay) noexcept nogil:
    # Kingma & Ba Alg. 1 (eps added to √v̂ as PyTorch): p -= lr/bc1 · m / (√v/√bc2 + ε);
    # AdamW's decoupled decay p -= lr·wd·p comes first
    p[i] = flush(p[i] * decay)
    m[i] = flush(b1 * m[i] + (<floating>1 - b1) * g)
    v[i] = flush(b2 * v[i] + (<floating>1 - b2) * g * g)
    p[i] -= step * m[i] / (fsqrt(v[i]) * inv_sqrt_bc2 + eps)


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
        k.step = h[H_LR] / (1.0 - h[H_BETA_1] ** t)
        k.inv_sqrt_bc2 = 1.0 / sqrt(1.0 - h[H_BETA_2] ** t)
        if kind == ADAMW:
            k.decay = 1.0 - h[H_LR] * h[H_WEIGHT_DECAY]
    return k


cdef void update_segment(int kind, floating* p, const floating* grad, floating* s0,
                         floating* s1, Py_ssize_t a, Py_ssize_t b, floating l1, floating l2x2,
                         floating scale, const double* h, StepCoef k) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating lr = h[H_LR], cv = h[H_CLIPVALUE], mom = h[H_MOMENTUM]
    cdef floating b1 = h[H_BETA_1], b2 = h[H_BETA_2], eps = h[H_EPSILON], rho = h[H_RHO]
    cdef floating decay = k.decay, step = k.step, inv_sqrt_bc2 = k.inv_sqrt_bc2
    cdef bint nesterov = h[H_NESTEROV] != 0
    # Without L1 and clipvalue the effective gradient is (grad + 2·l2·p)·scale, the same
    # arithmetic as eff_grad's: a loop of its own, free of their selects, vectorizes ~2x tighter
    # (Adam over digits' 4810 parameters: 6.7 -> 3 µs).
    cdef bint plain = l1 == 0 and not cv > 0
    if kind == SGD:
        if plain:
            for i in range(a, b):
                sgd_one(p, s0, i, ffma(l2x2, p[i], grad[i]) * scale, lr, mom, nesterov)
        else:
            for i in range(a, b):
                sgd_one(p, s0, i, eff_grad(grad[i], p[i], l1, l2x2, scale, cv), lr, mom, nesterov)
    elif kind == RMSPROP:
        if plain:
            for i in range(a, b):
                rmsprop_one(p, s0, s1, i, (grad[i] + l2x2 * p[i]) * scale, lr, rho, eps, mom)
        else:
            for i in range(a, b):
                rmsprop_one(p, s0, s1, i, eff_grad(grad[i], p[i], l1, l2x2, scale, cv), lr, rho,
                            eps, mom)
    elif plain:
        for i in range(a, b):
            adam_one(p, s0, s1, i, (grad[i] + l2x2 * p[i]) * scale, b1, b2, eps, step,
                     inv_sqrt_bc2, decay)
    else:
        for i in range(a, b):
            adam_one(p, s0, s1, i, eff_grad(grad[i], p[i], l1, l2x2, scale, cv), b1, b2, eps,
                     step, inv_sqrt_bc2, decay)


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
    if kind < SGD or kind > ADAMW:
        raise ValueError(f"kind must be an optimizer id in 0..3, got {kind}")
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
