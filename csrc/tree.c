/*
 * The tree: lifecycle, reads, and inserts (a single leaf through the
 * per-level prefix cache below, a batch through the build engine).
 */
#include "rt_config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "level.h"
#include "rotortree.h"
#include "rt_arith.h"
#include "rt_blake3.h"
#include "rt_build.h"
#include "rt_index.h"
#include "rt_mapping.h"
#include "rt_rule.h"
#include "rt_tree.h"

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

int rt_tree_new(unsigned arity, unsigned max_depth, int rule, rt_tree **out)
{
    if (!out || arity < RT_MIN_ARITY || arity > RT_MAX_ARITY || max_depth < 1 ||
        max_depth > RT_MAX_DEPTH_LIMIT)
        return RT_ERR_INVALID_ARGUMENT;
    int status = rt_rule_check(rule, arity);
    if (status != RT_OK)
        return status;
    rt_fork_handlers_install();
    rt_tree *tree = calloc(1, sizeof(*tree));
    if (!tree)
        return RT_ERR_NOMEM;
    if (rt_tree_lock_init(&tree->lock)) {
        free(tree);
        return RT_ERR_THREAD;
    }
    tree->arity = arity;
    tree->rule = rule;
    tree->max_depth = max_depth;
    tree->chunk_cap = rt_chunk_capacity(arity);
    tree->capacity = capacity_of(arity, max_depth);
    for (unsigned l = 0; l <= RT_MAX_DEPTH_LIMIT; l++)
        rt_level_init(&tree->levels[l]);
    rt_tree_register(tree);
    *out = tree;
    return RT_OK;
}

void rt_tree_free(rt_tree *tree)
{
    if (!tree)
        return;
    rt_tree_unregister(tree);
    for (unsigned l = 0; l <= RT_MAX_DEPTH_LIMIT; l++)
        rt_level_destroy(&tree->levels[l]);
    rt_index_release(tree->index);
    pthread_rwlock_destroy(&tree->lock);
    free(tree);
}

/* ---- single inserts --------------------------------------------------- */

// A single insert rehashes one parent per level, each depending on the one
// below, so its cost is the latency of that chain of compressions. In a
// LeanIMT only a level's last node ever changes, so for a parent whose group
// keeps the same members the message blocks before its last child are the
// same as last time: the chaining value after them is cached per level and
// only the blocks holding the last child are compressed again (at arity 4,
// 1.25 compressions per level instead of 1.75 on average). The same holds
// for untagged (leanimt) parents, whose message is the children alone.

/* Message block `block` of blake3(header || children), where the header is
 * 0x01 || members when header_len is 2 and empty when it is 0. */
static void parent_block(const uint8_t *children, unsigned members, size_t header_len,
                         uint64_t block, uint8_t out[64], uint8_t *len)
{
    size_t total = header_len + 32u * (size_t)members;
    size_t from = (size_t)block * 64u, to = from + 64 < total ? from + 64 : total;
    memset(out, 0, 64);
    for (size_t at = from; at < to && at < header_len; at++)
        out[at - from] = at == 0 ? 0x01 : (uint8_t)members;
    size_t body_from = from < header_len ? header_len : from;
    if (body_from < to)
        memcpy(out + (body_from - from), children + (body_from - header_len), to - body_from);
    *len = (uint8_t)(to - from);
}

/* The chaining value as the parent's 32 bytes (little-endian words). */
static void store_cv(const uint32_t cv[8], uint8_t *out)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, cv, 32);
#else
    for (unsigned i = 0; i < 8; i++)
        for (unsigned byte = 0; byte < 4; byte++)
            out[4 * i + byte] = (uint8_t)(cv[i] >> (8 * byte));
#endif
}

/* The prefix the next single insert will need at level 0, hashed by this
 * one: a block of it rides beside each compression of this insert's chain,
 * in the other half of a paired compression (rt_compress2_fn), nearly free
 * where the chain leaves the vector units idle. The leaves it covers end
 * with this insert's leaf, so it is kept only once the insert is published
 * (rt_tree.next_prefix). */
