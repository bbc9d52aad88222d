/* Float32 products C = alpha·A·B + beta·C (row-major) whose A is mostly zeros, with only A's
 * nonzero numbers multiplied in. Pixels are often half zeros or more (scikit-learn's digits
 * 49%, MNIST 81%), and so are a ReLU layer's outputs: a first layer's forward X·W then does
 * half the multiply-adds or fewer.
 *
 * Each row of A is compared with 0 a vector at a time into a 64-bit mask per 64 columns; the
 * loop walks the set bits (lowest first) and adds A[i, p]·B[p, :] for each, so every element of
 * C is gemm_rows's FMA chain (_gemm_rows.h: ascending p from 0) with the zero terms left out:
 * the same numbers where B is finite (0·inf would have given NaN), up to the sign of a zero.
 * NaN counts as nonzero (the compare is "not equal, or unordered").
 *
 * Unlike gemm_rows, each B row loaded serves one row of A (rows of A share few nonzero columns:
 * a union of 2 or 4 digits rows is 64-71% dense, no faster), so this kernel is bound by loads,
 * not FMAs, and wins only where A is sparse enough and B is read from L1 (measured, one row of
 * C by up to 4 vectors at a time, best of 15 runs, vs gemm_rows): 32x64 by 64x64 at density
 * 0.3 0.47x the time, 0.5 0.70x, 0.6 0.92x, 0.7 1.0x; by 64x256 (64 KB of B, in L2) 0.3 0.50x,
 * 0.5 0.96x; digits rows 32x64 by 64x64 0.71-0.78x; MNIST rows (0.19) 10x784 by 784x30 0.53-0.64x;
 * at 32 columns (two vectors, where gemm_rows takes 8 rows at a time) digits 1.1x, and 1.3-1.8x
 * at 10. Hence: density <= 0.55 with B in L1 and >= 48 columns, else <= 0.3. */
#ifndef FASTBP_SPARSE_ROWS_H
#define FASTBP_SPARSE_ROWS_H

#include "_gemm_rows.h"

#if FASTBP_GEMM_ROWS
#include <stdint.h>
#include <string.h>

/* most mask words (64 columns of a row each) of an A the kernel takes: 8 KB on the stack */
#define FASTBP_SPARSE_WORDS 1024

/* 0: never take this kernel (tests compare both paths) */
static int fastbp_sparse_rows_on = 1;

/* the lanes of a 16-wide vector below `left` (all 16 from 16 on, none at 0 or less) */
static inline __mmask16 fastbp_sp_lanes(long left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

/* the 64-bit masks of the nonzero numbers of a row of K (K / 64 words, rounded up); returns
   how many there are */
static inline long fastbp_nz_row_f(const float* a, long K, uint64_t* mask) {
    const __m512 z = _mm512_setzero_ps();
    long nnz = 0, w = 0;
    for (; w < K / 64; w++) { /* whole words: four unmasked compares */
        const float* q = a + w * 64;
        uint64_t m = (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(q), z, _CMP_NEQ_UQ) |
                     (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(q + 16), z, _CMP_NEQ_UQ) << 16 |
                     (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(q + 32), z, _CMP_NEQ_UQ) << 32 |
                     (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(q + 48), z, _CMP_NEQ_UQ) << 48;
        mask[w] = m;
        nnz += __builtin_popcountll(m);
    }
    if (w * 64 < K) { /* the row's last K % 64 numbers, masked loads */
        uint64_t m = 0;
        for (long v = 0; w * 64 + 16 * v < K; v++) {
            __mmask16 lm = fastbp_sp_lanes(K - w * 64 - 16 * v);
            __m512 x = _mm512_maskz_loadu_ps(lm, a + w * 64 + 16 * v);
            m |= (uint64_t)_mm512_mask_cmp_ps_mask(lm, x, z, _CMP_NEQ_UQ) << (16 * v);
        }
        mask[w] = m;
        nnz += __builtin_popcountll(m);
    }
    return nnz;
}

/* row a of A (its masks m, words of them) times B's columns [0, NV·16) (the last vector masked
   by last) into row c of C */
static inline __attribute__((always_inline)) void sparse_row_f(
    const int NV, long words, const float* a, const uint64_t* m, const float* B, long ldb,
    float alpha, float beta, float* c, __mmask16 last) {
    const __mmask16 full = (__mmask16)0xFFFF;
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (long w = 0; w < words; w++) {
        const float* bw = B + w * 64 * ldb;
        const float* aw = a + w * 64;
        for (uint64_t x = m[w]; x; x = _blsr_u64(x)) {
            long p = (long)_tzcnt_u64(x);
            const float* b = bw + p * ldb;
            __m512 v = _mm512_set1_ps(aw[p]);
            c0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(NV == 1 ? last : full, b), c0);
            if (NV > 1) c1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(NV == 2 ? last : full, b + 16), c1);
            if (NV > 2) c2 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(NV == 3 ? last : full, b + 32), c2);
            if (NV > 3) c3 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(last, b + 48), c3);
        }
    }
    __m512 acc[4] = {c0, c1, c2, c3};
    for (int v = 0; v < NV; v++) {
        __mmask16 mk = v == NV - 1 ? last : full;
        __m512 out = _mm512_mul_ps(_mm512_set1_ps(alpha), acc[v]);
        if (beta != 0) /* else C may hold NaN: never read it */
            out = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mk, c + 16 * v), out);
        _mm512_mask_storeu_ps(c + 16 * v, mk, out);
    }
}

