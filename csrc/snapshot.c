/*
 * Snapshots: an immutable view of a tree that shares its storage (see
 * level.h for why a level needs only its table and its last chunk).
 */
#include "rt_config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rt_arith.h"
#include "rt_index.h"
#include "rt_tree.h"
#include "snapshot.h"

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
    snap->rule = tree->rule;
    snap->chunk_cap = tree->chunk_cap;
    snap->depth = tree->depth;
    snap->size = tree->size;
    memset(snap->root, 0, sizeof(snap->root));
    if (tree->size)
        rt_tree_copy_root(tree, snap->root);
    snap->index = tree->index;
    if (snap->index)
        rt_index_retain(snap->index);
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
    rt_index_release(snap->index);
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

int rt_snapshot_rule(const rt_snapshot *snap)
{
    return snap->rule;
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
        run = rt_min_u64(run, count);
        memcpy(out, rt_snapshot_node(snap, level, start), (size_t)run * 32u);
        out += run * 32u;
        start += run;
        count -= run;
    }
    return RT_OK;
}