typedef struct rider {
    struct prefix_cache prefix; /* blocks to hash; cv after `done` of them */
    const uint8_t *children;
    size_t header_len;
    unsigned done;
} rider;

typedef struct chain {
    rt_compress_fn compress;
    rt_compress2_fn compress2; /* NULL: no rider */
    rider *rider;
} chain;

/* One compression of the insert's chain, with the rider's next block beside
 * it if it has one left. */
static void chain_compress(chain *ch, uint32_t cv[8], const uint8_t block[64], uint8_t len,
                           uint8_t flags)
{
    rider *r = ch->rider;
    if (r && r->done < r->prefix.blocks) {
        uint8_t other[64], other_len;
        parent_block(r->children, r->prefix.members, r->header_len, r->done, other, &other_len);
        ch->compress2(cv, block, len, flags, r->prefix.cv, other, 64,
                      r->done == 0 ? RT_FLAG_CHUNK_START : 0);
        r->done++;
    } else {
        ch->compress(cv, block, len, 0, flags);
    }
}

/* `ready` (may be NULL): a prefix hashed ahead for some group, used when it
 * is this one's. */
static void hash_last_parent(struct prefix_cache *cache, const struct prefix_cache *ready,
                             uint64_t group, const uint8_t *children, unsigned members,
                             uint8_t *out, chain *ch, int rule)
{
    size_t header_len = rule == RT_RULE_ROTORTREE_015 ? 2 : 0;
    size_t total = header_len + 32u * (size_t)members;
    // SHA-256 parents are one fixed-size message with nothing to reuse;
    // BLAKE3 over several chunks has no single chain to cache.
    if (rule == RT_RULE_RFC6962 || total > RT_BLAKE3_CHUNK_LEN) {
        rt_rule_parent(rule, children, members, out);
        return;
    }
    uint64_t blocks = (total + 63) / 64;
    uint8_t block[64], len;
    if (cache->group != group || cache->members != members) {
        if (ready && ready->members == members && ready->group == group) {
            *cache = *ready;
        } else {
            cache->group = group;
            cache->members = members;
            // Blocks that end before the last child's first byte.
            cache->blocks = (unsigned)((header_len + 32u * (members - 1)) / 64);
            memcpy(cache->cv, rt_blake3_iv, sizeof(cache->cv));
            for (unsigned b = 0; b < cache->blocks; b++) {
                parent_block(children, members, header_len, b, block, &len);
                chain_compress(ch, cache->cv, block, 64, b == 0 ? RT_FLAG_CHUNK_START : 0);
            }
        }
    }
    // The message from the first uncached block to its end, zero-padded to
    // whole blocks, assembled with one copy of the children it covers (at
    // most two blocks at arity 4, both holding part of the last child).
    size_t from = (size_t)cache->blocks * 64u, tail = total - from;
    uint8_t message[RT_BLAKE3_CHUNK_LEN];
    memset(message + (blocks - cache->blocks - 1) * 64u, 0, 64);
    size_t body = from;
    if (from < header_len) {
        message[0] = 0x01;
        message[1] = (uint8_t)members;
        body = header_len;
    }
    memcpy(message + (body - from), children + (body - header_len), total - body);
    uint32_t cv[8];
    memcpy(cv, cache->cv, sizeof(cv));
    for (uint64_t b = cache->blocks; b < blocks; b++) {
        const uint8_t *at = message + (b - cache->blocks) * 64u;
        uint8_t flags = b == 0 ? RT_FLAG_CHUNK_START : 0;
        if (b + 1 == blocks)
            flags |= RT_FLAG_CHUNK_END | RT_FLAG_ROOT;
        size_t left = tail - (size_t)(at - message);
        chain_compress(ch, cv, at, (uint8_t)(left < 64 ? left : 64), flags);
    }
    store_cv(cv, out);
}

/* One leaf at index first[0], then the right edge of every level: node
 * first[l] of level l, which has len[l] = first[l] + 1 nodes. */
