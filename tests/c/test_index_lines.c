/* The single writer's puts into the leaf index (issue 17's review), checked
 * slot for slot: index_put with plain stores (which may decide from the
 * home slot's cache line at once), index_put with compare-exchanges (the
 * probe that reads one slot at a time) and part_put (the regions' puts)
 * must leave byte-identical tables and answer alike, and agree with a
 * linear probe written here from the table's rules, for every width of
 * position (16..32 bits: tags of 16 bits down to none) and for leaves
 * chosen, with the table's seed, to crowd the ends of cache lines, the
 * end of the table and the ends of regions. Then the public calls on a
 * table whose positions take all 32 bits (a tree of 2**30 leaves or more),
 * reached by sizing the table for such a tree.
 *
 * This driver compiles leaf_index.c into itself (its functions are static)
 * and is linked with every other csrc/ object
 * (tests/test_leaf_index_lines.py). Argument: rounds (default 40). */
#include "leaf_index.c"

#include "harness.h"

#define MAX_SLOTS 256u

/* The tree size that gives tables of `bits` position bits. */
static uint64_t size_for_pos_bits(unsigned bits)
{
    return bits <= 16 ? 1 : (uint64_t)1 << (bits - 2);
}

static rt_leaf_index *table(uint64_t slots, unsigned pos_bits, uint64_t seed)
{
    rt_leaf_index *ix = index_new(slots / LOAD_DEN * LOAD_NUM, size_for_pos_bits(pos_bits));
    REQUIRE(ix, "index_new failed");
    REQUIRE(ix->mask + 1 == slots && ix->pos_bits == pos_bits && !ix->wide,
            "table of %llu slots, %u bits: got %llu slots, %u bits, wide %u",
            (unsigned long long)slots, pos_bits, (unsigned long long)(ix->mask + 1),
            ix->pos_bits, ix->wide);
    ix->seed = seed;
    memset(ix->slots, 0, ix->bytes);
    return ix;
}

/* The linear probe by the table's rules: from the home slot on, the first
 * empty slot takes the leaf; a slot naming the same leaf (same tag, same
 * bytes) ends the probe, keeping the lower position. `stop` as part_put's. */
static int reference_put(uint32_t *slots, uint64_t mask, unsigned pos_bits, const uint8_t *by_pos,
                         uint64_t base, uint64_t h, uint64_t p, uint64_t stop, uint64_t *evicted)
{
    const uint64_t tag_bits = 32u - pos_bits;
    const uint64_t tag = tag_bits ? h >> (64u - tag_bits) : 0;
    const uint64_t pos_mask = ((uint64_t)1 << pos_bits) - 1;
    const uint32_t want = (uint32_t)((tag << pos_bits) | (p + 1));
    *evicted = ABSENT;
    for (uint64_t i = h & mask;;) {
        if (!slots[i]) {
            slots[i] = want;
            return 1;
        }
        const uint64_t s = slots[i], q = (s & pos_mask) - 1;
        if ((s >> pos_bits) == tag && !memcmp(by_pos + 32 * (q - base), by_pos + 32 * (p - base), 32)) {
            if (q > p) {
                slots[i] = want;
                *evicted = q;
            }
            return 0;
        }
        i = (i + 1) & mask;
        if (i == stop)
            return -1;
    }
}

/* Where leaves are sent: anywhere, or to homes at the last few slots of a
 * line, or into the table's last line (probes then wrap to slot 0). */
enum crowd { CROWD_NONE, CROWD_LINE_ENDS, CROWD_TABLE_END, CROWD_ONE_LINE };

static int home_wanted(enum crowd crowd, uint64_t home, uint64_t slots, uint64_t line)
{
    switch (crowd) {
    case CROWD_LINE_ENDS:
        return home % LINE_SLOTS >= LINE_SLOTS - 3;
    case CROWD_TABLE_END:
        return home >= slots - LINE_SLOTS;
    case CROWD_ONE_LINE:
        return home / LINE_SLOTS == line;
    default:
        return 1;
    }
}

/* `distinct` leaves whose homes (for `seed` and `mask`) the crowd wants. */
static void crowded_leaves(uint8_t *out, size_t distinct, enum crowd crowd, uint64_t seed,
                           uint64_t slots, rng *r)
{
    uint64_t line = rng_below(r, slots / LINE_SLOTS), n = rng_next(r);
    for (size_t k = 0; k < distinct;) {
        uint8_t leaf[32];
        for (int w = 0; w < 4; w++) {
            uint64_t word = (n++) * 0x9E3779B97F4A7C15ull ^ (uint64_t)w;
            memcpy(leaf + 8 * w, &word, 8);
        }
        if (home_wanted(crowd, leaf_hash(leaf, seed) & (slots - 1), slots, line))
            memcpy(out + 32 * k++, leaf, 32);
    }
}

