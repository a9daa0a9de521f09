/*
 * Large memory: huge-page-aligned anonymous mappings for level slabs and
 * result buffers, and the cache that keeps freed ones for reuse.
 */
#include "rt_config.h"

#include <pthread.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "rotortree.h"
#include "rt_mapping.h"
#include "rt_pool.h"
#include "rt_tree.h"

#define HUGE_PAGE RT_HUGE_PAGE

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

#ifdef __linux__
/*
 * Pre-faulting. A tree that keeps growing writes every batch into memory
 * the kernel has never handed out, and the zeroing of those pages (a page
 * fault per 4 KiB, or per 2 MiB huge page) lands on the inserting threads.
 * Levels ask for the memory their next batch will likely need to be
 * populated ahead of time (rt_mapping_prefault), and one background thread
 * does it with MADV_POPULATE_WRITE (Linux 5.14+): the kernel faults the
 * pages in writable without touching their contents, so it is safe while
 * the tree writes into the same range, and a range that was unmapped
 * meanwhile only makes the call fail. On older kernels the first call
 * fails with EINVAL and pre-faulting turns itself off.
 */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PREFAULT_QUEUE 32

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int started, unsupported, busy;
    size_t head, count;
    struct prefault_request {
        uint8_t *base;
        size_t bytes;
    } queue[PREFAULT_QUEUE];
} prefault = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, {{0}}};

// The thread ends after this long without work (the next request starts
// another): an idle process keeps no thread of ours, and none is alive at
// exit or at fork for long.
#define PREFAULT_IDLE_NS 200000000L

static void *prefault_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&prefault.lock);
    for (;;) {
        while (!prefault.count) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += PREFAULT_IDLE_NS;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&prefault.wake, &prefault.lock, &until) == ETIMEDOUT &&
                !prefault.count) {
                prefault.started = 0;
                pthread_cond_broadcast(&prefault.wake);
                pthread_mutex_unlock(&prefault.lock);
                return NULL;
            }
        }
        struct prefault_request request = prefault.queue[prefault.head];
        prefault.head = (prefault.head + 1) % PREFAULT_QUEUE;
        prefault.count--;
        prefault.busy = 1;
        pthread_mutex_unlock(&prefault.lock);
        int failed = madvise(request.base, request.bytes, MADV_POPULATE_WRITE) != 0;
        int unsupported = failed && errno == EINVAL;
        pthread_mutex_lock(&prefault.lock);
        prefault.busy = 0;
        if (unsupported) {
            prefault.unsupported = 1;
            prefault.count = 0;
        }
        pthread_cond_broadcast(&prefault.wake);
    }
}

void rt_mapping_prefault(uint8_t *base, size_t bytes)
{
    if (!bytes)
        return;
    // Whole 4 KiB pages inside the range: populating the page that holds
    // its first byte is harmless, but the range stays inside the caller's.
    uintptr_t from = ((uintptr_t)base + 4095) & ~(uintptr_t)4095;
    uintptr_t to = ((uintptr_t)base + bytes) & ~(uintptr_t)4095;
    if (to <= from)
        return;
    pthread_mutex_lock(&prefault.lock);
    if (!prefault.unsupported && prefault.count < PREFAULT_QUEUE) {
        if (!prefault.started) {
            pthread_attr_t attr;
            pthread_t thread;
            int ok = pthread_attr_init(&attr) == 0;
            ok = ok && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                 rt_thread_start(&thread, &attr, prefault_main, NULL) == 0;
            pthread_attr_destroy(&attr);
            if (!ok)
                prefault.unsupported = 1; // no thread: the inserting threads fault as before
            prefault.started = ok;
        }
        if (prefault.started) {
            size_t tail = (prefault.head + prefault.count) % PREFAULT_QUEUE;
            prefault.queue[tail].base = (uint8_t *)from;
            prefault.queue[tail].bytes = (size_t)(to - from);
            prefault.count++;
            pthread_cond_signal(&prefault.wake);
        }
    }
    pthread_mutex_unlock(&prefault.lock);
}

void rt_mapping_prefault_wait(void)
{
    pthread_mutex_lock(&prefault.lock);
    while (prefault.count || prefault.busy || prefault.started)
        pthread_cond_wait(&prefault.wake, &prefault.lock);
    pthread_mutex_unlock(&prefault.lock);
}
#else
void rt_mapping_prefault(uint8_t *base, size_t bytes)
{
    (void)base;
    (void)bytes;
}

void rt_mapping_prefault_wait(void) {}
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

/* Result buffers of at least RT_MAPPED_MIN bytes are mappings (cached,
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
    if (total >= RT_MAPPED_MIN) {
        base = rt_mapping_get(total, &mapped);
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
    if (mapped) {
        rt_mapping_put(base, mapped);
        return;
    }
    free(base);
}


uint8_t *rt_mapping_get(size_t bytes, size_t *got)
{
#ifdef __linux__
    if (bytes > SIZE_MAX - HUGE_PAGE)
        return NULL;
    size_t rounded = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
    uint8_t *base = mapping_take(rounded, got);
    if (!base) {
        base = mapping_new(rounded);
        *got = rounded;
    }
    return base;
#else
    (void)bytes;
    (void)got;
    return NULL;
#endif
}

void rt_mapping_put(uint8_t *base, size_t bytes)
{
#ifdef __linux__
    mapping_give_back(base, bytes);
#else
    (void)base;
    (void)bytes;
#endif
}

size_t rt_mapping_cached_bytes(void)
{
    size_t bytes = 0;
#ifdef __linux__
    pthread_mutex_lock(&mapping_cache.lock);
    bytes = mapping_cache.bytes;
    pthread_mutex_unlock(&mapping_cache.lock);
#endif
    return bytes;
}

void rt_mapping_fork_prepare(void)
{
#ifdef __linux__
    pthread_mutex_lock(&mapping_cache.lock);
    pthread_mutex_lock(&prefault.lock);
#endif
}

void rt_mapping_fork_parent(void)
{
#ifdef __linux__
    pthread_mutex_unlock(&prefault.lock);
    pthread_mutex_unlock(&mapping_cache.lock);
#endif
}

void rt_mapping_fork_child(void)
{
#ifdef __linux__
    pthread_mutex_init(&mapping_cache.lock, NULL);
    // The pre-faulting thread is not in the child: the child starts its
    // own on first use, with an empty queue (pre-faulting is only advice).
    pthread_mutex_init(&prefault.lock, NULL);
    pthread_cond_init(&prefault.wake, NULL);
    prefault.started = prefault.busy = 0;
    prefault.head = prefault.count = 0;
#endif
}
