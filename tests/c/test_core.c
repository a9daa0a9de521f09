/*
 * Test driver for the tree core through the public header (rotortree.h):
 * levels, trees, snapshots, proofs, restore / make_cold, compute_root, the
 * leaf index and allocation failures, checked against a tiny reference LeanIMT kept in this
 * file (it shares nothing with the core but rt_hash_parent, which
 * tests/c/test_hash.c checks against the reference BLAKE3).
 *
 * Built and run by tests/test_c_core.py under ASan+UBSan, under TSan and
 * under valgrind memcheck. By hand:
 *
 *   gcc -O1 -g -std=c11 -pthread -fsanitize=address,undefined \
 *       -DRT_TEST_WRAP=1 -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc \
 *       -Wl,--wrap=posix_memalign,--wrap=mmap \
 *       -Icsrc tests/c/test_core.c csrc/[a-z]*.c -o test_core
 *   ASAN_OPTIONS=allocator_may_return_null=1 ./test_core asan [seed]
 *
 * Profiles (argv[1]): asan (default), tsan (concurrency-heavy, smaller),
 * valgrind (small: valgrind is ~50x slower), long (everything bigger),
 * emulated (another ISA under qemu-user: valgrind's sizes, no fork, no
 * concurrency rounds).
 * With -DRT_TEST_WRAP=1 and the --wrap link flags, every malloc, calloc,
 * realloc, posix_memalign and mmap made by the library can be made to fail
 * on demand: each such failure must give RT_ERR_NOMEM and leave every tree
 * and snapshot exactly as it was.
 *
 * Prints "core driver: N passed, M failed" and exits non-zero on failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "rotortree.h"
#include "rt_blake3.h"
#include "rt_index.h"
#include "rt_mapping.h"
#include "rt_pool.h"
#include "rt_tree.h"

#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

#ifndef RT_TEST_WRAP
#define RT_TEST_WRAP 0
#endif

/* ---- profile ------------------------------------------------------------- */

typedef struct profile {
    const char *name;
    unsigned random_trees;     /* random (arity, size) trees */
    uint64_t random_max;       /* leaves per random tree, at most */
    uint64_t big_tree;         /* one large tree (mapped slabs), 0: none */
    unsigned proof_all_max;    /* generate every proof of trees up to this size */
    unsigned conc_rounds;      /* concurrency rounds (one arity each) */
    uint64_t conc_leaves;      /* leaves inserted per round */
    unsigned conc_readers;
    unsigned inject_sweeps;    /* allocation-failure sweeps */
    unsigned inject_random_ops;
    int absurd_sizes;          /* SIZE_MAX-sized requests (needs allocator_may_return_null) */
    double conc_seconds;       /* concurrency rounds continue at least this long */
} profile;

static const profile PROFILES[] = {
    {"asan", 50, 3000, 150000, 600, 3, 60000, 3, 5, 400, 1, 4.0},
    {"tsan", 20, 1500, 0, 200, 3, 20000, 3, 2, 200, 0, 6.0},
    {"valgrind", 24, 800, 0, 150, 2, 4000, 2, 2, 120, 0, 4.0},
    {"long", 400, 20000, 1500000, 2000, 8, 300000, 4, 20, 4000, 1, 120.0},
    /* No concurrency rounds: whether readers get in between batches is up
     * to the emulator's scheduling, and qemu-user runs aarch64 code with the
     * host's memory ordering, so they would prove nothing about the ISA. */
    {"emulated", 24, 800, 0, 150, 0, 0, 0, 2, 120, 0, 0.0},
};

static const profile *P;

/* ---- random numbers and leaves ------------------------------------------- */

static void leaf_of(uint64_t seed, uint64_t index, uint8_t *out)
{
    rng r = {seed * 0x2545F4914F6CDD1Dull ^ index};
    for (int i = 0; i < 4; i++) {
        uint64_t v = rng_next(&r);
        memcpy(out + 8 * i, &v, 8);
    }
}

static uint8_t *make_leaves(uint64_t seed, uint64_t n)
{
    uint8_t *leaves = xmalloc((size_t)n * 32u);
    for (uint64_t i = 0; i < n; i++)
        leaf_of(seed, i, leaves + i * 32u);
    return leaves;
}

static uint64_t global_seed;

/* ---- the reference LeanIMT ----------------------------------------------
 * Levels are plain growable arrays; an append rehashes the right edge of
 * every level with rt_hash_parent (or lifts a lone child), nothing else. */

#define LEVELS (RT_MAX_DEPTH_LIMIT + 2)

typedef struct ref {
    unsigned arity;
    unsigned depth;
    uint64_t len[LEVELS];
    uint64_t cap[LEVELS];
    uint8_t *nodes[LEVELS];
} ref;

static void ref_init(ref *r, unsigned arity)
{
    memset(r, 0, sizeof(*r));
    r->arity = arity;
}

static void ref_free(ref *r)
{
    for (unsigned l = 0; l < LEVELS; l++)
        free(r->nodes[l]);
    memset(r, 0, sizeof(*r));
}

static const uint8_t *ref_node(const ref *r, unsigned level, uint64_t index)
{
    return r->nodes[level] + index * 32u;
}

static const uint8_t *ref_root(const ref *r)
{
    return r->len[0] ? ref_node(r, r->depth, 0) : NULL;
}

static void ref_put(ref *r, unsigned level, uint64_t index, const uint8_t *node)
{
    REQUIRE(level < LEVELS && index <= r->len[level], "reference put out of order");
    if (index == r->len[level]) {
        if (r->len[level] == r->cap[level]) {
            r->cap[level] = r->cap[level] ? 2 * r->cap[level] : 16;
            r->nodes[level] = xrealloc(r->nodes[level], (size_t)r->cap[level] * 32u);
        }
        r->len[level]++;
    }
    memcpy(r->nodes[level] + index * 32u, node, 32);
}

static void ref_append(ref *r, const uint8_t *leaf)
{
    ref_put(r, 0, r->len[0], leaf);
    for (unsigned l = 0; r->len[l] > 1; l++) {
        uint64_t index = r->len[l] - 1;
        uint64_t start = index - index % r->arity;
        unsigned members = (unsigned)(r->len[l] - start);
        uint8_t parent[32];
        if (members == 1)
            memcpy(parent, ref_node(r, l, start), 32);
        else
            REQUIRE(rt_hash_parent(ref_node(r, l, start), members, parent) == RT_OK,
                    "rt_hash_parent(%u) failed", members);
        ref_put(r, l + 1, start / r->arity, parent);
        if (l + 1 > r->depth)
            r->depth = l + 1;
    }
}

/* Reference of the first n leaves of `leaves`; roots (n + 1 entries of 32
 * bytes, entry 0 zero) gets the root after every append when not NULL. */
static void ref_build(ref *r, unsigned arity, const uint8_t *leaves, uint64_t n, uint8_t *roots)
{
    ref_init(r, arity);
    if (roots)
        memset(roots, 0, 32);
    for (uint64_t i = 0; i < n; i++) {
        ref_append(r, leaves + i * 32u);
        if (roots)
            memcpy(roots + (i + 1) * 32u, ref_root(r), 32);
    }
}

static unsigned depth_for(uint64_t size, unsigned arity)
{
    unsigned depth = 0;
    while (size > 1) {
        size = size / arity + (size % arity != 0);
        depth++;
    }
    return depth;
}

static void put_u64(uint8_t *out, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)in[i] << (8 * i);
    return v;
}

static size_t header(uint8_t *out, const char *magic, unsigned arity, unsigned levels,
                     uint64_t a, uint64_t b, const uint8_t *ha, const uint8_t *hb)
{
    memcpy(out, magic, 4);
    out[4] = RT_PROOF_VERSION;
    out[5] = (uint8_t)arity;
    out[6] = (uint8_t)levels;
    out[7] = 0;
    put_u64(out + 8, a);
    put_u64(out + 16, b);
    memcpy(out + 24, ha, 32);
    memcpy(out + 56, hb, 32);
    return RT_PROOF_HEADER_LEN;
}

/* The inclusion proof of leaf `index` as the header documents it, from the
 * reference (which must hold exactly the proof's tree). Caller frees. */
static uint8_t *expect_inclusion(const ref *r, uint64_t index, size_t *len_out)
{
    unsigned depth = r->len[0] > 1 ? r->depth : 0;
    size_t len = RT_PROOF_HEADER_LEN;
    uint64_t i = index;
    for (unsigned l = 0; l < depth; l++) {
        uint64_t start = i - i % r->arity;
        uint64_t end = start + r->arity < r->len[l] ? start + r->arity : r->len[l];
        len += 2 + 32u * (size_t)(end - start - 1);
        i /= r->arity;
    }
    uint8_t *out = xmalloc(len);
    size_t at = header(out, "RTIP", r->arity, depth, index, r->len[0], ref_root(r),
                       ref_node(r, 0, index));
    i = index;
    for (unsigned l = 0; l < depth; l++) {
        uint64_t position = i % r->arity, start = i - position;
        uint64_t end = start + r->arity < r->len[l] ? start + r->arity : r->len[l];
        out[at++] = (uint8_t)position;
        out[at++] = (uint8_t)(end - start - 1);
        for (uint64_t j = start; j < end; j++) {
            if (j == i)
                continue;
            memcpy(out + at, ref_node(r, l, j), 32);
            at += 32;
        }
        i /= r->arity;
    }
    REQUIRE(at == len, "expected proof length");
    *len_out = len;
    return out;
}

/* The consistency proof from old_size to the reference's size. */
static uint8_t *expect_consistency(const ref *r, uint64_t old_size, const uint8_t *old_root,
                                   size_t *len_out)
{
    uint64_t new_size = r->len[0];
    size_t cap = RT_PROOF_HEADER_LEN;
    for (unsigned l = 0; l <= r->depth; l++)
        cap += 2 + 32u * (size_t)r->arity;
    uint8_t *out = xmalloc(cap);
    size_t at = RT_PROOF_HEADER_LEN;
    unsigned levels = 0;
    uint64_t old_len = old_size, new_len = new_size;
    for (unsigned l = 0; old_size != new_size && (old_len > 1 || new_len > 1); l++) {
        uint64_t boundary = old_len - 1;
        uint64_t group_start = boundary - boundary % r->arity;
        uint64_t shared_end = l == 0 ? boundary + 1 : boundary;
        uint64_t new_end = group_start + r->arity < new_len ? group_start + r->arity : new_len;
        out[at++] = (uint8_t)(shared_end - group_start);
        out[at++] = (uint8_t)(new_end - boundary - 1);
        for (uint64_t j = group_start; j < shared_end; j++, at += 32)
            memcpy(out + at, ref_node(r, l, j), 32);
        for (uint64_t j = boundary + 1; j < new_end; j++, at += 32)
            memcpy(out + at, ref_node(r, l, j), 32);
        old_len = old_len / r->arity + (old_len % r->arity != 0);
        new_len = new_len / r->arity + (new_len % r->arity != 0);
        levels++;
    }
    header(out, "RTCP", r->arity, levels, old_size, new_size, old_root, ref_root(r));
    *len_out = at;
    return out;
}

/* ---- allocation failure injection ---------------------------------------- */

#if RT_TEST_WRAP
void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *ptr, size_t size);
int __real_posix_memalign(void **out, size_t align, size_t size);
void *__real_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);

/* mode 0: off; 1: allocation number `target` and every later one fail;
 * 2: each fails with probability permille/1000. Only the library's calls
 * made while armed count (the driver arms around single API calls). */
static atomic_int inject_mode;
static atomic_long inject_seen;
static atomic_long inject_failures;
static long inject_target;
static unsigned inject_permille;
static atomic_uint_least64_t inject_state = 12345;

static int inject_should_fail(void)
{
    int mode = atomic_load(&inject_mode);
    if (mode == 0)
        return 0;
    long n = atomic_fetch_add(&inject_seen, 1);
    int fail;
    if (mode == 1) {
        fail = n >= inject_target;
    } else {
        uint64_t s = atomic_fetch_add(&inject_state, 0x9E3779B97F4A7C15ull);
        rng r = {s};
        fail = rng_below(&r, 1000) < inject_permille;
    }
    if (fail)
        atomic_fetch_add(&inject_failures, 1);
    return fail;
}

