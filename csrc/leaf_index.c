/*
 * The leaf index: membership, first position, and duplicate checks for
 * nullifier-style trees (see rt_index.h for the table and why snapshots
 * can share it without a lock).
 */
#include "rt_config.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if RT_X86
#include <emmintrin.h>
#endif

#include "level.h"
#include "rotortree.h"
#include "rt_index.h"
#include "rt_pool.h"
#include "rt_tree.h"
#include "snapshot.h"

#define ABSENT UINT64_MAX

// 3/4: with linear probing a miss then scans ~8 slots on average, which for
// 4-byte slots is one or two cache lines; the table doubles when it is
// reached, so between doublings it is 3/8..3/4 full: 5.3..10.7 bytes per
// distinct leaf, under the 12 the issue allows, where 7/8 would make misses
// scan ~32 slots and 1/2 would cost up to 16 bytes per leaf.
#define LOAD_NUM 3u
#define LOAD_DEN 4u
#define MIN_SLOTS 64u
// Work units for the pool, in leaves, per parent of the pool's chunk size
// (16384 at the default 64): a unit then costs hundreds of microseconds,
// which dwarfs claiming it, and tests that shrink the chunk reach the
// parallel paths with small batches.
#define GRAIN_PER_CHUNK 256u
// Hashes run PIPE leaves ahead of the probes and each slot is prefetched as
// soon as its hash is known, so a probe's cache miss overlaps the work on
// the PIPE leaves before it instead of stalling the loop.
#define PIPE 32u

/* ---- hashing --------------------------------------------------------------- */

// Leaves are usually hashes, but nothing stops a caller from inserting
// counters or padded small values whose first bytes are all zero, so all 32
// bytes are mixed, with a per-table seed so that no fixed set of leaves
// collides in every table. Four independent multiplies cost a few cycles
// next to the cache misses of a probe.
static inline uint64_t leaf_hash(const uint8_t *leaf, uint64_t seed)
{
    // Four word loads: one 32-byte copy into an array was compiled into
    // vector stores to the stack read back as words, a store-forwarding
    // stall on every leaf (about a sixth of a put's time).
    uint64_t w[4];
    memcpy(&w[0], leaf, 8);
    memcpy(&w[1], leaf + 8, 8);
    memcpy(&w[2], leaf + 16, 8);
    memcpy(&w[3], leaf + 24, 8);
    uint64_t a = (w[0] ^ seed) * 0x9E3779B97F4A7C15ull;
    uint64_t b = (w[1] + seed) * 0xC2B2AE3D27D4EB4Full;
    uint64_t c = (w[2] ^ (seed >> 7)) * 0x165667B19E3779F9ull;
    uint64_t d = (w[3] + (seed << 3)) * 0xD6E8FEB86659FD93ull;
    uint64_t h = a ^ ((b << 17) | (b >> 47)) ^ ((c << 31) | (c >> 33)) ^ ((d << 47) | (d >> 17));
    h ^= h >> 32;
    h *= 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
    return h;
}

static uint64_t fresh_seed(const void *salt)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)salt;
    s ^= s >> 33;
    s *= 0xFF51AFD7ED558CCDull;
    s ^= s >> 33;
    return s;
}

/* ---- slots ----------------------------------------------------------------- */

static inline uint64_t slot_load(const rt_leaf_index *ix, uint64_t i)
{
    if (ix->wide)
        return __atomic_load_n((const uint64_t *)ix->slots + i, __ATOMIC_ACQUIRE);
    return __atomic_load_n((const uint32_t *)ix->slots + i, __ATOMIC_ACQUIRE);
}