/* One round: a sequence of puts (repeats included, positions in a shuffled
 * or rising order) into four tables with one seed; after every put the
 * tables must be byte-identical and every put must answer alike. */
static void round_of_puts(rng *r, unsigned pos_bits, uint64_t slots, enum crowd crowd)
{
    const uint64_t seed = rng_next(r);
    rt_leaf_index *plain = table(slots, pos_bits, seed), *cas = table(slots, pos_bits, seed),
                  *part = table(slots, pos_bits, seed);
    static uint32_t model[MAX_SLOTS];
    memset(model, 0, sizeof model);
    // Fewer distinct leaves than slots, so a probe always ends; up to one
    // empty slot, far past the load the tree allows, for long clusters.
    const size_t distinct = 1 + (size_t)rng_below(r, slots - 1);
    const size_t count = distinct + (size_t)rng_below(r, 3 * distinct);
    // Positions from 0, or ending at the largest the table holds (position
    // + 1 then has every position bit set, next to the tag).
    const uint64_t base = rng_below(r, 2) ? ((uint64_t)1 << pos_bits) - 1 - count : 0;
    uint8_t *pool = xmalloc(32 * distinct), *by_pos = xmalloc(32 * count);
    uint64_t *order = xmalloc(8 * count);
    crowded_leaves(pool, distinct, crowd, seed, slots, r);
    for (size_t p = 0; p < count; p++)
        memcpy(by_pos + 32 * p, pool + 32 * (p < distinct ? p : rng_below(r, distinct)), 32);
    for (size_t p = 0; p < count; p++)
        order[p] = p;
    if (rng_below(r, 2))
        for (size_t p = count - 1; p > 0; p--) {
            size_t o = (size_t)rng_below(r, p + 1);
            uint64_t t = order[p];
            order[p] = order[o];
            order[o] = t;
        }
    leaf_reader reader = {NULL, NULL, 0, base + count, by_pos, base};
    part_job job = {0};
    job.ix = part;
    job.reader = &reader;
    int put_all = 1;
    for (size_t k = 0; k < count; k++) {
        const uint64_t p = base + order[k];
        const uint8_t *leaf = by_pos + 32 * order[k];
        const uint64_t h = leaf_hash(leaf, seed);
        uint64_t ev_plain = ABSENT, ev_cas = ABSENT, ev_model;
        int got_plain = index_put(plain, &reader, leaf, h, p, &ev_plain, 0);
        int got_cas = index_put(cas, &reader, leaf, h, p, &ev_cas, 1);
        uint64_t item = ((h & part->mask) << 32) | (tag_of(part, h) << part->pos_bits) | (p + 1);
        int got_part = part_put(&job, item, UINT64_MAX);
        int want = reference_put(model, slots - 1, pos_bits, by_pos, base, h, p, UINT64_MAX,
                                 &ev_model);
        CHECK(got_plain == want && got_cas == want && got_part == want &&
                  (want || (ev_plain == ev_model && ev_cas == ev_model)),
              "%u bits, %llu slots, crowd %d, put %zu (position %llu, home %llu): plain %d "
              "cas %d part %d, model %d (evicted %llx %llx model %llx)",
              pos_bits, (unsigned long long)slots, (int)crowd, k, (unsigned long long)p,
              (unsigned long long)(h & (slots - 1)), got_plain, got_cas, got_part, want,
              (unsigned long long)ev_plain, (unsigned long long)ev_cas,
              (unsigned long long)ev_model);
        int same = !memcmp(plain->slots, model, 4 * slots) &&
                   !memcmp(cas->slots, model, 4 * slots) && !memcmp(part->slots, model, 4 * slots);
        CHECK(same, "%u bits, %llu slots, crowd %d: tables differ after put %zu", pos_bits,
              (unsigned long long)slots, (int)crowd, k);
        if (!same || got_plain != want) {
            put_all = 0; // the tables part: later probes may not end
            break;
        }
    }
    // Every leaf is found at its first position.
    for (size_t d = 0; put_all && d < distinct; d++) {
        const uint8_t *leaf = pool + 32 * d;
        uint64_t first = ABSENT;
        for (size_t p = 0; p < count && first == ABSENT; p++)
            if (!memcmp(by_pos + 32 * p, leaf, 32))
                first = base + p;
        uint64_t got = index_find(plain, &reader, leaf, leaf_hash(leaf, seed));
        CHECK(got == first, "%u bits: leaf %zu found at %llu, first at %llu", pos_bits, d,
              (unsigned long long)got, (unsigned long long)first);
    }
    free(pool);
    free(by_pos);
    free(order);
    rt_index_release(plain);
    rt_index_release(cas);
    rt_index_release(part);
}

