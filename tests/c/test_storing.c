/*
 * The storing parents kernels (rt_parents_storing_fn: hash parents and copy
 * their children to level 0 in one pass), meant to run under ASan + UBSan:
 *
 *   gcc -O1 -g -fsanitize=address,undefined -Icsrc tests/c/test_storing.c \
 *       csrc/blake3_portable.c csrc/blake3_sse41.c csrc/blake3_avx2.c \
 *       csrc/blake3_avx512.c csrc/blake3_neon.c csrc/hash_dispatch.c
 *
 * For every storing entry this CPU runs, tagged and untagged, every arity
 * 2..40 and a few wide ones, parent counts that fill lane groups, leave
 * remainders (narrow kernel, padded group, lone parent) and a single
 * partial group, copies in order and scattered: each parent's copy must
 * equal its children byte for byte, the
 * parents must equal the portable kernel's, nothing may be written outside
 * either destination, and the children must be left as they were. The
 * destination is placed line-aligned (streaming stores), 32 bytes off
 * (ordinary stores) and at an odd address, and the children end their heap
 * block so an overread trips AddressSanitizer.
 *
 * That the stored bytes are the hashed ones even while the caller changes
 * them is tested from Python (tests/test_storing_kernels.py), with a thread
 * flipping the leaves during insert_many.
 *
 * Prints "storing driver: N passed, M failed" and "kernels tested: ...".
 */
#include "rt_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_blake3.h"

#include "harness.h"

#define GUARD 96
#define GUARD_BYTE 0xA5

static rng data_rng = {0x243F6A8885A308D3ull};

struct storing_kernel {
    const char *name;
    int kernel;
    rt_parents_storing_fn tagged, untagged;
};

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng_next(&data_rng) >> 56);
}

static int all_guard(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != GUARD_BYTE)
            return 0;
    return 1;
}

/* One call: `count` parents of `arity` children, the copies placed `offset`
 * bytes past a 64-byte boundary, parent by parent in order or (`reversed`)
 * in reverse order, as chunked levels may place them anywhere. */
static void check_call(const struct storing_kernel *k, int tagged, unsigned arity,
                       size_t count, size_t offset, int reversed)
{
    const size_t stride = arity * 32u;
    const size_t bytes = count * arity * 32u;
    rt_parents_storing_fn fn = tagged ? k->tagged : k->untagged;
    rt_parents_fn reference = tagged ? rt_hash_parents_portable : rt_hash_parents_untagged_portable;

    uint8_t *original = xmalloc(bytes);
    fill_random(original, bytes);
    uint8_t *children = xmalloc(bytes); // its own block: reading past it is an overflow
    memcpy(children, original, bytes);

    uint8_t *stored_block = aligned_alloc(64, (2 * GUARD + 64 + bytes + 63) / 64 * 64);
    REQUIRE(stored_block, "aligned_alloc");
    uint8_t *stored = stored_block + GUARD + offset; // GUARD is a multiple of 32
    memset(stored_block, GUARD_BYTE, 2 * GUARD + offset + bytes);

    uint8_t *out_block = xmalloc(count * 32u + 2 * GUARD);
    uint8_t *out = out_block + GUARD;
    memset(out_block, GUARD_BYTE, count * 32u + 2 * GUARD);
    uint8_t *expected = xmalloc(count * 32u);
    reference(original, count, arity, expected);

    uint8_t **dest = xmalloc(count * sizeof *dest);
    for (size_t i = 0; i < count; i++)
        dest[i] = stored + (reversed ? count - 1 - i : i) * stride;
    fn(children, count, arity, out, dest);

    int copied = 1;
    for (size_t i = 0; i < count; i++)
        copied &= memcmp(dest[i], original + i * stride, stride) == 0;
    free(dest);
    CHECK(copied, "%s %s arity %u count %zu offset %zu reversed %d: copy differs", k->name,
          tagged ? "tagged" : "untagged", arity, count, offset, reversed);
    CHECK(memcmp(out, expected, count * 32u) == 0,
          "%s %s arity %u count %zu offset %zu: parents differ", k->name,
          tagged ? "tagged" : "untagged", arity, count, offset);
    CHECK(all_guard(stored_block, GUARD + offset) && all_guard(stored + bytes, GUARD),
          "%s arity %u count %zu offset %zu: wrote outside the copy", k->name, arity, count,
          offset);
    CHECK(all_guard(out_block, GUARD) && all_guard(out + count * 32u, GUARD),
          "%s arity %u count %zu: wrote outside the parents", k->name, arity, count);
    CHECK(memcmp(children, original, bytes) == 0, "%s arity %u count %zu: children changed",
          k->name, arity, count);

    free(expected);
    free(out_block);
    free(stored_block);
    free(children);
    free(original);
}

