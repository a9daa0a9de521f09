#include "rt_config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "level.h"
#include "rotortree.h"
#include "rt_pool.h"
#include "rt_tree.h"

unsigned rt_chunk_capacity(unsigned arity)
{
    unsigned groups = (RT_CHUNK_TARGET_NODES + arity - 1) / arity;
    return groups * arity;
}

/* ---- slabs ---------------------------------------------------------------- */

#define HUGE_PAGE (2u << 20)
// Slabs of at least this size are mappings advised for huge pages.
#define MAPPED_SLAB_MIN HUGE_PAGE
// Growth is geometric (a new slab holds as many chunks as the level has),
// capped so a huge level does not reserve gigabytes of address space ahead.
#define SLAB_MAX_CHUNKS 16384
#define SLAB_MIN_CHUNKS 4

static size_t chunk_stride(unsigned chunk_cap)
{
    // Rounded up to 64: rt_chunk is 64-byte aligned (its nodes start a cache
    // line), and an odd chunk_cap (odd arities) would otherwise put every
    // other chunk of a slab 32 bytes off (undefined behaviour, UBSan).
    return (sizeof(rt_chunk) + (size_t)chunk_cap * 32u + 63) & ~(size_t)63;
}

#ifdef __linux__
/*
 * Mappings of freed slabs (and of result buffers, rt_buffer_alloc) are kept
 * for reuse, up to a byte budget. The kernel zeroes every fresh page before
 * handing it over, which for a 1M-leaf batch is ~40 MB of extra memory
 * writes competing with the copy and the hashing for bandwidth; a service
 * that rebuilds or replaces trees pays it once instead of every time.
 * ROTORTREE_MEMORY_CACHE_MB sets the budget (default 256, 0 disables it);
 * rt_release_cached_memory() returns everything to the system.
 */
#define MAPPING_CACHE_SLOTS 64
#define MAPPING_CACHE_DEFAULT_MB 256

static struct {
    pthread_mutex_t lock;
    pthread_once_t once;
    size_t limit, bytes, count;
    struct cached_mapping {
        uint8_t *base;
        size_t bytes;
    } slots[MAPPING_CACHE_SLOTS];
} mapping_cache = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_ONCE_INIT, 0, 0, 0, {{0}}};

static int c_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* ASCII digits between optional whitespace, at most SIZE_MAX >> 20; anything
 * else keeps the default. strtoull alone would take "-5" as 2**64 - 5, an
 * unlimited cache. rotortree/config.py applies the same rule to report the
 * values ignored here, so the two must change together. */
static size_t mapping_cache_limit(const char *env)
{
    const size_t fallback = (size_t)MAPPING_CACHE_DEFAULT_MB << 20;
    if (!env)
        return fallback;
    while (c_space(*env))
        env++;
    if (*env < '0' || *env > '9')
        return fallback; // also the empty and all-blank values
    size_t mb = 0;
    for (; *env >= '0' && *env <= '9'; env++) {
        unsigned digit = (unsigned)(*env - '0');
        if (mb > ((SIZE_MAX >> 20) - digit) / 10)
            return fallback;
        mb = mb * 10 + digit;
    }
    while (c_space(*env))
        env++;
    return *env ? fallback : mb << 20;
}

static void mapping_cache_init(void)
{
    mapping_cache.limit = mapping_cache_limit(getenv("ROTORTREE_MEMORY_CACHE_MB"));
    // A child forked while another thread held the lock would deadlock on it.
    rt_fork_handlers_install();
}

/* A cached mapping of at least `bytes` (and not wastefully larger), or NULL. */
static uint8_t *mapping_take(size_t bytes, size_t *got)
{
    pthread_once(&mapping_cache.once, mapping_cache_init);
    pthread_mutex_lock(&mapping_cache.lock);
    size_t best = MAPPING_CACHE_SLOTS;
    for (size_t i = 0; i < mapping_cache.count; i++) {
        size_t have = mapping_cache.slots[i].bytes;
        if (have >= bytes && have <= 2 * bytes &&
            (best == MAPPING_CACHE_SLOTS || have < mapping_cache.slots[best].bytes))
            best = i;
    }
    uint8_t *base = NULL;
    if (best != MAPPING_CACHE_SLOTS) {
        base = mapping_cache.slots[best].base;
        *got = mapping_cache.slots[best].bytes;
        mapping_cache.bytes -= *got;
        // Keep the slots in the order they were freed (oldest first).
        memmove(&mapping_cache.slots[best], &mapping_cache.slots[best + 1],
                (mapping_cache.count - best - 1) * sizeof(mapping_cache.slots[0]));
        mapping_cache.count--;
    }
    pthread_mutex_unlock(&mapping_cache.lock);
    return base;
}

