/*
 * Whole trees under every kernel this machine runs, at 1 and 2 threads,
 * through the public header only:
 *
 *  - the Rust crate's vectors (tests/data/rotortree-0.15.json, handed over
 *    as text by tests/test_cross_aarch64.py): rt_compute_root, one
 *    insert_many, the vector's batches and (up to 4097 leaves) single
 *    inserts must each give the crate's root;
 *  - random trees of every arity 2..40: every node of every level, built
 *    in random batches, must be byte-identical to the tree the portable
 *    kernel builds on one thread.
 *
 * It exists so that a kernel this machine cannot run natively (NEON on an
 * x86 host) is checked on whole trees under user-mode emulation, where the
 * Python extension cannot be loaded. By hand:
 *
 *   gcc -O2 -std=c11 -pthread -Icsrc tests/c/test_kernel_trees.c csrc/[a-z]*.c
 *   ./a.out VECTORS_FILE [seed]
 *
 * VECTORS_FILE holds one vector a line: "arity size root_hex b1,b2,...",
 * the batch sizes summing to size. Leaf i is blake3(le_u64(i)).
 *
 * Prints "kernel trees driver: N passed, M failed" and exits non-zero on
 * failure.
 */
// harness.h uses clock_gettime, which -std=c11 hides unless a feature macro
// comes before the first system header (glibc is lenient here, musl is not).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rotortree.h"

#include "harness.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_VECTORS = 512, MAX_BATCHES = 16, SINGLE_INSERTS_UP_TO = 4097 };
enum { RANDOM_MIN_ARITY = 2, RANDOM_MAX_ARITY = 40, RANDOM_MAX_LEAVES = 2500 };

static const unsigned THREADS[] = {1, 2};

static int kernels[8], kernel_count;

static void find_kernels(void)
{
    // Kernel numbers have gaps; unknown ones are never available.
    for (int k = RT_KERNEL_PORTABLE; k < 32 && kernel_count < 8; k++)
        if (rt_kernel_available(k))
            kernels[kernel_count++] = k;
    REQUIRE(kernel_count >= 1 && kernels[0] == RT_KERNEL_PORTABLE,
            "portable kernel missing");
}

/* Threshold 1 and small chunks put even the smallest levels on the pool,
 * so two threads split every level a kernel hashes. */
static void use(int kernel, unsigned threads)
{
    struct rt_pool_config config = {threads, 1, 4};
    REQUIRE(rt_pool_configure(&config) == RT_OK, "pool %u threads", threads);
    REQUIRE(rt_kernel_select(kernel) == RT_OK, "select %s", rt_kernel_name(kernel));
}

static bool same_hash(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, 32) == 0;
}

/* ---- the Rust crate's vectors ---------------------------------------------- */

typedef struct vector {
    unsigned arity;
    uint64_t size;
    uint8_t root[32];
    uint64_t batches[MAX_BATCHES];
    unsigned batch_count;
} vector;

static vector vectors[MAX_VECTORS];
static unsigned vector_count;

static void parse_hex(const char *hex, uint8_t out[32])
{
    REQUIRE(strlen(hex) == 64, "root %s is not 64 hex digits", hex);
    for (int i = 0; i < 32; i++) {
        unsigned byte;
        REQUIRE(sscanf(hex + 2 * i, "%2x", &byte) == 1, "bad hex %s", hex);
        out[i] = (uint8_t)byte;
    }
}

static void read_vectors(const char *path)
{
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL, "cannot open %s", path);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        REQUIRE(vector_count < MAX_VECTORS, "more than %d vectors", MAX_VECTORS);
        vector *v = &vectors[vector_count];
        char hex[80], batches[2048];
        REQUIRE(sscanf(line, "%u %" SCNu64 " %79s %2047s", &v->arity, &v->size, hex,
                       batches) == 4,
                "bad vector line: %s", line);
        parse_hex(hex, v->root);
        uint64_t total = 0;
        for (char *p = batches; *p;) {
            REQUIRE(v->batch_count < MAX_BATCHES, "too many batches: %s", line);
            char *end;
            uint64_t batch = strtoull(p, &end, 10);
            REQUIRE(end != p && batch > 0 && (*end == ',' || *end == '\0'),
                    "bad batches: %s", line);
            v->batches[v->batch_count++] = batch;
            total += batch;
            p = *end == ',' ? end + 1 : end;
        }
        REQUIRE(total == v->size, "batches do not sum to the size: %s", line);
        vector_count++;
    }
    fclose(f);
    REQUIRE(vector_count > 0, "no vectors in %s", path);
}

