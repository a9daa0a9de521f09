/*
 * The build engine: hashes the new nodes of every level above the leaves,
 * for insert_many (chunked tree levels) and compute_root (flat buffers),
 * through one node_store view (rt_build.h), sequentially or on the pool.
 */
#include "rt_config.h"

#include <stdint.h>
#include <string.h>

#include "rotortree.h"
#include "rt_arith.h"
#include "rt_blake3.h"
#include "rt_build.h"
#include "rt_pool.h"
#include "rt_rule.h"

#if RT_X86
#include <emmintrin.h>
#endif

/* ---- one run of parents ------------------------------------------------- */

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
    uint64_t full_end = rt_min_u64(end, child_len / arity);
    uint64_t parent = first;
    while (parent < full_end) {
        uint64_t run = full_end - parent;
        run = rt_min_u64(run, store_run(in, parent * arity) / arity);
        run = rt_min_u64(run, store_run(out, parent));
        kernel(store_node(in, parent * arity), (size_t)run, arity,
               store_node(out, parent));
        parent += run;
    }
    if (parent < end) {
        uint64_t first_child = parent * arity;
        unsigned children = (unsigned)(child_len - first_child);
        if (children == 1)
            memcpy(store_node(out, parent), store_node(in, first_child), 32);
        else // the kernel takes any member count; one parent of `children`
            kernel(store_node(in, first_child), 1, children, store_node(out, parent));
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
    // The kernel's entry that stores the leaves it hashes, or NULL: then
    // the leaves pass through leaf_staging.
    rt_parents_storing_fn storing_kernel;
    // Or, with copy_src NULL, leaves [copy_first, len[0]) made by `source`
    // (always through leaf_staging: they exist nowhere else to load from).
    const rt_leaf_source *source;
} fused_job;

/* The stored leaves and their parents must come from the same bytes even if
 * the caller changes its buffer during the call: read twice from the caller,
 * a torn read would store leaves that do not hash to their parent and
 * corrupt the tree. Kernels with a storing entry (rt_parents_storing_fn)
 * guarantee that by storing the registers they hash; with the others, new
 * leaves pass through a per-thread staging buffer, hashed from it and
 * stored from it. 64 KiB stays in L1/L2 and holds eight full groups even at
 * arity 255, one batch of the 8-lane kernel. */
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
        uint64_t run = rt_min_u64(count, store_run(level0, first));
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

/* New leaves [leaf, leaf + count) into dst, from the caller's copy or made
 * by the source. */
static void fetch_new_leaves(const fused_job *job, uint64_t leaf, uint64_t count, uint8_t *dst)
{
    if (job->source)
        job->source->fill(job->source->ctx, leaf - job->copy_first, count, dst);
    else
        memcpy(dst, job->copy_src + (leaf - job->copy_first) * 32u, (size_t)count * 32u);
}

/* Level-1 parents [first, end) whose children are all new leaves (leaf i at
 * copy_src + (i - copy_first) * 32): stage, hash, store, a piece at a time. */
static void hash_and_store_new_leaves(const fused_job *job, uint64_t first, uint64_t end)
{
    const unsigned arity = job->arity;
    const node_store *out = &job->stores[1];
    const uint64_t piece_parents = STAGING_BYTES / (32u * arity);
    for (uint64_t parent = first; parent < end;) {
        uint64_t piece_end = rt_min_u64(end, parent + piece_parents);
        uint64_t leaf_lo = parent * arity, leaf_hi = rt_min_u64(job->len[0], piece_end * arity);
        fetch_new_leaves(job, leaf_lo, leaf_hi - leaf_lo, leaf_staging);
        uint64_t full_end = rt_min_u64(piece_end, rt_div(job->len[0], arity));
        for (uint64_t at = parent; at < full_end;) {
            uint64_t run = rt_min_u64(full_end - at, store_run(out, at));
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
                job->kernel(children, 1, count, store_node(out, full_end));
        }
        store_leaves_streaming(&job->stores[0], leaf_lo, leaf_staging, leaf_hi - leaf_lo);
        parent = piece_end;
    }
}

