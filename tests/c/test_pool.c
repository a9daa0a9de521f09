/*
 * Standalone test driver for csrc/pool.c (run under ThreadSanitizer and
 * ASan/UBSan by tests/test_c_pool.py):
 *
 *   gcc -O1 -g -fsanitize=thread -Icsrc tests/c/test_pool.c csrc/pool.c -pthread
 *
 * Needs nothing from the project but pool.c and the two headers. Prints
 * "pool driver: N passed, M failed" and exits non-zero on any failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "rotortree.h"
#include "rt_pool.h"

#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void set_threads(uint32_t nt)
{
    struct rt_pool_config c;
    rt_pool_get_config(&c);
    c.num_threads = nt;
    int rc = rt_pool_configure(&c);
    if (rc != RT_OK) {
        fprintf(stderr, "configure(%u) failed: %d\n", nt, rc);
        exit(2);
    }
}

static bool cfg_eq(const struct rt_pool_config *a, const struct rt_pool_config *b)
{
    return a->num_threads == b->num_threads && a->parallel_threshold == b->parallel_threshold &&
           a->par_chunk_size == b->par_chunk_size;
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_us(unsigned us)
{
    struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000};
    nanosleep(&ts, NULL);
}

static void busy_us(unsigned us)
{
    uint64_t end = mono_ns() + (uint64_t)us * 1000u;
    while (mono_ns() < end) {
    }
}

/* ---- coverage: every index exactly once, correct unit shapes ------------ */

struct cover {
    size_t n, grain;
    int whole;               // 1: expect one call [0, n); 0: units; -1: either
    unsigned spin_us;        // busy work per unit, to let workers join
    unsigned char *hits;     // plain memory: written by whichever thread
    uint32_t *vals;
    atomic_uint bad;
    atomic_uint calls;
};

static uint32_t val_of(size_t i)
{
    return (uint32_t)(i * 2654435761u) ^ 0x5a5a5a5au;
}

static void cover_fn(void *ctx, size_t b, size_t e)
{
    struct cover *c = ctx;
    atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
    if (b >= e || e > c->n)
        atomic_fetch_add(&c->bad, 1);
    else {
        bool is_whole = b == 0 && e == c->n;
        bool is_unit = b % c->grain == 0 && e == (c->n - b > c->grain ? b + c->grain : c->n);
        if (c->whole == 1 ? !is_whole : c->whole == 0 ? !is_unit : !(is_whole || is_unit))
            atomic_fetch_add(&c->bad, 1);
    }
    if (c->spin_us)
        busy_us(c->spin_us);
    for (size_t i = b; i < e && i < c->n; i++) {
        c->hits[i]++;
        c->vals[i] = val_of(i);
    }
}

// Returns true if every index was hit once, with the right value, in units
// of the expected shape. nt is the configured thread count, or 0 when it may
// change during the call (then either shape is accepted).
static bool run_cover(size_t n, size_t grain, uint32_t nt, unsigned spin_us)
{
    struct cover c;
    c.n = n;
    c.grain = grain ? grain : 1;
    c.whole = (nt == 1 || n <= c.grain) ? 1 : nt == 0 ? -1 : 0;
    c.spin_us = spin_us;
    c.hits = calloc(n + 1, 1);
    c.vals = calloc(n + 1, sizeof *c.vals);
    atomic_init(&c.bad, 0);
    atomic_init(&c.calls, 0);
    rt_pool_parallel_for(n, grain, cover_fn, &c);
    bool ok = atomic_load(&c.bad) == 0;
    for (size_t i = 0; i < n && ok; i++)
        ok = c.hits[i] == 1 && c.vals[i] == val_of(i);
    size_t units = n == 0 ? 0 : c.whole == 1 ? 1 : (n - 1) / c.grain + 1;
    unsigned calls = atomic_load(&c.calls);
    ok = ok && (calls == units || (c.whole == -1 && calls == 1));
    free(c.hits);
    free(c.vals);
    return ok;
}

