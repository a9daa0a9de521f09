/*
 * insert_many reads each of the caller's leaf bytes once (rotortree.h), so
 * the leaves it stores are the bytes it hashed even while another thread
 * changes them. A thread racing the call only catches a second read when a
 * change happens to land between the two; this driver makes every read see
 * new bytes instead, deterministically:
 *
 * the caller's leaves live on pages mapped PROT_NONE. Each instruction that
 * touches them faults; the SIGSEGV handler changes the bytes there, opens
 * the pages and sets the trap flag, so the instruction runs once and the
 * SIGTRAP after it closes the pages again. Two loads of the same byte thus
 * return different values, and a kernel or copy that loaded a leaf once to
 * hash it and again to store it stores leaves that do not hash to their
 * parents.
 *
 * Checked: every storing kernel entry (tagged and untagged, lone parents
 * and lane groups), and whole insert_many batches on one thread under every
 * storing kernel (lifted last leaves, partial last groups, old leaves in
 * the first parent): the stored leaves must hash to the parents and root.
 * Built at -O2 with every compiler the test finds: whether a private copy
 * is read or the caller's bytes again depends on the optimiser (memcpy
 * forwarding).
 *
 * x86-64 Linux only (the trap flag in the signal context). Prints
 * "read-once driver: N passed, M failed".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE // REG_EFL in <ucontext.h>
#endif
#include "rt_config.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "rotortree.h"
#include "rt_blake3.h"

#include "harness.h"

#define TRAP_FLAG 0x100
#define REGION_BYTES (1u << 20)

static uint8_t *region;              /* page-aligned, REGION_BYTES */
static size_t armed_bytes;           /* the leaves' bytes, from region */
static size_t armed_span;            /* armed_bytes rounded up to pages */
static size_t page_bytes;
static volatile sig_atomic_t faults; /* reads trapped while armed */
static long total_faults;

/* Each page's bytes are the leaves' XOR mask(changes[page]): a fault
 * changes the faulting page and the next (an access may straddle two pages
 * and report the first), so a byte read twice differs between the reads
 * unless a multiple of 255 faults hit its page in between. Masks that only
 * invert would let an even number of faults in between hide a second
 * read. */
static unsigned changes[REGION_BYTES / 4096 + 1];

static uint8_t mask(unsigned change)
{
    return change == 0 ? 0 : (uint8_t)(1 + (change - 1) % 255);
}

static void on_fault(int sig, siginfo_t *info, void *context)
{
    uint8_t *at = info->si_addr;
    if (at < region || at >= region + armed_span) {
        signal(sig, SIG_DFL); // a real crash: let it happen
        return;
    }
    mprotect(region, armed_span, PROT_READ | PROT_WRITE);
    size_t page = (size_t)(at - region) / page_bytes;
    for (size_t p = page; p < page + 2 && p * page_bytes < armed_bytes; p++) {
        uint8_t delta = mask(changes[p]) ^ mask(changes[p] + 1);
        changes[p]++;
        size_t end = (p + 1) * page_bytes < armed_bytes ? (p + 1) * page_bytes : armed_bytes;
        for (size_t i = p * page_bytes; i < end; i++)
            region[i] ^= delta;
    }
    faults++;
    ((ucontext_t *)context)->uc_mcontext.gregs[REG_EFL] |= TRAP_FLAG;
}

static void on_step(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ((ucontext_t *)context)->uc_mcontext.gregs[REG_EFL] &= ~(greg_t)TRAP_FLAG;
    mprotect(region, armed_span, PROT_NONE);
}

static void arm(size_t bytes)
{
    REQUIRE(bytes <= REGION_BYTES, "region too small for %zu bytes", bytes);
    armed_bytes = bytes;
    memset(changes, 0, sizeof changes);
    armed_span = (bytes + page_bytes - 1) / page_bytes * page_bytes;
    faults = 0;
    REQUIRE(mprotect(region, armed_span, PROT_NONE) == 0, "mprotect");
}

static void disarm(void)
{
    REQUIRE(mprotect(region, armed_span, PROT_READ | PROT_WRITE) == 0, "mprotect");
    total_faults += faults;
}

static rng data_rng = {0x13198A2E03707344ull};

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng_next(&data_rng) >> 56);
}

struct storing_kernel {
    const char *name;
    int kernel;
    rt_parents_storing_fn tagged, untagged;
};

static const struct storing_kernel storing_kernels[] = {
    {"avx2", RT_KERNEL_AVX2, rt_hash_parents_storing_avx2,
     rt_hash_parents_untagged_storing_avx2},
    {"avx512", RT_KERNEL_AVX512, rt_hash_parents_storing_avx512,
     rt_hash_parents_untagged_storing_avx512},
};

/* Every trapped read costs two signals: a few arities of each kind (even,
 * odd, one or several BLAKE3 chunks, the widest). */
static const unsigned arities[] = {2, 3, 16, 17, 33, 64};
#define ARITY_COUNT (sizeof arities / sizeof arities[0])

/* One storing entry on children that change at every read: each copy must
 * hash (portable kernel) to the parent the entry wrote. */
