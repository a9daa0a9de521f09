/*
 * Multi-lane SHA-256 driver shared by sha256_avx2.c and sha256_avx512.c:
 * LANES same-length messages (prefix || body) at once, message l in 32-bit
 * lane l of each state and schedule vector (FIPS 180-4 6.2.2 done once per
 * lane). Included once per file after it defines:
 *
 *   VEC, LANES, LANES_TARGET (function attribute), LANES_ENTRY (name of the
 *   rt_sha256_many_fn to define), and inline functions
 *   v_set1(u32), v_add(a, b), v_xor3(a, b, c), v_ch(e, f, g), v_maj(a, b, c),
 *   v_ror(x, n), v_shr(x, n), v_and(a, b), v_or(a, b), v_shl(x, n),
 *   v_bswap(x), v_gather(base, index_vector), v_lane_offsets(step) (lane l
 *   holds l * step), v_store(u32 *dst, x).
 * v_shl and v_shr take a shift count that need not be a constant.
 *
 * Message words are gathered straight from the bodies: all lanes have the
 * same length, so which bytes of a word come from the body, the prefix or
 * the padding is the same in every lane, and only the body bytes differ.
 * Each word is one gather of a 4-byte window inside the body, shifted into
 * place, masked, and ORed with the word's constant bytes (prefix, 0x80,
 * length). Bodies shorter than 4 bytes, or too long for 32-bit gather
 * offsets, take the single-message path.
 */

/* How to make word j of block b of every lane. */
struct word_plan {
    int32_t window;   /* body offset of the gathered 4 bytes, or -1: none */
    int8_t shift;     /* > 0: left by 8*shift bits; < 0: right */
    uint32_t mask;    /* bits of the word that are body bytes */
    uint32_t constant;/* prefix, padding and length bytes */
};

static void plan_word(uint8_t prefix, size_t body_len, size_t nblocks,
                      size_t b, unsigned j, struct word_plan *plan)
{
    size_t m = 64 * b + 4 * j; /* message offset of the word's first byte */
    size_t message_len = body_len + 1;
    uint64_t bits = (uint64_t)message_len * 8;
    size_t length_at = 64 * nblocks - 8;
    uint32_t constant = 0, mask = 0;
    size_t first_body = SIZE_MAX, last_body = 0;
    for (unsigned i = 0; i < 4; i++) {
        size_t pos = m + i;
        unsigned shift = 24 - 8 * i;
        if (pos == 0) {
            constant |= (uint32_t)prefix << shift;
        } else if (pos <= body_len) {
            mask |= 0xFFu << shift;
            if (first_body == SIZE_MAX)
                first_body = pos - 1;
            last_body = pos - 1;
        } else if (pos == message_len) {
            constant |= 0x80u << shift;
        } else if (pos >= length_at) {
            constant |= (uint32_t)(uint8_t)(bits >> (8 * (63 - pos % 64))) << shift;
        }
    }
    plan->constant = constant;
    plan->mask = mask;
    plan->window = -1;
    plan->shift = 0;
    if (mask == 0)
        return;
    /* A 4-byte window inside the body holding bytes first..last; after the
     * byte swap body byte k of the window sits at bits 24 - 8*(k - window),
     * and must move to bits 24 - 8*(k + 1 - m). */
    size_t window = first_body;
    if (window + 4 > body_len)
        window = body_len - 4;
    (void)last_body;
    plan->window = (int32_t)window;
    plan->shift = (int8_t)((int)m - 1 - (int)window); /* bytes to the left */
}

/* One compression of every lane's state s with schedule words w[0..15]
 * (w is overwritten by the schedule). */
LANES_TARGET static inline __attribute__((always_inline)) void lanes_compress(VEC s[8],
                                                                             VEC w[16])
{
    VEC a = s[0], bb = s[1], c = s[2], d = s[3];
    VEC e = s[4], f = s[5], g = s[6], h = s[7];
#define SIGMA0(x) v_xor3(v_ror(x, 7), v_ror(x, 18), v_shr(x, 3))
#define SIGMA1(x) v_xor3(v_ror(x, 17), v_ror(x, 19), v_shr(x, 10))
#define ROUND(a, b, c, d, e, f, g, h, t)                                         \
    do {                                                                       \
        VEC wt;                                                                \
        if ((t) < 16) {                                                        \
            wt = w[(t)];                                                       \
        } else {                                                               \
            wt = v_add(v_add(w[(t) & 15], SIGMA0(w[((t) - 15) & 15])),         \
                       v_add(w[((t) - 7) & 15], SIGMA1(w[((t) - 2) & 15])));   \
            w[(t) & 15] = wt;                                                  \
        }                                                                      \
        VEC t1 = v_add(v_add(h, v_xor3(v_ror(e, 6), v_ror(e, 11), v_ror(e, 25))), \
                       v_add(v_ch(e, f, g), v_add(wt, v_set1(rt_sha256_k[(t)])))); \
        d = v_add(d, t1);                                                      \
        h = v_add(t1, v_add(v_xor3(v_ror(a, 2), v_ror(a, 13), v_ror(a, 22)),   \
                            v_maj(a, b, c)));                                  \
    } while (0)
    /* Eight rounds rename the registers instead of moving them. */
#pragma GCC unroll 8
    for (int t = 0; t < 64; t += 8) {
        ROUND(a, bb, c, d, e, f, g, h, t);
        ROUND(h, a, bb, c, d, e, f, g, t + 1);
        ROUND(g, h, a, bb, c, d, e, f, t + 2);
        ROUND(f, g, h, a, bb, c, d, e, t + 3);
        ROUND(e, f, g, h, a, bb, c, d, t + 4);
        ROUND(d, e, f, g, h, a, bb, c, t + 5);
        ROUND(c, d, e, f, g, h, a, bb, t + 6);
        ROUND(bb, c, d, e, f, g, h, a, t + 7);
    }
#undef ROUND
#undef SIGMA0
#undef SIGMA1
    s[0] = v_add(s[0], a);
    s[1] = v_add(s[1], bb);
    s[2] = v_add(s[2], c);
    s[3] = v_add(s[3], d);
    s[4] = v_add(s[4], e);
    s[5] = v_add(s[5], f);
    s[6] = v_add(s[6], g);
    s[7] = v_add(s[7], h);
}

