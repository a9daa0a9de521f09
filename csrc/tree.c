#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "level.h"
#include "rt_internal.h"
#include "snapshot.h"

#if RT_X86
#include <emmintrin.h>
#endif

struct rt_tree {
    // Writers (inserts) take it exclusively, readers shared (init_tree_lock).
    pthread_rwlock_t lock;
    unsigned arity;
    unsigned max_depth;
    unsigned chunk_cap;
    unsigned depth;
    uint64_t size;
    uint64_t capacity; /* arity**max_depth, saturated at UINT64_MAX */
    rt_level levels[RT_MAX_DEPTH_LIMIT + 1];
    // Single inserts: per level, the BLAKE3 state after the message blocks
    // that precede the group's last child (see append_one).
    struct prefix_cache {
        uint64_t group;
        unsigned members; /* 0: empty */
        unsigned blocks;
        uint32_t cv[8];
    } prefix[RT_MAX_DEPTH_LIMIT];
    // Links in the registry of live trees (under live_trees.lock), which the
    // fork handlers walk; fork_locked: prepare holds this tree's lock.
    struct rt_tree *live_prev, *live_next;
    int fork_locked;
};

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

static node_store store_of_level(const rt_level *level, unsigned chunk_cap)
{
    node_store store = {level->table ? level->table->slots : NULL, NULL, level->cold,
                        level->cold_len, chunk_cap};
    return store;
}

static node_store store_of_buffer(const uint8_t *buffer)
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

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static void store_write(const node_store *out, uint64_t first, const uint8_t *src,
                        uint64_t count)
{
    while (count) {
        uint64_t run = min_u64(count, store_run(out, first));
        memcpy(store_node(out, first), src, (size_t)run * 32u);
        first += run;
        src += run * 32u;
        count -= run;
    }
}

/*
 * Parents [first, end) of a level whose child level has `child_len` nodes.
 * Full groups go to the batch kernel in runs that are contiguous in both
 * stores (chunk capacities are multiples of the arity, so a group never
 * straddles chunks); only the level's last parent can have a partial group,
 * hashed alone or lifted when it has a single child.
 */
static void hash_parent_range(const node_store *in, uint64_t child_len,
                              const node_store *out, unsigned arity,
                              uint64_t first, uint64_t end, rt_parents_fn kernel)
{
    uint64_t full_end = min_u64(end, child_len / arity);
    uint64_t parent = first;
    while (parent < full_end) {
        uint64_t run = full_end - parent;
        run = min_u64(run, store_run(in, parent * arity) / arity);
        run = min_u64(run, store_run(out, parent));
        kernel(store_node(in, parent * arity), (size_t)run, arity,
               store_node(out, parent));
        parent += run;
    }
    if (parent < end) {
        uint64_t first_child = parent * arity;
        unsigned children = (unsigned)(child_len - first_child);
        if (children == 1)
            memcpy(store_node(out, parent), store_node(in, first_child), 32);
        else
            rt_hash_parent(store_node(in, first_child), children,
                           store_node(out, parent));
    }
}

/* ---- one level of work, sequential or on the pool ----------------------- */

typedef struct level_job {
    node_store in;
    node_store out;
    uint64_t child_len;
    uint64_t first_parent;
    unsigned arity;
    rt_parents_fn kernel;
} level_job;

static void run_level_units(void *ctx, size_t begin, size_t end)
{
    const level_job *job = ctx;
    hash_parent_range(&job->in, job->child_len, &job->out, job->arity,
                      job->first_parent + begin, job->first_parent + end, job->kernel);
}

static void run_level(level_job *job, uint64_t parent_count)
{
    uint32_t threads;
    uint64_t threshold, unit;
    rt_pool_tunables(&threads, &threshold, &unit);
    if (threads > 1 && parent_count >= threshold && parent_count > unit)
        rt_pool_parallel_for((size_t)parent_count, (size_t)unit, run_level_units, job);
    else
        run_level_units(job, 0, (size_t)parent_count);
}

/* ---- the lowest levels, fused by aligned subtree ------------------------ */

// Node (l, j) depends only on the leaves of its aligned subtree (docs/spec.md §1), so
// the lowest `top` levels are computed block by block: a unit takes blocks
// of arity**top leaves, copies them in, and hashes every level of each
// block while it is still in cache. A level at a time would stream the
// whole batch through memory once per level, and with two threads half of
// each level's input would have been written on the other core. Above
// `top` the levels are small and run a level at a time.

