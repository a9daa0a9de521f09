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
 * Optional: the storing entries (lanes_storing_entry below), defined when
 * LANES_STORING_ENTRY is, need
 *   LANES_STORING_ENTRY, LANES_STORING_UNTAGGED_ENTRY   their names
 *   lanes_load_storing(children, stored, child_bytes, piece, stream, c)
 *                  children bytes [64 piece, 64 piece + 64) of every lane
 *                  (32 where the children end there), each loaded once,
 *                  stored from the same registers to stored[k] + 64 piece
 *                  for every lane whose pointer is not NULL
 *                  (streaming stores if `stream`), and transposed into c[16],
 *                  words past the children zero
 *   lanes_rotr16(x)     every word rotated right by 16 bits
 *   lanes_join16(lo, hi)  the low 16 bits of each word of lo, the high 16 of hi
 *   lanes_zero()
 *   LANES_NARROW_STORING_ENTRY, LANES_NARROW_STORING_UNTAGGED_ENTRY (optional)
 *                  the narrow kernels' storing entries
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
    /* Where the next group's children start (0: nowhere to prefetch). A
     * group's children are one contiguous run, LANES * arity nodes, but a
     * block reads them a line per lane, strided, which the hardware
     * prefetcher does not follow. Each block prefetches LANES lines of the
     * next group's run in address order (a group has at least arity / 2
     * blocks, enough to cover its LANES * arity / 2 lines): as many as one
     * line per lane, but in an order the hardware prefetcher streams on
     * from. */
    uintptr_t upcoming;
#ifdef LANES_STORING_ENTRY
    /* Storing entries only: where each lane's children are copied (NULL:
     * not copied, a padding lane), and whether with streaming stores. */
    uint8_t *stored[LANES];
    int stream;
#endif
};

#ifdef LANES_STORING_ENTRY
/* Message block `block` of every lane, for the storing entries: the
 * children are loaded (and stored) once each, in aligned 64-byte pieces,
 * and the message words are made from those registers. An untagged block
 * is a piece. A tagged block starts 2 bytes earlier (after the 0x01, arity
 * header), so word w is the high half of piece word w-1 with the low half
 * of piece word w; word 0 takes its low half from the header (block 0) or
 * from the previous piece's last word, carried in `carry` (rotated, as
 * left by the previous block). Loading each message block directly, as the
 * other entries do, would read the 2 bytes between blocks twice. */
LANE_INLINE void load_storing_block(const struct lane_group *group, unsigned arity,
                                    size_t block, int tagged, lane_vec *carry,
                                    lane_vec m[16])
{
    size_t child_bytes = (size_t)arity * RT_HASH_LEN;
    if (64 * block >= child_bytes) {
        /* Only the 2 header-shifted bytes of the last piece are left. */
        m[0] = lanes_join16(*carry, lanes_zero());
        for (int w = 1; w < 16; w++)
            m[w] = lanes_zero();
        return;
    }
    if (!tagged) {
        lanes_load_storing(group->children, group->stored, child_bytes, block, group->stream, m);
        return;
    }
    lane_vec c[16];
    lanes_load_storing(group->children, group->stored, child_bytes, block, group->stream, c);
    lane_vec previous = block == 0 ? lanes_set1(0x01u | (uint32_t)arity << 8) : *carry;
    for (int w = 0; w < 16; w++) {
        lane_vec rotated = lanes_rotr16(c[w]);
        m[w] = lanes_join16(previous, rotated);
        previous = rotated;
    }
    *carry = previous;
}
#endif

#ifdef LANES_STORING_ENTRY
/* Streaming stores only when every lane writes whole cache lines (an even
 * arity and line-aligned copies): a lane that wrote half lines would leave
 * partial lines in the write-combining buffers while the other lanes
 * store, and flushing those costs more than the read of the destination
 * that an ordinary store makes. */
LANE_INLINE int lanes_may_stream(const struct lane_group *group, size_t stride)
{
#ifdef RT_NO_STREAMING
    (void)group;
    (void)stride;
    return 0;
#else
    uintptr_t misaligned = stride & 63;
    for (int k = 0; k < LANES; k++)
        misaligned |= (uintptr_t)group->stored[k] & 63;
    return misaligned == 0;
#endif
}
#endif

