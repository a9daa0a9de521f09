/*
 * The multi-lane LeanIMT parent driver, written once and compiled once per
 * SIMD kernel: one parent per 32-bit lane. All parents of a call share an
 * arity, so every lane has the same message length, block count, counters
 * and flags; only the message words differ, and those are transposed so
 * vector w holds word w of every lane. Messages longer than one chunk
 * (arity >= 32) stay lane-wise too: chunk chaining values and the parent
 * nodes joining them are uniform across lanes, and already transposed, so
 * the chunk tree is built in registers.
 *
 * This header is a template, not an interface: an ISA file (blake3_sse41.c,
 * blake3_avx2.c) defines its table below, then includes it once. Every
 * function here takes the ISA file's target attribute and inlines that
 * file's helpers, so each kernel is specialised by the compiler exactly as
 * if it had been written out by hand; there is no indirect call per block.
 * A new kernel (16 lanes with AVX-512, 4 with NEON) is one more file that
 * defines the table.
 *
 * The table:
 *   LANES          parents hashed at once
 *   lane_vec       vector type holding one 32-bit word of every lane
 *   LANE_TARGET    attribute giving the ISA, e.g. __attribute__((target("avx2")))
 *   LANES_ENTRY    name of the rt_hash_parents_* function to define
 *   LANES_UNTAGGED_ENTRY  name of the rt_hash_parents_untagged_* function
 *   lanes_set1(x)                       x in every lane
 *   lanes_compress(cv, m, counter, block_len, flags)
 *                  one compression of every lane: cv[8] updated in place,
 *                  m[w] is message word w of every lane
 *   lanes_load_message(children, arity, block, message_len, m)
 *                  message block `block` of every lane, transposed into m[16]
 *   lanes_load_untagged(children, block, message_len, m)
 *                  the same for an untagged message (children only: block b
 *                  is child bytes 64b.., 64 or 32 bytes long)
 *   lanes_store(cv, out)                transpose cv[8] back, 32 bytes per lane
 *   LANES_COMPRESS_ONE                  rt_compress_fn for a lone remainder
 *   LANES_NARROW_ENTRY, LANES_NARROW_UNTAGGED_ENTRY (optional)
 *                  kernels with half as many lanes, which the CPU must also
 *                  support, for a remainder that fits in them
 *
 * Both message forms share one driver: `tagged` is a constant at each entry,
 * so the compiler specialises the walk for each and the untagged loads (whole
 * aligned runs of the children, no header shift) cost nothing in the tagged
 * path.
 */
#ifndef RT_BLAKE3_LANES_H
#define RT_BLAKE3_LANES_H

#include <string.h>

#include "rt_blake3.h"

#define LANE_INLINE static inline __attribute__((always_inline)) LANE_TARGET

LANE_INLINE void set_iv_lanes(lane_vec cv[8])
{
    for (int i = 0; i < 8; i++)
        cv[i] = lanes_set1(rt_blake3_iv[i]);
}

/* LANES parents hashed together, one per lane. */
struct lane_group {
    const uint8_t *children[LANES];
    uint8_t *out[LANES];
    /* The next group's children, or NULL: with arity >= 16 each lane reads a
     * short run of its own, too short for the hardware prefetcher to lock
     * on to, so the group ahead is prefetched a block at a time. */
    const uint8_t *const *upcoming;
};

/* Chaining values of chunk `chunk` of every lane. is_root: this chunk is the
 * whole message. */
LANE_INLINE void chunk_lanes(const struct lane_group *group, unsigned arity,
                             size_t message_len, size_t chunk, int is_root,
                             int tagged, lane_vec cv[8])
{
    size_t total_blocks = (message_len + 63) / 64;
    size_t first = chunk * (RT_BLAKE3_CHUNK_LEN / 64);
    size_t end = first + RT_BLAKE3_CHUNK_LEN / 64;
    if (end > total_blocks)
        end = total_blocks;

    lane_vec m[16];
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
        if (group->upcoming != NULL)
            for (int k = 0; k < LANES; k++)
                __builtin_prefetch(group->upcoming[k] + 64 * block, 0, 3);
        if (tagged)
            lanes_load_message(group->children, arity, block, message_len, m);
        else
            lanes_load_untagged(group->children, block, message_len, m);
        lanes_compress(cv, m, chunk, block_len, flags);
    }
}

LANE_INLINE void parent_lanes(const lane_vec left[8], const lane_vec right[8],
                              uint32_t flags, lane_vec cv[8])
{
    lane_vec m[16];
    for (int i = 0; i < 8; i++) {
        m[i] = left[i];
        m[8 + i] = right[i];
    }
    set_iv_lanes(cv);
    lanes_compress(cv, m, 0, 64, RT_FLAG_PARENT | flags);
}

/* Messages are at most 8162 bytes, i.e. 8 chunks, so the stack of completed
 * subtrees needs at most 4 entries. */
