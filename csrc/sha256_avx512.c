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

#endif /* RT_X86 */
