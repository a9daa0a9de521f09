/*
 * Log views: the tree as it was at an earlier size, read from the levels it
 * stores now.
 *
 * Appending never changes a node whose subtree was already complete, so of
 * the tree at size n only the right edge (the last node of each level) can
 * differ from storage, and each edge node is one parent of stored siblings
 * and the edge node below: O(depth x arity) hashes. A view is an ordinary
 * rt_snapshot whose levels are cut at n's lengths and whose tail chunks,
 * where the edge node differs from storage, are private copies holding the
 * recomputed node; every reader and proof function then works on it as is.
 */
#include "rt_config.h"

#include <stdlib.h>
#include <string.h>

#include "level.h"
#include "rt_arith.h"
#include "rt_index.h"
#include "rt_rule.h"
#include "snapshot.h"

/* The right edge of the tree at `size` leaves. */
typedef struct past_edge {
    unsigned depth;
    uint64_t len[RT_MAX_DEPTH_LIMIT + 1];     /* nodes per level at `size` */
    const uint8_t *last[RT_MAX_DEPTH_LIMIT + 1]; /* each level's last node */
    uint8_t recomputed[RT_MAX_DEPTH_LIMIT + 1]; /* 1: last[l] is not in storage */
    uint8_t hashes[RT_MAX_DEPTH_LIMIT + 1][32];
} past_edge;

/* The one parent hash of this file, under the snapshot's hash rule. */
static void edge_parent(const rt_snapshot *snap, const uint8_t *children, unsigned count,
                        uint8_t *out)
{
    rt_rule_parent(snap->rule, children, count, out);
}

/* Walks up from the leaf size - 1. While the edge node equals the stored
 * one, its parent does too when the group holds the same children as in
 * storage: a full group, or the group the stored level also ends with.
 * Once a node differs, every node above it on the edge differs. */
static void past_edge_compute(const rt_snapshot *snap, uint64_t size, past_edge *edge)
{
    const unsigned arity = snap->arity;
    uint8_t group[RT_MAX_ARITY * 32];
    uint64_t len = size;
    int stored = 1;
    unsigned l = 0;
    edge->len[0] = size;
    edge->last[0] = rt_snapshot_node(snap, 0, size - 1);
    edge->recomputed[0] = 0;
    for (; len > 1; l++) {
        uint64_t last = len - 1;
        uint64_t start = last - rt_mod(last, arity);
        unsigned members = (unsigned)(len - start);
        stored = stored && (members == arity || snap->levels[l].len == len);
        if (stored) {
            edge->last[l + 1] = rt_snapshot_node(snap, l + 1, rt_div(last, arity));
        } else if (members == 1) {
            edge->last[l + 1] = edge->last[l]; // a lone node is lifted unchanged
        } else {
            // A group never straddles chunks (nor the cold prefix, a whole
            // number of chunks), so the stored members are contiguous.
            memcpy(group, rt_snapshot_node(snap, l, start), 32u * (size_t)(members - 1));
            memcpy(group + 32u * (size_t)(members - 1), edge->last[l], 32);
            edge_parent(snap, group, members, edge->hashes[l + 1]);
            edge->last[l + 1] = edge->hashes[l + 1];
        }
        edge->recomputed[l + 1] = (uint8_t)!stored;
        len = rt_ceil_div(len, arity);
        edge->len[l + 1] = len;
    }
    edge->depth = l;
}

/* The arguments of every snapshot entry point: a size the tree had, and
 * somewhere to put the result. */
static int past_size_check(const rt_snapshot *snap, uint64_t size, const void *out)
{
    if (!snap || !out)
        return RT_ERR_INVALID_ARGUMENT;
    return size >= 1 && size <= snap->size ? RT_OK : RT_ERR_INDEX;
}

int rt_snapshot_root_at(const rt_snapshot *snap, uint64_t size, uint8_t *root_out)
{
    int status = past_size_check(snap, size, root_out);
    if (status != RT_OK)
        return status;
    past_edge edge;
    past_edge_compute(snap, size, &edge);
    memcpy(root_out, edge.last[edge.depth], 32);
    return RT_OK;
}