LANE_INLINE void parents_lanes_of(const struct lane_group *group, unsigned arity,
                                  int tagged)
{
    size_t message_len = (tagged ? 2 : 0) + (size_t)arity * RT_HASH_LEN;
    size_t chunks = (message_len + RT_BLAKE3_CHUNK_LEN - 1) / RT_BLAKE3_CHUNK_LEN;
    lane_vec cv[8];

    if (chunks == 1) {
        chunk_lanes(group, arity, message_len, 0, 1, tagged, cv);
    } else {
        lane_vec stack[4][8];
        unsigned depth = 0;
        for (size_t chunk = 0; chunk + 1 < chunks; chunk++) {
            chunk_lanes(group, arity, message_len, chunk, 0, tagged, cv);
            for (size_t done = chunk + 1; (done & 1) == 0; done >>= 1) {
                depth--;
                parent_lanes(stack[depth], cv, 0, cv);
            }
            memcpy(stack[depth++], cv, sizeof cv);
        }
        chunk_lanes(group, arity, message_len, chunks - 1, 0, tagged, cv);
        while (depth > 0) {
            depth--;
            parent_lanes(stack[depth], cv, depth == 0 ? RT_FLAG_ROOT : 0, cv);
        }
    }
    lanes_store(cv, group->out);
}

/* One out-of-line copy per message form: the walk is large, and the driver
 * below calls it from two places. */
static LANE_TARGET void parents_lanes_tagged(const struct lane_group *group, unsigned arity)
{
    parents_lanes_of(group, arity, 1);
}

static LANE_TARGET void parents_lanes_untagged(const struct lane_group *group,
                                               unsigned arity)
{
    parents_lanes_of(group, arity, 0);
}

LANE_INLINE void parents_lanes(const struct lane_group *group, unsigned arity, int tagged)
{
    if (tagged)
        parents_lanes_tagged(group, arity);
    else
        parents_lanes_untagged(group, arity);
}

LANE_INLINE void lanes_entry(const uint8_t *children, size_t count, unsigned arity,
                             uint8_t *out, int tagged)
{
    const size_t stride = (size_t)arity * RT_HASH_LEN;
    size_t groups = count / LANES;
    const uint8_t *next_children[LANES];
    struct lane_group group;

    for (size_t g = 0; g < groups; g++) {
        size_t first = g * LANES;
        for (int k = 0; k < LANES; k++) {
            group.children[k] = children + (first + k) * stride;
            group.out[k] = out + (first + k) * RT_HASH_LEN;
        }
        group.upcoming = NULL;
        if (g + 1 < groups) {
            for (int k = 0; k < LANES; k++)
                next_children[k] = children + (first + LANES + k) * stride;
            group.upcoming = next_children;
        }
        parents_lanes(&group, arity, tagged);
    }

    /* A group costs about what one parent does on the single-message path
     * (whose compressions form one dependency chain), so two or more left
     * over parents share a group padded with copies of the last one. */
    size_t done = groups * LANES;
    size_t left = count - done;
#ifdef LANES_NARROW_ENTRY
    /* Where a wide group costs more than a narrow one (AVX-512 on cores that
     * split 512-bit operations in two), half a group or less of padding
     * would be paid for at the wide rate. */
    if (left >= 2 && left <= LANES / 2) {
        if (tagged)
            LANES_NARROW_ENTRY(children + done * stride, left, arity, out + done * RT_HASH_LEN);
        else
            LANES_NARROW_UNTAGGED_ENTRY(children + done * stride, left, arity,
                                        out + done * RT_HASH_LEN);
        return;
    }
#endif
    if (left >= 2) {
        uint8_t discarded[LANES][RT_HASH_LEN];
        for (size_t k = 0; k < LANES; k++) {
            size_t parent = k < left ? done + k : count - 1;
            group.children[k] = children + parent * stride;
            group.out[k] = k < left ? out + parent * RT_HASH_LEN : discarded[k];
        }
        group.upcoming = NULL;
        parents_lanes(&group, arity, tagged);
    } else if (left == 1) {
        const uint8_t header[2] = {0x01, (uint8_t)arity};
        rt_blake3_prefixed(LANES_COMPRESS_ONE, header, tagged ? sizeof header : 0,
                           children + done * stride, stride,
                           out + done * RT_HASH_LEN);
    }
}

LANE_TARGET void LANES_ENTRY(const uint8_t *children, size_t count, unsigned arity,
                             uint8_t *out)
{
    lanes_entry(children, count, arity, out, 1);
}

LANE_TARGET void LANES_UNTAGGED_ENTRY(const uint8_t *children, size_t count,
                                      unsigned arity, uint8_t *out)
{
    lanes_entry(children, count, arity, out, 0);
}

#undef LANE_INLINE

#endif /* RT_BLAKE3_LANES_H */
