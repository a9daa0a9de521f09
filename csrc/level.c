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

void rt_level_init(rt_level *level)
{
    memset(level, 0, sizeof(*level));
}

void rt_level_destroy(rt_level *level)
{
    for (size_t i = 0; i < level->chunk_count; i++)
        rt_chunk_release(level->chunks[i]);
    free(level->chunks);
    rt_level_init(level);
}

static int grow_table(rt_level *level, size_t needed)
{
    if (needed <= level->table_cap)
        return RT_OK;
    size_t cap = level->table_cap ? level->table_cap : 4;
    while (cap < needed)
        cap *= 2;
    rt_chunk **table = realloc(level->chunks, cap * sizeof(*table));
    if (!table)
        return RT_ERR_NOMEM;
    level->chunks = table;
    level->table_cap = cap;
    return RT_OK;
}

int rt_level_reserve(rt_level *level, uint64_t first_written, uint64_t new_len,
                     unsigned chunk_cap)
{
    if (new_len == 0 || first_written >= new_len)
        return RT_OK;
    size_t needed = (size_t)((new_len - 1) / chunk_cap) + 1;
    int status = grow_table(level, needed);
    if (status != RT_OK)
        return status;

    // Chunks that already exist and will be written must be private. Only
    // the chunk holding first_written can be shared in practice (snapshots
    // share full chunks, which are never written again), but checking the
    // whole range keeps the invariant local to this function.
    size_t first_chunk = (size_t)(first_written / chunk_cap);
    size_t existing_end = level->chunk_count < needed ? level->chunk_count : needed;
    for (size_t c = first_chunk; c < existing_end; c++) {
        rt_chunk *shared = level->chunks[c];
        if (atomic_load_explicit(&shared->refcount, memory_order_acquire) == 1)
            continue;
        rt_chunk *copy = rt_chunk_alloc(chunk_cap);
        if (!copy)
            return RT_ERR_NOMEM;
        memcpy(copy->nodes, shared->nodes, (size_t)chunk_cap * 32u);
        level->chunks[c] = copy;
        rt_chunk_release(shared);
    }
    // New chunks are installed as they are allocated: a failure part way
    // leaves spare chunks beyond `len`, which hold no visible data and are
    // reused by the next insert.
    while (level->chunk_count < needed) {
        rt_chunk *fresh = rt_chunk_alloc(chunk_cap);
        if (!fresh)
            return RT_ERR_NOMEM;
        level->chunks[level->chunk_count++] = fresh;
    }
    return RT_OK;
}