/* The same through the kernel's storing entry: no staging copy, and level 0
 * is written by the kernel from the registers it hashed. Level-0 chunks
 * hold a few groups each (capacities are multiples of the arity, so a group
 * never straddles two), far fewer than a lane kernel wants per call, so the
 * kernel gets each group's destination rather than one contiguous run. */
#define STORING_RUN 256

static void hash_and_store_leaves_directly(const fused_job *job, uint64_t first, uint64_t end)
{
    const unsigned arity = job->arity;
    const node_store *out = &job->stores[1], *level0 = &job->stores[0];
    uint8_t *dest[STORING_RUN];
    uint64_t full_end = rt_min_u64(end, rt_div(job->len[0], arity));
    for (uint64_t at = first; at < full_end;) {
        uint64_t run = rt_min_u64(rt_min_u64(full_end - at, store_run(out, at)), STORING_RUN);
        for (uint64_t i = 0; i < run;) { // a level-0 chunk at a time
            uint64_t leaf = (at + i) * arity;
            uint8_t *node = store_node(level0, leaf);
            uint64_t in_chunk = rt_min_u64(run - i, store_run(level0, leaf) / arity);
            for (uint64_t j = 0; j < in_chunk; j++)
                dest[i + j] = node + j * arity * 32u;
            i += in_chunk;
        }
        job->storing_kernel(job->copy_src + (at * arity - job->copy_first) * 32u, (size_t)run,
                            arity, store_node(out, at), dest);
        at += run;
    }
    if (full_end < end) { // the level's last parent, with a partial group
        uint64_t leaf = full_end * arity;
        const uint8_t *children = job->copy_src + (leaf - job->copy_first) * 32u;
        unsigned count = (unsigned)(job->len[0] - leaf);
        dest[0] = store_node(level0, leaf);
        if (count == 1) { // lifted: one read of the caller's leaf, two stores
            uint8_t lone[32];
            rt_copy_once(lone, children, 32);
            memcpy(dest[0], lone, 32);
            memcpy(store_node(out, full_end), lone, 32);
        } else {
            job->storing_kernel(children, 1, count, store_node(out, full_end), dest);
        }
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
            uint64_t lo = block * span, hi = rt_min_u64(job->len[l + 1], lo + span);
            if (lo < job->first[l + 1])
                lo = job->first[l + 1];
            if (l == 0 && (job->copy_src || job->source)) {
                // Parents with an old leaf among their children (only at the
                // start of a batch) must read level 0, so those leaves go in
                // first; the rest are staged, hashed and stored piece by piece.
                uint64_t from = child_lo < job->copy_first ? job->copy_first : child_lo;
                uint64_t to = rt_min_u64(job->len[0], child_lo + span * job->arity);
                uint64_t split = rt_ceil_div(job->copy_first, job->arity);
                if (split < lo)
                    split = lo;
                if (split > hi)
                    split = hi;
                if (lo < split) {
                    uint64_t head_end = rt_min_u64(to, split * job->arity);
                    if (job->source) { // fewer than `arity` leaves: staging holds them
                        fetch_new_leaves(job, from, head_end - from, leaf_staging);
                        store_write(&job->stores[0], from, leaf_staging, head_end - from);
                    } else {
                        store_write(&job->stores[0], from,
                                    job->copy_src + (from - job->copy_first) * 32u,
                                    head_end - from);
                    }
                    hash_parent_range(&job->stores[0], job->len[0], &job->stores[1],
                                      job->arity, lo, split, job->kernel);
                }
                // The leaves of parents [split, hi) are exactly those left in
                // [from, to): every new leaf of the block is stored once.
                if (split < hi && job->storing_kernel)
                    hash_and_store_leaves_directly(job, split, hi);
                else if (split < hi)
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
    if (job->copy_src || job->source)
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

static void build_levels(const node_store *stores, const uint64_t *len, const uint64_t *first,
                         unsigned depth, unsigned arity, int rule, const uint8_t *copy_src,
                         const rt_leaf_source *source, uint64_t copy_first)
{
    uint32_t threads;
    uint64_t threshold, unit;
    rt_pool_tunables(&threads, &threshold, &unit);
    rt_parents_fn kernel = rt_rule_parents_fn(rule);

    // Every level left out of the fused blocks is a separate pass, and on
    // the pool a separate join, so blocks are as large as FUSED_BLOCK_PARENTS
    // allows (one-unit blocks, 64 level-1 parents at arity 4, would fuse
    // only 2 levels and scale measurably worse on 2 threads). Smaller
    // batches keep at least FUSED_BLOCKS_PER_THREAD blocks per thread for
    // balance.
    // Leaves made by a source cost `weight` parents each: the threshold, the
    // block bounds and the grain are in parents' worth of work.
    uint64_t weight = source && source->weight ? source->weight : 1;
    uint64_t level1_work = len[1] - first[1];
    uint64_t max_parents = FUSED_BLOCK_PARENTS / weight, min_parents = unit / weight;
    uint64_t block_parents = level1_work / ((uint64_t)threads * FUSED_BLOCKS_PER_THREAD);
    if (block_parents > max_parents)
        block_parents = max_parents;
    if (block_parents < min_parents)
        block_parents = min_parents;
    if (block_parents == 0)
        block_parents = 1;
    uint64_t block_leaves;
    unsigned top = fused_shape(arity, block_parents, depth, &block_leaves);
    fused_job fused = {stores, len, first, top, arity, block_leaves,
                       first[0] / block_leaves, kernel, copy_src, copy_first,
                       copy_src ? rt_rule_storing_parents_fn(rule) : NULL, source};
    uint64_t blocks = (len[0] - 1) / block_leaves + 1 - fused.first_block;
    uint64_t grain = unit / (block_leaves / arity * weight);
    if (grain == 0)
        grain = 1;
    if (threads > 1 && level1_work * weight >= threshold && blocks > grain)
        rt_pool_parallel_for((size_t)blocks, (size_t)grain, run_fused_blocks, &fused);
    else
        run_fused_blocks(&fused, 0, (size_t)blocks);

    for (unsigned l = top; l < depth; l++) {
        level_job job = {stores[l], stores[l + 1], len[l], first[l + 1], arity, kernel};
        run_level(&job, len[l + 1] - first[l + 1]);
    }
}

void rt_build_levels(const node_store *stores, const uint64_t *len, const uint64_t *first,
                     unsigned depth, unsigned arity, int rule, const uint8_t *copy_src,
                     uint64_t copy_first)
{
    build_levels(stores, len, first, depth, arity, rule, copy_src, NULL, copy_first);
}

void rt_build_levels_from(const node_store *stores, const uint64_t *len,
                          const uint64_t *first, unsigned depth, unsigned arity, int rule,
                          const rt_leaf_source *source, uint64_t copy_first)
{
    build_levels(stores, len, first, depth, arity, rule, NULL, source, copy_first);
}

/* ---- stateless root ------------------------------------------------------ */

int rt_compute_root(const uint8_t *leaves, size_t count, unsigned arity, int rule,
                    uint8_t *root_out)
{
    if (!root_out || (count && !leaves) || arity < RT_MIN_ARITY || arity > RT_MAX_ARITY)
        return RT_ERR_INVALID_ARGUMENT;
    int status = rt_rule_check(rule, arity);
    if (status != RT_OK)
        return status;
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
    rt_build_levels(stores, len, first, depth, arity, rule, NULL, 0);
    memcpy(root_out, stores[depth].flat, 32);
    rt_buffer_free(upper);
    return RT_OK;
}

