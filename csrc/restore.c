/*
 * Restoring a tree from stored levels, and cold prefixes: level nodes read
 * in place from caller memory (a mapped checkpoint) instead of chunks.
 */
#include "rt_config.h"

#include <pthread.h>

#include "rt_arith.h"
#include "rt_build.h"
#include "rt_index.h"
#include "rt_tree.h"

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
        rt_level_forget_prefault(level);
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
        if (tree->index && (status = rt_index_rebuild_locked(tree)) != RT_OK)
            reset_levels(tree);
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
        uint64_t cold = cold_limit(rt_min_u64(count, target->len), tree->chunk_cap, count);
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

