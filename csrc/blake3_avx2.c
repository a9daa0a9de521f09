/*
 * BLAKE3 LeanIMT parents with AVX2, written from the BLAKE3 specification:
 * eight parents at once, one per 32-bit lane of sixteen 256-bit state
 * vectors. This file provides the eight-lane compression, message loading
 * and transposes; the lane groups, the chunk/parent walk and the remainder
 * are the shared driver in blake3_lanes.h. rt_hash_parents_storing_avx2 (and
 * its untagged form) also stores the children it loads, for insert_many's
 * level 0.
 *
 * Only this file's functions carry target("avx2"); the dispatcher calls them
 * only after checking the CPU and OS support AVX2.
 */
#include "rt_config.h"
#include "rt_blake3.h"

#if RT_X86
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2")))
#define AVX2_INLINE static inline __attribute__((always_inline)) AVX2

#define LANES 8

AVX2_INLINE __m256i loadu256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

AVX2_INLINE void storeu256(void *p, __m256i x)
{
    _mm256_storeu_si256((__m256i *)p, x);
}

AVX2_INLINE __m256i set1_u32(uint32_t x) { return _mm256_set1_epi32((int)x); }

/* ---- two single compressions at once (blake3_rows2.h) -------------------- */

AVX2_INLINE __m256i rotr12_256(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
}

AVX2_INLINE __m256i rotr7_256(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
}

#define ROW2_TARGET AVX2
#define ROWS2_ENTRY rt_compress2_avx2
#define row2_rotr12 rotr12_256
#define row2_rotr7 rotr7_256
#include "blake3_rows2.h"

/*
 * The compression function, eight lanes, as inline assembly. Written with
 * intrinsics, GCC 12 needs one register more than x86 has (16 state vectors
 * plus a temporary for the shift rotations) and picks values to spill that
 * are on the critical path: c += d would wait for d's store to be
 * forwarded, in every G function. Here the state lives in ymm0..ymm15 as
 * v0..v15 and v8 alone goes to memory, only while the four rotations by 12
 * or 7 borrow its register; v8 is not needed again until the next c += d.
 * The round schedule is shared with SSE4.1 (blake3_lane_rounds.h).
 * a + m[x] is formed first so that b, the value computed last, is added
 * last. Message words are memory operands: m[w] is at w*32 from %[msg].
 */
#define YMM(r) "%%ymm" #r
#define INSN3(op, src, src2_dst) op " " src ", " src2_dst ", " src2_dst "\n\t"