/* C(M, N) = alpha·A·B + beta·C through the zero-skipping kernel where A (M, K) is sparse enough
   (see the top of this file); returns 0, having written nothing, where it is not (the caller
   then runs gemm_rows) */
static int fastbp_sparse_gemm_f(long M, long N, long K, float alpha, const float* A, long lda,
                                const float* B, long ldb, float beta, float* C, long ldc) {
    uint64_t masks[FASTBP_SPARSE_WORDS];
    const long words = (K + 63) / 64;
    const double most = N >= 48 && K * N <= 8192 ? 0.55 : 0.3;
    if (!fastbp_sparse_rows_on || words > FASTBP_SPARSE_WORDS)
        return 0;
    /* rows in chunks whose masks fit the buffer (MNIST's 784 inputs: 78 rows); the first
       chunk decides, before anything is written, and the rest follow it */
    const long chunk = FASTBP_SPARSE_WORDS / words;
    for (long i0 = 0; i0 < M; i0 += chunk) {
        const long rows = M - i0 < chunk ? M - i0 : chunk;
        long nnz = 0;
        for (long i = 0; i < rows; i++) {
            nnz += fastbp_nz_row_f(A + (i0 + i) * lda, K, masks + i * words);
            /* a dense A (most inputs; ReLU layers' half zeros against the 0.3 limit) is known
               from its first rows (the densest digits row is 0.66 dense, MNIST's 0.39) */
            if (i0 == 0 && i == 1 && nnz > (most + 0.15) * (double)(2 * K))
                return 0;
        }
        if (i0 == 0 && nnz > most * (double)(rows * K))
            return 0;
        for (long j0 = 0; j0 < N; j0 += 64) {
            const long cols = N - j0 < 64 ? N - j0 : 64;
            const int nv = (int)((cols + 15) / 16);
            const __mmask16 last = fastbp_sp_lanes(cols - 16 * (nv - 1));
            for (long i = 0; i < rows; i++) {
                const float* a = A + (i0 + i) * lda;
                const uint64_t* m = masks + i * words;
                float* c = C + (i0 + i) * ldc + j0;
                if (nv == 4)
                    sparse_row_f(4, words, a, m, B + j0, ldb, alpha, beta, c, last);
                else if (nv == 3)
                    sparse_row_f(3, words, a, m, B + j0, ldb, alpha, beta, c, last);
                else if (nv == 2)
                    sparse_row_f(2, words, a, m, B + j0, ldb, alpha, beta, c, last);
                else
                    sparse_row_f(1, words, a, m, B + j0, ldb, alpha, beta, c, last);
            }
        }
    }
    return 1;
}

/* --- C(M, N) = alpha·Aᵀ·B + beta·C, A stored (K, M) with K <= 32: a layer's dW = Xᵀ·dZ ---
 * Here a row of C (one input feature) sums over the batch, at most 32 terms: one B row per
 * nonzero term (as above) would leave too little to gain (measured: even with gemm_rows).
 * Instead the features are taken four at a time, as gemm_rows does, but over the batch rows
 * where any of the four is nonzero, each B row loaded serving four rows of C: a feature zero
 * in the whole batch (18% of digits' per batch of 32) costs nothing, and four sparse features
 * together cost what their union does. Neighbouring pixels are not sparse together (a union of
 * four adjacent digits pixels is 95% dense), so the features are grouped in order of their
 * batch counts (counting sort): the sparsest four together, and so on. */

/* rows f[0..RB) of C, columns [0, NV·16) (the last vector masked by last), over the batch rows
   in mask u (ascending) */
