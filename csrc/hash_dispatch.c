/*
 * Kernel selection: which BLAKE3 implementation the process uses. CPU
 * features are probed once; the active kernel is one atomic int so any
 * thread may read it on every call without locking.
 */
#include "rt_config.h"

#include <stdatomic.h>

#include "rt_blake3.h"

#if RT_X86
#include <cpuid.h>
#endif

#define KERNEL_UNSET (-1)
#define FEATURES_UNKNOWN (-1)
#define FEATURE_SSE41 (1 << RT_KERNEL_SSE41)
#define FEATURE_AVX2 (1 << RT_KERNEL_AVX2)
#define FEATURE_AVX512 (1 << RT_KERNEL_AVX512)
#define FEATURE_NEON (1 << RT_KERNEL_NEON)

static atomic_int active_kernel = KERNEL_UNSET;
/* Bit set of kernels this CPU and OS can run (portable always). Probing is
 * idempotent, so a race between first callers only repeats the same work. */
static atomic_int cpu_features = FEATURES_UNKNOWN;

#if RT_X86
/* XCR0: the register state the OS saves on context switch. Without it, AVX
 * or AVX-512 code would corrupt other threads' state even though cpuid
 * advertises the instructions. */
#define XCR0_SSE_AVX 0x06     /* bits 1, 2: XMM and the upper halves of YMM */
#define XCR0_AVX512 0xE0      /* bits 5, 6, 7: opmask, ZMM_Hi256, Hi16_ZMM */

static uint32_t os_saved_state(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    (void)edx;
    return eax;
}

static int probe_cpu_features(void)
{
    unsigned eax, ebx, ecx, edx;
    int features = 1 << RT_KERNEL_PORTABLE;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return features;
    if (ecx & (1u << 19))
        features |= FEATURE_SSE41;

    int osxsave = (ecx & (1u << 27)) != 0;
    int avx = (ecx & (1u << 28)) != 0;
    if (!osxsave || !avx)
        return features;
    uint32_t saved = os_saved_state();
    if ((saved & XCR0_SSE_AVX) != XCR0_SSE_AVX)
        return features;
    if (__get_cpuid_max(0, NULL) < 7)
        return features;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    /* Our AVX2 kernel also uses SSE4.1 for its remainders. */
    if ((ebx & (1u << 5)) && (features & FEATURE_SSE41))
        features |= FEATURE_AVX2;
    /* AVX-512F (bit 16) and VL (bit 31); VL implies the 128/256-bit forms
     * the single compression and the stores use. */
    int avx512 = (ebx & (1u << 16)) && (ebx & (1u << 31));
    if (avx512 && (features & FEATURE_AVX2) &&
        (saved & XCR0_AVX512) == XCR0_AVX512)
        features |= FEATURE_AVX512;
    return features;
}
#elif RT_NEON
/* NEON is part of the aarch64 baseline: every such CPU runs the kernel. */
static int probe_cpu_features(void)
{
    return (1 << RT_KERNEL_PORTABLE) | FEATURE_NEON;
}
#else
static int probe_cpu_features(void)
{
    return 1 << RT_KERNEL_PORTABLE;
}
#endif

static int supported_kernels(void)
{
    int features = atomic_load_explicit(&cpu_features, memory_order_relaxed);
    if (features == FEATURES_UNKNOWN) {
        features = probe_cpu_features();
        atomic_store_explicit(&cpu_features, features, memory_order_relaxed);
    }
    return features;
}

/* Kernel numbers are not contiguous, so membership is a list. */
static int kernel_known(int kernel)
{
    switch (kernel) {
    case RT_KERNEL_PORTABLE:
    case RT_KERNEL_SSE41:
    case RT_KERNEL_AVX2:
    case RT_KERNEL_AVX512:
    case RT_KERNEL_NEON:
        return 1;
    default:
        return 0;
    }
}

int rt_kernel_available(int kernel)
{
    if (!kernel_known(kernel))
        return 0;
    return (supported_kernels() >> kernel) & 1;
}

static int best_kernel(void)
{
    /* One architecture's kernels only are ever available, and within one the
     * higher number is the faster kernel. */
    int best = RT_KERNEL_PORTABLE;
    for (int kernel = RT_KERNEL_PORTABLE; kernel < 32; kernel++)
        if (rt_kernel_available(kernel))
            best = kernel;
    return best;
}

