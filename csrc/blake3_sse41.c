/*
 * BLAKE3 with SSE4.1, written from the BLAKE3 specification.
 *
 * rt_compress_sse41: one compression, the 4x4 state held as four rows; the
 * diagonal half-round rotates rows b, c, d so diagonals line up as columns.
 *
 * rt_hash_parents_sse41: four LeanIMT parents at once, one per 32-bit lane.
 * All parents of a call share an arity, so every lane has the same message
 * length, block count, counters and flags, and only the message words differ.
 *
 * Only this file's functions carry target("sse4.1"), so the project builds
 * without global -m flags and the dispatcher decides at run time.
 */
#include "rt_internal.h"

#if RT_X86
#include <immintrin.h>
#include <string.h>

#define SSE41 __attribute__((target("sse4.1")))
#define SSE41_INLINE static inline __attribute__((always_inline)) SSE41

#define LANES 4

/* ---- word helpers --------------------------------------------------------- */

SSE41_INLINE __m128i add32(__m128i a, __m128i b) { return _mm_add_epi32(a, b); }
SSE41_INLINE __m128i xor128(__m128i a, __m128i b) { return _mm_xor_si128(a, b); }

/* Rotations by whole bytes are one shuffle; the others need two shifts. */
SSE41_INLINE __m128i rotr16(__m128i x)
{
    return _mm_shuffle_epi8(
        x, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
}

SSE41_INLINE __m128i rotr8(__m128i x)
{
    return _mm_shuffle_epi8(
        x, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
}

SSE41_INLINE __m128i rotr12(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20));
}

SSE41_INLINE __m128i rotr7(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25));
}

SSE41_INLINE __m128i loadu128(const void *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

SSE41_INLINE void storeu128(void *p, __m128i x)
{
    _mm_storeu_si128((__m128i *)p, x);
}

SSE41_INLINE __m128i set1_u32(uint32_t x) { return _mm_set1_epi32((int)x); }

/* Picks words from two vectors with the float shuffle, which (unlike any
 * integer one) takes its two low lanes from `lo` and two high from `hi`. */
#define SHUFFLE2(lo, hi, imm)                                                  \
    _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(lo),                      \
                                    _mm_castsi128_ps(hi), (imm)))

/* ---- single compression, row-wise ----------------------------------------- */

SSE41_INLINE void mix_rows(__m128i *a, __m128i *b, __m128i *c, __m128i *d,
                           __m128i x, __m128i y)
{
    *a = add32(add32(*a, *b), x);
    *d = rotr16(xor128(*d, *a));
    *c = add32(*c, *d);
    *b = rotr12(xor128(*b, *c));
    *a = add32(add32(*a, *b), y);
    *d = rotr8(xor128(*d, *a));
    *c = add32(*c, *d);
    *b = rotr7(xor128(*b, *c));
}

/* Lane i of each row then holds the state word of diagonal G function i. */
SSE41_INLINE void diagonalize(__m128i *b, __m128i *c, __m128i *d)
{
    *b = _mm_shuffle_epi32(*b, _MM_SHUFFLE(0, 3, 2, 1));
    *c = _mm_shuffle_epi32(*c, _MM_SHUFFLE(1, 0, 3, 2));
    *d = _mm_shuffle_epi32(*d, _MM_SHUFFLE(2, 1, 0, 3));
}