static inline __attribute__((always_inline)) void sparse_cols_block_f(
    const int RB, const int NV, uint32_t u, const float* A, long lda, const int* f,
    const float* B, long ldb, float alpha, float beta, float* C, long ldc, __mmask16 last,
    int sgd, float lr) {
    const __mmask16 full = (__mmask16)0xFFFF;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
    __m512 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512 c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    const long f0 = f[0], f1 = RB > 1 ? f[1] : 0, f2 = RB > 2 ? f[2] : 0, f3 = RB > 3 ? f[3] : 0;
    for (; u; u = _blsr_u32(u)) {
        const long p = (long)_tzcnt_u32(u);
        const float* b = B + p * ldb;
        const float* a = A + p * lda;
        __m512 b0 = _mm512_maskz_loadu_ps(NV == 1 ? last : full, b), b1 = b0, b2 = b0, b3 = b0;
        if (NV > 1) b1 = _mm512_maskz_loadu_ps(NV == 2 ? last : full, b + 16);
        if (NV > 2) b2 = _mm512_maskz_loadu_ps(NV == 3 ? last : full, b + 32);
        if (NV > 3) b3 = _mm512_maskz_loadu_ps(last, b + 48);
        __m512 v0 = _mm512_set1_ps(a[f0]), v1 = v0, v2 = v0, v3 = v0;
        if (RB > 1) v1 = _mm512_set1_ps(a[f1]);
        if (RB > 2) v2 = _mm512_set1_ps(a[f2]);
        if (RB > 3) v3 = _mm512_set1_ps(a[f3]);
#define FASTBP_SC_ROW(r)                                                                       \
    do {                                                                                       \
        c##r##0 = _mm512_fmadd_ps(v##r, b0, c##r##0);                                          \
        if (NV > 1) c##r##1 = _mm512_fmadd_ps(v##r, b1, c##r##1);                              \
        if (NV > 2) c##r##2 = _mm512_fmadd_ps(v##r, b2, c##r##2);                              \
        if (NV > 3) c##r##3 = _mm512_fmadd_ps(v##r, b3, c##r##3);                              \
    } while (0)
        FASTBP_SC_ROW(0);
        if (RB > 1) FASTBP_SC_ROW(1);
        if (RB > 2) FASTBP_SC_ROW(2);
        if (RB > 3) FASTBP_SC_ROW(3);
#undef FASTBP_SC_ROW
    }
    __m512 acc[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
                        {c30, c31, c32, c33}};
    /* the rows' old values all read before any store: features in pixel order are often
       neighbours, and a masked store's lanes past a row's end overlap the next row's first
       load, which then waits for the store (as in gemm_rows) */
    __m512 old[4][4];
    if (NV <= 2 && (sgd || beta != 0))
        for (int r = 0; r < RB; r++)
            for (int v = 0; v < NV; v++)
                old[r][v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : full,
                                                  C + (long)f[r] * ldc + 16 * v);
    for (int r = 0; r < RB; r++) {
        float* c = C + (long)f[r] * ldc;
        for (int v = 0; v < NV; v++) {
            __m512 out = _mm512_mul_ps(_mm512_set1_ps(alpha), acc[r][v]);
            if (NV > 2 && (sgd || beta != 0)) /* wide rows: the loads where they are used */
                old[r][v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : full, c + 16 * v);
            if (sgd) /* C is W: W − lr·(g + beta·W), rounded as gemm_rows's sgd epilogue */
                out = _mm512_fnmadd_ps(_mm512_set1_ps(lr),
                                       _mm512_fmadd_ps(_mm512_set1_ps(beta), old[r][v], out),
                                       old[r][v]);
            else if (beta != 0)
                out = _mm512_fmadd_ps(_mm512_set1_ps(beta), old[r][v], out);
            _mm512_mask_storeu_ps(c + 16 * v, v == NV - 1 ? last : full, out);
        }
    }
}

/* most features (rows of C) the transposed kernel takes: its masks and order on the stack */
#define FASTBP_SPARSE_COLS 1024

/* C(M, N) = alpha·Aᵀ·B + beta·C through the grouped kernel where A (K, M) is sparse in the way
   above; returns 0, having written nothing, where it is not (the caller runs gemm_rows) */
