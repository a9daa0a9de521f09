/*
 * Tree arithmetic shared by the tree, the build engine, proofs and level
 * storage (internal; cffi never reads this file).
 */
#ifndef RT_ARITH_H
#define RT_ARITH_H

#include <stdint.h>

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

static inline uint64_t rt_min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Levels above the leaves: 0 for size <= 1, else the least d with
 * arity**d >= size (docs/spec.md §1). */
static inline unsigned rt_depth_of(uint64_t size, unsigned arity)
{
    unsigned depth = 0;
    for (; size > 1; depth++)
        size = rt_ceil_div(size, arity);
    return depth;
}

#endif /* RT_ARITH_H */