static inline int slot_cas(const rt_leaf_index *ix, uint64_t i, uint64_t expected,
                           uint64_t desired)
{
    if (ix->wide) {
        uint64_t e = expected;
        return __atomic_compare_exchange_n((uint64_t *)ix->slots + i, &e, desired, 0,
                                           __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    }
    uint32_t e = (uint32_t)expected;
    return __atomic_compare_exchange_n((uint32_t *)ix->slots + i, &e, (uint32_t)desired, 0,
                                       __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

/* Readers without the lock (snapshots) may load the slot meanwhile. */
static inline void slot_store(const rt_leaf_index *ix, uint64_t i, uint64_t value)
{
    if (ix->wide)
        __atomic_store_n((uint64_t *)ix->slots + i, value, __ATOMIC_RELEASE);
    else
        __atomic_store_n((uint32_t *)ix->slots + i, (uint32_t)value, __ATOMIC_RELEASE);
}

static inline void slot_prefetch(const rt_leaf_index *ix, uint64_t h)
{
    uint64_t i = h & ix->mask;
    __builtin_prefetch(ix->wide ? (const void *)((const uint64_t *)ix->slots + i)
                                : (const void *)((const uint32_t *)ix->slots + i));
}

/* The tag: the hash bits above those the slot index uses, as many as fit
 * above the position (none when positions take all 32 bits). */
static inline uint64_t tag_of(const rt_leaf_index *ix, uint64_t h)
{
    unsigned bits = (ix->wide ? 64u : 32u) - ix->pos_bits;
    return bits ? h >> (64u - bits) : 0;
}

/* ---- the rest of a probe's first cache line at once ------------------------ */

// At the load the table runs at, a put's first slot is full about half the
// time, so the scalar probe's "empty?" branch is a coin toss: a mispredict
// on most puts, which cost more than the put's cache miss once that is
// prefetched. Reading the rest of the home slot's cache line (the line the
// put prefetched; the next one is not there yet) in one go and taking its
// first empty slot when no slot before it carries the leaf's tag decides
// most puts with predictable branches; anything else (a tag seen, no empty
// slot left in the line, wide slots) takes the scalar probe, which decides
// exactly as before. The line is read with plain loads, so this is only
// used where no other thread can write those slots meanwhile: puts by the
// table's only writer (readers of snapshots only load). Tables are whole
// lines (at least MIN_SLOTS, a power of two) on 64-byte aligned buffers
// (rt_buffer_alloc), and the regions of partitioned puts are whole lines
// too, so a line never crosses the table's end or another thread's region.
#define LINE_SLOTS 16u

#if RT_X86
static inline __m128i tag_lanes(__m128i slots, __m128i tag_mask, __m128i tag)
{
    return _mm_cmpeq_epi32(_mm_and_si128(slots, tag_mask), tag);
}

/* In the aligned line of LINE_SLOTS narrow slots at `line`: bit k of *empty
 * set when slot k is 0, of *tagged when its high bits equal `tag_bits`. */
static inline void line_scan(const uint32_t *line, uint32_t tag_mask, uint32_t tag_bits,
                             unsigned *empty, unsigned *tagged)
{
    const __m128i zero = _mm_setzero_si128(), mask = _mm_set1_epi32((int)tag_mask),
                  tag = _mm_set1_epi32((int)tag_bits);
    __m128i a = _mm_load_si128((const __m128i *)line);
    __m128i b = _mm_load_si128((const __m128i *)(line + 4));
    __m128i c = _mm_load_si128((const __m128i *)(line + 8));
    __m128i d = _mm_load_si128((const __m128i *)(line + 12));
    __m128i ab = _mm_packs_epi32(_mm_cmpeq_epi32(a, zero), _mm_cmpeq_epi32(b, zero));
    __m128i cd = _mm_packs_epi32(_mm_cmpeq_epi32(c, zero), _mm_cmpeq_epi32(d, zero));
    *empty = (unsigned)_mm_movemask_epi8(_mm_packs_epi16(ab, cd));
    ab = _mm_packs_epi32(tag_lanes(a, mask, tag), tag_lanes(b, mask, tag));
    cd = _mm_packs_epi32(tag_lanes(c, mask, tag), tag_lanes(d, mask, tag));
    *tagged = (unsigned)_mm_movemask_epi8(_mm_packs_epi16(ab, cd));
}
#define HAVE_LINE_SCAN 1
#else
#define HAVE_LINE_SCAN 0
#endif

/* The slot a put by the table's only writer takes, decided from the home
 * slot's line alone: the first empty slot from `home` on when no slot
 * between carries `tag`, else UINT64_MAX (the scalar probe decides). */
static inline uint64_t line_slot(const rt_leaf_index *ix, uint64_t home, uint64_t tag)
{
#if HAVE_LINE_SCAN
    if (ix->wide)
        return UINT64_MAX;
    // Shifted as 64-bit values: a table whose positions take all 32 bits
    // has no tag, and every full slot must then count as carrying the
    // leaf's (a 32-bit shift by 32 is undefined, and x86 left the mask
    // whole: full slots were passed over, and repeats put again).
    const uint32_t tag_mask = (uint32_t)(~(uint64_t)0 << ix->pos_bits);
    unsigned empty, tagged, skip = (unsigned)(home % LINE_SLOTS);
    line_scan((const uint32_t *)ix->slots + (home - skip), tag_mask,
              (uint32_t)(tag << ix->pos_bits), &empty, &tagged);
    empty >>= skip;
    if (!empty)
        return UINT64_MAX;
    unsigned first = (unsigned)__builtin_ctz(empty);
    if ((tagged >> skip) & ((1u << first) - 1u))
        return UINT64_MAX;
    return home + first;
#else
    (void)ix;
    (void)home;
    (void)tag;
    return UINT64_MAX;
#endif
}

/* Where probes read the leaf a slot names: the tree's level 0 or a
 * snapshot's, and positions from tail_from on in `tail` (a batch being
 * checked before it is in the tree); `limit` is the size rule (positions at
 * or past it are not there). */
typedef struct leaf_reader {
    const rt_level *level;
    const rt_snapshot *snap;
    unsigned chunk_cap;
    uint64_t limit;
    const uint8_t *tail;
    uint64_t tail_from;
} leaf_reader;

static inline const uint8_t *leaf_at(const leaf_reader *r, uint64_t p)
{
    if (p >= r->tail_from)
        return r->tail + (p - r->tail_from) * 32u;
    if (r->snap)
        return rt_snapshot_node(r->snap, 0, p);
    return rt_level_node(r->level, p, r->chunk_cap);
}

static leaf_reader tree_reader(const rt_tree *tree)
{
    leaf_reader r = {&tree->levels[0], NULL, tree->chunk_cap, tree->size, NULL, UINT64_MAX};
    return r;
}

static uint64_t index_find(const rt_leaf_index *ix, const leaf_reader *r, const uint8_t *leaf,
                           uint64_t h)
{
    const uint64_t pos_mask = (ix->pos_bits >= 64) ? UINT64_MAX : ((uint64_t)1 << ix->pos_bits) - 1;
    const uint64_t tag = tag_of(ix, h);
    for (uint64_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
        uint64_t s = slot_load(ix, i);
        if (!s)
            return ABSENT;
        if ((s >> ix->pos_bits) != tag)
            continue;
        uint64_t p = (s & pos_mask) - 1;
        if (p < r->limit && memcmp(leaf_at(r, p), leaf, 32) == 0)
            return p;
    }
}

/* Record position p of `leaf`; several threads may put at once (entries
 * are only removed by index_unstage, alone, so a key's probe sequence only
 * grows and two puts of one key meet at the slot the first of them claims).
 * The lower position wins: 1 if the leaf was new to the table, else 0 with
 * *evicted the higher position p displaced, or ABSENT if p itself lost. */
static int index_put(const rt_leaf_index *ix, const leaf_reader *r, const uint8_t *leaf,
                     uint64_t h, uint64_t p, uint64_t *evicted, int shared)
{
    const uint64_t pos_mask = ((uint64_t)1 << ix->pos_bits) - 1;
    const uint64_t tag = tag_of(ix, h);
    const uint64_t want = (tag << ix->pos_bits) | (p + 1);
    uint64_t i = h & ix->mask;
    if (!shared) {
        uint64_t free_slot = line_slot(ix, i, tag);
        if (free_slot != UINT64_MAX) {
            slot_store(ix, free_slot, want);
            return 1;
        }
    }
    for (;;) {
        uint64_t s = slot_load(ix, i);
        if (!s) {
            if (!shared) { // the only writer: a locked compare-exchange buys nothing
                slot_store(ix, i, want);
                return 1;
            }
            if (slot_cas(ix, i, 0, want))
                return 1;
            continue; // another put took it: look at what it wrote
        }
        if ((s >> ix->pos_bits) == tag) {
            uint64_t q = (s & pos_mask) - 1;
            if (memcmp(leaf_at(r, q), leaf, 32) == 0) {
                *evicted = q > p ? q : ABSENT;
                if (q <= p)
                    return 0;
                if (!shared) {
                    slot_store(ix, i, want);
                    return 0;
                }
                if (slot_cas(ix, i, s, want))
                    return 0;
                continue;
            }
        }
        i = (i + 1) & ix->mask;
    }
}

/* ---- tables ---------------------------------------------------------------- */

static unsigned bit_length(uint64_t x)
{
    return x ? 64u - (unsigned)__builtin_clzll(x) : 0;
}

unsigned rt_index_pos_bits(uint64_t size)
{
    // One bit of headroom, so that a tree growing past a power of two does
    // not rebuild its table at once; but not the bit that would make slots
    // 8 bytes while every position + 1 (at most size) still fits in 32:
    // that doubled the index of trees of 2**31..2**32 leaves, to 10.7..21
    // bytes per leaf.
    unsigned bits = bit_length(size) + 1;
    if (bits < 16)
        bits = 16;
    if (bits == 33)
        bits = 32;
    return bits;
}

/* An empty table for up to `entries` distinct leaves at positions below
 * `size` (twice that, so that a growing tree does not rebuild at once). */
static rt_leaf_index *index_new(uint64_t entries, uint64_t size)
{
    uint64_t slots = MIN_SLOTS;
    while (slots / LOAD_DEN * LOAD_NUM < entries) {
        if (slots > (UINT64_MAX >> 4))
            return NULL;
        slots *= 2;
    }
    unsigned pos_bits = rt_index_pos_bits(size);
    if (pos_bits > 63)
        return NULL;
    unsigned wide = pos_bits > 32;
    uint64_t bytes = slots * (wide ? 8u : 4u);
    if (bytes > SIZE_MAX)
        return NULL;
    rt_leaf_index *ix = malloc(sizeof(*ix));
    if (!ix)
        return NULL;
    ix->slots = rt_buffer_alloc((size_t)bytes);
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    atomic_init(&ix->refcount, 1);
    ix->staged = NULL;
    ix->staged_added = 0;
    ix->plan = NULL;
    ix->wide = wide;
    ix->pos_bits = pos_bits;
    ix->mask = slots - 1;
    ix->seed = fresh_seed(ix);
    ix->entries = 0;
    ix->max_entries = slots / LOAD_DEN * LOAD_NUM;
    ix->pos_limit = ((uint64_t)1 << pos_bits) - 1;
    ix->bytes = (size_t)bytes;
    return ix;
}

void rt_index_retain(rt_leaf_index *index)
{
    atomic_fetch_add_explicit(&index->refcount, 1, memory_order_relaxed);
}

void rt_index_release(rt_leaf_index *index)
{
    if (!index || atomic_fetch_sub_explicit(&index->refcount, 1, memory_order_acq_rel) != 1)
        return;
    rt_buffer_free(index->slots);
    free(index);
}

/* ---- parallel fill and lookup ------------------------------------------------ */

/* The unit size for `count` items on the pool, 0: run them on the caller. */
static size_t pool_grain(uint64_t count)
{
    uint32_t threads;
    uint64_t chunk;
    rt_pool_tunables(&threads, NULL, &chunk);
    uint64_t grain = chunk > UINT64_MAX / GRAIN_PER_CHUNK ? UINT64_MAX : chunk * GRAIN_PER_CHUNK;
    return threads > 1 && count / 2 >= grain ? (size_t)grain : 0;
}

// Large buffers are cleared and copied in pieces on the pool: one thread
// does not reach the memory bandwidth of two, and these passes run with
// the write lock held.
typedef struct piece_job {
    uint8_t *dest;
    const uint8_t *src; /* NULL: clear */
    size_t bytes;
} piece_job;

#define PIECE ((size_t)1 << 20)

static void piece_units(void *ctx, size_t begin, size_t end)
{
    const piece_job *job = ctx;
    size_t from = begin * PIECE, to = end * PIECE;
    if (to > job->bytes)
        to = job->bytes;
    if (job->src)
        memcpy(job->dest + from, job->src + from, to - from);
    else
        memset(job->dest + from, 0, to - from);
}

static void pieces_run(uint8_t *dest, const uint8_t *src, size_t bytes)
{
    piece_job job = {dest, src, bytes};
    size_t pieces = (bytes + PIECE - 1) / PIECE;
    if (pieces > 4 && pool_grain(UINT64_MAX))
        rt_pool_parallel_for(pieces, 1, piece_units, &job);
    else
        piece_units(&job, 0, pieces);
}

/* Buffers come from the mapping cache with unspecified contents (reused
 * pages are already faulted in): clear them, on the pool when large. */
static void index_clear(rt_leaf_index *ix)
{
    pieces_run(ix->slots, NULL, ix->bytes);
}

typedef struct fill_job {
    rt_leaf_index *ix;
    const leaf_reader *reader;
    uint64_t first;
    int shared; /* units run on several threads */
    atomic_uint_fast64_t added;
} fill_job;

static void fill_units(void *ctx, size_t begin, size_t end)
{
    fill_job *job = ctx;
    const rt_leaf_index *ix = job->ix;
    const leaf_reader *r = job->reader;
    const uint64_t first = job->first + begin, stop = job->first + end;
    uint64_t added = 0, ring[PIPE], evicted, ahead = first;
    for (; ahead < stop && ahead < first + PIPE; ahead++) {
        ring[ahead % PIPE] = leaf_hash(leaf_at(r, ahead), ix->seed);
        slot_prefetch(ix, ring[ahead % PIPE]);
    }
    for (uint64_t p = first; p < stop; p++) {
        uint64_t h = ring[p % PIPE];
        if (ahead < stop) {
            ring[ahead % PIPE] = leaf_hash(leaf_at(r, ahead), ix->seed);
            slot_prefetch(ix, ring[ahead % PIPE]);
            ahead++;
        }
        added += (uint64_t)index_put(ix, r, leaf_at(r, p), h, p, &evicted, job->shared);
    }
    atomic_fetch_add_explicit(&job->added, added, memory_order_relaxed);
}

static inline void mark(uint8_t *marks, uint64_t i)
{
    __atomic_store_n(marks + i, (uint8_t)1, __ATOMIC_RELAXED);
}

/* ---- partitioned puts ------------------------------------------------------- */

// Puts from several threads into one table need a locked compare-exchange
// each, and each lands anywhere in a table of megabytes: a cache miss the
// lock then waits for. A large batch is instead grouped by the region of
// the table its home slot lies in (a counting pass, then a scatter of
// 8-byte items), and each region is filled by one thread with plain
// stores while its slots stay in that core's cache. A probe that would run
// past its region's end (into slots another thread owns) is put aside and
// finished by the caller after the regions, alone. The table is the one
// the concurrent puts would build up to the order of colliding keys, and
// nothing is left out: the lower position of a leaf still wins.
// A table within the last-level cache is filled faster the plain way: its
// misses are cheap and the grouping passes are not (measured: 8 MB tables
// filled slower by regions, 64 MB ones 7-20% less CPU). The size the OS
// reports for that cache is not trusted (virtual machines report the
// host's), so the bound is fixed. It scales with the pool's chunk like the
// work units do, so that tests which shrink the chunk reach this path with
// small trees.
#define REGION_BYTES ((size_t)256 << 10)
#define MIN_REGIONS 16u
#define CACHE_BYTES ((uint64_t)32 << 20)
#define DEFAULT_CHUNK 64u

static int table_beyond_cache(const rt_leaf_index *ix)
{
    uint64_t chunk;
    rt_pool_tunables(NULL, NULL, &chunk);
    if (chunk > DEFAULT_CHUNK)
        chunk = DEFAULT_CHUNK;
    return (uint64_t)ix->bytes > CACHE_BYTES / DEFAULT_CHUNK * (chunk ? chunk : 1);
}

typedef struct part_job {
    const rt_leaf_index *ix;
    const leaf_reader *reader;
    uint64_t first;  /* position of item 0 */
    size_t count, grain, regions;
    unsigned shift;  /* a home slot's region: home >> shift */
    uint64_t *cursor; /* [chunk * regions + region]: counts, then scatter cursors */
    uint64_t *start;  /* regions + 1: where each region's items begin */
    uint64_t *hashed; /* (home << 32) | slot value, in batch order */
    uint64_t *items;  /* the same, grouped by region */
    uint64_t *aside;  /* per region: how many of its items were put aside */
    uint8_t *marks;   /* staging: repeats at mark_from on are marked here */
    uint64_t mark_from;
    int clear;        /* a new table: each region clears its slots first */
    atomic_uint_fast64_t added;
} part_job;

static inline uint64_t part_item(const part_job *job, uint64_t i)
{
    const rt_leaf_index *ix = job->ix;
    uint64_t h = leaf_hash(leaf_at(job->reader, job->first + i), ix->seed);
    return ((h & ix->mask) << 32) | (tag_of(ix, h) << ix->pos_bits) | (job->first + i + 1);
}

/* Chunks [begin, end) of the batch: hash them and count their items per
 * region, or (once the counts are offsets) move the items to their region. */
static void part_chunks(part_job *job, size_t begin, size_t end, int scatter)
{
    for (size_t c = begin; c < end; c++) {
        uint64_t *cursor = job->cursor + c * job->regions;
        uint64_t stop = (c + 1) * job->grain < job->count ? (c + 1) * job->grain : job->count;
        for (uint64_t i = c * job->grain; i < stop; i++) {
            if (scatter) {
                uint64_t item = job->hashed[i];
                job->items[cursor[(item >> 32) >> job->shift]++] = item;
            } else {
                uint64_t item = part_item(job, i);
                job->hashed[i] = item;
                cursor[(item >> 32) >> job->shift]++;
            }
        }
    }
}

static void part_count(void *ctx, size_t begin, size_t end)
{
    part_chunks(ctx, begin, end, 0);
}

static void part_scatter(void *ctx, size_t begin, size_t end)
{
    part_chunks(ctx, begin, end, 1);
}

/* Put one item, probing no further than slot `stop` (exclusive, UINT64_MAX:
 * anywhere): 1 if its leaf was new, 0 if a repeat (marked), -1 if put
 * aside. Only one thread writes the slots this probe reads. */
static int part_put(const part_job *job, uint64_t item, uint64_t stop)
{
    const rt_leaf_index *ix = job->ix;
    const uint64_t pos_mask = ((uint64_t)1 << ix->pos_bits) - 1;
    const uint64_t want = item & 0xFFFFFFFFu, tag = want >> ix->pos_bits;
    const uint64_t p = (want & pos_mask) - 1;
    uint64_t free_slot = line_slot(ix, item >> 32, tag);
    if (free_slot != UINT64_MAX) {
        slot_store(ix, free_slot, want);
        return 1;
    }
    for (uint64_t i = item >> 32;;) {
        uint64_t s = slot_load(ix, i);
        if (!s) {
            slot_store(ix, i, want);
            return 1;
        }
        if ((s >> ix->pos_bits) == tag) {
            uint64_t q = (s & pos_mask) - 1;
            if (memcmp(leaf_at(job->reader, q), leaf_at(job->reader, p), 32) == 0) {
                if (q > p)
                    slot_store(ix, i, want);
                uint64_t later = q > p ? q : p; // a repeat: this leaf, or the copy it displaced
                if (job->marks && later >= job->mark_from)
                    mark(job->marks, later - job->mark_from);
                return 0;
            }
        }
        i = (i + 1) & ix->mask;
        if (i == stop)
            return -1;
    }
}

static void part_regions(void *ctx, size_t begin, size_t end)
{
    part_job *job = ctx;
    uint64_t added = 0;
    for (size_t r = begin; r < end; r++) {
        uint64_t lo = job->start[r], hi = job->start[r + 1], aside = 0;
        uint64_t stop = ((uint64_t)(r + 1) << job->shift) & job->ix->mask;
        if (job->clear) // here its slots stay in cache for the puts that follow
            memset((uint32_t *)job->ix->slots + ((uint64_t)r << job->shift), 0,
                   (size_t)4u << job->shift);
        for (uint64_t k = lo; k < hi; k++) {
            if (k + PIPE < hi)
                slot_prefetch(job->ix, job->items[k + PIPE] >> 32);
            uint64_t item = job->items[k];
            int put = part_put(job, item, stop);
            if (put < 0)
                job->items[lo + aside++] = item; // slots before k are done with
            else
                added += (uint64_t)put;
        }
        job->aside[r] = aside;
    }
    atomic_fetch_add_explicit(&job->added, added, memory_order_relaxed);
}

/* Put positions first .. first + count - 1 of `reader` into `ix` (marking
 * repeats at mark_from and after in `marks` if not NULL; clearing it first
 * if `clear`) by regions; 0 when that does not apply
 * or there is no memory for it (the caller then puts them the plain way),
 * else 1 with *added the leaves new to the table. */
static int part_fill(const rt_leaf_index *ix, const leaf_reader *reader, uint64_t first,
                     size_t count, size_t grain, uint8_t *marks, uint64_t mark_from, int clear,
                     uint64_t *added)
{
    uint64_t slots = ix->mask + 1;
    if (ix->wide || ix->mask > UINT32_MAX || !grain || !table_beyond_cache(ix))
        return 0;
    size_t regions = (size_t)(slots * 4u / REGION_BYTES);
    if (regions < MIN_REGIONS)
        regions = MIN_REGIONS;
    if (regions > slots / 256u)
        return 0;
    unsigned shift = 0;
    while ((slots >> shift) > regions)
        shift++;
    // Few items per chunk and region would make the counts cost more than
    // the items.
    while (grain < count && grain < (size_t)regions * 64u)
        grain *= 2;
    size_t chunks = (count + grain - 1) / grain;
    part_job job = {ix, reader, first, count, grain, regions, shift, NULL, NULL, NULL, NULL,
                    NULL, marks, mark_from, clear, 0};
    size_t words = chunks * regions + 2 * regions + 1;
    job.cursor = rt_buffer_alloc(words * sizeof(uint64_t));
    job.items = rt_buffer_alloc(count * sizeof(uint64_t));
    job.hashed = rt_buffer_alloc(count * sizeof(uint64_t));
    if (!job.cursor || !job.items || !job.hashed) {
        rt_buffer_free(job.cursor);
        rt_buffer_free(job.items);
        rt_buffer_free(job.hashed);
        return 0;
    }
    job.start = job.cursor + chunks * regions;
    job.aside = job.start + regions + 1;
    memset(job.cursor, 0, chunks * regions * sizeof(uint64_t));
    rt_pool_parallel_for(chunks, 1, part_count, &job);
    uint64_t at = 0;
    for (size_t r = 0; r < regions; r++) {
        job.start[r] = at;
        for (size_t c = 0; c < chunks; c++) {
            uint64_t n = job.cursor[c * regions + r];
            job.cursor[c * regions + r] = at;
            at += n;
        }
    }
    job.start[regions] = at;
    rt_pool_parallel_for(chunks, 1, part_scatter, &job);
    rt_buffer_free(job.hashed);
    rt_pool_parallel_for(regions, 1, part_regions, &job);
    uint64_t total = atomic_load_explicit(&job.added, memory_order_relaxed);
    for (size_t r = 0; r < regions; r++)
        for (uint64_t k = job.start[r]; k < job.start[r] + job.aside[r]; k++)
            total += (uint64_t)part_put(&job, job.items[k], UINT64_MAX);
    rt_buffer_free(job.cursor);
    rt_buffer_free(job.items);
    *added = total;
    return 1;
}

/* Put positions [first, end) of `reader` into `ix`, in units of `grain`
 * on the pool (0: on this thread alone, with the single writer's puts). */
static void index_fill_grained(rt_leaf_index *ix, const leaf_reader *reader, uint64_t first,
                               uint64_t end, size_t grain)
{
    uint64_t count = end - first;
    uint64_t added;
    if (part_fill(ix, reader, first, (size_t)count, grain, NULL, 0, 0, &added)) {
        ix->entries += added;
        return;
    }
    fill_job job = {ix, reader, first, grain != 0, 0};
    if (grain)
        rt_pool_parallel_for((size_t)count, grain, fill_units, &job);
    else
        fill_units(&job, 0, (size_t)count);
    ix->entries += atomic_load_explicit(&job.added, memory_order_relaxed);
}

/* Put positions [first, end) of `reader` into `ix`. */
static void index_fill(rt_leaf_index *ix, const leaf_reader *reader, uint64_t first,
                       uint64_t end)
{
    index_fill_grained(ix, reader, first, end, pool_grain(end - first));
}

/* Clear the new table `ix` and put positions [0, end) of `reader` in it. */
static void index_fill_new(rt_leaf_index *ix, const leaf_reader *reader, uint64_t end)
{
    uint64_t added;
    if (part_fill(ix, reader, 0, (size_t)end, pool_grain(end), NULL, 0, 1, &added)) {
        ix->entries += added;
        return;
    }
    index_clear(ix);
    index_fill(ix, reader, 0, end);
}

/* The hashes of leaves [begin, end) of a batch, PIPE ahead of their use. */
typedef struct hash_pipe {
    const rt_leaf_index *ix;
    const uint8_t *leaves;
    size_t ahead, end;
    uint64_t ring[PIPE];
} hash_pipe;

static inline void pipe_push(hash_pipe *pipe)
{
    uint64_t h = leaf_hash(pipe->leaves + pipe->ahead * 32u, pipe->ix->seed);
    pipe->ring[pipe->ahead % PIPE] = h;
    slot_prefetch(pipe->ix, h);
    pipe->ahead++;
}

static inline void pipe_start(hash_pipe *pipe, const rt_leaf_index *ix, const uint8_t *leaves,
                              size_t begin, size_t end)
{
    pipe->ix = ix;
    pipe->leaves = leaves;
    pipe->ahead = begin;
    pipe->end = end;
    while (pipe->ahead < end && pipe->ahead < begin + PIPE)
        pipe_push(pipe);
}

/* The hash of leaf i (the next one in order). */
static inline uint64_t pipe_next(hash_pipe *pipe, size_t i)
{
    uint64_t h = pipe->ring[i % PIPE];
    if (pipe->ahead < pipe->end)
        pipe_push(pipe);
    return h;
}

typedef struct find_job {
    const rt_leaf_index *ix;
    const leaf_reader *reader;
    const uint8_t *leaves;
    uint64_t *positions;
    uint8_t *found;
} find_job;

static void find_units(void *ctx, size_t begin, size_t end)
{
    const find_job *job = ctx;
    const rt_leaf_index *ix = job->ix;
    const uint8_t *leaves = job->leaves;
    const uint64_t pos_mask = ((uint64_t)1 << ix->pos_bits) - 1;
    hash_pipe pipe;
    pipe_start(&pipe, ix, leaves, begin, end);
    for (size_t i = begin; i < end; i++) {
        // Halfway down the pipe a slot's line has arrived: if it names a
        // candidate, fetch that leaf too, the second miss of a hit (leaves
        // of a large tree are far apart in level 0).
        size_t half = i + PIPE / 2;
        if (half < pipe.ahead) {
            uint64_t hh = pipe.ring[half % PIPE], s = slot_load(ix, hh & ix->mask);
            uint64_t q = (s & pos_mask) - 1;
            if (s && (s >> ix->pos_bits) == tag_of(ix, hh) && q < job->reader->limit)
                __builtin_prefetch(leaf_at(job->reader, q));
        }
        uint64_t h = pipe_next(&pipe, i);
        uint64_t p = index_find(ix, job->reader, leaves + i * 32u, h);
        if (job->positions)
            job->positions[i] = p;
        if (job->found)
            job->found[i] = p != ABSENT;
    }
}

static void index_find_many(const rt_leaf_index *ix, const leaf_reader *reader,
                            const uint8_t *leaves, size_t count, uint64_t *positions,
                            uint8_t *found)
{
    find_job job = {ix, reader, leaves, positions, found};
    size_t grain = pool_grain(count);
    if (grain)
        rt_pool_parallel_for(count, grain, find_units, &job);
    else
        find_units(&job, 0, count);
}

/* A full index of the tree's leaves, or NULL when out of memory. */
static rt_leaf_index *index_of_tree(const rt_tree *tree, uint64_t extra)
{
    rt_leaf_index *ix = index_new(tree->size + extra, tree->size + extra);
    if (!ix)
        return NULL;
    leaf_reader reader = tree_reader(tree);
    index_fill_new(ix, &reader, tree->size);
    return ix;
}

/* ---- hooks for inserts (rt_index.h) ----------------------------------------- */

int rt_index_reserve(const rt_tree *tree, uint64_t count, uint64_t new_size,
                     rt_leaf_index **fresh)
{
    const rt_leaf_index *ix = tree->index;
    *fresh = NULL;
    if (count <= ix->max_entries - ix->entries && new_size <= ix->pos_limit)
        return RT_OK;
    // Sized for every new leaf being distinct; the fill after the insert
    // counts what they really are.
    *fresh = index_new(ix->entries + count, new_size);
    return *fresh ? RT_OK : RT_ERR_NOMEM;
}

static void index_commit_staged(rt_tree *tree);

void rt_index_add(rt_tree *tree, rt_leaf_index *fresh, uint64_t old_size)
{
    if (tree->index->staged) {
        index_commit_staged(tree);
        return;
    }
    leaf_reader reader = tree_reader(tree);
    if (fresh) {
        index_fill_new(fresh, &reader, tree->size);
        rt_index_release(tree->index); // snapshots may keep it
        tree->index = fresh;
        return;
    }
    index_fill(tree->index, &reader, old_size, tree->size);
}

int rt_index_rebuild_locked(rt_tree *tree)
{
    rt_leaf_index *ix = index_of_tree(tree, 0);
    if (!ix)
        return RT_ERR_NOMEM;
    rt_index_release(tree->index);
    tree->index = ix;
    return RT_OK;
}

/* ---- public calls ------------------------------------------------------------ */

int rt_tree_index_enable(rt_tree *tree)
{
    if (!tree)
        return RT_ERR_INVALID_ARGUMENT;
    if (pthread_rwlock_wrlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    int status = tree->index ? RT_OK : rt_index_rebuild_locked(tree);
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_index_enabled(rt_tree *tree)
{
    pthread_rwlock_rdlock(&tree->lock);
    int on = tree->index != NULL;
    pthread_rwlock_unlock(&tree->lock);
    return on;
}

/* ---- background builds (durable recovery) ------------------------------------ */

// Recovery knows the checkpoint's leaves (a mapped file) long before the
// tree is whole: their index is built while the checkpoint is verified and
// the WAL replayed, which leave a core idle much of the time (a checksum
// and Python frame parsing run on one thread), instead of after them. The
// table is private to the build until adopted, so a recovery that fails
// drops it and leaves nothing half-built behind.
struct rt_index_build {
    pthread_t thread;
    const uint8_t *leaves;
    uint64_t count, expected;
    rt_leaf_index *ix; /* NULL: out of memory */
};

// The build runs on this thread alone, with the single writer's plain
// puts, not on the pool: recovery's own work (verifying the checkpoint on
// the pool, replaying the log) leaves about one core idle, which this
// thread uses, where pool jobs took pool time from the verification, and
// the partitioned fill's scratch (16 bytes per leaf, 144 MB at 9M leaves)
// was fresh memory on every first open: its page faults cost more CPU
// than the puts themselves.
static void *index_build_main(void *arg)
{
    rt_index_build *build = arg;
    rt_leaf_index *ix = index_new(build->expected, build->expected);
    if (ix) {
        leaf_reader reader = {NULL, NULL, 0, build->count, build->leaves, 0};
        memset(ix->slots, 0, ix->bytes); // not index_clear: that runs on the pool
        index_fill_grained(ix, &reader, 0, build->count, 0);
    }
    build->ix = ix;
    return NULL;
}

int rt_index_build_start(const uint8_t *leaves, uint64_t count, uint64_t expected,
                         rt_index_build **out)
{
    if (!out)
        return RT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!leaves || count == 0)
        return RT_ERR_INVALID_ARGUMENT;
    rt_index_build *build = calloc(1, sizeof(*build));
    if (!build)
        return RT_ERR_NOMEM;
    build->leaves = leaves;
    build->count = count;
    build->expected = expected < count ? count : expected;
    if (rt_thread_start(&build->thread, NULL, index_build_main, build) != 0) {
        free(build);
        return RT_ERR_THREAD;
    }
    *out = build;
    return RT_OK;
}

void rt_index_build_discard(rt_index_build *build)
{
    if (!build)
        return;
    pthread_join(build->thread, NULL);
    rt_index_release(build->ix);
    free(build);
}

int rt_tree_index_adopt(rt_tree *tree, rt_index_build *build)
{
    if (!tree || !build) {
        rt_index_build_discard(build);
        return RT_ERR_INVALID_ARGUMENT;
    }
    pthread_join(build->thread, NULL);
    rt_leaf_index *ix = build->ix;
    const uint64_t count = build->count;
    const uint8_t *last = build->leaves + (count - 1) * 32u;
    free(build);
    if (pthread_rwlock_wrlock(&tree->lock) != 0) {
        rt_index_release(ix);
        return RT_ERR_THREAD;
    }
    int status = RT_OK;
    if (!tree->index) {
        // The last buffered leaf is compared as a cheap guard against a
        // caller pairing the build with another tree; a table too small for
        // what the replay added would have to grow anyway.
        if (ix && tree->size >= count && tree->size - count <= ix->max_entries - ix->entries &&
            tree->size <= ix->pos_limit &&
            memcmp(rt_level_node(&tree->levels[0], count - 1, tree->chunk_cap), last, 32) == 0) {
            leaf_reader reader = tree_reader(tree);
            if (tree->size > count)
                index_fill(ix, &reader, count, tree->size);
            tree->index = ix;
            ix = NULL;
        } else {
            rt_index_release(ix); // before the rebuild, which needs the memory
            ix = NULL;
            status = rt_index_rebuild_locked(tree);
        }
    }
    pthread_rwlock_unlock(&tree->lock);
    rt_index_release(ix);
    return status;
}

int rt_tree_index_stats(rt_tree *tree, struct rt_index_stats *out)
{
    if (!tree || !out)
        return RT_ERR_INVALID_ARGUMENT;
    pthread_rwlock_rdlock(&tree->lock);
    const rt_leaf_index *ix = tree->index;
    int status = RT_ERR_NO_INDEX;
    if (ix) {
        out->entries = ix->entries;
        out->slots = ix->mask + 1;
        out->bytes = ix->bytes;
        out->slot_bytes = ix->wide ? 8u : 4u;
        status = RT_OK;
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_tree_index_find(rt_tree *tree, const uint8_t *leaves, size_t count,
                       uint64_t *positions, uint8_t *found)
{
    if (!tree || (count && !leaves) || (!positions && !found))
        return RT_ERR_INVALID_ARGUMENT;
    if (pthread_rwlock_rdlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    int status = RT_ERR_NO_INDEX;
    if (tree->index) {
        leaf_reader reader = tree_reader(tree);
        index_find_many(tree->index, &reader, leaves, count, positions, found);
        status = RT_OK;
    }
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

int rt_snapshot_index_find(const rt_snapshot *snap, const uint8_t *leaves, size_t count,
                           uint64_t *positions, uint8_t *found)
{
    if (!snap || (count && !leaves) || (!positions && !found))
        return RT_ERR_INVALID_ARGUMENT;
    if (!snap->index)
        return RT_ERR_NO_INDEX;
    leaf_reader reader = {NULL, snap, snap->chunk_cap, snap->size, NULL, UINT64_MAX};
    index_find_many(snap->index, &reader, leaves, count, positions, found);
    return RT_OK;
}

/* ---- unique inserts ---------------------------------------------------------- */

// A unique batch is put into the index before the tree is touched, at the
// positions it would take (old_size + i), with the batch itself read for
// those positions: the puts find the leaves already in the tree and the
// repeats inside the batch in one pass, and when there are none the insert
// that follows has nothing left to add to the index (one pass where a
// separate check would hash and probe every leaf twice). Otherwise the
// staged entries are taken out again: from a new table by dropping it, in
// place by clearing every slot holding a position >= old_size. That restores
// the table exactly: staged puts only filled empty slots (an older entry has
// a lower position, so it is never displaced), and no older entry's probe
// sequence crosses a slot that was empty when it was put. Snapshots reading
// meanwhile skip those positions by the size rule.

typedef struct stage_job {
    const rt_leaf_index *ix;
    const leaf_reader *reader;
    const uint8_t *leaves;
    uint64_t first; /* position of leaves[0] */
    uint8_t *marks;
    int shared;
    atomic_uint_fast64_t added;
} stage_job;

static void stage_range(stage_job *job, size_t begin, size_t end, int shared)
{
    const rt_leaf_index *ix = job->ix;
    const uint8_t *leaves = job->leaves;
    uint64_t added = 0, evicted;
    hash_pipe pipe;
    pipe_start(&pipe, ix, leaves, begin, end);
    for (size_t i = begin; i < end; i++) {
        uint64_t h = pipe_next(&pipe, i);
        evicted = ABSENT;
        if (index_put(ix, job->reader, leaves + i * 32u, h, job->first + i, &evicted, shared))
            added++;
        else if (job->marks) // a repeat: this leaf, or the later copy it displaced
            mark(job->marks, evicted == ABSENT ? i : evicted - job->first);
    }
    atomic_fetch_add_explicit(&job->added, added, memory_order_relaxed);
}

static void stage_units(void *ctx, size_t begin, size_t end)
{
    stage_job *job = ctx;
    stage_range(job, begin, end, job->shared);
}

typedef struct unstage_job {
    const rt_leaf_index *ix;
    uint64_t first;
} unstage_job;

static void unstage_units(void *ctx, size_t begin, size_t end)
{
    const unstage_job *job = ctx;
    const rt_leaf_index *ix = job->ix;
    const uint64_t pos_mask = ((uint64_t)1 << ix->pos_bits) - 1;
    for (uint64_t i = begin; i < end; i++) {
        uint64_t s = slot_load(ix, i);
        if (s && (s & pos_mask) - 1 >= job->first)
            slot_cas(ix, i, s, 0);
    }
}

/* Put the batch (positions tree->size + i) into `fresh` (a new table, which
 * gets the tree's leaves too) or the index in place, on the pool, marking
 * the repeats in `marks` if not NULL; the tree is not touched. The staged
 * table hangs off tree->index until index_commit_staged or index_unstage. */
static void stage_batch(rt_tree *tree, rt_leaf_index *fresh, const uint8_t *leaves,
                        size_t count, uint8_t *marks)
{
    rt_leaf_index *ix = tree->index;
    leaf_reader reader = tree_reader(tree);
    reader.tail = leaves;
    reader.tail_from = tree->size;
    if (marks)
        memset(marks, 0, count);
    uint64_t added, all = tree->size + count;
    if (fresh &&
        part_fill(fresh, &reader, 0, (size_t)all, pool_grain(all), marks, tree->size, 1, &added)) {
        // The tree's leaves and the batch went into the new table in one
        // pass; the tree's share of its entries is what the table they came
        // from held.
        fresh->entries = ix->entries;
        added -= ix->entries;
    } else {
        if (fresh)
            index_fill_new(fresh, &reader, tree->size);
        rt_leaf_index *target = fresh ? fresh : ix;
        size_t grain = pool_grain(count);
        if (!part_fill(target, &reader, tree->size, count, grain, marks, tree->size, 0, &added)) {
            stage_job job = {target, &reader, leaves, tree->size, marks, grain != 0, 0};
            if (grain)
                rt_pool_parallel_for(count, grain, stage_units, &job);
            else
                stage_units(&job, 0, count);
            added = atomic_load_explicit(&job.added, memory_order_relaxed);
        }
    }
    ix->staged = fresh ? fresh : ix;
    ix->staged_added = added;
}

/* rt_tree_index_duplicates' check: the batch staged as a unique insert
 * would stage it, with *duplicates its repeats. */
static int index_stage(rt_tree *tree, const uint8_t *leaves, size_t count, uint8_t *marks,
                       uint64_t *duplicates)
{
    if (count > tree->capacity - tree->size)
        return RT_ERR_MAX_DEPTH;
    rt_leaf_index *fresh;
    int status = rt_index_reserve(tree, count, tree->size + count, &fresh);
    if (status != RT_OK)
        return status;
    stage_batch(tree, fresh, leaves, count, marks);
    *duplicates = count - tree->index->staged_added;
    return RT_OK;
}

static void index_unstage(rt_tree *tree)
{
    rt_leaf_index *ix = tree->index;
    if (ix->staged != ix) {
        rt_index_release(ix->staged);
    } else {
        unstage_job job = {ix, tree->size};
        uint64_t slots = ix->mask + 1;
        size_t grain = pool_grain(slots);
        if (grain)
            rt_pool_parallel_for((size_t)slots, grain, unstage_units, &job);
        else
            unstage_units(&job, 0, (size_t)slots);
    }
    ix->staged = NULL;
    ix->staged_added = 0;
}

static void index_commit_staged(rt_tree *tree)
{
    rt_leaf_index *ix = tree->index, *staged = ix->staged;
    staged->entries += ix->staged_added;
    ix->staged = NULL;
    ix->staged_added = 0;
    if (staged != ix) {
        staged->plan = ix->plan; // the insert's, until rt_index_plan_end
        ix->plan = NULL;
        rt_index_release(ix); // snapshots may keep it
        tree->index = staged;
    }
}

int rt_tree_index_duplicates(rt_tree *tree, const uint8_t *leaves, size_t count,
                             uint8_t *duplicates, uint64_t *duplicate_count)
{
    if (!tree || !duplicates || !duplicate_count || (count && !leaves))
        return RT_ERR_INVALID_ARGUMENT;
    // The check stages the batch in the index for a moment: readers wait.
    if (pthread_rwlock_wrlock(&tree->lock) != 0)
        return RT_ERR_THREAD;
    int status = tree->index ? index_stage(tree, leaves, count, duplicates, duplicate_count)
                             : RT_ERR_NO_INDEX;
    if (status == RT_OK)
        index_unstage(tree);
    pthread_rwlock_unlock(&tree->lock);
    return status;
}

/* ---- planned inserts: the index beside the build ------------------------------ */

void rt_index_plan_begin(rt_tree *tree, rt_index_plan *plan)
{
    plan->repeats = 0;
    tree->index->plan = plan;
}

void rt_index_plan_end(rt_tree *tree)
{
    if (tree->index)
        tree->index->plan = NULL;
}

// Indexing a batch after hashing it runs the two one after the other, and
// the puts on the pool are locked compare-exchanges missing to memory that
// cost about as much CPU as the hashing. When the batch is known before
// the tree has it, one thread puts it into the index, alone and with plain
// stores, while the caller hashes the tree on the rest of the pool;
// whichever ends first helps the other: the index thread joins the
// hashing's pool jobs, the caller takes blocks of the batch's puts, both
// with compare-exchanges from then on.
// Blocks of puts: 32 leaves per parent of the pool's chunk (2048 at the
// default 64), tens of microseconds that dwarf claiming one, and few enough
// leaves that a helper that joins waits little for the owner's block;
// tests that shrink the chunk get many blocks from small batches.
#define BESIDE_BLOCK_PER_CHUNK 32u

typedef struct beside_job {
    stage_job stage;
    size_t count, block, blocks;
    atomic_size_t next;      /* the next block of puts to claim */
    atomic_int taken;        /* bit 0: the nodes, bit 1: owning the puts */
    atomic_int joined;       /* a helper puts too: compare-exchanges only */
    atomic_int plain_busy;   /* the owner is in a block of plain stores */
    void (*write)(void *);
    void *write_ctx;
    pthread_t caller;
} beside_job;

/* Claim and put blocks until none is left; the owner uses plain stores in
 * each block it starts before a helper has joined. */
static void beside_puts(beside_job *job, int owner)
{
    for (;;) {
        size_t b = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (b >= job->blocks)
            return;
        size_t begin = b * job->block;
        size_t end = job->count - begin < job->block ? job->count : begin + job->block;
        int shared = 1;
        if (owner) {
            // With the helper's store of `joined` and load of `plain_busy`
            // (all sequentially consistent): either it waits for this block
            // or this block sees it and takes compare-exchanges.
            atomic_store(&job->plain_busy, 1);
            shared = atomic_load(&job->joined);
            if (shared)
                atomic_store(&job->plain_busy, 0);
        }
        stage_range(&job->stage, begin, end, shared);
        if (!shared)
            atomic_store_explicit(&job->plain_busy, 0, memory_order_release);
    }
}

static void beside_units(void *ctx, size_t begin, size_t end)
{
    beside_job *job = ctx;
    // The caller writes the nodes: it owns the hashing's pool jobs, and an
    // owner waiting for its helpers helps no other job, so the other thread
    // must be the one that can end its share first and help.
    const int caller = pthread_equal(pthread_self(), job->caller);
    for (size_t u = begin; u < end; u++) {
        for (int k = 0; k < 2; k++) {
            int role = (k == 0) == caller ? 1 : 2;
            if (atomic_fetch_or(&job->taken, role) & role)
                continue;
            if (role == 1)
                job->write(job->write_ctx);
            else
                beside_puts(job, 1);
        }
        if (atomic_load_explicit(&job->next, memory_order_relaxed) < job->blocks) {
            atomic_store(&job->joined, 1);
            while (atomic_load(&job->plain_busy)) // at most the owner's block
                sched_yield();
            beside_puts(job, 0);
        }
    }
}

void rt_index_beside(rt_tree *tree, rt_leaf_index *fresh, void (*write)(void *), void *ctx)
{
    rt_leaf_index *ix = tree->index;
    rt_index_plan *plan = ix->plan;
    if (!plan) {
        write(ctx);
        return;
    }
    if (!pool_grain(plan->count) || (plan->check && !plan->speculate)) {
        // Too small to share out, or likely refused: the check first, so
        // that a refused batch is never hashed.
        stage_batch(tree, fresh, plan->leaves, plan->count, plan->marks);
        plan->repeats = plan->count - ix->staged_added;
        if (!(plan->check && plan->repeats))
            write(ctx);
        return;
    }
    leaf_reader reader = tree_reader(tree);
    reader.tail = plan->leaves;
    reader.tail_from = tree->size;
    if (plan->marks)
        memset(plan->marks, 0, plan->count);
    if (fresh) // the tree's leaves first, on the whole pool
        index_fill_new(fresh, &reader, tree->size);
    rt_leaf_index *target = fresh ? fresh : ix;
    uint64_t chunk;
    rt_pool_tunables(NULL, NULL, &chunk);
    size_t block = chunk > 1024 ? 1024u * BESIDE_BLOCK_PER_CHUNK
                                : (size_t)(chunk ? chunk : 1) * BESIDE_BLOCK_PER_CHUNK;
    beside_job job = {{target, &reader, plan->leaves, tree->size, plan->marks, 0, 0},
                      plan->count, block, (plan->count + block - 1) / block, 0, 0, 0, 0,
                      write, ctx, pthread_self()};
    rt_pool_parallel_for(2, 1, beside_units, &job);
    ix->staged = target;
    ix->staged_added = atomic_load_explicit(&job.stage.added, memory_order_relaxed);
    plan->repeats = plan->count - ix->staged_added;
}

void rt_index_abandon(rt_tree *tree, rt_leaf_index *fresh)
{
    if (tree->index && tree->index->staged)
        index_unstage(tree); // drops `fresh` if the batch went there
    else
        rt_index_release(fresh);
}

int rt_tree_insert_unique(rt_tree *tree, const uint8_t *leaves, size_t count, int mode,
                          uint8_t *duplicates, uint64_t *duplicate_count, uint8_t *root_out)
{
    const int stable = (mode & RT_UNIQUE_STABLE) != 0;
    mode &= ~RT_UNIQUE_STABLE;
    if (!tree || !root_out || !duplicates || !duplicate_count || (count && !leaves) ||
        (mode != RT_UNIQUE_REJECT && mode != RT_UNIQUE_SKIP))
        return RT_ERR_INVALID_ARGUMENT;
    if (count == 0)
        return RT_ERR_EMPTY_BATCH;
    // The staged entries are placed by the hashes of the batch as read now,
    // and the insert copies it again: a caller's buffer (a bytearray or
    // numpy array another thread writes while the GIL is released) that
    // changed in between left leaves in the tree under slots of other
    // values, so has() missed them and later unique inserts let them in
    // twice. Both read one private copy instead, unless the caller vouches
    // that nobody can write the batch meanwhile (Python's bytes): the copy
    // is a pass over the whole batch, into fresh memory, that costs a
    // unique insert several percent of its time.
    if (count > SIZE_MAX / 32u)
        return RT_ERR_INVALID_ARGUMENT;
    uint8_t *batch = NULL;
    if (!stable) {
        batch = rt_buffer_alloc(count * 32u);
        if (!batch)
            return RT_ERR_NOMEM;
        pieces_run(batch, leaves, count * 32u);
        leaves = batch;
    }
    if (pthread_rwlock_wrlock(&tree->lock) != 0) {
        rt_buffer_free(batch);
        return RT_ERR_THREAD;
    }
    uint64_t dups = 0;
    int status = RT_ERR_NO_INDEX;
    if (tree->index) {
        // Checked while the tree hashes the batch (rt_index_beside): one
        // pass finds the leaves already in the tree and the repeats inside
        // the batch, and leaves nothing to add after the insert.
        // insert_new's batches are expected to hold duplicates: checked
        // before they are hashed, then the new leaves inserted.
        rt_index_plan plan = {leaves, count, duplicates, 1, mode == RT_UNIQUE_REJECT, 0};
        rt_index_plan_begin(tree, &plan);
        status = rt_tree_insert_locked(tree, leaves, count, root_out);
        rt_index_plan_end(tree);
        if (status == RT_ERR_DUPLICATE) {
            dups = plan.repeats;
            if (mode == RT_UNIQUE_SKIP && dups == count) {
                rt_tree_copy_root(tree, root_out); // every leaf was in the tree already
                status = RT_OK;
            } else if (mode == RT_UNIQUE_SKIP) {
                uint8_t *kept = rt_buffer_alloc((size_t)(count - dups) * 32u);
                if (!kept) {
                    status = RT_ERR_NOMEM;
                } else {
                    size_t n = 0;
                    for (size_t i = 0; i < count; i++)
                        if (!duplicates[i])
                            memcpy(kept + 32u * n++, leaves + 32u * i, 32);
                    // New and distinct: nothing left to check or mark.
                    rt_index_plan again = {kept, n, NULL, 0, 1, 0};
                    rt_index_plan_begin(tree, &again);
                    status = rt_tree_insert_locked(tree, kept, n, root_out);
                    rt_index_plan_end(tree);
                    rt_buffer_free(kept);
                }
            }
        }
    }
    if (status == RT_OK || status == RT_ERR_DUPLICATE)
        *duplicate_count = dups;
    pthread_rwlock_unlock(&tree->lock);
    rt_buffer_free(batch);
    return status;
}

/* ---- single lookups ------------------------------------------------------------ */

static int64_t position_or_status(const rt_leaf_index *ix, const leaf_reader *reader,
                                  const uint8_t *leaf)
{
    uint64_t p = index_find(ix, reader, leaf, leaf_hash(leaf, ix->seed));
    return p == ABSENT ? -1 : (int64_t)p; // positions stay below 2**63 (pos_bits <= 63)
}

int64_t rt_tree_index_position(rt_tree *tree, const uint8_t *leaf)
{
    if (!tree || !leaf)
        return -RT_ERR_INVALID_ARGUMENT;
    pthread_rwlock_rdlock(&tree->lock);
    int64_t out = -RT_ERR_NO_INDEX;
    if (tree->index) {
        leaf_reader reader = tree_reader(tree);
        out = position_or_status(tree->index, &reader, leaf);
    }
    pthread_rwlock_unlock(&tree->lock);
    return out;
}

int64_t rt_snapshot_index_position(const rt_snapshot *snap, const uint8_t *leaf)
{
    if (!snap || !leaf)
        return -RT_ERR_INVALID_ARGUMENT;
    if (!snap->index)
        return -RT_ERR_NO_INDEX;
    leaf_reader reader = {NULL, snap, snap->chunk_cap, snap->size, NULL, UINT64_MAX};
    return position_or_status(snap->index, &reader, leaf);
}
