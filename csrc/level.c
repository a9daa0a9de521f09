#include "rt_config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "level.h"
#include "rotortree.h"
#include "rt_mapping.h"
#include "rt_pool.h"
#include "rt_tree.h"

unsigned rt_chunk_capacity(unsigned arity)
{
    unsigned groups = (RT_CHUNK_TARGET_NODES + arity - 1) / arity;
    return groups * arity;
}

/* ---- slabs ---------------------------------------------------------------- */

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
    // Large slabs are mappings advised for huge pages (rt_mapping.h).
    if (bytes >= RT_MAPPED_MIN) {
        slab->base = rt_mapping_get(bytes, &slab->bytes);
        slab->mapped = slab->base != NULL;
    }
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
    slab->prefaulted = 0;
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
    if (slab->mapped)
        rt_mapping_put(slab->base, slab->bytes);
    else
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
    out->cached_bytes = rt_mapping_cached_bytes();
}

void rt_memory_fork_prepare(void)
{
    pthread_mutex_lock(&heap.lock);
    rt_mapping_fork_prepare();
}

void rt_memory_fork_parent(void)
{
    rt_mapping_fork_parent();
    pthread_mutex_unlock(&heap.lock);
}

// In the child the forking thread is the only thread and has a new thread
// id, so the locks it took in prepare are made fresh rather than unlocked.
void rt_memory_fork_child(void)
{
    rt_mapping_fork_child();
    pthread_mutex_init(&heap.lock, NULL);
}

/* ---- carving ------------------------------------------------------------------ */

/* Chunks for a new slab of `level` that must hold at least `wanted`. */
static size_t slab_chunks_for(const rt_level *level, size_t wanted)
{
    size_t chunks = level->table ? level->table->count : 0;
    // Room for this batch and one more like it, which prefault_ahead can
    // then populate in the background (only address space until then).
    if (chunks < 2 * wanted)
        chunks = 2 * wanted;
    if (chunks < SLAB_MIN_CHUNKS)
        chunks = SLAB_MIN_CHUNKS;
    if (chunks > SLAB_MAX_CHUNKS)
        chunks = SLAB_MAX_CHUNKS;
    return chunks;
}

/* Make sure the level's carver has room for at least one chunk, moving on
 * to the spare slab (made and pre-faulted ahead by prefault_ahead) or to a
 * new slab sized for `wanted` more chunks when it is full. */
