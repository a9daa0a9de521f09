/*
 * Chunked level storage (internal; cffi never reads this file).
 *
 * A level is a table of pointers to fixed-size, refcounted chunks of 32-byte
 * nodes. A chunk holds a whole number of sibling groups (its capacity is a
 * multiple of the arity), so every parent's children are contiguous in
 * memory and the hash kernels read them straight from storage.
 *
 * Sharing. Only the last node of a level is ever rewritten (a later insert
 * can only change the group it belongs to), so every chunk before the one
 * holding a level's last node is immutable forever. A snapshot therefore
 * keeps a reference to the level's table (reading only those immutable
 * slots) plus a reference to the chunk holding the last node. The writer
 * obeys two rules that make this safe without copying anything up front:
 *  - a chunk whose refcount is above one is copied before it is written
 *    (copy on write), and
 *  - a table whose refcount is above one is never reallocated in place: it
 *    is copied into a new table when it must grow.
 * Appending never copies existing full chunks; tables grow geometrically.
 */
#ifndef RT_LEVEL_H
#define RT_LEVEL_H

#include "rt_config.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>

#include "rt_arith.h"

/* Nodes per chunk are the smallest multiple of the arity that is at least
 * this: 4 KiB chunks for power-of-two arities up to 128. */
#define RT_CHUNK_TARGET_NODES 128

/*
 * Chunks are carved from slabs, one slab at a time per level. A slab lives
 * while any of its chunks does (or while its level still carves from it).
 * Large slabs are anonymous mappings advised for transparent huge pages:
 * a fresh 1M-leaf batch then takes a few dozen page faults instead of
 * ~10,000 4 KiB ones (each costly under virtualisation, and taken on the
 * calling thread before any parallel work could start). Small slabs come
 * from malloc, so many small trees do not each hold a mapping.
 *
 * A freed chunk goes on its slab's free list, and slabs with free chunks
 * are listed per chunk capacity (the size class); carving takes listed
 * chunks before it bumps into fresh slab memory. Without that, the copies
 * made for snapshots (copy on write of a level's last chunk, once per
 * snapshot generation) were lost for as long as any other chunk of their
 * slab lived, which for the lower levels of a growing tree is forever:
 * a writer publishing a snapshot per insert grew by ~8 KB per insert.
 */
typedef struct rt_slab {
    atomic_uint live;   /* chunks handed out and not freed, +1 while its level carves */
    int mapped;         /* 1: munmap(base, bytes); 0: free(base) */
    unsigned chunk_cap; /* the size class of its chunks */
    uint8_t *base;
    size_t bytes;
    size_t carved;      /* bytes handed out; only the carving level moves it */
    size_t prefaulted;  /* bytes asked to be pre-faulted ahead of carving (likewise) */
    // Under the chunk heap's lock (level.c): freed chunks kept for reuse, and
    // the links of the class's list of slabs that have some.
    struct rt_chunk *free;
    size_t free_count;
    struct rt_slab *prev_listed, *next_listed;
    int listed;
} rt_slab;

typedef struct rt_chunk {
    atomic_uint refcount;
    rt_slab *slab;
    struct rt_chunk *next_free; /* while on its slab's free list */
    /* Node data starts on its own cache line: kernels load whole lines and
     * the leaf copy uses aligned streaming stores. */
    _Alignas(64) uint8_t nodes[];
} rt_chunk;

_Static_assert(sizeof(rt_chunk) == 64, "chunk header must be one cache line");

typedef struct rt_chunk_table {
    atomic_uint refcount;
    size_t count; /* slots installed; the table owns one reference to each */
    size_t cap;
    rt_chunk *slots[];
} rt_chunk_table;

/* Pre-fault ranges a level marks per batch: its carver's rest and its
 * spare's start. */
#define RT_LEVEL_AHEAD 2

/*
 * A level may start with a cold prefix: nodes [0, cold_len) read in place
 * from caller memory (a memory-mapped checkpoint file), so trees larger
 * than RAM work. cold_len is a whole number of chunks and never reaches the
 * chunk of the level's last node, so nothing is ever written there. Table
 * slot s holds nodes [cold_len + s * chunk_cap, ...).
 */
typedef struct rt_level {
    uint64_t len;          /* nodes in use */
    const uint8_t *cold;
    uint64_t cold_len;
    rt_chunk_table *table; /* NULL until the first chunk is needed */
    rt_slab *carver;       /* where this level's next chunks come from */
    /* The slab carving moves on to once the carver is full, made ahead of
     * need when the next batch will not fit in the carver: its memory can
     * then be pre-faulted like the carver's (NULL until then). */
    rt_slab *spare;
    size_t spare_want;     /* bytes of the next batch(es) the spare is to hold */
    /* Slab memory to pre-fault for the next batch (or two), marked by
     * rt_level_reserve: the carver's rest and the spare's start. */
    uint8_t *ahead_base[RT_LEVEL_AHEAD];
    size_t ahead_bytes[RT_LEVEL_AHEAD];
} rt_level;