static uint8_t *vector_leaves(uint64_t count)
{
    uint8_t *leaves = xmalloc((size_t)count * 32u);
    for (uint64_t i = 0; i < count; i++) {
        uint8_t le[8];
        for (int b = 0; b < 8; b++)
            le[b] = (uint8_t)(i >> (8 * b));
        rt_blake3(le, sizeof le, leaves + i * 32u);
    }
    return leaves;
}

static void check_vector(const vector *v, const uint8_t *leaves, const char *what,
                         unsigned threads)
{
    uint8_t root[32];
    CHECK(rt_compute_root(leaves, (size_t)v->size, v->arity, RT_RULE_ROTORTREE_015, root) == RT_OK &&
              same_hash(root, v->root),
          "%s, %u threads, arity %u, size %" PRIu64 ": compute_root", what, threads,
          v->arity, v->size);

    rt_tree *whole = NULL;
    REQUIRE(rt_tree_new(v->arity, 32, RT_RULE_ROTORTREE_015, &whole) == RT_OK, "tree");
    CHECK(rt_tree_insert_many(whole, leaves, (size_t)v->size, root) == RT_OK &&
              same_hash(root, v->root),
          "%s, %u threads, arity %u, size %" PRIu64 ": one batch", what, threads,
          v->arity, v->size);
    rt_tree_free(whole);

    rt_tree *batched = NULL;
    REQUIRE(rt_tree_new(v->arity, 32, RT_RULE_ROTORTREE_015, &batched) == RT_OK, "tree");
    uint64_t offset = 0;
    bool ok = true;
    for (unsigned b = 0; b < v->batch_count; b++) {
        ok &= rt_tree_insert_many(batched, leaves + offset * 32u,
                                  (size_t)v->batches[b], root) == RT_OK;
        offset += v->batches[b];
    }
    CHECK(ok && same_hash(root, v->root),
          "%s, %u threads, arity %u, size %" PRIu64 ": batches", what, threads,
          v->arity, v->size);
    rt_tree_free(batched);

    // Single inserts hash on the calling thread, whatever the pool has.
    if (threads == 1 && v->size <= SINGLE_INSERTS_UP_TO) {
        rt_tree *single = NULL;
        REQUIRE(rt_tree_new(v->arity, 32, RT_RULE_ROTORTREE_015, &single) == RT_OK, "tree");
        ok = true;
        for (uint64_t i = 0; i < v->size; i++)
            ok &= rt_tree_insert(single, leaves + i * 32u, root) == RT_OK;
        CHECK(ok && same_hash(root, v->root),
              "%s, arity %u, size %" PRIu64 ": single inserts", what, v->arity, v->size);
        rt_tree_free(single);
    }
}

static void test_vectors(void)
{
    uint64_t most = 0;
    for (unsigned i = 0; i < vector_count; i++)
        if (vectors[i].size > most)
            most = vectors[i].size;
    use(RT_KERNEL_PORTABLE, 1);
    uint8_t *leaves = vector_leaves(most);

    for (int k = 0; k < kernel_count; k++)
        for (size_t t = 0; t < sizeof THREADS / sizeof *THREADS; t++) {
            use(kernels[k], THREADS[t]);
            for (unsigned i = 0; i < vector_count; i++)
                check_vector(&vectors[i], leaves, rt_kernel_name(kernels[k]),
                             THREADS[t]);
        }
    free(leaves);
}

/* ---- random trees, every kernel against portable --------------------------- */

/* Every node of every level, level 0 first. */
static uint8_t *tree_nodes(rt_tree *tree, size_t *len)
{
    struct rt_tree_state state;
    rt_tree_state(tree, &state);
    size_t cap = 0, used = 0;
    uint8_t *nodes = NULL;
    for (unsigned level = 0; level <= state.depth; level++) {
        uint64_t count = 0;
        REQUIRE(rt_tree_level_len(tree, level, &count) == RT_OK, "level_len %u", level);
        if (used + count * 32u > cap) {
            cap = (used + count * 32u) * 2;
            nodes = xrealloc(nodes, cap);
        }
        for (uint64_t i = 0; i < count; i++, used += 32)
            REQUIRE(rt_tree_get_node(tree, level, i, nodes + used) == RT_OK,
                    "get_node %u %" PRIu64, level, i);
    }
    *len = used;
    return nodes;
}

