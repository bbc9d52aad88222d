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

/* most mask words (64 columns of a row each) of an A the kernel takes: 8 KB on the stack */
#define FASTBP_SPARSE_WORDS 1024

/* 0: never take this kernel (tests compare both paths) */
static int fastbp_sparse_rows_on = 1;

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
            long left = K - w * 64 - 16 * v;
            __mmask16 lm = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
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
    long nnz = 0;
    if (!fastbp_sparse_rows_on || M * words > FASTBP_SPARSE_WORDS)
        return 0;
    for (long i = 0; i < M; i++) {
        nnz += fastbp_nz_row_f(A + i * lda, K, masks + i * words);
        /* a dense A (most inputs and hidden layers) is known from its first rows */
        if (i == 1 && nnz > 0.8 * (double)(2 * K))
            return 0;
    }
    if (nnz > most * (double)(M * K))
        return 0;
    for (long j0 = 0; j0 < N; j0 += 64) {
        const long cols = N - j0 < 64 ? N - j0 : 64;
        const int nv = (int)((cols + 15) / 16);
        const __mmask16 last = (__mmask16)((1u << (cols - 16 * (nv - 1))) - 1);
        for (long i = 0; i < M; i++) {
            const float* a = A + i * lda;
            const uint64_t* m = masks + i * words;
            float* c = C + i * ldc + j0;
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
    return 1;
}

#else
static int fastbp_sparse_rows_on = 0;
static int fastbp_sparse_gemm_f(long M, long N, long K, float alpha, const float* A, long lda,
                                const float* B, long ldb, float beta, float* C, long ldc) {
    return 0;
}
#endif

#endif
