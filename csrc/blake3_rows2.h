/*
 * Two independent single-message compressions at once: blake3_rows.h's
 * row-wise compression with each 128-bit row widened to 256 bits, message A
 * in the low half and message B in the high half. Every instruction the
 * rows use acts on each 128-bit half alone (the word and byte shuffles, the
 * float shuffle that picks words from two vectors, the 16-bit blend), so the
 * wide version runs the same instruction sequence as one compression: where
 * one compression's dependency chain leaves the vector units idle, the
 * second one costs almost nothing. A single insert uses it to hash a
 * message block the next insert will need beside a block of its own chain
 * (tree.c, append_one).
 *
 * Like blake3_rows.h, a template: an ISA file defines
 *   ROW2_TARGET    attribute giving the ISA (AVX2 at least)
 *   ROWS2_ENTRY    name of the rt_compress2_fn to define
 *   row2_rotr12(x), row2_rotr7(x)   each 32-bit word of x rotated right
 * then includes it once.
 */
#ifndef RT_BLAKE3_ROWS2_H
#define RT_BLAKE3_ROWS2_H

#include <immintrin.h>

#include "rt_blake3.h"

#define ROW2_INLINE static inline __attribute__((always_inline)) ROW2_TARGET

ROW2_INLINE __m256i add2(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
ROW2_INLINE __m256i xor2(__m256i a, __m256i b) { return _mm256_xor_si256(a, b); }

/* Message A's 16 bytes at `a` low, message B's at `b` high. */
ROW2_INLINE __m256i load_pair(const void *a, const void *b)
{
    return _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
        _mm_loadu_si128((const __m128i *)b), 1);
}

ROW2_INLINE void store_pair(void *a, void *b, __m256i x)
{
    _mm_storeu_si128((__m128i *)a, _mm256_castsi256_si128(x));
    _mm_storeu_si128((__m128i *)b, _mm256_extracti128_si256(x, 1));
}

ROW2_INLINE __m256i rows2_rotr16(__m256i x)
{
    return _mm256_shuffle_epi8(
        x, _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
}

ROW2_INLINE __m256i rows2_rotr8(__m256i x)
{
    return _mm256_shuffle_epi8(
        x, _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12,
                            1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
}

#define SHUFFLE2_WIDE(lo, hi, imm)                                             \
    _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(lo),             \
                                          _mm256_castsi256_ps(hi), (imm)))

/* blake3_rows.h's mix_rows, as wide; the same ordering of additions. */
ROW2_INLINE void mix_rows2(__m256i *a, __m256i *b, __m256i *c, __m256i *d,
                           __m256i x, __m256i y)
{
    __m256i a_x = add2(*a, x);
    __asm__("" : "+x"(a_x));
    *a = add2(a_x, *b);
    *d = rows2_rotr16(xor2(*d, *a));
    *c = add2(*c, *d);
    *b = row2_rotr12(xor2(*b, *c));
    __m256i a_y = add2(*a, y);
    __asm__("" : "+x"(a_y));
    *a = add2(a_y, *b);
    *d = rows2_rotr8(xor2(*d, *a));
    *c = add2(*c, *d);
    *b = row2_rotr7(xor2(*b, *c));
}

ROW2_INLINE void diagonalize2(__m256i *a, __m256i *c, __m256i *d)
{
    *a = _mm256_shuffle_epi32(*a, _MM_SHUFFLE(2, 1, 0, 3));
    *c = _mm256_shuffle_epi32(*c, _MM_SHUFFLE(0, 3, 2, 1));
    *d = _mm256_shuffle_epi32(*d, _MM_SHUFFLE(1, 0, 3, 2));
}

ROW2_INLINE void undiagonalize2(__m256i *a, __m256i *c, __m256i *d)
{
    *a = _mm256_shuffle_epi32(*a, _MM_SHUFFLE(0, 3, 2, 1));
    *c = _mm256_shuffle_epi32(*c, _MM_SHUFFLE(2, 1, 0, 3));
    *d = _mm256_shuffle_epi32(*d, _MM_SHUFFLE(1, 0, 3, 2));
}

