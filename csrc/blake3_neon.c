/*
 * BLAKE3 LeanIMT parents with NEON (aarch64), written from the BLAKE3
 * specification: four parents at once, one per 32-bit lane of sixteen
 * 128-bit state vectors. This file provides the four-lane compression,
 * message loading and transposes; the lane groups, the chunk/parent walk and
 * the remainder are the shared driver in blake3_lanes.h, and the round
 * schedule is the one the x86 kernels use (blake3_lane_rounds.h).
 *
 * NEON is part of the aarch64 baseline, so nothing here needs a target
 * attribute and the dispatcher may pick this kernel unconditionally. Only
 * little-endian aarch64 is built (RT_NEON): the lanes hold message words
 * loaded straight from bytes, which is the BLAKE3 word order only there.
 * A lone remaining parent uses the portable single-message compression.
 */
#include "rt_config.h"
#include "rt_blake3.h"

#if RT_NEON
#include <arm_neon.h>
#include <string.h>

#define NEON_INLINE static inline __attribute__((always_inline))

#define LANES 4

/*
 * The compression function, four lanes, as inline assembly so it shares the
 * round schedule with the x86 kernels. aarch64 has 32 vector registers, so
 * nothing is spilled: the state is v0..v15, message word w is loaded from
 * w*16 past %[msg] into a temporary next to its use, and each G function
 * of a half round has its own temporaries (v2a for a's message word, v2b
 * for b's rotation; a is 0..3 and b 4..7, giving v20..v27) so the four run
 * independently. Whole-byte rotations are one table lookup.
 */
#define ADD_MESSAGE(a, b, w)                                                   \
    "ldr q2" #a ", [%[msg], #(" #w "*16)]\n\t"                                 \
    "add v2" #a ".4s, v2" #a ".4s, v" #a ".4s\n\t"                             \
    "add v" #a ".4s, v2" #a ".4s, v" #b ".4s\n\t"
#define XOR_ROTATE_BYTES(d, a, mask)                                           \
    "eor v" #d ".16b, v" #d ".16b, v" #a ".16b\n\t"                            \
    "tbl v" #d ".16b, {v" #d ".16b}, " mask ".16b\n\t"
#define ADD(c, d) "add v" #c ".4s, v" #c ".4s, v" #d ".4s\n\t"
#define XOR(b, c) "eor v" #b ".16b, v" #b ".16b, v" #c ".16b\n\t"
#define ROTATE_SHIFTS(b, n)                                                    \
    "ushr v2" #b ".4s, v" #b ".4s, #" #n "\n\t"                                \
    "shl v" #b ".4s, v" #b ".4s, #(32-" #n ")\n\t"                             \
    "orr v" #b ".16b, v" #b ".16b, v2" #b ".16b\n\t"
/* Registers enough: v8 never leaves its register. */
#define SPILL_V8 ""
#define RELOAD_V8 ""

#include "blake3_lane_rounds.h"

static const uint8_t rotate16_table[16] = {2, 3, 0, 1, 6, 7, 4, 5,
                                           10, 11, 8, 9, 14, 15, 12, 13};
static const uint8_t rotate8_table[16] = {1, 2, 3, 0, 5, 6, 7, 4,
                                          9, 10, 11, 8, 13, 14, 15, 12};

/* m[w] holds message word w of every lane; cv likewise, updated in place.
 * Counter, length and flags are shared by all lanes. */
