/*
 * SHA-256 with AVX2: eight same-length messages at once, one per 32-bit
 * lane (the driver is sha256_lanes.h). For CPUs with AVX2 and without the
 * SHA extensions, where one lane group does the work of eight portable
 * messages.
 *
 * Only this file's functions carry target("avx2"); the dispatcher calls
 * them only when the AVX2 kernel is available.
 */
#include "rt_config.h"
#include "rt_sha256.h"

#if RT_X86
#include <immintrin.h>
#include <string.h>

#define LANES_TARGET __attribute__((target("avx2")))
#define V_INLINE static inline __attribute__((always_inline)) LANES_TARGET
#define VEC __m256i
#define LANES 8
#define LANES_ENTRY rt_sha256_many_avx2

V_INLINE VEC v_set1(uint32_t x) { return _mm256_set1_epi32((int)x); }
V_INLINE VEC v_add(VEC a, VEC b) { return _mm256_add_epi32(a, b); }
V_INLINE VEC v_and(VEC a, VEC b) { return _mm256_and_si256(a, b); }
V_INLINE VEC v_or(VEC a, VEC b) { return _mm256_or_si256(a, b); }
V_INLINE VEC v_xor3(VEC a, VEC b, VEC c)
{
    return _mm256_xor_si256(_mm256_xor_si256(a, b), c);
}
/* e ? f : g, as g ^ (e & (f ^ g)): three operations, no NOT. */
V_INLINE VEC v_ch(VEC e, VEC f, VEC g)
{
    return _mm256_xor_si256(g, _mm256_and_si256(e, _mm256_xor_si256(f, g)));
}
V_INLINE VEC v_maj(VEC a, VEC b, VEC c)
{
    return _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(c, _mm256_or_si256(a, b)));
}
#define v_ror(x, n) _mm256_or_si256(_mm256_srli_epi32((x), (n)), _mm256_slli_epi32((x), 32 - (n)))
V_INLINE VEC v_shr(VEC x, int n) { return _mm256_srl_epi32(x, _mm_cvtsi32_si128(n)); }
V_INLINE VEC v_shl(VEC x, int n) { return _mm256_sll_epi32(x, _mm_cvtsi32_si128(n)); }
V_INLINE VEC v_bswap(VEC x)
{
    const VEC swap = _mm256_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
                                      3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    return _mm256_shuffle_epi8(x, swap);
}
V_INLINE VEC v_gather(const uint8_t *base, VEC index)
{
    return _mm256_i32gather_epi32((const int *)(const void *)base, index, 1);
}
V_INLINE VEC v_lane_offsets(uint32_t step)
{
    const VEC lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_mullo_epi32(lanes, v_set1(step));
}
V_INLINE void v_store(uint32_t *dst, VEC x) { _mm256_store_si256((VEC *)(void *)dst, x); }

#include "sha256_lanes.h"

#endif /* RT_X86 */
