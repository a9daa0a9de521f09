/*
 * Standalone check of the BLAKE3 kernels, meant to run under ASan + UBSan:
 *
 *   gcc -O1 -g -fsanitize=address,undefined -Icsrc tests/c/test_hash.c \
 *       csrc/blake3_portable.c csrc/blake3_sse41.c csrc/blake3_avx2.c \
 *       csrc/blake3_avx512.c csrc/blake3_neon.c \
 *       csrc/hash_dispatch.c
 *
 * Known answers come from the `blake3` PyPI package (the reference
 * implementation); every SIMD kernel is then compared with the portable
 * single-message path on random data. Inputs are copied to the very end of
 * their own heap blocks, at odd offsets, so that reading one byte past the
 * children trips AddressSanitizer, and outputs go to odd offsets between
 * guard bytes so a stray write is caught even without it.
 */
#include "rt_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_blake3.h"

#include "harness.h"

/* The known-answer and kernel comparisons report what and where. */
#define check(ok, what, a, b) CHECK(ok, "%s (%u, %u)", what, (unsigned)(a), (unsigned)(b))

static rng data_rng = {0x9E3779B97F4A7C15ull};

static uint64_t next_random(void)
{
    return rng_next(&data_rng);
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(next_random() >> 56);
}

static void hex_to_bytes(const char *hex, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        unsigned byte;
        sscanf(hex + 2 * i, "%2x", &byte);
        out[i] = (uint8_t)byte;
    }
}

/* A copy of `len` bytes placed at the end of a fresh heap block, starting
 * at an odd offset, so any read past the end is a heap overflow. */
static uint8_t *copy_to_block_end(const uint8_t *src, size_t len,
                                  size_t misalign, uint8_t **block)
{
    *block = malloc(misalign + len);
    if (*block == NULL) {
        perror("malloc");
        exit(2);
    }
    uint8_t *start = *block + misalign;
    if (len > 0)
        memcpy(start, src, len);
    return start;
}

/* ---- known answers -------------------------------------------------------- */