static rt_slab *carver_with_room(rt_level *level, unsigned chunk_cap, size_t stride,
                                 size_t wanted)
{
    rt_slab *slab = level->carver;
    if (slab && slab->bytes - slab->carved >= stride)
        return slab;
    rt_slab *fresh = level->spare;
    if (fresh)
        level->spare = NULL;
    else if (!(fresh = slab_new(slab_chunks_for(level, wanted) * stride, chunk_cap)))
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

// Growth that needs less than this is not worth a request (a lock and a
// wake-up of the background thread). Not a huge page: the upper levels of
// a tree that grows by 1M leaves take ~160 4 KiB pages per batch from small
// slabs (malloc'd, no huge pages), faulted one by one on the calling thread
// while the pool waits for it.
#ifndef PREFAULT_MIN
#define PREFAULT_MIN (64u << 10)
#endif

/* Mark [slab->prefaulted or carved, up to `bytes` past carved) of `slab`
 * as ahead range `which` of the level; returns the bytes of that span that
 * lie in the slab (marked or already marked before). */
static size_t mark_ahead(rt_level *level, unsigned which, rt_slab *slab, size_t bytes)
{
    size_t room = slab->bytes - slab->carved;
    size_t covered = bytes < room ? bytes : room;
    size_t to = slab->carved + covered;
    // A mapping starts on a huge page, which the kernel faults in whole:
    // marking to the end of the one the range ends in costs nothing more,
    // and a level that grows by less than a huge page a batch then asks
    // once per huge page instead of waking the background thread per batch.
    if (slab->mapped) {
        to = (to + RT_HUGE_PAGE - 1) & ~(size_t)(RT_HUGE_PAGE - 1);
        if (to > slab->bytes)
            to = slab->bytes;
    }
    size_t from = slab->carved > slab->prefaulted ? slab->carved : slab->prefaulted;
    // malloc'd slabs too: populating never changes memory's contents, so
    // pages of the heap beside the slab are unharmed.
    if (to > from) {
        level->ahead_base[which] = slab->base + from;
        level->ahead_bytes[which] = to - from;
        slab->prefaulted = to;
    }
    return covered;
}

/* A level that just took `chunks` new chunks will likely take as many with
 * its next batch (a service appends batches of similar sizes): the memory
 * they would come from is marked to be pre-faulted in the background, so
 * the next batch's page faults (the kernel zeroing fresh pages) are off its
 * path. When the carver cannot hold that batch, the slab carving moves on
 * to next is made ahead (the spare, by rt_level_take_prefault once the
 * batch is written) and its start is marked too: otherwise
 * every batch that crossed a slab boundary (every other one for a level
 * that grows by big batches) would fault all of its new slab itself.
 * Marked only: the caller issues the requests once its insert is done
 * (rt_level_take_prefault), as populating now would take CPU from the
 * batch that is about to hash. */
static void prefault_ahead(rt_level *level, size_t stride, size_t chunks)
{
    rt_slab *slab = level->carver;
    size_t bytes = chunks * stride;
    if (!slab)
        return;
    if (bytes < PREFAULT_MIN) {
        // A level growing a chunk at a time (single inserts) asks for none
        // by the batch rule, and then zeroed every huge page of its mapped
        // slabs on the inserting thread: a few milliseconds under
        // virtualisation, some 80 ns per insert at level 0. It keeps a huge
        // page populated ahead of its carving instead, one request per huge
        // page. Small (malloc'd) slabs fault 4 KiB at a time, which is cheap.
        if (!slab->mapped || slab->prefaulted >= slab->carved + RT_HUGE_PAGE)
            return;
        bytes = RT_HUGE_PAGE;
    } else {
        // When the pool leaves a CPU idle, the background thread populates
        // the batch after next on it while the next batch runs, so
        // back-to-back batches find their memory ready too. When every CPU
        // hashes, it could only take CPU from that batch: one batch ahead,
        // populated in the gaps the caller leaves.
        uint32_t threads;
        rt_pool_tunables(&threads, NULL, NULL);
        if (threads < rt_pool_cpus())
            bytes *= 2;
    }
    size_t covered = mark_ahead(level, 0, slab, bytes);
    level->spare_want = 0;
    if (covered >= bytes)
        return;
    if (level->spare)
        mark_ahead(level, 1, level->spare, bytes - covered);
    else
        level->spare_want = bytes - covered; // made by rt_level_take_prefault
}

void rt_level_make_spare(rt_level *level)
{
    size_t want = level->spare_want;
    level->spare_want = 0;
    if (level->spare || !level->carver)
        return;
    unsigned chunk_cap = level->carver->chunk_cap;
    size_t stride = chunk_stride(chunk_cap);
    // Advice only: without a spare the next batch makes its slab itself.
    level->spare = slab_new(slab_chunks_for(level, (want + stride - 1) / stride) * stride,
                            chunk_cap);
    if (level->spare)
        mark_ahead(level, 1, level->spare, want);
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
    if (level->spare)
        slab_release(level->spare);
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
    size_t installed = table->count;
    while (table->count < needed) {
        size_t carved = carve_chunks(level, chunk_cap, needed - table->count,
                                     table->slots + table->count);
        if (!carved)
            return RT_ERR_NOMEM;
        table->count += carved;
    }
    if (table->count > installed)
        prefault_ahead(level, chunk_stride(chunk_cap), table->count - installed);
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
