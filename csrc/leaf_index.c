/*
 * The leaf index: membership, first position, and duplicate checks for
 * nullifier-style trees (see rt_index.h for the table and why snapshots
 * can share it without a lock).
 */
#include "rt_config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "level.h"
#include "rotortree.h"
#include "rt_index.h"
#include "rt_pool.h"
#include "rt_tree.h"
#include "snapshot.h"

#define ABSENT UINT64_MAX

// 3/4: with linear probing a miss then scans ~8 slots on average, which for
// 4-byte slots is one or two cache lines; the table doubles when it is
// reached, so between doublings it is 3/8..3/4 full: 5.3..10.7 bytes per
// distinct leaf, under the 12 the issue allows, where 7/8 would make misses
// scan ~32 slots and 1/2 would cost up to 16 bytes per leaf.
#define LOAD_NUM 3u
#define LOAD_DEN 4u
#define MIN_SLOTS 64u
// Work units for the pool, in leaves, per parent of the pool's chunk size
// (16384 at the default 64): a unit then costs hundreds of microseconds,
// which dwarfs claiming it, and tests that shrink the chunk reach the
// parallel paths with small batches.
#define GRAIN_PER_CHUNK 256u
// Lookups are issued in groups: hash all, prefetch their slots, then probe,
// so a group's cache misses overlap instead of running one after another.
#define GROUP 16u

/* ---- hashing --------------------------------------------------------------- */

// Leaves are usually hashes, but nothing stops a caller from inserting
// counters or padded small values whose first bytes are all zero, so all 32
// bytes are mixed, with a per-table seed so that no fixed set of leaves
// collides in every table. Four independent multiplies cost a few cycles
// next to the cache misses of a probe.
static inline uint64_t leaf_hash(const uint8_t *leaf, uint64_t seed)
{
    uint64_t w[4];
    memcpy(w, leaf, 32);
    uint64_t a = (w[0] ^ seed) * 0x9E3779B97F4A7C15ull;
    uint64_t b = (w[1] + seed) * 0xC2B2AE3D27D4EB4Full;
    uint64_t c = (w[2] ^ (seed >> 7)) * 0x165667B19E3779F9ull;
    uint64_t d = (w[3] + (seed << 3)) * 0xD6E8FEB86659FD93ull;
    uint64_t h = a ^ ((b << 17) | (b >> 47)) ^ ((c << 31) | (c >> 33)) ^ ((d << 47) | (d >> 17));
    h ^= h >> 32;
    h *= 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
    return h;
}

static uint64_t fresh_seed(const void *salt)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)salt;
    s ^= s >> 33;
    s *= 0xFF51AFD7ED558CCDull;
    s ^= s >> 33;
    return s;
}

/* ---- slots ----------------------------------------------------------------- */

static inline uint64_t slot_load(const rt_leaf_index *ix, uint64_t i)
{
    if (ix->wide)
        return __atomic_load_n((const uint64_t *)ix->slots + i, __ATOMIC_ACQUIRE);
    return __atomic_load_n((const uint32_t *)ix->slots + i, __ATOMIC_ACQUIRE);
}

