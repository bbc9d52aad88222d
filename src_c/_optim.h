/* The fused optimizer update of one segment of the flat parameter buffer (src_c/_optim.pxi
 * says which segments and with which coefficients), in C: with the arrays marked `restrict`
 * each update below is one simd loop; the same arithmetic in Cython, through pointers that may
 * alias, is 2.7x slower (Adam over digits' 4810 parameters: 4.1 µs against 1.6 µs on this
 * AVX-512 machine).
 *
 * Per element, with the effective gradient
 *   g = clip_value((grad + l2x2·p + l1·sign(p))·scale)      (plain: l1 = 0, no clip_value)
 * SGD (Keras): v = μv − lr·g; p += v (Nesterov: p += μv − lr·g); μ = 0: p −= lr·g, no v.
 * RMSprop (Keras): ms = ρ·ms + (1−ρ)·g²; inc = lr·g/√(ms+ε); p −= inc (or buf = μ·buf + inc;
 *   p −= buf).
 * Adam (Kingma & Ba, ε added to √v̂ as PyTorch): p ·= decay (AdamW's 1 − lr·wd);
 *   m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; p −= step·m/(√v·inv_sqrt_bc2 + ε) with
 *   step = lr/(1−β1^t), inv_sqrt_bc2 = 1/√(1−β2^t).
 * Adagrad (Keras): acc += g²; p −= lr·g/√(acc + ε).
 * State that decays geometrically (m, v, momentum of a weight whose gradient is exactly 0, e.g.
 * an always-zero input pixel) reaches subnormal numbers, ~100x slower on x86: values below the
 * smallest normal number are set to 0 (by the FPU's flush-to-zero mode on x86, else by a
 * compare and blend in the vector loop). Plain SGD
 * rounds as gemm_rows_sgd's epilogue (_gemm_rows.h): explicit FMAs on both sides. */
#ifndef FASTBP_OPTIM_H
#define FASTBP_OPTIM_H

#include <float.h>
#include <math.h>

/* The optimizers, X(NAME, ID) each, in the ids of fastbp/optimizers.py (a test checks that the
 * Cython module's OPTIMIZER_IDS, built from this list, equals the Python registry's); their
 * formulas are the branches of fastbp_update_body below. */
#define FASTBP_OPTIMIZERS(X) X(SGD, 0) X(RMSPROP, 1) X(ADAM, 2) X(ADAMW, 3) X(ADAGRAD, 4)

#define FASTBP_OPT_ENUM(NAME, ID) FASTBP_##NAME = ID,
#define FASTBP_OPT_NAME(NAME, ID) #NAME,
#define FASTBP_OPT_ID(NAME, ID) ID,
enum { FASTBP_OPTIMIZERS(FASTBP_OPT_ENUM) };
static const char* const fastbp_optimizer_names[] = {FASTBP_OPTIMIZERS(FASTBP_OPT_NAME)};
static const int fastbp_optimizer_ids[] = {FASTBP_OPTIMIZERS(FASTBP_OPT_ID)};
enum { FASTBP_N_OPTIMIZERS = sizeof(fastbp_optimizer_ids) / sizeof(fastbp_optimizer_ids[0]) };

/* On x86 every entry point runs its kernels with flush-to-zero and denormals-are-zero
 * (fastbp_ftz_on, _fastmath.h): the hardware flushes, and the compare and blend (a third of the
 * Adam loop's vector operations) would only repeat it. */
#if defined(__SSE2__)
#define FASTBP_FLUSHED(x, FABS, MIN) (x)
#else
#define FASTBP_FLUSHED(x, FABS, MIN) (FABS(x) >= (MIN) ? (x) : 0)
#endif