static void check_kernel(const struct storing_kernel *k)
{
    /* Lane groups of 8 and 16, the remainders each leaves (narrow kernel,
     * padded group, a lone parent), several groups. */
    static const size_t counts[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40};
    static const size_t offsets[] = {0, 32, 1};
    static const unsigned wide[] = {63, 64, 65, 96, 127, 128, 255};
    for (int tagged = 0; tagged <= 1; tagged++) {
        for (unsigned arity = 2; arity <= 40; arity++)
            for (size_t c = 0; c < sizeof counts / sizeof *counts; c++)
                for (size_t o = 0; o < sizeof offsets / sizeof *offsets; o++)
                    check_call(k, tagged, arity, counts[c], offsets[o], (int)(c & 1));
        for (size_t w = 0; w < sizeof wide / sizeof *wide; w++)
            for (size_t c = 0; c < sizeof counts / sizeof *counts; c += 3)
                check_call(k, tagged, wide[w], counts[c], offsets[c % 3], (int)(w & 1));
    }
}

int main(void)
{
    struct storing_kernel kernels[2];
    size_t n = 0;
#if RT_X86
    if (rt_kernel_available(RT_KERNEL_AVX2))
        kernels[n++] = (struct storing_kernel){"avx2", RT_KERNEL_AVX2,
                                               rt_hash_parents_storing_avx2,
                                               rt_hash_parents_untagged_storing_avx2};
    if (rt_kernel_available(RT_KERNEL_AVX512))
        kernels[n++] = (struct storing_kernel){"avx512", RT_KERNEL_AVX512,
                                               rt_hash_parents_storing_avx512,
                                               rt_hash_parents_untagged_storing_avx512};
#endif
    printf("kernels tested:");
    for (size_t i = 0; i < n; i++) {
        check_kernel(&kernels[i]);
        printf(" %s", kernels[i].name);
    }
    printf("\n");

    /* The dispatcher offers a storing entry exactly for these kernels, and
     * the one it offers is the kernel's own. */
    static const int every_kernel[] = {RT_KERNEL_PORTABLE, RT_KERNEL_SSE41, RT_KERNEL_AVX2,
                                       RT_KERNEL_AVX512, RT_KERNEL_NEON};
    for (size_t i = 0; i < sizeof every_kernel / sizeof *every_kernel; i++) {
        int kernel = every_kernel[i];
        if (!rt_kernel_available(kernel))
            continue;
        REQUIRE(rt_kernel_select(kernel) == RT_OK, "select kernel %d", kernel);
        rt_parents_storing_fn want = NULL, want_untagged = NULL;
        for (size_t j = 0; j < n; j++)
            if (kernels[j].kernel == kernel) {
                want = kernels[j].tagged;
                want_untagged = kernels[j].untagged;
            }
        CHECK(rt_active_storing_parents_fn(1) == want &&
                  rt_active_storing_parents_fn(0) == want_untagged,
              "kernel %s: dispatcher's storing entry", rt_kernel_name(kernel));
    }
    return harness_summary("storing", "");
}
