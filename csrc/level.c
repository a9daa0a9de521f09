#include "level.h"

#include <stdlib.h>
#include <string.h>

#include "rotortree.h"

unsigned rt_chunk_capacity(unsigned arity)
{
    unsigned groups = (RT_CHUNK_TARGET_NODES + arity - 1) / arity;
    return groups * arity;
}

rt_chunk *rt_chunk_alloc(unsigned chunk_cap)
{
    void *memory = NULL;
    if (posix_memalign(&memory, 64, sizeof(rt_chunk) + (size_t)chunk_cap * 32u) != 0)
        return NULL;
    rt_chunk *chunk = memory;
    atomic_init(&chunk->refcount, 1);
    return chunk;
}

void rt_chunk_retain(rt_chunk *chunk)
{
    atomic_fetch_add_explicit(&chunk->refcount, 1, memory_order_relaxed);
}

void rt_chunk_release(rt_chunk *chunk)
{
    // acq_rel: the thread that frees must see every write made by the
    // threads that held the other references.
    if (atomic_fetch_sub_explicit(&chunk->refcount, 1, memory_order_acq_rel) == 1)
        free(chunk);
}

static int is_shared(atomic_uint *refcount)
{
    return atomic_load_explicit(refcount, memory_order_acquire) > 1;
}

void rt_table_retain(rt_chunk_table *table)
{
    atomic_fetch_add_explicit(&table->refcount, 1, memory_order_relaxed);
}

void rt_table_release(rt_chunk_table *table)
{
    if (!table)
        return;
    if (atomic_fetch_sub_explicit(&table->refcount, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < table->count; i++)
        rt_chunk_release(table->slots[i]);
    free(table);
}

void rt_level_init(rt_level *level)
{
    memset(level, 0, sizeof(*level));
}

void rt_level_destroy(rt_level *level)
{
    rt_table_release(level->table);
    rt_level_init(level);
}

static size_t table_bytes(size_t cap)
{
    return sizeof(rt_chunk_table) + cap * sizeof(rt_chunk *);
}

static int grow_table(rt_level *level, size_t needed)
{
    rt_chunk_table *old = level->table;
    size_t old_cap = old ? old->cap : 0;
    if (needed <= old_cap)
        return RT_OK;
    size_t cap = old_cap ? old_cap : 4;
    while (cap < needed)
        cap *= 2;
    if (old && !is_shared(&old->refcount)) {
        rt_chunk_table *grown = realloc(old, table_bytes(cap));
        if (!grown)
            return RT_ERR_NOMEM;
        grown->cap = cap;
        level->table = grown;
        return RT_OK;
    }
    // A snapshot still reads the old table, so it must stay where it is:
    // the level moves to a copy that takes its own chunk references.
    rt_chunk_table *fresh = malloc(table_bytes(cap));
    if (!fresh)
        return RT_ERR_NOMEM;
    atomic_init(&fresh->refcount, 1);
    fresh->cap = cap;
    fresh->count = old ? old->count : 0;
    for (size_t i = 0; i < fresh->count; i++) {
        fresh->slots[i] = old->slots[i];
        rt_chunk_retain(fresh->slots[i]);
    }
    rt_table_release(old);
    level->table = fresh;
    return RT_OK;
}

int rt_level_reserve(rt_level *level, uint64_t first_written, uint64_t new_len,
                     unsigned chunk_cap)
{
    if (new_len == 0 || first_written >= new_len)
        return RT_OK;
    // Slots count from the end of the cold prefix, which is never written.
    first_written -= level->cold_len;
    new_len -= level->cold_len;
    size_t needed = (size_t)((new_len - 1) / chunk_cap) + 1;
    int status = grow_table(level, needed);
    if (status != RT_OK)
        return status;
    rt_chunk_table *table = level->table;

    // Only the chunk holding first_written can be shared in practice (see
    // level.h), but checking the whole written range keeps the invariant
    // local to this function.
    size_t first_chunk = (size_t)(first_written / chunk_cap);
    size_t existing_end = table->count < needed ? table->count : needed;
    for (size_t c = first_chunk; c < existing_end; c++) {
        rt_chunk *shared = table->slots[c];
        if (!is_shared(&shared->refcount))
            continue;
        rt_chunk *copy = rt_chunk_alloc(chunk_cap);
        if (!copy)
            return RT_ERR_NOMEM;
        memcpy(copy->nodes, shared->nodes, (size_t)chunk_cap * 32u);
        table->slots[c] = copy;
        rt_chunk_release(shared);
    }
    // New chunks are installed as they are allocated: a failure part way
    // leaves spare chunks beyond `len`, which hold no visible data and are
    // reused by the next insert.
    while (table->count < needed) {
        rt_chunk *fresh = rt_chunk_alloc(chunk_cap);
        if (!fresh)
            return RT_ERR_NOMEM;
        table->slots[table->count++] = fresh;
    }
    return RT_OK;
}

int rt_level_make_cold(rt_level *level, const uint8_t *cold, uint64_t cold_len,
                       unsigned chunk_cap)
{
    if (cold_len % chunk_cap || cold_len < level->cold_len || !level->len ||
        cold_len > (level->len - 1) / chunk_cap * chunk_cap)
        return RT_ERR_INVALID_ARGUMENT;
    size_t dropped = (size_t)((cold_len - level->cold_len) / chunk_cap);
    rt_chunk_table *old = level->table;
    size_t kept = old->count - dropped;
    // A fresh table even when unshared: snapshots may hold the old one, and
    // shifting slots in place would move what they read.
    rt_chunk_table *fresh = malloc(table_bytes(kept ? kept : 1));
    if (!fresh)
        return RT_ERR_NOMEM;
    atomic_init(&fresh->refcount, 1);
    fresh->cap = kept ? kept : 1;
    fresh->count = kept;
    for (size_t i = 0; i < kept; i++) {
        fresh->slots[i] = old->slots[dropped + i];
        rt_chunk_retain(fresh->slots[i]);
    }
    rt_table_release(old);
    level->table = fresh;
    level->cold = cold;
    level->cold_len = cold_len;
    return RT_OK;
}