static void test_coverage(void)
{
    static const size_t ns[] = {0, 1, 2, 3, 63, 64, 65, 127, 1000, 4097, 20000};
    static const size_t grains[] = {0, 1, 2, 7, 64, 1000, (size_t)1 << 20};
    static const uint32_t nts[] = {1, 2, 3, 4, 8};
    for (size_t t = 0; t < sizeof nts / sizeof *nts; t++) {
        set_threads(nts[t]);
        int bad = 0;
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
            for (size_t g = 0; g < sizeof grains / sizeof *grains; g++)
                if (!run_cover(ns[i], grains[g], nts[t], 0)) {
                    bad++;
                    fprintf(stderr, "  coverage n=%zu grain=%zu nt=%u\n", ns[i],
                            grains[g], nts[t]);
                }
        CHECK(bad == 0, "coverage with %u threads: %d bad combinations", nts[t], bad);
        // Slow units so that the workers certainly take part.
        CHECK(run_cover(300, 3, nts[t], 20), "coverage with slow units, %u threads", nts[t]);
    }
}

/* ---- stats and configuration -------------------------------------------- */

static void test_stats(void)
{
    set_threads(2);
    struct rt_pool_stats a, b;
    CHECK(run_cover(1000, 10, 2, 0), "warm-up job");
    rt_pool_get_stats(&a);
    CHECK(a.threads_started == 1, "one worker alive with 2 threads (got %u)", a.threads_started);
    CHECK(run_cover(1000, 10, 2, 0), "stats job");
    rt_pool_get_stats(&b);
    CHECK(b.jobs == a.jobs + 1, "jobs +1 (%llu -> %llu)", (unsigned long long)a.jobs,
          (unsigned long long)b.jobs);
    CHECK(b.units == a.units + 100, "units +100 (%llu -> %llu)", (unsigned long long)a.units,
          (unsigned long long)b.units);
    // Slow units: the worker must take some.
    rt_pool_get_stats(&a);
    CHECK(run_cover(200, 1, 2, 100), "slow job");
    rt_pool_get_stats(&b);
    CHECK(b.helped > a.helped, "helped moved (%llu -> %llu)", (unsigned long long)a.helped,
          (unsigned long long)b.helped);
    // Idle long enough to park, then wake it: parks and idle time move.
    sleep_us(30000);
    CHECK(run_cover(200, 1, 2, 50), "job after idle");
    sleep_us(5000);
    rt_pool_get_stats(&a);
    CHECK(a.parks > b.parks, "parks moved (%llu -> %llu)", (unsigned long long)b.parks,
          (unsigned long long)a.parks);
    CHECK(a.idle_ns > b.idle_ns + 1000000u, "idle_ns moved (%llu -> %llu)",
          (unsigned long long)b.idle_ns, (unsigned long long)a.idle_ns);

    // An idle pool burns no CPU: workers spin for tens of microseconds, then
    // park. Sanitizer runtimes have a background thread of their own, hence
    // the generous bound.
    sleep_us(20000);
    uint64_t c0 = cpu_ns(), t0 = mono_ns();
    sleep_us(200000);
    uint64_t used = cpu_ns() - c0, wall = mono_ns() - t0;
    CHECK(used < wall / 10, "idle pool used %.1f ms CPU in %.1f ms", used / 1e6, wall / 1e6);
}

