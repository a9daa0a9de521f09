/*
 * BLAKE3 with SSE4.1, written from the BLAKE3 specification.
 *
 * rt_compress_sse41: one compression, the row-wise template in blake3_rows.h
 * with SSE4.1 rotations.
 *
 * rt_hash_parents_sse41: four LeanIMT parents at once, one per 32-bit lane.
 * This file provides the four-lane compression, message loading and
 * transposes; the lane groups, the chunk/parent walk and the remainder are
 * the shared driver in blake3_lanes.h.
 *
 * Only this file's functions carry target("sse4.1"), so the project builds
 * without global -m flags and the dispatcher decides at run time.
 */
#include "rt_config.h"
#include "rt_blake3.h"

#if RT_X86
#include <immintrin.h>
#include <string.h>

#define SSE41 __attribute__((target("sse4.1")))
#define SSE41_INLINE static inline __attribute__((always_inline)) SSE41

#define LANES 4

/* ---- single compression, row-wise (blake3_rows.h) ----------------------- */

/* The byte rotations are blake3_rows.h's shuffles; the others need two
 * shifts. */
SSE41_INLINE __m128i rotr12(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20));
}

SSE41_INLINE __m128i rotr7(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25));
}

SSE41_INLINE __m128i set1_u32(uint32_t x) { return _mm_set1_epi32((int)x); }

#define ROW_TARGET SSE41
#define ROWS_ENTRY rt_compress_sse41
#define row_rotr16 rows_rotr16_bytes
#define row_rotr12 rotr12
#define row_rotr8 rows_rotr8_bytes
#define row_rotr7 rotr7
#include "blake3_rows.h"

/* ---- four messages at once, one per lane ---------------------------------- */

/*
 * The compression function, four lanes, as inline assembly for the reason
 * given in blake3_avx2.c (GCC spills state on the critical path): the state
 * lives in xmm0..xmm15 as v0..v15 and only v8 goes to memory, while the four
 * rotations by 12 or 7 borrow its register; the round schedule is shared
 * with AVX2 (blake3_lane_rounds.h). Message words are (aligned) memory
 * operands: m[w] at w*16 from %[msg].
 */
#define XMM(r) "%%xmm" #r
#define INSN2(op, src, dst) op " " src ", " dst "\n\t"