typedef struct fused_job {
    const node_store *stores; /* levels 0..top */
    const uint64_t *len;      /* nodes per level after the insert */
    const uint64_t *first;    /* first node written per level */
    unsigned top;             /* levels 1..top are computed per block */
    unsigned arity;
    uint64_t block_leaves;    /* a power of the arity, at least arity**top */
    uint64_t first_block;
    rt_parents_fn kernel;
    // Leaves [copy_first, len[0]) come from copy_src (NULL: already stored).
    const uint8_t *copy_src;
    uint64_t copy_first;
} fused_job;

/* New leaves pass through a per-thread staging buffer: they are hashed from
 * it and stored from it, so the stored leaves and their parents come from
 * the same bytes even if the caller changes its buffer during the call (read
 * twice from the caller, a torn read would store leaves that do not hash to
 * their parent and corrupt the tree). 64 KiB stays in L1/L2 and holds eight
 * full groups even at arity 255, one batch of the 8-lane kernel. */
#define STAGING_BYTES 65536u
static _Thread_local uint8_t leaf_staging[STAGING_BYTES];

/* Store staged leaves into level 0 with streaming stores: they were just
 * hashed from cache, and bypassing the cache saves the read of every
 * destination line an ordinary store makes first, a sixth of the memory
 * traffic of a large batch. */
static void store_leaves_streaming(const node_store *level0, uint64_t first,
                                   const uint8_t *src, uint64_t count)
{
#if RT_X86 && !defined(RT_NO_STREAMING)
    while (count) {
        uint64_t run = min_u64(count, store_run(level0, first));
        __m128i *dst = (__m128i *)store_node(level0, first); // nodes are 32-byte aligned
        for (uint64_t i = 0; i < run * 2; i++)
            _mm_stream_si128(dst + i, _mm_loadu_si128((const __m128i *)src + i));
        first += run;
        src += run * 32u;
        count -= run;
    }
#else
    store_write(level0, first, src, count);
#endif
}

/* Level-1 parents [first, end) whose children are all new leaves (leaf i at
 * copy_src + (i - copy_first) * 32): stage, hash, store, a piece at a time. */
static void hash_and_store_new_leaves(const fused_job *job, uint64_t first, uint64_t end)
{
    const unsigned arity = job->arity;
    const node_store *out = &job->stores[1];
    const uint64_t piece_parents = STAGING_BYTES / (32u * arity);
    for (uint64_t parent = first; parent < end;) {
        uint64_t piece_end = min_u64(end, parent + piece_parents);
        uint64_t leaf_lo = parent * arity, leaf_hi = min_u64(job->len[0], piece_end * arity);
        memcpy(leaf_staging, job->copy_src + (leaf_lo - job->copy_first) * 32u,
               (size_t)(leaf_hi - leaf_lo) * 32u);
        uint64_t full_end = min_u64(piece_end, rt_div(job->len[0], arity));
        for (uint64_t at = parent; at < full_end;) {
            uint64_t run = min_u64(full_end - at, store_run(out, at));
            job->kernel(leaf_staging + (at - parent) * arity * 32u, (size_t)run, arity,
                        store_node(out, at));
            at += run;
        }
        if (full_end < piece_end) { // the level's last parent, with a partial group
            const uint8_t *children = leaf_staging + (full_end - parent) * arity * 32u;
            unsigned count = (unsigned)(job->len[0] - full_end * arity);
            if (count == 1)
                memcpy(store_node(out, full_end), children, 32);
            else
                rt_hash_parent(children, count, store_node(out, full_end));
        }
        store_leaves_streaming(&job->stores[0], leaf_lo, leaf_staging, leaf_hi - leaf_lo);
        parent = piece_end;
    }
}