int rt_tree_root_at(rt_tree *tree, uint64_t size, uint8_t *root_out)
{
    if (!tree || !root_out)
        return RT_ERR_INVALID_ARGUMENT;
    // A snapshot costs O(depth) reference counts and lets the hashing run
    // without holding the tree's lock.
    rt_snapshot *snap;
    int status = rt_tree_snapshot(tree, &snap);
    if (status != RT_OK)
        return status;
    status = rt_snapshot_root_at(snap, size, root_out);
    rt_snapshot_free(snap);
    return status;
}

/* `count` chunks of `chunk_cap` nodes, each owned by the caller (refcount
 * 1), taken through a scratch level so that they come from, and return to,
 * the same chunk heap as every level's. */
static int private_chunks(unsigned chunk_cap, unsigned count, rt_chunk **out)
{
    rt_level scratch;
    rt_level_init(&scratch);
    int status = rt_level_reserve(&scratch, 0, (uint64_t)count * chunk_cap, chunk_cap);
    if (status == RT_OK) {
        for (unsigned i = 0; i < count; i++) {
            out[i] = scratch.table->slots[i];
            rt_chunk_retain(out[i]);
        }
    }
    rt_level_destroy(&scratch);
    return status;
}

/* Level l of the view, reading storage unchanged: the source's tail chunk
 * when the view ends in the same chunk, else an earlier chunk of the table,
 * which is immutable (level.h). */
static void view_level_shared(const rt_snapshot_level *src, rt_snapshot_level *dst,
                              uint64_t last, unsigned chunk_cap)
{
    dst->cold_len = src->cold_len;
    if (last < src->cold_len) {
        // Every node is read from the cold prefix; the tail is only held,
        // so that freeing the view is the same as freeing any snapshot.
        dst->tail_slot = 0;
        dst->tail = src->tail;
    } else {
        dst->tail_slot = (size_t)((last - src->cold_len) / chunk_cap);
        dst->tail = dst->tail_slot == src->tail_slot ? src->tail
                                                     : src->table->slots[dst->tail_slot];
    }
}

/* Level l of the view whose last node was recomputed: `chunk` receives the
 * nodes of its chunk before that node, then the node. The cold prefix is cut
 * at that chunk, which becomes slot 0: no slot after it is ever read. */
static void view_level_private(const rt_snapshot *snap, unsigned level,
                               rt_snapshot_level *dst, uint64_t last,
                               const uint8_t *node, rt_chunk *chunk)
{
    const rt_snapshot_level *src = &snap->levels[level];
    uint64_t chunk_first = last - rt_mod(last, snap->chunk_cap);
    size_t before = (size_t)(last - chunk_first);
    if (before)
        memcpy(chunk->nodes, rt_snapshot_node(snap, level, chunk_first), 32u * before);
    memcpy(chunk->nodes + 32u * before, node, 32);
    dst->cold_len = rt_min_u64(src->cold_len, chunk_first);
    dst->tail_slot = (size_t)((chunk_first - dst->cold_len) / snap->chunk_cap);
    dst->tail = chunk;
}

static unsigned recomputed_levels(const past_edge *edge)
{
    unsigned count = 0;
    for (unsigned l = 0; l <= edge->depth; l++)
        count += edge->recomputed[l];
    return count;
}

/* Lay `view` (room for edge->depth + 1 levels) out as the tree at the edge's
 * size, reading `snap`; `chunks` holds one chunk per recomputed level, in
 * level order. Takes no references. */
static void view_lay_out(const rt_snapshot *snap, const past_edge *edge, rt_snapshot *view,
                         rt_chunk *const *chunks)
{
    // Every field but the levels as in the source: a view hashes, encodes
    // proofs and looks leaves up as its tree does.
    memcpy(view, snap, sizeof(*view));
    view->depth = edge->depth;
    view->size = edge->len[0];
    memcpy(view->root, edge->last[edge->depth], 32);
    unsigned used = 0;
    for (unsigned l = 0; l <= edge->depth; l++) {
        const rt_snapshot_level *src = &snap->levels[l];
        rt_snapshot_level *dst = &view->levels[l];
        uint64_t last = edge->len[l] - 1;
        dst->len = edge->len[l];
        dst->cold = src->cold;
        dst->table = src->table;
        if (edge->recomputed[l])
            view_level_private(snap, l, dst, last, edge->last[l], chunks[used++]);
        else
            view_level_shared(src, dst, last, snap->chunk_cap);
    }
}

