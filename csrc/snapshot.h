/*
 * Snapshot layout (internal; cffi never reads this file). See level.h for
 * why sharing a level needs only its table and the chunk of its last node.
 */
#ifndef RT_SNAPSHOT_H
#define RT_SNAPSHOT_H

#include "level.h"
#include "rotortree.h"

typedef struct rt_snapshot_level {
    uint64_t len;
    const uint8_t *cold;   /* as in rt_level */
    uint64_t cold_len;
    rt_chunk_table *table; /* slots before tail_slot are immutable */
    rt_chunk *tail;        /* the chunk holding the level's last node */
    size_t tail_slot;
} rt_snapshot_level;

struct rt_snapshot {
    unsigned arity;
    int rule; /* the tree's enum rt_rule */
    unsigned chunk_cap;
    unsigned depth;
    uint64_t size;
    uint8_t root[32];
    struct rt_leaf_index *index; /* the tree's at the time, shared; or NULL */
    rt_snapshot_level levels[]; /* depth + 1 entries; none when size == 0 */
};

static inline const uint8_t *rt_snapshot_node(const rt_snapshot *snap, unsigned level,
                                              uint64_t index)
{
    const rt_snapshot_level *lv = &snap->levels[level];
    if (index < lv->cold_len)
        return lv->cold + index * 32u;
    size_t slot = (size_t)rt_div(index - lv->cold_len, snap->chunk_cap);
    const rt_chunk *chunk = slot == lv->tail_slot ? lv->tail : lv->table->slots[slot];
    return chunk->nodes + rt_mod(index, snap->chunk_cap) * 32u;
}

#endif /* RT_SNAPSHOT_H */