/* The tree of `n` leaves inserted in the batches `batches` (summing to n). */
static rt_tree *build(unsigned arity, const uint8_t *leaves, const uint64_t *batches,
                      unsigned batch_count)
{
    rt_tree *tree = NULL;
    REQUIRE(rt_tree_new(arity, 32, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "tree");
    uint64_t offset = 0;
    uint8_t root[32];
    for (unsigned b = 0; b < batch_count; b++) {
        int rc = batches[b] == 1
                     ? rt_tree_insert(tree, leaves + offset * 32u, root)
                     : rt_tree_insert_many(tree, leaves + offset * 32u,
                                           (size_t)batches[b], root);
        REQUIRE(rc == RT_OK, "insert of %" PRIu64 " leaves: %d", batches[b], rc);
        offset += batches[b];
    }
    return tree;
}

static void test_random_trees(uint64_t seed)
{
    rng g = {seed};
    for (unsigned arity = RANDOM_MIN_ARITY; arity <= RANDOM_MAX_ARITY; arity++) {
        uint64_t n = 1 + rng_below(&g, RANDOM_MAX_LEAVES);
        uint8_t *leaves = xmalloc((size_t)n * 32u);
        for (uint64_t i = 0; i < n * 4; i++) {
            uint64_t word = rng_next(&g);
            memcpy(leaves + 8 * i, &word, 8);
        }
        // Batches of random sizes, some single leaves, some whole levels.
        uint64_t batches[64];
        unsigned batch_count = 0;
        for (uint64_t left = n; left > 0; batch_count++) {
            uint64_t k = batch_count == 63 ? left : 1 + rng_below(&g, left);
            if (rng_below(&g, 4) == 0)
                k = 1;
            batches[batch_count] = k;
            left -= k;
        }

        use(RT_KERNEL_PORTABLE, 1);
        rt_tree *reference = build(arity, leaves, batches, batch_count);
        size_t want_len;
        uint8_t *want = tree_nodes(reference, &want_len);
        rt_tree_free(reference);

        for (int k = 0; k < kernel_count; k++)
            for (size_t t = 0; t < sizeof THREADS / sizeof *THREADS; t++) {
                use(kernels[k], THREADS[t]);
                rt_tree *tree = build(arity, leaves, batches, batch_count);
                size_t got_len;
                uint8_t *got = tree_nodes(tree, &got_len);
                CHECK(got_len == want_len && memcmp(got, want, want_len) == 0,
                      "%s, %u threads, arity %u, %" PRIu64
                      " leaves in %u batches: nodes differ from portable",
                      rt_kernel_name(kernels[k]), THREADS[t], arity, n, batch_count);
                uint8_t root[32];
                CHECK(rt_compute_root(leaves, (size_t)n, arity, RT_RULE_ROTORTREE_015, root) == RT_OK &&
                          same_hash(root, want + want_len - 32),
                      "%s, %u threads, arity %u, %" PRIu64 " leaves: compute_root",
                      rt_kernel_name(kernels[k]), THREADS[t], arity, n);
                free(got);
                rt_tree_free(tree);
            }
        free(want);
        free(leaves);
    }
}

int main(int argc, char **argv)
{
    REQUIRE(argc >= 2, "usage: %s VECTORS_FILE [seed]", argv[0]);
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL);
    find_kernels();
    read_vectors(argv[1]);

    test_vectors();
    test_random_trees(seed);

    REQUIRE(rt_pool_shutdown() == RT_OK, "pool shutdown");
    printf("kernels tested:");
    for (int k = 0; k < kernel_count; k++)
        printf(" %s", rt_kernel_name(kernels[k]));
    printf("\n%u vectors, random trees of arity %d..%d, threads 1 and 2, seed %" PRIu64
           "\n",
           vector_count, RANDOM_MIN_ARITY, RANDOM_MAX_ARITY, seed);
    char seed_note[48];
    snprintf(seed_note, sizeof seed_note, " (seed %" PRIu64 ")", seed);
    return harness_summary("kernel trees", seed_note);
}