static void check_entry(const struct storing_kernel *k, int tagged, unsigned arity, size_t count)
{
    size_t stride = (size_t)arity * 32u, bytes = count * stride;
    uint8_t *copies = xmalloc(bytes), *out = xmalloc(count * 32u), again[32];
    uint8_t **stored = xmalloc(count * sizeof *stored);
    for (size_t i = 0; i < count; i++)
        stored[i] = copies + i * stride;
    fill_random(region, bytes);
    arm(bytes);
    (tagged ? k->tagged : k->untagged)(region, count, arity, out, stored);
    disarm();
    CHECK(faults > 0, "%s: the children were never read", k->name);
    for (size_t i = 0; i < count; i++) {
        if (tagged)
            rt_hash_parents_portable(stored[i], 1, arity, again);
        else
            rt_hash_parents_untagged_portable(stored[i], 1, arity, again);
        CHECK(memcmp(again, out + i * 32u, 32) == 0,
              "%s %s arity %u count %zu: parent %zu is not the hash of the children stored",
              k->name, tagged ? "tagged" : "untagged", arity, count, i);
    }
    free(copies);
    free(out);
    free(stored);
}

/* A tree given `old` leaves, then a batch of `count` read from the trapped
 * pages: its root must be that of the leaves it stored. */
static void check_tree(const char *kernel_name, int rule, unsigned arity, size_t old,
                       size_t count)
{
    rt_tree *tree;
    REQUIRE(rt_tree_new(arity, 32, rule, &tree) == RT_OK, "rt_tree_new");
    uint8_t root[32], expected[32];
    size_t total = old + count;
    uint8_t *leaves = xmalloc(total * 32u);
    fill_random(leaves, old * 32u);
    if (old)
        REQUIRE(rt_tree_insert_many(tree, leaves, old, root) == RT_OK, "old leaves");
    fill_random(region, count * 32u);
    arm(count * 32u);
    int status = rt_tree_insert_many(tree, region, count, root);
    disarm();
    CHECK(status == RT_OK && faults > 0, "%s: insert_many status %d", kernel_name, status);
    for (size_t i = 0; i < total; i++)
        REQUIRE(rt_tree_get_node(tree, 0, i, leaves + i * 32u) == RT_OK, "get_node");
    int active = rt_kernel_active();
    REQUIRE(rt_kernel_select(RT_KERNEL_PORTABLE) == RT_OK, "rt_kernel_select");
    REQUIRE(rt_compute_root(leaves, total, arity, rule, expected) == RT_OK, "compute_root");
    REQUIRE(rt_kernel_select(active) == RT_OK, "rt_kernel_select");
    CHECK(memcmp(root, expected, 32) == 0,
          "%s rule %d arity %u: %zu old + %zu new leaves: the root is not that of the "
          "leaves stored", kernel_name, rule, arity, old, count);
    free(leaves);
    rt_tree_free(tree);
}

int main(void)
{
    page_bytes = (size_t)sysconf(_SC_PAGESIZE);
    REQUIRE(page_bytes >= 4096, "pages of %zu bytes", page_bytes);
    region = mmap(NULL, REGION_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                  -1, 0);
    REQUIRE(region != MAP_FAILED, "mmap");
    struct sigaction fault = {0}, step = {0};
    fault.sa_sigaction = on_fault;
    fault.sa_flags = SA_SIGINFO;
    step.sa_sigaction = on_step;
    step.sa_flags = SA_SIGINFO;
    REQUIRE(sigaction(SIGSEGV, &fault, NULL) == 0, "sigaction");
    REQUIRE(sigaction(SIGTRAP, &step, NULL) == 0, "sigaction");
    // Every read on this thread: a pool worker's fault would find the
    // pages closed again by another instruction's trap.
    struct rt_pool_config one = {1, RT_POOL_DEFAULT_THRESHOLD, RT_POOL_DEFAULT_CHUNK};
    REQUIRE(rt_pool_configure(&one) == RT_OK, "rt_pool_configure");

    char tested[64] = "";
    for (size_t s = 0; s < sizeof storing_kernels / sizeof storing_kernels[0]; s++) {
        const struct storing_kernel *k = &storing_kernels[s];
        if (!rt_kernel_available(k->kernel))
            continue;
        strcat(tested, " ");
        strcat(tested, k->name);
        REQUIRE(rt_kernel_select(k->kernel) == RT_OK, "rt_kernel_select");
        for (size_t a = 0; a < ARITY_COUNT; a++)
            for (int tagged = 0; tagged < 2; tagged++)
                // A lone parent; a group of 8 lanes and a lone one (the
                // AVX-512 entry: its narrow kernel); 16 and a lone one.
                for (size_t count = 1; count <= 17; count += 8)
                    check_entry(k, tagged, arities[a], count);
        for (size_t a = 0; a < ARITY_COUNT; a++) {
            unsigned arity = arities[a];
            // Lifted last leaf, partial last group of 2 and of arity - 1;
            // with old leaves, the first parent mixes old and new.
            size_t counts[] = {17 * arity + 1, 17 * arity + 2, 18 * arity - 1};
            for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
                for (int rule = RT_RULE_ROTORTREE_015; rule <= RT_RULE_LEANIMT; rule++) {
                    check_tree(k->name, rule, arity, 0, counts[c]);
                    check_tree(k->name, rule, arity, arity + 1, counts[c]);
                }
        }
    }
    printf("kernels tested:%s\n", tested);
    printf("reads trapped: %ld\n", total_faults);
    return harness_summary("read-once", "");
}