static int fastbp_sparse_gemm_tn_f(long M, long N, long K, float alpha, const float* A,
                                   long lda, const float* B, long ldb, float beta, float* C,
                                   long ldc, int sgd, float lr) {
    uint32_t cm[FASTBP_SPARSE_COLS];
    int order[FASTBP_SPARSE_COLS + 16], tmp[FASTBP_SPARSE_COLS + 16], start[34] = {0};
    if (!fastbp_sparse_rows_on || K > 32 || M < 1 || M > FASTBP_SPARSE_COLS)
        return 0;
    /* each feature's batch rows: bit p of cm[j] where A[p, j] != 0; 64 features (four vectors
       of masks, four independent chains) per pass over the batch */
    long nnz = 0;
    for (long j0 = 0; j0 < M; j0 += 64) {
        __mmask16 lm[4];
        __m512i w[4];
        for (int v = 0; v < 4; v++) {
            lm[v] = fastbp_sp_lanes(M - j0 - 16 * v);
            w[v] = _mm512_setzero_si512();
        }
        for (long p = 0; p < K; p++) {
            const __m512i bit = _mm512_set1_epi32((int)(1u << p));
            for (int v = 0; v < 4; v++) {
                __m512 x = _mm512_maskz_loadu_ps(lm[v], A + p * lda + j0 + 16 * v);
                __mmask16 nz = _mm512_mask_cmp_ps_mask(lm[v], x, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                w[v] = _mm512_mask_or_epi32(w[v], nz, w[v], bit);
            }
        }
        for (int v = 0; v < 4; v++) {
            _mm512_mask_storeu_epi32(cm + j0 + 16 * v, lm[v], w[v]);
            nnz += _mm512_reduce_add_epi32(_mm512_popcnt_epi32(w[v]));
        }
        /* a dense A (most inputs and hidden layers) is known from its first features */
        if (j0 == 0 && M > 64 && nnz > 0.8 * (double)(64 * K))
            return 0;
    }
    /* features zero in the whole batch are what the grouping feeds on (digits: 11-12 of 64);
       with few of them (A's zeros spread evenly, a ReLU layer's: 1.03x the time) or below 48
       columns (two vectors, where gemm_rows takes 8 rows at a time: digits' 64x30 by 32 1.075x)
       only a density of 0.3 or less gains */
    long empty = 0;
    for (long j = 0; j < M; j++)
        empty += cm[j] == 0;
    if (nnz > (N >= 48 && 16 * empty >= M ? 0.55 : 0.3) * (double)(M * K))
        return 0;
    /* order: the features zero in the whole batch, then the others by their counts (stable
       counting sort: digits 0.77x the dense time sorted, 0.85x in pixel order), or where there
       are many (MNIST's 784 inputs) in pixel order (the counters' increments wait on each
       other: a third of the time), partitioned by vector compresses into registers and whole-
       vector stores (the buffer has 16 spare entries) */
    if (M <= 256) {
        for (long j = 0; j < M; j++)
            start[__builtin_popcount(cm[j]) + 1]++;
        for (int c = 1; c < 34; c++)
            start[c] += start[c - 1];
        for (long j = 0; j < M; j++)
            order[start[__builtin_popcount(cm[j])]++] = (int)j;
    } else {
        long z = 0, q = empty;
        for (long j0 = 0; j0 < M; j0 += 16) {
            const __mmask16 lm = fastbp_sp_lanes(M - j0);
            const __m512i idx = _mm512_add_epi32(
                _mm512_set1_epi32((int)j0),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
            const __mmask16 nz = _mm512_mask_test_epi32_mask(
                lm, _mm512_maskz_loadu_epi32(lm, cm + j0), _mm512_set1_epi32(-1));
            const __mmask16 zr = (__mmask16)(lm & ~nz);
            /* zeros go below `empty`, the rest from it: a store's spill past its count is
               overwritten by the next (the nonzero side's last spill lands in the spare) */
            _mm512_storeu_si512(tmp + z, _mm512_maskz_compress_epi32(zr, idx));
            z += __builtin_popcount(zr);
            _mm512_storeu_si512(order + q, _mm512_maskz_compress_epi32(nz, idx));
            q += __builtin_popcount(nz);
        }
        memcpy(order, tmp, empty * sizeof(int));
    }
    order[M] = order[M + 1] = order[M + 2] = order[M - 1];
    /* groups of features zero in the whole batch: W unchanged under plain SGD without L2 */
    const long first = sgd && beta == 0 ? empty / 4 * 4 : 0;
    for (long j0 = 0; j0 < N; j0 += 64) {
        const long cols = N - j0 < 64 ? N - j0 : 64;
        const int nv = (int)((cols + 15) / 16);
        const __mmask16 last = fastbp_sp_lanes(cols - 16 * (nv - 1));
        for (long g = first; g < M; g += 4) {
            const int* f = order + g;
            const int rb = M - g >= 4 ? 4 : (int)(M - g);
            const uint32_t u = cm[f[0]] | cm[f[1]] | cm[f[2]] | cm[f[3]];
            _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++) {
                int krb = k / 4 + 1, knv = k % 4 + 1;
                if (krb == rb && knv == nv)
                    sparse_cols_block_f(krb, knv, u, A, lda, f, B + j0, ldb, alpha, beta,
                                        C + j0, ldc, last, sgd, lr);
            }
        }
    }
    return 1;
}

#else
static int fastbp_sparse_rows_on = 0;
static int fastbp_sparse_gemm_f(long M, long N, long K, float alpha, const float* A, long lda,
                                const float* B, long ldb, float beta, float* C, long ldc) {
    return 0;
}
static int fastbp_sparse_gemm_tn_f(long M, long N, long K, float alpha, const float* A,
                                   long lda, const float* B, long ldb, float beta, float* C,
                                   long ldc, int sgd, float lr) {
    return 0;
}
#endif

#endif