static void run_fused_blocks(void *ctx, size_t begin, size_t end)
{
    const fused_job *job = ctx;
    for (uint64_t block = job->first_block + begin; block < job->first_block + end; block++) {
        uint64_t span = job->block_leaves; // nodes of this block at level l
        for (unsigned l = 0; l < job->top; l++) {
            uint64_t child_lo = block * span;
            span = rt_div(span, job->arity);
            uint64_t lo = block * span, hi = min_u64(job->len[l + 1], lo + span);
            if (lo < job->first[l + 1])
                lo = job->first[l + 1];
            if (l == 0 && job->copy_src) {
                // Parents with an old leaf among their children (only at the
                // start of a batch) must read level 0, so those leaves go in
                // first; the rest are staged, hashed and stored piece by piece.
                uint64_t from = child_lo < job->copy_first ? job->copy_first : child_lo;
                uint64_t to = min_u64(job->len[0], child_lo + span * job->arity);
                uint64_t split = rt_ceil_div(job->copy_first, job->arity);
                if (split < lo)
                    split = lo;
                if (split > hi)
                    split = hi;
                if (lo < split) {
                    uint64_t head_end = min_u64(to, split * job->arity);
                    store_write(&job->stores[0], from, job->copy_src + (from - job->copy_first) * 32u,
                                head_end - from);
                    hash_parent_range(&job->stores[0], job->len[0], &job->stores[1],
                                      job->arity, lo, split, job->kernel);
                }
                // The leaves of parents [split, hi) are exactly those left in
                // [from, to): every new leaf of the block is stored once.
                if (split < hi)
                    hash_and_store_new_leaves(job, split, hi);
                continue;
            }
            if (lo < hi)
                hash_parent_range(&job->stores[l], job->len[l], &job->stores[l + 1],
                                  job->arity, lo, hi, job->kernel);
        }
    }
#if RT_X86
    // Streaming stores are weakly ordered: make them visible before the
    // pool's release of this unit publishes them to other threads.
    if (job->copy_src)
        _mm_sfence();
#endif
}

/* Block shape: blocks of arity**block_height leaves with at most
 * `max_level1_parents` level-1 parents; levels are fused while a block still
 * has at least a full AVX2 lane group of parents there (fewer would waste
 * lanes on padding and lose more than locality gains). Returns the fused
 * height. */
#define FUSED_MIN_PARENTS 8
#define FUSED_BLOCK_PARENTS 1024
#define FUSED_BLOCKS_PER_THREAD 4

static unsigned fused_shape(unsigned arity, uint64_t max_level1_parents, unsigned depth,
                            uint64_t *block_leaves)
{
    unsigned height = 1;
    uint64_t level1_parents = 1;
    while (height < depth && level1_parents * arity <= max_level1_parents) {
        level1_parents *= arity;
        height++;
    }
    *block_leaves = level1_parents * arity;
    unsigned top = 1;
    uint64_t parents = level1_parents; // per block at level `top`
    while (top < height && parents / arity >= FUSED_MIN_PARENTS) {
        parents /= arity;
        top++;
    }
    return top;
}

/* Compute levels 1..depth (writes from first[l] on) from level 0. */
static void build_levels(const node_store *stores, const uint64_t *len, const uint64_t *first,
                         unsigned depth, unsigned arity, const uint8_t *copy_src,
                         uint64_t copy_first)
{
    uint32_t threads;
    uint64_t threshold, unit;
    rt_pool_tunables(&threads, &threshold, &unit);
    rt_parents_fn kernel = rt_active_parents_fn();

    // Every level left out of the fused blocks is a separate pass, and on
    // the pool a separate join; with one-unit blocks (64 level-1 parents at
    // arity 4, only 2 fused levels) that cost 2-thread scaling 1.75x against
    // 1.87x with blocks of up to FUSED_BLOCK_PARENTS. Smaller batches keep
    // at least FUSED_BLOCKS_PER_THREAD blocks per thread for balance.
    uint64_t level1_work = len[1] - first[1];
    uint64_t block_parents = level1_work / ((uint64_t)threads * FUSED_BLOCKS_PER_THREAD);
    if (block_parents > FUSED_BLOCK_PARENTS)
        block_parents = FUSED_BLOCK_PARENTS;
    if (block_parents < unit)
        block_parents = unit;
    uint64_t block_leaves;
    unsigned top = fused_shape(arity, block_parents, depth, &block_leaves);
    fused_job fused = {stores, len, first, top, arity, block_leaves,
                       first[0] / block_leaves, kernel, copy_src, copy_first};
    uint64_t blocks = (len[0] - 1) / block_leaves + 1 - fused.first_block;
    uint64_t grain = unit / (block_leaves / arity);
    if (grain == 0)
        grain = 1;
    if (threads > 1 && level1_work >= threshold && blocks > grain)
        rt_pool_parallel_for((size_t)blocks, (size_t)grain, run_fused_blocks, &fused);
    else
        run_fused_blocks(&fused, 0, (size_t)blocks);

    for (unsigned l = top; l < depth; l++) {
        level_job job = {stores[l], stores[l + 1], len[l], first[l + 1], arity, kernel};
        run_level(&job, len[l + 1] - first[l + 1]);
    }
}

