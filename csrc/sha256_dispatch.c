/*
 * Which SHA-256 implementation runs, and the public SHA-256 / RFC 6962 calls.
 *
 * There is no separate SHA-256 switch: the process-wide kernel
 * (rt_kernel_select, ROTORTREE_SIMD) decides, so that forcing the portable
 * kernel forces portable SHA-256 too:
 *   portable          -> portable;
 *   sse41             -> SHA extensions where the CPU has them, else portable;
 *   avx512            -> the same for single messages; batches of
 *                        same-length messages (parents, fixed-size leaves)
 *                        on sixteen AVX-512 lanes;
 *   avx2              -> the same as sse41; batches on eight AVX2 lanes
 *                        only without SHA extensions;
 *   neon              -> portable.
 * Tests and benchmarks reach every implementation the CPU can run, whatever
 * the kernel, through rt_sha256_with and rt_sha256_prefixed_many.
 */
#include "rt_config.h"

#include <stdatomic.h>
#include <string.h>

#include "rt_pool.h"
#include "rt_sha256.h"

#if RT_X86
#include <cpuid.h>
#endif

#define SHA_UNKNOWN (-1)
static atomic_int cpu_has_sha = SHA_UNKNOWN;

static int probe_sha(void)
{
#if RT_X86
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    /* SHA (leaf 7 EBX bit 29); the kernel also needs SSE4.1, which the
     * BLAKE3 probe already checks. */
    return (ebx & (1u << 29)) && rt_kernel_available(RT_KERNEL_SSE41);
#else
    return 0;
#endif
}

static int sha_extensions(void)
{
    int has = atomic_load_explicit(&cpu_has_sha, memory_order_relaxed);
    if (has == SHA_UNKNOWN) {
        has = probe_sha();
        atomic_store_explicit(&cpu_has_sha, has, memory_order_relaxed);
    }
    return has;
}

static void many_portable(uint8_t prefix, const uint8_t *bodies,
                          size_t body_len, size_t count, uint8_t *out)
{
    for (size_t i = 0; i < count; i++)
        rt_sha256_prefixed_portable(&prefix, 1, bodies + i * body_len, body_len,
                                    out + i * RT_HASH_LEN);
}

void rt_sha256_many_single(uint8_t prefix, const uint8_t *bodies,
                           size_t body_len, size_t count, uint8_t *out)
{
#if RT_X86
    if (sha_extensions()) {
        rt_sha256_many_shani(prefix, bodies, body_len, count, out);
        return;
    }
#endif
    many_portable(prefix, bodies, body_len, count, out);
}

int rt_sha256_impl_available(int impl)
{
    switch (impl) {
    case RT_SHA256_PORTABLE:
        return 1;
#if RT_X86
    case RT_SHA256_SHANI:
        return sha_extensions();
    case RT_SHA256_AVX2:
        return rt_kernel_available(RT_KERNEL_AVX2);
    case RT_SHA256_AVX512:
        return rt_kernel_available(RT_KERNEL_AVX512);
#endif
    default:
        return 0;
    }
}

const char *rt_sha256_impl_name(int impl)
{
    switch (impl) {
    case RT_SHA256_PORTABLE:
        return "portable";
    case RT_SHA256_SHANI:
        return "sha-ni";
    case RT_SHA256_AVX2:
        return "avx2-8way";
    case RT_SHA256_AVX512:
        return "avx512-16way";
    default:
        return "unknown";
    }
}

/* The implementation the active kernel means, for single messages (batch 0)
 * or for batches of same-length messages (batch 1). */