static void test_config(void)
{
    struct rt_pool_config orig, c, now;
    rt_pool_get_config(&orig);
    CHECK(orig.num_threads >= 1 && orig.parallel_threshold >= 1 && orig.par_chunk_size >= 1,
          "sane config");

    // Invalid configurations change nothing.
    CHECK(rt_pool_configure(NULL) == RT_ERR_INVALID_ARGUMENT, "NULL config rejected");
    struct rt_pool_config bad[] = {
        {0, 10, 10},
        {1025, 10, 10},
        {UINT32_MAX, 10, 10},
        {orig.num_threads == 3 ? 4 : 3, 0, 10},
        {orig.num_threads == 3 ? 4 : 3, 10, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(rt_pool_configure(&bad[i]) == RT_ERR_INVALID_ARGUMENT, "bad config %zu rejected", i);
        rt_pool_get_config(&now);
        CHECK(cfg_eq(&now, &orig), "bad config %zu changed nothing", i);
    }

    // Tunables round-trip and are what jobs read.
    c = orig;
    c.parallel_threshold = 5;
    c.par_chunk_size = 9;
    CHECK(rt_pool_configure(&c) == RT_OK, "set tunables");
    uint32_t nt;
    uint64_t th, ch;
    rt_pool_tunables(&nt, &th, &ch);
    CHECK(nt == orig.num_threads && th == 5 && ch == 9, "tunables read back");
    c.num_threads = 1024;
    CHECK(rt_pool_configure(&c) == RT_OK, "1024 threads accepted (started lazily)");
    rt_pool_get_config(&now);
    CHECK(now.num_threads == 1024, "1024 threads stored");
    CHECK(rt_pool_configure(&orig) == RT_OK, "restore config");

    // Reconfiguring between jobs: the live worker count follows.
    static const uint32_t seq[] = {2, 5, 1, 3, 4, 2};
    for (size_t i = 0; i < sizeof seq / sizeof *seq; i++) {
        set_threads(seq[i]);
        rt_pool_get_config(&now);
        CHECK(now.num_threads == seq[i], "num_threads %u stored", seq[i]);
        CHECK(run_cover(5000, 16, seq[i], 0), "job after reconfigure to %u", seq[i]);
        struct rt_pool_stats s;
        rt_pool_get_stats(&s);
        CHECK(s.threads_started == seq[i] - 1, "%u workers for %u threads (got %u)",
              seq[i] - 1, seq[i], s.threads_started);
    }
    CHECK(rt_pool_configure(&orig) == RT_OK, "restore config");
}

/* ---- BUSY while a job runs ---------------------------------------------- */

struct busy_ctx {
    uint32_t nt;
    atomic_int rc_threads, rc_shutdown, rc_tunable, done;
    atomic_int entered, release;
};

static void busy_inner_fn(void *ctx, size_t b, size_t e)
{
    struct busy_ctx *c = ctx;
    (void)e;
    if (b != 0)
        return;
    struct rt_pool_config cfg;
    rt_pool_get_config(&cfg);
    cfg.num_threads = c->nt + 1;
    atomic_store(&c->rc_threads, rt_pool_configure(&cfg));
    atomic_store(&c->rc_shutdown, rt_pool_shutdown());
    cfg.num_threads = c->nt;
    cfg.parallel_threshold = 77;
    atomic_store(&c->rc_tunable, rt_pool_configure(&cfg));
}

static void blocking_fn(void *ctx, size_t b, size_t e)
{
    struct busy_ctx *c = ctx;
    (void)e;
    if (b == 0) {
        atomic_store(&c->entered, 1);
        while (!atomic_load(&c->release))
            sleep_us(200);
    }
}

static void *blocking_submitter(void *arg)
{
    rt_pool_parallel_for(8, 1, blocking_fn, arg);
    atomic_store(&((struct busy_ctx *)arg)->done, 1);
    return NULL;
}

static void test_busy(void)
{
    struct rt_pool_config orig, now;
    set_threads(2);
    rt_pool_get_config(&orig);

    // From inside a unit of the job itself.
    struct busy_ctx c;
    memset(&c, 0, sizeof c);
    c.nt = 2;
    rt_pool_parallel_for(4, 1, busy_inner_fn, &c);
    CHECK(atomic_load(&c.rc_threads) == RT_ERR_BUSY, "num_threads change refused in a job");
    CHECK(atomic_load(&c.rc_shutdown) == RT_ERR_BUSY, "shutdown refused in a job");
    CHECK(atomic_load(&c.rc_tunable) == RT_OK, "tunable change allowed in a job");
    rt_pool_get_config(&now);
    CHECK(now.num_threads == 2 && now.parallel_threshold == 77, "only the tunable changed");

    // From another thread while a job is blocked.
    memset(&c, 0, sizeof c);
    pthread_t th;
    pthread_create(&th, NULL, blocking_submitter, &c);
    while (!atomic_load(&c.entered))
        sleep_us(100);
    struct rt_pool_config cfg = now;
    cfg.num_threads = 3;
    cfg.par_chunk_size = 5;
    CHECK(rt_pool_configure(&cfg) == RT_ERR_BUSY, "configure refused while a job runs");
    CHECK(rt_pool_shutdown() == RT_ERR_BUSY, "shutdown refused while a job runs");
    struct rt_pool_config after;
    rt_pool_get_config(&after);
    CHECK(cfg_eq(&after, &now), "BUSY changed nothing (chunk included)");
    atomic_store(&c.release, 1);
    pthread_join(th, NULL);
    CHECK(atomic_load(&c.done) == 1, "blocked job finished");
    CHECK(rt_pool_configure(&cfg) == RT_OK, "configure accepted once idle");
    CHECK(rt_pool_configure(&orig) == RT_OK, "restore config");
}

/* ---- shutdown and restart ----------------------------------------------- */

static void test_shutdown(void)
{
    struct rt_pool_stats s;
    set_threads(3);
    CHECK(run_cover(4000, 8, 3, 0), "job before shutdown");
    rt_pool_get_stats(&s);
    CHECK(s.threads_started == 2, "2 workers before shutdown (got %u)", s.threads_started);
    CHECK(rt_pool_shutdown() == RT_OK, "shutdown");
    rt_pool_get_stats(&s);
    CHECK(s.threads_started == 0, "no workers after shutdown (got %u)", s.threads_started);
    CHECK(rt_pool_shutdown() == RT_OK, "second shutdown is a no-op");
    CHECK(run_cover(4000, 8, 3, 0), "job after shutdown");
    rt_pool_get_stats(&s);
    CHECK(s.threads_started == 2, "workers restarted (got %u)", s.threads_started);
}

/* ---- concurrent submitters ---------------------------------------------- */

struct submitter {
    int jobs;
    size_t n, grain;
    uint32_t nt;
    int bad;
};

static void *submit_loop(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < s->jobs; i++)
        if (!run_cover(s->n + (size_t)i % 7, s->grain, s->nt, 0))
            s->bad++;
    return NULL;
}

