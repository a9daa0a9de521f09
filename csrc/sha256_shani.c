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
#include <stddef.h>
#include <string.h>

#define SHANI __attribute__((target("sha,sse4.1")))
#define SHANI_INLINE static inline __attribute__((always_inline)) SHANI
/* Independent messages interleaved per batch. Two already keep the SHA unit
 * busy; three or four measured the same and cost registers. */
#define WAYS 2

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

/* One block for each of `n` (1..WAYS) independent states; raw[s] holds the
 * block's four 16-byte pieces as they sit in the message. Written once for
 * every width: with n a constant after inlining, the loops over streams
 * vanish and the chains interleave. */
SHANI_INLINE void compress_n(int n, __m128i abef[WAYS], __m128i cdgh[WAYS],
                             const __m128i raw[WAYS][4])
{
    const __m128i swap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7,
                                      0, 1, 2, 3);
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
                w = _mm_shuffle_epi8(raw[s][g], swap);
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
    __m128i abef[WAYS], cdgh[WAYS], raw[WAYS][4];
    state_in(state, &abef[0], &cdgh[0]);
    for (size_t b = 0; b < blocks; b++) {
        for (int v = 0; v < 4; v++)
            raw[0][v] = _mm_loadu_si128((const __m128i *)(data + 64 * b + 16 * v));
        compress_n(1, abef, cdgh, (const __m128i(*)[4])raw);
    }
    state_out(abef[0], cdgh[0], state);
}

/* ---- messages built in registers --------------------------------------------
 * The padded message (prefix || body || 0x80 || zeros || bit length) is
 * never written to memory: a block assembled with byte stores and read back
 * with 16-byte loads stalls on store-to-load forwarding, which cost about as
 * much as the compression itself. Each 16-byte piece is instead one load
 * from the body, shifted and masked with a byte shuffle, with the prefix,
 * the 0x80 and the length ORed in. */

/* Sliding windows: 16 bytes at lane_select + 16 + d pick byte i + d of a
 * vector into lane i, or zero where i + d is outside 0..15; 16 bytes at
 * pad_byte + 16 - k are 0x80 in lane k only. */
static const uint8_t lane_select[48] = {
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80};
static const uint8_t pad_byte[32] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80};

struct message {
    const uint8_t *body;
    size_t body_len;
    size_t prefix_len;  /* 0 or 1 */
    size_t len;         /* prefix_len + body_len */
    size_t tail_at;     /* offset of the last 16 bytes of the padded message */
    __m128i prefix;     /* the prefix byte in lane 0, or zero */
    __m128i last;       /* the body's last 16 bytes (zero-filled when shorter) */
    __m128i length;     /* the bit length, big-endian, in lanes 8..15 */
};

SHANI_INLINE void message_init(struct message *m, const uint8_t *prefix, size_t prefix_len,
                               const uint8_t *body, size_t body_len)
{
    m->body = body;
    m->body_len = body_len;
    m->prefix_len = prefix_len;
    m->len = prefix_len + body_len;
    m->tail_at = 64 * rt_sha256_padded_blocks(m->len) - 16;
    m->prefix = _mm_cvtsi32_si128(prefix_len ? prefix[0] : 0);
    if (body_len >= 16) {
        m->last = _mm_loadu_si128((const __m128i *)(body + body_len - 16));
    } else {
        /* Short bodies only: one small copy, read once here. */
        uint8_t tmp[16] = {0};
        if (body_len)
            memcpy(tmp, body, body_len);
        m->last = _mm_loadu_si128((const __m128i *)tmp);
    }
    m->length = _mm_set_epi64x((long long)__builtin_bswap64((uint64_t)m->len * 8), 0);
}