int rt_sha256_impl_active(int batch)
{
    int kernel = rt_kernel_active();
    if (kernel == RT_KERNEL_PORTABLE)
        return RT_SHA256_PORTABLE;
    /* For batches, sixteen AVX-512 lanes beat two messages interleaved on
     * the SHA extensions: with the RFC 6962 shapes (32- and 64-byte bodies)
     * loaded whole and transposed rather than gathered, by about half on
     * parents and more on leaf hashes; other lengths, gathered, about
     * match them on two-block messages and win on one-block ones (rotortree
     * bench, sha256 section). Eight AVX2
     * lanes are about half as fast as the extensions, so they only serve
     * CPUs without them. */
    if (batch && kernel == RT_KERNEL_AVX512 && rt_sha256_impl_available(RT_SHA256_AVX512))
        return RT_SHA256_AVX512;
    if (sha_extensions())
        return RT_SHA256_SHANI;
    if (batch && kernel == RT_KERNEL_AVX2 && rt_sha256_impl_available(RT_SHA256_AVX2))
        return RT_SHA256_AVX2;
    return RT_SHA256_PORTABLE;
}

/* Single messages of an implementation: the multi-lane ones hash single
 * messages with the best single-stream code available. */
static rt_sha256_prefixed_fn prefixed_of(int impl)
{
#if RT_X86
    if (impl != RT_SHA256_PORTABLE && sha_extensions())
        return rt_sha256_prefixed_shani;
#endif
    (void)impl;
    return rt_sha256_prefixed_portable;
}

static rt_sha256_many_fn many_of(int impl)
{
    switch (impl) {
#if RT_X86
    case RT_SHA256_SHANI:
        return rt_sha256_many_shani;
    case RT_SHA256_AVX2:
        return rt_sha256_many_avx2;
    case RT_SHA256_AVX512:
        return rt_sha256_many_avx512;
#endif
    default:
        return many_portable;
    }
}

rt_sha256_prefixed_fn rt_sha256_active_prefixed(void)
{
    return prefixed_of(rt_sha256_impl_active(0));
}

rt_sha256_many_fn rt_sha256_active_many(void)
{
    return many_of(rt_sha256_impl_active(1));
}

void rt_sha256(const uint8_t *msg, size_t len, uint8_t out[32])
{
    rt_sha256_active_prefixed()(NULL, 0, msg, len, out);
}

void rt_sha256_many(uint8_t prefix, const uint8_t *bodies, size_t body_len,
                    size_t count, uint8_t *out)
{
    rt_sha256_active_many()(prefix, bodies, body_len, count, out);
}

void rt_sha256_rfc6962_parents(const uint8_t *children, size_t parent_count,
                               uint8_t *out)
{
    rt_sha256_active_many()(0x01, children, 2 * RT_HASH_LEN, parent_count, out);
}

/* ---- public calls ---------------------------------------------------------- */

void rt_sha256_hash(const uint8_t *msg, size_t len, uint8_t *out)
{
    rt_sha256(msg, len, out);
}

static int resolve(int impl)
{
    if (impl == RT_SHA256_ACTIVE)
        return RT_OK;
    if (impl < RT_SHA256_PORTABLE || impl > RT_SHA256_AVX512)
        return RT_ERR_INVALID_ARGUMENT;
    return rt_sha256_impl_available(impl) ? RT_OK : RT_ERR_UNSUPPORTED;
}

int rt_sha256_with(int impl, const uint8_t *msg, size_t len, uint8_t *out)
{
    int status = resolve(impl);
    if (status != RT_OK)
        return status;
    if (impl == RT_SHA256_ACTIVE)
        impl = rt_sha256_impl_active(0);
    prefixed_of(impl)(NULL, 0, msg, len, out);
    return RT_OK;
}

int rt_sha256_prefixed_many(int impl, uint8_t prefix, const uint8_t *bodies,
                            size_t body_len, size_t count, uint8_t *out)
{
    int status = resolve(impl);
    if (status != RT_OK)
        return status;
    if (impl == RT_SHA256_ACTIVE)
        impl = rt_sha256_impl_active(1);
    many_of(impl)(prefix, bodies, body_len, count, out);
    return RT_OK;
}

/* ---- RFC 6962 leaf hashes on the pool -------------------------------------- */

struct leaf_job {
    rt_rfc6962_entries entries;
    uint8_t *out;
};