static void test_concurrent(void)
{
    set_threads(3);
    enum { T = 4 };
    pthread_t th[T];
    struct submitter s[T];
    for (int i = 0; i < T; i++) {
        s[i] = (struct submitter){.jobs = 60, .n = 3000 + 500 * (size_t)i, .grain = 16, .nt = 3};
        pthread_create(&th[i], NULL, submit_loop, &s[i]);
    }
    int bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        bad += s[i].bad;
    }
    CHECK(bad == 0, "%d bad jobs from %d concurrent submitters", bad, T);
}

// Reconfiguration and shutdown racing with jobs: calls either succeed or say
// BUSY, and every job stays correct.
struct race {
    atomic_int stop;
    int bad;
};

static void *race_submitter(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->stop)) {
        if (!run_cover(2000, 16, 0, 0))
            r->bad++;
    }
    return NULL;
}

static void test_reconfigure_race(void)
{
    struct rt_pool_config orig;
    rt_pool_get_config(&orig);
    struct race r;
    atomic_init(&r.stop, 0);
    r.bad = 0;
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, race_submitter, &r);
    int ok = 0, busy = 0, other = 0;
    for (int i = 0; i < 150; i++) {
        struct rt_pool_config cfg = orig;
        cfg.num_threads = 2 + (uint32_t)i % 3;
        int rc = (i % 5 == 4) ? rt_pool_shutdown() : rt_pool_configure(&cfg);
        if (rc == RT_OK)
            ok++;
        else if (rc == RT_ERR_BUSY)
            busy++;
        else
            other++;
        sleep_us(300);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK(other == 0, "reconfigure race: only OK or BUSY (ok=%d busy=%d other=%d)", ok, busy,
          other);
    CHECK(r.bad == 0, "reconfigure race: %d bad jobs", r.bad);
    CHECK(rt_pool_configure(&orig) == RT_OK, "restore config");
}

/* ---- nested calls ------------------------------------------------------- */

enum { NEST_OUTER = 48, NEST_MID = 40, NEST_INNER = 30 };

struct nest {
    unsigned char hits[NEST_OUTER][NEST_MID][NEST_INNER];
    atomic_uint bad;
    unsigned spin_us;
};

struct nest_arg {
    struct nest *nest;
    size_t i, j;
};

static void nest_inner_fn(void *ctx, size_t b, size_t e)
{
    struct nest_arg *a = ctx;
    if (a->nest->spin_us)
        busy_us(a->nest->spin_us);
    for (size_t k = b; k < e; k++)
        a->nest->hits[a->i][a->j][k]++;
}