void *__wrap_malloc(size_t size)
{
    if (inject_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(size);
}

void *__wrap_calloc(size_t count, size_t size)
{
    if (inject_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(count, size);
}

void *__wrap_realloc(void *ptr, size_t size)
{
    if (inject_should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(ptr, size);
}

int __wrap_posix_memalign(void **out, size_t align, size_t size)
{
    if (inject_should_fail())
        return ENOMEM;
    return __real_posix_memalign(out, align, size);
}

void *__wrap_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    if (inject_should_fail()) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap(addr, length, prot, flags, fd, offset);
}

static void arm_from(long target)
{
    inject_target = target;
    atomic_store(&inject_seen, 0);
    atomic_store(&inject_failures, 0);
    atomic_store(&inject_mode, 1);
}

static void arm_random(unsigned permille)
{
    inject_permille = permille;
    atomic_store(&inject_seen, 0);
    atomic_store(&inject_failures, 0);
    atomic_store(&inject_mode, 2);
}

static long disarm(void)
{
    atomic_store(&inject_mode, 0);
    return atomic_load(&inject_failures);
}
#endif

/* ---- pool helpers ---------------------------------------------------------- */

static void set_pool(uint32_t threads, uint64_t threshold, uint64_t chunk)
{
    struct rt_pool_config c = {threads, threshold, chunk};
    int rc = rt_pool_configure(&c);
    REQUIRE(rc == RT_OK, "rt_pool_configure(%u, %llu, %llu) = %d", threads,
            (unsigned long long)threshold, (unsigned long long)chunk, rc);
}

static void random_pool(rng *r)
{
    static const uint64_t thresholds[] = {1, 2, 8, 64, 1024};
    static const uint64_t chunks[] = {1, 3, 8, 64, 512};
    set_pool((uint32_t)(1 + rng_below(r, 3)), thresholds[rng_below(r, 5)],
             chunks[rng_below(r, 5)]);
}

static int kernels[8], kernel_count;

static void find_kernels(void)
{
    // Kernel numbers have gaps; unknown ones are never available.
    for (int k = RT_KERNEL_PORTABLE; k < 32 && kernel_count < 8; k++)
        if (rt_kernel_available(k))
            kernels[kernel_count++] = k;
    CHECK(kernel_count >= 1 && kernels[0] == RT_KERNEL_PORTABLE, "portable kernel missing");
}

/* ---- comparing trees and snapshots with the reference --------------------- */

static bool same_hash(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, 32) == 0;
}

/* Every node (or a sample of `sample` per level when nonzero) of the tree. */
static void check_tree(rt_tree *tree, const ref *r, const char *what, uint64_t sample, rng *g)
{
    struct rt_tree_state st;
    rt_tree_state(tree, &st);
    uint64_t size = r->len[0];
    unsigned depth = size > 1 ? r->depth : 0;
    CHECK(st.size == size, "%s: size %llu, expected %llu", what, (unsigned long long)st.size,
          (unsigned long long)size);
    CHECK(st.depth == depth, "%s: depth %u, expected %u", what, st.depth, depth);
    CHECK(st.has_root == (size > 0), "%s: has_root", what);
    if (size && st.size == size)
        CHECK(same_hash(st.root, ref_root(r)), "%s: root differs at size %llu", what,
              (unsigned long long)size);
    if (st.size != size || st.depth != depth)
        return;
    for (unsigned l = 0; l <= depth; l++) {
        uint64_t len = 0, want = size ? r->len[l] : 0;
        CHECK(rt_tree_level_len(tree, l, &len) == RT_OK && len == want,
              "%s: level %u len %llu, expected %llu", what, l, (unsigned long long)len,
              (unsigned long long)want);
        uint8_t node[32];
        bool all = !sample || want <= sample;
        uint64_t count = all ? want : sample;
        long bad = 0;
        for (uint64_t k = 0; k < count; k++) {
            uint64_t i = all ? k : rng_below(g, want);
            if (rt_tree_get_node(tree, l, i, node) != RT_OK || !same_hash(node, ref_node(r, l, i)))
                bad++;
        }
        CHECK(bad == 0, "%s: %ld nodes of level %u differ", what, bad, l);
        CHECK(rt_tree_get_node(tree, l, want, node) == RT_ERR_INDEX, "%s: node past level end",
              what);
    }
    uint64_t len;
    uint8_t node[32];
    CHECK(rt_tree_level_len(tree, depth + 1, &len) == RT_ERR_INDEX, "%s: level past depth", what);
    CHECK(rt_tree_get_node(tree, depth + 1, 0, node) == RT_ERR_INDEX, "%s: node past depth", what);
    CHECK(rt_tree_level_len(tree, UINT32_MAX, &len) == RT_ERR_INDEX, "%s: level UINT_MAX", what);
    CHECK(rt_tree_get_node(tree, 0, UINT64_MAX, node) == RT_ERR_INDEX, "%s: index max", what);
}

static void check_snapshot(const rt_snapshot *snap, const ref *r, const char *what,
                           uint64_t sample, rng *g)
{
    struct rt_tree_state st;
    rt_snapshot_state(snap, &st);
    uint64_t size = r->len[0];
    unsigned depth = size > 1 ? r->depth : 0;
    CHECK(st.size == size && st.depth == depth && st.has_root == (size > 0),
          "%s: snapshot state size %llu depth %u, expected %llu %u", what,
          (unsigned long long)st.size, st.depth, (unsigned long long)size, depth);
    CHECK(rt_snapshot_arity(snap) == r->arity, "%s: snapshot arity", what);
    if (st.size != size || st.depth != depth)
        return;
    if (size)
        CHECK(same_hash(st.root, ref_root(r)), "%s: snapshot root differs at size %llu", what,
              (unsigned long long)size);
    for (unsigned l = 0; l <= depth; l++) {
        uint64_t len = 0, want = size ? r->len[l] : 0;
        CHECK(rt_snapshot_level_len(snap, l, &len) == RT_OK && len == want,
              "%s: snapshot level %u len", what, l);
        uint8_t node[32];
        bool all = !sample || want <= sample;
        uint64_t count = all ? want : sample;
        long bad = 0;
        for (uint64_t k = 0; k < count; k++) {
            uint64_t i = all ? k : rng_below(g, want);
            if (rt_snapshot_get_node(snap, l, i, node) != RT_OK ||
                !same_hash(node, ref_node(r, l, i)))
                bad++;
        }
        CHECK(bad == 0, "%s: %ld snapshot nodes of level %u differ", what, bad, l);
        CHECK(rt_snapshot_get_node(snap, l, want, node) == RT_ERR_INDEX,
              "%s: snapshot node past end", what);
        if (want) {
            // A random run, and the whole level when small.
            uint64_t start = rng_below(g, want), count2 = 1 + rng_below(g, want - start);
            if (want <= 4096) {
                start = 0;
                count2 = want;
            }
            uint8_t *buf = xmalloc((size_t)count2 * 32u);
            CHECK(rt_snapshot_read_nodes(snap, l, start, count2, buf) == RT_OK &&
                      memcmp(buf, ref_node(r, l, start), (size_t)count2 * 32u) == 0,
                  "%s: read_nodes level %u [%llu, +%llu)", what, l, (unsigned long long)start,
                  (unsigned long long)count2);
            free(buf);
            CHECK(rt_snapshot_read_nodes(snap, l, want, 0, NULL) == RT_OK,
                  "%s: empty read at end", what);
            CHECK(rt_snapshot_read_nodes(snap, l, start, want - start + 1, node) == RT_ERR_INDEX,
                  "%s: read past end", what);
            CHECK(rt_snapshot_read_nodes(snap, l, UINT64_MAX, 1, node) == RT_ERR_INDEX,
                  "%s: read at UINT64_MAX", what);
        }
    }
    uint64_t len;
    CHECK(rt_snapshot_level_len(snap, depth + 1, &len) == RT_ERR_INDEX, "%s: level past depth",
          what);
}

/* The batch verifier hashes up to 16 proofs side by side, level by level, and
 * stops a block at a malformed proof: break several proofs at once, some
 * malformed (bad version byte) and some with a flipped hash byte (root, leaf
 * or sibling), then check every sub-batch starting at a sample of positions
 * names the lowest broken proof at or after its start. Restores the data. */
static void check_batch_victims(uint8_t *data, const uint64_t *offsets, uint64_t count, rng *g,
                                const char *what)
{
    enum { VICTIMS = 6 };
    uint64_t victim[VICTIMS];
    size_t at[VICTIMS];
    uint8_t saved[VICTIMS];
    unsigned victims = (unsigned)(1 + rng_below(g, VICTIMS));
    if (victims > count)
        victims = (unsigned)count;
    for (unsigned v = 0; v < victims; v++) {
        // Distinct proofs: two flips of one byte could cancel out.
        bool again;
        do {
            victim[v] = rng_below(g, count);
            again = false;
            for (unsigned u = 0; u < v; u++)
                again |= victim[u] == victim[v];
        } while (again);
        size_t plen = (size_t)(offsets[victim[v] + 1] - offsets[victim[v]]);
        at[v] = (size_t)offsets[victim[v]] +
                (rng_below(g, 4) == 0 ? 4 : 24 + (size_t)rng_below(g, plen - 24));
        saved[v] = data[at[v]];
        data[at[v]] ^= (uint8_t)(1u << rng_below(g, 8));
    }
    for (unsigned v = 0; v < victims; v++)
        CHECK(rt_verify_inclusion(data + offsets[victim[v]],
                                  (size_t)(offsets[victim[v] + 1] - offsets[victim[v]]), NULL, 0) ==
                  RT_ERR_INVALID_PROOF,
              "%s: broken proof %llu verifies alone", what, (unsigned long long)victim[v]);
    for (unsigned t = 0; t < 24; t++) {
        uint64_t start = t == 0 ? 0 : rng_below(g, count);
        uint64_t want = UINT64_MAX;
        for (unsigned v = 0; v < victims; v++)
            if (victim[v] >= start && (want == UINT64_MAX || victim[v] - start < want))
                want = victim[v] - start;
        uint64_t first = 0;
        int rc = rt_verify_inclusion_batch(data, (size_t)offsets[count], offsets + start,
                                           (size_t)(count - start), NULL, 0, &first);
        CHECK(rc == (want == UINT64_MAX ? RT_OK : RT_ERR_INVALID_PROOF) && first == want,
              "%s: %u broken proofs, sub-batch from %llu: rc %d first %llu, want %llu", what,
              victims, (unsigned long long)start, rc, (unsigned long long)first,
              (unsigned long long)want);
    }
    for (unsigned v = victims; v-- > 0;)
        data[at[v]] = saved[v];
}

/* Proofs for `count` indices (all of them when count == size) through the
 * two-pass API, compared byte for byte with the reference, verified one by
 * one and as a batch; some are tampered with. */
static void check_proofs(const rt_snapshot *snap, const ref *r, uint64_t count, rng *g,
                         const char *what, int tamper)
{
    uint64_t size = r->len[0];
    if (!size) {
        uint64_t idx = 0, offsets[2];
        size_t bad = 99;
        CHECK(rt_proofs_layout(snap, &idx, 1, offsets, &bad) == RT_ERR_INDEX && bad == 0,
              "%s: proof from an empty snapshot", what);
        CHECK(rt_proofs_layout(snap, NULL, 0, offsets, NULL) == RT_OK && offsets[0] == 0,
              "%s: no proofs from an empty snapshot", what);
        return;
    }
    bool all = count >= size;
    if (all)
        count = size;
    uint64_t *idx = xmalloc((size_t)count * 8u);
    for (uint64_t k = 0; k < count; k++)
        idx[k] = all ? k : rng_below(g, size);
    uint64_t *offsets = xmalloc((size_t)(count + 1) * 8u);
    size_t bad = SIZE_MAX;
    int rc = rt_proofs_layout(snap, idx, (size_t)count, offsets, &bad);
    CHECK(rc == RT_OK, "%s: layout %d", what, rc);
    if (rc != RT_OK) {
        free(idx);
        free(offsets);
        return;
    }
    uint8_t *data = xmalloc((size_t)offsets[count]);
    CHECK(rt_proofs_fill(snap, idx, (size_t)count, offsets, data) == RT_OK, "%s: fill", what);
    long mismatched = 0, unverified = 0;
    for (uint64_t k = 0; k < count; k++) {
        size_t len;
        uint8_t *want = expect_inclusion(r, idx[k], &len);
        uint8_t *got = data + offsets[k];
        if (len != offsets[k + 1] - offsets[k] || memcmp(want, got, len) != 0)
            mismatched++;
        if (rt_verify_inclusion(got, (size_t)(offsets[k + 1] - offsets[k]), NULL, 0) != RT_OK)
            unverified++;
        free(want);
    }
    CHECK(mismatched == 0, "%s: %ld of %llu proofs differ from the reference", what, mismatched,
          (unsigned long long)count);
    CHECK(unverified == 0, "%s: %ld proofs do not verify", what, unverified);
    uint64_t first = 0;
    CHECK(rt_verify_inclusion_batch(data, (size_t)offsets[count], offsets, (size_t)count, NULL, 0,
                                    &first) == RT_OK && first == UINT64_MAX,
          "%s: batch verify", what);
    if (count) {
        // Against what a verifier trusts: the snapshot's root at its size
        // passes; the same root at any other size fails every proof.
        uint8_t trusted[32];
        memcpy(trusted, data + 24, 32);
        CHECK(rt_verify_inclusion_batch(data, (size_t)offsets[count], offsets, (size_t)count,
                                        trusted, size, &first) == RT_OK && first == UINT64_MAX,
              "%s: batch verify against the trusted root and size", what);
        CHECK(rt_verify_inclusion_batch(data, (size_t)offsets[count], offsets, (size_t)count,
                                        trusted, size + 1, &first) == RT_ERR_INVALID_PROOF &&
                  first == 0,
              "%s: batch verified against a wrong size", what);
        CHECK(rt_verify_inclusion(data, (size_t)offsets[1], trusted, size) == RT_OK &&
                  rt_verify_inclusion(data, (size_t)offsets[1], trusted, size - 1) ==
                      RT_ERR_INVALID_PROOF,
              "%s: single verify against the trusted size", what);
        trusted[0] ^= 1;
        CHECK(rt_verify_inclusion_batch(data, (size_t)offsets[count], offsets, (size_t)count,
                                        trusted, size, &first) == RT_ERR_INVALID_PROOF &&
                  first == 0,
              "%s: batch verified against a wrong root", what);
    }

    if (tamper && count) {
        // Break one proof in the middle of the batch (its root, leaf or
        // levels): the batch must name exactly that position.
        uint64_t victim = rng_below(g, count);
        size_t plen = (size_t)(offsets[victim + 1] - offsets[victim]);
        size_t at = (size_t)offsets[victim] + 24 + (size_t)rng_below(g, plen - 24);
        uint8_t saved = data[at];
        data[at] ^= (uint8_t)(1u << rng_below(g, 8));
        first = 0;
        rc = rt_verify_inclusion_batch(data, (size_t)offsets[count], offsets, (size_t)count, NULL, 0,
                                       &first);
        CHECK(rc == RT_ERR_INVALID_PROOF && first == victim,
              "%s: tampered proof %llu: rc %d first %llu", what, (unsigned long long)victim, rc,
              (unsigned long long)first);
        data[at] = saved;
        check_batch_victims(data, offsets, count, g, what);
    }
    free(data);
    free(offsets);
    free(idx);
}

/* Every single-bit flip of every byte of one proof, and every truncation.
 * A flip of the leaf index, the root, the leaf or a level must never
 * verify. A flip of the arity or tree_size byte may: the root commits to
 * neither (a 3-leaf tree has the same root for every arity >= 3, and sizes
 * with the same group shapes give the same path), so such a proof still
 * states a true fact: this leaf at this index under this root. */
static void check_mutations(const rt_snapshot *snap, uint64_t index, const char *what, rng *g)
{
    uint64_t offsets[2];
    if (rt_proofs_layout(snap, &index, 1, offsets, NULL) != RT_OK)
        return;
    size_t len = (size_t)offsets[1];
    uint8_t *proof = xmalloc(len + 1);
    CHECK(rt_proofs_fill(snap, &index, 1, offsets, proof) == RT_OK, "%s: fill", what);
    CHECK(rt_verify_inclusion(proof, len, NULL, 0) == RT_OK, "%s: genuine proof", what);
    long false_accepts = 0;
    // Every bit of the header and of the first level's counts; in long
    // proofs (high arities) a sample of the sibling bytes, one bit each.
    size_t tries = len <= 2048 ? len : 2048;
    for (size_t t = 0; t < tries; t++) {
        size_t at = len <= 2048 || t < RT_PROOF_HEADER_LEN + 2 ? t : (size_t)rng_below(g, len);
        unsigned bits = at < RT_PROOF_HEADER_LEN + 2 || len <= 2048 ? 8 : 1;
        for (unsigned b = 0; b < bits; b++) {
            unsigned bit = bits == 8 ? b : (unsigned)rng_below(g, 8);
            proof[at] ^= (uint8_t)(1u << bit);
            if (rt_verify_inclusion(proof, len, NULL, 0) == RT_OK && (at >= 24 || (at >= 8 && at < 16)))
                false_accepts++;
            proof[at] ^= (uint8_t)(1u << bit);
        }
    }
    CHECK(false_accepts == 0, "%s: %ld bit flips verified", what, false_accepts);
    for (size_t cut = 0; cut < len; cut += cut < 256 ? 1 : 1 + (size_t)rng_below(g, 64))
        if (rt_verify_inclusion(proof, cut, NULL, 0) == RT_OK)
            false_accepts++;
    proof[len] = 0;
    if (rt_verify_inclusion(proof, len + 1, NULL, 0) == RT_OK)
        false_accepts++;
    CHECK(false_accepts == 0, "%s: truncated or extended proofs verified", what);
    free(proof);
}

static void check_consistency(const rt_snapshot *snap, const ref *r, uint64_t old_size,
                              const uint8_t *old_root, const char *what)
{
    size_t len = 0;
    int rc = rt_consistency_layout(snap, old_size, &len);
    CHECK(rc == RT_OK, "%s: consistency size from %llu: %d", what,
          (unsigned long long)old_size, rc);
    if (rc != RT_OK)
        return;
    uint8_t *got = xmalloc(len);
    CHECK(rt_consistency_fill(snap, old_size, got, len) == RT_OK, "%s: consistency fill", what);
    size_t want_len;
    uint8_t *want = expect_consistency(r, old_size, old_root, &want_len);
    CHECK(want_len == len && memcmp(want, got, len) == 0,
          "%s: consistency proof %llu -> %llu differs", what, (unsigned long long)old_size,
          (unsigned long long)r->len[0]);
    if (len > 1)
        CHECK(rt_consistency_fill(snap, old_size, got, len - 1) == RT_ERR_INVALID_ARGUMENT,
              "%s: short consistency buffer", what);
    free(want);
    free(got);
}

/* ---- 1. API contract: bad arguments ---------------------------------------- */

/* Result buffers: every size class (malloc, new mapping, reused mapping of
 * the same or a smaller size) is writable end to end and freed cleanly. */
static void test_result_buffers(void)
{
    rt_buffer_free(NULL);
    const size_t sizes[] = {0, 1, 4096, (2u << 20) - 64, (2u << 20) - 63, 3u << 20,
                            3u << 20, (5u << 20) + 7, 1u << 20};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            uint8_t *buffer = rt_buffer_alloc(sizes[i]);
            CHECK(buffer != NULL, "rt_buffer_alloc(%zu)", sizes[i]);
            if (!buffer)
                continue;
            CHECK(((uintptr_t)buffer & 63) == 0, "buffer of %zu bytes not 64-byte aligned",
                  sizes[i]);
            memset(buffer, (int)i, sizes[i]);
            long wrong = 0;
            for (size_t at = 0; at < sizes[i]; at += 4093)
                wrong += buffer[at] != (uint8_t)i;
            CHECK(wrong == 0, "buffer of %zu bytes lost writes", sizes[i]);
            rt_buffer_free(buffer);
        }
        rt_release_cached_memory(); // the second round maps afresh
    }
    CHECK(rt_buffer_alloc(SIZE_MAX) == NULL, "SIZE_MAX buffer");
    CHECK(rt_buffer_alloc(SIZE_MAX - 64) == NULL, "SIZE_MAX - 64 buffer");
}

/* 1 when MADV_POPULATE_WRITE really makes memory resident here. */
static int populate_works(void)
{
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
    uint8_t *probe = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int supported = probe != MAP_FAILED && madvise(probe, 4096, MADV_POPULATE_WRITE) == 0;
    // qemu-user accepts any madvise advice and does nothing: the probe page
    // must really have become resident for residency checks to mean anything.
    unsigned char probe_resident = 0;
    supported = supported && mincore(probe, 4096, &probe_resident) == 0 && (probe_resident & 1);
    if (probe != MAP_FAILED)
        munmap(probe, 4096);
    return supported;
#else
    return 0;
#endif
}

/* Pre-faulting ahead of a growing tree: the background thread populates a
 * mapping while this thread writes into it; nothing written may change,
 * and (where the kernel supports it) the range ends up resident. */
static void test_prefault(void)
{
    const size_t bytes = 6u << 20;
    size_t got = 0;
    uint8_t *memory = rt_mapping_get(bytes, &got);
    if (!memory) {
        printf("test_prefault: no mapping on this platform\n");
        return;
    }
    memset(memory, 0xA5, bytes / 3);
    rt_mapping_prefault(memory + 100, bytes - 200);
    rt_mapping_prefault(memory, 0);
    for (size_t at = bytes / 3; at < 2 * (bytes / 3); at += 977)
        memory[at] = (uint8_t)(at * 7);
    rt_mapping_prefault_wait();
    long wrong = 0;
    for (size_t at = 0; at < bytes / 3; at += 61)
        wrong += memory[at] != 0xA5;
    for (size_t at = bytes / 3; at < 2 * (bytes / 3); at += 977)
        wrong += memory[at] != (uint8_t)(at * 7);
    CHECK(wrong == 0, "pre-faulting changed %ld written bytes", wrong);
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
    // The last third was never written: only pre-faulting can have made it
    // resident, which it must have if this kernel has MADV_POPULATE_WRITE.
    int supported = populate_works();
    if (!supported)
        printf("test_prefault: MADV_POPULATE_WRITE does not populate here; residency not checked\n");
    static unsigned char resident[(6u << 20) / 4096];
    size_t first = 2 * (bytes / 3) / 4096 + 1, last = (bytes - 200) / 4096, missing = 0;
    if (supported && mincore(memory, bytes, resident) == 0) {
        for (size_t i = first; i < last; i++)
            missing += !(resident[i] & 1);
        CHECK(missing == 0, "%zu of %zu pages not pre-faulted", missing, last - first);
    }
#endif
    rt_mapping_put(memory, got);
}

/* A tree growing by batches of one size: every chunk a batch appends must
 * already be resident when the batch starts (a batch before asked for it
 * to be pre-faulted) at every level that grows by at least 64 KiB a batch,
 * whether its slab is a mapping or malloc'd, and including the chunks of a
 * batch that crosses from one slab into the next, which used to be made,
 * and faulted, by the batch itself. With a CPU the pool leaves idle, the
 * batch after next is ready too (`ahead` batches are checked at a time). */
