/*
 * What the C test drivers (test_core.c, test_hash.c, test_pool.c) share:
 * check counters, fatal requirements, allocation that cannot fail, a
 * reproducible random generator, a clock, and the summary line the pytest
 * wrappers parse ("<name> driver: N passed, M failed").
 *
 * Checks may run on many threads, so the counters are atomic; only the
 * first HARNESS_MAX_REPORTS failures are printed.
 */
#ifndef RT_TEST_HARNESS_H
#define RT_TEST_HARNESS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define HARNESS_MAX_REPORTS 40

static atomic_long harness_passed, harness_failed;

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (cond) {                                                              \
            atomic_fetch_add_explicit(&harness_passed, 1, memory_order_relaxed); \
        } else if (atomic_fetch_add(&harness_failed, 1) < HARNESS_MAX_REPORTS) { \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                 \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
        }                                                                        \
    } while (0)

#define REQUIRE(cond, ...)                                                       \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "FATAL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
            exit(2);                                                             \
        }                                                                        \
    } while (0)

static inline long harness_failures(void)
{
    return atomic_load(&harness_failed);
}

/* Prints the summary line (plus `extra`, may be "") and returns the exit
 * status: 0 when nothing failed. */
static inline int harness_summary(const char *driver, const char *extra)
{
    long ok = atomic_load(&harness_passed), bad = atomic_load(&harness_failed);
    printf("%s driver: %ld passed, %ld failed%s\n", driver, ok, bad, extra);
    return bad == 0 ? 0 : 1;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    REQUIRE(p, "driver allocation of %zu bytes failed", n);
    return p;
}

static inline void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    REQUIRE(p, "driver reallocation of %zu bytes failed", n);
    return p;
}

/* splitmix64: reproducible from a seed, independent of the libc's rand(). */
typedef struct rng {
    uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rng_below(rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif /* RT_TEST_HARNESS_H */
