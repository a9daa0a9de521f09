/* Stress of rt_index_beside for ThreadSanitizer (tests/test_leaf_index_beside_attack.py):
 * 2 pool threads and one-parent units, so that a 2048-leaf batch is shared
 * out in 32-leaf blocks of puts; a refused unique batch whose repeat sits at
 * a block edge, then a plain batch repeating leaves across every block, while
 * another thread reads an old snapshot's index (which the in-place puts write
 * under it). Either may end up the owner of the plain-store puts, so many
 * iterations are needed for the helper to join mid-block. */
#include "rotortree.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Leaf n: its 8 big-endian bytes four times (as leaf_of in the Python tests). */
static void leaf(uint8_t *out, uint64_t n)
{
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 8; b++)
            out[k * 8 + b] = (uint8_t)(n >> (8 * (7 - b)));
}

static atomic_int stop;
static rt_snapshot *shared_snap;
static uint8_t probes[200 * 32];
static int fails;

static void *reader(void *arg)
{
    (void)arg;
    uint64_t pos[200];
    uint8_t found[200];
    while (!atomic_load(&stop)) {
        if (rt_snapshot_index_find(shared_snap, probes, 200, pos, found) != RT_OK) abort();
        for (int i = 0; i < 200; i++)
            if ((i < 100) != (found[i] != 0) || (i < 100 && pos[i] != (uint64_t)i)) {
                fprintf(stderr, "snapshot answer %d wrong\n", i);
                abort();
            }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 200;
    struct rt_pool_config c = {2, 2, 1};
    if (rt_pool_configure(&c) != RT_OK) return 2;
    const size_t n = 2048, distinct = 700;
    uint8_t *batch = malloc(n * 32), *marks = malloc(n), root[32], before[32];
    uint64_t *pos = malloc(n * 8);
    uint8_t *found = malloc(n);
    for (int i = 0; i < 200; i++) leaf(probes + 32 * i, 1000000 + (uint64_t)i);
    for (int it = 0; it < iters; it++) {
        int bad = 0;
        rt_tree *t;
        if (rt_tree_new(2, 32, RT_RULE_ROTORTREE_015, &t) != RT_OK) return 2;
        if (rt_tree_index_enable(t) != RT_OK) return 2;
        uint8_t base[100 * 32];
        memcpy(base, probes, sizeof base);
        if (rt_tree_insert_many(t, base, 100, root) != RT_OK) return 2;
        if (rt_tree_snapshot(t, &shared_snap) != RT_OK) return 2;
        atomic_store(&stop, 0);
        pthread_t th;
        pthread_create(&th, NULL, reader, NULL);
        // Unique, distinct, then one repeat at a block edge: refused.
        for (size_t i = 0; i < n; i++) leaf(batch + 32 * i, (uint64_t)(it + 50) * 100000 + i);
        size_t at = 32 * (1 + (size_t)it % 60) - (it & 1);
        memcpy(batch + 32 * at, batch + 32 * (at + 1 + (size_t)it % 7), 32);
        uint64_t dups;
        struct rt_tree_state st;
        rt_tree_state(t, &st);
        memcpy(before, st.root, 32);
        int rc = rt_tree_insert_unique(t, batch, n, RT_UNIQUE_REJECT | RT_UNIQUE_STABLE, marks,
                                       &dups, root);
        rt_tree_state(t, &st);
        if (rc != RT_ERR_DUPLICATE || dups != 1 || st.size != 100 || memcmp(st.root, before, 32)) {
            fprintf(stderr, "it %d: refused unique rc %d dups %llu size %llu\n", it, rc,
                    (unsigned long long)dups, (unsigned long long)st.size);
            bad = 1;
        }
        // Plain stable batch with repeats across every block: least positions.
        for (size_t i = 0; i < n; i++)
            leaf(batch + 32 * i, (uint64_t)(it + 50) * 100000 + (i * 7919) % distinct);
        if (rt_tree_insert_many_stable(t, batch, n, root) != RT_OK) return 2;
        if (rt_tree_index_find(t, batch, n, pos, found) != RT_OK) return 2;
        for (size_t i = 0; i < n; i++) {
            size_t first = i;
            for (size_t j = 0; j < i; j++)
                if (!memcmp(batch + 32 * j, batch + 32 * i, 32)) { first = j; break; }
            if (!found[i] || pos[i] != 100 + first) {
                fprintf(stderr, "it %d: leaf %zu at %llu, want %zu\n", it, i,
                        (unsigned long long)pos[i], 100 + first);
                bad = 1;
                break;
            }
        }
        struct rt_index_stats is;
        rt_tree_index_stats(t, &is);
        if (is.entries != 100 + distinct) {
            fprintf(stderr, "it %d: entries %llu\n", it, (unsigned long long)is.entries);
            bad = 1;
        }
        atomic_store(&stop, 1);
        pthread_join(th, NULL);
        rt_snapshot_free(shared_snap);
        rt_tree_free(t);
        fails += bad;
    }
    printf("index beside driver: %d passed, %d failed\n", iters - fails, fails);
    return fails != 0;
}