/* The regions' pass: items in batch order, each probing no further than
 * its region's end (put aside there), then the items put aside, probing
 * anywhere; regions of `region` slots (a multiple of LINE_SLOTS, as
 * part_fill's are), with marks of repeats as part_put makes them. */
static void round_of_regions(rng *r, unsigned pos_bits, uint64_t slots, uint64_t region,
                             enum crowd crowd)
{
    const uint64_t seed = rng_next(r);
    rt_leaf_index *part = table(slots, pos_bits, seed);
    static uint32_t model[MAX_SLOTS];
    memset(model, 0, sizeof model);
    const size_t distinct = 1 + (size_t)rng_below(r, slots - 1);
    const size_t count = distinct + (size_t)rng_below(r, 3 * distinct);
    // Positions from 0, or ending at the largest the table holds (position
    // + 1 then has every position bit set, next to the tag).
    const uint64_t base = rng_below(r, 2) ? ((uint64_t)1 << pos_bits) - 1 - count : 0;
    uint8_t *pool = xmalloc(32 * distinct), *by_pos = xmalloc(32 * count);
    uint8_t *marks = xmalloc(count), *model_marks = xmalloc(count);
    uint64_t *aside = xmalloc(8 * count), *model_aside = xmalloc(8 * count);
    crowded_leaves(pool, distinct, crowd, seed, slots, r);
    for (size_t p = 0; p < count; p++)
        memcpy(by_pos + 32 * p, pool + 32 * rng_below(r, distinct), 32);
    memset(marks, 0, count);
    memset(model_marks, 0, count);
    leaf_reader reader = {NULL, NULL, 0, base + count, by_pos, base};
    part_job job = {0};
    job.ix = part;
    job.reader = &reader;
    job.marks = marks;
    job.mark_from = base;
    size_t n_aside = 0, n_model_aside = 0;
    uint64_t added = 0, model_added = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t n = pass ? n_aside : count;
        for (size_t k = 0; k < n; k++) {
            const uint64_t p = pass ? aside[k] : base + k;
            const uint64_t h = leaf_hash(by_pos + 32 * (p - base), seed);
            const uint64_t home = h & part->mask;
            const uint64_t stop = pass ? UINT64_MAX : (home / region + 1) * region & part->mask;
            uint64_t item = (home << 32) | (tag_of(part, h) << part->pos_bits) | (p + 1);
            int got = part_put(&job, item, stop);
            if (got < 0)
                aside[n_aside++] = p;
            else
                added += (uint64_t)got;
            uint64_t evicted;
            int want =
                reference_put(model, slots - 1, pos_bits, by_pos, base, h, p, stop, &evicted);
            if (want < 0)
                model_aside[n_model_aside++] = p;
            else if (want)
                model_added++;
            else
                model_marks[(evicted == ABSENT ? p : evicted) - base] = 1;
            CHECK(got == want, "regions of %llu, %u bits, crowd %d, pass %d, position %llu: "
                  "part_put %d, model %d", (unsigned long long)region, pos_bits, (int)crowd,
                  pass, (unsigned long long)p, got, want);
            if (got != want) // the tables part: later probes may not end
                goto checked;
        }
    }
checked:
    CHECK(n_aside == n_model_aside && !memcmp(aside, model_aside, 8 * n_aside) &&
              added == model_added && !memcmp(marks, model_marks, count) &&
              !memcmp(part->slots, model, 4 * slots),
          "regions of %llu, %u bits, crowd %d: aside %zu/%zu, added %llu/%llu, marks or slots "
          "differ", (unsigned long long)region, pos_bits, (int)crowd, n_aside, n_model_aside,
          (unsigned long long)added, (unsigned long long)model_added);
    free(pool);
    free(by_pos);
    free(marks);
    free(model_marks);
    free(aside);
    free(model_aside);
    rt_index_release(part);
}

static void leaf_of(uint8_t *out, uint64_t n)
{
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 8; b++)
            out[k * 8 + b] = (uint8_t)(n >> (8 * (7 - b)));
}

/* A tree whose table is sized for 2**31 leaves: its slots are 4 bytes with
 * all 32 bits for the position and no tag, so every full slot a probe
 * meets must have its leaf compared. Through the public calls: the fill
 * (fill_units, one writer), the check of a batch (staged in place, one
 * writer) and a unique insert must all see the leaves already there. */
