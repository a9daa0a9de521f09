/*
 * The single-message compression, written once and compiled once per ISA
 * that runs it: the 4x4 state held as four 128-bit rows; for the diagonal
 * half-round rows a, c, d are rotated so diagonals line up as columns. Its
 * compressions form one dependency chain (single inserts, proofs, the right
 * edge of batches), so it is tuned for latency rather than throughput, and
 * the rotations are what an ISA changes: SSE4.1 rotates by 12 and 7 with two
 * shifts and an OR, AVX-512VL with one instruction, one cycle less on the
 * critical path of every G function.
 *
 * This header is a template, not an interface: an ISA file (blake3_sse41.c,
 * blake3_avx512.c) defines the table below, then includes it once.
 *   ROW_TARGET     attribute giving the ISA, e.g. __attribute__((target("sse4.1")))
 *   ROWS_ENTRY     name of the rt_compress_fn to define
 *   row_rotr16(x), row_rotr12(x), row_rotr8(x), row_rotr7(x)
 *                  each 32-bit word of x rotated right by that many bits;
 *                  rows_rotr16_bytes and rows_rotr8_bytes below (one byte
 *                  shuffle each) may be named for the whole-byte ones
 * It defines loadu128 and storeu128 for the including file as well.
 */
#ifndef RT_BLAKE3_ROWS_H
#define RT_BLAKE3_ROWS_H

#include <immintrin.h>

#include "rt_blake3.h"

#define ROW_INLINE static inline __attribute__((always_inline)) ROW_TARGET

ROW_INLINE __m128i add32(__m128i a, __m128i b) { return _mm_add_epi32(a, b); }
ROW_INLINE __m128i xor128(__m128i a, __m128i b) { return _mm_xor_si128(a, b); }

