/*
 * The thread pool behind rt_pool_parallel_for: a fixed set of pthread
 * workers that help with "jobs" (one per parallel_for call) published on one
 * shared list. A job's units are handed out by a shared claim counter: every
 * thread in the job, its owner included, takes the next unit with one
 * atomic increment, so the imbalance at the end is at most one unit per
 * thread. There is no per-thread queue and no stealing between threads.
 *
 * POOL.md describes the protocol. Comments here say why things are the way
 * they are; the what is in the code.
 *
 * This file depends on nothing but rt_config.h/rt_pool.h/rotortree.h,
 * so the pool test driver can be built from it alone.
 */
#include "rt_config.h"

#include "rotortree.h"
#include "rt_pool.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// Threads park on a futex on Linux and on a condition variable elsewhere
// (macOS, the BSDs). RT_PORTABLE_PARK=1 forces the condition variable on
// Linux too, so the path other systems take is built and tested here.
#if defined(__linux__) && !(defined(RT_PORTABLE_PARK) && RT_PORTABLE_PARK)
#define RT_FUTEX_PARK 1
#include <linux/futex.h>
#include <sys/syscall.h>
#else
#define RT_FUTEX_PARK 0
#endif

// A level of insert_many is followed within a few microseconds by the next
// one, so an idle worker spins long enough to catch it without a futex round
// trip (tens of microseconds where an idle CPU is halted), but no longer:
// spinning takes the core from the caller's sequential work when cores are
// scarce, and an idle process must not burn CPU.
#ifndef RT_WORKER_SPIN_NS
#define RT_WORKER_SPIN_NS 50000u
#endif
// When a caller has claimed all of its units it waits for at most one unit
// per helper (5-20 us each for hashing), so spinning is almost always the
// right answer; past this bound the units are long and sleeping is cheaper.
#define RT_OWNER_SPIN_NS 200000u
// Units only hash; 2 MiB leaves ample room for nested calls and sanitizers
// while keeping a 1024-thread pool's reserved address space modest.
#define RT_WORKER_STACK (2u << 20)

#define RT_CACHELINE 64


/* ---- small platform helpers --------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause(); // a compiler builtin on GCC and Clang for x86 only
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#if RT_FUTEX_PARK
// Sleeping uses the futex directly: a wait on an atomic word we already
// maintain costs nothing extra on the waking side (no mutex to take), and the
// kernel compares the word atomically with going to sleep, so a wake that
// races with the decision to sleep is never lost.
static void futex_wait(atomic_uint *word, unsigned expected)
{
    syscall(SYS_futex, (void *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *word, int count)
{
    syscall(SYS_futex, (void *)word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}
#else
// Portable stand-in with the same contract (spurious wake-ups allowed). The
// waker changes the word before taking the mutex and the waiter checks it
// under the mutex, so no wake-up is lost. It wakes everyone; fine for a
// fallback. (macOS's os_sync_wait_on_address would match the futex, but
// only from macOS 14.4 and it cannot be compile-checked here.)
static pthread_mutex_t futex_emu_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t futex_emu_cv = PTHREAD_COND_INITIALIZER;

static void futex_wait(atomic_uint *word, unsigned expected)
{
    pthread_mutex_lock(&futex_emu_mu);
    if (atomic_load_explicit(word, memory_order_relaxed) == expected)
        pthread_cond_wait(&futex_emu_cv, &futex_emu_mu);
    pthread_mutex_unlock(&futex_emu_mu);
}

static void futex_wake(atomic_uint *word, int count)
{
    (void)word;
    (void)count;
    pthread_mutex_lock(&futex_emu_mu);
    pthread_cond_broadcast(&futex_emu_cv);
    pthread_mutex_unlock(&futex_emu_mu);
}
#endif

/* ---- jobs and the job list ---------------------------------------------- */

// One parallel_for call. It lives on the caller's stack: the caller does not
// return before every helper has dropped its reference (refs), so no
// allocation is needed per job.
struct rt_job {
    // Written by the owner before publication, read-only afterwards.
    rt_range_fn fn;
    void *ctx;
    size_t n;
    size_t grain;
    size_t nunits;
    // Links, guarded by pool.jobs.mu.
    struct rt_job *qprev, *qnext;

    // Claim counter on a line of its own: it is the only word written once
    // per unit, and it must not drag the fields above out of other caches.
    alignas(RT_CACHELINE) atomic_size_t next;