#define GROWTH_LEVELS 3
static void prefault_growth(uint32_t threads, unsigned ahead)
{
    struct rt_pool_config config;
    rt_pool_get_config(&config);
    config.num_threads = threads;
    REQUIRE(rt_pool_configure(&config) == RT_OK, "pool of %u", threads);
    // Per batch: 625 level-0 chunks (2.6 MB, mapped slabs; a few batches
    // fill one), 157 at level 1 and 40 at level 2 (malloc'd slabs).
    const uint64_t batch = 80000;
    const unsigned rounds = 6;
    const uintptr_t page = 4096;
    uint8_t *leaves = make_leaves(global_seed ^ 0x6e0, batch), root[32];
    rt_tree *tree = NULL;
    REQUIRE(rt_tree_new(4, 32, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "new tree");
    unsigned crossed = 0;
    for (unsigned r = 0; r < rounds; r++) {
        // Per level, where its next chunks can come from (the slab it
        // carves from and its spare), and what of that is resident.
        rt_slab *from[GROWTH_LEVELS][2];
        uint8_t *start[GROWTH_LEVELS][2];
        unsigned char *resident[GROWTH_LEVELS][2];
        size_t before[GROWTH_LEVELS];
        for (unsigned l = 0; l < GROWTH_LEVELS; l++) {
            rt_level *level = &tree->levels[l];
            from[l][0] = level->carver;
            from[l][1] = level->spare;
            before[l] = level->table ? level->table->count : 0;
            for (int i = 0; i < 2; i++) {
                resident[l][i] = NULL;
                if (!from[l][i])
                    continue;
                start[l][i] = (uint8_t *)((uintptr_t)from[l][i]->base & ~(page - 1));
                size_t span = (size_t)(from[l][i]->base + from[l][i]->bytes - start[l][i]);
                resident[l][i] = xmalloc(span / page + 1);
                REQUIRE(mincore(start[l][i], span, (void *)resident[l][i]) == 0, "mincore");
            }
        }
        // The first round starts an empty tree: nothing was asked for yet.
        unsigned batches = r ? ahead : 1;
        for (unsigned b = 0; b < batches; b++)
            REQUIRE(rt_tree_insert_many(tree, leaves, batch, root) == RT_OK, "round %u", r);
        for (unsigned l = 0; l < GROWTH_LEVELS; l++) {
            rt_level *level = &tree->levels[l];
            size_t cold = 0, other_slab = 0;
            for (size_t c = before[l]; r > 0 && c < level->table->count; c++) {
                rt_chunk *chunk = level->table->slots[c];
                int warm = 0;
                for (int i = 0; i < 2; i++)
                    if (resident[l][i] && (uint8_t *)chunk >= from[l][i]->base &&
                        (uint8_t *)chunk < from[l][i]->base + from[l][i]->bytes)
                        warm = resident[l][i][(size_t)((uint8_t *)chunk - start[l][i]) / page] & 1;
                cold += !warm;
                other_slab += chunk->slab != from[l][0];
            }
            crossed += l == 0 && other_slab > 0;
            // A page at either end of a pre-faulted range may be left out
            // (requests cover whole 4 KiB pages inside the range), and where
            // the kernel gives no huge page the chunk starting there is cold.
            CHECK(cold <= 2 * batches,
                  "%u thread(s), round %u: %zu of %zu new level-%u chunks were not pre-faulted",
                  threads, r, cold, level->table->count - before[l], l);
            free(resident[l][0]);
            free(resident[l][1]);
        }
        rt_mapping_prefault_wait();
    }
    CHECK(crossed > 0, "no batch crossed into a new level-0 slab: the test proves nothing");
    rt_tree_free(tree);
    free(leaves);
}

static int refuse_gate(void *ctx)
{
    (void)ctx;
    return RT_ERR_IO;
}

/* A single insert hashes the level-0 prefix the next one will need (on
 * kernels with a paired compression); that prefix ends with its own leaf, so
 * a refused insert must leave none behind, whichever leaf comes next. */
static void test_prefix_hashed_ahead_is_dropped_when_refused(void)
{
    const int initial = rt_kernel_active();
    for (int kernel = RT_KERNEL_PORTABLE; kernel <= RT_KERNEL_NEON; kernel++) {
        if (!rt_kernel_available(kernel))
            continue;
        REQUIRE(rt_kernel_select(kernel) == RT_OK, "select %d", kernel);
        int paired = rt_active_compress2_fn() != NULL;
        for (int rule = RT_RULE_ROTORTREE_015; rule <= RT_RULE_LEANIMT; rule++) {
            const unsigned arity = 8;
            uint8_t *leaves = make_leaves(global_seed ^ 0x9a1, 40), root[32], want[32];
            uint8_t other[32];
            leaf_of(global_seed ^ 0x9a2, 0, other);
            rt_tree *tree = NULL;
            REQUIRE(rt_tree_new(arity, 8, rule, &tree) == RT_OK, "new tree");
            // Leaves 0..4 one by one: after leaf 4 (the fifth of group 0)
            // the prefix of six members is hashed ahead.
            for (unsigned i = 0; i < 5; i++)
                REQUIRE(rt_tree_insert(tree, leaves + 32 * i, root) == RT_OK, "insert %u", i);
            CHECK(!paired || tree->next_prefix.members == 6,
                  "kernel %d rule %d: no prefix hashed ahead (%u members)", kernel, rule,
                  tree->next_prefix.members);
            // Leaf 5 refused after hashing: its prefix for six members
            // covers leaf 5, and must not be kept.
            CHECK(rt_tree_insert_many_gated(tree, leaves + 32 * 5, 1, root, refuse_gate, NULL) ==
                      RT_ERR_IO, "refused insert");
            CHECK(tree->size == 5 && tree->next_prefix.members == 0,
                  "kernel %d rule %d: a refused insert kept its prefix (%u members)", kernel,
                  rule, tree->next_prefix.members);
            // Another leaf at 5, then the rest: every root as the batch's.
            memcpy(leaves + 32 * 5, other, 32);
            for (unsigned i = 5; i < 40; i++) {
                REQUIRE(rt_tree_insert(tree, leaves + 32 * i, root) == RT_OK, "insert %u", i);
                REQUIRE(rt_compute_root(leaves, i + 1, arity, rule, want) == RT_OK, "root");
                CHECK(same_hash(root, want), "kernel %d rule %d: root at %u", kernel, rule, i + 1);
            }
            rt_tree_free(tree);
            free(leaves);
        }
    }
    REQUIRE(rt_kernel_select(initial) == RT_OK, "restore kernel");
}

/* 1 when every 4 KiB page of [from, from + bytes) is resident (mincore),
 * 0 when one is not, -1 when unknown. */
static int range_resident(const uint8_t *from, size_t bytes)
{
    uintptr_t first = (uintptr_t)from & ~(uintptr_t)4095;
    size_t pages = (size_t)(((uintptr_t)from + bytes + 4095 - first) / 4096);
    // mincore takes unsigned char * on Linux, char * on macOS: through void *.
    unsigned char resident[8];
    if (pages > sizeof resident || mincore((void *)first, pages * 4096, (void *)resident) != 0)
        return -1;
    for (size_t i = 0; i < pages; i++)
        if (!(resident[i] & 1))
            return 0;
    return 1;
}

/* A tree growing by single inserts takes a chunk at a time, below the batch
 * rule's pre-fault threshold; its mapped slabs must still be populated ahead
 * of carving, or every huge page is zeroed on the inserting thread (before
 * the fix, the chunk running into each new huge page, and the first chunk of
 * each new slab, were cold). Before each insert that takes a new level-0
 * chunk, the pre-fault thread is waited for and the places the chunk can
 * come from (its carver's next chunk, its spare slab's first) are probed;
 * the chunk it takes must be one of them, and resident. */
static void test_prefault_single_inserts(void)
{
    if (!P->big_tree) {
        printf("test_prefault_single_inserts: no big trees in this profile\n");
        return;
    }
    if (!populate_works()) {
        printf("test_prefault_single_inserts: MADV_POPULATE_WRITE does not populate here\n");
        return;
    }
    // The batch makes level 0 carve from mapped slabs (over 2 MiB); the
    // single inserts then fill them, crossing huge pages and into new slabs.
    const uint64_t batch = 100000, singles = 300000;
    // Mappings cached from earlier tests' trees are resident already.
    rt_release_cached_memory();
    uint8_t *leaves = make_leaves(global_seed ^ 0x51e, batch), root[32];
    rt_tree *tree = NULL;
    REQUIRE(rt_tree_new(4, 32, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "new tree");
    REQUIRE(rt_tree_insert_many(tree, leaves, batch, root) == RT_OK, "batch");
    rt_level *level = &tree->levels[0];
    const size_t node_bytes = (size_t)tree->chunk_cap * 32u;
    size_t new_chunks = 0, cold = 0, unknown = 0, new_slabs = 0;
    for (uint64_t i = 0; i < singles; i++) {
        uint8_t leaf[32];
        leaf_of(global_seed ^ 0x51f, i, leaf);
        int takes_chunk = tree->size % tree->chunk_cap == 0;
        const uint8_t *candidates[2] = {NULL, NULL};
        int resident[2] = {0, 0};
        rt_slab *carver = level->carver;
        if (takes_chunk) {
            rt_mapping_prefault_wait();
            rt_slab *spare = level->spare;
            if (carver && carver->bytes > carver->carved)
                candidates[0] = carver->base + carver->carved;
            if (spare)
                candidates[1] = spare->base + spare->carved;
            for (int c = 0; c < 2; c++)
                if (candidates[c])
                    resident[c] = range_resident(candidates[c], sizeof(rt_chunk) + node_bytes);
        }
        REQUIRE(rt_tree_insert(tree, leaf, root) == RT_OK, "single insert %llu",
                (unsigned long long)i);
        if (!takes_chunk)
            continue;
        new_chunks++;
        new_slabs += level->carver != carver;
        const uint8_t *chunk = (const uint8_t *)level->table->slots[level->table->count - 1];
        int warm = 0;
        for (int c = 0; c < 2; c++)
            if (candidates[c] == chunk) {
                warm = resident[c] == 1;
                unknown += resident[c] < 0;
            }
        cold += !warm;
    }
    CHECK(new_chunks > 2000 && new_slabs > 0 && level->carver->mapped && unknown == 0,
          "%zu new level-0 chunks, %zu new slabs, %zu unknown residencies: the test proves nothing",
          new_chunks, new_slabs, unknown);
    CHECK(cold == 0, "%zu of %zu level-0 chunks taken by single inserts were not pre-faulted",
          cold, new_chunks);
    rt_tree_free(tree);
    free(leaves);
}

static void test_prefault_growth(void)
{
    if (!P->big_tree) {
        printf("test_prefault_growth: no big trees in this profile\n");
        return;
    }
    if (!populate_works()) {
        printf("test_prefault_growth: MADV_POPULATE_WRITE does not populate here\n");
        return;
    }
    struct rt_pool_config initial;
    rt_pool_get_config(&initial);
    uint32_t cpus = rt_pool_cpus();
    prefault_growth(cpus, 1);
    if (cpus > 1)
        prefault_growth(1, 2);
    else
        printf("test_prefault_growth: one CPU, two batches ahead not checked\n");
    REQUIRE(rt_pool_configure(&initial) == RT_OK, "restore pool config");
}

static void test_api_errors(void)
{
    rt_tree *tree = NULL;
    CHECK(rt_tree_new(1, 4, RT_RULE_ROTORTREE_015, &tree) == RT_ERR_INVALID_ARGUMENT && !tree, "arity 1");
    CHECK(rt_tree_new(256, 4, RT_RULE_ROTORTREE_015, &tree) == RT_ERR_INVALID_ARGUMENT && !tree, "arity 256");
    CHECK(rt_tree_new(4, 0, RT_RULE_ROTORTREE_015, &tree) == RT_ERR_INVALID_ARGUMENT && !tree, "max_depth 0");
    CHECK(rt_tree_new(4, RT_MAX_DEPTH_LIMIT + 1, RT_RULE_ROTORTREE_015, &tree) == RT_ERR_INVALID_ARGUMENT && !tree,
          "max_depth 65");
    CHECK(rt_tree_new(4, 4, RT_RULE_ROTORTREE_015, NULL) == RT_ERR_INVALID_ARGUMENT, "NULL out");
    rt_tree_free(NULL);
    rt_snapshot_free(NULL);

    for (int status = -2; status <= 20; status++) {
        const char *msg = rt_strerror(status);
        CHECK(msg && *msg, "rt_strerror(%d)", status);
    }
    uint8_t buf[RT_MAX_ARITY * 32 + 32] = {0}, out[32];
    CHECK(rt_hash_parent(buf, 0, out) == RT_ERR_INVALID_ARGUMENT, "hash_parent 0");
    CHECK(rt_hash_parent(buf, 1, out) == RT_ERR_INVALID_ARGUMENT, "hash_parent 1");
    CHECK(rt_hash_parent(buf, 256, out) == RT_ERR_INVALID_ARGUMENT, "hash_parent 256");
    CHECK(rt_hash_parent(buf, 255, out) == RT_OK, "hash_parent 255");
    CHECK(rt_kernel_select(-1) == RT_ERR_INVALID_ARGUMENT, "kernel -1");
    CHECK(rt_kernel_select(RT_KERNEL_NEON + 1) == RT_ERR_INVALID_ARGUMENT, "unknown kernel");
    CHECK(!rt_kernel_available(-1) && !rt_kernel_available(99), "kernel availability");
    CHECK(strcmp(rt_kernel_name(42), "unknown") == 0, "kernel name");

    struct rt_pool_config before, bad;
    rt_pool_get_config(&before);
    CHECK(rt_pool_configure(NULL) == RT_ERR_INVALID_ARGUMENT, "configure NULL");
    bad = before;
    bad.num_threads = 0;
    CHECK(rt_pool_configure(&bad) == RT_ERR_INVALID_ARGUMENT, "threads 0");
    bad = before;
    bad.num_threads = 1025;
    CHECK(rt_pool_configure(&bad) == RT_ERR_INVALID_ARGUMENT, "threads 1025");
    bad = before;
    bad.parallel_threshold = 0;
    CHECK(rt_pool_configure(&bad) == RT_ERR_INVALID_ARGUMENT, "threshold 0");
    bad = before;
    bad.par_chunk_size = 0;
    CHECK(rt_pool_configure(&bad) == RT_ERR_INVALID_ARGUMENT, "chunk 0");
    struct rt_pool_config after;
    rt_pool_get_config(&after);
    CHECK(before.num_threads == after.num_threads &&
              before.parallel_threshold == after.parallel_threshold &&
              before.par_chunk_size == after.par_chunk_size,
          "a refused configure changed nothing");

    // Insert errors on a tree of capacity 2 (arity 2, max_depth 1).
    REQUIRE(rt_tree_new(2, 1, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    uint8_t leaves[3 * 32];
    for (int i = 0; i < 3; i++)
        leaf_of(7, (uint64_t)i, leaves + 32 * i);
    uint8_t root[32];
    CHECK(rt_tree_insert_many(NULL, leaves, 1, root) == RT_ERR_INVALID_ARGUMENT, "NULL tree");
    CHECK(rt_tree_insert_many(tree, NULL, 1, root) == RT_ERR_INVALID_ARGUMENT, "NULL leaves");
    CHECK(rt_tree_insert_many(tree, leaves, 1, NULL) == RT_ERR_INVALID_ARGUMENT, "NULL root");
    CHECK(rt_tree_insert_many(tree, leaves, 0, root) == RT_ERR_EMPTY_BATCH, "empty batch");
    CHECK(rt_tree_insert_many(tree, NULL, 0, root) == RT_ERR_EMPTY_BATCH, "empty NULL batch");
    CHECK(rt_tree_insert_many(tree, leaves, 3, root) == RT_ERR_MAX_DEPTH, "3 into capacity 2");
    // The capacity check comes before anything reads the leaves: a count
    // far beyond the buffer must be refused without touching it.
    CHECK(rt_tree_insert_many(tree, leaves, SIZE_MAX, root) == RT_ERR_MAX_DEPTH, "SIZE_MAX");
    CHECK(rt_tree_insert_many(tree, leaves, 2, root) == RT_OK, "exact capacity");
    uint8_t want[32];
    CHECK(rt_hash_parent(leaves, 2, want) == RT_OK && same_hash(root, want), "root at capacity");
    CHECK(rt_tree_insert(tree, leaves + 64, root) == RT_ERR_MAX_DEPTH, "one past capacity");
    CHECK(rt_tree_insert_many(tree, leaves, 1, root) == RT_ERR_MAX_DEPTH, "batch past capacity");
    struct rt_tree_state st;
    rt_tree_state(tree, &st);
    CHECK(st.size == 2 && st.depth == 1 && same_hash(st.root, want), "full tree unchanged");
    unsigned arity = 0, max_depth = 0;
    rt_tree_shape(tree, &arity, &max_depth);
    CHECK(arity == 2 && max_depth == 1, "shape");

    rt_snapshot *snap = NULL;
    CHECK(rt_tree_snapshot(NULL, &snap) == RT_ERR_INVALID_ARGUMENT, "snapshot NULL tree");
    CHECK(rt_tree_snapshot(tree, NULL) == RT_ERR_INVALID_ARGUMENT, "snapshot NULL out");
    REQUIRE(rt_tree_snapshot(tree, &snap) == RT_OK, "snapshot");
    uint64_t idx[2] = {0, 5}, offsets[3];
    size_t bad_pos = 0;
    CHECK(rt_proofs_layout(NULL, idx, 1, offsets, NULL) == RT_ERR_INVALID_ARGUMENT, "layout NULL");
    CHECK(rt_proofs_layout(snap, NULL, 1, offsets, NULL) == RT_ERR_INVALID_ARGUMENT,
          "layout NULL indices");
    CHECK(rt_proofs_layout(snap, idx, 1, NULL, NULL) == RT_ERR_INVALID_ARGUMENT,
          "layout NULL offsets");
    CHECK(rt_proofs_layout(snap, idx, 2, offsets, &bad_pos) == RT_ERR_INDEX && bad_pos == 1,
          "layout bad index position");
    CHECK(rt_proofs_layout(snap, idx, 2, offsets, NULL) == RT_ERR_INDEX, "layout NULL bad_pos");
    CHECK(rt_proofs_layout(snap, idx, 1, offsets, NULL) == RT_OK, "layout");
    uint8_t proof[RT_PROOF_HEADER_LEN + 64];
    REQUIRE(offsets[1] <= sizeof(proof), "proof size");
    CHECK(rt_proofs_fill(NULL, idx, 1, offsets, proof) == RT_ERR_INVALID_ARGUMENT, "fill NULL");
    CHECK(rt_proofs_fill(snap, idx, 1, offsets, NULL) == RT_ERR_INVALID_ARGUMENT, "fill NULL out");
    // An index that no longer matches its slot is refused, not written.
    uint64_t other[1] = {7};
    CHECK(rt_proofs_fill(snap, other, 1, offsets, proof) == RT_ERR_INVALID_ARGUMENT,
          "fill index past size");
    CHECK(rt_proofs_fill(snap, idx, 1, offsets, proof) == RT_OK, "fill");
    CHECK(rt_verify_inclusion(NULL, 10, NULL, 0) == RT_ERR_INVALID_ARGUMENT, "verify NULL");
    CHECK(rt_verify_inclusion(proof, (size_t)offsets[1], NULL, 0) == RT_OK, "verify");
    uint64_t first = 0;
    CHECK(rt_verify_inclusion_batch(proof, (size_t)offsets[1], NULL, 1, NULL, 0, &first) ==
              RT_ERR_INVALID_ARGUMENT, "batch NULL offsets");
    CHECK(rt_verify_inclusion_batch(proof, (size_t)offsets[1], offsets, 1, NULL, 0, NULL) ==
              RT_ERR_INVALID_ARGUMENT, "batch NULL first");
    CHECK(rt_verify_inclusion_batch(NULL, 0, offsets, 1, NULL, 0, &first) == RT_ERR_INVALID_ARGUMENT,
          "batch NULL data");
    CHECK(rt_verify_inclusion_batch(proof, (size_t)offsets[1] - 1, offsets, 1, NULL, 0, &first) ==
              RT_ERR_INVALID_ARGUMENT, "batch offsets past data");
    uint64_t backwards[3] = {0, 100, 50};
    CHECK(rt_verify_inclusion_batch(proof, sizeof(proof), backwards, 2, NULL, 0, &first) ==
              RT_ERR_INVALID_ARGUMENT, "batch decreasing offsets");
    uint64_t none[1] = {0};
    CHECK(rt_verify_inclusion_batch(NULL, 0, none, 0, NULL, 0, &first) == RT_OK && first == UINT64_MAX,
          "empty batch verifies");
    size_t clen = 0;
    CHECK(rt_consistency_layout(NULL, 1, &clen) == RT_ERR_INVALID_ARGUMENT, "consistency NULL");
    CHECK(rt_consistency_layout(snap, 0, &clen) == RT_ERR_INDEX, "consistency from 0");
    CHECK(rt_consistency_layout(snap, 3, &clen) == RT_ERR_INDEX, "consistency past size");
    CHECK(rt_consistency_layout(snap, 1, &clen) == RT_OK, "consistency 1 -> 2");
    CHECK(rt_consistency_fill(snap, 1, NULL, clen) == RT_ERR_INVALID_ARGUMENT,
          "consistency NULL out");
    CHECK(rt_snapshot_read_nodes(NULL, 0, 0, 1, proof) == RT_ERR_INVALID_ARGUMENT,
          "read_nodes NULL");
    CHECK(rt_snapshot_read_nodes(snap, 0, 0, 1, NULL) == RT_ERR_INVALID_ARGUMENT,
          "read_nodes NULL out");
    rt_snapshot_free(snap);

    // Restore and make_cold argument errors.
    struct rt_level_source src[2] = {{leaves, 0, NULL}, {want, 0, NULL}};
    uint64_t cold = 0;
    CHECK(rt_tree_restore(NULL, 2, src, 2) == RT_ERR_INVALID_ARGUMENT, "restore NULL tree");
    CHECK(rt_tree_restore(tree, 2, src, 2) == RT_ERR_INVALID_ARGUMENT, "restore non-empty");
    CHECK(rt_tree_make_cold(NULL, 0, leaves, 2, &cold) == RT_ERR_INVALID_ARGUMENT, "cold NULL");
    CHECK(rt_tree_make_cold(tree, 0, NULL, 2, &cold) == RT_ERR_INVALID_ARGUMENT,
          "cold NULL nodes");
    CHECK(rt_tree_make_cold(tree, 0, leaves, 2, NULL) == RT_ERR_INVALID_ARGUMENT,
          "cold NULL out");
    CHECK(rt_tree_make_cold(tree, 5, leaves, 2, &cold) == RT_ERR_INDEX, "cold level past depth");
    cold = 77;
    CHECK(rt_tree_make_cold(tree, 0, leaves, 2, &cold) == RT_OK && cold == 0,
          "no whole chunk to make cold");
    rt_tree_free(tree);

    REQUIRE(rt_tree_new(2, 1, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    CHECK(rt_tree_restore(tree, 0, src, 1) == RT_ERR_INVALID_ARGUMENT, "restore size 0");
    CHECK(rt_tree_restore(tree, 3, src, 2) == RT_ERR_MAX_DEPTH, "restore past capacity");
    CHECK(rt_tree_restore(tree, 2, src, 1) == RT_ERR_INVALID_ARGUMENT, "restore level count");
    CHECK(rt_tree_restore(tree, 2, src, 3) == RT_ERR_INVALID_ARGUMENT, "restore level count 3");
    CHECK(rt_tree_restore(tree, 2, NULL, 2) == RT_ERR_INVALID_ARGUMENT, "restore NULL levels");
    struct rt_level_source hole[2] = {{leaves, 0, NULL}, {NULL, 0, NULL}};
    CHECK(rt_tree_restore(tree, 2, hole, 2) == RT_ERR_INVALID_ARGUMENT, "restore NULL nodes");
    rt_tree_state(tree, &st);
    CHECK(st.size == 0 && !st.has_root, "refused restores leave the tree empty");
    CHECK(rt_tree_make_cold(tree, 0, leaves, 2, &cold) == RT_ERR_INDEX, "cold on empty tree");
    CHECK(rt_tree_restore(tree, 2, src, 2) == RT_OK, "restore");
    rt_tree_state(tree, &st);
    CHECK(st.size == 2 && same_hash(st.root, want), "restored root");
    rt_tree_free(tree);

    // Empty trees and snapshots.
    REQUIRE(rt_tree_new(4, 8, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    rt_tree_state(tree, &st);
    CHECK(st.size == 0 && st.depth == 0 && !st.has_root, "empty state");
    uint64_t len = 9;
    CHECK(rt_tree_level_len(tree, 0, &len) == RT_OK && len == 0, "empty level 0");
    CHECK(rt_tree_get_node(tree, 0, 0, out) == RT_ERR_INDEX, "empty node");
    REQUIRE(rt_tree_snapshot(tree, &snap) == RT_OK, "empty snapshot");
    rt_tree_free(tree); // the snapshot outlives its (empty) tree
    rt_snapshot_state(snap, &st);
    CHECK(st.size == 0 && !st.has_root, "empty snapshot state");
    CHECK(rt_snapshot_level_len(snap, 0, &len) == RT_OK && len == 0, "empty snapshot level");
    CHECK(rt_snapshot_level_len(snap, 1, &len) == RT_ERR_INDEX, "empty snapshot level 1");
    CHECK(rt_snapshot_get_node(snap, 0, 0, out) == RT_ERR_INDEX, "empty snapshot node");
    CHECK(rt_snapshot_read_nodes(snap, 0, 0, 1, out) == RT_ERR_INDEX, "empty read");
    CHECK(rt_consistency_layout(snap, 1, &clen) == RT_ERR_EMPTY_TREE, "empty consistency");
    ref empty;
    ref_init(&empty, 4);
    rng g = {1};
    check_proofs(snap, &empty, 1, &g, "empty", 0);
    rt_snapshot_free(snap);

    // compute_root errors.
    CHECK(rt_compute_root(leaves, 0, 4, RT_RULE_ROTORTREE_015, out) == RT_ERR_EMPTY_TREE, "compute_root empty");
    CHECK(rt_compute_root(NULL, 0, 4, RT_RULE_ROTORTREE_015, out) == RT_ERR_EMPTY_TREE, "compute_root NULL empty");
    CHECK(rt_compute_root(NULL, 2, 4, RT_RULE_ROTORTREE_015, out) == RT_ERR_INVALID_ARGUMENT, "compute_root NULL");
    CHECK(rt_compute_root(leaves, 2, 1, RT_RULE_ROTORTREE_015, out) == RT_ERR_INVALID_ARGUMENT, "compute_root arity 1");
    CHECK(rt_compute_root(leaves, 2, 256, RT_RULE_ROTORTREE_015, out) == RT_ERR_INVALID_ARGUMENT, "arity 256");
    CHECK(rt_compute_root(leaves, 2, 4, RT_RULE_ROTORTREE_015, NULL) == RT_ERR_INVALID_ARGUMENT, "compute_root NULL out");
    CHECK(rt_compute_root(leaves, 1, 4, RT_RULE_ROTORTREE_015, out) == RT_OK && same_hash(out, leaves), "one leaf");

    // Saturated capacity (255**64 > 2**64): an absurd count must be refused
    // with RT_ERR_NOMEM before any leaf is read, not wrap around or crash.
    if (P->absurd_sizes) {
        REQUIRE(rt_tree_new(255, 64, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
        CHECK(rt_tree_insert_many(tree, leaves, SIZE_MAX, root) == RT_ERR_NOMEM,
              "SIZE_MAX leaves into a saturated tree");
        CHECK(rt_tree_insert_many(tree, leaves, SIZE_MAX / 64, root) == RT_ERR_NOMEM,
              "SIZE_MAX/64 leaves into a saturated tree");
        CHECK(rt_tree_insert_many(tree, leaves, 3, root) == RT_OK, "and then a real insert");
        rt_tree_free(tree);
    }
}

/* ---- 2. random trees against the reference -------------------------------- */

static const unsigned EDGE_ARITIES[] = {2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64,
                                        127, 128, 129, 200, 254, 255};

static uint64_t batch_size(rng *g, unsigned arity, uint64_t left)
{
    uint64_t k;
    switch (rng_below(g, 8)) {
    case 0:
    case 1:
        k = 1;
        break;
    case 2:
        k = 1 + rng_below(g, arity);
        break;
    case 3:
        k = arity;
        break;
    case 4:
        k = 128 - rng_below(g, 3) + rng_below(g, 3); // chunk boundaries
        break;
    case 5:
        k = 1 + rng_below(g, 400);
        break;
    default:
        k = 1 + rng_below(g, 40);
    }
    return k < left ? k : left;
}

typedef struct held_snapshot {
    rt_snapshot *snap;
    uint64_t size;
} held_snapshot;

static void random_tree(rng *g, unsigned arity, uint64_t n, int kernel, bool outlive)
{
    char what[96];
    snprintf(what, sizeof(what), "arity %u, %llu leaves, kernel %d", arity,
             (unsigned long long)n, kernel);
    uint64_t seed = rng_next(g);
    uint8_t *leaves = make_leaves(seed, n);
    uint8_t *roots = xmalloc((size_t)(n + 1) * 32u);
    ref full;
    ref_build(&full, arity, leaves, n, roots);
    REQUIRE(rt_kernel_select(kernel) == RT_OK, "kernel");
    random_pool(g);

    unsigned max_depth = depth_for(n, arity);
    max_depth = max_depth < 1 ? 1 : max_depth;
    if (rng_below(g, 2))
        max_depth = RT_MAX_DEPTH_LIMIT - (unsigned)rng_below(g, 30);
    rt_tree *tree;
    REQUIRE(rt_tree_new(arity, max_depth, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    held_snapshot held[12];
    unsigned nheld = 0;
    uint64_t size = 0;
    long wrong_roots = 0;
    while (size < n) {
        uint64_t k = batch_size(g, arity, n - size);
        uint8_t root[32];
        int rc = k == 1 && rng_below(g, 2) ? rt_tree_insert(tree, leaves + size * 32u, root)
                                           : rt_tree_insert_many(tree, leaves + size * 32u,
                                                                 (size_t)k, root);
        CHECK(rc == RT_OK, "%s: insert of %llu at %llu: %d", what, (unsigned long long)k,
              (unsigned long long)size, rc);
        if (rc != RT_OK)
            break;
        size += k;
        if (!same_hash(root, roots + size * 32u))
            wrong_roots++;
        if (nheld < 12 && rng_below(g, n / 8 + 1) < 2) {
            REQUIRE(rt_tree_snapshot(tree, &held[nheld].snap) == RT_OK, "snapshot");
            held[nheld++].size = size;
        }
        if (rng_below(g, 64) == 0)
            random_pool(g);
    }
    CHECK(wrong_roots == 0, "%s: %ld inserts returned a wrong root", what, wrong_roots);
    if (max_depth == depth_for(n, arity) && n == size) {
        // Exactly full only when n is a power of the arity; otherwise one
        // more batch may fit. Past capacity is always refused.
        uint8_t root[32];
        uint64_t cap = 1;
        for (unsigned i = 0; i < max_depth; i++)
            cap *= arity;
        if (cap == n)
            CHECK(rt_tree_insert(tree, leaves, root) == RT_ERR_MAX_DEPTH, "%s: full", what);
    }
    check_tree(tree, &full, what, 0, g);

    rt_snapshot *last;
    REQUIRE(rt_tree_snapshot(tree, &last) == RT_OK, "snapshot");
    check_snapshot(last, &full, what, 0, g);
    check_proofs(last, &full, n <= P->proof_all_max ? n : 200, g, what, 1);
    if (n && rng_below(g, 4) == 0)
        check_mutations(last, rng_below(g, n), what, g);
    for (int c = 0; c < 3 && n; c++) {
        uint64_t old = 1 + rng_below(g, n);
        check_consistency(last, &full, old, roots + old * 32u, what);
    }
    if (n)
        check_consistency(last, &full, n, roots + n * 32u, what);

    if (outlive)
        rt_tree_free(tree); // every snapshot below outlives the tree
    for (unsigned h = 0; h < nheld; h++) {
        ref part;
        ref_build(&part, arity, leaves, held[h].size, NULL);
        char hwhat[128];
        snprintf(hwhat, sizeof(hwhat), "%s, snapshot at %llu", what,
                 (unsigned long long)held[h].size);
        check_snapshot(held[h].snap, &part, hwhat, 0, g);
        check_proofs(held[h].snap, &part, 64, g, hwhat, 0);
        if (held[h].size > 1) {
            uint64_t old = 1 + rng_below(g, held[h].size);
            check_consistency(held[h].snap, &part, old, roots + old * 32u, hwhat);
        }
        ref_free(&part);
        rt_snapshot_free(held[h].snap);
    }
    if (!outlive)
        rt_tree_free(tree);
    // The last snapshot, after the tree is gone, reads the same nodes.
    check_snapshot(last, &full, what, 500, g);
    rt_snapshot_free(last);

    uint8_t root[32];
    if (n) {
        int rc = rt_compute_root(leaves, (size_t)n, arity, RT_RULE_ROTORTREE_015, root);
        CHECK(rc == RT_OK && same_hash(root, roots + n * 32u), "%s: compute_root", what);
    }
    ref_free(&full);
    free(roots);
    free(leaves);
}

static void test_random_trees(rng *g)
{
    unsigned edges = sizeof(EDGE_ARITIES) / sizeof(EDGE_ARITIES[0]);
    for (unsigned t = 0; t < P->random_trees; t++) {
        unsigned arity = t < edges ? EDGE_ARITIES[t] : 2 + (unsigned)rng_below(g, 254);
        uint64_t n;
        switch (rng_below(g, 4)) {
        case 0:
            n = rng_below(g, arity * 2 + 2); // around the first levels
            break;
        case 1: {
            uint64_t power = arity; // exactly a power of the arity, +-1
            while (power * arity <= P->random_max)
                power *= arity;
            n = power - 1 + rng_below(g, 3);
            break;
        }
        default:
            n = rng_below(g, P->random_max + 1);
        }
        int kernel = kernels[t % (unsigned)kernel_count];
        random_tree(g, arity, n, kernel, rng_below(g, 2));
    }
    // Exactly full trees of max_depth 1 at both arity extremes.
    for (unsigned arity = 2; arity <= 255; arity += 253) {
        uint8_t *leaves = make_leaves(rng_next(g), arity + 1);
        rt_tree *tree;
        REQUIRE(rt_tree_new(arity, 1, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
        uint8_t root[32], want[32];
        CHECK(rt_tree_insert_many(tree, leaves, arity, root) == RT_OK, "max_depth 1 fill");
        REQUIRE(rt_hash_parent(leaves, arity, want) == RT_OK, "hash");
        CHECK(same_hash(root, want), "max_depth 1 root, arity %u", arity);
        CHECK(rt_tree_insert(tree, leaves + arity * 32u, root) == RT_ERR_MAX_DEPTH,
              "max_depth 1 full, arity %u", arity);
        rt_tree_free(tree);
        free(leaves);
    }
}

/* One large tree: slabs big enough to be huge-page mappings, tables that
 * grow many times, parallel batch paths. */
static void test_big_tree(rng *g)
{
    if (!P->big_tree)
        return;
    uint64_t n = P->big_tree;
    uint8_t *leaves = make_leaves(rng_next(g), n);
    for (unsigned arity = 2; arity <= 4; arity += 2) {
        uint8_t *roots = xmalloc((size_t)(n + 1) * 32u);
        ref full;
        ref_build(&full, arity, leaves, n, roots);
        set_pool(2, 64, 32);
        rt_tree *tree;
        REQUIRE(rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
        uint64_t size = 0;
        rt_snapshot *snaps[6];
        uint64_t snap_sizes[6];
        unsigned nsnaps = 0;
        long wrong = 0;
        while (size < n) {
            uint64_t k = rng_below(g, 3) ? 1 + rng_below(g, 50000) : 1 + rng_below(g, 8);
            k = k < n - size ? k : n - size;
            uint8_t root[32];
            REQUIRE(rt_tree_insert_many(tree, leaves + size * 32u, (size_t)k, root) == RT_OK,
                    "big insert");
            size += k;
            wrong += !same_hash(root, roots + size * 32u);
            if (nsnaps < 6 && rng_below(g, 4) == 0) {
                REQUIRE(rt_tree_snapshot(tree, &snaps[nsnaps]) == RT_OK, "snapshot");
                snap_sizes[nsnaps++] = size;
            }
        }
        CHECK(wrong == 0, "big tree arity %u: %ld wrong roots", arity, wrong);
        check_tree(tree, &full, "big tree", 0, g);
        rt_tree_free(tree);
        for (unsigned s = 0; s < nsnaps; s++) {
            struct rt_tree_state st;
            rt_snapshot_state(snaps[s], &st);
            CHECK(st.size == snap_sizes[s] && same_hash(st.root, roots + st.size * 32u),
                  "big snapshot %u root", s);
            uint8_t node[32];
            uint64_t i = rng_below(g, st.size);
            CHECK(rt_snapshot_get_node(snaps[s], 0, i, node) == RT_OK &&
                      same_hash(node, leaves + i * 32u), "big snapshot leaf");
            rt_snapshot_free(snaps[s]);
        }
        uint8_t root[32];
        CHECK(rt_compute_root(leaves, (size_t)n, arity, RT_RULE_ROTORTREE_015, root) == RT_OK &&
                  same_hash(root, roots + n * 32u), "big compute_root");
        ref_free(&full);
        free(roots);
    }
    free(leaves);
}

/* ---- 3. restore and cold levels ------------------------------------------- */

/* A private copy of the reference's levels: restored trees read borrowed
 * memory in place, so it must not move while they (or snapshots) live. */
static uint8_t **copy_levels(const ref *r)
{
    uint8_t **levels = xmalloc(LEVELS * sizeof(*levels));
    for (unsigned l = 0; l < LEVELS; l++) {
        levels[l] = NULL;
        if (r->len[l]) {
            levels[l] = xmalloc((size_t)r->len[l] * 32u);
            memcpy(levels[l], r->nodes[l], (size_t)r->len[l] * 32u);
        }
    }
    return levels;
}

static void free_levels(uint8_t **levels)
{
    for (unsigned l = 0; l < LEVELS; l++)
        free(levels[l]);
    free(levels);
}

static void restore_case(rng *g, unsigned arity, uint64_t size, uint64_t more)
{
    char what[96];
    snprintf(what, sizeof(what), "restore arity %u size %llu +%llu", arity,
             (unsigned long long)size, (unsigned long long)more);
    uint64_t n = size + more;
    uint8_t *leaves = make_leaves(rng_next(g), n);
    uint8_t *roots = xmalloc((size_t)(n + 1) * 32u);
    ref full, part;
    ref_build(&full, arity, leaves, n, roots);
    ref_build(&part, arity, leaves, size, NULL);
    uint8_t **stored = copy_levels(&part);
    // The level's last node, kept apart (as the durable store does) and
    // deliberately different in the main buffer, which must not be read.
    unsigned depth = depth_for(size, arity);
    uint8_t lasts[LEVELS][32];
    struct rt_level_source src[LEVELS];
    for (unsigned l = 0; l <= depth; l++) {
        uint64_t len = part.len[l];
        int mode = (int)rng_below(g, 3); // borrow nothing, everything, or some
        src[l].nodes = stored[l];
        src[l].borrow = mode == 0 ? 0 : mode == 1 ? len : rng_below(g, len + 1);
        src[l].last = NULL;
        if (rng_below(g, 2)) {
            memcpy(lasts[l], stored[l] + (len - 1) * 32u, 32);
            stored[l][(len - 1) * 32u] ^= 0xA5;
            src[l].last = lasts[l];
        }
    }
    random_pool(g);
    rt_tree *tree;
    REQUIRE(rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    int rc = rt_tree_restore(tree, size, src, depth + 1);
    CHECK(rc == RT_OK, "%s: %d", what, rc);
    check_tree(tree, &part, what, 0, g);
    rt_snapshot *at_restore;
    REQUIRE(rt_tree_snapshot(tree, &at_restore) == RT_OK, "snapshot");
    check_proofs(at_restore, &part, 100, g, what, 0);
    uint64_t old = 1 + rng_below(g, size);
    check_consistency(at_restore, &part, old, roots + old * 32u, what);

    // Grow past the restored part; then serve prefixes of the grown tree's
    // levels from (identical) caller memory and drop their chunks.
    uint64_t at = size;
    while (at < n) {
        uint64_t k = batch_size(g, arity, n - at);
        uint8_t root[32];
        REQUIRE(rt_tree_insert_many(tree, leaves + at * 32u, (size_t)k, root) == RT_OK,
                "insert after restore");
        at += k;
        CHECK(same_hash(root, roots + at * 32u), "%s: root after restore at %llu", what,
              (unsigned long long)at);
    }
    check_tree(tree, &full, what, 0, g);
    rt_snapshot *before_cold;
    REQUIRE(rt_tree_snapshot(tree, &before_cold) == RT_OK, "snapshot");
    uint8_t **cold_copy = copy_levels(&full);
    unsigned full_depth = depth_for(n, arity);
    for (unsigned l = 0; l <= full_depth; l++) {
        uint64_t want = rng_below(g, 2) ? full.len[l] : rng_below(g, full.len[l] + 1);
        uint64_t prior = UINT64_MAX, cold = UINT64_MAX;
        CHECK(rt_tree_make_cold(tree, l, cold_copy[l], 0, &prior) == RT_OK,
              "%s: make_cold of nothing", what);
        rc = rt_tree_make_cold(tree, l, cold_copy[l], want, &cold);
        // Whole chunks, never the last node's, never shrinking.
        CHECK(rc == RT_OK && cold >= prior && (cold <= want || cold == prior) &&
                  (cold == prior || cold < full.len[l]),
              "%s: make_cold level %u of %llu: rc %d cold %llu (was %llu)", what, l,
              (unsigned long long)want, rc, (unsigned long long)cold,
              (unsigned long long)prior);
        // A shorter prefix later never shrinks it.
        uint64_t again = 0;
        CHECK(rt_tree_make_cold(tree, l, cold_copy[l], 0, &again) == RT_OK && again == cold,
              "%s: cold prefix shrank", what);
    }
    check_tree(tree, &full, what, 0, g);
    // More inserts on top of cold levels.
    uint64_t extra = 1 + rng_below(g, 300);
    uint8_t *more_leaves = make_leaves(rng_next(g), extra);
    for (uint64_t i = 0; i < extra; i++)
        ref_append(&full, more_leaves + i * 32u);
    uint8_t root[32];
    CHECK(rt_tree_insert_many(tree, more_leaves, (size_t)extra, root) == RT_OK &&
              same_hash(root, ref_root(&full)), "%s: insert over cold levels", what);
    check_tree(tree, &full, what, 0, g);
    rt_snapshot *after_cold;
    REQUIRE(rt_tree_snapshot(tree, &after_cold) == RT_OK, "snapshot");
    rt_tree_free(tree);
    check_snapshot(after_cold, &full, what, 0, g);
    check_proofs(after_cold, &full, 100, g, what, 0);
    old = 1 + rng_below(g, n);
    check_consistency(after_cold, &full, old, roots + old * 32u, what);
    rt_snapshot_free(after_cold);
    check_snapshot(at_restore, &part, what, 0, g);
    rt_snapshot_free(at_restore);
    rt_snapshot_free(before_cold);
    free_levels(cold_copy);
    free_levels(stored);
    free(more_leaves);
    ref_free(&full);
    ref_free(&part);
    free(roots);
    free(leaves);
}

static void test_restore(rng *g)
{
    unsigned cases = P->random_trees / 4 + 2;
    for (unsigned c = 0; c < cases; c++) {
        unsigned arity = c < 3 ? (unsigned[]){2, 4, 255}[c] : 2 + (unsigned)rng_below(g, 254);
        uint64_t size = 1 + rng_below(g, P->random_max);
        restore_case(g, arity, size, rng_below(g, P->random_max / 2 + 1));
    }
}

/* ---- log views ------------------------------------------------------------------ */

/* A proof batch of every leaf of `snap` (count leaves), heap-allocated. */
static uint8_t *all_proofs(const rt_snapshot *snap, uint64_t count, size_t *len_out)
{
    uint64_t *indices = xmalloc((size_t)count * sizeof(uint64_t));
    uint64_t *offsets = xmalloc((size_t)(count + 1) * sizeof(uint64_t));
    for (uint64_t i = 0; i < count; i++)
        indices[i] = i;
    REQUIRE(rt_proofs_layout(snap, indices, (size_t)count, offsets, NULL) == RT_OK, "layout");
    uint8_t *out = xmalloc((size_t)offsets[count] + 1);
    REQUIRE(rt_proofs_fill(snap, indices, (size_t)count, offsets, out) == RT_OK, "fill");
    *len_out = (size_t)offsets[count];
    free(indices);
    free(offsets);
    return out;
}

static uint8_t *consistency_of(const rt_snapshot *snap, uint64_t old_size, size_t *len_out)
{
    REQUIRE(rt_consistency_layout(snap, old_size, len_out) == RT_OK, "consistency layout");
    uint8_t *out = xmalloc(*len_out);
    REQUIRE(rt_consistency_fill(snap, old_size, out, *len_out) == RT_OK, "consistency fill");
    return out;
}

/* The view of `grown` at n must be, node for node and proof for proof, the
 * snapshot of a tree built to n from the same leaves. */
static void check_view(const rt_snapshot *grown, rt_tree *grown_tree, const uint8_t *leaves,
                       uint64_t n, rng *g, const char *what)
{
    unsigned arity = rt_snapshot_arity(grown);
    ref r;
    ref_build(&r, arity, leaves, n, NULL);
    uint8_t root[32];
    CHECK(rt_snapshot_root_at(grown, n, root) == RT_OK && same_hash(root, ref_root(&r)),
          "%s: root_at(%llu)", what, (unsigned long long)n);
    CHECK(rt_tree_root_at(grown_tree, n, root) == RT_OK && same_hash(root, ref_root(&r)),
          "%s: tree root_at(%llu)", what, (unsigned long long)n);
    rt_snapshot *view = NULL;
    REQUIRE(rt_snapshot_at(grown, n, &view) == RT_OK, "%s: view", what);
    check_snapshot(view, &r, what, 0, g);

    rt_tree *built;
    rt_snapshot *ref_snap;
    REQUIRE(rt_tree_new(arity, 48, RT_RULE_ROTORTREE_015, &built) == RT_OK, "tree");
    REQUIRE(rt_tree_insert_many(built, leaves, (size_t)n, root) == RT_OK, "insert");
    REQUIRE(rt_tree_snapshot(built, &ref_snap) == RT_OK, "snapshot");
    size_t len_view, len_ref;
    uint8_t *proofs_view = all_proofs(view, n, &len_view);
    uint8_t *proofs_ref = all_proofs(ref_snap, n, &len_ref);
    CHECK(len_view == len_ref && memcmp(proofs_view, proofs_ref, len_ref) == 0,
          "%s: proofs at %llu differ", what, (unsigned long long)n);
    // Single proofs through a view that lives for the call only.
    for (unsigned k = 0; k < 4; k++) {
        uint64_t i = k == 0 ? n - 1 : rng_below(g, n);
        uint8_t *one = xmalloc(len_ref);
        size_t one_len = 0, want_len = 0;
        uint64_t want_at = 0;
        for (uint64_t j = 0; j <= i; j++) { // proof i's offset in the batch
            want_at += want_len;
            uint64_t off[2], idx = j;
            REQUIRE(rt_proofs_layout(ref_snap, &idx, 1, off, NULL) == RT_OK, "layout one");
            want_len = (size_t)off[1];
        }
        CHECK(rt_proof_one_at(grown, n, i, one, len_ref, &one_len) == RT_OK &&
                  one_len == want_len && memcmp(one, proofs_ref + want_at, one_len) == 0,
              "%s: proof_one_at(%llu, %llu)", what, (unsigned long long)n,
              (unsigned long long)i);
        free(one);
    }
    CHECK(rt_proof_one_at(grown, n, n, proofs_view, len_view, &len_view) == RT_ERR_INDEX,
          "%s: proof_one_at index n", what);
    CHECK(rt_proof_one_at(grown, n, 0, proofs_view, 1, &len_view) == RT_ERR_INVALID_ARGUMENT,
          "%s: proof_one_at short buffer", what);
    free(proofs_view);
    free(proofs_ref);
    uint64_t old_size = 1 + rng_below(g, n);
    uint8_t *cons_view = consistency_of(view, old_size, &len_view);
    uint8_t *cons_ref = consistency_of(ref_snap, old_size, &len_ref);
    CHECK(len_view == len_ref && memcmp(cons_view, cons_ref, len_ref) == 0,
          "%s: consistency %llu -> %llu differs", what, (unsigned long long)old_size,
          (unsigned long long)n);
    size_t one_len = 0;
    CHECK(rt_consistency_at(grown, old_size, n, cons_view, len_ref, &one_len) == RT_OK &&
              one_len == len_ref && memcmp(cons_view, cons_ref, len_ref) == 0,
          "%s: consistency_at %llu -> %llu", what, (unsigned long long)old_size,
          (unsigned long long)n);
    CHECK(rt_consistency_at(grown, old_size, n, cons_view, len_ref - 1, &one_len) ==
              RT_ERR_INVALID_ARGUMENT && one_len == len_ref,
          "%s: consistency_at short buffer", what);
    CHECK(rt_consistency_at(grown, n + 1, n, cons_view, len_ref, &one_len) == RT_ERR_INDEX &&
              rt_consistency_at(grown, 0, n, cons_view, len_ref, &one_len) == RT_ERR_INDEX,
          "%s: consistency_at old size out of range", what);
    free(cons_view);
    free(cons_ref);
    // A view of the view at a smaller size.
    uint64_t inner = 1 + rng_below(g, n);
    ref r_inner;
    ref_build(&r_inner, arity, leaves, inner, NULL);
    rt_snapshot *view2 = NULL;
    REQUIRE(rt_snapshot_at(view, inner, &view2) == RT_OK, "%s: view of view", what);
    rt_snapshot_free(view);
    check_snapshot(view2, &r_inner, what, 0, g);
    rt_snapshot_free(view2);
    ref_free(&r_inner);
    rt_snapshot_free(ref_snap);
    rt_tree_free(built);
    ref_free(&r);
}

/* A view of an indexed tree looks leaves up as of its own size, and holds
 * the index as long as it lives: here it outlives the tree and the
 * snapshot it was taken from. */
static void check_view_index(rng *g)
{
    uint64_t size = 600, n = 1 + rng_below(g, size - 1);
    uint8_t *leaves = make_leaves(rng_next(g), size);
    rt_tree *tree;
    uint8_t root[32];
    REQUIRE(rt_tree_new(4, 48, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    REQUIRE(rt_tree_insert_many(tree, leaves, (size_t)size, root) == RT_OK, "insert");
    REQUIRE(rt_tree_index_enable(tree) == RT_OK, "index");
    rt_snapshot *snap, *view;
    REQUIRE(rt_tree_snapshot(tree, &snap) == RT_OK, "snapshot");
    REQUIRE(rt_snapshot_at(snap, n, &view) == RT_OK, "view");
    rt_snapshot_free(snap);
    rt_tree_free(tree);
    long bad = 0;
    for (uint64_t k = 0; k < size; k++) {
        int64_t want = k < n ? (int64_t)k : -1;
        bad += rt_snapshot_index_position(view, leaves + k * 32u) != want;
    }
    CHECK(bad == 0, "view at %llu of an indexed tree: %ld lookups wrong",
          (unsigned long long)n, bad);
    rt_snapshot_free(view);
    free(leaves);
}

static void test_log_views(rng *g)
{
    check_view_index(g);
    static const unsigned arities[] = {2, 3, 4, 7, 16, 255};
    for (unsigned a = 0; a < sizeof arities / sizeof arities[0]; a++) {
        unsigned arity = arities[a];
        uint64_t size = 1 + rng_below(g, P->random_max < 2000 ? P->random_max : 2000);
        uint8_t *leaves = make_leaves(rng_next(g), size);
        rt_tree *tree;
        uint8_t root[32];
        REQUIRE(rt_tree_new(arity, 48, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
        REQUIRE(rt_tree_insert_many(tree, leaves, (size_t)size, root) == RT_OK, "insert");
        rt_snapshot *grown;
        REQUIRE(rt_tree_snapshot(tree, &grown) == RT_OK, "snapshot");
        char what[64];
        snprintf(what, sizeof what, "log view arity %u size %llu", arity,
                 (unsigned long long)size);
        uint64_t picks[] = {1, 2, arity - 1, arity, arity + 1, size - 1, size,
                            1 + rng_below(g, size), 1 + rng_below(g, size)};
        for (unsigned p = 0; p < sizeof picks / sizeof picks[0]; p++)
            if (picks[p] >= 1 && picks[p] <= size)
                check_view(grown, tree, leaves, picks[p], g, what);
        // The tree grows and rewrites the chunks it shares; views stay.
        rt_snapshot *view;
        uint64_t n = 1 + rng_below(g, size);
        REQUIRE(rt_snapshot_at(grown, n, &view) == RT_OK, "view");
        rt_snapshot_free(grown);
        uint8_t *more = make_leaves(rng_next(g), 300);
        REQUIRE(rt_tree_insert_many(tree, more, 300, root) == RT_OK, "insert more");
        ref r;
        ref_build(&r, arity, leaves, n, NULL);
        check_snapshot(view, &r, what, 0, g);
        ref_free(&r);

        CHECK(rt_snapshot_root_at(view, 0, root) == RT_ERR_INDEX, "%s: root_at 0", what);
        CHECK(rt_snapshot_root_at(view, n + 1, root) == RT_ERR_INDEX, "%s: root_at n+1", what);
        CHECK(rt_snapshot_root_at(NULL, 1, root) == RT_ERR_INVALID_ARGUMENT, "%s: NULL", what);
        CHECK(rt_snapshot_root_at(view, 1, NULL) == RT_ERR_INVALID_ARGUMENT, "%s: NULL out",
              what);
        rt_snapshot *none = NULL;
        CHECK(rt_snapshot_at(view, 0, &none) == RT_ERR_INDEX && !none, "%s: at 0", what);
        CHECK(rt_snapshot_at(view, UINT64_MAX, &none) == RT_ERR_INDEX && !none, "%s: at max",
              what);
        CHECK(rt_snapshot_at(view, 1, NULL) == RT_ERR_INVALID_ARGUMENT, "%s: at NULL", what);
        CHECK(rt_tree_root_at(tree, size + 301, root) == RT_ERR_INDEX, "%s: tree past", what);
        CHECK(rt_tree_root_at(NULL, 1, root) == RT_ERR_INVALID_ARGUMENT, "%s: NULL tree", what);
#if RT_TEST_WRAP
        // Every allocation of a view may fail: RT_ERR_NOMEM, nothing written.
        rt_snapshot *current;
        REQUIRE(rt_tree_snapshot(tree, &current) == RT_OK, "snapshot");
        uint64_t past = 1 + rng_below(g, size);
        for (long target = 0;; target++) {
            rt_snapshot *out = NULL;
            arm_from(target);
            int rc = rt_snapshot_at(current, past, &out);
            long injected = disarm();
            if (rc == RT_OK) {
                ref_build(&r, arity, leaves, past, NULL);
                check_snapshot(out, &r, what, 0, g);
                ref_free(&r);
                rt_snapshot_free(out);
                break;
            }
            CHECK(rc == RT_ERR_NOMEM && injected > 0 && out == NULL,
                  "%s: view failure at allocation %ld gave %d", what, target, rc);
            if (target > 1000)
                break;
        }
        // The one-call forms allocate one block: its failure is theirs.
        size_t one_len = 0;
        arm_from(0);
        int rc_proof = rt_proof_one_at(current, past, 0, NULL, 0, &one_len);
        int rc_cons = rt_consistency_at(current, 1, past, NULL, 0, &one_len);
        long injected = disarm();
        CHECK(rc_proof == RT_ERR_NOMEM && rc_cons == RT_ERR_NOMEM && injected == 2,
              "%s: one-call forms under failing allocation gave %d, %d", what, rc_proof,
              rc_cons);
        rt_snapshot_free(current);
#endif
        rt_snapshot_free(view);
        rt_tree_free(tree);
        free(more);
        free(leaves);
    }
}

/* ---- 4. compute_root ---------------------------------------------------------- */

static void test_compute_root(rng *g)
{
    unsigned cases = P->random_trees / 2 + 4;
    for (unsigned c = 0; c < cases; c++) {
        unsigned arity = 2 + (unsigned)rng_below(g, 254);
        if (c < 4)
            arity = (unsigned[]){2, 3, 4, 255}[c];
        uint64_t n = 1 + rng_below(g, c % 3 == 0 ? P->random_max * 8 : 300);
        uint8_t *leaves = make_leaves(rng_next(g), n);
        ref r;
        ref_build(&r, arity, leaves, n, NULL);
        random_pool(g);
        REQUIRE(rt_kernel_select(kernels[c % (unsigned)kernel_count]) == RT_OK, "kernel");
        uint8_t root[32];
        int rc = rt_compute_root(leaves, (size_t)n, arity, RT_RULE_ROTORTREE_015, root);
        CHECK(rc == RT_OK && same_hash(root, ref_root(&r)), "compute_root arity %u n %llu", arity,
              (unsigned long long)n);
        ref_free(&r);
        free(leaves);
    }
}

/* ---- 5. random proofs never verify ---------------------------------------- */

static void test_garbage_proofs(rng *g)
{
    unsigned cases = P->random_trees * 20;
    long accepted = 0;
    for (unsigned c = 0; c < cases; c++) {
        unsigned arity = 2 + (unsigned)rng_below(g, 254);
        uint64_t size = 1 + rng_below(g, rng_below(g, 2) ? 1000 : UINT64_MAX - 1);
        uint64_t index = rng_below(g, size);
        unsigned depth = depth_for(size, arity);
        size_t cap = RT_PROOF_HEADER_LEN + (size_t)depth * (2 + 32 * 255) + 64;
        uint8_t *proof = xmalloc(cap);
        uint8_t root[32], leaf[32];
        leaf_of(c, 1, root);
        leaf_of(c, 2, leaf);
        size_t at = header(proof, "RTIP", arity, depth, index, size, root, leaf);
        // Well-shaped levels (right positions and counts) with random hashes.
        uint64_t i = index, len = size;
        for (unsigned l = 0; l < depth; l++) {
            uint64_t start = i - i % arity;
            uint64_t members = len - start < arity ? len - start : arity;
            proof[at++] = (uint8_t)(i % arity);
            proof[at++] = (uint8_t)(members - 1);
            for (uint64_t s = 0; s + 1 < members; s++, at += 32)
                leaf_of(c, 3 + at, proof + at);
            i /= arity;
            len = len / arity + (len % arity != 0);
        }
        if (rt_verify_inclusion(proof, at, NULL, 0) == RT_OK && !(depth == 0 && same_hash(root, leaf)))
            accepted++;
        // Random header fields and random bytes after a valid header prefix.
        for (int m = 0; m < 4; m++) {
            size_t cut = (size_t)rng_below(g, at + 1);
            for (size_t b = (size_t)rng_below(g, cut + 1); b < cut; b++)
                proof[b] = (uint8_t)rng_next(g);
            memcpy(proof, "RTIP\x01", 5);
            proof[7] = 0;
            if (rt_verify_inclusion(proof, cut, NULL, 0) == RT_OK)
                accepted++;
        }
        free(proof);
    }
    CHECK(accepted == 0, "%ld random proofs verified", accepted);
}

/* ---- 6. allocation failures --------------------------------------------------- */

#if RT_TEST_WRAP
/* Sweep the allocation at which failures start over one insert_many: every
 * failure must be RT_ERR_NOMEM with the tree and its snapshot unchanged,
 * and the same insert must then succeed. */
static void inject_insert_sweep(rng *g, unsigned arity, uint64_t size, uint64_t k, bool snapshot)
{
    char what[96];
    snprintf(what, sizeof(what), "injected arity %u size %llu +%llu%s", arity,
             (unsigned long long)size, (unsigned long long)k, snapshot ? " (shared)" : "");
    uint8_t *leaves = make_leaves(rng_next(g), size + k);
    ref before, after;
    ref_build(&before, arity, leaves, size, NULL);
    ref_build(&after, arity, leaves, size + k, NULL);
    rt_tree *tree;
    REQUIRE(rt_tree_new(arity, 48, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    uint8_t root[32];
    if (size)
        REQUIRE(rt_tree_insert_many(tree, leaves, (size_t)size, root) == RT_OK, "setup insert");
    rt_snapshot *snap = NULL;
    if (snapshot)
        REQUIRE(rt_tree_snapshot(tree, &snap) == RT_OK, "snapshot");
    long target = 0;
    int rc;
    for (;; target++) {
        arm_from(target);
        rc = rt_tree_insert_many(tree, leaves + size * 32u, (size_t)k, root);
        long injected = disarm();
        if (rc == RT_OK) {
            CHECK(same_hash(root, ref_root(&after)), "%s: root after %ld", what, target);
            break;
        }
        CHECK(rc == RT_ERR_NOMEM && injected > 0, "%s: failure at allocation %ld gave %d", what,
              target, rc);
        check_tree(tree, &before, what, 64, g);
        if (snap)
            check_snapshot(snap, &before, what, 64, g);
        if (target > 100000)
            break;
    }
    check_tree(tree, &after, what, 0, g);
    if (snap) {
        check_snapshot(snap, &before, what, 0, g);
        rt_snapshot_free(snap);
    }
    // A snapshot and a compute_root under the same sweep.
    for (target = 0;; target++) {
        arm_from(target);
        snap = NULL;
        rc = rt_tree_snapshot(tree, &snap);
        disarm();
        if (rc == RT_OK)
            break;
        CHECK(rc == RT_ERR_NOMEM && snap == NULL, "%s: snapshot failure %d", what, rc);
    }
    check_snapshot(snap, &after, what, 64, g);
    rt_snapshot_free(snap);
    for (target = 0;; target++) {
        arm_from(target);
        rc = rt_compute_root(leaves, (size_t)(size + k), arity, RT_RULE_ROTORTREE_015, root);
        disarm();
        if (rc == RT_OK) {
            CHECK(same_hash(root, ref_root(&after)), "%s: compute_root", what);
            break;
        }
        CHECK(rc == RT_ERR_NOMEM, "%s: compute_root failure %d", what, rc);
    }
    rt_tree_free(tree);
    ref_free(&before);
    ref_free(&after);
    free(leaves);
}

static void inject_restore_sweep(rng *g, unsigned arity, uint64_t size)
{
    char what[64];
    snprintf(what, sizeof(what), "injected restore arity %u size %llu", arity,
             (unsigned long long)size);
    uint8_t *leaves = make_leaves(rng_next(g), size + 1);
    ref r, empty;
    ref_build(&r, arity, leaves, size, NULL);
    ref_init(&empty, arity);
    uint8_t **stored = copy_levels(&r);
    unsigned depth = depth_for(size, arity);
    struct rt_level_source src[LEVELS];
    for (unsigned l = 0; l <= depth; l++) {
        src[l].nodes = stored[l];
        src[l].borrow = l % 2 ? r.len[l] : 0;
        src[l].last = NULL;
    }
    rt_tree *tree = NULL;
    long target;
    int rc;
    for (target = 0;; target++) {
        arm_from(target);
        rc = rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &tree);
        disarm();
        if (rc == RT_OK)
            break;
        CHECK(rc == RT_ERR_NOMEM, "%s: tree_new failure %d", what, rc);
    }
    // A first insert whose last allocation fails leaves spare chunks in
    // the empty tree's lower levels; restore must cope with them.
    uint8_t root[32];
    rt_tree *scratch;
    REQUIRE(rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &scratch) == RT_OK, "tree");
    arm_from(LONG_MAX);
    REQUIRE(rt_tree_insert_many(scratch, leaves, (size_t)size, root) == RT_OK, "count");
    long allocations = atomic_load(&inject_seen);
    disarm();
    rt_tree_free(scratch);
    // The last allocations may be optional (a spare slab made ahead of the
    // next batch): an insert survives their failure, so walk back to the
    // last one the insert needs, on a fresh tree after each success.
    for (long k = allocations - 1; k >= 0; k--) {
        arm_from(k);
        rc = rt_tree_insert_many(tree, leaves, (size_t)size, root);
        disarm();
        if (rc == RT_ERR_NOMEM) {
            check_tree(tree, &empty, what, 0, g);
            break;
        }
        CHECK(rc == RT_OK, "%s: setup failure %d", what, rc);
        rt_tree_free(tree);
        REQUIRE(rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    }
    for (target = 0;; target++) {
        arm_from(target);
        rc = rt_tree_restore(tree, size, src, depth + 1);
        disarm();
        if (rc == RT_OK)
            break;
        CHECK(rc == RT_ERR_NOMEM, "%s: failure %d", what, rc);
        if (rc != RT_ERR_NOMEM)
            break;   // another error repeats forever: report it once
        check_tree(tree, &empty, what, 0, g);
    }
    check_tree(tree, &r, what, 0, g);
    // make_cold under failures: the level stays readable and correct.
    uint8_t **cold_copy = copy_levels(&r);
    for (unsigned l = 0; l <= depth; l++) {
        for (target = 0;; target++) {
            uint64_t cold = 0;
            arm_from(target);
            rc = rt_tree_make_cold(tree, l, cold_copy[l], r.len[l], &cold);
            disarm();
            if (rc == RT_OK)
                break;
            CHECK(rc == RT_ERR_NOMEM, "%s: make_cold failure %d", what, rc);
            check_tree(tree, &r, what, 64, g);
        }
    }
    check_tree(tree, &r, what, 0, g);
    ref_append(&r, leaves + size * 32u);
    CHECK(rt_tree_insert(tree, leaves + size * 32u, root) == RT_OK &&
              same_hash(root, ref_root(&r)), "%s: insert after", what);
    rt_tree_free(tree);
    free_levels(cold_copy);
    free_levels(stored);
    ref_free(&r);
    free(leaves);
}

/* Random failures over a long run of operations, on the pool. */
static void inject_random_run(rng *g, unsigned arity)
{
    uint64_t n = P->inject_random_ops * 40;
    uint8_t *leaves = make_leaves(rng_next(g), n);
    ref r;
    ref_init(&r, arity);
    rt_tree *tree;
    REQUIRE(rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    set_pool(2, 4, 4);
    rt_snapshot *held[4] = {0};
    uint64_t held_size[4] = {0};
    uint64_t size = 0;
    long failures = 0, wrong = 0;
    for (unsigned op = 0; op < P->inject_random_ops && size < n; op++) {
        uint64_t k = batch_size(g, arity, n - size);
        uint8_t root[32];
        arm_random(150);
        int rc = rt_tree_insert_many(tree, leaves + size * 32u, (size_t)k, root);
        disarm();
        if (rc == RT_OK) {
            for (uint64_t i = 0; i < k; i++)
                ref_append(&r, leaves + (size + i) * 32u);
            size += k;
            wrong += !same_hash(root, ref_root(&r));
        } else {
            failures++;
            CHECK(rc == RT_ERR_NOMEM, "random injection: insert gave %d", rc);
            struct rt_tree_state st;
            rt_tree_state(tree, &st);
            CHECK(st.size == size && (!size || same_hash(st.root, ref_root(&r))),
                  "random injection: failed insert changed the tree");
        }
        unsigned slot = (unsigned)rng_below(g, 4);
        if (rng_below(g, 4) == 0) {
            rt_snapshot *snap = NULL;
            arm_random(300);
            rc = rt_tree_snapshot(tree, &snap);
            disarm();
            if (rc == RT_OK) {
                if (held[slot])
                    rt_snapshot_free(held[slot]);
                held[slot] = snap;
                held_size[slot] = size;
            } else {
                CHECK(rc == RT_ERR_NOMEM && !snap, "random injection: snapshot gave %d", rc);
            }
        }
    }
    CHECK(wrong == 0, "random injection: %ld wrong roots", wrong);
    CHECK(failures > 0, "random injection injected nothing");
    check_tree(tree, &r, "random injection", 0, g);
    rt_tree_free(tree);
    for (unsigned s = 0; s < 4; s++) {
        if (!held[s])
            continue;
        ref part;
        ref_build(&part, arity, leaves, held_size[s], NULL);
        check_snapshot(held[s], &part, "random injection snapshot", 0, g);
        ref_free(&part);
        rt_snapshot_free(held[s]);
    }
    ref_free(&r);
    free(leaves);
}

static void test_injection(rng *g)
{
    set_pool(1, 1024, 64);
    for (unsigned s = 0; s < P->inject_sweeps; s++) {
        unsigned arity = s == 0 ? 4 : s == 1 ? 2 : 2 + (unsigned)rng_below(g, 254);
        // Empty tree; a chunk boundary; a size whose table must grow; the
        // last slab-sized jump (mapped slab, then the malloc fallback).
        inject_insert_sweep(g, arity, 0, 1 + rng_below(g, 3 * 128), false);
        inject_insert_sweep(g, arity, 128 * (1 + rng_below(g, 4)), 1, true);
        inject_insert_sweep(g, arity, 1 + rng_below(g, 2000), 1 + rng_below(g, 3000),
                            rng_below(g, 2));
        if (s == 0 && P->big_tree)
            inject_insert_sweep(g, 4, 1000, 70000, true);
        inject_restore_sweep(g, arity, 1 + rng_below(g, 2000));
    }
    inject_random_run(g, 4);
    inject_random_run(g, 3);
}
#endif

/* ---- leaf index ---------------------------------------------------------------- */

/* Leaves drawn with repetition from a pool of distinct leaves, some with
 * all-zero first bytes (counters as leaves), so that batches repeat leaves
 * inside themselves and across batches and the hash must mix every byte;
 * which[i] is the pool index of leaf i. */
static void pooled_leaves(rng *g, const uint8_t *pool, uint64_t pool_size, uint8_t *out,
                          uint64_t *which, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        which[i] = rng_below(g, pool_size);
        memcpy(out + 32u * i, pool + 32u * which[i], 32);
    }
}

static uint8_t *leaf_pool(rng *g, uint64_t n)
{
    uint8_t *pool = make_leaves(rng_next(g), n);
    for (uint64_t i = 0; i < n; i += 3) {
        memset(pool + 32u * i, 0, 24);
        uint64_t v = i;
        memcpy(pool + 32u * i + 24, &v, 8);
    }
    return pool;
}

/* Every pool leaf's position and membership from the tree (or snapshot)
 * equal the model's first[] (UINT64_MAX: absent). */
static void check_index(rt_tree *tree, const rt_snapshot *snap, const uint8_t *pool, size_t n,
                        const uint64_t *first, const char *what)
{
    uint64_t *positions = xmalloc(n * sizeof(uint64_t));
    uint8_t *found = xmalloc(n);
    int rc = snap ? rt_snapshot_index_find(snap, pool, n, positions, found)
                  : rt_tree_index_find(tree, pool, n, positions, found);
    CHECK(rc == RT_OK, "%s: index_find %d", what, rc);
    long bad = 0;
    for (size_t i = 0; rc == RT_OK && i < n; i++)
        bad += positions[i] != first[i] || found[i] != (first[i] != UINT64_MAX);
    CHECK(bad == 0, "%s: %ld of %zu lookups differ from the model", what, bad, n);
    free(positions);
    free(found);
}

/* Random batches (plain, unique-reject, unique-skip, plain of a stable
 * batch) against a model, with snapshots checked by the size rule after
 * the tree has moved on, and the root against a tree without an index
 * given the leaves each batch was to add: a refused batch, hashed while the
 * index checked it, must leave the nodes exactly as they were. */
static void index_model_run(rng *g, unsigned arity, uint64_t pool_size, unsigned batches,
                            uint64_t batch_max)
{
    char what[96];
    uint8_t *pool = leaf_pool(g, pool_size);
    uint8_t *batch = xmalloc((size_t)batch_max * 32u), *marks = xmalloc((size_t)batch_max);
    uint8_t *kept = xmalloc((size_t)batch_max * 32u);
    uint64_t *which = xmalloc((size_t)batch_max * sizeof(uint64_t));
    uint64_t *first = xmalloc((size_t)pool_size * sizeof(uint64_t));
    uint64_t *snap_first = xmalloc((size_t)pool_size * sizeof(uint64_t));
    uint64_t *batch_first = xmalloc((size_t)pool_size * sizeof(uint64_t));
    for (uint64_t j = 0; j < pool_size; j++)
        first[j] = snap_first[j] = UINT64_MAX;
    rt_tree *tree, *shadow;
    REQUIRE(rt_tree_new(arity, 48, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    REQUIRE(rt_tree_new(arity, 48, RT_RULE_ROTORTREE_015, &shadow) == RT_OK, "shadow");
    uint8_t root[32];
    uint64_t size = 0, dups;
    CHECK(rt_tree_index_find(tree, pool, 1, NULL, marks) == RT_ERR_NO_INDEX, "no index yet");
    // Half the runs index a tree that already has leaves.
    if (rng_below(g, 2)) {
        uint64_t n = 1 + rng_below(g, batch_max);
        pooled_leaves(g, pool, pool_size, batch, which, n);
        REQUIRE(rt_tree_insert_many(tree, batch, (size_t)n, root) == RT_OK, "pre-insert");
        REQUIRE(rt_tree_insert_many(shadow, batch, (size_t)n, root) == RT_OK, "pre-insert");
        for (uint64_t i = 0; i < n; i++)
            if (first[which[i]] == UINT64_MAX)
                first[which[i]] = i;
        size = n;
    }
    REQUIRE(rt_tree_index_enable(tree) == RT_OK, "enable");
    rt_snapshot *snap = NULL;
    for (unsigned b = 0; b < batches; b++) {
        uint64_t n = 1 + rng_below(g, batch_max);
        pooled_leaves(g, pool, pool_size, batch, which, n);
        int mode = (int)rng_below(g, 4);
        const bool plain = mode == 0 || mode == 3;
        // The model's duplicates: in the tree or earlier in the batch.
        for (uint64_t i = 0; i < n; i++)
            batch_first[which[i]] = UINT64_MAX;
        uint64_t want_dups = 0, kept_n = 0;
        for (uint64_t i = 0; i < n; i++) {
            bool dup = first[which[i]] != UINT64_MAX || batch_first[which[i]] != UINT64_MAX;
            if (batch_first[which[i]] == UINT64_MAX)
                batch_first[which[i]] = i;
            want_dups += dup;
            if (!dup)
                memcpy(kept + 32u * kept_n++, batch + 32u * i, 32);
        }
        snprintf(what, sizeof(what), "index arity %u batch %u mode %d", arity, b, mode);
        bool inserted = true;
        if (mode == 0) {
            REQUIRE(rt_tree_insert_many(tree, batch, (size_t)n, root) == RT_OK, "%s", what);
        } else if (mode == 3) {
            REQUIRE(rt_tree_insert_many_stable(tree, batch, (size_t)n, root) == RT_OK, "%s", what);
        } else {
            int rc = rt_tree_insert_unique(tree, batch, (size_t)n,
                                           mode == 1 ? RT_UNIQUE_REJECT : RT_UNIQUE_SKIP,
                                           marks, &dups, root);
            CHECK(dups == want_dups, "%s: %llu duplicates, model %llu", what,
                  (unsigned long long)dups, (unsigned long long)want_dups);
            inserted = !(mode == 1 && want_dups);
            CHECK(rc == (inserted ? RT_OK : RT_ERR_DUPLICATE), "%s: gave %d", what, rc);
        }
        if (inserted) {
            // Skip mode inserts the kept leaves: each new, in batch order.
            uint64_t at = size;
            for (uint64_t i = 0; i < n; i++) {
                uint64_t j = which[i];
                if (plain || (first[j] == UINT64_MAX && batch_first[j] == i)) {
                    if (first[j] == UINT64_MAX)
                        first[j] = plain ? size + i : at;
                    at++;
                }
            }
            size = plain ? size + n : at;
            if (plain)
                REQUIRE(rt_tree_insert_many(shadow, batch, (size_t)n, root) == RT_OK, "shadow");
            else if (kept_n)
                REQUIRE(rt_tree_insert_many(shadow, kept, (size_t)kept_n, root) == RT_OK,
                        "shadow");
        }
        struct rt_tree_state state;
        rt_tree_state(tree, &state);
        CHECK(state.size == size, "%s: size %llu, model %llu", what,
              (unsigned long long)state.size, (unsigned long long)size);
        struct rt_tree_state want;
        rt_tree_state(shadow, &want);
        CHECK(size == 0 || same_hash(state.root, want.root), "%s: root differs", what);
        check_index(tree, NULL, pool, (size_t)pool_size, first, what);
        if (snap)
            check_index(NULL, snap, pool, (size_t)pool_size, snap_first, what);
        if (rng_below(g, 4) == 0) {
            rt_snapshot_free(snap);
            REQUIRE(rt_tree_snapshot(tree, &snap) == RT_OK, "snapshot");
            memcpy(snap_first, first, (size_t)pool_size * sizeof(uint64_t));
        }
    }
    rt_tree_free(tree);
    rt_tree_free(shadow);
    if (snap) // outlives its tree, index included
        check_index(NULL, snap, pool, (size_t)pool_size, snap_first, "orphan snapshot");
    rt_snapshot_free(snap);
    free(pool);
    free(batch);
    free(marks);
    free(kept);
    free(which);
    free(first);
    free(snap_first);
    free(batch_first);
}

/* Slot width against tree size: 4-byte slots for every tree whose
 * positions + 1 fit in 32 bits (the memory target assumes them), 8 only
 * from 2**32 leaves on, and always room for position + 1 = size. */
static void test_index_slot_width(void)
{
    const uint64_t sizes[] = {0, 1, 65535, 65536, (1ull << 30) + 1, 1ull << 31,
                              (1ull << 31) + 12345, (1ull << 32) - 1, 1ull << 32,
                              (1ull << 40) + 3, 1ull << 61};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t size = sizes[i];
        unsigned bits = rt_index_pos_bits(size);
        CHECK(bits >= 16 && bits <= 63, "pos bits %u for size %llu", bits,
              (unsigned long long)size);
        CHECK(((1ull << bits) - 1) >= size, "size %llu does not fit %u bits",
              (unsigned long long)size, bits);
        CHECK((bits <= 32) == (size < (1ull << 32)), "size %llu gets %u-byte slots",
              (unsigned long long)size, bits <= 32 ? 4u : 8u);
    }
}

static void test_leaf_index(rng *g)
{
    uint8_t leaf[32] = {0}, found = 0, marks[1];
    uint64_t dups;
    rt_tree *tree;
    REQUIRE(rt_tree_new(4, 8, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    CHECK(rt_tree_index_find(tree, leaf, 1, NULL, NULL) == RT_ERR_INVALID_ARGUMENT, "no outputs");
    CHECK(rt_tree_insert_unique(tree, leaf, 1, RT_UNIQUE_REJECT, marks, &dups, leaf) ==
              RT_ERR_NO_INDEX, "unique without index");
    REQUIRE(rt_tree_index_enable(tree) == RT_OK, "enable");
    CHECK(rt_tree_index_enabled(tree) == 1, "enabled");
    CHECK(rt_tree_insert_unique(tree, leaf, 1, 3, marks, &dups, leaf) == RT_ERR_INVALID_ARGUMENT,
          "bad mode");
    CHECK(rt_tree_index_find(tree, leaf, 1, NULL, &found) == RT_OK && !found, "empty tree");
    rt_tree_free(tree);
    for (uint32_t threads = 1; threads <= 2; threads++) {
        // Chunk 1: lookup units of 256 leaves, so batches reach the pool.
        set_pool(threads, 64, 1);
        index_model_run(g, 4, 40, 30, 60);
        index_model_run(g, 2 + (unsigned)rng_below(g, 254), 400, 20, 3000);
        index_model_run(g, 3, 5000, 4, P->big_tree ? 40000 : 4000);
    }
    set_pool(1, 1024, 64);
}

#if RT_TEST_WRAP
/* Every allocation of an indexed insert (a growing index, the duplicate
 * check's table, the skip mode's copy; mode 0 plain, 1 unique-skip, 2 plain
 * of a stable batch, 3 unique-reject, refused in the end) failing in turn: RT_ERR_NOMEM, and
 * the tree, its index and its snapshot exactly as before. */
static void inject_index_sweep(rng *g, uint64_t size, uint64_t k, int mode)
{
    char what[80];
    snprintf(what, sizeof(what), "injected index size %llu +%llu mode %d",
             (unsigned long long)size, (unsigned long long)k, mode);
    uint64_t n = size + k;
    uint8_t *pool = leaf_pool(g, n);
    uint8_t *leaves = xmalloc((size_t)n * 32u), *marks = xmalloc((size_t)k);
    uint64_t *which = xmalloc((size_t)k * sizeof(uint64_t)), *first = xmalloc((size_t)n * 8u);
    memcpy(leaves, pool, (size_t)size * 32u);
    pooled_leaves(g, pool, n, leaves + 32u * size, which, k); // some repeat the tree's
    for (uint64_t j = 0; j < n; j++)
        first[j] = j < size ? j : UINT64_MAX;
    rt_tree *tree;
    REQUIRE(rt_tree_new(4, 48, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    uint8_t root[32], before[32];
    uint64_t dups;
    REQUIRE(rt_tree_insert_many(tree, leaves, (size_t)size, before) == RT_OK, "setup");
    REQUIRE(rt_tree_index_enable(tree) == RT_OK, "enable");
    rt_snapshot *snap;
    REQUIRE(rt_tree_snapshot(tree, &snap) == RT_OK, "snapshot");
    for (long target = 0;; target++) {
        arm_from(target);
        int rc = mode == 1 ? rt_tree_insert_unique(tree, leaves + 32u * size, (size_t)k,
                                                   RT_UNIQUE_SKIP, marks, &dups, root)
                 : mode == 2 ? rt_tree_insert_many_stable(tree, leaves + 32u * size, (size_t)k,
                                                          root)
                 : mode == 3 ? rt_tree_insert_unique(tree, leaves + 32u * size, (size_t)k,
                                                     RT_UNIQUE_REJECT, marks, &dups, root)
                             : rt_tree_insert_many(tree, leaves + 32u * size, (size_t)k, root);
        long injected = disarm();
        if (rc == RT_OK)
            break;
        if (mode == 3 && rc == RT_ERR_DUPLICATE) {
            // Refused once its allocations succeed (hashed while checked on
            // the pool): as unchanged as after any injected failure.
            struct rt_tree_state state;
            rt_tree_state(tree, &state);
            CHECK(state.size == size && same_hash(state.root, before), "%s: refused, changed",
                  what);
            check_index(tree, NULL, pool, (size_t)n, first, what);
            break;
        }
        CHECK(rc == RT_ERR_NOMEM && injected > 0, "%s: failure at %ld gave %d", what, target, rc);
        struct rt_tree_state state;
        rt_tree_state(tree, &state);
        CHECK(state.size == size && same_hash(state.root, before), "%s: tree changed", what);
        check_index(tree, NULL, pool, (size_t)n, first, what);
        check_index(NULL, snap, pool, (size_t)n, first, what);
        if (target > 100000)
            break;
    }
    check_index(NULL, snap, pool, (size_t)n, first, what);
    rt_snapshot_free(snap);
    rt_tree_free(tree);
    // Enabling the index under the same sweep: all or nothing.
    REQUIRE(rt_tree_new(4, 48, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    REQUIRE(rt_tree_insert_many(tree, leaves, (size_t)n, root) == RT_OK, "setup");
    for (uint64_t i = 0; i < k; i++)
        if (first[which[i]] == UINT64_MAX)
            first[which[i]] = size + i;
    for (long target = 0;; target++) {
        arm_from(target);
        int rc = rt_tree_index_enable(tree);
        disarm();
        if (rc == RT_OK)
            break;
        CHECK(rc == RT_ERR_NOMEM && rt_tree_index_enabled(tree) == 0, "%s: enable %d", what, rc);
    }
    check_index(tree, NULL, pool, (size_t)n, first, what);
    rt_tree_free(tree);
    free(pool);
    free(leaves);
    free(marks);
    free(which);
    free(first);
}

static void test_index_injection(rng *g)
{
    set_pool(1, 1024, 64);
    inject_index_sweep(g, 40, 30, 0);   // past the load limit: the index doubles
    inject_index_sweep(g, 40, 30, 1);
    inject_index_sweep(g, 1000, 5, 1);  // in place
    inject_index_sweep(g, 40, 30, 2);
    inject_index_sweep(g, 40, 30, 3);
    set_pool(2, 64, 1);
    inject_index_sweep(g, 3000, 5000, 1); // on the pool, the index beside the hashing
    inject_index_sweep(g, 3000, 5000, 2);
    inject_index_sweep(g, 1000, 600, 2);  // in place
    inject_index_sweep(g, 3000, 5000, 3);
    inject_index_sweep(g, 1000, 600, 3);
    set_pool(1, 1024, 64);
}
#endif

/* ---- snapshot churn and fork --------------------------------------------- */

/* A snapshot published per insert, the previous one freed (a few kept
 * longer): level storage grows like the tree, since the copies the freed
 * snapshots held are reused, and every snapshot still reads what it saw
 * (a chunk reused while a snapshot holds it would show here). */
static void test_snapshot_churn(rng *g)
{
    static const unsigned arities[] = {4, 2, 3, 255};
    enum { BASE = 3000, CHURN = 3000, KEEP_EVERY = 397, KEPT_MAX = 8 };
    // Valgrind runs each insert ~50x slower: two arities cover the paths.
    unsigned count = strcmp(P->name, "valgrind") ? 4 : 2;
    for (unsigned a = 0; a < count; a++) {
        unsigned arity = arities[a + 4 - count];
        uint8_t *leaves = make_leaves(rng_next(g), BASE + CHURN);
        rt_tree *tree;
        uint8_t root[32];
        REQUIRE(rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
        REQUIRE(rt_tree_insert_many(tree, leaves, BASE, root) == RT_OK, "base batch");
        rt_snapshot *snap, *kept[KEPT_MAX];
        uint64_t kept_size[KEPT_MAX];
        unsigned nkept = 0;
        REQUIRE(rt_tree_snapshot(tree, &snap) == RT_OK, "snapshot");
        struct rt_memory_stats before, after;
        rt_memory_get_stats(&before);
        for (uint64_t i = 0; i < CHURN; i++) {
            CHECK(rt_tree_insert(tree, leaves + (BASE + i) * 32u, root) == RT_OK, "churn insert");
            rt_snapshot *next;
            REQUIRE(rt_tree_snapshot(tree, &next) == RT_OK, "snapshot");
            if (i % KEEP_EVERY == 0 && nkept < KEPT_MAX) {
                kept[nkept] = snap;
                kept_size[nkept++] = BASE + i;
            } else {
                rt_snapshot_free(snap);
            }
            snap = next;
        }
        rt_memory_get_stats(&after);
        // Slabs grow geometrically (up to twice the nodes held), plus per
        // level the partly filled chunks and smallest slabs.
        double own = 32.0 * arity / (arity - 1) * CHURN;
        double grown = (double)after.chunk_bytes - (double)before.chunk_bytes;
        CHECK(grown <= 3 * own + (1 << 20),
              "arity %u: level storage grew %.0f bytes for %d leaves under snapshot churn",
              arity, grown, (int)CHURN);
        CHECK(after.free_chunk_bytes <= after.chunk_bytes, "free chunk bytes within held");
        ref full;
        ref_build(&full, arity, leaves, BASE + CHURN, NULL);
        check_snapshot(snap, &full, "churned snapshot", 64, g);
        check_tree(tree, &full, "churned tree", 64, g);
        ref_free(&full);
        rt_tree_free(tree);
        for (unsigned k = 0; k < nkept; k++) {
            ref part;
            ref_build(&part, arity, leaves, kept_size[k], NULL);
            check_snapshot(kept[k], &part, "snapshot kept through churn", 0, g);
            ref_free(&part);
            rt_snapshot_free(kept[k]);
        }
        rt_snapshot_free(snap);
        rt_memory_get_stats(&after);
        CHECK(after.chunk_bytes <= before.chunk_bytes,
              "arity %u: level storage not returned after the tree and snapshots were freed",
              arity);
        free(leaves);
    }
}

typedef struct fork_writer_job {
    rt_tree *tree;
    const uint8_t *leaves;
    uint64_t batch, batches;
} fork_writer_job;

static void *fork_writer(void *arg)
{
    fork_writer_job *job = arg;
    uint8_t root[32];
    for (uint64_t b = 0; b < job->batches; b++)
        CHECK(rt_tree_insert_many(job->tree, job->leaves + b * job->batch * 32u,
                                  (size_t)job->batch, root) == RT_OK, "fork writer batch");
    return NULL;
}

/* fork() while another thread inserts batches: the child must not hang on
 * the tree's lock, and must see the tree before or after a batch. */
static void test_fork(rng *g)
{
    if (UNDER_TSAN) {
        // TSan does not support a child of a multi-threaded process that
        // goes on to start threads (the pool).
        printf("test_fork              skipped under ThreadSanitizer\n");
        return;
    }
    if (strcmp(P->name, "emulated") == 0) {
        // qemu-user itself aborts at random in the child of a fork from a
        // multi-threaded guest (cpu_exec: cpu == current_cpu); fork safety
        // does not depend on the ISA and is checked natively.
        printf("test_fork              skipped under user-mode emulation\n");
        return;
    }
    enum { BATCH = 20000, BATCHES = 30, FORKS = 8 };
    uint8_t *leaves = make_leaves(rng_next(g), (uint64_t)BATCH * BATCHES);
    rt_tree *tree;
    REQUIRE(rt_tree_new(4, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    fork_writer_job job = {tree, leaves, BATCH, BATCHES};
    pthread_t writer;
    REQUIRE(pthread_create(&writer, NULL, fork_writer, &job) == 0, "thread");
    int forks = strcmp(P->name, "valgrind") ? FORKS : 3;
    for (int k = 0; k < forks; k++) {
        struct timespec pause = {0, (long)rng_below(g, 4000000)};
        nanosleep(&pause, NULL);
        fflush(NULL);
        // The verdict comes through a pipe, not the exit status: under
        // valgrind the child's exit status reports the parent's worker
        // threads (absent in the child) as leaks.
        int verdict[2];
        REQUIRE(pipe(verdict) == 0, "pipe");
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0) {
            close(verdict[0]);
            // A hang ends the child with SIGALRM, which the parent reports.
            alarm(60);
            struct rt_tree_state st;
            rt_tree_state(tree, &st);
            int ok = st.size % BATCH == 0;
            uint8_t node[32], expected[32], root[32];
            if (st.size) {
                ok &= rt_tree_get_node(tree, st.depth, 0, node) == RT_OK &&
                      memcmp(node, st.root, 32) == 0;
                ok &= rt_compute_root(leaves, (size_t)st.size, 4, RT_RULE_ROTORTREE_015, expected) == RT_OK &&
                      memcmp(expected, st.root, 32) == 0;
            }
            rt_snapshot *snap;
            ok &= rt_tree_snapshot(tree, &snap) == RT_OK;
            ok &= rt_tree_insert(tree, leaves, root) == RT_OK;
            rt_snapshot_free(snap);
            char byte = ok ? 'Y' : 'N';
            _exit(write(verdict[1], &byte, 1) == 1 ? 0 : 1);
        }
        close(verdict[1]);
        char byte = 0;
        ssize_t got = read(verdict[0], &byte, 1);
        close(verdict[0]);
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
        CHECK(got == 1 && byte == 'Y',
              "forked child %s (status %d): hung on a lock or read a torn tree",
              WIFSIGNALED(status) ? "killed" : "failed", status);
    }
    pthread_join(writer, NULL);
    rt_tree_free(tree);
    free(leaves);
}

/* ---- 7. concurrency ------------------------------------------------------------ */

typedef struct conc {
    rt_tree *tree;
    unsigned arity;
    uint64_t n;
    const uint8_t *leaves;
    const uint8_t *roots;
    atomic_int done;
    atomic_long snapshots, proofs, configures, busy;
    pthread_mutex_t mu;
    rt_snapshot *box[8];
    unsigned boxed;
    rt_snapshot *kept[8];
    unsigned nkept;
} conc;

static void check_live_snapshot(conc *c, const rt_snapshot *snap, rng *g)
{
    struct rt_tree_state st;
    rt_snapshot_state(snap, &st);
    CHECK(st.size <= c->n, "concurrent snapshot size %llu", (unsigned long long)st.size);
    if (!st.size || st.size > c->n)
        return;
    CHECK(same_hash(st.root, c->roots + st.size * 32u),
          "concurrent snapshot root differs from the reference at size %llu",
          (unsigned long long)st.size);
    uint8_t node[32];
    uint64_t i = rng_below(g, st.size);
    CHECK(rt_snapshot_get_node(snap, 0, i, node) == RT_OK && same_hash(node, c->leaves + i * 32u),
          "concurrent snapshot leaf %llu", (unsigned long long)i);
    uint64_t len = 0;
    CHECK(rt_snapshot_level_len(snap, 0, &len) == RT_OK && len == st.size, "concurrent level 0");
    CHECK(rt_snapshot_level_len(snap, st.depth, &len) == RT_OK && len == 1, "concurrent top");
}

static void *conc_writer(void *arg)
{
    conc *c = arg;
    rng g = {global_seed ^ 0xABCDEF};
    uint64_t size = 0;
    long wrong = 0;
    while (size < c->n) {
        uint64_t k;
        switch (rng_below(&g, 10)) {
        case 0:
            k = 1 + rng_below(&g, 3000);
            break;
        case 1:
        case 2:
            k = 1 + rng_below(&g, 300);
            break;
        default:
            k = 1 + rng_below(&g, 4);
        }
        k = k < c->n - size ? k : c->n - size;
        uint8_t root[32];
        int rc = k == 1 ? rt_tree_insert(c->tree, c->leaves + size * 32u, root)
                        : rt_tree_insert_many(c->tree, c->leaves + size * 32u, (size_t)k, root);
        CHECK(rc == RT_OK, "concurrent insert: %d", rc);
        if (rc != RT_OK)
            break;
        size += k;
        wrong += !same_hash(root, c->roots + size * 32u);
        if (rng_below(&g, 16) == 0) {
            struct timespec ts = {0, (long)rng_below(&g, 300000)};
            nanosleep(&ts, NULL);
        }
    }
    CHECK(wrong == 0, "concurrent writer: %ld wrong roots", wrong);
    atomic_store(&c->done, 1);
    return NULL;
}

static void *conc_reader(void *arg)
{
    conc *c = arg;
    static atomic_uint reader_ids;
    rng g = {global_seed ^ (0x1234567ull * (1 + atomic_fetch_add(&reader_ids, 1)))};
    uint64_t prev_size = 0;
    unsigned rounds = 0;
    while (!atomic_load(&c->done) || rounds < 3) {
        rounds++;
        struct rt_tree_state st;
        rt_tree_state(c->tree, &st);
        CHECK(st.size >= prev_size && st.size <= c->n, "tree size went backwards");
        if (st.size)
            CHECK(same_hash(st.root, c->roots + st.size * 32u),
                  "rt_tree_state root differs at size %llu", (unsigned long long)st.size);
        if (st.size) {
            uint8_t node[32];
            uint64_t i = rng_below(&g, st.size);
            CHECK(rt_tree_get_node(c->tree, 0, i, node) == RT_OK &&
                      same_hash(node, c->leaves + i * 32u), "live leaf %llu",
                  (unsigned long long)i);
        }
        rt_snapshot *snap;
        int rc = rt_tree_snapshot(c->tree, &snap);
        CHECK(rc == RT_OK, "concurrent snapshot %d", rc);
        if (rc != RT_OK)
            continue;
        atomic_fetch_add(&c->snapshots, 1);
        check_live_snapshot(c, snap, &g);
        struct rt_tree_state ss;
        rt_snapshot_state(snap, &ss);
        if (ss.size) {
            size_t count = 1 + (size_t)rng_below(&g, rng_below(&g, 8) ? 16 : 600);
            uint64_t *idx = xmalloc(count * 8u), *offsets = xmalloc((count + 1) * 8u);
            for (size_t k = 0; k < count; k++)
                idx[k] = rng_below(&g, ss.size);
            CHECK(rt_proofs_layout(snap, idx, count, offsets, NULL) == RT_OK, "layout");
            uint8_t *data = xmalloc((size_t)offsets[count]);
            CHECK(rt_proofs_fill(snap, idx, count, offsets, data) == RT_OK, "fill");
            long bad = 0;
            for (size_t k = 0; k < count; k++) {
                const uint8_t *p = data + offsets[k];
                size_t plen = (size_t)(offsets[k + 1] - offsets[k]);
                if (rt_verify_inclusion(p, plen, NULL, 0) != RT_OK || get_u64(p + 8) != idx[k] ||
                    get_u64(p + 16) != ss.size || !same_hash(p + 24, c->roots + ss.size * 32u) ||
                    !same_hash(p + 56, c->leaves + idx[k] * 32u))
                    bad++;
            }
            CHECK(bad == 0, "%ld concurrent proofs wrong", bad);
            uint64_t first = 0;
            CHECK(rt_verify_inclusion_batch(data, (size_t)offsets[count], offsets, count,
                                            c->roots + ss.size * 32u, ss.size,
                                            &first) == RT_OK, "concurrent batch verify");
            atomic_fetch_add(&c->proofs, (long)count);
            free(data);
            free(offsets);
            free(idx);
            if (prev_size && prev_size <= ss.size) {
                size_t clen = 0;
                CHECK(rt_consistency_layout(snap, prev_size, &clen) == RT_OK, "consistency size");
                uint8_t *cp = xmalloc(clen);
                CHECK(rt_consistency_fill(snap, prev_size, cp, clen) == RT_OK &&
                          same_hash(cp + 24, c->roots + prev_size * 32u) &&
                          same_hash(cp + 56, c->roots + ss.size * 32u),
                      "concurrent consistency %llu -> %llu", (unsigned long long)prev_size,
                      (unsigned long long)ss.size);
                free(cp);
            }
            if (rng_below(&g, 50) == 0 && ss.size <= 20000) {
                uint8_t root[32];
                CHECK(rt_compute_root(c->leaves, (size_t)ss.size, c->arity, RT_RULE_ROTORTREE_015, root) == RT_OK &&
                          same_hash(root, c->roots + ss.size * 32u), "concurrent compute_root");
            }
        }
        prev_size = ss.size > prev_size ? ss.size : prev_size;
        // Hand the snapshot to another thread, or keep it past the tree.
        pthread_mutex_lock(&c->mu);
        if (c->nkept < 8 && rng_below(&g, 20) == 0) {
            c->kept[c->nkept++] = snap;
            snap = NULL;
        } else if (c->boxed < 8) {
            c->box[c->boxed++] = snap;
            snap = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        if (snap)
            rt_snapshot_free(snap);
    }
    return NULL;
}

/* Takes snapshots other threads made, reads them and frees them. */
static void *conc_consumer(void *arg)
{
    conc *c = arg;
    rng g = {global_seed ^ 0x5151};
    for (;;) {
        rt_snapshot *snap = NULL;
        int done = atomic_load(&c->done);
        pthread_mutex_lock(&c->mu);
        if (c->boxed)
            snap = c->box[--c->boxed];
        pthread_mutex_unlock(&c->mu);
        if (!snap) {
            if (done)
                break;
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
            continue;
        }
        check_live_snapshot(c, snap, &g);
        rt_snapshot_free(snap);
    }
    return NULL;
}

/* Reconfigures the pool and switches kernels while everything runs: each
 * call either applies or is refused with RT_ERR_BUSY. */
static void *conc_configure(void *arg)
{
    conc *c = arg;
    rng g = {global_seed ^ 0xC0FF};
    while (!atomic_load(&c->done)) {
        struct rt_pool_config cfg = {(uint32_t)(1 + rng_below(&g, 4)), 1 + rng_below(&g, 64),
                                     1 + rng_below(&g, 64)};
        int rc = rt_pool_configure(&cfg);
        CHECK(rc == RT_OK || rc == RT_ERR_BUSY, "concurrent configure gave %d", rc);
        atomic_fetch_add(rc == RT_OK ? &c->configures : &c->busy, 1);
        CHECK(rt_kernel_select(kernels[rng_below(&g, (uint64_t)kernel_count)]) == RT_OK,
              "concurrent kernel select");
        struct rt_pool_stats stats;
        rt_pool_get_stats(&stats);
        struct timespec ts = {0, (long)(100000 + rng_below(&g, 2000000))};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Builds and drops private trees at the same time (allocator and pool
 * traffic from an unrelated writer). */
static void *conc_churn(void *arg)
{
    conc *c = arg;
    rng g = {global_seed ^ 0x7777};
    while (!atomic_load(&c->done)) {
        unsigned arity = 2 + (unsigned)rng_below(&g, 20);
        uint64_t n = 1 + rng_below(&g, c->n < 2000 ? c->n : 2000);
        rt_tree *tree;
        REQUIRE(rt_tree_new(arity, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "churn tree");
        uint8_t root[32], want[32];
        CHECK(rt_tree_insert_many(tree, c->leaves, (size_t)n, root) == RT_OK, "churn insert");
        CHECK(rt_compute_root(c->leaves, (size_t)n, arity, RT_RULE_ROTORTREE_015, want) == RT_OK && same_hash(root, want),
              "churn root");
        rt_snapshot *snap;
        CHECK(rt_tree_snapshot(tree, &snap) == RT_OK, "churn snapshot");
        rt_tree_free(tree);
        struct rt_tree_state st;
        rt_snapshot_state(snap, &st);
        CHECK(st.size == n && same_hash(st.root, want), "churn snapshot after free");
        rt_snapshot_free(snap);
    }
    return NULL;
}

static double now_s(void);

static void test_concurrency(rng *g)
{
    static const unsigned arities[] = {4, 2, 16, 3, 255, 7, 8, 64};
    double start = now_s();
    for (unsigned round = 0; round < P->conc_rounds || now_s() - start < P->conc_seconds;
         round++) {
        conc c;
        memset(&c, 0, sizeof(c));
        c.arity = arities[round % 8];
        c.n = P->conc_leaves;
        uint8_t *leaves = make_leaves(rng_next(g), c.n);
        uint8_t *roots = xmalloc((size_t)(c.n + 1) * 32u);
        ref full;
        ref_build(&full, c.arity, leaves, c.n, roots);
        c.leaves = leaves;
        c.roots = roots;
        pthread_mutex_init(&c.mu, NULL);
        set_pool(2, 8, 4);
        REQUIRE(rt_tree_new(c.arity, 40, RT_RULE_ROTORTREE_015, &c.tree) == RT_OK, "tree");

        pthread_t writer, consumer, configure, churn, readers[8];
        unsigned nreaders = P->conc_readers < 8 ? P->conc_readers : 8;
        REQUIRE(pthread_create(&writer, NULL, conc_writer, &c) == 0, "thread");
        for (unsigned r = 0; r < nreaders; r++)
            REQUIRE(pthread_create(&readers[r], NULL, conc_reader, &c) == 0, "thread");
        REQUIRE(pthread_create(&consumer, NULL, conc_consumer, &c) == 0, "thread");
        REQUIRE(pthread_create(&configure, NULL, conc_configure, &c) == 0, "thread");
        REQUIRE(pthread_create(&churn, NULL, conc_churn, &c) == 0, "thread");
        pthread_join(writer, NULL);
        for (unsigned r = 0; r < nreaders; r++)
            pthread_join(readers[r], NULL);
        pthread_join(consumer, NULL);
        pthread_join(configure, NULL);
        pthread_join(churn, NULL);

        CHECK(atomic_load(&c.snapshots) > 0 && atomic_load(&c.proofs) > 0,
              "concurrency round did no reads");
        check_tree(c.tree, &full, "after concurrency", 0, g);
        rt_tree_free(c.tree);
        // Snapshots kept past the tree (and any left in the box).
        for (unsigned k = 0; k < c.nkept; k++) {
            check_live_snapshot(&c, c.kept[k], g);
            struct rt_tree_state st;
            rt_snapshot_state(c.kept[k], &st);
            if (st.size) {
                ref part;
                ref_build(&part, c.arity, leaves, st.size, NULL);
                check_snapshot(c.kept[k], &part, "kept snapshot", 256, g);
                check_proofs(c.kept[k], &part, 32, g, "kept snapshot", 0);
                ref_free(&part);
            }
            rt_snapshot_free(c.kept[k]);
        }
        for (unsigned k = 0; k < c.boxed; k++)
            rt_snapshot_free(c.box[k]);
        printf("concurrency round %u (arity %u, %llu leaves): %ld snapshots, %ld proofs, "
               "%ld configures applied, %ld refused busy\n",
               round, c.arity, (unsigned long long)c.n, atomic_load(&c.snapshots),
               atomic_load(&c.proofs), atomic_load(&c.configures), atomic_load(&c.busy));
        pthread_mutex_destroy(&c.mu);
        ref_free(&full);
        free(roots);
        free(leaves);
    }
}

/* ---- nested use: a pool unit that inserts into another tree --------------- */

// Units of one parallel_for each call insert_many on a tree of their own,
// large enough that the inner call runs on the pool too (the way an
// application composes its own parallel loop with the tree's). Every tree
// must end exactly as one built sequentially, and nothing may deadlock.
#define NESTED_TREES 6

typedef struct nested_job {
    rt_tree *trees[NESTED_TREES];
    const uint8_t *leaves[NESTED_TREES];
    uint64_t count[NESTED_TREES];
    uint8_t roots[NESTED_TREES][32];
    atomic_int status[NESTED_TREES];
} nested_job;

static void nested_unit(void *ctx, size_t begin, size_t end)
{
    nested_job *job = ctx;
    for (size_t i = begin; i < end; i++)
        atomic_store(&job->status[i], rt_tree_insert_many(job->trees[i], job->leaves[i],
                                                          (size_t)job->count[i],
                                                          job->roots[i]));
}

static void test_nested_insert(rng *g)
{
    for (uint32_t threads = 2; threads <= 3; threads++) {
        set_pool(threads, 8, 4);
        nested_job job;
        memset(&job, 0, sizeof job);
        uint8_t *owned[NESTED_TREES];
        for (unsigned i = 0; i < NESTED_TREES; i++) {
            unsigned arity = 2 + (unsigned)rng_below(g, 15);
            job.count[i] = 2000 + rng_below(g, UNDER_TSAN ? 2000 : 20000);
            owned[i] = make_leaves(rng_next(g), job.count[i]);
            job.leaves[i] = owned[i];
            REQUIRE(rt_tree_new(arity, 32, RT_RULE_ROTORTREE_015, &job.trees[i]) == RT_OK, "nested: tree");
        }
        rt_pool_parallel_for(NESTED_TREES, 1, nested_unit, &job);
        for (unsigned i = 0; i < NESTED_TREES; i++) {
            unsigned arity, max_depth;
            rt_tree_shape(job.trees[i], &arity, &max_depth);
            uint8_t expected[32];
            CHECK(atomic_load(&job.status[i]) == RT_OK, "nested insert %u: status %d", i,
                  atomic_load(&job.status[i]));
            REQUIRE(rt_compute_root(job.leaves[i], (size_t)job.count[i], arity, RT_RULE_ROTORTREE_015, expected) ==
                        RT_OK, "nested: compute_root");
            CHECK(memcmp(job.roots[i], expected, 32) == 0,
                  "nested insert %u (arity %u, %llu leaves, %u threads): root differs", i,
                  arity, (unsigned long long)job.count[i], threads);
            struct rt_tree_state st;
            rt_tree_state(job.trees[i], &st);
            CHECK(st.size == job.count[i] && memcmp(st.root, expected, 32) == 0,
                  "nested insert %u: tree state differs", i);
            rt_tree_free(job.trees[i]);
            free(owned[i]);
        }
    }
}

/* ---- main ------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define RUN(section, ...)                                                            \
    do {                                                                             \
        double t0_ = now_s();                                                        \
        section(__VA_ARGS__);                                                        \
        printf("%-22s %7.2f s  (%ld checks so far, %ld failed)\n", #section,           \
               now_s() - t0_, atomic_load(&harness_passed),                           \
               atomic_load(&harness_failed));                                          \
        fflush(stdout);                                                              \
    } while (0)

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "asan";
    for (size_t i = 0; i < sizeof(PROFILES) / sizeof(PROFILES[0]); i++)
        if (strcmp(PROFILES[i].name, name) == 0)
            P = &PROFILES[i];
    REQUIRE(P, "unknown profile %s (asan, tsan, valgrind, long, emulated)", name);
    global_seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL);
    printf("core driver: profile %s, seed %llu, tsan %d, wrap %d\n", P->name,
           (unsigned long long)global_seed, UNDER_TSAN, RT_TEST_WRAP + 0);
    rng g = {global_seed};
    struct rt_pool_config initial;
    rt_pool_get_config(&initial);

    find_kernels();
    RUN(test_api_errors);
    RUN(test_result_buffers);
    RUN(test_prefault);
    RUN(test_prefault_growth);
    RUN(test_prefault_single_inserts);
    RUN(test_prefix_hashed_ahead_is_dropped_when_refused);
    RUN(test_random_trees, &g);
    RUN(test_big_tree, &g);
    RUN(test_restore, &g);
    RUN(test_compute_root, &g);
    RUN(test_garbage_proofs, &g);
    RUN(test_index_slot_width);
    RUN(test_log_views, &g);
    RUN(test_leaf_index, &g);
#if RT_TEST_WRAP
    RUN(test_injection, &g);
    RUN(test_index_injection, &g);
#else
    printf("test_injection         skipped (build with -DRT_TEST_WRAP=1 and --wrap)\n");
#endif
    RUN(test_snapshot_churn, &g);
    RUN(test_fork, &g);
    RUN(test_nested_insert, &g);
    RUN(test_concurrency, &g);

    REQUIRE(rt_pool_configure(&initial) == RT_OK, "restore pool config");
    CHECK(rt_pool_shutdown() == RT_OK, "pool shutdown");
    rt_mapping_prefault_wait(); // its thread ends when idle: none left for the leak check
    char seed_note[48];
    snprintf(seed_note, sizeof seed_note, " (seed %llu)", (unsigned long long)global_seed);
    return harness_summary("core", seed_note);
}