/* Chaining values of chunk `chunk` of every lane. is_root: this chunk is the
 * whole message. `storing` (a constant) selects load_storing_block, whose
 * carry persists from chunk to chunk. */
LANE_INLINE void chunk_lanes(const struct lane_group *group, unsigned arity,
                             size_t message_len, size_t chunk, int is_root,
                             int tagged, int storing, lane_vec *carry, lane_vec cv[8])
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
        if (group->upcoming) {
            size_t lines = (size_t)LANES * arity * RT_HASH_LEN / 64;
            for (size_t line = block * LANES; line < (block + 1) * LANES && line < lines; line++)
                __builtin_prefetch((const void *)(group->upcoming + 64 * line), 0, 3);
        }
#ifdef LANES_STORING_ENTRY
        if (storing)
            load_storing_block(group, arity, block, tagged, carry, m);
        else
#endif
        if (tagged)
            lanes_load_message(group->children, arity, block, message_len, m);
        else
            lanes_load_untagged(group->children, block, message_len, m);
        (void)storing;
        (void)carry;
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
                                  int tagged, int storing)
{
    size_t message_len = (tagged ? 2 : 0) + (size_t)arity * RT_HASH_LEN;
    size_t chunks = (message_len + RT_BLAKE3_CHUNK_LEN - 1) / RT_BLAKE3_CHUNK_LEN;
    lane_vec cv[8];
    lane_vec carry = lanes_set1(0);

    if (chunks == 1) {
        chunk_lanes(group, arity, message_len, 0, 1, tagged, storing, &carry, cv);
    } else {
        lane_vec stack[4][8];
        unsigned depth = 0;
        for (size_t chunk = 0; chunk + 1 < chunks; chunk++) {
            chunk_lanes(group, arity, message_len, chunk, 0, tagged, storing, &carry, cv);
            for (size_t done = chunk + 1; (done & 1) == 0; done >>= 1) {
                depth--;
                parent_lanes(stack[depth], cv, 0, cv);
            }
            memcpy(stack[depth++], cv, sizeof cv);
        }
        chunk_lanes(group, arity, message_len, chunks - 1, 0, tagged, storing, &carry, cv);
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
    parents_lanes_of(group, arity, 1, 0);
}

static LANE_TARGET void parents_lanes_untagged(const struct lane_group *group,
                                               unsigned arity)
{
    parents_lanes_of(group, arity, 0, 0);
}

#ifdef LANES_STORING_ENTRY
static LANE_TARGET void parents_lanes_tagged_storing(const struct lane_group *group,
                                                     unsigned arity)
{
    parents_lanes_of(group, arity, 1, 1);
}

static LANE_TARGET void parents_lanes_untagged_storing(const struct lane_group *group,
                                                       unsigned arity)
{
    parents_lanes_of(group, arity, 0, 1);
}
#endif

LANE_INLINE void parents_lanes(const struct lane_group *group, unsigned arity, int tagged,
                               int storing)
{
#ifdef LANES_STORING_ENTRY
    if (storing) {
        if (tagged)
            parents_lanes_tagged_storing(group, arity);
        else
            parents_lanes_untagged_storing(group, arity);
        return;
    }
#endif
    (void)storing;
    if (tagged)
        parents_lanes_tagged(group, arity);
    else
        parents_lanes_untagged(group, arity);
}

/* Both entry kinds: with `stored` NULL the plain parents kernel; otherwise
 * the children of parent i are also copied to stored[i], from the registers
 * they were hashed from (see LANES_STORING_ENTRY). */
LANE_INLINE void lanes_entry(const uint8_t *children, size_t count, unsigned arity,
                             uint8_t *out, uint8_t *const *stored, int tagged)
{
    const size_t stride = (size_t)arity * RT_HASH_LEN;
    const int storing = stored != NULL;
    size_t groups = count / LANES;
    struct lane_group group;
#ifdef LANES_STORING_ENTRY
    group.stream = 0;
#endif

    for (size_t g = 0; g < groups; g++) {
        size_t first = g * LANES;
        for (int k = 0; k < LANES; k++) {
            group.children[k] = children + (first + k) * stride;
            group.out[k] = out + (first + k) * RT_HASH_LEN;
#ifdef LANES_STORING_ENTRY
            group.stored[k] = storing ? stored[first + k] : NULL;
#endif
        }
#ifdef LANES_STORING_ENTRY
        if (storing)
            group.stream = lanes_may_stream(&group, stride);
#endif
        /* The last group prefetches what follows this call's children too:
         * where they are a piece of a longer run (the caller's leaves, cut
         * at every level-1 chunk), the next call starts on them, and a
         * group started cold costs several groups' worth of prefetching
         * to catch up. Past the end of a buffer this reads nothing: a
         * prefetch never faults, and the address is only an integer. */
        group.upcoming = (uintptr_t)children + (first + LANES) * stride;
        parents_lanes(&group, arity, tagged, storing);
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
#ifdef LANES_NARROW_STORING_ENTRY
    const int narrow_stores = 1;
#else
    const int narrow_stores = 0;
#endif
    if (left >= 2 && left <= LANES / 2 && (narrow_stores || !storing)) {
#ifdef LANES_NARROW_STORING_ENTRY
        if (storing) {
            if (tagged)
                LANES_NARROW_STORING_ENTRY(children + done * stride, left, arity,
                                           out + done * RT_HASH_LEN, stored + done);
            else
                LANES_NARROW_STORING_UNTAGGED_ENTRY(children + done * stride, left, arity,
                                                    out + done * RT_HASH_LEN, stored + done);
            return;
        }
#endif
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
#ifdef LANES_STORING_ENTRY
            /* A padding lane reads the last parent's children again, maybe
             * different bytes if the caller is changing them: it must not
             * store them. */
            group.stored[k] = storing && k < left ? stored[parent] : NULL;
#endif
        }
#ifdef LANES_STORING_ENTRY
        if (storing)
            group.stream = lanes_may_stream(&group, stride);
#endif
        group.upcoming = 0;
        parents_lanes(&group, arity, tagged, storing);
    } else if (left == 1) {
        const uint8_t header[2] = {0x01, (uint8_t)arity};
        const uint8_t *message = children + done * stride;
#ifdef LANES_STORING_ENTRY
        /* The single path reads some bytes twice (its blocks are not the
         * children's pieces), so it hashes a private copy, which is also
         * what is stored. */
        uint8_t copy[RT_MAX_ARITY * RT_HASH_LEN];
        if (storing) {
            rt_copy_once(copy, message, stride);
            memcpy(stored[done], copy, stride);
            message = copy;
        }
#endif
        rt_blake3_prefixed(LANES_COMPRESS_ONE, header, tagged ? sizeof header : 0,
                           message, stride, out + done * RT_HASH_LEN);
    }
}

LANE_TARGET void LANES_ENTRY(const uint8_t *children, size_t count, unsigned arity,
                             uint8_t *out)
{
    lanes_entry(children, count, arity, out, NULL, 1);
}

LANE_TARGET void LANES_UNTAGGED_ENTRY(const uint8_t *children, size_t count,
                                      unsigned arity, uint8_t *out)
{
    lanes_entry(children, count, arity, out, NULL, 0);
}

#ifdef LANES_STORING_ENTRY
/* The parents kernel that also copies the children of parent i to
 * stored[i] (level 0 of a tree, whose chunks need not be contiguous): each
 * byte of `children` is loaded once, and the registers it was loaded into
 * are both hashed and stored, so the stored children hash to the parents
 * written even if the caller changes `children` meanwhile. The same
 * guarantee as hashing and storing a private copy, without the copy. The
 * copies must not overlap `children`, `out` or each other. */
LANE_TARGET void LANES_STORING_ENTRY(const uint8_t *children, size_t count, unsigned arity,
                                     uint8_t *out, uint8_t *const *stored)
{
    lanes_entry(children, count, arity, out, stored, 1);
}

LANE_TARGET void LANES_STORING_UNTAGGED_ENTRY(const uint8_t *children, size_t count,
                                              unsigned arity, uint8_t *out,
                                              uint8_t *const *stored)
{
    lanes_entry(children, count, arity, out, stored, 0);
}
#endif

#undef LANE_INLINE

#endif /* RT_BLAKE3_LANES_H */