    // 2 per helper holding the job; bit 0 set while the owner sleeps on it.
    // Kept away from `next` so the owner can spin on it while helpers claim.
    alignas(RT_CACHELINE) atomic_uint refs;
    atomic_int linked;       // still findable on the list (changed under its mu)
};

// Published jobs that may still have unclaimed units, oldest first. A mutex
// is enough: it is taken a handful of times per job (publish, join, unlink),
// never per unit, and a job spans tens to thousands of ~10 us units.
struct rt_job_list {
    pthread_mutex_t mu;
    struct rt_job *head, *tail;
    atomic_uint njobs;       // lets idle workers skip an empty list without locking
};

/* ---- global state ------------------------------------------------------- */

static struct {
    // Configuration. Written under mu, read lock-free once per job.
    _Atomic uint32_t num_threads;
    _Atomic uint64_t threshold;
    _Atomic uint64_t chunk;

    // Serialises configure, worker start/stop and fork.
    pthread_mutex_t mu;
    // Stable while any job is in flight (they only change under mu with
    // `reconfiguring` set and inflight == 0).
    pthread_t *workers;
    _Atomic uint32_t nlive;  // worker threads actually running
    atomic_int started;      // workers[] set up for the current num_threads
    atomic_int stop;

    // Bumped on every publication (and on stop): idle workers spin on it and
    // park on it with the futex, so one word carries "there may be work".
    alignas(RT_CACHELINE) atomic_uint epoch;
    alignas(RT_CACHELINE) atomic_uint sleepers;
    // Wake-up placement (place_worker): on unless ROTORTREE_POOL_PLACEMENT=0,
    // and the CPU of the latest publisher.
    int placement;
    atomic_int waker_cpu;
    // Jobs between publication and completion, against reconfiguration.
    alignas(RT_CACHELINE) atomic_size_t inflight;
    atomic_int reconfiguring;

    alignas(RT_CACHELINE) struct rt_job_list jobs;

    // Statistics: relaxed, and added once per job per thread rather than per
    // unit, so they cost nothing measurable and stay always on.
    alignas(RT_CACHELINE) _Atomic uint64_t st_jobs;
    _Atomic uint64_t st_units;
    _Atomic uint64_t st_helped;
    _Atomic uint64_t st_parks;
    _Atomic uint64_t st_idle_ns;
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .jobs = {.mu = PTHREAD_MUTEX_INITIALIZER},
    .waker_cpu = -1,
};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void);
static void atfork_parent(void);
static void atfork_child(void);

static uint32_t default_num_threads(void)
{
    long n = 0;
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
#endif
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > (long)RT_POOL_MAX_THREADS)
        n = RT_POOL_MAX_THREADS;
    return (uint32_t)n;
}

// "0" (off) or "1" (on), blanks around it allowed; anything else, unset
// included, keeps the default (on), so a typo cannot silently turn it off.
static int placement_setting(const char *env)
{
    if (!env)
        return 1;
    while (*env == ' ' || *env == '\t')
        env++;
    if (*env != '0' && *env != '1')
        return 1;
    int value = *env++ - '0';
    while (*env == ' ' || *env == '\t' || *env == '\n')
        env++;
    return *env ? 1 : value;
}

// The CPUs this process may run on (what the default thread count is).
static uint32_t pool_cpus;