static __attribute__((noinline)) void
compress_lanes(uint32x4_t cv[8], const uint32x4_t m[16], uint64_t counter,
               uint32_t block_len, uint32_t flags)
{
    const uint32_t row3[4] = {(uint32_t)counter, (uint32_t)(counter >> 32),
                              block_len, flags};
    uint8x16_t rot16 = vld1q_u8(rotate16_table);
    uint8x16_t rot8 = vld1q_u8(rotate8_table);
    __asm__(
        "ldp q0, q1, [%[cv]]\n\t"
        "ldp q2, q3, [%[cv], #32]\n\t"
        "ldp q4, q5, [%[cv], #64]\n\t"
        "ldp q6, q7, [%[cv], #96]\n\t"
        "ldr q20, [%[iv]]\n\t"
        "ldr q21, [%[row3]]\n\t"
        "dup v8.4s, v20.s[0]\n\t"
        "dup v9.4s, v20.s[1]\n\t"
        "dup v10.4s, v20.s[2]\n\t"
        "dup v11.4s, v20.s[3]\n\t"
        "dup v12.4s, v21.s[0]\n\t"
        "dup v13.4s, v21.s[1]\n\t"
        "dup v14.4s, v21.s[2]\n\t"
        "dup v15.4s, v21.s[3]\n\t"
        SEVEN_ROUNDS
        "eor v0.16b, v0.16b, v8.16b\n\t"
        "eor v1.16b, v1.16b, v9.16b\n\t"
        "eor v2.16b, v2.16b, v10.16b\n\t"
        "eor v3.16b, v3.16b, v11.16b\n\t"
        "eor v4.16b, v4.16b, v12.16b\n\t"
        "eor v5.16b, v5.16b, v13.16b\n\t"
        "eor v6.16b, v6.16b, v14.16b\n\t"
        "eor v7.16b, v7.16b, v15.16b\n\t"
        "stp q0, q1, [%[cv]]\n\t"
        "stp q2, q3, [%[cv], #32]\n\t"
        "stp q4, q5, [%[cv], #64]\n\t"
        "stp q6, q7, [%[cv], #96]\n\t"
        :
        : [cv] "r"(cv), [msg] "r"(m), [iv] "r"(rt_blake3_iv),
          [row3] "r"(row3), [rot16] "w"(rot16), [rot8] "w"(rot8)
        : "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8",
          "v9", "v10", "v11", "v12", "v13", "v14", "v15", "v20", "v21", "v22",
          "v23", "v24", "v25", "v26", "v27");
}

/* rows[k] = four consecutive words of lane k -> cols[j] = word j of every
 * lane. Its own inverse. */
NEON_INLINE void transpose4(const uint32x4_t rows[4], uint32x4_t cols[4])
{
    uint32x4_t even01 = vtrn1q_u32(rows[0], rows[1]);
    uint32x4_t odd01 = vtrn2q_u32(rows[0], rows[1]);
    uint32x4_t even23 = vtrn1q_u32(rows[2], rows[3]);
    uint32x4_t odd23 = vtrn2q_u32(rows[2], rows[3]);
#define PAIRS(f, x, y)                                                         \
    vreinterpretq_u32_u64(f(vreinterpretq_u64_u32(x), vreinterpretq_u64_u32(y)))
    cols[0] = PAIRS(vtrn1q_u64, even01, even23);
    cols[1] = PAIRS(vtrn1q_u64, odd01, odd23);
    cols[2] = PAIRS(vtrn2q_u64, even01, even23);
    cols[3] = PAIRS(vtrn2q_u64, odd01, odd23);
#undef PAIRS
}

NEON_INLINE uint32x4_t load_words(const uint8_t *p)
{
    return vreinterpretq_u32_u8(vld1q_u8(p));
}