void rt_rfc6962_entries_hash(const rt_rfc6962_entries *job, size_t begin, size_t end,
                             uint8_t *out)
{
    static const uint8_t leaf_prefix = 0x00;
    if (job->offsets == NULL) {
        job->many(leaf_prefix, job->data + begin * job->entry_len, job->entry_len,
                  end - begin, out);
        return;
    }
    /* Entry i ends where entry i + 1 starts, so a run of equal lengths is a
     * fixed-length batch: the common case of a list of same-size entries
     * gets the batch kernel too. */
    size_t i = begin;
    while (i < end) {
        uint64_t len = job->offsets[i + 1] - job->offsets[i];
        size_t run = i + 1;
        while (run < end && job->offsets[run + 1] - job->offsets[run] == len)
            run++;
        if (run - i > 1)
            job->many(leaf_prefix, job->data + job->offsets[i], (size_t)len, run - i,
                      out + (i - begin) * RT_HASH_LEN);
        else
            job->single(&leaf_prefix, 1, job->data + job->offsets[i], (size_t)len,
                        out + (i - begin) * RT_HASH_LEN);
        i = run;
    }
}

static void hash_leaf_range(void *ctx, size_t begin, size_t end)
{
    const struct leaf_job *job = ctx;
    rt_rfc6962_entries_hash(&job->entries, begin, end, job->out + begin * RT_HASH_LEN);
}

/* The entries' total length into *total, or RT_ERR_INVALID_ARGUMENT:
 * everything is checked before the first hash is written. */
static int check_entries(size_t data_len, const uint64_t *offsets, size_t count,
                         size_t entry_len, size_t *total)
{
    if (offsets == NULL) {
        if (entry_len != 0 && count > SIZE_MAX / entry_len)
            return RT_ERR_INVALID_ARGUMENT;
        *total = count * entry_len;
        return *total == data_len ? RT_OK : RT_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < count; i++)
        if (offsets[i] > offsets[i + 1])
            return RT_ERR_INVALID_ARGUMENT;
    if (offsets[count] > data_len)
        return RT_ERR_INVALID_ARGUMENT;
    *total = (size_t)offsets[count];
    return RT_OK;
}

int rt_rfc6962_leaf_hashes(const uint8_t *data, size_t data_len,
                           const uint64_t *offsets, size_t count,
                           size_t entry_len, uint8_t *out)
{
    size_t total;
    int status = check_entries(data_len, offsets, count, entry_len, &total);
    if (status != RT_OK)
        return status;
    if (count == 0)
        return RT_OK;
    struct leaf_job job = {{data, offsets, entry_len, rt_sha256_active_prefixed(),
                            rt_sha256_active_many()}, out};
    uint32_t threads;
    uint64_t threshold, chunk;
    rt_pool_tunables(&threads, &threshold, &chunk);
    /* The pool's tunables count parents of two blocks each; weigh leaves by
     * their blocks so that a batch of long entries is split as finely as a
     * level of the same hashing work. */
    size_t blocks = total / RT_SHA256_BLOCK_LEN + count;
    if (threads <= 1 || blocks < 2 * threshold) {
        hash_leaf_range(&job, 0, count);
        return RT_OK;
    }
    size_t per_entry = blocks / count;
    size_t grain = (size_t)(2 * chunk) / per_entry;
    if (grain < 1)
        grain = 1;
    rt_pool_parallel_for(count, grain, hash_leaf_range, &job);
    return RT_OK;
}

int rt_rfc6962_entries_init(rt_rfc6962_entries *entries, const uint8_t *data,
                            size_t data_len, const uint64_t *offsets, size_t count,
                            size_t entry_len)
{
    size_t total;
    int status = check_entries(data_len, offsets, count, entry_len, &total);
    if (status != RT_OK)
        return status;
    *entries = (rt_rfc6962_entries){data, offsets, entry_len, rt_sha256_active_prefixed(),
                                    rt_sha256_active_many()};
    return RT_OK;
}