static void pool_init_once(void)
{
    pool_cpus = default_num_threads();
    atomic_store_explicit(&pool.num_threads, pool_cpus, memory_order_relaxed);
    atomic_store_explicit(&pool.threshold, RT_POOL_DEFAULT_THRESHOLD, memory_order_relaxed);
    atomic_store_explicit(&pool.chunk, RT_POOL_DEFAULT_CHUNK, memory_order_relaxed);
    pool.placement = placement_setting(getenv("ROTORTREE_POOL_PLACEMENT"));
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static inline void pool_init(void)
{
    pthread_once(&pool_once, pool_init_once);
}

/* ---- the job list ------------------------------------------------------- */

static void job_list_init(struct rt_job_list *list)
{
    pthread_mutex_init(&list->mu, NULL);
    list->head = list->tail = NULL;
    atomic_store_explicit(&list->njobs, 0, memory_order_relaxed);
}

static void publish(struct rt_job *j)
{
    struct rt_job_list *list = &pool.jobs;
    pthread_mutex_lock(&list->mu);
    j->qnext = NULL;
    j->qprev = list->tail;
    if (list->tail)
        list->tail->qnext = j;
    else
        list->head = j;
    list->tail = j;
    atomic_store_explicit(&j->linked, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&list->njobs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&list->mu);
}

static void unlink_locked(struct rt_job *j)
{
    struct rt_job_list *list = &pool.jobs;
    if (!atomic_load_explicit(&j->linked, memory_order_relaxed))
        return;
    if (j->qprev)
        j->qprev->qnext = j->qnext;
    else
        list->head = j->qnext;
    if (j->qnext)
        j->qnext->qprev = j->qprev;
    else
        list->tail = j->qprev;
    atomic_fetch_sub_explicit(&list->njobs, 1, memory_order_relaxed);
    // Release: whoever reads linked == 0 without the lock (job_unlink) must
    // also see every reference taken under the lock before this point.
    atomic_store_explicit(&j->linked, 0, memory_order_release);
}

// Once this returns, no thread can find the job any more, so every helper
// that will ever touch it is already counted in refs.
static void job_unlink(struct rt_job *j)
{
    if (!atomic_load_explicit(&j->linked, memory_order_acquire))
        return;
    pthread_mutex_lock(&pool.jobs.mu);
    unlink_locked(j);
    pthread_mutex_unlock(&pool.jobs.mu);
}

// Join the oldest published job that still has unclaimed units (a nested
// job is just a younger entry). Drained jobs met on the way are unlinked.
static struct rt_job *find_job(void)
{
    struct rt_job_list *list = &pool.jobs;
    if (atomic_load_explicit(&list->njobs, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&list->mu);
    for (struct rt_job *j = list->head; j;) {
        struct rt_job *following = j->qnext;
        if (atomic_load_explicit(&j->next, memory_order_relaxed) >= j->nunits) {
            unlink_locked(j);
        } else {
            // Taken under the list lock, so the owner (who unlinks under the
            // same lock before waiting) cannot miss this reference.
            atomic_fetch_add_explicit(&j->refs, 2, memory_order_relaxed);
            pthread_mutex_unlock(&list->mu);
            return j;
        }
        j = following;
    }
    pthread_mutex_unlock(&list->mu);
    return NULL;
}

/* ---- running units ------------------------------------------------------ */

// Wake-up placement. A sleeper woken by futex is placed by the kernel, and a
// scheduler that packs wakees onto the waker's CPU while it looks lightly
// loaded puts the helper on the owner's CPU: the job then runs on one core
// while another idles. So a worker about to join checks whether it runs on
// the CPU of the latest publisher and if so moves itself off it; a no-op
// when placement was right (sched_getcpu is a vDSO call).
#ifdef __linux__
static int current_cpu(void)
{
    return sched_getcpu();
}

static void place_worker(void)
{
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu != atomic_load_explicit(&pool.waker_cpu, memory_order_relaxed))
        return;
    cpu_set_t allowed, others;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || !CPU_ISSET(cpu, &allowed) ||
        CPU_COUNT(&allowed) < 2)
        return;
    others = allowed;
    CPU_CLR(cpu, &others);
    // Migration happens before the call returns; restoring the mask right
    // after leaves us where we landed.
    if (sched_setaffinity(0, sizeof others, &others) == 0)
        sched_setaffinity(0, sizeof allowed, &allowed);
}
#else
static int current_cpu(void)
{
    return -1;
}

static void place_worker(void)
{
}
#endif

// Claim and run units until none is left: the shared claim counter.
static size_t run_units(struct rt_job *j)
{
    rt_range_fn fn = j->fn;
    void *ctx = j->ctx;
    const size_t n = j->n, grain = j->grain, nunits = j->nunits;
    size_t done = 0;
    for (;;) {
        // Relaxed is enough: the job's fields were published under the list
        // lock, and completion is ordered through refs, not through next.
        size_t u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= nunits)
            break;
        size_t begin = u * grain;
        size_t end = n - begin > grain ? begin + grain : n;
        fn(ctx, begin, end);
        done++;
    }
    return done;
}