#define ADD_MESSAGE(a, b, w)                                                   \
    INSN2("paddd", #w "*16(%[msg])", XMM(a)) INSN2("paddd", XMM(b), XMM(a))
#define XOR_ROTATE_BYTES(d, a, mask)                                           \
    INSN2("pxor", XMM(a), XMM(d)) INSN2("pshufb", mask, XMM(d))
#define ADD(c, d) INSN2("paddd", XMM(d), XMM(c))
#define XOR(b, c) INSN2("pxor", XMM(c), XMM(b))
/* b = b >>> n, with xmm8 (v8 spilled) as the temporary. */
#define ROTATE_SHIFTS(b, n)                                                    \
    INSN2("movdqa", XMM(b), "%%xmm8")                                          \
    INSN2("psrld", "$" #n, "%%xmm8")                                           \
    INSN2("pslld", "$(32-" #n ")", XMM(b))                                     \
    INSN2("por", "%%xmm8", XMM(b))
#define SPILL_V8 "movdqa %%xmm8, %[spill]\n\t"
#define RELOAD_V8 "movdqa %[spill], %%xmm8\n\t"

#include "blake3_lane_rounds.h"

static const uint8_t rotate16_mask[16] __attribute__((aligned(16))) = {
    2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
static const uint8_t rotate8_mask[16] __attribute__((aligned(16))) = {
    1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12};

/* m[w] holds message word w of every lane; cv likewise, updated in place.
 * Counter, length and flags are shared by all lanes. */
static __attribute__((noinline)) SSE41 void
compress_lanes(__m128i cv[8], const __m128i m[16], uint64_t counter,
               uint32_t block_len, uint32_t flags)
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

    __m128i spill;
    __asm__(
        "movdqa 0*16(%[v]), %%xmm0\n\t"
        "movdqa 1*16(%[v]), %%xmm1\n\t"
        "movdqa 2*16(%[v]), %%xmm2\n\t"
        "movdqa 3*16(%[v]), %%xmm3\n\t"
        "movdqa 4*16(%[v]), %%xmm4\n\t"
        "movdqa 5*16(%[v]), %%xmm5\n\t"
        "movdqa 6*16(%[v]), %%xmm6\n\t"
        "movdqa 7*16(%[v]), %%xmm7\n\t"
        "movdqa 8*16(%[v]), %%xmm8\n\t"
        "movdqa 9*16(%[v]), %%xmm9\n\t"
        "movdqa 10*16(%[v]), %%xmm10\n\t"
        "movdqa 11*16(%[v]), %%xmm11\n\t"
        "movdqa 12*16(%[v]), %%xmm12\n\t"
        "movdqa 13*16(%[v]), %%xmm13\n\t"
        "movdqa 14*16(%[v]), %%xmm14\n\t"
        "movdqa 15*16(%[v]), %%xmm15\n\t"
        SPILL_V8
        SEVEN_ROUNDS
        "pxor %[spill], %%xmm0\n\t"
        "pxor %%xmm9, %%xmm1\n\t"
        "pxor %%xmm10, %%xmm2\n\t"
        "pxor %%xmm11, %%xmm3\n\t"
        "pxor %%xmm12, %%xmm4\n\t"
        "pxor %%xmm13, %%xmm5\n\t"
        "pxor %%xmm14, %%xmm6\n\t"
        "pxor %%xmm15, %%xmm7\n\t"
        "movdqa %%xmm0, 0*16(%[v])\n\t"
        "movdqa %%xmm1, 1*16(%[v])\n\t"
        "movdqa %%xmm2, 2*16(%[v])\n\t"
        "movdqa %%xmm3, 3*16(%[v])\n\t"
        "movdqa %%xmm4, 4*16(%[v])\n\t"
        "movdqa %%xmm5, 5*16(%[v])\n\t"
        "movdqa %%xmm6, 6*16(%[v])\n\t"
        "movdqa %%xmm7, 7*16(%[v])\n\t"
        : [spill] "=m"(spill)
        : [v] "r"(v), [msg] "r"(m), [rot16] "m"(rotate16_mask),
          [rot8] "m"(rotate8_mask)
        : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
          "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
          "xmm15");

    for (int i = 0; i < 8; i++)
        cv[i] = v[i];
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

/* Untagged message block `block` of every lane: child bytes 64*block on,
 * 64 bytes, or 32 (zero padded) for the last block of an odd arity. */
SSE41_INLINE void load_untagged_lanes(const uint8_t *const lane_children[LANES],
                                      size_t block, size_t message_len, __m128i m[16])
{
    __m128i rows[LANES];
    size_t start = 64 * block;
    int words = start + 64 <= message_len ? 16 : 8;
    for (int w = 0; w < 16; w += 4) {
        if (w >= words) {
            m[w] = m[w + 1] = m[w + 2] = m[w + 3] = _mm_setzero_si128();
            continue;
        }
        for (int k = 0; k < LANES; k++)
            rows[k] = loadu128(lane_children[k] + start + 4 * w);
        transpose4(rows, m + w);
    }
}

/* Transpose the chaining values back and store each lane's parent. */
SSE41_INLINE void store_lanes(const __m128i cv[8], uint8_t *const out[LANES])
{
    __m128i rows[LANES];
    for (int half = 0; half < 2; half++) {
        transpose4(cv + 4 * half, rows);
        for (int k = 0; k < LANES; k++)
            storeu128(out[k] + 16 * half, rows[k]);
    }
}

/* ---- the lane driver (blake3_lanes.h), instantiated for SSE4.1 ----------- */

typedef __m128i lane_vec;
#define LANE_TARGET SSE41
#define LANES_ENTRY rt_hash_parents_sse41
#define LANES_UNTAGGED_ENTRY rt_hash_parents_untagged_sse41
#define lanes_load_untagged load_untagged_lanes
#define lanes_set1 set1_u32
#define lanes_compress compress_lanes
#define lanes_load_message load_message_lanes
#define lanes_store store_lanes
#define LANES_COMPRESS_ONE rt_compress_sse41
#include "blake3_lanes.h"
#endif /* RT_X86 */
