/*
 * Internal declarations shared between the C sources. cffi never reads this
 * file; nothing here is part of the public API.
 */
#ifndef RT_INTERNAL_H
#define RT_INTERNAL_H

#include <stdint.h>
#include <stddef.h>
#include "rotortree.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define RT_X86 1
#else
#define RT_X86 0
#endif

/* ---- tree arithmetic ------------------------------------------------------ */

/* x / d and x % d for a runtime d that is usually a power of two (arities 2,
 * 4, 8, 16 and their 128-node chunks): a shift or mask instead of a 64-bit
 * divide, which costs tens of cycles and sits on the single-insert path
 * dozens of times. */
static inline uint64_t rt_div(uint64_t x, unsigned d)
{
    return (d & (d - 1)) ? x / d : x >> __builtin_ctz(d);
}

static inline uint64_t rt_mod(uint64_t x, unsigned d)
{
    return (d & (d - 1)) ? x % d : x & (d - 1);
}

static inline uint64_t rt_ceil_div(uint64_t x, unsigned d)
{
    return rt_div(x, d) + (rt_mod(x, d) != 0);
}

/* Levels above the leaves: 0 for size <= 1, else the least d with
 * arity**d >= size (docs/spec.md §1). */
static inline unsigned rt_depth_of(uint64_t size, unsigned arity)
{
    unsigned depth = 0;
    for (; size > 1; depth++)
        size = rt_ceil_div(size, arity);
    return depth;
}

/* ---- BLAKE3 ---------------------------------------------------------------
 * Written from the BLAKE3 specification. Only the default hash mode with a
 * 32-byte output is needed: LeanIMT parents and the test/reference API. */

#define RT_BLAKE3_BLOCK_LEN 64
#define RT_BLAKE3_CHUNK_LEN 1024

enum rt_blake3_flags {
    RT_FLAG_CHUNK_START = 1,
    RT_FLAG_CHUNK_END = 2,
    RT_FLAG_PARENT = 4,
    RT_FLAG_ROOT = 8
};

extern const uint32_t rt_blake3_iv[8];

/* One compression, chaining value updated in place (first 8 output words). */
void rt_compress_portable(uint32_t cv[8], const uint8_t block[64],
                          uint8_t block_len, uint64_t counter, uint8_t flags);
#if RT_X86
void rt_compress_sse41(uint32_t cv[8], const uint8_t block[64],
                       uint8_t block_len, uint64_t counter, uint8_t flags);
#endif

/* Full parents: for i in [0, count), out[32*i..] = blake3(0x01 || arity ||
 * children[i*arity*32 .. (i+1)*arity*32]). Children of consecutive parents
 * are contiguous. arity 2..255. Each SIMD kernel hashes one parent per lane,
 * multi-chunk messages (arity >= 32) included; a remainder of two or more
 * parents runs as one lane group padded with copies of the last parent
 * (about the cost of a single parent), a lone remainder on the single path. */
typedef void (*rt_parents_fn)(const uint8_t *children, size_t count,
                              unsigned arity, uint8_t *out);
void rt_hash_parents_portable(const uint8_t *children, size_t count,
                              unsigned arity, uint8_t *out);
#if RT_X86
void rt_hash_parents_sse41(const uint8_t *children, size_t count,
                           unsigned arity, uint8_t *out);
void rt_hash_parents_avx2(const uint8_t *children, size_t count,
                          unsigned arity, uint8_t *out);
#endif

/* BLAKE3 of (prefix || body) without concatenating them; prefix_len < 64.
 * `compress` is the single-block compression to use. Any length. */
typedef void (*rt_compress_fn)(uint32_t cv[8], const uint8_t block[64],
                               uint8_t block_len, uint64_t counter,
                               uint8_t flags);
void rt_blake3_prefixed(rt_compress_fn compress, const uint8_t *prefix,
                        size_t prefix_len, const uint8_t *body, size_t body_len,
                        uint8_t out[32]);

/* Dispatch (hash_dispatch.c): the active kernel's functions. */
rt_parents_fn rt_active_parents_fn(void);
rt_compress_fn rt_active_compress_fn(void);
/* Full parents with the active kernel. */
void rt_hash_parents(const uint8_t *children, size_t count, unsigned arity,
                     uint8_t *out);

/* ---- pool -----------------------------------------------------------------
 * A fixed set of worker threads with work stealing (pool.c, see POOL.md). */

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

/* ---- fork ------------------------------------------------------------------
 * Registers the library's fork handlers once (tree.c): every live tree's
 * lock and the allocator's locks are held across fork(), so a child never
 * inherits a lock that a thread which does not exist there still holds.
 * Called by everything that creates such state before it first locks. */
void rt_fork_handlers_install(void);

#endif /* RT_INTERNAL_H */