static void append_one(rt_tree *tree, const uint8_t *leaf, const uint64_t *first,
                       const uint64_t *len, unsigned depth)
{
    const unsigned arity = tree->arity, cap = tree->chunk_cap;
    const size_t header_len = tree->rule == RT_RULE_ROTORTREE_015 ? 2 : 0;
    memcpy((uint8_t *)rt_level_node(&tree->levels[0], first[0], cap), leaf, 32);
    chain ch = {rt_active_compress_fn(), rt_active_compress2_fn(), NULL};
    // The next insert's level-0 parent has one member more (unless this
    // leaf completes its group), so its prefix ends with this leaf.
    rider ahead;
    uint64_t next_group = first[1];
    unsigned next_members = (unsigned)(first[0] + 2 - next_group * arity);
    if (ch.compress2 && tree->rule != RT_RULE_RFC6962 && next_members <= arity &&
        header_len + 32u * (size_t)next_members <= RT_BLAKE3_CHUNK_LEN) {
        ahead.prefix.group = next_group;
        ahead.prefix.members = next_members;
        ahead.prefix.blocks = (unsigned)((header_len + 32u * (next_members - 1)) / 64);
        memcpy(ahead.prefix.cv, rt_blake3_iv, sizeof(ahead.prefix.cv));
        ahead.children = rt_level_node(&tree->levels[0], next_group * arity, cap);
        ahead.header_len = header_len;
        ahead.done = 0;
        if (ahead.prefix.blocks)
            ch.rider = &ahead;
    }
    for (unsigned l = 0; l < depth; l++) {
        uint64_t group = first[l + 1], first_child = group * arity;
        unsigned members = (unsigned)(len[l] - first_child);
        const uint8_t *children = rt_level_node(&tree->levels[l], first_child, cap);
        // The write lock is held and the chunk was made private by reserve.
        uint8_t *parent = (uint8_t *)rt_level_node(&tree->levels[l + 1], group, cap);
        if (members == 1)
            memcpy(parent, children, 32);
        else
            hash_last_parent(&tree->prefix[l], l == 0 ? &tree->next_prefix : NULL, group,
                             children, members, parent, &ch, tree->rule);
    }
    if (ch.rider) {
        // A chain shorter than the prefix (small trees, wide groups).
        uint8_t block[64], block_len;
        for (; ahead.done < ahead.prefix.blocks; ahead.done++) {
            parent_block(ahead.children, next_members, header_len, ahead.done, block,
                         &block_len);
            ch.compress(ahead.prefix.cv, block, 64, 0,
                        ahead.done == 0 ? RT_FLAG_CHUNK_START : 0);
        }
        tree->next_prefix = ahead.prefix; // cleared if the insert is refused
    }
}

/* The new nodes of one insert (everything it writes past the published
 * lengths, and the edge nodes it rewrites), as a callback for
 * rt_index_beside. */
typedef struct node_writes {
    rt_tree *tree;
    const uint8_t *leaves;
    const rt_leaf_source *source;
    uint64_t count;
    const uint64_t *first, *len;
    unsigned new_depth;
} node_writes;

static void write_nodes(void *ctx)
{
    const node_writes *w = ctx;
    rt_tree *tree = w->tree;
    const unsigned cap = tree->chunk_cap;
    if (w->new_depth == 0) {
        node_store leaves_out = store_of_level(&tree->levels[0], cap);
        store_write(&leaves_out, w->first[0], w->leaves, w->count);
    } else if (w->count == 1) {
        append_one(tree, w->leaves, w->first, w->len, w->new_depth);
    } else {
        node_store stores[RT_MAX_DEPTH_LIMIT + 1];
        for (unsigned l = 0; l <= w->new_depth; l++)
            stores[l] = store_of_level(&tree->levels[l], cap);
        if (w->source)
            rt_build_levels_from(stores, w->len, w->first, w->new_depth, tree->arity,
                                 tree->rule, w->source, w->first[0]);
        else
            rt_build_levels(stores, w->len, w->first, w->new_depth, tree->arity, tree->rule,
                            w->leaves, w->first[0]);
    }
}

