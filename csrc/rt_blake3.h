/*
 * BLAKE3 internals shared by the kernels, the dispatcher and their callers
 * (internal; cffi never reads this file). Written from the BLAKE3
 * specification. Only the default hash mode with a 32-byte output is needed:
 * LeanIMT parents and the test/reference API.
 */
#ifndef RT_BLAKE3_H
#define RT_BLAKE3_H

#include "rt_config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rotortree.h"

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
void rt_compress_avx512(uint32_t cv[8], const uint8_t block[64],
                        uint8_t block_len, uint64_t counter, uint8_t flags);
#endif

/* Full parents: for i in [0, count), out[32*i..] = blake3(0x01 || arity ||
 * children[i*arity*32 .. (i+1)*arity*32]). Children of consecutive parents
 * are contiguous. arity 2..255. Each SIMD kernel hashes one parent per lane
 * (blake3_lanes.h), multi-chunk messages (arity >= 32) included; a remainder
 * of two or more parents runs as one lane group padded with copies of the
 * last parent (about the cost of a single parent), a lone remainder on the
 * single path. */
typedef void (*rt_parents_fn)(const uint8_t *children, size_t count,
                              unsigned arity, uint8_t *out);
void rt_hash_parents_portable(const uint8_t *children, size_t count,
                              unsigned arity, uint8_t *out);
#if RT_X86
void rt_hash_parents_sse41(const uint8_t *children, size_t count,
                           unsigned arity, uint8_t *out);
void rt_hash_parents_avx2(const uint8_t *children, size_t count,
                          unsigned arity, uint8_t *out);
void rt_hash_parents_avx512(const uint8_t *children, size_t count,
                            unsigned arity, uint8_t *out);
#endif
#if RT_NEON
void rt_hash_parents_neon(const uint8_t *children, size_t count,
                          unsigned arity, uint8_t *out);
#endif

/* The same without the header: out = blake3(children of the parent), the
 * leanimt rule's parent (crate 0.16 on). */
void rt_hash_parents_untagged_portable(const uint8_t *children, size_t count,
                                       unsigned arity, uint8_t *out);
#if RT_X86
void rt_hash_parents_untagged_sse41(const uint8_t *children, size_t count,
                                    unsigned arity, uint8_t *out);
void rt_hash_parents_untagged_avx2(const uint8_t *children, size_t count,
                                   unsigned arity, uint8_t *out);
void rt_hash_parents_untagged_avx512(const uint8_t *children, size_t count,
                                     unsigned arity, uint8_t *out);
#endif
#if RT_NEON
void rt_hash_parents_untagged_neon(const uint8_t *children, size_t count,
                                   unsigned arity, uint8_t *out);
#endif

/* The parents kernels that also copy the children, for a tree's new leaves:
 * as rt_parents_fn, and the arity * 32 bytes of children of parent i are
 * copied to stored[i] (copies not overlapping children, out or each other).
 * Every child byte is loaded once and stored from the register it was
 * hashed from, so the stored children hash to the parents written even
 * while the caller changes `children`. Only the kernels that can do this
 * without a copy have one. */
typedef void (*rt_parents_storing_fn)(const uint8_t *children, size_t count,
                                      unsigned arity, uint8_t *out, uint8_t *const *stored);
/* Copies n bytes of caller memory into `copy`, a private buffer that is
 * then both hashed and stored: the caller's bytes are read once. Without
 * the barrier the optimiser may serve a later copy out of `copy` from the
 * caller's memory instead (clang's memcpy forwarding turns memcpy(copy,
 * src); memcpy(dst, copy) into two copies from src), a second read that
 * can see different bytes. The empty asm may read and change `copy`, so
 * its contents are only known from memory. */
static inline void rt_copy_once(void *copy, const void *caller, size_t n)
{
    memcpy(copy, caller, n);
#if defined(__GNUC__)
    __asm__ volatile("" : : "r"(copy) : "memory");
#endif
}

#if RT_X86
void rt_hash_parents_storing_avx2(const uint8_t *children, size_t count, unsigned arity,
                                  uint8_t *out, uint8_t *const *stored);
void rt_hash_parents_storing_avx512(const uint8_t *children, size_t count, unsigned arity,
                                    uint8_t *out, uint8_t *const *stored);
void rt_hash_parents_untagged_storing_avx2(const uint8_t *children, size_t count,
                                           unsigned arity, uint8_t *out,
                                           uint8_t *const *stored);
void rt_hash_parents_untagged_storing_avx512(const uint8_t *children, size_t count,
                                             unsigned arity, uint8_t *out,
                                             uint8_t *const *stored);
#endif

/* BLAKE3 of (prefix || body) without concatenating them; prefix_len < 64.
 * `compress` is the single-block compression to use. Any length. */
typedef void (*rt_compress_fn)(uint32_t cv[8], const uint8_t block[64],
                               uint8_t block_len, uint64_t counter,
                               uint8_t flags);
void rt_blake3_prefixed(rt_compress_fn compress, const uint8_t *prefix,
                        size_t prefix_len, const uint8_t *body, size_t body_len,
                        uint8_t out[32]);

/* Two independent compressions, A and B, each as rt_compress_fn with
 * counter 0, in about the time of one (blake3_rows2.h). */
typedef void (*rt_compress2_fn)(uint32_t cv_a[8], const uint8_t block_a[64], uint8_t len_a,
                                uint8_t flags_a, uint32_t cv_b[8], const uint8_t block_b[64],
                                uint8_t len_b, uint8_t flags_b);
#if RT_X86
void rt_compress2_avx2(uint32_t cv_a[8], const uint8_t block_a[64], uint8_t len_a,
                       uint8_t flags_a, uint32_t cv_b[8], const uint8_t block_b[64],
                       uint8_t len_b, uint8_t flags_b);
void rt_compress2_avx512(uint32_t cv_a[8], const uint8_t block_a[64], uint8_t len_a,
                         uint8_t flags_a, uint32_t cv_b[8], const uint8_t block_b[64],
                         uint8_t len_b, uint8_t flags_b);
#endif

/* Dispatch (hash_dispatch.c): the active kernel's functions. */
rt_parents_fn rt_active_parents_fn(void);
rt_parents_fn rt_active_untagged_parents_fn(void);
rt_compress_fn rt_active_compress_fn(void);
/* The active kernel's paired compression, or NULL where it has none (two
 * rt_active_compress_fn calls then do the same). */
rt_compress2_fn rt_active_compress2_fn(void);
/* The active kernel's storing entry for tagged or untagged parents, or NULL
 * where the kernel has none. */
rt_parents_storing_fn rt_active_storing_parents_fn(int tagged);
/* Full parents with the active kernel. */
void rt_hash_parents(const uint8_t *children, size_t count, unsigned arity,
                     uint8_t *out);

#endif /* RT_BLAKE3_H */
