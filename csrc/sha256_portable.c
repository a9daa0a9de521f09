/*
 * SHA-256 in plain C, written from FIPS 180-4 (sections 4.1.2, 4.2.2, 5.1.1,
 * 5.3.3, 6.2). It is the reference the other implementations are tested
 * against, the fallback on CPUs without SHA extensions, and what
 * ROTORTREE_SIMD=portable runs. Also the padding and digest helpers every
 * implementation shares.
 */
#include "rt_config.h"

#include <string.h>

#include "rt_sha256.h"

/* FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube
 * roots of the first 64 primes. */
const uint32_t rt_sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u,
    0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu,
    0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u,
    0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u,
    0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

/* FIPS 180-4 5.3.3: the fractional parts of the square roots of the first
 * eight primes. */
const uint32_t rt_sha256_iv[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

static inline uint32_t rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static inline uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void store_be32(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

void rt_sha256_blocks_portable(uint32_t state[8], const uint8_t *data,
                               size_t blocks)
{
    for (size_t b = 0; b < blocks; b++, data += RT_SHA256_BLOCK_LEN) {
        /* A 16-word ring instead of the spec's 64-word schedule: each W[t]
         * is needed only for the 16 steps after it is made. */
        uint32_t w[16];
        for (int t = 0; t < 16; t++)
            w[t] = load_be32(data + 4 * t);
        uint32_t a = state[0], bb = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int t = 0; t < 64; t++) {
            uint32_t wt;
            if (t < 16) {
                wt = w[t];
            } else {
                uint32_t w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
                uint32_t s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
                uint32_t s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
                wt = w[t & 15] = w[t & 15] + s0 + w[(t - 7) & 15] + s1;
            }
            uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) +
                          ((e & f) ^ (~e & g)) + rt_sha256_k[t] + wt;
            uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) +
                          ((a & bb) ^ (a & c) ^ (bb & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = bb;
            bb = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += bb;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

void rt_sha256_store_digest(const uint32_t state[8], uint8_t out[32])
{
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

/* Padding (FIPS 180-4 5.1.1): 0x80, zeros, then the length in bits as a
 * 64-bit big-endian integer ending the last block. Nine bytes at least. */
size_t rt_sha256_padded_blocks(size_t message_len)
{
    return message_len / RT_SHA256_BLOCK_LEN +
           (message_len % RT_SHA256_BLOCK_LEN + 9 > RT_SHA256_BLOCK_LEN ? 2 : 1);
}

static void write_bit_length(uint8_t block[64], size_t message_len)
{
    uint64_t bits = (uint64_t)message_len * 8;
    for (int i = 0; i < 8; i++)
        block[63 - i] = (uint8_t)(bits >> (8 * i));
}

void rt_sha256_message_block(uint8_t prefix, const uint8_t *body,
                             size_t body_len, size_t index, uint8_t out[64])
{
    size_t message_len = body_len + 1;
    size_t start = index * RT_SHA256_BLOCK_LEN; /* message offset of out[0] */
    memset(out, 0, RT_SHA256_BLOCK_LEN);
    size_t pos = 0;
    if (start == 0)
        out[pos++] = prefix;
    /* Body byte j sits at message offset j + 1. */
    size_t body_from = start + pos - 1;
    if (body_from < body_len) {
        size_t n = body_len - body_from;
        if (n > RT_SHA256_BLOCK_LEN - pos)
            n = RT_SHA256_BLOCK_LEN - pos;
        memcpy(out + pos, body + body_from, n);
        pos += n;
    }
    if (message_len >= start && message_len - start < RT_SHA256_BLOCK_LEN)
        out[message_len - start] = 0x80;
    if (index + 1 == rt_sha256_padded_blocks(message_len))
        write_bit_length(out, message_len);
}

void rt_sha256_prefixed(rt_sha256_blocks_fn blocks, const uint8_t *prefix,
                        size_t prefix_len, const uint8_t *body,
                        size_t body_len, uint8_t out[32])
{
    size_t message_len = prefix_len + body_len;
    uint32_t state[8];
    memcpy(state, rt_sha256_iv, sizeof state);
    uint8_t block[2 * RT_SHA256_BLOCK_LEN];
    size_t fill = 0;
    if (prefix_len > 0) {
        memcpy(block, prefix, prefix_len);
        fill = prefix_len;
        size_t take = RT_SHA256_BLOCK_LEN - fill;
        if (take > body_len)
            take = body_len;
        memcpy(block + fill, body, take);
        fill += take;
        body += take;
        body_len -= take;
        if (fill == RT_SHA256_BLOCK_LEN && body_len > 0) {
            blocks(state, block, 1);
            fill = 0;
        }
    }
    if (fill == 0) {
        /* Whole body blocks straight from the caller's memory, no copy. */
        size_t whole = body_len / RT_SHA256_BLOCK_LEN;
        if (whole > 0) {
            blocks(state, body, whole);
            body += whole * RT_SHA256_BLOCK_LEN;
            body_len -= whole * RT_SHA256_BLOCK_LEN;
        }
        memcpy(block, body, body_len);
        fill = body_len;
    }
    /* The last `fill` message bytes are in block; pad them. */
    size_t tail_blocks = fill + 9 > RT_SHA256_BLOCK_LEN ? 2 : 1;
    memset(block + fill, 0, tail_blocks * RT_SHA256_BLOCK_LEN - fill);
    block[fill] = 0x80;
    write_bit_length(block + (tail_blocks - 1) * RT_SHA256_BLOCK_LEN, message_len);
    blocks(state, block, tail_blocks);
    rt_sha256_store_digest(state, out);
}

void rt_sha256_prefixed_portable(const uint8_t *prefix, size_t prefix_len,
                                 const uint8_t *body, size_t body_len, uint8_t out[32])
{
    rt_sha256_prefixed(rt_sha256_blocks_portable, prefix, prefix_len, body, body_len, out);
}
