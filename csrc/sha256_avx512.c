/*
 * SHA-256 with AVX-512F: sixteen same-length messages at once, one per
 * 32-bit lane (the driver is sha256_lanes.h). Every rotation is one vprord
 * and every three-input boolean function (Ch, Maj, the XORs of the sigmas)
 * one vpternlogd, so a round is about half the instructions of the AVX2
 * form. Only F is needed (no BW: byte swaps are rotations under a mask).
 *
 * Only this file's functions carry the AVX-512 target; the dispatcher calls
 * them only when the AVX-512 kernel is available.
 */
#include "rt_config.h"
#include "rt_sha256.h"

#if RT_X86
#include <immintrin.h>
#include <string.h>

#define LANES_TARGET __attribute__((target("avx512f")))
#define V_INLINE static inline __attribute__((always_inline)) LANES_TARGET
#define VEC __m512i
#define LANES 16
#define LANES_ENTRY rt_sha256_many_avx512
#define LANES_TRANSPOSED

V_INLINE VEC v_set1(uint32_t x) { return _mm512_set1_epi32((int)x); }
V_INLINE VEC v_add(VEC a, VEC b) { return _mm512_add_epi32(a, b); }
V_INLINE VEC v_and(VEC a, VEC b) { return _mm512_and_si512(a, b); }
V_INLINE VEC v_or(VEC a, VEC b) { return _mm512_or_si512(a, b); }
V_INLINE VEC v_xor3(VEC a, VEC b, VEC c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }
/* e ? f : g */
V_INLINE VEC v_ch(VEC e, VEC f, VEC g) { return _mm512_ternarylogic_epi32(e, f, g, 0xCA); }
V_INLINE VEC v_maj(VEC a, VEC b, VEC c) { return _mm512_ternarylogic_epi32(a, b, c, 0xE8); }
#define v_ror(x, n) _mm512_ror_epi32((x), (n))
V_INLINE VEC v_shr(VEC x, int n) { return _mm512_srl_epi32(x, _mm_cvtsi32_si128(n)); }
V_INLINE VEC v_shl(VEC x, int n) { return _mm512_sll_epi32(x, _mm_cvtsi32_si128(n)); }
V_INLINE VEC v_bswap(VEC x)
{
    /* Bytes 0 and 2 of each word come from rotating right by 8, bytes 1
     * and 3 from rotating left by 8. */
    return _mm512_ternarylogic_epi32(v_set1(0xFF00FF00u), _mm512_ror_epi32(x, 8),
                                     _mm512_rol_epi32(x, 8), 0xCA);
}
V_INLINE VEC v_gather(const uint8_t *base, VEC index)
{
    return _mm512_i32gather_epi32(index, (const void *)base, 1);
}
V_INLINE VEC v_lane_offsets(uint32_t step)
{
    const VEC lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    return _mm512_mullo_epi32(lanes, v_set1(step));
}
V_INLINE void v_store(uint32_t *dst, VEC x) { _mm512_store_si512((void *)dst, x); }

#include "sha256_lanes.h"

/* ---- bodies of 8 or 16 whole words, loaded and transposed ------------------
 * RFC 6962's shapes: leaf hashes of 32-byte entries and parents of two
 * 32-byte children. Sixteen gathers per block were about a fifth of the
 * kernel's time; sixteen contiguous loads and a transpose in registers
 * replace them. e[j] holds body word j of every lane (lane l = message l),
 * big-endian; with the one-byte prefix in front, message word j straddles
 * body words j - 1 and j, and the word after the body carries its last
 * byte and the 0x80 of the padding. */

/* The first two stages of a transpose of `rows` rows (a multiple of 4):
 * u[4g + k] holds, in each 128-bit lane c, word 4c + k of rows 4g .. 4g + 3. */
V_INLINE void interleave_rows(const VEC *r, int rows, VEC *u)
{
    VEC t[16];
    for (int i = 0; i < rows; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int g = 0; g < rows / 4; g++) {
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
}

/* Body words 0..7 of sixteen 32-byte bodies: row r holds bodies r and
 * r + 8, and an 8x8 transpose runs in each 256-bit half. */
V_INLINE void transpose_8_words(const uint8_t *bodies, VEC e[8])
{
    VEC r[8], u[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(bodies + 32 * i))),
            _mm256_loadu_si256((const __m256i *)(bodies + 32 * (i + 8))), 1);
    interleave_rows(r, 8, u);
    // Word k and k + 4: rows 0-3 and 4-7 side by side in each half.
    const VEC low = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    const VEC high = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    for (int k = 0; k < 4; k++) {
        e[k] = v_bswap(_mm512_permutex2var_epi64(u[k], low, u[4 + k]));
        e[k + 4] = v_bswap(_mm512_permutex2var_epi64(u[k], high, u[4 + k]));
    }
}

/* Body words 0..15 of sixteen 64-byte bodies: a 16x16 transpose. */
V_INLINE void transpose_16_words(const uint8_t *bodies, VEC e[16])
{
    VEC r[16], u[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_si512((const void *)(bodies + 64 * i));
    interleave_rows(r, 16, u);
    // For each k, a 4x4 transpose of 128-bit lanes over the four row groups.
    for (int k = 0; k < 4; k++) {
        VEC v0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44);
        VEC v1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xEE);
        VEC v2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
        VEC v3 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xEE);
        e[k] = v_bswap(_mm512_shuffle_i32x4(v0, v2, 0x88));
        e[4 + k] = v_bswap(_mm512_shuffle_i32x4(v0, v2, 0xDD));
        e[8 + k] = v_bswap(_mm512_shuffle_i32x4(v1, v3, 0x88));
        e[12 + k] = v_bswap(_mm512_shuffle_i32x4(v1, v3, 0xDD));
    }
}

/* Message word j for j in 0..words: body words j - 1 and j shifted into
 * place, the prefix before word 0, and 0x80 after the last. */
V_INLINE VEC straddle(const VEC *e, int words, uint8_t prefix, int j)
{
    VEC before = j == 0 ? v_set1((uint32_t)prefix << 24) : _mm512_slli_epi32(e[j - 1], 24);
    VEC after = j == words ? v_set1(0x00800000u) : _mm512_srli_epi32(e[j], 8);
    return v_or(before, after);
}

LANES_TARGET static int lanes_transposed(uint8_t prefix, const uint8_t *bodies,
                                         size_t body_len, uint8_t *out)
{
    VEC e[16], w[16], s[8];
    for (int i = 0; i < 8; i++)
        s[i] = v_set1(rt_sha256_iv[i]);
    if (body_len == 32) {
        // One block: prefix, 32 bytes, 0x80, zeros, 33 * 8 bits.
        transpose_8_words(bodies, e);
        for (int j = 0; j <= 8; j++)
            w[j] = straddle(e, 8, prefix, j);
        for (int j = 9; j < 15; j++)
            w[j] = v_set1(0);
        w[15] = v_set1(33 * 8);
        lanes_compress(s, w);
    } else if (body_len == 64) {
        // Two blocks: prefix and 63 bytes; then the last byte, 0x80, zeros
        // and 65 * 8 bits.
        transpose_16_words(bodies, e);
        for (int j = 0; j < 16; j++)
            w[j] = straddle(e, 16, prefix, j);
        lanes_compress(s, w);
        w[0] = straddle(e, 16, prefix, 16);
        for (int j = 1; j < 15; j++)
            w[j] = v_set1(0);
        w[15] = v_set1(65 * 8);
        lanes_compress(s, w);
    } else {
        return 0;
    }
    lanes_store(s, out);
    return 1;
}

#endif /* RT_X86 */