/* Caller holds the write lock. `gate` (may be NULL) runs after the new nodes
 * are hashed and before they are published; if it fails, the tree is put
 * back as it was and its status returned (see rt_tree_insert_many_gated).
 * The leaves come from `leaves`, or, when `source` is set, are made by it. */
static int insert_from_locked(rt_tree *tree, const uint8_t *leaves,
                              const rt_leaf_source *source, uint64_t count,
                              uint8_t *root_out, int (*gate)(void *), void *gate_ctx)
{
    const unsigned arity = tree->arity;
    const unsigned cap = tree->chunk_cap;
    const uint64_t old_size = tree->size;
    if (count > tree->capacity - old_size)
        return RT_ERR_MAX_DEPTH;
    uint8_t lone[32];
    if (source && count == 1) { // the one-leaf paths below read a leaf
        source->fill(source->ctx, 0, 1, lone);
        leaves = lone;
        source = NULL;
    }
    const uint64_t new_size = old_size + count;

    // Level l gets nodes [first[l], len[l]) written; everything is
    // allocated up front so that the writes below cannot fail half way.
    uint64_t first[RT_MAX_DEPTH_LIMIT + 1], len[RT_MAX_DEPTH_LIMIT + 1];
    unsigned new_depth = 0;
    first[0] = old_size;
    len[0] = new_size;
    if (count == 1) {
        // Each level gains or rewrites only its last node, so len[l] is
        // first[l] + 1 and the root level is the first with one node: one
        // division per level (a real one at odd arities) instead of three.
        while (first[new_depth] > 0) {
            new_depth++;
            first[new_depth] = rt_div(first[new_depth - 1], arity);
            len[new_depth] = first[new_depth] + 1;
        }
    } else {
        new_depth = rt_depth_of(new_size, arity);
        for (unsigned l = 1; l <= new_depth; l++) {
            first[l] = rt_div(first[l - 1], arity);
            len[l] = rt_ceil_div(len[l - 1], arity);
        }
    }
    rt_leaf_index *fresh_index = NULL;
    if (tree->index) {
        int status = rt_index_reserve(tree, count, new_size, &fresh_index);
        if (status != RT_OK)
            return status;
    }
    for (unsigned l = 0; l <= new_depth; l++) {
        if (rt_level_ready(&tree->levels[l], first[l], len[l], cap))
            continue;
        tree->ahead_marked = 1;
        int status = rt_level_reserve(&tree->levels[l], first[l], len[l], cap);
        if (status != RT_OK) {
            rt_index_release(fresh_index);
            return status;
        }
    }
    // Hashing overwrites the last existing node of each level above the
    // leaves in place (everything else it writes lies past the published
    // lengths), so keeping those nodes is all a gated insert needs to undo.
    uint8_t edge[RT_MAX_DEPTH_LIMIT + 1][32];
    if (gate || rt_index_may_refuse(tree->index))
        for (unsigned l = 1; l <= new_depth; l++)
            if (first[l] < tree->levels[l].len)
                memcpy(edge[l], rt_level_node(&tree->levels[l], first[l], cap), 32);

    node_writes writes = {tree, leaves, source, count, first, len, new_depth};
    if (tree->index) // it may index the batch meanwhile, and refuse it (unique inserts)
        rt_index_beside(tree, fresh_index, write_nodes, &writes);
    else
        write_nodes(&writes);

    int status = tree->index ? rt_index_verdict(tree->index) : RT_OK;
    if (status == RT_OK && gate)
        status = gate(gate_ctx);
    if (status != RT_OK) {
        // The write lock is still held, so no reader saw the new nodes.
        // The prefix hashed ahead covers the refused leaf.
        tree->next_prefix.members = 0;
        for (unsigned l = 1; l <= new_depth; l++)
            if (first[l] < tree->levels[l].len)
                memcpy((uint8_t *)rt_level_node(&tree->levels[l], first[l], cap), edge[l], 32);
        rt_index_abandon(tree, fresh_index);
        return status;
    }

    for (unsigned l = 0; l <= new_depth; l++)
        tree->levels[l].len = len[l];
    tree->size = new_size;
    tree->depth = new_depth;
    if (tree->index)
        rt_index_add(tree, fresh_index, old_size);
    rt_tree_copy_root(tree, root_out);
    return RT_OK;
}