unsigned rt_chunk_capacity(unsigned arity);

void rt_chunk_retain(rt_chunk *chunk);
void rt_chunk_release(rt_chunk *chunk);

void rt_table_retain(rt_chunk_table *table);
void rt_table_release(rt_chunk_table *table);

void rt_level_init(rt_level *level);
/* Make the spare slab rt_level_reserve asked for and mark its start (advice:
 * nothing happens if it cannot be had). */
void rt_level_make_spare(rt_level *level);
/* Up to RT_LEVEL_AHEAD ranges rt_level_reserve marked for pre-faulting,
 * into base[] and bytes[], cleared; returns how many. The caller hands them
 * to rt_mapping_prefault once its writes are done and the tree is unlocked.
 * Only callers that do so make spare slabs (the others, restore and scratch
 * levels, would make them for nothing). Inline: every insert asks every
 * level. */
static inline unsigned rt_level_take_prefault(rt_level *level, uint8_t **base, size_t *bytes)
{
    if (level->spare_want)
        rt_level_make_spare(level);
    unsigned taken = 0;
    for (unsigned i = 0; i < RT_LEVEL_AHEAD; i++) {
        if (level->ahead_bytes[i]) {
            base[taken] = level->ahead_base[i];
            bytes[taken++] = level->ahead_bytes[i];
        }
        level->ahead_base[i] = NULL;
        level->ahead_bytes[i] = 0;
    }
    return taken;
}
/* Drop what rt_level_reserve marked: a reserve that was no batch (restoring
 * a tree) says nothing about the next batch's size. */
static inline void rt_level_forget_prefault(rt_level *level)
{
    level->spare_want = 0;
    for (unsigned i = 0; i < RT_LEVEL_AHEAD; i++) {
        level->ahead_base[i] = NULL;
        level->ahead_bytes[i] = 0;
    }
}
void rt_level_destroy(rt_level *level);

static inline const uint8_t *rt_level_node(const rt_level *level, uint64_t index,
                                           unsigned chunk_cap)
{
    if (index < level->cold_len)
        return level->cold + index * 32u;
    // cold_len is a multiple of chunk_cap, so the offset within a chunk is
    // the same whether counted from 0 or from cold_len.
    return level->table->slots[rt_div(index - level->cold_len, chunk_cap)]->nodes +
           rt_mod(index, chunk_cap) * 32u;
}

/*
 * Prepare `level` so that nodes [first_written, new_len) can be written:
 * every chunk covering that range exists and is exclusively owned. All
 * allocation happens here, so the writes that follow cannot fail. On
 * RT_ERR_NOMEM nothing observable changed (spare chunks may have been
 * installed past `len`, or a shared chunk replaced by a private copy of its
 * nodes below `len`). `len` is not updated: the caller publishes it after
 * the writes.
 */
int rt_level_reserve(rt_level *level, uint64_t first_written, uint64_t new_len,
                     unsigned chunk_cap);

/* 1 when rt_level_reserve(level, first_written, new_len, chunk_cap) would
 * have nothing to do because the written nodes lie in one chunk that is
 * installed and held by this level alone; 0 when it must be called. A
 * single insert writes one node per level and needs a new or private chunk
 * at a level only once per chunk_cap nodes (or per snapshot), so this
 * inline check spares the call in the common case. */
static inline int rt_level_ready(const rt_level *level, uint64_t first_written,
                                 uint64_t new_len, unsigned chunk_cap)
{
    if (new_len == 0 || first_written >= new_len)
        return 1;
    if (first_written < level->cold_len || !level->table)
        return 0;
    uint64_t slot = rt_div(first_written - level->cold_len, chunk_cap);
    return slot == rt_div(new_len - 1 - level->cold_len, chunk_cap) &&
           slot < level->table->count &&
           atomic_load_explicit(&level->table->slots[slot]->refcount, memory_order_acquire) <= 1;
}

/* Serve nodes [0, cold_len) from `cold` (identical bytes, caller-owned and
 * outliving the level and its snapshots) and drop the chunks that held
 * them. cold_len must be a multiple of chunk_cap not beyond the start of
 * the chunk holding the last node. Snapshots keep the chunks they share. */
int rt_level_make_cold(rt_level *level, const uint8_t *cold, uint64_t cold_len,
                       unsigned chunk_cap);

/* Fork safety (called from the handlers in fork.c, which order them after
 * the trees' locks): hold the allocator's locks across fork() so the child
 * copies consistent free lists and mapping cache, then release them. */
void rt_memory_fork_prepare(void);
void rt_memory_fork_parent(void);
void rt_memory_fork_child(void);

#endif /* RT_LEVEL_H */
