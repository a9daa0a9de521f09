/*
 * Standalone check of the SHA-256 implementations, meant to run under
 * ASan + UBSan (tests/test_c_sha256.py builds it with the SHA-256, kernel
 * dispatch and pool sources).
 *
 * Known answers are the FIPS 180-2 appendix B examples; every other
 * implementation is then compared with the portable one on random data.
 * Inputs are copied to the very end of their own heap blocks so that reading
 * a byte past a message trips AddressSanitizer, and outputs are followed by
 * guard bytes so a stray write is caught even without it.
 */
#include "rt_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_sha256.h"

#include "harness.h"

static rng data_rng = {0x6A09E667F3BCC908ull};

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng_next(&data_rng) >> 56);
}

/* n bytes at the end of a heap block of exactly n bytes. */
static uint8_t *tight_copy(const uint8_t *src, size_t n)
{
    uint8_t *p = xmalloc(n);
    if (n)
        memcpy(p, src, n);
    return p;
}

static int from_hex(const char *hex, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return 0;
        out[i] = (uint8_t)v;
    }
    return 1;
}

static const int impls[] = {RT_SHA256_PORTABLE, RT_SHA256_SHANI, RT_SHA256_AVX2,
                            RT_SHA256_AVX512};
#define IMPL_COUNT (sizeof impls / sizeof impls[0])

static void test_known_answers(int impl)
{
    static const struct {
        const char *message;
        size_t repeat;
        const char *digest;
    } kat[] = {
        {"", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"a", 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
    };
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        size_t part = strlen(kat[k].message), n = part * kat[k].repeat;
        uint8_t *msg = xmalloc(n);
        for (size_t r = 0; r < kat[k].repeat; r++)
            memcpy(msg + r * part, kat[k].message, part);
        uint8_t want[32], got[32];
        REQUIRE(from_hex(kat[k].digest, want), "bad known answer %zu", k);
        CHECK(rt_sha256_with(impl, msg, n, got) == RT_OK && memcmp(got, want, 32) == 0,
              "%s: known answer %zu", rt_sha256_impl_name(impl), k);
        free(msg);
    }
}

static void test_single(int impl)
{
    uint8_t data[2100];
    fill_random(data, sizeof data);
    for (size_t n = 0; n < sizeof data; n += n < 300 ? 1 : 97) {
        uint8_t *msg = tight_copy(data, n);
        uint8_t want[32], got[32];
        rt_sha256_prefixed(rt_sha256_blocks_portable, NULL, 0, msg, n, want);
        CHECK(rt_sha256_with(impl, msg, n, got) == RT_OK && memcmp(got, want, 32) == 0,
              "%s: single message of %zu bytes", rt_sha256_impl_name(impl), n);
        free(msg);
    }
}

static void test_batches(int impl)
{
    static const size_t counts[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 33};
    for (size_t body_len = 0; body_len <= 1100; body_len += body_len < 140 ? 1 : 61) {
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            size_t count = counts[c];
            uint8_t prefix = (uint8_t)(body_len & 1);
            uint8_t *src = xmalloc(body_len * count);
            fill_random(src, body_len * count);
            uint8_t *bodies = tight_copy(src, body_len * count);
            uint8_t *out = xmalloc(32 * count + 16);
            memset(out + 32 * count, 0xA5, 16);
            CHECK(rt_sha256_prefixed_many(impl, prefix, bodies, body_len, count, out) == RT_OK,
                  "%s: batch status", rt_sha256_impl_name(impl));
            for (size_t i = 0; i < count; i++) {
                uint8_t want[32];
                rt_sha256_prefixed(rt_sha256_blocks_portable, &prefix, 1,
                                   src + i * body_len, body_len, want);
                CHECK(memcmp(out + 32 * i, want, 32) == 0,
                      "%s: message %zu of %zu, body %zu", rt_sha256_impl_name(impl), i,
                      count, body_len);
            }
            for (int g = 0; g < 16; g++)
                CHECK(out[32 * count + g] == 0xA5, "%s: write past %zu hashes",
                      rt_sha256_impl_name(impl), count);
            free(src);
            free(bodies);
            free(out);
        }
    }
}

/* The pool path of the leaf-hash batch, at two threads with every batch
 * split into small units. */
static void test_leaf_hashes_on_pool(void)
{
    struct rt_pool_config config = {2, 1, 3};
    REQUIRE(rt_pool_configure(&config) == RT_OK, "pool configure");
    size_t count = 500, entry_len = 77;
    uint8_t *data = xmalloc(count * entry_len);
    fill_random(data, count * entry_len);
    uint8_t *fixed = xmalloc(32 * count), *variable = xmalloc(32 * count);
    uint64_t *offsets = xmalloc(sizeof(uint64_t) * (count + 1));
    offsets[0] = 0;
    for (size_t i = 0; i < count; i++)
        offsets[i + 1] = offsets[i] + rng_below(&data_rng, 2 * entry_len);
    if (offsets[count] > count * entry_len)
        for (size_t i = 0; i <= count; i++)
            offsets[i] /= 2;
    CHECK(rt_rfc6962_leaf_hashes(data, count * entry_len, NULL, count, entry_len, fixed) == RT_OK,
          "fixed leaf batch");
    CHECK(rt_rfc6962_leaf_hashes(data, count * entry_len, offsets, count, 0, variable) == RT_OK,
          "variable leaf batch");
    static const uint8_t zero = 0;
    for (size_t i = 0; i < count; i++) {
        uint8_t want[32];
        rt_sha256_prefixed(rt_sha256_blocks_portable, &zero, 1, data + i * entry_len,
                           entry_len, want);
        CHECK(memcmp(fixed + 32 * i, want, 32) == 0, "fixed leaf %zu", i);
        rt_sha256_prefixed(rt_sha256_blocks_portable, &zero, 1, data + offsets[i],
                           (size_t)(offsets[i + 1] - offsets[i]), want);
        CHECK(memcmp(variable + 32 * i, want, 32) == 0, "variable leaf %zu", i);
    }
    free(data);
    free(fixed);
    free(variable);
    free(offsets);
    rt_pool_shutdown();
}

int main(void)
{
    printf("impls tested:");
    for (size_t k = 0; k < IMPL_COUNT; k++) {
        if (!rt_sha256_impl_available(impls[k]))
            continue;
        test_known_answers(impls[k]);
        test_single(impls[k]);
        test_batches(impls[k]);
        printf(" %s", rt_sha256_impl_name(impls[k]));
    }
    printf("\n");
    test_leaf_hashes_on_pool();
    return harness_summary("sha256", "");
}