// Run a job joined through find_job, then drop the reference.
static void help(struct rt_job *j)
{
    size_t done = run_units(j);
    job_unlink(j);
    if (done) {
        atomic_fetch_add_explicit(&pool.st_units, done, memory_order_relaxed);
        atomic_fetch_add_explicit(&pool.st_helped, done, memory_order_relaxed);
    }
    // Release: the owner's acquire load of refs then sees all our writes.
    unsigned old = atomic_fetch_sub_explicit(&j->refs, 2, memory_order_release);
    // The job may be gone now; waking on its address is harmless (futex
    // waiters tolerate spurious wake-ups) and reads nothing from it.
    if (old == 3)
        futex_wake(&j->refs, 1);
}

// The owner has claimed every unit; wait for the helpers still running some
// (at most one unit each). It helps nobody meanwhile: other work could hold
// it far longer than its own job needs, or take locks its caller holds.
static void owner_wait(struct rt_job *j)
{
    uint64_t deadline = 0;
    for (unsigned i = 1;; i++) {
        unsigned r = atomic_load_explicit(&j->refs, memory_order_acquire);
        if (r <= 1)
            return;
        if (deadline == 0)
            deadline = now_ns() + RT_OWNER_SPIN_NS;
        if (i % 64 != 0 || now_ns() < deadline) {
            cpu_relax();
            continue;
        }
        if (!(r & 1u)) {
            if (!atomic_compare_exchange_weak_explicit(&j->refs, &r, r | 1u,
                                                       memory_order_acquire,
                                                       memory_order_acquire))
                continue;
            r |= 1u;
        }
        futex_wait(&j->refs, r);
    }
}

/* ---- workers ------------------------------------------------------------ */

static bool spin_for_epoch(unsigned e)
{
    uint64_t deadline = now_ns() + RT_WORKER_SPIN_NS;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&pool.epoch, memory_order_acquire) != e)
            return true;
        cpu_relax();
        if (i % 64 == 0 && now_ns() >= deadline)
            return false;
    }
}

static void *worker_main(void *arg)
{
    (void)arg;
    for (;;) {
        // Read the epoch before looking for work: a job published after the
        // scan then necessarily changes it, so the spin or the futex sees it.
        unsigned e = atomic_load_explicit(&pool.epoch, memory_order_acquire);
        if (atomic_load_explicit(&pool.stop, memory_order_acquire))
            break;
        // Before joining: migrating can wait for a busy CPU's time slice, and
        // a helper holding a job reference meanwhile would keep the owner
        // waiting after every unit is done.
        if (pool.placement && atomic_load_explicit(&pool.jobs.njobs, memory_order_relaxed))
            place_worker();
        struct rt_job *j = find_job();
        if (j) {
            help(j);
            continue;
        }
        if (spin_for_epoch(e))
            continue;
        // seq_cst pairs with the publisher's epoch increment and sleepers
        // load: either it sees us counted or we see its new epoch.
        atomic_fetch_add_explicit(&pool.sleepers, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&pool.epoch, memory_order_seq_cst) == e) {
            uint64_t t0 = now_ns();
            futex_wait(&pool.epoch, e);
            atomic_fetch_add_explicit(&pool.st_idle_ns, now_ns() - t0, memory_order_relaxed);
            atomic_fetch_add_explicit(&pool.st_parks, 1, memory_order_relaxed);
        }
        atomic_fetch_sub_explicit(&pool.sleepers, 1, memory_order_relaxed);
    }
    return NULL;
}

// Called with mu held and either inflight > 0 (from a job, so configure
// cannot run) or from nowhere else. Never fails: with no worker the jobs run
// on their callers.
static void start_workers_locked(void)
{
    uint32_t nt = atomic_load_explicit(&pool.num_threads, memory_order_relaxed);
    uint32_t want = nt > 1 ? nt - 1 : 0;
    uint32_t live = 0;
    pthread_t *ws = NULL;
    if (want)
        ws = calloc(want, sizeof *ws);
    if (ws) {
        pool.workers = ws;

        pthread_attr_t attr;
        bool have_attr = pthread_attr_init(&attr) == 0;
        if (have_attr)
            pthread_attr_setstacksize(&attr, RT_WORKER_STACK);
        if (pool.placement) // new workers start on the creator's CPU too
            atomic_store_explicit(&pool.waker_cpu, current_cpu(), memory_order_relaxed);
        for (; live < want; live++) {
            if (rt_thread_start(&ws[live], have_attr ? &attr : NULL, worker_main, NULL) != 0)
                break;
#ifdef __linux__
            char name[24];
            snprintf(name, sizeof name, "rotortree-%u", (unsigned)live + 1);
            name[15] = '\0'; // the kernel's limit
            pthread_setname_np(ws[live], name);
#endif
        }
        if (have_attr)
            pthread_attr_destroy(&attr);
    }
    atomic_store_explicit(&pool.nlive, live, memory_order_relaxed);
    // A failed start is remembered (no retry storm on every job); the next
    // configure or shutdown clears it.
    atomic_store_explicit(&pool.started, 1, memory_order_release);
}