static void nest_mid_fn(void *ctx, size_t b, size_t e)
{
    struct nest_arg *up = ctx;
    for (size_t j = b; j < e; j++) {
        struct nest_arg a = {up->nest, up->i, j};
        rt_pool_parallel_for(NEST_INNER, 4, nest_inner_fn, &a);
    }
}

static void nest_outer_fn(void *ctx, size_t b, size_t e)
{
    struct nest *n = ctx;
    for (size_t i = b; i < e; i++) {
        struct nest_arg a = {n, i, 0};
        rt_pool_parallel_for(NEST_MID, 3, nest_mid_fn, &a);
    }
}

static void test_nested(void)
{
    static const uint32_t nts[] = {1, 2, 4};
    for (size_t t = 0; t < sizeof nts / sizeof *nts; t++) {
        set_threads(nts[t]);
        struct nest *n = calloc(1, sizeof *n);
        n->spin_us = t == 1 ? 5 : 0;
        struct rt_pool_stats s0, s1;
        rt_pool_get_stats(&s0);
        rt_pool_parallel_for(NEST_OUTER, 2, nest_outer_fn, n);
        rt_pool_get_stats(&s1);
        int bad = 0;
        for (size_t i = 0; i < NEST_OUTER; i++)
            for (size_t j = 0; j < NEST_MID; j++)
                for (size_t k = 0; k < NEST_INNER; k++)
                    bad += n->hits[i][j][k] != 1;
        CHECK(bad == 0, "nested 3 levels with %u threads: %d bad cells", nts[t], bad);
        if (nts[t] > 1)
            CHECK(s1.jobs - s0.jobs == 1 + NEST_OUTER + NEST_OUTER * NEST_MID,
                  "nested job count (%llu)", (unsigned long long)(s1.jobs - s0.jobs));
        free(n);
    }
}

/* ---- fork ---------------------------------------------------------------- */

static void test_fork(void)
{
    set_threads(3);
    CHECK(run_cover(4000, 8, 3, 0), "job before fork");
#if UNDER_TSAN
    // TSan cannot follow a fork taken while other threads live: in the child
    // glibc reuses the dead workers' stacks for new threads and TSan aborts
    // with "dup thread with used id". So under TSan the workers are stopped
    // first (the child still has to start its own); the ASan and plain runs
    // fork with live workers, which is the case the atfork handlers are for.
    CHECK(rt_pool_shutdown() == RT_OK, "shutdown before fork (TSan)");
#endif
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        // Child: the workers did not come along; the pool must start fresh.
        struct rt_pool_stats s;
        rt_pool_get_stats(&s);
        int rc = s.threads_started == 0 ? 0 : 3;
        if (!run_cover(4000, 8, 3, 0) || !run_cover(300, 3, 3, 20))
            rc = 4;
        rt_pool_get_stats(&s);
        if (rc == 0 && s.threads_started != 2)
            rc = 5;
        if (rc == 0 && rt_pool_shutdown() != RT_OK)
            rc = 6;
        _exit(rc);
    }
    CHECK(pid > 0, "fork");
    if (pid > 0) {
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child ran a parallel job and exited 0 (status %d)", status);
    }
    CHECK(run_cover(4000, 8, 3, 0), "parent job after fork");
}

/* ---- many tiny jobs around the park/wake boundary ------------------------ */

static void test_wake_stress(void)
{
    set_threads(2);
    int bad = 0;
    for (int i = 0; i < 3000; i++) {
        if (!run_cover(2 + (size_t)i % 5, 1, 2, 0))
            bad++;
        if (i % 50 == 49)
            sleep_us((unsigned)(i % 7) * 20); // 0..120 us: around the spin limit
    }
    CHECK(bad == 0, "wake stress: %d bad jobs", bad);
}

int main(void)
{
    alarm(240); // a deadlock fails the run instead of hanging it
    test_config();
    test_coverage();
    test_stats();
    test_busy();
    test_shutdown();
    test_concurrent();
    test_nested();
    test_wake_stress();
    test_reconfigure_race();
    test_fork();
    CHECK(rt_pool_shutdown() == RT_OK, "final shutdown");
    return harness_summary("pool", "");
}
