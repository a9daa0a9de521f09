/*
 * BLAKE3 (default hash mode, 32-byte output) in portable C, written from the
 * BLAKE3 specification. Also the chunk/tree driver shared by every kernel:
 * rt_blake3_prefixed takes the single-block compression as a parameter so the
 * SIMD files only have to provide faster compressions.
 */
#include "rt_config.h"

#include <string.h>

#include "rt_blake3.h"

const uint32_t rt_blake3_iv[8] = {
    0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
    0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u,
};

/* Message word order for each of the 7 rounds: round r+1 reads word
 * schedule[r][permutation[i]] where round r read schedule[r][i], with the
 * spec's permutation {2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8}. Unrolled into a
 * table so no round has to move message words around. */
static const uint8_t message_schedule[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t rotate_right(uint32_t word, unsigned bits)
{
    return (word >> bits) | (word << (32 - bits));
}

static inline uint32_t load_le32(const uint8_t *bytes)
{
    return (uint32_t)bytes[0] | ((uint32_t)bytes[1] << 8) |
           ((uint32_t)bytes[2] << 16) | ((uint32_t)bytes[3] << 24);
}

static inline void store_le32(uint8_t *bytes, uint32_t word)
{
    bytes[0] = (uint8_t)word;
    bytes[1] = (uint8_t)(word >> 8);
    bytes[2] = (uint8_t)(word >> 16);
    bytes[3] = (uint8_t)(word >> 24);
}

static inline void mix(uint32_t state[16], unsigned a, unsigned b, unsigned c,
                       unsigned d, uint32_t x, uint32_t y)
{
    state[a] = state[a] + state[b] + x;
    state[d] = rotate_right(state[d] ^ state[a], 16);
    state[c] = state[c] + state[d];
    state[b] = rotate_right(state[b] ^ state[c], 12);
    state[a] = state[a] + state[b] + y;
    state[d] = rotate_right(state[d] ^ state[a], 8);
    state[c] = state[c] + state[d];
    state[b] = rotate_right(state[b] ^ state[c], 7);
}

void rt_compress_portable(uint32_t cv[8], const uint8_t block[64],
                          uint8_t block_len, uint64_t counter, uint8_t flags)
{
    uint32_t message[16];
    for (unsigned i = 0; i < 16; i++)
        message[i] = load_le32(block + 4 * i);

    uint32_t state[16] = {
        cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
        rt_blake3_iv[0], rt_blake3_iv[1], rt_blake3_iv[2], rt_blake3_iv[3],
        (uint32_t)counter, (uint32_t)(counter >> 32), block_len, flags,
    };

    for (unsigned round = 0; round < 7; round++) {
        const uint8_t *s = message_schedule[round];
        mix(state, 0, 4, 8, 12, message[s[0]], message[s[1]]);
        mix(state, 1, 5, 9, 13, message[s[2]], message[s[3]]);
        mix(state, 2, 6, 10, 14, message[s[4]], message[s[5]]);
        mix(state, 3, 7, 11, 15, message[s[6]], message[s[7]]);
        mix(state, 0, 5, 10, 15, message[s[8]], message[s[9]]);
        mix(state, 1, 6, 11, 12, message[s[10]], message[s[11]]);
        mix(state, 2, 7, 8, 13, message[s[12]], message[s[13]]);
        mix(state, 3, 4, 9, 14, message[s[14]], message[s[15]]);
    }

    for (unsigned i = 0; i < 8; i++)
        cv[i] = state[i] ^ state[i + 8];
}

/* A view of prefix || body as one message, so the driver can hash the
 * LeanIMT header and the children without copying them together. */
struct split_message {
    const uint8_t *prefix;
    size_t prefix_len;
    const uint8_t *body;
    size_t total_len;
};

/* Returns a pointer to the 64 message bytes at `offset`; when the block is
 * not one contiguous full run of the body it is assembled (zero padded) in
 * `scratch`. */
static const uint8_t *message_block(const struct split_message *msg,
                                    size_t offset, uint8_t scratch[64],
                                    uint8_t *block_len)
{
    size_t available = msg->total_len - offset;
    size_t len = available < 64 ? available : 64;
    *block_len = (uint8_t)len;
    if (offset >= msg->prefix_len && len == 64)
        return msg->body + (offset - msg->prefix_len);

    memset(scratch, 0, 64);
    size_t filled = 0;
    if (offset < msg->prefix_len) {
        size_t from_prefix = msg->prefix_len - offset;
        if (from_prefix > len)
            from_prefix = len;
        memcpy(scratch, msg->prefix + offset, from_prefix);
        filled = from_prefix;
    }
    if (filled < len)
        memcpy(scratch + filled,
               msg->body + (offset + filled - msg->prefix_len), len - filled);
    return scratch;
}

/* Compress every block of the chunk starting at `chunk_offset` except the
 * last, which is handed back (bytes in `last_block`, length and flags) so the
 * caller can decide whether it is the root compression. */
static void chunk_until_last_block(rt_compress_fn compress,
                                   const struct split_message *msg,
                                   size_t chunk_offset, uint64_t chunk_index,
                                   uint32_t cv[8], uint8_t last_block[64],
                                   uint8_t *last_len, uint8_t *last_flags)
{
    size_t chunk_len = msg->total_len - chunk_offset;
    if (chunk_len > RT_BLAKE3_CHUNK_LEN)
        chunk_len = RT_BLAKE3_CHUNK_LEN;
    /* The empty message is still one chunk with one (empty) block. */
    size_t blocks = chunk_len == 0 ? 1 : (chunk_len + 63) / 64;

    memcpy(cv, rt_blake3_iv, sizeof rt_blake3_iv);
    uint8_t scratch[64];
    uint8_t block_len;
    uint8_t flags = RT_FLAG_CHUNK_START;
    for (size_t b = 0; b + 1 < blocks; b++) {
        const uint8_t *block =
            message_block(msg, chunk_offset + 64 * b, scratch, &block_len);
        compress(cv, block, block_len, chunk_index, flags);
        flags = 0;
    }
    const uint8_t *block = message_block(
        msg, chunk_offset + 64 * (blocks - 1), scratch, &block_len);
    memcpy(last_block, block, 64);
    *last_len = block_len;
    *last_flags = (uint8_t)(flags | RT_FLAG_CHUNK_END);
}

static void parent_cv(rt_compress_fn compress, const uint32_t left[8],
                      const uint32_t right[8], uint8_t flags, uint32_t out[8])
{
    uint8_t block[64];
    for (unsigned i = 0; i < 8; i++) {
        store_le32(block + 4 * i, left[i]);
        store_le32(block + 32 + 4 * i, right[i]);
    }
    memcpy(out, rt_blake3_iv, sizeof rt_blake3_iv);
    compress(out, block, 64, 0, (uint8_t)(RT_FLAG_PARENT | flags));
}

void rt_blake3_prefixed(rt_compress_fn compress, const uint8_t *prefix,
                        size_t prefix_len, const uint8_t *body, size_t body_len,
                        uint8_t out[32])
{
    const struct split_message msg = {
        .prefix = prefix,
        .prefix_len = prefix_len,
        .body = body,
        .total_len = prefix_len + body_len,
    };
    uint64_t chunks = msg.total_len == 0
                          ? 1
                          : (msg.total_len + RT_BLAKE3_CHUNK_LEN - 1) /
                                RT_BLAKE3_CHUNK_LEN;

    /* Completed left subtrees, one per set bit of the chunk count so far;
     * 64 levels cover any size_t length. Merging eagerly whenever the count
     * has a trailing zero builds exactly the spec's tree, whose left subtree
     * is always the largest power of two of chunks. */
    uint32_t stack[64][8];
    unsigned depth = 0;
    uint32_t cv[8];
    uint8_t last_block[64];
    uint8_t last_len, last_flags;

    for (uint64_t chunk = 0; chunk + 1 < chunks; chunk++) {
        chunk_until_last_block(compress, &msg, chunk * RT_BLAKE3_CHUNK_LEN,
                               chunk, cv, last_block, &last_len, &last_flags);
        compress(cv, last_block, last_len, chunk, last_flags);
        for (uint64_t done = chunk + 1; (done & 1) == 0; done >>= 1) {
            depth--;
            parent_cv(compress, stack[depth], cv, 0, cv);
        }
        memcpy(stack[depth++], cv, sizeof cv);
    }

    chunk_until_last_block(compress, &msg, (chunks - 1) * RT_BLAKE3_CHUNK_LEN,
                           chunks - 1, cv, last_block, &last_len, &last_flags);
    if (depth == 0) {
        compress(cv, last_block, last_len, chunks - 1,
                 (uint8_t)(last_flags | RT_FLAG_ROOT));
    } else {
        compress(cv, last_block, last_len, chunks - 1, last_flags);
        while (depth > 0) {
            depth--;
            parent_cv(compress, stack[depth], cv,
                      depth == 0 ? RT_FLAG_ROOT : 0, cv);
        }
    }

    for (unsigned i = 0; i < 8; i++)
        store_le32(out + 4 * i, cv[i]);
}

void rt_hash_parents_portable(const uint8_t *children, size_t count,
                              unsigned arity, uint8_t *out)
{
    const uint8_t header[2] = {0x01, (uint8_t)arity};
    const size_t stride = (size_t)arity * RT_HASH_LEN;
    for (size_t i = 0; i < count; i++)
        rt_blake3_prefixed(rt_compress_portable, header, sizeof header,
                           children + i * stride, stride, out + i * RT_HASH_LEN);
}

void rt_hash_parents_untagged_portable(const uint8_t *children, size_t count,
                                       unsigned arity, uint8_t *out)
{
    const size_t stride = (size_t)arity * RT_HASH_LEN;
    for (size_t i = 0; i < count; i++)
        rt_blake3_prefixed(rt_compress_portable, NULL, 0, children + i * stride, stride,
                           out + i * RT_HASH_LEN);
}