static bool ensure_started(void)
{
    if (!atomic_load_explicit(&pool.started, memory_order_acquire)) {
        pthread_mutex_lock(&pool.mu);
        if (!atomic_load_explicit(&pool.started, memory_order_relaxed))
            start_workers_locked();
        pthread_mutex_unlock(&pool.mu);
    }
    return atomic_load_explicit(&pool.nlive, memory_order_relaxed) > 0;
}

// With mu held: claim exclusive use of the worker set. Dekker-style with the
// job path (inflight++ then load reconfiguring): with seq_cst on both sides,
// either we see its job or it sees our flag and runs on its own thread.
static bool enter_exclusive_locked(void)
{
    atomic_store_explicit(&pool.reconfiguring, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&pool.inflight, memory_order_seq_cst) != 0) {
        atomic_store_explicit(&pool.reconfiguring, 0, memory_order_release);
        return false;
    }
    return true;
}

static void leave_exclusive_locked(void)
{
    atomic_store_explicit(&pool.reconfiguring, 0, memory_order_release);
}

static void stop_workers_locked(void)
{
    if (!atomic_load_explicit(&pool.started, memory_order_relaxed))
        return;
    uint32_t live = atomic_load_explicit(&pool.nlive, memory_order_relaxed);
    atomic_store_explicit(&pool.stop, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&pool.epoch, 1, memory_order_seq_cst);
    futex_wake(&pool.epoch, INT_MAX);
    for (uint32_t i = 0; i < live; i++)
        pthread_join(pool.workers[i], NULL);
    free(pool.workers);
    pool.workers = NULL;
    atomic_store_explicit(&pool.nlive, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.stop, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.started, 0, memory_order_release);
}

/* ---- fork --------------------------------------------------------------- */

// Holding mu across fork() means the child copies a pool that is not halfway
// through starting or stopping workers.
static void atfork_prepare(void)
{
    pthread_mutex_lock(&pool.mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&pool.mu);
}

// Only the forking thread exists in the child: forget the workers (they are
// re-created on the next parallel job) and any job other threads had in
// flight. Locks that other threads may have held are re-initialised.
static void atfork_child(void)
{
    free(pool.workers);
    pool.workers = NULL;
    atomic_store_explicit(&pool.nlive, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.started, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.stop, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.sleepers, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.inflight, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.reconfiguring, 0, memory_order_relaxed);
    job_list_init(&pool.jobs);
    // The forking thread itself holds mu (prepare), so it may unlock it.
    pthread_mutex_unlock(&pool.mu);
#if !RT_FUTEX_PARK
    pthread_mutex_init(&futex_emu_mu, NULL);
    pthread_cond_init(&futex_emu_cv, NULL);
#endif
}

/* ---- public and internal entry points ----------------------------------- */

void rt_pool_parallel_for(size_t n, size_t grain, rt_range_fn fn, void *ctx)
{
    if (grain == 0)
        grain = 1;
    if (n <= grain) {
        if (n)
            fn(ctx, 0, n);
        return;
    }
    pool_init();
    if (atomic_load_explicit(&pool.num_threads, memory_order_relaxed) <= 1) {
        fn(ctx, 0, n);
        return;
    }
    atomic_fetch_add_explicit(&pool.inflight, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&pool.reconfiguring, memory_order_seq_cst) || !ensure_started()) {
        atomic_fetch_sub_explicit(&pool.inflight, 1, memory_order_release);
        fn(ctx, 0, n);
        return;
    }

    struct rt_job job;
    job.fn = fn;
    job.ctx = ctx;
    job.n = n;
    job.grain = grain;
    job.nunits = (n - 1) / grain + 1;
    atomic_init(&job.next, 0);
    atomic_init(&job.refs, 0);
    atomic_init(&job.linked, 0);
    if (pool.placement)
        atomic_store_explicit(&pool.waker_cpu, current_cpu(), memory_order_relaxed);
    publish(&job);

    // One wake-up call per job, for as many sleepers as could get a unit.
    atomic_fetch_add_explicit(&pool.epoch, 1, memory_order_seq_cst);
    unsigned sleeping = atomic_load_explicit(&pool.sleepers, memory_order_seq_cst);
    if (sleeping) {
        size_t extra = job.nunits - 1;
        futex_wake(&pool.epoch, (int)(extra < sleeping ? extra : sleeping));
    }

    size_t mine = run_units(&job);
    job_unlink(&job);
    owner_wait(&job);

    atomic_fetch_sub_explicit(&pool.inflight, 1, memory_order_release);
    atomic_fetch_add_explicit(&pool.st_jobs, 1, memory_order_relaxed);
    if (mine)
        atomic_fetch_add_explicit(&pool.st_units, mine, memory_order_relaxed);
}