int rt_tree_insert_locked(rt_tree *tree, const uint8_t *leaves, uint64_t count,
                          uint8_t *root_out)
{
    return insert_from_locked(tree, leaves, NULL, count, root_out, NULL, NULL);
}

int rt_tree_insert_many(rt_tree *tree, const uint8_t *leaves, size_t count,
                        uint8_t *root_out)
{
    return rt_tree_insert_many_gated(tree, leaves, count, root_out, NULL, NULL);
}

/* `stable`: nobody changes `leaves` during the call, so an indexed tree may
 * read them twice, to index them while it hashes them (rt_index_beside). */
static int insert_many_from(rt_tree *tree, const uint8_t *leaves, const rt_leaf_source *source,
                            size_t count, uint8_t *root_out, int (*gate)(void *),
                            void *gate_ctx, int stable)
{
    if (pthread_rwlock_wrlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    rt_index_plan plan = {leaves, count, NULL, 0, 1, 0};
    const int planned = stable && leaves && tree->index;
    if (planned)
        rt_index_plan_begin(tree, &plan);
    int status = insert_from_locked(tree, leaves, source, count, root_out, gate, gate_ctx);
    if (planned)
        rt_index_plan_end(tree);
    // Memory the next batch will likely need, pre-faulted in the background
    // from now on: after this batch, so that it never competes with it.
    uint8_t *ahead[(RT_MAX_DEPTH_LIMIT + 1) * RT_LEVEL_AHEAD];
    size_t ahead_bytes[(RT_MAX_DEPTH_LIMIT + 1) * RT_LEVEL_AHEAD];
    unsigned aheads = 0;
    if (tree->ahead_marked) {
        for (unsigned l = 0; l <= tree->depth; l++)
            aheads += rt_level_take_prefault(&tree->levels[l], &ahead[aheads], &ahead_bytes[aheads]);
        tree->ahead_marked = 0;
    }
    pthread_rwlock_unlock(&tree->lock);
    for (unsigned i = 0; i < aheads; i++)
        rt_mapping_prefault(ahead[i], ahead_bytes[i]);
    return status;
}

int rt_tree_insert_many_gated(rt_tree *tree, const uint8_t *leaves, size_t count,
                              uint8_t *root_out, int (*gate)(void *), void *gate_ctx)
{
    if (!tree || !root_out || (count && !leaves))
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_BATCH;
    return insert_many_from(tree, leaves, NULL, count, root_out, gate, gate_ctx, 0);
}

int rt_tree_insert_many_stable(rt_tree *tree, const uint8_t *leaves, size_t count,
                               uint8_t *root_out)
{
    if (!tree || !root_out || (count && !leaves))
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_BATCH;
    return insert_many_from(tree, leaves, NULL, count, root_out, NULL, NULL, 1);
}

int rt_tree_insert_from_source(rt_tree *tree, const rt_leaf_source *source, size_t count,
                               uint8_t *root_out)
{
    if (!tree || !root_out || !source)
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_BATCH;
    return insert_many_from(tree, NULL, source, count, root_out, NULL, NULL, 0);
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
        rt_tree_copy_root(tree, out->root);
    else
        memset(out->root, 0, sizeof(out->root));
    pthread_rwlock_unlock(&tree->lock);
}

void rt_tree_shape(const rt_tree *tree, unsigned *arity, unsigned *max_depth)
{
    *arity = tree->arity;
    *max_depth = tree->max_depth;
}

int rt_tree_rule(const rt_tree *tree)
{
    return tree->rule;
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