/* ---- tree lifecycle ----------------------------------------------------- */

static uint64_t capacity_of(unsigned arity, unsigned max_depth)
{
    uint64_t capacity = 1;
    for (unsigned i = 0; i < max_depth; i++) {
        if (capacity > UINT64_MAX / arity)
            return UINT64_MAX;
        capacity *= arity;
    }
    return capacity;
}

/* ---- fork ----------------------------------------------------------------- */

// A child gets only the forking thread. Had another thread been inside an
// insert, the child would inherit the tree's lock held by a thread that does
// not exist there, and its first read of that tree would wait forever. So
// fork() waits, in prepare, until it holds every live tree's write lock:
// the child sees each tree before or after any batch, and usable.
static struct {
    pthread_mutex_t lock;
    rt_tree *head;
} live_trees = {PTHREAD_MUTEX_INITIALIZER, NULL};

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static int init_tree_lock(pthread_rwlock_t *lock)
{
    // Writer preference keeps a stream of proof readers from starving
    // inserts.
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int failed = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return failed;
}

// Lock order: trees, then the allocator (a writer holding its tree's lock
// takes the allocator's locks, never the reverse), then the pool, whose own
// prepare handler runs after this one (registered before it, see below): an
// insert holding its tree's lock may be starting pool workers.
static void fork_prepare(void)
{
    pthread_mutex_lock(&live_trees.lock);
    for (rt_tree *tree = live_trees.head; tree; tree = tree->live_next)
        tree->fork_locked = pthread_rwlock_wrlock(&tree->lock) == 0;
    rt_memory_fork_prepare();
}

static void fork_parent(void)
{
    rt_memory_fork_parent();
    for (rt_tree *tree = live_trees.head; tree; tree = tree->live_next) {
        if (tree->fork_locked)
            pthread_rwlock_unlock(&tree->lock);
        tree->fork_locked = 0;
    }
    pthread_mutex_unlock(&live_trees.lock);
}

// The forking thread has a new thread id in the child, and a write-locked
// rwlock checks its owner's id on unlock, so the locks are made fresh.
static void fork_child(void)
{
    rt_memory_fork_child();
    for (rt_tree *tree = live_trees.head; tree; tree = tree->live_next) {
        init_tree_lock(&tree->lock);
        tree->fork_locked = 0;
    }
    pthread_mutex_init(&live_trees.lock, NULL);
}