static inline int slot_cas(const rt_leaf_index *ix, uint64_t i, uint64_t expected,
                           uint64_t desired)
{
    if (ix->wide) {
        uint64_t e = expected;
        return __atomic_compare_exchange_n((uint64_t *)ix->slots + i, &e, desired, 0,
                                           __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    }
    uint32_t e = (uint32_t)expected;
    return __atomic_compare_exchange_n((uint32_t *)ix->slots + i, &e, (uint32_t)desired, 0,
                                       __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

static inline void slot_prefetch(const rt_leaf_index *ix, uint64_t h)
{
    uint64_t i = h & ix->mask;
    __builtin_prefetch(ix->wide ? (const void *)((const uint64_t *)ix->slots + i)
                                : (const void *)((const uint32_t *)ix->slots + i));
}

/* The tag: the hash bits above those the slot index uses, as many as fit
 * above the position (none when positions take all 32 bits). */
static inline uint64_t tag_of(const rt_leaf_index *ix, uint64_t h)
{
    unsigned bits = (ix->wide ? 64u : 32u) - ix->pos_bits;
    return bits ? h >> (64u - bits) : 0;
}

/* Where probes read the leaf a slot names: the tree's level 0, a
 * snapshot's, or a flat batch; `limit` is the size rule (positions at or
 * past it are not there). */
typedef struct leaf_reader {
    const uint8_t *flat;
    const rt_level *level;
    const rt_snapshot *snap;
    unsigned chunk_cap;
    uint64_t limit;
} leaf_reader;

static inline const uint8_t *leaf_at(const leaf_reader *r, uint64_t p)
{
    if (r->flat)
        return r->flat + p * 32u;
    if (r->snap)
        return rt_snapshot_node(r->snap, 0, p);
    return rt_level_node(r->level, p, r->chunk_cap);
}

static leaf_reader tree_reader(const rt_tree *tree)
{
    leaf_reader r = {NULL, &tree->levels[0], NULL, tree->chunk_cap, tree->size};
    return r;
}

static uint64_t index_find(const rt_leaf_index *ix, const leaf_reader *r, const uint8_t *leaf,
                           uint64_t h)
{
    const uint64_t pos_mask = (ix->pos_bits >= 64) ? UINT64_MAX : ((uint64_t)1 << ix->pos_bits) - 1;
    const uint64_t tag = tag_of(ix, h);
    for (uint64_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
        uint64_t s = slot_load(ix, i);
        if (!s)
            return ABSENT;
        if ((s >> ix->pos_bits) != tag)
            continue;
        uint64_t p = (s & pos_mask) - 1;
        if (p < r->limit && memcmp(leaf_at(r, p), leaf, 32) == 0)
            return p;
    }
}

/* Record position p of `leaf`; several threads may put at once (no entry is
 * ever removed, so a key's probe sequence only grows and two puts of one
 * key meet at the slot the first of them claims). The lower position wins.
 * 1 if the leaf was new to the table. */
static int index_put(const rt_leaf_index *ix, const leaf_reader *r, const uint8_t *leaf,
                     uint64_t h, uint64_t p)
{
    const uint64_t pos_mask = ((uint64_t)1 << ix->pos_bits) - 1;
    const uint64_t tag = tag_of(ix, h);
    const uint64_t want = (tag << ix->pos_bits) | (p + 1);
    uint64_t i = h & ix->mask;
    for (;;) {
        uint64_t s = slot_load(ix, i);
        if (!s) {
            if (slot_cas(ix, i, 0, want))
                return 1;
            continue; // another put took it: look at what it wrote
        }
        if ((s >> ix->pos_bits) == tag) {
            uint64_t q = (s & pos_mask) - 1;
            if (memcmp(leaf_at(r, q), leaf, 32) == 0) {
                if (q <= p || slot_cas(ix, i, s, want))
                    return 0;
                continue;
            }
        }
        i = (i + 1) & ix->mask;
    }
}

/* ---- tables ---------------------------------------------------------------- */

static unsigned bit_length(uint64_t x)
{
    return x ? 64u - (unsigned)__builtin_clzll(x) : 0;
}

/* An empty table for up to `entries` distinct leaves at positions below
 * `size` (twice that, so that a growing tree does not rebuild at once). */
static rt_leaf_index *index_new(uint64_t entries, uint64_t size)
{
    uint64_t slots = MIN_SLOTS;
    while (slots / LOAD_DEN * LOAD_NUM < entries) {
        if (slots > (UINT64_MAX >> 4))
            return NULL;
        slots *= 2;
    }
    unsigned pos_bits = bit_length(size) + 1;
    if (pos_bits < 16)
        pos_bits = 16;
    if (pos_bits > 63)
        return NULL;
    unsigned wide = pos_bits > 32;
    uint64_t bytes = slots * (wide ? 8u : 4u);
    if (bytes > SIZE_MAX)
        return NULL;
    rt_leaf_index *ix = malloc(sizeof(*ix));
    if (!ix)
        return NULL;
    ix->slots = rt_buffer_alloc((size_t)bytes);
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    atomic_init(&ix->refcount, 1);
    ix->wide = wide;
    ix->pos_bits = pos_bits;
    ix->mask = slots - 1;
    ix->seed = fresh_seed(ix);
    ix->entries = 0;
    ix->max_entries = slots / LOAD_DEN * LOAD_NUM;
    ix->pos_limit = ((uint64_t)1 << pos_bits) - 1;
    ix->bytes = (size_t)bytes;
    return ix;
}

void rt_index_retain(rt_leaf_index *index)
{
    atomic_fetch_add_explicit(&index->refcount, 1, memory_order_relaxed);
}

void rt_index_release(rt_leaf_index *index)
{
    if (!index || atomic_fetch_sub_explicit(&index->refcount, 1, memory_order_acq_rel) != 1)
        return;
    rt_buffer_free(index->slots);
    free(index);
}

/* ---- parallel fill and lookup ------------------------------------------------ */

/* The unit size for `count` items on the pool, 0: run them on the caller. */
static size_t pool_grain(uint64_t count)
{
    uint32_t threads;
    uint64_t chunk;
    rt_pool_tunables(&threads, NULL, &chunk);
    uint64_t grain = chunk > UINT64_MAX / GRAIN_PER_CHUNK ? UINT64_MAX : chunk * GRAIN_PER_CHUNK;
    return threads > 1 && count / 2 >= grain ? (size_t)grain : 0;
}

typedef struct zero_job {
    uint8_t *base;
    size_t bytes;
} zero_job;

#define ZERO_PIECE ((size_t)1 << 20)

static void zero_units(void *ctx, size_t begin, size_t end)
{
    const zero_job *job = ctx;
    size_t from = begin * ZERO_PIECE, to = end * ZERO_PIECE;
    if (to > job->bytes)
        to = job->bytes;
    memset(job->base + from, 0, to - from);
}

/* Buffers come from the mapping cache with unspecified contents (reused
 * pages are already faulted in): clear them, on the pool when large. */
static void index_clear(rt_leaf_index *ix)
{
    zero_job job = {ix->slots, ix->bytes};
    size_t pieces = (ix->bytes + ZERO_PIECE - 1) / ZERO_PIECE;
    if (pieces > 4 && pool_grain(UINT64_MAX))
        rt_pool_parallel_for(pieces, 1, zero_units, &job);
    else
        memset(ix->slots, 0, ix->bytes);
}

typedef struct fill_job {
    rt_leaf_index *ix;
    const leaf_reader *reader;
    uint64_t first;
    atomic_uint_fast64_t added;
} fill_job;

static void fill_units(void *ctx, size_t begin, size_t end)
{
    fill_job *job = ctx;
    const rt_leaf_index *ix = job->ix;
    uint64_t added = 0, h[GROUP];
    for (uint64_t g = job->first + begin, stop = job->first + end; g < stop; g += GROUP) {
        unsigned n = (unsigned)rt_min_u64(GROUP, stop - g);
        for (unsigned j = 0; j < n; j++) {
            h[j] = leaf_hash(leaf_at(job->reader, g + j), ix->seed);
            slot_prefetch(ix, h[j]);
        }
        for (unsigned j = 0; j < n; j++)
            added += (uint64_t)index_put(ix, job->reader, leaf_at(job->reader, g + j), h[j], g + j);
    }
    atomic_fetch_add_explicit(&job->added, added, memory_order_relaxed);
}

/* Put positions [first, end) of `reader` into `ix`. */
static void index_fill(rt_leaf_index *ix, const leaf_reader *reader, uint64_t first,
                       uint64_t end)
{
    fill_job job = {ix, reader, first, 0};
    uint64_t count = end - first;
    size_t grain = pool_grain(count);
    if (grain)
        rt_pool_parallel_for((size_t)count, grain, fill_units, &job);
    else
        fill_units(&job, 0, (size_t)count);
    ix->entries += atomic_load_explicit(&job.added, memory_order_relaxed);
}

typedef struct find_job {
    const rt_leaf_index *ix;
    const leaf_reader *reader;
    const uint8_t *leaves;
    uint64_t *positions;
    uint8_t *found;
} find_job;

static void find_units(void *ctx, size_t begin, size_t end)
{
    const find_job *job = ctx;
    const rt_leaf_index *ix = job->ix;
    uint64_t h[GROUP];
    for (size_t g = begin; g < end; g += GROUP) {
        unsigned n = (unsigned)rt_min_u64(GROUP, end - g);
        for (unsigned j = 0; j < n; j++) {
            h[j] = leaf_hash(job->leaves + (g + j) * 32u, ix->seed);
            slot_prefetch(ix, h[j]);
        }
        for (unsigned j = 0; j < n; j++) {
            uint64_t p = index_find(ix, job->reader, job->leaves + (g + j) * 32u, h[j]);
            if (job->positions)
                job->positions[g + j] = p;
            if (job->found)
                job->found[g + j] = p != ABSENT;
        }
    }
}

static void index_find_many(const rt_leaf_index *ix, const leaf_reader *reader,
                            const uint8_t *leaves, size_t count, uint64_t *positions,
                            uint8_t *found)
{
    find_job job = {ix, reader, leaves, positions, found};
    size_t grain = pool_grain(count);
    if (grain)
        rt_pool_parallel_for(count, grain, find_units, &job);
    else
        find_units(&job, 0, count);
}

/* A full index of the tree's leaves, or NULL when out of memory. */
static rt_leaf_index *index_of_tree(const rt_tree *tree, uint64_t extra)
{
    rt_leaf_index *ix = index_new(tree->size + extra, tree->size + extra);
    if (!ix)
        return NULL;
    index_clear(ix);
    leaf_reader reader = tree_reader(tree);
    index_fill(ix, &reader, 0, tree->size);
    return ix;
}

/* ---- hooks for inserts (rt_index.h) ----------------------------------------- */

int rt_index_reserve(const rt_tree *tree, uint64_t count, uint64_t new_size,
                     rt_leaf_index **fresh)
{
    const rt_leaf_index *ix = tree->index;
    *fresh = NULL;
    if (count <= ix->max_entries - ix->entries && new_size <= ix->pos_limit)
        return RT_OK;
    // Sized for every new leaf being distinct; the fill after the insert
    // counts what they really are.
    *fresh = index_new(ix->entries + count, new_size);
    return *fresh ? RT_OK : RT_ERR_NOMEM;
}

void rt_index_add(rt_tree *tree, rt_leaf_index *fresh, uint64_t old_size)
{
    leaf_reader reader = tree_reader(tree);
    if (fresh) {
        index_clear(fresh);
        index_fill(fresh, &reader, 0, tree->size);
        rt_index_release(tree->index); // snapshots may keep it
        tree->index = fresh;
        return;
    }
    index_fill(tree->index, &reader, old_size, tree->size);
}

int rt_index_rebuild_locked(rt_tree *tree)
{
    rt_leaf_index *ix = index_of_tree(tree, 0);
    if (!ix)
        return RT_ERR_NOMEM;
    rt_index_release(tree->index);
    tree->index = ix;
    return RT_OK;
}

/* ---- public calls ------------------------------------------------------------ */

int rt_tree_index_enable(rt_tree *tree)
{
    if (!tree)
        return RT_ERR_INVALID_ARGUMENT;
    if (pthread_rwlock_wrlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    int status = tree->index ? RT_OK : rt_index_rebuild_locked(tree);
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_index_enabled(rt_tree *tree)
{
    pthread_rwlock_rdlock(&tree->lock);
    int on = tree->index != NULL;
    pthread_rwlock_unlock(&tree->lock);
    return on;
}

int rt_tree_index_stats(rt_tree *tree, struct rt_index_stats *out)
{
    if (!tree || !out)
        return RT_ERR_INVALID_ARGUMENT;
    pthread_rwlock_rdlock(&tree->lock);
    const rt_leaf_index *ix = tree->index;
    int status = RT_ERR_NO_INDEX;
    if (ix) {
        out->entries = ix->entries;
        out->slots = ix->mask + 1;
        out->bytes = ix->bytes;
        out->slot_bytes = ix->wide ? 8u : 4u;
        status = RT_OK;
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_index_find(rt_tree *tree, const uint8_t *leaves, size_t count,
                       uint64_t *positions, uint8_t *found)
{
    if (!tree || (count && !leaves) || (!positions && !found))
        return RT_ERR_INVALID_ARGUMENT;
    if (pthread_rwlock_rdlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    int status = RT_ERR_NO_INDEX;
    if (tree->index) {
        leaf_reader reader = tree_reader(tree);
        index_find_many(tree->index, &reader, leaves, count, positions, found);
        status = RT_OK;
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_snapshot_index_find(const rt_snapshot *snap, const uint8_t *leaves, size_t count,
                           uint64_t *positions, uint8_t *found)
{
    if (!snap || (count && !leaves) || (!positions && !found))
        return RT_ERR_INVALID_ARGUMENT;
    if (!snap->index)
        return RT_ERR_NO_INDEX;
    leaf_reader reader = {NULL, NULL, snap, snap->chunk_cap, snap->size};
    index_find_many(snap->index, &reader, leaves, count, positions, found);
    return RT_OK;
}

/* ---- unique inserts ---------------------------------------------------------- */

typedef struct mark_job {
    const rt_leaf_index *tree_ix;
    const leaf_reader *tree_leaves;
    const rt_leaf_index *batch_ix; /* NULL for a batch of one */
    const leaf_reader *batch_leaves;
    const uint8_t *leaves;
    uint8_t *marks;
    atomic_uint_fast64_t duplicates;
} mark_job;

static void mark_units(void *ctx, size_t begin, size_t end)
{
    mark_job *job = ctx;
    uint64_t duplicates = 0, h[GROUP];
    for (size_t g = begin; g < end; g += GROUP) {
        unsigned n = (unsigned)rt_min_u64(GROUP, end - g);
        for (unsigned j = 0; j < n; j++) {
            h[j] = leaf_hash(job->leaves + (g + j) * 32u, job->tree_ix->seed);
            slot_prefetch(job->tree_ix, h[j]);
        }
        for (unsigned j = 0; j < n; j++) {
            const uint8_t *leaf = job->leaves + (g + j) * 32u;
            int dup = index_find(job->tree_ix, job->tree_leaves, leaf, h[j]) != ABSENT;
            if (!dup && job->batch_ix)
                dup = index_find(job->batch_ix, job->batch_leaves, leaf,
                                 leaf_hash(leaf, job->batch_ix->seed)) != g + j;
            job->marks[g + j] = (uint8_t)dup;
            duplicates += (uint64_t)dup;
        }
    }
    atomic_fetch_add_explicit(&job->duplicates, duplicates, memory_order_relaxed);
}

/* marks[i] = 1 for a leaf already in the tree or earlier in the batch. */
static int mark_duplicates(const rt_tree *tree, const uint8_t *leaves, size_t count,
                           uint8_t *marks, uint64_t *duplicates)
{
    leaf_reader tree_leaves = tree_reader(tree);
    leaf_reader batch_leaves = {leaves, NULL, NULL, 0, count};
    rt_leaf_index *batch_ix = NULL;
    if (count > 1) {
        // The batch's own first positions, from a table of the batch.
        batch_ix = index_new(count, count);
        if (!batch_ix)
            return RT_ERR_NOMEM;
        index_clear(batch_ix);
        index_fill(batch_ix, &batch_leaves, 0, count);
    }
    mark_job job = {tree->index, &tree_leaves, batch_ix, &batch_leaves, leaves, marks, 0};
    size_t grain = pool_grain(count);
    if (grain)
        rt_pool_parallel_for(count, grain, mark_units, &job);
    else
        mark_units(&job, 0, count);
    rt_index_release(batch_ix);
    *duplicates = atomic_load_explicit(&job.duplicates, memory_order_relaxed);
    return RT_OK;
}

int rt_tree_index_duplicates(rt_tree *tree, const uint8_t *leaves, size_t count,
                             uint8_t *duplicates, uint64_t *duplicate_count)
{
    if (!tree || !duplicates || !duplicate_count || (count && !leaves))
        return RT_ERR_INVALID_ARGUMENT;
    if (pthread_rwlock_rdlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    int status = tree->index ? mark_duplicates(tree, leaves, count, duplicates, duplicate_count)
                             : RT_ERR_NO_INDEX;
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_insert_unique(rt_tree *tree, const uint8_t *leaves, size_t count, int mode,
                          uint8_t *duplicates, uint64_t *duplicate_count, uint8_t *root_out)
{
    if (!tree || !root_out || !duplicates || !duplicate_count || (count && !leaves) ||
        (mode != RT_UNIQUE_REJECT && mode != RT_UNIQUE_SKIP))
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_BATCH;
    if (pthread_rwlock_wrlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    uint64_t dups = 0;
    int status = tree->index ? mark_duplicates(tree, leaves, count, duplicates, &dups)
                             : RT_ERR_NO_INDEX;
    if (status == RT_OK) {
        if (dups == 0) {
            status = rt_tree_insert_locked(tree, leaves, count, root_out);
        } else if (mode == RT_UNIQUE_REJECT) {
            status = RT_ERR_DUPLICATE;
        } else if (dups == count) {
            rt_tree_copy_root(tree, root_out); // every leaf was in the tree already
        } else {
            uint8_t *kept = rt_buffer_alloc((size_t)(count - dups) * 32u);
            if (!kept) {
                status = RT_ERR_NOMEM;
            } else {
                size_t n = 0;
                for (size_t i = 0; i < count; i++)
                    if (!duplicates[i])
                        memcpy(kept + 32u * n++, leaves + 32u * i, 32);
                status = rt_tree_insert_locked(tree, kept, n, root_out);
                rt_buffer_free(kept);
            }
        }
    }
    if (status == RT_OK || status == RT_ERR_DUPLICATE)
        *duplicate_count = dups;
    pthread_rwlock_unlock(&tree->lock);
    return status;
}