#define FASTBP_OPTIM(T, S, SQRT, FMA, FABS, MIN)                                             \
    static inline T fastbp_flush_##S(T x) { return FASTBP_FLUSHED(x, FABS, MIN); }           \
                                                                                             \
    static inline T fastbp_eff_grad_##S(int plain, T g, T p, T l1, T l2x2, T scale, T cv) {  \
        if (plain) return FMA(l2x2, p, g) * scale;                                           \
        g = FMA(l2x2, p, g);                                                                 \
        if (l1 != 0) g += p > 0 ? l1 : (p < 0 ? -l1 : 0);                                    \
        g *= scale;                                                                          \
        if (cv > 0) g = g > cv ? cv : (g < -cv ? -cv : g);                                   \
        return g;                                                                            \
    }                                                                                        \
                                                                                             \
    /* Σ g² over the segment's effective gradients (scale 1, no clip_value): for clipnorm */ \
    static double fastbp_sqnorm_##S(const T* restrict p, const T* restrict grad, long n,     \
                                    T l1, T l2x2) {                                          \
        double acc = 0;                                                                      \
        _Pragma("omp simd reduction(+:acc)") for (long i = 0; i < n; i++) {                  \
            T e = fastbp_eff_grad_##S(l1 == 0, grad[i], p[i], l1, l2x2, 1, 0);               \
            acc += e * e;                                                                    \
        }                                                                                    \
        return acc;                                                                          \
    }                                                                                        \
                                                                                             \
    /* The loops take `plain` as a constant (two copies of each): its selects out of the      \
       way, the plain loop vectorizes ~2x tighter */                                         \
    static inline __attribute__((always_inline)) void fastbp_update_body_##S(                \
        int plain, int kind, T* restrict p, const T* restrict grad, T* restrict s0,          \
        T* restrict s1, long n, T l1, T l2x2, T scale, T cv, T lr, T mom, int nesterov,      \
        T b1, T b2, T eps, T rho, T step, T ibc2, T decay) {                                 \
        if (kind == FASTBP_SGD && mom == 0) {                                                \
            _Pragma("omp simd") for (long i = 0; i < n; i++) {                               \
                T g = fastbp_eff_grad_##S(plain, grad[i], p[i], l1, l2x2, scale, cv);        \
                p[i] = FMA(-lr, g, p[i]);                                                    \
            }                                                                                \
        } else if (kind == FASTBP_SGD) {                                                     \
            _Pragma("omp simd") for (long i = 0; i < n; i++) {                               \
                T g = fastbp_eff_grad_##S(plain, grad[i], p[i], l1, l2x2, scale, cv);        \
                T v = fastbp_flush_##S(mom * s0[i] - lr * g);                                \
                s0[i] = v;                                                                   \
                p[i] += nesterov ? mom * v - lr * g : v;                                     \
            }                                                                                \
        } else if (kind == FASTBP_RMSPROP) {                                                 \
            _Pragma("omp simd") for (long i = 0; i < n; i++) {                               \
                T g = fastbp_eff_grad_##S(plain, grad[i], p[i], l1, l2x2, scale, cv);        \
                T ms = fastbp_flush_##S(rho * s0[i] + ((T)1 - rho) * g * g);                 \
                T inc = lr * g / SQRT(ms + eps);                                             \
                s0[i] = ms;                                                                  \
                if (mom > 0) {                                                               \
                    T buf = fastbp_flush_##S(mom * s1[i] + inc);                             \
                    s1[i] = buf;                                                             \
                    p[i] -= buf;                                                             \
                } else {                                                                     \
                    p[i] -= inc;                                                             \
                }                                                                            \
            }                                                                                \
        } else if (kind == FASTBP_ADAGRAD) {                                                 \
            _Pragma("omp simd") for (long i = 0; i < n; i++) {                               \
                T g = fastbp_eff_grad_##S(plain, grad[i], p[i], l1, l2x2, scale, cv);        \
                T acc = s0[i] + g * g;                                                       \
                s0[i] = acc;                                                                 \
                p[i] -= lr * g / SQRT(acc + eps);                                            \
            }                                                                                \
        } else if (kind == FASTBP_ADAM || kind == FASTBP_ADAMW) {                            \
            _Pragma("omp simd") for (long i = 0; i < n; i++) {                               \
                T g = fastbp_eff_grad_##S(plain, grad[i], p[i], l1, l2x2, scale, cv);        \
                T q = fastbp_flush_##S(p[i] * decay);                                        \
                T m = fastbp_flush_##S(b1 * s0[i] + ((T)1 - b1) * g);                        \
                T v = fastbp_flush_##S(b2 * s1[i] + ((T)1 - b2) * g * g);                    \
                s0[i] = m;                                                                   \
                s1[i] = v;                                                                   \
                p[i] = q - step * m / (SQRT(v) * ibc2 + eps);                                \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* One segment of n numbers (p, grad, s0, s1 point at its start); s0/s1: SGD's velocity, \
       RMSprop's ms and momentum buffer, Adam's m and v, Adagrad's accumulator; an unknown   \
       kind (refused at the API edge) changes nothing */                                     \
    static void fastbp_update_##S(int kind, T* restrict p, const T* restrict grad,           \
                                  T* restrict s0, T* restrict s1, long n, T l1, T l2x2,      \
                                  T scale, T cv, T lr, T mom, int nesterov, T b1, T b2,      \
                                  T eps, T rho, T step, T ibc2, T decay) {                   \
        if (l1 == 0 && !(cv > 0))                                                            \
            fastbp_update_body_##S(1, kind, p, grad, s0, s1, n, l1, l2x2, scale, cv, lr,     \
                                   mom, nesterov, b1, b2, eps, rho, step, ibc2, decay);      \
        else                                                                                 \
            fastbp_update_body_##S(0, kind, p, grad, s0, s1, n, l1, l2x2, scale, cv, lr,     \
                                   mom, nesterov, b1, b2, eps, rho, step, ibc2, decay);      \
    }

FASTBP_OPTIM(float, f, sqrtf, fmaf, fabsf, FLT_MIN)
FASTBP_OPTIM(double, d, sqrt, fma, fabs, DBL_MIN)

#endif