int rt_kernel_active(void)
{
    int kernel = atomic_load_explicit(&active_kernel, memory_order_relaxed);
    if (kernel != KERNEL_UNSET)
        return kernel;
    /* Only install the default if nobody selected a kernel meanwhile. */
    int expected = KERNEL_UNSET;
    int best = best_kernel();
    if (atomic_compare_exchange_strong(&active_kernel, &expected, best))
        return best;
    return expected;
}

int rt_kernel_select(int kernel)
{
    if (!kernel_known(kernel))
        return RT_ERR_INVALID_ARGUMENT;
    if (!rt_kernel_available(kernel))
        return RT_ERR_UNSUPPORTED;
    atomic_store(&active_kernel, kernel);
    return RT_OK;
}

const char *rt_kernel_name(int kernel)
{
    switch (kernel) {
    case RT_KERNEL_PORTABLE:
        return "portable";
    case RT_KERNEL_SSE41:
        return "sse41";
    case RT_KERNEL_AVX2:
        return "avx2";
    case RT_KERNEL_AVX512:
        return "avx512";
    case RT_KERNEL_NEON:
        return "neon";
    default:
        return "unknown";
    }
}

rt_parents_fn rt_active_parents_fn(void)
{
    switch (rt_kernel_active()) {
#if RT_X86
    case RT_KERNEL_AVX512:
        return rt_hash_parents_avx512;
    case RT_KERNEL_AVX2:
        return rt_hash_parents_avx2;
    case RT_KERNEL_SSE41:
        return rt_hash_parents_sse41;
#endif
#if RT_NEON
    case RT_KERNEL_NEON:
        return rt_hash_parents_neon;
#endif
    default:
        return rt_hash_parents_portable;
    }
}

rt_parents_fn rt_active_untagged_parents_fn(void)
{
    switch (rt_kernel_active()) {
#if RT_X86
    case RT_KERNEL_AVX512:
        return rt_hash_parents_untagged_avx512;
    case RT_KERNEL_AVX2:
        return rt_hash_parents_untagged_avx2;
    case RT_KERNEL_SSE41:
        return rt_hash_parents_untagged_sse41;
#endif
#if RT_NEON
    case RT_KERNEL_NEON:
        return rt_hash_parents_untagged_neon;
#endif
    default:
        return rt_hash_parents_untagged_portable;
    }
}

rt_parents_storing_fn rt_active_storing_parents_fn(int tagged)
{
    switch (rt_kernel_active()) {
#if RT_X86
    case RT_KERNEL_AVX512:
        return tagged ? rt_hash_parents_storing_avx512 : rt_hash_parents_untagged_storing_avx512;
    case RT_KERNEL_AVX2:
        return tagged ? rt_hash_parents_storing_avx2 : rt_hash_parents_untagged_storing_avx2;
#endif
    default:
        (void)tagged;
        return NULL;
    }
}

rt_compress_fn rt_active_compress_fn(void)
{
#if RT_X86
    switch (rt_kernel_active()) {
    case RT_KERNEL_PORTABLE:
        break;
    case RT_KERNEL_AVX512:
        return rt_compress_avx512;
    default:
        return rt_compress_sse41;
    }
#endif
    return rt_compress_portable;
}

rt_compress2_fn rt_active_compress2_fn(void)
{
#if RT_X86
    switch (rt_kernel_active()) {
    case RT_KERNEL_AVX512:
        return rt_compress2_avx512;
    case RT_KERNEL_AVX2:
        return rt_compress2_avx2;
    default:
        break;
    }
#endif
    return NULL;
}

void rt_hash_parents(const uint8_t *children, size_t count, unsigned arity,
                     uint8_t *out)
{
    rt_active_parents_fn()(children, count, arity, out);
}

void rt_blake3(const uint8_t *msg, size_t len, uint8_t *out)
{
    rt_blake3_prefixed(rt_active_compress_fn(), NULL, 0, msg, len, out);
}

int rt_hash_parent(const uint8_t *children, unsigned count, uint8_t *out)
{
    if (count < RT_MIN_ARITY || count > RT_MAX_ARITY)
        return RT_ERR_INVALID_ARGUMENT;
    rt_hash_parents(children, 1, count, out);
    return RT_OK;
}