ROW2_INLINE __m256i diagonal_message2(__m256i words)
{
    return _mm256_shuffle_epi32(words, _MM_SHUFFLE(2, 1, 0, 3));
}

/* blake3_rows.h's permute_message (the schedule is derived there). */
ROW2_INLINE void permute_message2(__m256i *first, __m256i *second, __m256i *third,
                                  __m256i *fourth)
{
    __m256i f = *first, s = *second, t = *third, u = *fourth;

    __m256i f1_f2_s1_s3 = SHUFFLE2_WIDE(f, s, _MM_SHUFFLE(3, 1, 2, 1));
    *first = _mm256_shuffle_epi32(f1_f2_s1_s3, _MM_SHUFFLE(1, 3, 2, 0));

    __m256i f3_f0_t1_t1 = SHUFFLE2_WIDE(f, t, _MM_SHUFFLE(1, 1, 0, 3));
    __m256i f3_t1_f0 = _mm256_shuffle_epi32(f3_f0_t1_t1, _MM_SHUFFLE(3, 1, 2, 0));
    __m256i u2_everywhere = _mm256_shuffle_epi32(u, _MM_SHUFFLE(2, 2, 2, 2));
    *second = _mm256_blend_epi16(f3_t1_f0, u2_everywhere, 0xC0);

    __m256i s0_s0_u0_u3 = SHUFFLE2_WIDE(s, u, _MM_SHUFFLE(3, 0, 0, 0));
    __m256i t2_everywhere = _mm256_shuffle_epi32(t, _MM_SHUFFLE(2, 2, 2, 2));
    *third = _mm256_blend_epi16(s0_s0_u0_u3, t2_everywhere, 0x0C);

    __m256i u1_u1_t3_t0 = SHUFFLE2_WIDE(u, t, _MM_SHUFFLE(0, 3, 1, 1));
    __m256i s2_everywhere = _mm256_shuffle_epi32(s, _MM_SHUFFLE(2, 2, 2, 2));
    *fourth = _mm256_blend_epi16(u1_u1_t3_t0, s2_everywhere, 0x0C);
}

ROW2_TARGET void ROWS2_ENTRY(uint32_t cv_a[8], const uint8_t block_a[64], uint8_t len_a,
                             uint8_t flags_a, uint32_t cv_b[8], const uint8_t block_b[64],
                             uint8_t len_b, uint8_t flags_b)
{
    __m256i a = load_pair(cv_a, cv_b);
    __m256i b = load_pair(cv_a + 4, cv_b + 4);
    __m256i c = load_pair(rt_blake3_iv, rt_blake3_iv);
    // Counter 0 in both: tree parents are single-chunk messages.
    __m256i d = _mm256_setr_epi32(0, 0, len_a, flags_a, 0, 0, len_b, flags_b);

    __m256i words0 = load_pair(block_a, block_b);
    __m256i words4 = load_pair(block_a + 16, block_b + 16);
    __m256i words8 = load_pair(block_a + 32, block_b + 32);
    __m256i words12 = load_pair(block_a + 48, block_b + 48);
    __m256i first = SHUFFLE2_WIDE(words0, words4, _MM_SHUFFLE(2, 0, 2, 0));
    __m256i second = SHUFFLE2_WIDE(words0, words4, _MM_SHUFFLE(3, 1, 3, 1));
    __m256i third = SHUFFLE2_WIDE(words8, words12, _MM_SHUFFLE(2, 0, 2, 0));
    __m256i fourth = SHUFFLE2_WIDE(words8, words12, _MM_SHUFFLE(3, 1, 3, 1));

    for (int round = 0; round < 7; round++) {
        mix_rows2(&a, &b, &c, &d, first, second);
        diagonalize2(&a, &c, &d);
        mix_rows2(&a, &b, &c, &d, diagonal_message2(third), diagonal_message2(fourth));
        undiagonalize2(&a, &c, &d);
        if (round < 6)
            permute_message2(&first, &second, &third, &fourth);
    }

    store_pair(cv_a, cv_b, xor2(a, c));
    store_pair(cv_a + 4, cv_b + 4, xor2(b, d));
}

#undef ROW2_INLINE

#endif /* RT_BLAKE3_ROWS2_H */