static void tagless_table(void)
{
    const size_t n = 400;
    rt_tree *tree;
    REQUIRE(rt_tree_new(2, 40, RT_RULE_ROTORTREE_015, &tree) == RT_OK, "rt_tree_new");
    REQUIRE(rt_tree_index_enable(tree) == RT_OK, "index_enable");
    uint8_t *leaves = xmalloc(32 * n), root[32];
    // 300 distinct leaves, then 100 repeats of them (a plain insert keeps
    // repeats; the index keeps their first positions).
    for (size_t i = 0; i < n; i++)
        leaf_of(leaves + 32 * i, i < 300 ? 7000 + i : 7000 + (i * 37) % 300);
    REQUIRE(rt_tree_insert_many(tree, leaves, n, root) == RT_OK, "insert_many");
    rt_leaf_index *fresh;
    REQUIRE(rt_index_reserve(tree, 1, (uint64_t)1 << 31, &fresh) == RT_OK && fresh,
            "reserve a table for 2**31 leaves");
    rt_index_add(tree, fresh, tree->size); // fills it from the tree's leaves
    REQUIRE(tree->index == fresh && fresh->pos_bits == 32 && !fresh->wide,
            "the tagless table is the tree's (pos_bits %u, wide %u)", fresh->pos_bits,
            fresh->wide);
    struct rt_index_stats stats;
    REQUIRE(rt_tree_index_stats(tree, &stats) == RT_OK, "stats");
    CHECK(stats.entries == 300, "tagless fill: %llu entries for 300 distinct leaves",
          (unsigned long long)stats.entries);
    uint64_t *pos = xmalloc(8 * n);
    uint8_t *found = xmalloc(n), *marks = xmalloc(n);
    REQUIRE(rt_tree_index_find(tree, leaves, n, pos, found) == RT_OK, "find");
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++)
        wrong += !found[i] || pos[i] != (i < 300 ? i : (i * 37) % 300);
    CHECK(!wrong, "tagless fill: %zu of %zu leaves not at their first position", wrong, n);
    // Every leaf of the tree, checked again: all repeats.
    uint64_t dups = 0;
    REQUIRE(rt_tree_index_duplicates(tree, leaves, 300, marks, &dups) == RT_OK, "duplicates");
    size_t unmarked = 0;
    for (size_t i = 0; i < 300; i++)
        unmarked += !marks[i];
    CHECK(dups == 300 && !unmarked, "tagless check: %llu repeats of 300 (%zu unmarked)",
          (unsigned long long)dups, unmarked);
    // A batch of new leaves and one already in the tree: refused, nothing
    // inserted; then each leaf of the tree alone: refused.
    uint8_t batch[4 * 32];
    for (int i = 0; i < 4; i++)
        leaf_of(batch + 32 * i, 900000 + (uint64_t)i);
    memcpy(batch + 64, leaves + 32 * 123, 32);
    uint8_t batch_marks[4];
    int rc = rt_tree_insert_unique(tree, batch, 4, RT_UNIQUE_REJECT, batch_marks, &dups, root);
    struct rt_tree_state st;
    rt_tree_state(tree, &st);
    CHECK(rc == RT_ERR_DUPLICATE && dups == 1 && batch_marks[2] && st.size == n,
          "tagless unique insert: rc %d, %llu repeats, size %llu", rc, (unsigned long long)dups,
          (unsigned long long)st.size);
    size_t accepted = 0;
    for (size_t i = 0; i < 300; i += 7) {
        uint8_t one_mark;
        if (rt_tree_insert_unique(tree, leaves + 32 * i, 1, RT_UNIQUE_REJECT, &one_mark, &dups,
                                  root) != RT_ERR_DUPLICATE)
            accepted++;
    }
    CHECK(!accepted, "tagless unique insert: %zu leaves already in the tree accepted again",
          accepted);
    free(leaves);
    free(pos);
    free(found);
    free(marks);
    rt_tree_free(tree);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : (uint64_t)mono_ns();
    printf("seed %llu\n", (unsigned long long)seed);
    rng r = {seed};
    tagless_table();
    static const uint64_t sizes[] = {64, 128, 256};
    for (int round = 0; round < rounds; round++)
        for (unsigned bits = 16; bits <= 32; bits++)
            for (int s = 0; s < 3; s++)
                for (int crowd = CROWD_NONE; crowd <= CROWD_ONE_LINE; crowd++) {
                    round_of_puts(&r, bits, sizes[s], (enum crowd)crowd);
                    uint64_t region = LINE_SLOTS << rng_below(&r, 3);
                    round_of_regions(&r, bits, sizes[s], region, (enum crowd)crowd);
                }
    return harness_summary("index lines", "");
}