/* The most recently freed mapping is the likeliest to be asked for again
 * (the next tree of a rebuild loop, the next proof batch of a service), so
 * when the budget is full the oldest mappings make room for it. */
static void mapping_give_back(uint8_t *base, size_t bytes)
{
    pthread_once(&mapping_cache.once, mapping_cache_init);
    struct cached_mapping evicted[MAPPING_CACHE_SLOTS];
    size_t evicted_count = 0;
    int kept = 0;
    pthread_mutex_lock(&mapping_cache.lock);
    if (bytes <= mapping_cache.limit) {
        while (mapping_cache.count == MAPPING_CACHE_SLOTS ||
               mapping_cache.bytes + bytes > mapping_cache.limit) {
            evicted[evicted_count++] = mapping_cache.slots[0];
            mapping_cache.bytes -= mapping_cache.slots[0].bytes;
            mapping_cache.count--;
            memmove(&mapping_cache.slots[0], &mapping_cache.slots[1],
                    mapping_cache.count * sizeof(mapping_cache.slots[0]));
        }
        mapping_cache.slots[mapping_cache.count].base = base;
        mapping_cache.slots[mapping_cache.count].bytes = bytes;
        mapping_cache.count++;
        mapping_cache.bytes += bytes;
        kept = 1;
    }
    pthread_mutex_unlock(&mapping_cache.lock);
    for (size_t i = 0; i < evicted_count; i++)
        munmap(evicted[i].base, evicted[i].bytes);
    if (!kept)
        munmap(base, bytes);
}