NEON_INLINE uint32_t load_u16(const uint8_t *p)
{
    uint16_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* Four words of every lane from `offset` into its children, transposed into
 * m[0..3]. */
NEON_INLINE void load_four_words(const uint8_t *const lane_children[LANES],
                                 size_t offset, uint32x4_t m[4])
{
    uint32x4_t rows[LANES];
    for (int k = 0; k < LANES; k++)
        rows[k] = load_words(lane_children[k] + offset);
    transpose4(rows, m);
}

/*
 * Message block `block` (64-byte index within the whole parent message) of
 * every lane, transposed into m. The message is 0x01, arity, then the
 * children, so block b starts at child byte 64b-2. Its length is always 64
 * except for the last block, which is 2 or 34 bytes because the message
 * length is 2 + 32*arity.
 */
NEON_INLINE void load_message_lanes(const uint8_t *const lane_children[LANES],
                                    unsigned arity, size_t block,
                                    size_t message_len, uint32x4_t m[16])
{
    size_t start = 64 * block;

    if (block == 0) {
        /* Word 0..3: the two header bytes, then children[0..14); ext takes
         * the header from the top of one vector and the rest from the
         * next. Every arity has at least 64 child bytes, so the other words
         * are whole loads from children + 14, + 30, + 46. */
        const uint8_t header_bytes[16] = {[14] = 0x01, [15] = (uint8_t)arity};
        uint8x16_t header = vld1q_u8(header_bytes);
        uint32x4_t rows[LANES];
        for (int k = 0; k < LANES; k++)
            rows[k] = vreinterpretq_u32_u8(
                vextq_u8(header, vld1q_u8(lane_children[k]), 14));
        transpose4(rows, m);
        for (int w = 4; w < 16; w += 4)
            load_four_words(lane_children, 4 * (size_t)w - 2, m + w);
        return;
    }

    size_t child_offset = start - 2;
    if (start + 64 <= message_len) {
        for (int w = 0; w < 16; w += 4)
            load_four_words(lane_children, child_offset + 4 * (size_t)w, m + w);
        return;
    }

    /* Final partial block of 2 or 34 bytes: whole words first, then the
     * 2-byte tail. The zero padding comes from the zeroed words, never from
     * reading past a lane's children (the last lane's may end the caller's
     * buffer). */
    size_t tail_words = (message_len - start) / 4;
    for (int w = 0; w < 16; w++)
        m[w] = vdupq_n_u32(0);
    for (size_t w = 0; w < tail_words; w += 4)
        load_four_words(lane_children, child_offset + 4 * w, m + w);
    size_t tail = child_offset + 4 * tail_words;
    const uint32_t tails[LANES] = {
        load_u16(lane_children[0] + tail), load_u16(lane_children[1] + tail),
        load_u16(lane_children[2] + tail), load_u16(lane_children[3] + tail)};
    m[tail_words] = vld1q_u32(tails);
}

/* Untagged message block `block` of every lane: child bytes 64*block on,
 * 64 bytes, or 32 (zero padded) for the last block of an odd arity. */
NEON_INLINE void load_untagged_lanes(const uint8_t *const lane_children[LANES],
                                     size_t block, size_t message_len, uint32x4_t m[16])
{
    size_t start = 64 * block;
    int words = start + 64 <= message_len ? 16 : 8;
    for (int w = 0; w < 16; w += 4) {
        if (w < words) {
            load_four_words(lane_children, start + 4 * (size_t)w, m + w);
        } else {
            for (int i = 0; i < 4; i++)
                m[w + i] = vdupq_n_u32(0);
        }
    }
}

/* Transpose the chaining values back and store each lane's parent. */
NEON_INLINE void store_lanes(const uint32x4_t cv[8], uint8_t *const out[LANES])
{
    uint32x4_t rows[LANES];
    for (int half = 0; half < 2; half++) {
        transpose4(cv + 4 * half, rows);
        for (int k = 0; k < LANES; k++)
            vst1q_u8(out[k] + 16 * half, vreinterpretq_u8_u32(rows[k]));
    }
}

/* ---- the lane driver (blake3_lanes.h), instantiated for NEON -------------- */

typedef uint32x4_t lane_vec;
#define LANE_TARGET
#define LANES_ENTRY rt_hash_parents_neon
#define LANES_UNTAGGED_ENTRY rt_hash_parents_untagged_neon
#define lanes_load_untagged load_untagged_lanes
#define lanes_set1 vdupq_n_u32
#define lanes_compress compress_lanes
#define lanes_load_message load_message_lanes
#define lanes_store store_lanes
#define LANES_COMPRESS_ONE rt_compress_portable
#include "blake3_lanes.h"
#endif /* RT_NEON */
