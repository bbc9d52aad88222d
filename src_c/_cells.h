/* Element-wise steps of the LSTM and GRU cells for one batch row of n units (see
 * src_c/_rnn.pxi). In C rather than Cython: the row's gate, state and gradient arrays are
 * distinct, which `restrict` tells the compiler, and `omp simd` then vectorizes the
 * transcendental functions of _fastmath.h (through Cython's pointers, which may alias, GCC
 * leaves these loops scalar: an LSTM forward 3x slower). */
#ifndef FASTBP_CELLS_H
#define FASTBP_CELLS_H

#include <math.h>
#include <string.h>
#include "_fastmath.h"

/* The loop of lstm_fwd_row with the bias terms BI..BO of unit j (b[..] or 0). */
#define FASTBP_LSTM_FWD(T, EXP, TANH, BI, BF, BG, BO)                                       \
    _Pragma("omp simd") for (long j = 0; j < n; j++) {                                      \
        T gi = (T)1 / ((T)1 + EXP(-(g[j] + BI)));                                            \
        T gf = (T)1 / ((T)1 + EXP(-(g[s + j] + BF)));                                        \
        T gg = TANH(g[2 * s + j] + BG);                                                      \
        T go = (T)1 / ((T)1 + EXP(-(g[3 * s + j] + BO)));                                    \
        g[j] = gi; g[s + j] = gf; g[2 * s + j] = gg; g[3 * s + j] = go;                      \
        T cj = gf * cp[j] + gi * gg;                                                         \
        c[j] = cj;                                                                           \
        h[j] = go * TANH(cj);                                                                \
    }

/* dst = src, or 0 where src is NULL. Kept out of the cells' simd loops: a masked vector load
 * from NULL + j (what GCC made of `y ? y[j] : 0` there) has all its lanes masked off but still
 * costs a fault-suppression microcode assist per vector (38% of the LSTM backward's time). */
#define FASTBP_COPY(T, S)                                                                    \
    static inline void fastbp_copy_or_zero_##S(T* restrict dst, const T* restrict src,      \
                                               long n) {                                     \
        if (src) memcpy(dst, src, n * sizeof(T));                                            \
        else memset(dst, 0, n * sizeof(T));                                                  \
    }

