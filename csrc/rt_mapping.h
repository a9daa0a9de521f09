/*
 * Large memory (mapping.c): anonymous mappings aligned to and advised for
 * huge pages, for level slabs (level.c) and result buffers (rt_buffer_alloc),
 * with a cache of freed ones (ROTORTREE_MEMORY_CACHE_MB). Linux only:
 * elsewhere rt_mapping_get returns NULL and callers use malloc. Internal;
 * cffi never reads this file.
 */
#ifndef RT_MAPPING_H
#define RT_MAPPING_H

#include <stddef.h>
#include <stdint.h>

#define RT_HUGE_PAGE (2u << 20)
/* Allocations of at least this size are worth a mapping of their own. */
#define RT_MAPPED_MIN RT_HUGE_PAGE

/* A mapping of at least `bytes` (a cached one, possibly up to twice as
 * large, or a new one); its size in *got. NULL when none can be had. */
uint8_t *rt_mapping_get(size_t bytes, size_t *got);
/* Give a mapping back (kept in the cache while the budget allows). */
void rt_mapping_put(uint8_t *base, size_t bytes);
/* Bytes held by the cache now. */
size_t rt_mapping_cached_bytes(void);

/* Ask the background thread to populate [base, base + bytes) of anonymous
 * private memory (one of these mappings, or malloc'd) ahead of use (advice:
 * dropped when the queue is full or the kernel cannot; never changes the
 * memory's contents). */
void rt_mapping_prefault(uint8_t *base, size_t bytes);
/* Wait until every queued pre-fault is done and the background thread has
 * ended (it ends after a short idle time): tests that check for leaks. */
void rt_mapping_prefault_wait(void);
/* Fork safety: called by level.c's handlers, under the chunk heap's lock. */
void rt_mapping_fork_prepare(void);
void rt_mapping_fork_parent(void);
void rt_mapping_fork_child(void);

#endif /* RT_MAPPING_H */
