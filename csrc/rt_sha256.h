/*
 * SHA-256 internals (FIPS 180-4) shared by the implementations, the
 * dispatcher and the RFC 6962 tree rule (internal; cffi never reads this
 * file: the public calls are in rotortree.h).
 *
 * Two shapes of work matter to a Merkle tree and are served separately:
 *  - one message of any length (rt_sha256): bound by the latency of one
 *    compression after another, where the SHA extensions win;
 *  - many messages of one length, each behind a one-byte prefix
 *    (rt_sha256_prefixed_many): RFC 6962 parents (0x01 || left || right,
 *    65 bytes) and leaf hashes of fixed-size entries (0x00 || entry). These
 *    are independent, so a multi-lane kernel may hash one per vector lane.
 */
#ifndef RT_SHA256_H
#define RT_SHA256_H

#include "rt_config.h"

#include <stddef.h>
#include <stdint.h>

#include "rotortree.h"

#define RT_SHA256_BLOCK_LEN 64

extern const uint32_t rt_sha256_k[64];
extern const uint32_t rt_sha256_iv[8];

/* Compress `blocks` consecutive 64-byte blocks into `state` (8 words, the
 * spec's H0..H7). */
typedef void (*rt_sha256_blocks_fn)(uint32_t state[8], const uint8_t *data,
                                    size_t blocks);

/* For i in [0, count): out[32*i..] = SHA-256(prefix || body_i), body_i the
 * body_len bytes at bodies + i * body_len. */
typedef void (*rt_sha256_many_fn)(uint8_t prefix, const uint8_t *bodies,
                                  size_t body_len, size_t count, uint8_t *out);

/* SHA-256(prefix || body) into out; prefix_len < 64, and prefix may be NULL
 * when prefix_len is 0. */
typedef void (*rt_sha256_prefixed_fn)(const uint8_t *prefix, size_t prefix_len,
                                      const uint8_t *body, size_t body_len,
                                      uint8_t out[32]);

void rt_sha256_blocks_portable(uint32_t state[8], const uint8_t *data,
                               size_t blocks);
void rt_sha256_prefixed_portable(const uint8_t *prefix, size_t prefix_len,
                                 const uint8_t *body, size_t body_len,
                                 uint8_t out[32]);
#if RT_X86
void rt_sha256_blocks_shani(uint32_t state[8], const uint8_t *data,
                            size_t blocks);
/* Builds the padded message in registers (no block buffer) for prefixes of
 * 0 or 1 byte, the shapes RFC 6962 uses. */
void rt_sha256_prefixed_shani(const uint8_t *prefix, size_t prefix_len,
                              const uint8_t *body, size_t body_len,
                              uint8_t out[32]);
void rt_sha256_many_shani(uint8_t prefix, const uint8_t *bodies,
                          size_t body_len, size_t count, uint8_t *out);
void rt_sha256_many_avx2(uint8_t prefix, const uint8_t *bodies,
                         size_t body_len, size_t count, uint8_t *out);
void rt_sha256_many_avx512(uint8_t prefix, const uint8_t *bodies,
                           size_t body_len, size_t count, uint8_t *out);
#endif
/* Batches on the best single-message path (SHA extensions or portable):
 * what the multi-lane kernels use for their remainders. */
void rt_sha256_many_single(uint8_t prefix, const uint8_t *bodies,
                           size_t body_len, size_t count, uint8_t *out);

/* SHA-256(prefix || body) with the given compression, as
 * rt_sha256_prefixed_fn. Neither part is copied except the block that
 * straddles them and the padded tail. */
void rt_sha256_prefixed(rt_sha256_blocks_fn blocks, const uint8_t *prefix,
                        size_t prefix_len, const uint8_t *body,
                        size_t body_len, uint8_t out[32]);

/* For kernels that hash many one-byte-prefixed messages side by side: the
 * number of blocks of a padded message of message_len bytes, and block
 * `index` of the padded (prefix || body) built in out. */
size_t rt_sha256_padded_blocks(size_t message_len);
void rt_sha256_message_block(uint8_t prefix, const uint8_t *body,
                             size_t body_len, size_t index, uint8_t out[64]);

/* The state words as the big-endian digest. */
void rt_sha256_store_digest(const uint32_t state[8], uint8_t out[32]);

/* The implementation in use for single messages and for batches, chosen
 * from the process-wide kernel (rt_kernel_active). */
rt_sha256_prefixed_fn rt_sha256_active_prefixed(void);
rt_sha256_many_fn rt_sha256_active_many(void);

/* SHA-256 of `len` bytes with the active implementation. */
void rt_sha256(const uint8_t *msg, size_t len, uint8_t out[32]);
/* Many prefixed messages of one length with the active implementation. */
void rt_sha256_many(uint8_t prefix, const uint8_t *bodies, size_t body_len,
                    size_t count, uint8_t *out);
/* RFC 6962 parents: parent i = SHA-256(0x01 || children[64*i .. 64*i+64)),
 * out[32*i..]. Serial; callers split large levels over the pool. */
void rt_sha256_rfc6962_parents(const uint8_t *children, size_t parent_count,
                               uint8_t *out);

/* RFC 6962 entries as rt_rfc6962_leaf_hashes reads them (offsets NULL:
 * entry_len bytes each), with the implementations that hash them. */
typedef struct rt_rfc6962_entries {
    const uint8_t *data;
    const uint64_t *offsets;
    size_t entry_len;
    rt_sha256_prefixed_fn single;
    rt_sha256_many_fn many;
} rt_rfc6962_entries;

/* Check `count` entries (RT_ERR_INVALID_ARGUMENT as rt_rfc6962_leaf_hashes)
 * and set up *entries to hash them with the active implementation. */
int rt_rfc6962_entries_init(rt_rfc6962_entries *entries, const uint8_t *data,
                            size_t data_len, const uint64_t *offsets, size_t count,
                            size_t entry_len);
/* Leaf hashes of entries [begin, end) into out (32 bytes each, the first at
 * out), on the calling thread. */
void rt_rfc6962_entries_hash(const rt_rfc6962_entries *entries, size_t begin, size_t end,
                             uint8_t *out);

#endif /* RT_SHA256_H */