#define FASTBP_CELLS(T, S, EXP, TANH)                                                        \
    /* n units of g = [i f g o] pre-activations, gate blocks s apart (+ b, laid out alike: the \
       bias is added here, not by a pass over all steps' projections) -> activations;        \
       c = f*cp + i*g; h = o*tanh(c) */                                                      \
    static inline void lstm_fwd_row_##S(T* restrict g, const T* restrict b,                 \
                                        const T* restrict cp, T* restrict c,                \
                                        T* restrict h, long n, long s) {                    \
        if (b) {                                                                             \
            FASTBP_LSTM_FWD(T, EXP, TANH, b[j], b[s + j], b[2 * s + j], b[3 * s + j])        \
        } else {                                                                             \
            FASTBP_LSTM_FWD(T, EXP, TANH, (T)0, (T)0, (T)0, (T)0)                            \
        }                                                                                    \
    }                                                                                        \
    /* d = dL/d(gate pre-activations), gate blocks of g and d s apart; dh in: dL/dh_t, out:  \
       dY_{t-1} row (y, or 0 if NULL);                                                       \
       dc in: dL/dc_t from step t+1, out: dL/dc_{t-1} (0 if stop) */                         \
    static inline void lstm_bwd_row_##S(const T* restrict g, const T* restrict c,            \
                                        const T* restrict cp, const T* restrict y,           \
                                        T* restrict dh, T* restrict dc, T* restrict d,       \
                                        long n, long s, int stop) {                          \
        _Pragma("omp simd") for (long j = 0; j < n; j++) {                                  \
            T gi = g[j], gf = g[s + j], gg = g[2 * s + j], go = g[3 * s + j];                \
            T tc = TANH(c[j]);                                                               \
            T dht = dh[j];                                                                   \
            T dct = dc[j] + dht * go * ((T)1 - tc * tc);                                     \
            d[j] = dct * gg * gi * ((T)1 - gi);                                              \
            d[s + j] = dct * cp[j] * gf * ((T)1 - gf);                                       \
            d[2 * s + j] = dct * gi * ((T)1 - gg * gg);                                      \
            d[3 * s + j] = dht * tc * go * ((T)1 - go);                                      \
            dc[j] = stop ? (T)0 : dct * gf;                                                  \
        }                                                                                    \
        fastbp_copy_or_zero_##S(dh, y, n);                                                   \
    }                                                                                        \
    /* s = h_{t-1}·Wh + b_rec; g = input-side pre-activations -> [z r hh]; rh = s_h; the   \
       gate blocks of g and s ld apart */                                                    \
    static inline void gru_fwd_row_##S(T* restrict g, const T* restrict s,                  \
                                       const T* restrict hp, T* restrict rh,                 \
                                       T* restrict h, long n, long ld) {                     \
        _Pragma("omp simd") for (long j = 0; j < n; j++) {                                  \
            T z = (T)1 / ((T)1 + EXP(-(g[j] + s[j])));                                       \
            T r = (T)1 / ((T)1 + EXP(-(g[ld + j] + s[ld + j])));                             \
            T hh = TANH(g[2 * ld + j] + r * s[2 * ld + j]);                                  \
            g[j] = z; g[ld + j] = r; g[2 * ld + j] = hh;                                     \
            rh[j] = s[2 * ld + j];                                                           \
            h[j] = z * hp[j] + ((T)1 - z) * hh;                                              \
        }                                                                                    \
    }                                                                                        \
    /* d, e = input-side / recurrent-side gradients (gate blocks of g, d, e ld apart);      \
       dh in: dL/dh_t, out: dY_{t-1} row + dh*z (the GEMM adds e·Whᵀ) */                     \
    static inline void gru_bwd_row_##S(const T* restrict g, const T* restrict hp,            \
                                       const T* restrict rh, const T* restrict y,            \
                                       T* restrict dh, T* restrict d, T* restrict e,         \
                                       long n, long ld, int stop) {                          \
        _Pragma("omp simd") for (long j = 0; j < n; j++) {                                  \
            T z = g[j], r = g[ld + j], hh = g[2 * ld + j];                                   \
            T dht = dh[j];                                                                   \
            T dz = dht * (hp[j] - hh) * z * ((T)1 - z);                                      \
            T dhh = dht * ((T)1 - z) * ((T)1 - hh * hh);                                     \
            T dr = dhh * rh[j] * r * ((T)1 - r);                                             \
            d[j] = dz; d[ld + j] = dr; d[2 * ld + j] = dhh;                                  \
            e[j] = dz; e[ld + j] = dr; e[2 * ld + j] = dhh * r;                              \
            dh[j] = stop ? (T)0 : dht * z;                                                   \
        }                                                                                    \
        if (y) {                                                                             \
            _Pragma("omp simd") for (long j = 0; j < n; j++) dh[j] += y[j];                  \
        }                                                                                    \
    }                                                                                        \
    /* out[j] = sum over rows of A[r, j] (rows lda apart): the bias gradients of a sequence */\
    static inline void col_sums_##S(const T* restrict A, T* restrict out, long rows,        \
                                    long cols, long lda) {                                   \
        memset(out, 0, cols * sizeof(T));                                                    \
        for (long r = 0; r < rows; r++) {                                                    \
            _Pragma("omp simd") for (long j = 0; j < cols; j++) out[j] += A[r * lda + j];    \
        }                                                                                    \
    }

FASTBP_COPY(float, f)
FASTBP_COPY(double, d)
FASTBP_CELLS(float, f, fastbp_expf, fastbp_tanhf)
FASTBP_CELLS(double, d, fastbp_exp, fastbp_tanh)

#endif