void rt_pool_tunables(uint32_t *num_threads, uint64_t *parallel_threshold,
                      uint64_t *par_chunk_size)
{
    pool_init();
    if (num_threads)
        *num_threads = atomic_load_explicit(&pool.num_threads, memory_order_relaxed);
    if (parallel_threshold)
        *parallel_threshold = atomic_load_explicit(&pool.threshold, memory_order_relaxed);
    if (par_chunk_size)
        *par_chunk_size = atomic_load_explicit(&pool.chunk, memory_order_relaxed);
}

uint32_t rt_pool_cpus(void)
{
    pool_init();
    return pool_cpus;
}

int rt_pool_configure(const struct rt_pool_config *config)
{
    if (!config || config->num_threads < 1 || config->num_threads > RT_POOL_MAX_THREADS ||
        config->parallel_threshold < 1 || config->par_chunk_size < 1)
        return RT_ERR_INVALID_ARGUMENT;
    pool_init();
    int rc = RT_OK;
    pthread_mutex_lock(&pool.mu);
    if (config->num_threads != atomic_load_explicit(&pool.num_threads, memory_order_relaxed)) {
        if (enter_exclusive_locked()) {
            stop_workers_locked();
            atomic_store_explicit(&pool.num_threads, config->num_threads, memory_order_relaxed);
            leave_exclusive_locked();
        } else {
            rc = RT_ERR_BUSY;
        }
    }
    if (rc == RT_OK) {
        atomic_store_explicit(&pool.threshold, config->parallel_threshold, memory_order_relaxed);
        atomic_store_explicit(&pool.chunk, config->par_chunk_size, memory_order_relaxed);
    }
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

void rt_pool_get_config(struct rt_pool_config *out)
{
    pool_init();
    pthread_mutex_lock(&pool.mu);
    out->num_threads = atomic_load_explicit(&pool.num_threads, memory_order_relaxed);
    out->parallel_threshold = atomic_load_explicit(&pool.threshold, memory_order_relaxed);
    out->par_chunk_size = atomic_load_explicit(&pool.chunk, memory_order_relaxed);
    pthread_mutex_unlock(&pool.mu);
}

void rt_pool_get_stats(struct rt_pool_stats *out)
{
    pool_init();
    out->jobs = atomic_load_explicit(&pool.st_jobs, memory_order_relaxed);
    out->units = atomic_load_explicit(&pool.st_units, memory_order_relaxed);
    out->helped = atomic_load_explicit(&pool.st_helped, memory_order_relaxed);
    out->parks = atomic_load_explicit(&pool.st_parks, memory_order_relaxed);
    out->idle_ns = atomic_load_explicit(&pool.st_idle_ns, memory_order_relaxed);
    out->threads_started = atomic_load_explicit(&pool.nlive, memory_order_relaxed);
}

int rt_pool_shutdown(void)
{
    pool_init();
    int rc = RT_OK;
    pthread_mutex_lock(&pool.mu);
    if (enter_exclusive_locked()) {
        stop_workers_locked();
        leave_exclusive_locked();
    } else {
        rc = RT_ERR_BUSY;
    }
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

int rt_thread_start(pthread_t *thread, const pthread_attr_t *attr, void *(*main_fn)(void *),
                    void *arg)
{
    // The new thread inherits the mask in force at creation.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int failed = pthread_create(thread, attr, main_fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return failed;
}