static void register_fork_handlers(void)
{
    // Prepare handlers run in reverse order of registration: initialising
    // the pool first registers its handlers first, so ours run before them.
    rt_pool_tunables(NULL, NULL, NULL);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void rt_fork_handlers_install(void)
{
    pthread_once(&fork_once, register_fork_handlers);
}

/* ---- tree lifecycle (continued) ----------------------------------------- */

int rt_tree_new(unsigned arity, unsigned max_depth, rt_tree **out)
{
    if (!out || arity < RT_MIN_ARITY || arity > RT_MAX_ARITY || max_depth < 1 ||
        max_depth > RT_MAX_DEPTH_LIMIT)
        return RT_ERR_INVALID_ARGUMENT;
    rt_fork_handlers_install();
    rt_tree *tree = calloc(1, sizeof(*tree));
    if (!tree)
        return RT_ERR_NOMEM;
    if (init_tree_lock(&tree->lock)) {
        free(tree);
        return RT_ERR_THREAD;
    }
    tree->arity = arity;
    tree->max_depth = max_depth;
    tree->chunk_cap = rt_chunk_capacity(arity);
    tree->capacity = capacity_of(arity, max_depth);
    for (unsigned l = 0; l <= RT_MAX_DEPTH_LIMIT; l++)
        rt_level_init(&tree->levels[l]);
    pthread_mutex_lock(&live_trees.lock);
    tree->live_next = live_trees.head;
    if (live_trees.head)
        live_trees.head->live_prev = tree;
    live_trees.head = tree;
    pthread_mutex_unlock(&live_trees.lock);
    *out = tree;
    return RT_OK;
}

void rt_tree_free(rt_tree *tree)
{
    if (!tree)
        return;
    pthread_mutex_lock(&live_trees.lock);
    if (tree->live_prev)
        tree->live_prev->live_next = tree->live_next;
    else
        live_trees.head = tree->live_next;
    if (tree->live_next)
        tree->live_next->live_prev = tree->live_prev;
    pthread_mutex_unlock(&live_trees.lock);
    for (unsigned l = 0; l <= RT_MAX_DEPTH_LIMIT; l++)
        rt_level_destroy(&tree->levels[l]);
    pthread_rwlock_destroy(&tree->lock);
    free(tree);
}

/* ---- insertion ---------------------------------------------------------- */

static void copy_root(const rt_tree *tree, uint8_t *root_out)
{
    memcpy(root_out, rt_level_node(&tree->levels[tree->depth], 0, tree->chunk_cap), 32);
}

/* ---- single inserts --------------------------------------------------- */

// A single insert rehashes one parent per level, each depending on the one
// below, so its cost is the latency of that chain of compressions. In a
// LeanIMT only a level's last node ever changes, so for a parent whose group
// keeps the same members the message blocks before its last child are the
// same as last time: the chaining value after them is cached per level and
// only the blocks holding the last child are compressed again (at arity 4,
// 1.25 compressions per level instead of 1.75 on average).

/* Message block `block` of blake3(0x01 || members || children). */
static void parent_block(const uint8_t *children, unsigned members, uint64_t block,
                         uint8_t out[64], uint8_t *len)
{
    size_t total = 2 + 32u * (size_t)members;
    size_t from = (size_t)block * 64u, to = from + 64 < total ? from + 64 : total;
    memset(out, 0, 64);
    for (size_t at = from; at < to && at < 2; at++)
        out[at - from] = at == 0 ? 0x01 : (uint8_t)members;
    size_t body_from = from < 2 ? 2 : from;
    if (body_from < to)
        memcpy(out + (body_from - from), children + (body_from - 2), to - body_from);
    *len = (uint8_t)(to - from);
}

static void hash_last_parent(struct prefix_cache *cache, uint64_t group,
                             const uint8_t *children, unsigned members, uint8_t *out,
                             rt_compress_fn compress)
{
    size_t total = 2 + 32u * (size_t)members;
    if (total > RT_BLAKE3_CHUNK_LEN) { // several chunks: no single chain to cache
        rt_hash_parent(children, members, out);
        return;
    }
    uint64_t blocks = (total + 63) / 64;
    uint8_t block[64], len;
    if (cache->group != group || cache->members != members) {
        cache->group = group;
        cache->members = members;
        // Blocks that end before the last child's first byte.
        cache->blocks = (unsigned)((2 + 32u * (members - 1)) / 64);
        memcpy(cache->cv, rt_blake3_iv, sizeof(cache->cv));
        for (unsigned b = 0; b < cache->blocks; b++) {
            parent_block(children, members, b, block, &len);
            compress(cache->cv, block, 64, 0, b == 0 ? RT_FLAG_CHUNK_START : 0);
        }
    }
    uint32_t cv[8];
    memcpy(cv, cache->cv, sizeof(cv));
    for (uint64_t b = cache->blocks; b < blocks; b++) {
        parent_block(children, members, b, block, &len);
        uint8_t flags = b == 0 ? RT_FLAG_CHUNK_START : 0;
        if (b + 1 == blocks)
            flags |= RT_FLAG_CHUNK_END | RT_FLAG_ROOT;
        compress(cv, block, len, 0, flags);
    }
    for (unsigned i = 0; i < 8; i++)
        for (unsigned byte = 0; byte < 4; byte++)
            out[4 * i + byte] = (uint8_t)(cv[i] >> (8 * byte));
}

/* One leaf at index len[0] - 1, then the right edge of every level. */
static void append_one(rt_tree *tree, const uint8_t *leaf, const uint64_t *len)
{
    const unsigned arity = tree->arity, cap = tree->chunk_cap;
    rt_compress_fn compress = rt_active_compress_fn();
    uint64_t index = len[0] - 1;
    memcpy((uint8_t *)rt_level_node(&tree->levels[0], index, cap), leaf, 32);
    for (unsigned l = 0; len[l] > 1; l++) {
        uint64_t group = rt_div(index, arity), first_child = group * arity;
        unsigned members = (unsigned)(len[l] - first_child);
        const uint8_t *children = rt_level_node(&tree->levels[l], first_child, cap);
        // The write lock is held and the chunk was made private by reserve.
        uint8_t *parent = (uint8_t *)rt_level_node(&tree->levels[l + 1], group, cap);
        if (members == 1)
            memcpy(parent, children, 32);
        else
            hash_last_parent(&tree->prefix[l], group, children, members, parent, compress);
        index = group;
    }
}

/* Caller holds the write lock. */
static int insert_locked(rt_tree *tree, const uint8_t *leaves, uint64_t count,
                         uint8_t *root_out)
{
    const unsigned arity = tree->arity;
    const unsigned cap = tree->chunk_cap;
    const uint64_t old_size = tree->size;
    if (count > tree->capacity - old_size)
        return RT_ERR_MAX_DEPTH;
    const uint64_t new_size = old_size + count;
    const unsigned new_depth = rt_depth_of(new_size, arity);

    // Level l gets nodes [first[l], len[l]) written; everything is
    // allocated up front so that the writes below cannot fail half way.
    uint64_t first[RT_MAX_DEPTH_LIMIT + 1], len[RT_MAX_DEPTH_LIMIT + 1];
    first[0] = old_size;
    len[0] = new_size;
    for (unsigned l = 1; l <= new_depth; l++) {
        first[l] = rt_div(first[l - 1], arity);
        len[l] = rt_ceil_div(len[l - 1], arity);
    }
    for (unsigned l = 0; l <= new_depth; l++) {
        int status = rt_level_reserve(&tree->levels[l], first[l], len[l], cap);
        if (status != RT_OK)
            return status;
    }

    if (new_depth == 0) {
        node_store leaves_out = store_of_level(&tree->levels[0], cap);
        store_write(&leaves_out, old_size, leaves, count);
    } else if (count == 1) {
        append_one(tree, leaves, len);
    } else {
        node_store stores[RT_MAX_DEPTH_LIMIT + 1];
        for (unsigned l = 0; l <= new_depth; l++)
            stores[l] = store_of_level(&tree->levels[l], cap);
        build_levels(stores, len, first, new_depth, arity, leaves, old_size);
    }

    for (unsigned l = 0; l <= new_depth; l++)
        tree->levels[l].len = len[l];
    tree->size = new_size;
    tree->depth = new_depth;
    copy_root(tree, root_out);
    return RT_OK;
}

int rt_tree_insert_many(rt_tree *tree, const uint8_t *leaves, size_t count,
                        uint8_t *root_out)
{
    if (!tree || !root_out || (count && !leaves))
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_BATCH;
    if (pthread_rwlock_wrlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    int status = insert_locked(tree, leaves, count, root_out);
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_insert(rt_tree *tree, const uint8_t *leaf, uint8_t *root_out)
{
    return rt_tree_insert_many(tree, leaf, 1, root_out);
}

/* ---- reads -------------------------------------------------------------- */

void rt_tree_state(rt_tree *tree, struct rt_tree_state *out)
{
    pthread_rwlock_rdlock(&tree->lock);
    out->size = tree->size;
    out->depth = tree->depth;
    out->has_root = tree->size > 0;
    if (tree->size)
        copy_root(tree, out->root);
    else
        memset(out->root, 0, sizeof(out->root));
    pthread_rwlock_unlock(&tree->lock);
}

void rt_tree_shape(const rt_tree *tree, unsigned *arity, unsigned *max_depth)
{
    *arity = tree->arity;
    *max_depth = tree->max_depth;
}

int rt_tree_level_len(rt_tree *tree, unsigned level, uint64_t *out)
{
    int status = RT_ERR_INDEX;
    pthread_rwlock_rdlock(&tree->lock);
    if (level <= tree->depth) {
        *out = tree->levels[level].len;
        status = RT_OK;
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_get_node(rt_tree *tree, unsigned level, uint64_t index, uint8_t *out)
{
    int status = RT_ERR_INDEX;
    pthread_rwlock_rdlock(&tree->lock);
    if (level <= tree->depth && index < tree->levels[level].len) {
        memcpy(out, rt_level_node(&tree->levels[level], index, tree->chunk_cap), 32);
        status = RT_OK;
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

/* ---- stateless root ------------------------------------------------------ */

int rt_compute_root(const uint8_t *leaves, size_t count, unsigned arity,
                    uint8_t *root_out)
{
    if (!root_out || (count && !leaves) || arity < RT_MIN_ARITY || arity > RT_MAX_ARITY)
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_TREE;
    if (count == 1) {
        memcpy(root_out, leaves, 32);
        return RT_OK;
    }
    // Levels 1..depth side by side in one buffer: about count / (arity - 1)
    // nodes, so memory stays O(count / arity).
    unsigned depth = rt_depth_of(count, arity);
    uint64_t len[RT_MAX_DEPTH_LIMIT + 1], first[RT_MAX_DEPTH_LIMIT + 1] = {0};
    len[0] = count;
    uint64_t total = 0;
    for (unsigned l = 1; l <= depth; l++) {
        len[l] = rt_ceil_div(len[l - 1], arity);
        total += len[l];
    }
    // From the mapping cache: repeated calls (checkpoint verification, a
    // service hashing batches) reuse pages instead of faulting in fresh ones.
    uint8_t *upper = rt_buffer_alloc((size_t)total * 32u);
    if (!upper)
        return RT_ERR_NOMEM;
    node_store stores[RT_MAX_DEPTH_LIMIT + 1];
    stores[0] = store_of_buffer(leaves);
    uint8_t *cursor = upper;
    for (unsigned l = 1; l <= depth; l++) {
        stores[l] = store_of_buffer(cursor);
        cursor += len[l] * 32u;
    }
    build_levels(stores, len, first, depth, arity, NULL, 0);
    memcpy(root_out, stores[depth].flat, 32);
    rt_buffer_free(upper);
    return RT_OK;
}

/* ---- snapshots ----------------------------------------------------------- */

int rt_tree_snapshot(rt_tree *tree, rt_snapshot **out)
{
    if (!tree || !out)
        return RT_ERR_INVALID_ARGUMENT;
    pthread_rwlock_rdlock(&tree->lock);
    unsigned level_count = tree->size ? tree->depth + 1 : 0;
    rt_snapshot *snap = malloc(sizeof(*snap) + level_count * sizeof(rt_snapshot_level));
    if (!snap) {
        pthread_rwlock_unlock(&tree->lock);
        return RT_ERR_NOMEM;
    }
    snap->arity = tree->arity;
    snap->chunk_cap = tree->chunk_cap;
    snap->depth = tree->depth;
    snap->size = tree->size;
    memset(snap->root, 0, sizeof(snap->root));
    if (tree->size)
        copy_root(tree, snap->root);
    // Readers may run concurrently with this (shared lock), so only
    // refcounts change here, atomically; the writer is excluded.
    for (unsigned l = 0; l < level_count; l++) {
        const rt_level *level = &tree->levels[l];
        rt_snapshot_level *shared = &snap->levels[l];
        shared->len = level->len;
        shared->cold = level->cold;
        shared->cold_len = level->cold_len;
        shared->table = level->table;
        shared->tail_slot = (size_t)((level->len - 1 - level->cold_len) / tree->chunk_cap);
        shared->tail = level->table->slots[shared->tail_slot];
        rt_table_retain(shared->table);
        rt_chunk_retain(shared->tail);
    }
    pthread_rwlock_unlock(&tree->lock);
    *out = snap;
    return RT_OK;
}

void rt_snapshot_free(rt_snapshot *snap)
{
    if (!snap)
        return;
    unsigned level_count = snap->size ? snap->depth + 1 : 0;
    for (unsigned l = 0; l < level_count; l++) {
        rt_chunk_release(snap->levels[l].tail);
        rt_table_release(snap->levels[l].table);
    }
    free(snap);
}

void rt_snapshot_state(const rt_snapshot *snap, struct rt_tree_state *out)
{
    out->size = snap->size;
    out->depth = snap->depth;
    out->has_root = snap->size > 0;
    memcpy(out->root, snap->root, sizeof(out->root));
}

unsigned rt_snapshot_arity(const rt_snapshot *snap)
{
    return snap->arity;
}

int rt_snapshot_level_len(const rt_snapshot *snap, unsigned level, uint64_t *out)
{
    if (level > snap->depth)
        return RT_ERR_INDEX;
    *out = snap->size ? snap->levels[level].len : 0;
    return RT_OK;
}

int rt_snapshot_get_node(const rt_snapshot *snap, unsigned level, uint64_t index,
                         uint8_t *out)
{
    if (!snap->size || level > snap->depth || index >= snap->levels[level].len)
        return RT_ERR_INDEX;
    memcpy(out, rt_snapshot_node(snap, level, index), 32);
    return RT_OK;
}

int rt_snapshot_read_nodes(const rt_snapshot *snap, unsigned level, uint64_t start,
                           uint64_t count, uint8_t *out)
{
    if (!snap || (count && !out))
        return RT_ERR_INVALID_ARGUMENT;
    if (!snap->size || level > snap->depth || start > snap->levels[level].len ||
        count > snap->levels[level].len - start)
        return RT_ERR_INDEX;
    const rt_snapshot_level *lv = &snap->levels[level];
    while (count) {
        uint64_t run = start < lv->cold_len ? lv->cold_len - start
                                            : snap->chunk_cap - start % snap->chunk_cap;
        run = min_u64(run, count);
        memcpy(out, rt_snapshot_node(snap, level, start), (size_t)run * 32u);
        out += run * 32u;
        start += run;
        count -= run;
    }
    return RT_OK;
}

/* ---- restoring and cold levels ------------------------------------------ */

static void reset_levels(rt_tree *tree)
{
    for (unsigned l = 0; l <= RT_MAX_DEPTH_LIMIT; l++)
        rt_level_destroy(&tree->levels[l]);
    tree->size = 0;
    tree->depth = 0;
}

/* Largest cold prefix a level of `len` nodes allows: whole chunks, stopping
 * before the chunk of the last node (the only node that can change). */
static uint64_t cold_limit(uint64_t len, unsigned chunk_cap, uint64_t wanted)
{
    uint64_t limit = len ? (len - 1) / chunk_cap * chunk_cap : 0;
    if (wanted < limit)
        limit = wanted / chunk_cap * chunk_cap;
    return limit;
}

int rt_tree_restore(rt_tree *tree, uint64_t size, const struct rt_level_source *levels,
                    unsigned level_count)
{
    if (!tree || !levels || size == 0)
        return RT_ERR_INVALID_ARGUMENT;
    if (size > tree->capacity)
        return RT_ERR_MAX_DEPTH;
    unsigned depth = rt_depth_of(size, tree->arity);
    if (level_count != depth + 1)
        return RT_ERR_INVALID_ARGUMENT;
    for (unsigned l = 0; l < level_count; l++)
        if (!levels[l].nodes)
            return RT_ERR_INVALID_ARGUMENT;

    pthread_rwlock_wrlock(&tree->lock);
    if (tree->size) {
        pthread_rwlock_unlock(&tree->lock);
        return RT_ERR_INVALID_ARGUMENT;
    }
    int status = RT_OK;
    uint64_t len = size;
    for (unsigned l = 0; status == RT_OK && l <= depth; l++) {
        rt_level *level = &tree->levels[l];
        level->cold = levels[l].nodes;
        level->cold_len = cold_limit(len, tree->chunk_cap, levels[l].borrow);
        status = rt_level_reserve(level, level->cold_len, len, tree->chunk_cap);
        if (status == RT_OK) {
            node_store store = store_of_level(level, tree->chunk_cap);
            const uint8_t *last = levels[l].last ? levels[l].last : levels[l].nodes + (len - 1) * 32u;
            store_write(&store, level->cold_len, levels[l].nodes + level->cold_len * 32u,
                        len - 1 - level->cold_len);
            store_write(&store, len - 1, last, 1);
            level->len = len;
        }
        len = rt_ceil_div(len, tree->arity);
    }
    if (status == RT_OK) {
        tree->size = size;
        tree->depth = depth;
    } else {
        reset_levels(tree);
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_make_cold(rt_tree *tree, unsigned level, const uint8_t *nodes, uint64_t count,
                      uint64_t *cold_out)
{
    if (!tree || !nodes || !cold_out)
        return RT_ERR_INVALID_ARGUMENT;
    pthread_rwlock_wrlock(&tree->lock);
    int status = RT_ERR_INDEX;
    if (tree->size && level <= tree->depth) {
        rt_level *target = &tree->levels[level];
        uint64_t cold = cold_limit(min_u64(count, target->len), tree->chunk_cap, count);
        status = RT_OK;
        // Growing the prefix only: a shorter one would need the chunks back.
        if (cold > target->cold_len)
            status = rt_level_make_cold(target, nodes, cold, tree->chunk_cap);
        if (status == RT_OK)
            *cold_out = target->cold_len;
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}
