/*
 * Chunked level storage (internal; cffi never reads this file).
 *
 * A level is a table of pointers to fixed-size, refcounted chunks of 32-byte
 * nodes. A chunk holds a whole number of sibling groups (its capacity is a
 * multiple of the arity), so every parent's children are contiguous in
 * memory and the hash kernels read them straight from storage. Chunks are
 * refcounted so that snapshots can share them: a chunk whose refcount is
 * above one is never written; the writer copies it first (copy on write).
 * Appending only ever allocates new chunks and grows the pointer table
 * geometrically, so existing full chunks are never copied.
 */
#ifndef RT_LEVEL_H
#define RT_LEVEL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>

/* Nodes per chunk are the smallest multiple of the arity that is at least
 * this: 4 KiB chunks for power-of-two arities up to 128. */
#define RT_CHUNK_TARGET_NODES 128

typedef struct rt_chunk {
    atomic_uint refcount;
    /* Pads the header to one cache line so node data starts aligned. */
    unsigned char pad_[64 - sizeof(atomic_uint)];
    uint8_t nodes[];
} rt_chunk;

typedef struct rt_level {
    uint64_t len;        /* nodes in use */
    size_t chunk_count;  /* chunks installed in the table */
    size_t table_cap;    /* slots allocated in the table */
    rt_chunk **chunks;   /* the level owns one reference to each chunk */
} rt_level;

unsigned rt_chunk_capacity(unsigned arity);

rt_chunk *rt_chunk_alloc(unsigned chunk_cap);
void rt_chunk_retain(rt_chunk *chunk);
void rt_chunk_release(rt_chunk *chunk);

void rt_level_init(rt_level *level);
void rt_level_destroy(rt_level *level);

static inline uint8_t *rt_level_node(const rt_level *level, uint64_t index,
                                     unsigned chunk_cap)
{
    return level->chunks[index / chunk_cap]->nodes + (index % chunk_cap) * 32u;
}

/*
 * Prepare `level` so that nodes [first_written, new_len) can be written:
 * every chunk covering that range exists and is exclusively owned. All
 * allocation happens here, so the writes that follow cannot fail. On
 * RT_ERR_NOMEM nothing observable changed (the table may have grown, which
 * holds no data). `len` is not updated: the caller publishes it after the
 * writes.
 */
int rt_level_reserve(rt_level *level, uint64_t first_written, uint64_t new_len,
                     unsigned chunk_cap);

#endif /* RT_LEVEL_H */