ROW_INLINE __m128i loadu128(const void *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

ROW_INLINE void storeu128(void *p, __m128i x)
{
    _mm_storeu_si128((__m128i *)p, x);
}

/* Rotations by whole bytes as one byte shuffle: latency 1 wherever SSSE3
 * exists, which no rotate instruction beats. */
ROW_INLINE __m128i rows_rotr16_bytes(__m128i x)
{
    return _mm_shuffle_epi8(
        x, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
}

ROW_INLINE __m128i rows_rotr8_bytes(__m128i x)
{
    return _mm_shuffle_epi8(
        x, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
}

/* Picks words from two vectors with the float shuffle, which (unlike any
 * integer one) takes its two low lanes from `lo` and two high from `hi`. */
#define SHUFFLE2(lo, hi, imm)                                                  \
    _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(lo),                      \
                                    _mm_castsi128_ps(hi), (imm)))

ROW_INLINE void mix_rows(__m128i *a, __m128i *b, __m128i *c, __m128i *d,
                         __m128i x, __m128i y)
{
    /* b is the value computed last, so it is added last; the empty asm
     * stops GCC from reassociating to (b + x) + a, which puts two additions
     * after b on the critical path instead of one. */
    __m128i a_x = add32(*a, x);
    __asm__("" : "+x"(a_x));
    *a = add32(a_x, *b);
    *d = row_rotr16(xor128(*d, *a));
    *c = add32(*c, *d);
    *b = row_rotr12(xor128(*b, *c));
    __m128i a_y = add32(*a, y);
    __asm__("" : "+x"(a_y));
    *a = add32(a_y, *b);
    *d = row_rotr8(xor128(*d, *a));
    *c = add32(*c, *d);
    *b = row_rotr7(xor128(*b, *c));
}

/*
 * Line the diagonals up as columns by rotating rows a, c and d rather than
 * the usual b, c and d: b is the last value each G function produces, so
 * shuffling it would put a shuffle on the critical path. Afterwards lane i
 * holds diagonal G function i-1: (a[i-1], b[i], c[i+1], d[i+2]).
 */
ROW_INLINE void diagonalize(__m128i *a, __m128i *c, __m128i *d)
{
    *a = _mm_shuffle_epi32(*a, _MM_SHUFFLE(2, 1, 0, 3));
    *c = _mm_shuffle_epi32(*c, _MM_SHUFFLE(0, 3, 2, 1));
    *d = _mm_shuffle_epi32(*d, _MM_SHUFFLE(1, 0, 3, 2));
}

ROW_INLINE void undiagonalize(__m128i *a, __m128i *c, __m128i *d)
{
    *a = _mm_shuffle_epi32(*a, _MM_SHUFFLE(0, 3, 2, 1));
    *c = _mm_shuffle_epi32(*c, _MM_SHUFFLE(2, 1, 0, 3));
    *d = _mm_shuffle_epi32(*d, _MM_SHUFFLE(1, 0, 3, 2));
}

/* Diagonal G function i-1 runs in lane i: its message words move up a lane. */
ROW_INLINE __m128i diagonal_message(__m128i words)
{
    return _mm_shuffle_epi32(words, _MM_SHUFFLE(2, 1, 0, 3));
}

/*
 * The message of a round lives in four vectors in the order the G functions
 * consume it, with s the round's schedule:
 *   first  = (s0, s2, s4, s6)     second = (s1, s3, s5, s7)     (columns)
 *   third  = (s8, s10, s12, s14)  fourth = (s9, s11, s13, s15)  (diagonals)
 * The next round's schedule is s'[i] = s[perm[i]] with the spec's
 * permutation {2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8}; worked through, that
 * gives (F = first, S = second, T = third, U = fourth of the old round):
 *   first'  = (F1, S1, S3, F2)    second' = (F3, T1, F0, U2)
 *   third'  = (S0, T2, U0, U3)    fourth' = (U1, S2, T3, T0)
 */
ROW_INLINE void permute_message(__m128i *first, __m128i *second,
                                __m128i *third, __m128i *fourth)
{
    __m128i f = *first, s = *second, t = *third, u = *fourth;

    __m128i f1_f2_s1_s3 = SHUFFLE2(f, s, _MM_SHUFFLE(3, 1, 2, 1));
    *first = _mm_shuffle_epi32(f1_f2_s1_s3, _MM_SHUFFLE(1, 3, 2, 0));

    __m128i f3_f0_t1_t1 = SHUFFLE2(f, t, _MM_SHUFFLE(1, 1, 0, 3));
    __m128i f3_t1_f0 = _mm_shuffle_epi32(f3_f0_t1_t1, _MM_SHUFFLE(3, 1, 2, 0));
    __m128i u2_everywhere = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 2, 2, 2));
    *second = _mm_blend_epi16(f3_t1_f0, u2_everywhere, 0xC0);

    __m128i s0_s0_u0_u3 = SHUFFLE2(s, u, _MM_SHUFFLE(3, 0, 0, 0));
    __m128i t2_everywhere = _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 2, 2, 2));
    *third = _mm_blend_epi16(s0_s0_u0_u3, t2_everywhere, 0x0C);

    __m128i u1_u1_t3_t0 = SHUFFLE2(u, t, _MM_SHUFFLE(0, 3, 1, 1));
    __m128i s2_everywhere = _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 2, 2, 2));
    *fourth = _mm_blend_epi16(u1_u1_t3_t0, s2_everywhere, 0x0C);
}

ROW_TARGET void ROWS_ENTRY(uint32_t cv[8], const uint8_t block[64],
                           uint8_t block_len, uint64_t counter, uint8_t flags)
{
    __m128i a = loadu128(cv);
    __m128i b = loadu128(cv + 4);
    __m128i c = loadu128(rt_blake3_iv);
    __m128i d = _mm_setr_epi32((int)(uint32_t)counter,
                               (int)(uint32_t)(counter >> 32), block_len, flags);

    __m128i words0 = loadu128(block);
    __m128i words4 = loadu128(block + 16);
    __m128i words8 = loadu128(block + 32);
    __m128i words12 = loadu128(block + 48);
    __m128i first = SHUFFLE2(words0, words4, _MM_SHUFFLE(2, 0, 2, 0));
    __m128i second = SHUFFLE2(words0, words4, _MM_SHUFFLE(3, 1, 3, 1));
    __m128i third = SHUFFLE2(words8, words12, _MM_SHUFFLE(2, 0, 2, 0));
    __m128i fourth = SHUFFLE2(words8, words12, _MM_SHUFFLE(3, 1, 3, 1));

    for (int round = 0; round < 7; round++) {
        mix_rows(&a, &b, &c, &d, first, second);
        diagonalize(&a, &c, &d);
        mix_rows(&a, &b, &c, &d, diagonal_message(third),
                 diagonal_message(fourth));
        undiagonalize(&a, &c, &d);
        if (round < 6)
            permute_message(&first, &second, &third, &fourth);
    }

    storeu128(cv, xor128(a, c));
    storeu128(cv + 4, xor128(b, d));
}

#undef ROW_INLINE

#endif /* RT_BLAKE3_ROWS_H */