/* Message bytes [a, a + 16) of the padded message; a a multiple of 16. */
SHANI_INLINE __m128i message_piece(const struct message *m, size_t a)
{
    size_t p = m->prefix_len;
    if (a >= p && a - p + 16 <= m->body_len)
        return _mm_loadu_si128((const __m128i *)(m->body + a - p));
    if (a == 0 && p == 1 && m->body_len >= 16)
        return _mm_or_si128(_mm_slli_si128(_mm_loadu_si128((const __m128i *)m->body), 1),
                            m->prefix);
    __m128i v = _mm_setzero_si128();
    if (a < m->len && m->body_len > 0) {
        /* `last` holds body bytes [start, start + 16); lane i wants body
         * byte a + i - p, which is byte a + i - p - start of `last`. */
        ptrdiff_t start = m->body_len >= 16 ? (ptrdiff_t)m->body_len - 16 : 0;
        ptrdiff_t d = (ptrdiff_t)a - (ptrdiff_t)p - start;
        v = _mm_shuffle_epi8(m->last,
                             _mm_loadu_si128((const __m128i *)(lane_select + 16 + d)));
    }
    if (a == 0)
        v = _mm_or_si128(v, m->prefix);
    if (m->len >= a && m->len - a < 16)
        v = _mm_or_si128(v, _mm_loadu_si128((const __m128i *)(pad_byte + 16 - (m->len - a))));
    if (a == m->tail_at)
        v = _mm_or_si128(v, m->length);
    return v;
}

SHANI_INLINE void message_block(const struct message *m, size_t b, __m128i raw[4])
{
    for (int v = 0; v < 4; v++)
        raw[v] = message_piece(m, 64 * b + 16 * (size_t)v);
}

SHANI_INLINE void store_digest(__m128i abef, __m128i cdgh, uint8_t *out)
{
    uint32_t state[8];
    state_out(abef, cdgh, state);
    rt_sha256_store_digest(state, out);
}

SHANI void rt_sha256_prefixed_shani(const uint8_t *prefix, size_t prefix_len,
                                    const uint8_t *body, size_t body_len, uint8_t out[32])
{
    if (prefix_len > 1) {
        rt_sha256_prefixed(rt_sha256_blocks_shani, prefix, prefix_len, body, body_len, out);
        return;
    }
    struct message m;
    message_init(&m, prefix, prefix_len, body, body_len);
    __m128i abef[WAYS], cdgh[WAYS], raw[WAYS][4];
    state_in(rt_sha256_iv, &abef[0], &cdgh[0]);
    size_t nblocks = m.tail_at / 64 + 1;
    for (size_t b = 0; b < nblocks; b++) {
        message_block(&m, b, raw[0]);
        compress_n(1, abef, cdgh, (const __m128i(*)[4])raw);
    }
    store_digest(abef[0], cdgh[0], out);
}

SHANI void rt_sha256_many_shani(uint8_t prefix, const uint8_t *bodies,
                                size_t body_len, size_t count, uint8_t *out)
{
    size_t nblocks = rt_sha256_padded_blocks(body_len + 1);
    size_t i = 0;
    for (; i + WAYS <= count; i += WAYS) {
        struct message m[WAYS];
        __m128i abef[WAYS], cdgh[WAYS], raw[WAYS][4];
        for (int s = 0; s < WAYS; s++) {
            message_init(&m[s], &prefix, 1, bodies + (i + (size_t)s) * body_len, body_len);
            state_in(rt_sha256_iv, &abef[s], &cdgh[s]);
        }
        for (size_t b = 0; b < nblocks; b++) {
            for (int s = 0; s < WAYS; s++)
                message_block(&m[s], b, raw[s]);
            compress_n(WAYS, abef, cdgh, (const __m128i(*)[4])raw);
        }
        for (int s = 0; s < WAYS; s++)
            store_digest(abef[s], cdgh[s], out + (i + (size_t)s) * RT_HASH_LEN);
    }
    for (; i < count; i++)
        rt_sha256_prefixed_shani(&prefix, 1, bodies + i * body_len, body_len,
                                 out + i * RT_HASH_LEN);
}

#endif /* RT_X86 */