SSE41_INLINE void undiagonalize(__m128i *b, __m128i *c, __m128i *d)
{
    *b = _mm_shuffle_epi32(*b, _MM_SHUFFLE(2, 1, 0, 3));
    *c = _mm_shuffle_epi32(*c, _MM_SHUFFLE(1, 0, 3, 2));
    *d = _mm_shuffle_epi32(*d, _MM_SHUFFLE(0, 3, 2, 1));
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
SSE41_INLINE void permute_message(__m128i *first, __m128i *second,
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

SSE41 void rt_compress_sse41(uint32_t cv[8], const uint8_t block[64],
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
        diagonalize(&b, &c, &d);
        mix_rows(&a, &b, &c, &d, third, fourth);
        undiagonalize(&b, &c, &d);
        if (round < 6)
            permute_message(&first, &second, &third, &fourth);
    }

    storeu128(cv, xor128(a, c));
    storeu128(cv + 4, xor128(b, d));
}

/* ---- four messages at once, one per lane ---------------------------------- */

/* Message word order per round: the spec's permutation applied r times. */
static const uint8_t schedule[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

/* Four G functions side by side, each step across all four before the next
 * so independent work is adjacent. diagonal=0 mixes columns (i, 4+i, 8+i,
 * 12+i); diagonal=1 mixes (i, 4+(i+1)%4, 8+(i+2)%4, 12+(i+3)%4). */
SSE41_INLINE void mix_four(__m128i v[16], int diagonal, const __m128i m[16],
                           const uint8_t *s)
{
    int b[4], c[4], d[4];
    for (int i = 0; i < 4; i++) {
        b[i] = 4 + (i + diagonal) % 4;
        c[i] = 8 + (i + 2 * diagonal) % 4;
        d[i] = 12 + (i + 3 * diagonal) % 4;
    }
    for (int i = 0; i < 4; i++)
        v[i] = add32(add32(v[i], v[b[i]]), m[s[2 * i]]);
    for (int i = 0; i < 4; i++)
        v[d[i]] = rotr16(xor128(v[d[i]], v[i]));
    for (int i = 0; i < 4; i++)
        v[c[i]] = add32(v[c[i]], v[d[i]]);
    for (int i = 0; i < 4; i++)
        v[b[i]] = rotr12(xor128(v[b[i]], v[c[i]]));
    for (int i = 0; i < 4; i++)
        v[i] = add32(add32(v[i], v[b[i]]), m[s[2 * i + 1]]);
    for (int i = 0; i < 4; i++)
        v[d[i]] = rotr8(xor128(v[d[i]], v[i]));
    for (int i = 0; i < 4; i++)
        v[c[i]] = add32(v[c[i]], v[d[i]]);
    for (int i = 0; i < 4; i++)
        v[b[i]] = rotr7(xor128(v[b[i]], v[c[i]]));
}

/* m[w] holds message word w of every lane; cv likewise. Counter, length and
 * flags are shared by all lanes. */
SSE41_INLINE void compress_lanes(__m128i cv[8], const __m128i m[16],
                                 uint64_t counter, uint32_t block_len,
                                 uint32_t flags)
{
    __m128i v[16];
    for (int i = 0; i < 8; i++)
        v[i] = cv[i];
    for (int i = 0; i < 4; i++)
        v[8 + i] = set1_u32(rt_blake3_iv[i]);
    v[12] = set1_u32((uint32_t)counter);
    v[13] = set1_u32((uint32_t)(counter >> 32));
    v[14] = set1_u32(block_len);
    v[15] = set1_u32(flags);

    /* Fully unrolled so every schedule lookup is a constant. */
#pragma GCC unroll 7
    for (int round = 0; round < 7; round++) {
        mix_four(v, 0, m, schedule[round]);
        mix_four(v, 1, m, schedule[round] + 8);
    }

    for (int i = 0; i < 8; i++)
        cv[i] = xor128(v[i], v[i + 8]);
}

/* rows[k] = four consecutive words of lane k -> cols[j] = word j of every
 * lane. Its own inverse. */
SSE41_INLINE void transpose4(const __m128i rows[4], __m128i cols[4])
{
    __m128i r01_lo = _mm_unpacklo_epi32(rows[0], rows[1]);
    __m128i r01_hi = _mm_unpackhi_epi32(rows[0], rows[1]);
    __m128i r23_lo = _mm_unpacklo_epi32(rows[2], rows[3]);
    __m128i r23_hi = _mm_unpackhi_epi32(rows[2], rows[3]);
    cols[0] = _mm_unpacklo_epi64(r01_lo, r23_lo);
    cols[1] = _mm_unpackhi_epi64(r01_lo, r23_lo);
    cols[2] = _mm_unpacklo_epi64(r01_hi, r23_hi);
    cols[3] = _mm_unpackhi_epi64(r01_hi, r23_hi);
}

SSE41_INLINE uint32_t load_u16(const uint8_t *p)
{
    uint16_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

/*
 * Message block `block` (64-byte index within the whole parent message) of
 * every lane, transposed into m. The message is 0x01, arity, then the
 * children, so block b starts at child byte 64b-2. Its length is always 64
 * except for the last block, which is 2 or 34 bytes because the message
 * length is 2 + 32*arity.
 */
SSE41_INLINE void load_message_lanes(const uint8_t *const lane_children[LANES],
                                     unsigned arity, size_t block,
                                     size_t message_len, __m128i m[16])
{
    __m128i rows[LANES];
    size_t start = 64 * block;

    if (block == 0) {
        __m128i header = _mm_cvtsi32_si128(0x01 | (int)(arity << 8));
        for (int w = 0; w < 16; w += 4) {
            for (int k = 0; k < LANES; k++) {
                const uint8_t *c = lane_children[k];
                rows[k] = w == 0 ? _mm_or_si128(_mm_slli_si128(loadu128(c), 2),
                                                header)
                                 : loadu128(c + 4 * w - 2);
            }
            transpose4(rows, m + w);
        }
        return;
    }

    size_t child_offset = start - 2;
    if (start + 64 <= message_len) {
        for (int w = 0; w < 16; w += 4) {
            for (int k = 0; k < LANES; k++)
                rows[k] = loadu128(lane_children[k] + child_offset + 4 * w);
            transpose4(rows, m + w);
        }
        return;
    }

    /* Final partial block: whole words first, then the 2-byte tail. The
     * zero padding comes from the zeroed words, never from reading past a
     * lane's children (the last lane's may end the caller's buffer). */
    size_t tail_words = (message_len - start) / 4;
    for (int w = 0; w < 16; w++)
        m[w] = _mm_setzero_si128();
    for (size_t w = 0; w < tail_words; w += 4) {
        for (int k = 0; k < LANES; k++)
            rows[k] = loadu128(lane_children[k] + child_offset + 4 * w);
        transpose4(rows, m + w);
    }
    size_t tail = child_offset + 4 * tail_words;
    m[tail_words] = _mm_setr_epi32((int)load_u16(lane_children[0] + tail),
                                   (int)load_u16(lane_children[1] + tail),
                                   (int)load_u16(lane_children[2] + tail),
                                   (int)load_u16(lane_children[3] + tail));
}

SSE41_INLINE void set_iv_lanes(__m128i cv[8])
{
    for (int i = 0; i < 8; i++)
        cv[i] = set1_u32(rt_blake3_iv[i]);
}

/* Chaining values of chunk `chunk` of every lane. is_root: this chunk is the
 * whole message. */
SSE41_INLINE void chunk_lanes(const uint8_t *const lane_children[LANES],
                              unsigned arity, size_t message_len, size_t chunk,
                              int is_root, __m128i cv[8])
{
    size_t total_blocks = (message_len + 63) / 64;
    size_t first = chunk * (RT_BLAKE3_CHUNK_LEN / 64);
    size_t end = first + RT_BLAKE3_CHUNK_LEN / 64;
    if (end > total_blocks)
        end = total_blocks;

    __m128i m[16];
    set_iv_lanes(cv);
    for (size_t block = first; block < end; block++) {
        uint32_t flags = 0;
        uint32_t block_len = 64;
        if (block == first)
            flags |= RT_FLAG_CHUNK_START;
        if (block + 1 == end) {
            flags |= RT_FLAG_CHUNK_END;
            if (is_root)
                flags |= RT_FLAG_ROOT;
            if (end == total_blocks)
                block_len = (uint32_t)(message_len - 64 * block);
        }
        load_message_lanes(lane_children, arity, block, message_len, m);
        compress_lanes(cv, m, chunk, block_len, flags);
    }
}

SSE41_INLINE void parent_lanes(const __m128i left[8], const __m128i right[8],
                               uint32_t flags, __m128i cv[8])
{
    __m128i m[16];
    for (int i = 0; i < 8; i++) {
        m[i] = left[i];
        m[8 + i] = right[i];
    }
    set_iv_lanes(cv);
    compress_lanes(cv, m, 0, 64, RT_FLAG_PARENT | flags);
}

/* One parent per lane; messages up to 8162 bytes, i.e. at most 8 chunks, so
 * the subtree stack needs at most 4 entries. */
static SSE41 void parents_lanes(const uint8_t *const lane_children[LANES],
                                unsigned arity, uint8_t *const lane_out[LANES])
{
    size_t message_len = 2 + (size_t)arity * RT_HASH_LEN;
    size_t chunks = (message_len + RT_BLAKE3_CHUNK_LEN - 1) / RT_BLAKE3_CHUNK_LEN;
    __m128i cv[8];

    if (chunks == 1) {
        chunk_lanes(lane_children, arity, message_len, 0, 1, cv);
    } else {
        __m128i stack[4][8];
        unsigned depth = 0;
        for (size_t chunk = 0; chunk + 1 < chunks; chunk++) {
            chunk_lanes(lane_children, arity, message_len, chunk, 0, cv);
            for (size_t done = chunk + 1; (done & 1) == 0; done >>= 1) {
                depth--;
                parent_lanes(stack[depth], cv, 0, cv);
            }
            memcpy(stack[depth++], cv, sizeof cv);
        }
        chunk_lanes(lane_children, arity, message_len, chunks - 1, 0, cv);
        while (depth > 0) {
            depth--;
            parent_lanes(stack[depth], cv, depth == 0 ? RT_FLAG_ROOT : 0, cv);
        }
    }

    __m128i rows[4];
    for (int half = 0; half < 2; half++) {
        transpose4(cv + 4 * half, rows);
        for (int k = 0; k < LANES; k++)
            storeu128(lane_out[k] + 16 * half, rows[k]);
    }
}

/* Used by the AVX2 kernel for its remainder as well. */
SSE41 void rt_hash_parents_sse41(const uint8_t *children, size_t count,
                                 unsigned arity, uint8_t *out)
{
    const size_t stride = (size_t)arity * RT_HASH_LEN;
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) {
        const uint8_t *lane_children[LANES];
        uint8_t *lane_out[LANES];
        for (int k = 0; k < LANES; k++) {
            lane_children[k] = children + (i + k) * stride;
            lane_out[k] = out + (i + k) * RT_HASH_LEN;
        }
        parents_lanes(lane_children, arity, lane_out);
    }

    const uint8_t header[2] = {0x01, (uint8_t)arity};
    for (; i < count; i++)
        rt_blake3_prefixed(rt_compress_sse41, header, sizeof header,
                           children + i * stride, stride, out + i * RT_HASH_LEN);
}
#endif /* RT_X86 */