/* The digests, byte-swapped here, a vector for all lanes at once, so that
 * writing them out is plain word copies: lane l's digest to out + 32 * l. */
LANES_TARGET static inline __attribute__((always_inline)) void lanes_store(const VEC s[8],
                                                                          uint8_t *out)
{
    uint32_t digest[8][LANES] __attribute__((aligned(64)));
    for (int i = 0; i < 8; i++)
        v_store(digest[i], v_bswap(s[i]));
    for (int l = 0; l < LANES; l++)
        for (int k = 0; k < 8; k++)
            memcpy(out + 32 * l + 4 * k, &digest[k][l], 4);
}

LANES_TARGET static void lanes_group(const struct word_plan *plans, size_t nblocks,
                                     const uint8_t *bodies, size_t body_len, uint8_t *out)
{
    VEC lane_base = v_lane_offsets((uint32_t)body_len);
    VEC s[8];
    for (int i = 0; i < 8; i++)
        s[i] = v_set1(rt_sha256_iv[i]);
    for (size_t b = 0; b < nblocks; b++) {
        const struct word_plan *plan = plans + 16 * b;
        VEC w[16];
        for (int j = 0; j < 16; j++) {
            VEC word = v_set1(plan[j].constant);
            if (plan[j].window >= 0) {
                VEC x = v_bswap(v_gather(bodies, v_add(lane_base, v_set1((uint32_t)plan[j].window))));
                int sh = plan[j].shift;
                if (sh > 0)
                    x = v_shl(x, 8 * sh);
                else if (sh < 0)
                    x = v_shr(x, -8 * sh);
                word = v_or(word, v_and(x, v_set1(plan[j].mask)));
            }
            w[j] = word;
        }
        lanes_compress(s, w);
    }
    lanes_store(s, out);
}

/* Plans for up to this many blocks live on the stack; longer bodies (over
 * 1 KiB) gain nothing from lanes over the single path, which streams. */
#define LANES_MAX_BLOCKS 16

#ifdef LANES_TRANSPOSED
/* Defined by the including file after this one: hashes LANES messages whose
 * bodies it can load whole and returns 1, or returns 0 for other shapes. */
LANES_TARGET static int lanes_transposed(uint8_t prefix, const uint8_t *bodies,
                                         size_t body_len, uint8_t *out);
#endif

LANES_TARGET void LANES_ENTRY(uint8_t prefix, const uint8_t *bodies,
                              size_t body_len, size_t count, uint8_t *out)
{
    size_t nblocks = rt_sha256_padded_blocks(body_len + 1);
    size_t full = count - count % LANES;
    if (body_len < 4 || nblocks > LANES_MAX_BLOCKS || count < LANES)
        full = 0;
    if (full > 0) {
        struct word_plan plans[16 * LANES_MAX_BLOCKS];
        for (size_t b = 0; b < nblocks; b++)
            for (unsigned j = 0; j < 16; j++)
                plan_word(prefix, body_len, nblocks, b, j, &plans[16 * b + j]);
        for (size_t i = 0; i < full; i += LANES) {
#ifdef LANES_TRANSPOSED
            // Bodies of 8 or 16 whole words: contiguous loads and an
            // in-register transpose instead of a gather per word.
            if (lanes_transposed(prefix, bodies + i * body_len, body_len,
                                 out + i * RT_HASH_LEN))
                continue;
#endif
            lanes_group(plans, nblocks, bodies + i * body_len, body_len,
                        out + i * RT_HASH_LEN);
        }
    }
    /* The remainder, under one group's cost, on the single path. */
    if (full < count)
        rt_sha256_many_single(prefix, bodies + full * body_len, body_len, count - full,
                   out + full * RT_HASH_LEN);
}