#define ADD_MESSAGE(a, b, w)                                                   \
    INSN3("vpaddd", #w "*32(%[msg])", YMM(a)) INSN3("vpaddd", YMM(b), YMM(a))
#define XOR_ROTATE_BYTES(d, a, mask)                                           \
    INSN3("vpxor", YMM(a), YMM(d)) INSN3("vpshufb", mask, YMM(d))
#define ADD(c, d) INSN3("vpaddd", YMM(d), YMM(c))
#define XOR(b, c) INSN3("vpxor", YMM(c), YMM(b))
/* b = b >>> n, with ymm8 (v8 spilled) as the temporary. */
#define ROTATE_SHIFTS(b, n)                                                    \
    "vpsrld $" #n ", " YMM(b) ", %%ymm8\n\t"                                   \
    "vpslld $(32-" #n "), " YMM(b) ", " YMM(b) "\n\t"                          \
    INSN3("vpor", "%%ymm8", YMM(b))
#define SPILL_V8 "vmovdqu %%ymm8, %[spill]\n\t"
#define RELOAD_V8 "vmovdqu %[spill], %%ymm8\n\t"

#include "blake3_lane_rounds.h"

static const uint8_t rotate16_mask[32] __attribute__((aligned(32))) = {
    2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
    2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
static const uint8_t rotate8_mask[32] __attribute__((aligned(32))) = {
    1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12,
    1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12};

/* m[w] holds message word w of every lane; cv likewise, updated in place.
 * Counter, length and flags are shared by all lanes. */
static __attribute__((noinline)) AVX2 void
compress_lanes(__m256i cv[8], const __m256i m[16], uint64_t counter,
               uint32_t block_len, uint32_t flags)
{
    const uint32_t row3[4] = {(uint32_t)counter, (uint32_t)(counter >> 32),
                              block_len, flags};
    __m256i spill;
    __asm__(
        "vmovdqu 0*32(%[cv]), %%ymm0\n\t"
        "vmovdqu 1*32(%[cv]), %%ymm1\n\t"
        "vmovdqu 2*32(%[cv]), %%ymm2\n\t"
        "vmovdqu 3*32(%[cv]), %%ymm3\n\t"
        "vmovdqu 4*32(%[cv]), %%ymm4\n\t"
        "vmovdqu 5*32(%[cv]), %%ymm5\n\t"
        "vmovdqu 6*32(%[cv]), %%ymm6\n\t"
        "vmovdqu 7*32(%[cv]), %%ymm7\n\t"
        "vpbroadcastd 0*4(%[iv]), %%ymm8\n\t"
        "vpbroadcastd 1*4(%[iv]), %%ymm9\n\t"
        "vpbroadcastd 2*4(%[iv]), %%ymm10\n\t"
        "vpbroadcastd 3*4(%[iv]), %%ymm11\n\t"
        "vpbroadcastd 0*4(%[row3]), %%ymm12\n\t"
        "vpbroadcastd 1*4(%[row3]), %%ymm13\n\t"
        "vpbroadcastd 2*4(%[row3]), %%ymm14\n\t"
        "vpbroadcastd 3*4(%[row3]), %%ymm15\n\t"
        SPILL_V8
        SEVEN_ROUNDS
        "vpxor %[spill], %%ymm0, %%ymm0\n\t"
        "vpxor %%ymm9, %%ymm1, %%ymm1\n\t"
        "vpxor %%ymm10, %%ymm2, %%ymm2\n\t"
        "vpxor %%ymm11, %%ymm3, %%ymm3\n\t"
        "vpxor %%ymm12, %%ymm4, %%ymm4\n\t"
        "vpxor %%ymm13, %%ymm5, %%ymm5\n\t"
        "vpxor %%ymm14, %%ymm6, %%ymm6\n\t"
        "vpxor %%ymm15, %%ymm7, %%ymm7\n\t"
        "vmovdqu %%ymm0, 0*32(%[cv])\n\t"
        "vmovdqu %%ymm1, 1*32(%[cv])\n\t"
        "vmovdqu %%ymm2, 2*32(%[cv])\n\t"
        "vmovdqu %%ymm3, 3*32(%[cv])\n\t"
        "vmovdqu %%ymm4, 4*32(%[cv])\n\t"
        "vmovdqu %%ymm5, 5*32(%[cv])\n\t"
        "vmovdqu %%ymm6, 6*32(%[cv])\n\t"
        "vmovdqu %%ymm7, 7*32(%[cv])\n\t"
        /* GCC does not know this asm dirtied the upper halves; leave them
         * clean so SSE code run after us pays no transition penalty. */
        "vzeroupper\n\t"
        : [spill] "=m"(spill)
        : [cv] "r"(cv), [msg] "r"(m), [iv] "r"(rt_blake3_iv),
          [row3] "r"(row3), [rot16] "m"(rotate16_mask),
          [rot8] "m"(rotate8_mask)
        : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
          "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
          "xmm15");
}

/* rows[k] = eight consecutive words of lane k -> cols[j] = word j of every
 * lane. Its own inverse. Pairs of 32-bit words, then 64-bit pairs, then the
 * 128-bit halves are interleaved. */
AVX2_INLINE void transpose8(const __m256i rows[8], __m256i cols[8])
{
    __m256i pairs_lo[4], pairs_hi[4];
    for (int k = 0; k < 4; k++) {
        pairs_lo[k] = _mm256_unpacklo_epi32(rows[2 * k], rows[2 * k + 1]);
        pairs_hi[k] = _mm256_unpackhi_epi32(rows[2 * k], rows[2 * k + 1]);
    }
    /* quads[q][j]: word j (and j+4 in the upper half) of lanes 4q..4q+3. */
    __m256i quads[2][4];
    for (int q = 0; q < 2; q++) {
        quads[q][0] = _mm256_unpacklo_epi64(pairs_lo[2 * q], pairs_lo[2 * q + 1]);
        quads[q][1] = _mm256_unpackhi_epi64(pairs_lo[2 * q], pairs_lo[2 * q + 1]);
        quads[q][2] = _mm256_unpacklo_epi64(pairs_hi[2 * q], pairs_hi[2 * q + 1]);
        quads[q][3] = _mm256_unpackhi_epi64(pairs_hi[2 * q], pairs_hi[2 * q + 1]);
    }
    for (int j = 0; j < 4; j++) {
        cols[j] = _mm256_permute2x128_si256(quads[0][j], quads[1][j], 0x20);
        cols[j + 4] = _mm256_permute2x128_si256(quads[0][j], quads[1][j], 0x31);
    }
}

AVX2_INLINE int load_u16(const uint8_t *p)
{
    uint16_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

AVX2_INLINE __m256i gather_u16_lanes(const uint8_t *const lane_children[LANES],
                                     size_t offset)
{
    return _mm256_setr_epi32(
        load_u16(lane_children[0] + offset), load_u16(lane_children[1] + offset),
        load_u16(lane_children[2] + offset), load_u16(lane_children[3] + offset),
        load_u16(lane_children[4] + offset), load_u16(lane_children[5] + offset),
        load_u16(lane_children[6] + offset), load_u16(lane_children[7] + offset));
}

/* The 32 bytes 0x01, arity, children[0..30): shift the first 32 child bytes
 * up by two across the 128-bit boundary (alignr only shifts within halves,
 * so it is fed the low half moved up) and put the header in the gap. */
AVX2_INLINE __m256i first_message_words(const uint8_t *children, __m256i header)
{
    __m256i bytes = loadu256(children);
    __m256i low_half_moved_up = _mm256_permute2x128_si256(bytes, bytes, 0x08);
    return _mm256_or_si256(_mm256_alignr_epi8(bytes, low_half_moved_up, 14),
                           header);
}

/*
 * Message block `block` (64-byte index within the whole parent message) of
 * every lane, transposed into m. The message is 0x01, arity, then the
 * children, so block b starts at child byte 64b-2. Its length is always 64
 * except for the last block, which is 2 or 34 bytes because the message
 * length is 2 + 32*arity.
 */
AVX2_INLINE void load_message_lanes(const uint8_t *const lane_children[LANES],
                                    unsigned arity, size_t block,
                                    size_t message_len, __m256i m[16])
{
    __m256i rows[LANES];
    size_t start = 64 * block;

    if (block == 0) {
        __m256i header = _mm256_setr_epi32(0x01 | (int)(arity << 8), 0, 0, 0,
                                           0, 0, 0, 0);
        for (int k = 0; k < LANES; k++)
            rows[k] = first_message_words(lane_children[k], header);
        transpose8(rows, m);
        for (int k = 0; k < LANES; k++)
            rows[k] = loadu256(lane_children[k] + 30);
        transpose8(rows, m + 8);
        return;
    }

    size_t child_offset = start - 2;
    if (start + 64 <= message_len) {
        for (int half = 0; half < 2; half++) {
            for (int k = 0; k < LANES; k++)
                rows[k] = loadu256(lane_children[k] + child_offset + 32 * half);
            transpose8(rows, m + 8 * half);
        }
        return;
    }

    /* Final partial block of 2 or 34 bytes: whole words, then the 2-byte
     * tail. The zero padding comes from zeroed words, never from reading past
     * a lane's children (the last lane's may end the caller's buffer). */
    for (int w = 0; w < 16; w++)
        m[w] = _mm256_setzero_si256();
    if (message_len - start == 34) {
        for (int k = 0; k < LANES; k++)
            rows[k] = loadu256(lane_children[k] + child_offset);
        transpose8(rows, m);
        m[8] = gather_u16_lanes(lane_children, child_offset + 32);
    } else {
        m[0] = gather_u16_lanes(lane_children, child_offset);
    }
}

/* Untagged message block `block` of every lane: child bytes 64*block on,
 * 64 bytes, or 32 (zero padded) for the last block of an odd arity. */
AVX2_INLINE void load_untagged_lanes(const uint8_t *const lane_children[LANES],
                                     size_t block, size_t message_len, __m256i m[16])
{
    __m256i rows[LANES];
    size_t start = 64 * block;
    int halves = start + 64 <= message_len ? 2 : 1;
    for (int half = 0; half < halves; half++) {
        for (int k = 0; k < LANES; k++)
            rows[k] = loadu256(lane_children[k] + start + 32 * half);
        transpose8(rows, m + 8 * half);
    }
    if (halves == 1)
        for (int w = 8; w < 16; w++)
            m[w] = _mm256_setzero_si256();
}

/* Transpose the chaining values back and store each lane's parent. */
AVX2_INLINE void store_lanes(const __m256i cv[8], uint8_t *const out[LANES])
{
    __m256i rows[LANES];
    transpose8(cv, rows);
    for (int k = 0; k < LANES; k++)
        storeu256(out[k], rows[k]);
}

/* ---- the storing entries' hooks (blake3_lanes.h) ------------------------ */

AVX2_INLINE __m256i zero256(void) { return _mm256_setzero_si256(); }

AVX2_INLINE __m256i rotr16_256(__m256i x)
{
    return _mm256_shuffle_epi8(x, loadu256(rotate16_mask));
}

/* Odd 16-bit elements (the high half of each word) from hi. */
AVX2_INLINE __m256i join16_256(__m256i lo, __m256i hi)
{
    return _mm256_blend_epi16(lo, hi, 0xAA);
}

/* Piece `piece` of every lane's children, loaded once into registers that
 * are both stored and transposed. The empty asm makes each register opaque,
 * so the compiler cannot satisfy either use by loading the caller's memory
 * a second time (which could see different bytes). Both halves of a lane
 * are stored together, so a streamed line is whole at once. */
AVX2_INLINE void load_storing_lanes(const uint8_t *const children[LANES],
                                    uint8_t *const stored[LANES], size_t child_bytes,
                                    size_t piece, int stream, __m256i c[16])
{
    __m256i rows[2][LANES];
    size_t start = 64 * piece;
    int halves = start + 64 <= child_bytes ? 2 : 1;
    for (int half = 0; half < halves; half++)
        for (int k = 0; k < LANES; k++) {
            rows[half][k] = loadu256(children[k] + start + 32 * half);
            __asm__("" : "+x"(rows[half][k]));
        }
    for (int k = 0; k < LANES; k++) {
        if (stored[k] == NULL)
            continue;
        for (int half = 0; half < halves; half++) {
            __m256i *to = (__m256i *)(stored[k] + start + 32 * half);
            if (stream)
                _mm256_stream_si256(to, rows[half][k]);
            else
                storeu256(to, rows[half][k]);
        }
    }
    transpose8(rows[0], c);
    if (halves == 2)
        transpose8(rows[1], c + 8);
    else
        for (int w = 8; w < 16; w++)
            c[w] = _mm256_setzero_si256();
}

/* ---- the lane driver (blake3_lanes.h), instantiated for AVX2 ------------- */

typedef __m256i lane_vec;
#define LANE_TARGET AVX2
#define LANES_ENTRY rt_hash_parents_avx2
#define LANES_UNTAGGED_ENTRY rt_hash_parents_untagged_avx2
#define lanes_load_untagged load_untagged_lanes
#define lanes_set1 set1_u32
#define lanes_compress compress_lanes
#define lanes_load_message load_message_lanes
#define lanes_store store_lanes
#define LANES_COMPRESS_ONE rt_compress_sse41
#define LANES_STORING_ENTRY rt_hash_parents_storing_avx2
#define LANES_STORING_UNTAGGED_ENTRY rt_hash_parents_untagged_storing_avx2
#define lanes_load_storing load_storing_lanes
#define lanes_rotr16 rotr16_256
#define lanes_join16 join16_256
#define lanes_zero zero256
#include "blake3_lanes.h"
#endif /* RT_X86 */
