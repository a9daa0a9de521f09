/*
 * The build engine's interface (build.c): hashing new levels from level 0,
 * shared by insert_many (tree levels) and compute_root (flat buffers).
 * Internal; cffi never reads this file.
 */
#ifndef RT_BUILD_H
#define RT_BUILD_H

#include "rt_config.h"

#include <stdint.h>
#include <string.h>

#include "level.h"
#include "rt_arith.h"

/* ---- node stores: one view over chunked levels and flat buffers --------- */

// The hashing loop below serves both tree levels (chunked) and compute_root
// (flat buffers, including the caller's leaves), so it reads nodes through
// this small view instead of two copies of the loop.
typedef struct node_store {
    rt_chunk *const *chunks; /* chunked storage, or NULL when flat is set */
    uint8_t *flat;
    const uint8_t *cold;     /* chunked levels: nodes [0, cold_len) in place */
    uint64_t cold_len;
    uint64_t chunk_cap;
} node_store;

static inline node_store store_of_level(const rt_level *level, unsigned chunk_cap)
{
    node_store store = {level->table ? level->table->slots : NULL, NULL, level->cold,
                        level->cold_len, chunk_cap};
    return store;
}

static inline node_store store_of_buffer(const uint8_t *buffer)
{
    // Flat stores are read-only when they wrap caller memory; the cast only
    // lets one struct describe both inputs and outputs.
    node_store store = {NULL, (uint8_t *)buffer, NULL, 0, 0};
    return store;
}

static inline uint8_t *store_node(const node_store *store, uint64_t index)
{
    if (store->flat)
        return store->flat + index * 32u;
    // Cold nodes are only ever read: writes start at a level's last node,
    // which is never cold (see level.h).
    if (index < store->cold_len)
        return (uint8_t *)store->cold + index * 32u;
    return store->chunks[rt_div(index - store->cold_len, (unsigned)store->chunk_cap)]->nodes +
           rt_mod(index, (unsigned)store->chunk_cap) * 32u;
}

/* Nodes stored contiguously from `index` on. */
static inline uint64_t store_run(const node_store *store, uint64_t index)
{
    if (store->flat)
        return UINT64_MAX;
    if (index < store->cold_len)
        return store->cold_len - index;
    return store->chunk_cap - rt_mod(index, (unsigned)store->chunk_cap);
}

static inline void store_write(const node_store *out, uint64_t first, const uint8_t *src,
                        uint64_t count)
{
    while (count) {
        uint64_t run = rt_min_u64(count, store_run(out, first));
        memcpy(store_node(out, first), src, (size_t)run * 32u);
        first += run;
        src += run * 32u;
        count -= run;
    }
}

/* Compute levels 1..depth of `stores` (level l gets nodes [first[l], len[l])
 * written) from level 0, parents hashed under `rule`. With copy_src set, leaves [copy_first, len[0]) come
 * from copy_src and are stored into level 0 on the way (read once from the
 * caller, see build.c); with NULL, level 0 already holds them. Runs on the
 * pool when the batch is large enough. Never fails: every node written must
 * already be reserved. */
void rt_build_levels(const node_store *stores, const uint64_t *len, const uint64_t *first,
                     unsigned depth, unsigned arity, int rule, const uint8_t *copy_src,
                     uint64_t copy_first);

/* Leaves made while the tree is built rather than copied (the leaf hashes of
 * RFC 6962 entries): fill(ctx, first, count, dst) writes leaves
 * [first, first + count) of the batch (0: its first leaf) to dst, 32 bytes
 * each. Called from pool threads at once, on disjoint ranges. `weight` is
 * the work of making one leaf in parent hashes (at least 1): the pool's
 * threshold and units count parents, and a batch of long entries must reach
 * the pool, in pieces as small as the same work of parents would be. */
typedef struct rt_leaf_source {
    void (*fill)(const void *ctx, uint64_t first, uint64_t count, uint8_t *dst);
    const void *ctx;
    uint64_t weight;
} rt_leaf_source;

/* rt_build_levels with leaves [copy_first, len[0]) from `source`: each piece
 * of leaves is made in a per-thread buffer, hashed into its parents and
 * stored while in cache, in the same pool run as the rest of its block. */
void rt_build_levels_from(const node_store *stores, const uint64_t *len,
                          const uint64_t *first, unsigned depth, unsigned arity, int rule,
                          const rt_leaf_source *source, uint64_t copy_first);

#endif /* RT_BUILD_H */
