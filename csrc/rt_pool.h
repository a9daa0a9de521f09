/*
 * The thread pool's internal interface (pool.c, see POOL.md). cffi never
 * reads this file; the public pool calls are in rotortree.h.
 */
#ifndef RT_POOL_H
#define RT_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Work unit callback: process items [begin, end). Must not fail. */
typedef void (*rt_range_fn)(void *ctx, size_t begin, size_t end);

/* Run fn over [0, n) in units of at most `grain` items on the pool; the
 * calling thread works too and returns once every unit has finished. Never
 * fails: if worker threads cannot be started the units run on the caller.
 * Safe to call from many threads at once, and from inside a unit. */
void rt_pool_parallel_for(size_t n, size_t grain, rt_range_fn fn, void *ctx);

/* The tunables in force, read once per job. */
void rt_pool_tunables(uint32_t *num_threads, uint64_t *parallel_threshold,
                      uint64_t *par_chunk_size);

/* The CPUs this process may run on, as counted when the pool started (its
 * default thread count, at most RT_POOL_MAX_THREADS). */
uint32_t rt_pool_cpus(void);

/* pthread_create with every signal blocked in the new thread, so that
 * signals meant for the application (Python's SIGINT handling in
 * particular) land on its own threads and never interrupt the library's
 * background threads. Returns pthread_create's result. */
int rt_thread_start(pthread_t *thread, const pthread_attr_t *attr, void *(*main_fn)(void *),
                    void *arg);

#endif /* RT_POOL_H */