int rt_snapshot_at(const rt_snapshot *snap, uint64_t size, rt_snapshot **out)
{
    int status = past_size_check(snap, size, out);
    if (status != RT_OK)
        return status;
    past_edge edge;
    past_edge_compute(snap, size, &edge);
    unsigned private_count = recomputed_levels(&edge);
    rt_snapshot *view = malloc(sizeof(*view) + (edge.depth + 1) * sizeof(rt_snapshot_level));
    if (!view)
        return RT_ERR_NOMEM;
    rt_chunk *chunks[RT_MAX_DEPTH_LIMIT + 1];
    if (private_count) {
        status = private_chunks(snap->chunk_cap, private_count, chunks);
        if (status != RT_OK) {
            free(view);
            return status;
        }
    }
    view_lay_out(snap, &edge, view, chunks);
    // The references rt_snapshot_free drops, as rt_tree_snapshot takes them;
    // private chunks already hold theirs.
    if (view->index)
        rt_index_retain(view->index); // answers are bounded by view->size
    for (unsigned l = 0; l <= edge.depth; l++) {
        rt_table_retain(view->levels[l].table);
        if (!edge.recomputed[l])
            rt_chunk_retain(view->levels[l].tail);
    }
    *out = view;
    return RT_OK;
}

/* fn(view, ctx) on a view of `snap` at `size` that lives for the call only,
 * while the caller holds `snap`: one block, no references, and chunks of
 * which only the nodes are read. */
static int with_transient_view(const rt_snapshot *snap, uint64_t size,
                               int (*fn)(const rt_snapshot *view, void *ctx), void *ctx)
{
    past_edge edge;
    past_edge_compute(snap, size, &edge);
    size_t head = (sizeof(rt_snapshot) + (edge.depth + 1) * sizeof(rt_snapshot_level) + 63) &
                  ~(size_t)63;
    size_t stride = (sizeof(rt_chunk) + 32u * (size_t)snap->chunk_cap + 63) & ~(size_t)63;
    unsigned private_count = recomputed_levels(&edge);
    void *block;
    if (posix_memalign(&block, 64, head + private_count * stride) != 0)
        return RT_ERR_NOMEM;
    rt_chunk *chunks[RT_MAX_DEPTH_LIMIT + 1];
    for (unsigned i = 0; i < private_count; i++)
        chunks[i] = (rt_chunk *)((uint8_t *)block + head + i * stride);
    rt_snapshot *view = block;
    view_lay_out(snap, &edge, view, chunks);
    int status = fn(view, ctx);
    free(block);
    return status;
}

typedef struct one_call {
    uint64_t argument; /* the leaf index, or the old size */
    uint8_t *out;
    size_t capacity;
    size_t *length;
} one_call;

static int one_proof(const rt_snapshot *view, void *ctx)
{
    const one_call *call = ctx;
    return rt_proof_one(view, call->argument, call->out, call->capacity, call->length);
}

static int one_consistency(const rt_snapshot *view, void *ctx)
{
    const one_call *call = ctx;
    int status = rt_consistency_layout(view, call->argument, call->length);
    if (status != RT_OK)
        return status;
    if (*call->length > call->capacity)
        return RT_ERR_INVALID_ARGUMENT;
    return rt_consistency_fill(view, call->argument, call->out, *call->length);
}

int rt_proof_one_at(const rt_snapshot *snap, uint64_t size, uint64_t index, uint8_t *out,
                    size_t capacity, size_t *length)
{
    int status = past_size_check(snap, size, length);
    if (status != RT_OK)
        return status;
    if (index >= size)
        return RT_ERR_INDEX;
    one_call call = {index, out, capacity, length};
    return with_transient_view(snap, size, one_proof, &call);
}

int rt_consistency_at(const rt_snapshot *snap, uint64_t old_size, uint64_t new_size,
                      uint8_t *out, size_t capacity, size_t *length)
{
    int status = past_size_check(snap, new_size, length);
    if (status != RT_OK)
        return status;
    if (old_size < 1 || old_size > new_size)
        return RT_ERR_INDEX;
    if (capacity && !out)
        return RT_ERR_INVALID_ARGUMENT;
    one_call call = {old_size, out, capacity, length};
    return with_transient_view(snap, new_size, one_consistency, &call);
}
