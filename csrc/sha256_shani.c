/*
 * SHA-256 with the x86 SHA extensions (SHA256RNDS2, SHA256MSG1,
 * SHA256MSG2), written from FIPS 180-4 and Intel's instruction descriptions.
 *
 * SHA256RNDS2 does two rounds on the state split as (A,B,E,F) and (C,D,G,H);
 * after two calls the old (A,B,E,F) register is the new (C,D,G,H), so four
 * rounds are two calls with the registers swapping roles. MSG1 and MSG2
 * compute the schedule four words at a time; the W[t-7] term they leave out
 * is added in between.
 *
 * One message is bound by SHA256RNDS2's latency, a chain of 32 per block.
 * Batches of same-length messages therefore run independent messages
 * interleaved, so each fills the other's latency gaps.
 *
 * Only this file's functions carry the sha/sse4.1 target; the dispatcher
 * calls them only after checking CPUID.
 */
#include "rt_config.h"
#include "rt_sha256.h"

#if RT_X86
#include <immintrin.h>
#include <string.h>

#define SHANI __attribute__((target("sha,sse4.1")))
#define SHANI_INLINE static inline __attribute__((always_inline)) SHANI
/* Independent messages interleaved per batch. Two already keep the SHA unit
 * busy; three or four measured the same and cost registers. */
#define WAYS 2

/* Big-endian words: byte-reverse each 32-bit lane. */
SHANI_INLINE __m128i load_words(const uint8_t *p)
{
    const __m128i swap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7,
                                      0, 1, 2, 3);
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), swap);
}

/* The state as the instruction wants it: lanes (low to high) F,E,B,A in
 * abef and H,G,D,C in cdgh. */
SHANI_INLINE void state_in(const uint32_t state[8], __m128i *abef, __m128i *cdgh)
{
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)state), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(state + 4)), 0x1B);
    *abef = _mm_alignr_epi8(abcd, efgh, 8);
    *cdgh = _mm_blend_epi16(efgh, abcd, 0xF0);
}

SHANI_INLINE void state_out(__m128i abef, __m128i cdgh, uint32_t state[8])
{
    __m128i abef_in_order = _mm_shuffle_epi32(abef, 0x1B); /* A,B,E,F */
    __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);          /* G,H,C,D */
    _mm_storeu_si128((__m128i *)state, _mm_blend_epi16(abef_in_order, ghcd, 0xF0));
    _mm_storeu_si128((__m128i *)(state + 4), _mm_alignr_epi8(ghcd, abef_in_order, 8));
}

/* Four rounds with schedule words w (W[4g..4g+3]). */
SHANI_INLINE void four_rounds(__m128i *abef, __m128i *cdgh, __m128i w, int g)
{
    __m128i wk = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&rt_sha256_k[4 * g]));
    *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, wk);
    *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, _mm_shuffle_epi32(wk, 0x0E));
}

/* W[4g..4g+3] from the previous sixteen words m[(g-4)..(g-1) & 3]. */
SHANI_INLINE __m128i next_words(__m128i m_4, __m128i m_3, __m128i m_2, __m128i m_1)
{
    __m128i x = _mm_add_epi32(_mm_sha256msg1_epu32(m_4, m_3), _mm_alignr_epi8(m_1, m_2, 4));
    return _mm_sha256msg2_epu32(x, m_1);
}

/* One block for each of `n` (1..WAYS) independent states. Written once for
 * both widths: with n a constant after inlining, the loops over streams
 * vanish and the two chains interleave. */
SHANI_INLINE void compress_n(int n, __m128i abef[WAYS], __m128i cdgh[WAYS],
                             const uint8_t *const block[WAYS])
{
    __m128i m[WAYS][4], save_abef[WAYS], save_cdgh[WAYS];
    for (int s = 0; s < n; s++) {
        save_abef[s] = abef[s];
        save_cdgh[s] = cdgh[s];
    }
    /* Fully unrolled so that the schedule ring stays in registers and the
     * round constants are folded into the code. */
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
#pragma GCC unroll 2
        for (int s = 0; s < n; s++) {
            __m128i w;
            if (g < 4)
                w = load_words(block[s] + 16 * g);
            else
                w = next_words(m[s][g & 3], m[s][(g + 1) & 3], m[s][(g + 2) & 3],
                               m[s][(g + 3) & 3]);
            m[s][g & 3] = w;
            four_rounds(&abef[s], &cdgh[s], w, g);
        }
    }
    for (int s = 0; s < n; s++) {
        abef[s] = _mm_add_epi32(abef[s], save_abef[s]);
        cdgh[s] = _mm_add_epi32(cdgh[s], save_cdgh[s]);
    }
}

SHANI void rt_sha256_blocks_shani(uint32_t state[8], const uint8_t *data,
                                  size_t blocks)
{
    __m128i abef[WAYS], cdgh[WAYS];
    state_in(state, &abef[0], &cdgh[0]);
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *block[WAYS] = {data + b * RT_SHA256_BLOCK_LEN};
        compress_n(1, abef, cdgh, block);
    }
    state_out(abef[0], cdgh[0], state);
}

SHANI void rt_sha256_many_shani(uint8_t prefix, const uint8_t *bodies,
                                size_t body_len, size_t count, uint8_t *out)
{
    size_t nblocks = rt_sha256_padded_blocks(body_len + 1);
    size_t i = 0;
    for (; i + WAYS <= count; i += WAYS) {
        __m128i abef[WAYS], cdgh[WAYS];
        uint8_t buf[WAYS][RT_SHA256_BLOCK_LEN];
        const uint8_t *block[WAYS];
        for (int s = 0; s < WAYS; s++) {
            state_in(rt_sha256_iv, &abef[s], &cdgh[s]);
            block[s] = buf[s];
        }
        for (size_t b = 0; b < nblocks; b++) {
            for (int s = 0; s < WAYS; s++)
                rt_sha256_message_block(prefix, bodies + (i + s) * body_len,
                                        body_len, b, buf[s]);
            compress_n(WAYS, abef, cdgh, block);
        }
        for (int s = 0; s < WAYS; s++) {
            uint32_t state[8];
            state_out(abef[s], cdgh[s], state);
            rt_sha256_store_digest(state, out + (i + s) * RT_HASH_LEN);
        }
    }
    for (; i < count; i++)
        rt_sha256_prefixed(rt_sha256_blocks_shani, &prefix, 1, bodies + i * body_len,
                           body_len, out + i * RT_HASH_LEN);
}

#endif /* RT_X86 */