static uint8_t *mapping_new(size_t rounded)
{
    // Over-map by one huge page and trim, so the slab starts on a huge-page
    // boundary and every 2 MiB of it can be one page.
    uint8_t *raw = mmap(NULL, rounded + HUGE_PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *aligned = (uint8_t *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (aligned > raw)
        munmap(raw, (size_t)(aligned - raw));
    size_t tail = (size_t)(raw + rounded + HUGE_PAGE - (aligned + rounded));
    if (tail)
        munmap(aligned + rounded, tail);
    madvise(aligned, rounded, MADV_HUGEPAGE); // advice only: may be refused
    return aligned;
}
#endif

void rt_release_cached_memory(void)
{
#ifdef __linux__
    pthread_once(&mapping_cache.once, mapping_cache_init);
    pthread_mutex_lock(&mapping_cache.lock);
    for (size_t i = 0; i < mapping_cache.count; i++)
        munmap(mapping_cache.slots[i].base, mapping_cache.slots[i].bytes);
    mapping_cache.count = 0;
    mapping_cache.bytes = 0;
    pthread_mutex_unlock(&mapping_cache.lock);
#endif
}

/* Result buffers of at least MAPPED_SLAB_MIN bytes are mappings (cached,
 * possibly larger than asked, or new) and smaller ones come from malloc; a
 * cache line in front of the data records which, and the mapping's size. */
#define BUFFER_HEADER 64u

void *rt_buffer_alloc(size_t bytes)
{
    if (bytes > SIZE_MAX - BUFFER_HEADER - HUGE_PAGE)
        return NULL;
    size_t total = bytes + BUFFER_HEADER;
    uint8_t *base = NULL;
    size_t mapped = 0;
#ifdef __linux__
    if (total >= MAPPED_SLAB_MIN) {
        size_t rounded = (total + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
        base = mapping_take(rounded, &mapped);
        if (!base) {
            base = mapping_new(rounded);
            mapped = rounded;
        }
        if (!base)
            return NULL;
    }
#endif
    if (!base) {
        void *memory = NULL;
        if (posix_memalign(&memory, BUFFER_HEADER, total) != 0)
            return NULL;
        base = memory;
    }
    memcpy(base, &mapped, sizeof(mapped)); // 0: malloc
    return base + BUFFER_HEADER;
}

void rt_buffer_free(void *buffer)
{
    if (!buffer)
        return;
    uint8_t *base = (uint8_t *)buffer - BUFFER_HEADER;
    size_t mapped;
    memcpy(&mapped, base, sizeof(mapped));
#ifdef __linux__
    if (mapped) {
        mapping_give_back(base, mapped);
        return;
    }
#endif
    free(base);
}

/* ---- the chunk heap: freed chunks, by size class ---------------------------- */

// Chunk capacities are the least multiple of the arity that is at least
// RT_CHUNK_TARGET_NODES, so for arities 2..255 they lie in [T, 2T).
#define CHUNK_CLASSES RT_CHUNK_TARGET_NODES

static struct {
    // Guards every slab's free list and the class lists. A thread holding it
    // never waits for anything else (slabs are destroyed after unlocking),
    // which the fork handlers rely on.
    pthread_mutex_t lock;
    rt_slab *listed[CHUNK_CLASSES]; /* slabs with free chunks */
    // Read without the lock so that carving skips it when a class has
    // nothing to reuse (the common case for a fresh tree).
    atomic_size_t free_chunks[CHUNK_CLASSES];
    // Accounting for rt_memory_get_stats.
    atomic_size_t slab_bytes, slabs, free_bytes;
} heap = {.lock = PTHREAD_MUTEX_INITIALIZER};

static unsigned class_of(unsigned chunk_cap)
{
    return chunk_cap - RT_CHUNK_TARGET_NODES;
}

/* Caller holds heap.lock. */
static void slab_list(rt_slab *slab)
{
    rt_slab **head = &heap.listed[class_of(slab->chunk_cap)];
    slab->prev_listed = NULL;
    slab->next_listed = *head;
    if (*head)
        (*head)->prev_listed = slab;
    *head = slab;
    slab->listed = 1;
}

/* Caller holds heap.lock. Forgets the slab's free chunks too. */
static void slab_unlist(rt_slab *slab)
{
    if (!slab->listed)
        return;
    if (slab->prev_listed)
        slab->prev_listed->next_listed = slab->next_listed;
    else
        heap.listed[class_of(slab->chunk_cap)] = slab->next_listed;
    if (slab->next_listed)
        slab->next_listed->prev_listed = slab->prev_listed;
    slab->listed = 0;
    size_t stride = chunk_stride(slab->chunk_cap);
    atomic_fetch_sub_explicit(&heap.free_chunks[class_of(slab->chunk_cap)], slab->free_count,
                              memory_order_relaxed);
    atomic_fetch_sub_explicit(&heap.free_bytes, slab->free_count * stride, memory_order_relaxed);
    slab->free = NULL;
    slab->free_count = 0;
}

static rt_slab *slab_new(size_t bytes, unsigned chunk_cap)
{
    rt_slab *slab = malloc(sizeof(*slab));
    if (!slab)
        return NULL;
    slab->mapped = 0;
    slab->base = NULL;
#ifdef __linux__
    if (bytes >= MAPPED_SLAB_MIN) {
        size_t rounded = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
        slab->base = mapping_take(rounded, &slab->bytes);
        if (!slab->base) {
            slab->base = mapping_new(rounded);
            slab->bytes = rounded;
        }
        slab->mapped = slab->base != NULL;
    }
#endif
    if (!slab->base) {
        void *memory = NULL;
        if (posix_memalign(&memory, 64, bytes) != 0) {
            free(slab);
            return NULL;
        }
        slab->base = memory;
        slab->bytes = bytes;
    }
    slab->chunk_cap = chunk_cap;
    slab->carved = 0;
    slab->free = NULL;
    slab->free_count = 0;
    slab->prev_listed = slab->next_listed = NULL;
    slab->listed = 0;
    atomic_init(&slab->live, 1); // the carving level's hold
    atomic_fetch_add_explicit(&heap.slab_bytes, slab->bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&heap.slabs, 1, memory_order_relaxed);
    return slab;
}

static void slab_destroy(rt_slab *slab)
{
    atomic_fetch_sub_explicit(&heap.slab_bytes, slab->bytes, memory_order_relaxed);
    atomic_fetch_sub_explicit(&heap.slabs, 1, memory_order_relaxed);
#ifdef __linux__
    if (slab->mapped)
        mapping_give_back(slab->base, slab->bytes);
    else
#endif
        free(slab->base);
    free(slab);
}

/* Caller holds heap.lock. Drops one hold on `slab` (a live chunk's or its
 * carving level's); with `chunk` set, that chunk becomes free for reuse.
 * Returns 1 when that was the last hold: the slab is unlisted and the
 * caller destroys it once the lock is released. */
static int slab_drop_locked(rt_slab *slab, rt_chunk *chunk)
{
    // acq_rel: the thread that destroys the slab must see every write made
    // by the threads that held the other chunks.
    if (atomic_fetch_sub_explicit(&slab->live, 1, memory_order_acq_rel) == 1) {
        slab_unlist(slab);
        return 1;
    }
    if (chunk) {
        chunk->next_free = slab->free;
        slab->free = chunk;
        slab->free_count++;
        if (!slab->listed)
            slab_list(slab);
        atomic_fetch_add_explicit(&heap.free_chunks[class_of(slab->chunk_cap)], 1,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&heap.free_bytes, chunk_stride(slab->chunk_cap),
                                  memory_order_relaxed);
    }
    return 0;
}

/* The carving level's hold on its slab. */
static void slab_release(rt_slab *slab)
{
    pthread_mutex_lock(&heap.lock);
    int dead = slab_drop_locked(slab, NULL);
    pthread_mutex_unlock(&heap.lock);
    if (dead)
        slab_destroy(slab);
}

/* Chunks whose last reference is gone, under one lock (a dropped table
 * frees thousands at once). */
static void chunks_free(rt_chunk *const *chunks, size_t count)
{
    rt_slab *dying = NULL; // chained through next_listed, unused once unlisted
    pthread_mutex_lock(&heap.lock);
    for (size_t i = 0; i < count; i++) {
        rt_slab *slab = chunks[i]->slab;
        if (slab_drop_locked(slab, chunks[i])) {
            slab->next_listed = dying;
            dying = slab;
        }
    }
    pthread_mutex_unlock(&heap.lock);
    while (dying) {
        rt_slab *next = dying->next_listed;
        slab_destroy(dying);
        dying = next;
    }
}

/* Up to `wanted` freed chunks of this capacity, reused (refcount 1). */
static size_t take_free_chunks(unsigned chunk_cap, size_t wanted, rt_chunk **out)
{
    unsigned cls = class_of(chunk_cap);
    if (!atomic_load_explicit(&heap.free_chunks[cls], memory_order_relaxed))
        return 0;
    size_t got = 0;
    pthread_mutex_lock(&heap.lock);
    while (got < wanted && heap.listed[cls]) {
        rt_slab *slab = heap.listed[cls];
        rt_chunk *chunk = slab->free;
        slab->free = chunk->next_free;
        slab->free_count--;
        if (!slab->free_count)
            slab_unlist(slab);
        // The slab cannot die meanwhile: it is only destroyed under the lock.
        atomic_fetch_add_explicit(&slab->live, 1, memory_order_relaxed);
        atomic_store_explicit(&chunk->refcount, 1, memory_order_relaxed);
        out[got++] = chunk;
    }
    atomic_fetch_sub_explicit(&heap.free_chunks[cls], got, memory_order_relaxed);
    atomic_fetch_sub_explicit(&heap.free_bytes, got * chunk_stride(chunk_cap),
                              memory_order_relaxed);
    pthread_mutex_unlock(&heap.lock);
    return got;
}

void rt_memory_get_stats(struct rt_memory_stats *out)
{
    out->chunk_bytes = atomic_load_explicit(&heap.slab_bytes, memory_order_relaxed);
    out->free_chunk_bytes = atomic_load_explicit(&heap.free_bytes, memory_order_relaxed);
    out->slabs = atomic_load_explicit(&heap.slabs, memory_order_relaxed);
    out->cached_bytes = 0;
#ifdef __linux__
    pthread_mutex_lock(&mapping_cache.lock);
    out->cached_bytes = mapping_cache.bytes;
    pthread_mutex_unlock(&mapping_cache.lock);
#endif
}

void rt_memory_fork_prepare(void)
{
    pthread_mutex_lock(&heap.lock);
#ifdef __linux__
    pthread_mutex_lock(&mapping_cache.lock);
#endif
}

void rt_memory_fork_parent(void)
{
#ifdef __linux__
    pthread_mutex_unlock(&mapping_cache.lock);
#endif
    pthread_mutex_unlock(&heap.lock);
}

// In the child the forking thread is the only thread and has a new thread
// id, so the locks it took in prepare are made fresh rather than unlocked.
void rt_memory_fork_child(void)
{
#ifdef __linux__
    pthread_mutex_init(&mapping_cache.lock, NULL);
#endif
    pthread_mutex_init(&heap.lock, NULL);
}

/* ---- carving ------------------------------------------------------------------ */

/* Make sure the level's carver has room for at least one chunk, starting a
 * new slab sized for `wanted` more chunks when it is full. */
static rt_slab *carver_with_room(rt_level *level, unsigned chunk_cap, size_t stride,
                                 size_t wanted)
{
    rt_slab *slab = level->carver;
    if (slab && slab->bytes - slab->carved >= stride)
        return slab;
    size_t chunks = level->table ? level->table->count : 0;
    if (chunks < wanted)
        chunks = wanted;
    if (chunks < SLAB_MIN_CHUNKS)
        chunks = SLAB_MIN_CHUNKS;
    if (chunks > SLAB_MAX_CHUNKS)
        chunks = SLAB_MAX_CHUNKS;
    rt_slab *fresh = slab_new(chunks * stride, chunk_cap);
    if (!fresh)
        return NULL;
    if (slab)
        slab_release(slab);
    level->carver = fresh;
    return fresh;
}

typedef struct header_job {
    rt_slab *slab;
    uint8_t *first;
    size_t stride;
} header_job;

static void init_headers(void *ctx, size_t begin, size_t end)
{
    const header_job *job = ctx;
    for (size_t i = begin; i < end; i++) {
        rt_chunk *chunk = (rt_chunk *)(job->first + i * job->stride);
        atomic_init(&chunk->refcount, 1);
        chunk->slab = job->slab;
    }
}

// Writing a header is the first touch of fresh memory, so for a large run
// the page faults (zeroing) are spread over the pool instead of landing on
// the calling thread before any parallel hashing can start.
#ifndef PARALLEL_HEADER_MIN
#define PARALLEL_HEADER_MIN 512
#endif
#define HEADER_UNIT 64

/* Up to `wanted` chunks (refcount 1) into out[]: freed ones first, else
 * carved from the level's slab; returns how many (0 only when memory is
 * exhausted). */
static size_t carve_chunks(rt_level *level, unsigned chunk_cap, size_t wanted, rt_chunk **out)
{
    size_t reused = take_free_chunks(chunk_cap, wanted, out);
    if (reused)
        return reused;
    size_t stride = chunk_stride(chunk_cap);
    rt_slab *slab = carver_with_room(level, chunk_cap, stride, wanted);
    if (!slab)
        return 0;
    size_t room = (slab->bytes - slab->carved) / stride;
    size_t count = wanted < room ? wanted : room;
    header_job job = {slab, slab->base + slab->carved, stride};
    uint32_t threads;
    rt_pool_tunables(&threads, NULL, NULL);
    if (threads > 1 && count >= PARALLEL_HEADER_MIN)
        rt_pool_parallel_for(count, HEADER_UNIT, init_headers, &job);
    else
        init_headers(&job, 0, count);
    slab->carved += count * stride;
    atomic_fetch_add_explicit(&slab->live, (unsigned)count, memory_order_relaxed);
    for (size_t i = 0; i < count; i++)
        out[i] = (rt_chunk *)(job.first + i * stride);
    return count;
}

void rt_chunk_retain(rt_chunk *chunk)
{
    atomic_fetch_add_explicit(&chunk->refcount, 1, memory_order_relaxed);
}

void rt_chunk_release(rt_chunk *chunk)
{
    // acq_rel: the thread that reuses or frees the chunk must see every
    // write made by the threads that held the other references.
    if (atomic_fetch_sub_explicit(&chunk->refcount, 1, memory_order_acq_rel) == 1)
        chunks_free(&chunk, 1);
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
    // The table's own slots collect the chunks that die with it.
    size_t dead = 0;
    for (size_t i = 0; i < table->count; i++)
        if (atomic_fetch_sub_explicit(&table->slots[i]->refcount, 1, memory_order_acq_rel) == 1)
            table->slots[dead++] = table->slots[i];
    chunks_free(table->slots, dead);
    free(table);
}

void rt_level_init(rt_level *level)
{
    memset(level, 0, sizeof(*level));
}

void rt_level_destroy(rt_level *level)
{
    rt_table_release(level->table);
    if (level->carver)
        slab_release(level->carver);
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
        rt_chunk *copy;
        if (!carve_chunks(level, chunk_cap, 1, &copy))
            return RT_ERR_NOMEM;
        // Only nodes below len are visible; the rest of the chunk is written
        // before it is published. Under a snapshot per single insert this
        // copy is most of the insert's memory traffic.
        uint64_t chunk_first = (uint64_t)c * chunk_cap + level->cold_len;
        uint64_t used = level->len > chunk_first ? rt_min_u64(level->len - chunk_first, chunk_cap) : 0;
        memcpy(copy->nodes, shared->nodes, (size_t)used * 32u);
        table->slots[c] = copy;
        rt_chunk_release(shared);
    }
    // New chunks are installed as they are allocated: a failure part way
    // leaves spare chunks beyond `len`, which hold no visible data and are
    // reused by the next insert.
    while (table->count < needed) {
        size_t carved = carve_chunks(level, chunk_cap, needed - table->count,
                                     table->slots + table->count);
        if (!carved)
            return RT_ERR_NOMEM;
        table->count += carved;
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