/* blake3(bytes(i % 251 for i in range(n))).hexdigest() */
static const struct {
    size_t len;
    const char *hex;
} blake3_answers[] = {
    {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
    {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
    {63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"},
    {64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"},
    {65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"},
    {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
    {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
    {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
    {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
    {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
    {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
    {5000, "ee78d92070de3df1c57c37002abf0a6b1a6589acdeef4d8ffac7cf3d9e8f2836"},
    {8162, "c52da94f9746426d00a64fd55227de1056eedb69de2593516bcecfd37ff5e2db"},
    {9000, "e9daa1ff8a19d7618f9721c83a17cffd6976a323aa116d030aac239c98b6a046"},
};

/* blake3(bytes([1, arity]) + bytes((7*i + 3) % 256 for i in range(32*arity))) */
static const struct {
    unsigned arity;
    const char *hex;
} parent_answers[] = {
    {2, "74744429e5ee980c00d0e235d08831b4077c572904f4c87257d0f7c10007229b"},
    {3, "c7811cb91f95a30fca08b6c1eef036719411e41a55c1ff7ed9c60b9127fa1125"},
    {16, "e3eff789ce3d64d5325d9b7fb0ee410af6034f8ecc96cf822dcc3318d724244f"},
    {31, "6b4a1499767176a711a771ae3bb57dfaf754cb822693c3829e85fff13609bb18"},
    {32, "5dc782b3894add7af05f22bcbaa4c0eb98e1a46f70655beb87b086887cd8ac76"},
    {255, "22ab2af08903cdf61ac2399d7a25afccac05cee8f16933da53fb7652dac7df92"},
};

static void test_known_answers(int kernel)
{
    static uint8_t pattern[9000];
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (uint8_t)(i % 251);

    for (size_t t = 0; t < sizeof blake3_answers / sizeof *blake3_answers; t++) {
        uint8_t expected[32], got[32], *block;
        size_t len = blake3_answers[t].len;
        hex_to_bytes(blake3_answers[t].hex, expected);
        const uint8_t *msg = copy_to_block_end(pattern, len, 3, &block);
        rt_blake3(msg, len, got);
        check(memcmp(got, expected, 32) == 0, "rt_blake3 known answer",
              (unsigned)kernel, (unsigned)len);
        free(block);
    }

    static uint8_t children[255 * 32];
    for (size_t i = 0; i < sizeof children; i++)
        children[i] = (uint8_t)((7 * i + 3) % 256);
    for (size_t t = 0; t < sizeof parent_answers / sizeof *parent_answers; t++) {
        uint8_t expected[32], got[32], *block;
        unsigned arity = parent_answers[t].arity;
        hex_to_bytes(parent_answers[t].hex, expected);
        const uint8_t *input =
            copy_to_block_end(children, (size_t)arity * 32, 5, &block);
        check(rt_hash_parent(input, arity, got) == RT_OK &&
                  memcmp(got, expected, 32) == 0,
              "rt_hash_parent known answer", (unsigned)kernel, arity);
        free(block);
    }
}

/* ---- kernels against the portable single-message path -------------------- */

struct kernel_under_test {
    int kernel;
    rt_parents_fn parents;
    rt_parents_fn untagged; /* the leanimt rule's parents: no header */
};

/* The parent as one plain BLAKE3 message: with the 0x01 || arity header
 * (tagged) or the children alone. */
static void expected_parent(const uint8_t *children, unsigned arity, int tagged,
                            uint8_t out[32])
{
    uint8_t message[2 + 255 * 32];
    size_t header = tagged ? 2 : 0;
    message[0] = 0x01;
    message[1] = (uint8_t)arity;
    memcpy(message + header, children, (size_t)arity * 32);
    rt_blake3_prefixed(rt_compress_portable, NULL, 0, message,
                       header + (size_t)arity * 32, out);
}

/* Counts up to two 16-lane groups and a lone parent: every remainder after a
 * full group of every kernel (padded group, narrower kernel, single path). */
enum { MAX_COUNT = 33, GUARD = 16, GUARD_BYTE = 0xA5 };

static void test_parents(const struct kernel_under_test *kernels,
                         size_t kernel_count, int tagged)
{
    static uint8_t children[MAX_COUNT * 255 * 32];
    static uint8_t expected[MAX_COUNT * 32];
    uint8_t output[GUARD + MAX_COUNT * 32 + 31 + GUARD];

    for (unsigned arity = RT_MIN_ARITY; arity <= RT_MAX_ARITY; arity++) {
        /* Untagged messages are whole 32-byte runs: their block shapes
         * repeat with arity's parity and chunk count, so a sample of arities
         * (each parity, one to eight chunks, the ends) covers them at a
         * fraction of the sanitizer run's time. */
        if (!tagged && arity > 40 && arity % 31 > 2 && arity < 250)
            continue;
        for (size_t count = 0; count <= MAX_COUNT; count++) {
            /* The lane groups, padding and remainders are the tagged form's
             * code: untagged runs only need each of them once per arity. */
            if (!tagged && count != 1 && count != 2 && count != 9 && count != 16 &&
                count != 17 && count != MAX_COUNT)
                continue;
            size_t len = count * arity * 32;
            fill_random(children, len);
            for (size_t i = 0; i < count; i++)
                expected_parent(children + i * arity * 32, arity, tagged,
                                expected + i * 32);

            for (size_t k = 0; k < kernel_count; k++) {
                size_t in_misalign = 1 + (arity + count + k) % 31;
                size_t out_misalign = (arity * 7 + count + k) % 32;
                uint8_t *block;
                const uint8_t *input =
                    copy_to_block_end(children, len, in_misalign, &block);
                uint8_t *out = output + GUARD + out_misalign;
                memset(output, GUARD_BYTE, sizeof output);

                (tagged ? kernels[k].parents : kernels[k].untagged)(input, count, arity,
                                                                      out);

                int ok = memcmp(out, expected, count * 32) == 0;
                for (size_t i = 0; i < sizeof output; i++) {
                    uint8_t *p = output + i;
                    if ((p < out || p >= out + count * 32) && *p != GUARD_BYTE)
                        ok = 0;
                }
                char what[80];
                snprintf(what, sizeof what, "%s %s parents (arity, count)",
                         rt_kernel_name(kernels[k].kernel), tagged ? "tagged" : "untagged");
                check(ok, what, arity, (unsigned)count);
                free(block);
            }
        }
    }
}

/* A single-message compression against the portable one on random state,
 * blocks at odd addresses, every length and flag combination. */
static void test_compress(rt_compress_fn compress, const char *what)
{
    for (unsigned t = 0; t < 20000; t++) {
        uint32_t portable[8], simd[8];
        uint8_t block_storage[65];
        uint8_t *block = block_storage + (t & 1);
        for (int i = 0; i < 8; i++)
            portable[i] = simd[i] = (uint32_t)next_random();
        fill_random(block, 64);
        uint64_t counter = next_random() >> (t % 64);
        uint8_t block_len = (uint8_t)(next_random() % 65);
        uint8_t flags = (uint8_t)(next_random() & 0x1F);
        rt_compress_portable(portable, block, block_len, counter, flags);
        compress(simd, block, block_len, counter, flags);
        check(memcmp(portable, simd, sizeof simd) == 0, what, t, flags);
    }
}

#if RT_X86
/* A paired compression against two portable ones: random states, blocks at
 * odd addresses, every length and flag combination in each half, counter 0
 * (all it takes), and the same block in both halves sometimes. */
static void test_compress2(rt_compress2_fn compress2, const char *what)
{
    for (unsigned t = 0; t < 20000; t++) {
        uint32_t want_a[8], want_b[8], got_a[8], got_b[8];
        uint8_t storage_a[65], storage_b[65];
        uint8_t *block_a = storage_a + (t & 1), *block_b = storage_b + ((t >> 1) & 1);
        for (int i = 0; i < 8; i++) {
            want_a[i] = got_a[i] = (uint32_t)next_random();
            want_b[i] = got_b[i] = (uint32_t)next_random();
        }
        fill_random(block_a, 64);
        fill_random(block_b, 64);
        if (t % 7 == 0)
            memcpy(block_b, block_a, 64);
        uint8_t len_a = (uint8_t)(next_random() % 65), len_b = (uint8_t)(next_random() % 65);
        uint8_t flags_a = (uint8_t)(next_random() & 0x1F), flags_b = (uint8_t)(next_random() & 0x1F);
        rt_compress_portable(want_a, block_a, len_a, 0, flags_a);
        rt_compress_portable(want_b, block_b, len_b, 0, flags_b);
        compress2(got_a, block_a, len_a, flags_a, got_b, block_b, len_b, flags_b);
        check(memcmp(want_a, got_a, sizeof got_a) == 0 && memcmp(want_b, got_b, sizeof got_b) == 0,
              what, t, flags_a);
    }
}
#endif

static void test_api(void)
{
    uint8_t children[2 * 32] = {0}, out[32];
    check(rt_hash_parent(children, 1, out) == RT_ERR_INVALID_ARGUMENT,
          "rt_hash_parent count 1 rejected", 1, 0);
    check(rt_hash_parent(children, 256, out) == RT_ERR_INVALID_ARGUMENT,
          "rt_hash_parent count 256 rejected", 256, 0);
    check(rt_kernel_select(RT_KERNEL_NEON + 1) == RT_ERR_INVALID_ARGUMENT,
          "rt_kernel_select unknown", RT_KERNEL_NEON + 1, 0);
    check(rt_kernel_select(-1) == RT_ERR_INVALID_ARGUMENT,
          "rt_kernel_select negative", 0, 0);
    check(rt_kernel_available(RT_KERNEL_PORTABLE) == 1, "portable available",
          0, 0);
    check(rt_kernel_available(7) == 0, "unknown kernel unavailable", 7, 0);
    check(strcmp(rt_kernel_name(RT_KERNEL_PORTABLE), "portable") == 0 &&
              strcmp(rt_kernel_name(RT_KERNEL_SSE41), "sse41") == 0 &&
              strcmp(rt_kernel_name(RT_KERNEL_AVX2), "avx2") == 0 &&
              strcmp(rt_kernel_name(RT_KERNEL_AVX512), "avx512") == 0 &&
              strcmp(rt_kernel_name(RT_KERNEL_NEON), "neon") == 0 &&
              strcmp(rt_kernel_name(42), "unknown") == 0,
          "rt_kernel_name", 0, 0);
    /* The default is the best kernel available. Kernel numbers have gaps
     * (and unknown ones are never available), so every small number is
     * tried. */
    int best = RT_KERNEL_PORTABLE;
    for (int k = RT_KERNEL_PORTABLE; k < 32; k++)
        if (rt_kernel_available(k))
            best = k;
    check(rt_kernel_active() == best, "default kernel is the best", 0,
          (unsigned)best);
    for (int k = RT_KERNEL_PORTABLE; k < 32; k++) {
        int status = rt_kernel_select(k);
        if (rt_kernel_available(k))
            check(status == RT_OK && rt_kernel_active() == k,
                  "select available kernel", (unsigned)k, 0);
        else if (strcmp(rt_kernel_name(k), "unknown") != 0)
            check(status == RT_ERR_UNSUPPORTED && rt_kernel_active() != k,
                  "select unavailable kernel", (unsigned)k, 0);
        else
            check(status == RT_ERR_INVALID_ARGUMENT && rt_kernel_active() != k,
                  "select unknown kernel", (unsigned)k, 0);
    }
}

int main(void)
{
    struct kernel_under_test kernels[8];
    size_t kernel_count = 0;
    kernels[kernel_count++] =
        (struct kernel_under_test){RT_KERNEL_PORTABLE, rt_hash_parents_portable,
                                   rt_hash_parents_untagged_portable};
#if RT_X86
    if (rt_kernel_available(RT_KERNEL_SSE41))
        kernels[kernel_count++] =
            (struct kernel_under_test){RT_KERNEL_SSE41, rt_hash_parents_sse41,
                                       rt_hash_parents_untagged_sse41};
    if (rt_kernel_available(RT_KERNEL_AVX2))
        kernels[kernel_count++] =
            (struct kernel_under_test){RT_KERNEL_AVX2, rt_hash_parents_avx2,
                                       rt_hash_parents_untagged_avx2};
    if (rt_kernel_available(RT_KERNEL_AVX512))
        kernels[kernel_count++] =
            (struct kernel_under_test){RT_KERNEL_AVX512, rt_hash_parents_avx512,
                                       rt_hash_parents_untagged_avx512};
#endif
#if RT_NEON
    if (rt_kernel_available(RT_KERNEL_NEON))
        kernels[kernel_count++] =
            (struct kernel_under_test){RT_KERNEL_NEON, rt_hash_parents_neon,
                                       rt_hash_parents_untagged_neon};
#endif

    test_api();
    for (size_t k = 0; k < kernel_count; k++) {
        check(rt_kernel_select(kernels[k].kernel) == RT_OK, "select kernel",
              (unsigned)kernels[k].kernel, 0);
        test_known_answers(kernels[k].kernel);
    }
#if RT_X86
    if (rt_kernel_available(RT_KERNEL_SSE41))
        test_compress(rt_compress_sse41, "rt_compress_sse41 == portable");
    if (rt_kernel_available(RT_KERNEL_AVX512))
        test_compress(rt_compress_avx512, "rt_compress_avx512 == portable");
    if (rt_kernel_available(RT_KERNEL_AVX2))
        test_compress2(rt_compress2_avx2, "rt_compress2_avx2 == two portable");
    if (rt_kernel_available(RT_KERNEL_AVX512))
        test_compress2(rt_compress2_avx512, "rt_compress2_avx512 == two portable");
#endif
    test_parents(kernels, kernel_count, 1);
    test_parents(kernels, kernel_count, 0);

    printf("kernels tested:");
    for (size_t k = 0; k < kernel_count; k++)
        printf(" %s", rt_kernel_name(kernels[k].kernel));
    printf("\n");
    return harness_summary("hash", "");
}
