/*
 * The leaf index (internal; cffi never reads this file): an open-addressing
 * table from a leaf to the first position it holds, kept by leaf_index.c.
 * tree.c calls the reserve/add pair around every insert of an indexed
 * tree; snapshot.c shares the table with snapshots.
 */
#ifndef RT_INDEX_H
#define RT_INDEX_H

#include "rt_config.h"

#include <stdatomic.h>
#include <stdint.h>

#include "rotortree.h"

/*
 * Slots hold (tag << pos_bits) | (position + 1), 0 meaning empty. Slots are
 * 4 bytes while positions fit in 32 bits, so the index costs 4 / load bytes
 * per distinct leaf; the high bits a position does not need carry a tag
 * from the leaf's hash, so a probe compares a stored leaf (a cache miss in
 * level 0) only when the tags agree.
 *
 * A table is shared, read-only, with the snapshots taken while it was the
 * tree's (refcount): the tree later only fills empty slots of it (atomic
 * stores, under the tree's write lock), empties again slots it filled for a
 * refused unique batch (positions past every snapshot), or replaces it by a
 * bigger one, so a snapshot's probe sequences stay valid without a lock
 * (no slot an older entry's probe passed over ever changes). Positions at or
 * past a snapshot's size are skipped there: such an entry is either another
 * leaf, or the reader's leaf whose first position is past the snapshot, and
 * then no other entry for it exists (one entry per distinct leaf).
 */
/* How an insert indexes its batch when the caller knows the leaves before
 * the tree has them (rt_index_plan_begin): staged in the index while the
 * tree hashes them (rt_index_beside) instead of after, and checked for
 * repeats on the way. `leaves` must not change until the insert returns
 * (a private copy, or an immutable buffer). */
typedef struct rt_index_plan {
    const uint8_t *leaves;
    size_t count;
    uint8_t *marks; /* NULL, or one byte per leaf: 1 for a repeat of a leaf in
                       the tree or earlier in the batch, else 0 */
    int check;      /* a repeat refuses the insert (RT_ERR_DUPLICATE) */
    int speculate;  /* a checked batch is hashed while it is checked (it is
                       expected to pass: a refusal wastes the hashing) */
    uint64_t repeats; /* out: the batch's repeats, once staged */
} rt_index_plan;

typedef struct rt_leaf_index {
    atomic_uint refcount;
    unsigned wide;     /* 1: 8-byte slots, 0: 4-byte slots */
    unsigned pos_bits; /* low bits of a slot holding position + 1 */
    uint64_t mask;     /* slot count - 1 (a power of two) */
    uint64_t seed;
    uint64_t entries;     /* distinct leaves held; only the writer changes it */
    uint64_t max_entries; /* the load limit: 3/4 of the slots */
    uint64_t pos_limit;   /* the largest tree size whose positions fit */
    void *slots;
    size_t bytes;
    // During a unique insert (write lock held): the table holding the
    // batch's entries (this one, or its replacement) and how many of them
    // are new, committed by rt_index_add or taken out again.
    struct rt_leaf_index *staged;
    uint64_t staged_added;
    rt_index_plan *plan; /* the insert in progress, if it has one */
} rt_leaf_index;

/* The low bits of a slot that hold position + 1 in a table made for a tree
 * of `size` leaves; slots are 8 bytes when this exceeds 32, which happens
 * only from 2**32 leaves on. */
unsigned rt_index_pos_bits(uint64_t size);

void rt_index_retain(rt_leaf_index *index);
void rt_index_release(rt_leaf_index *index);

/* Before an insert of `count` leaves making the tree `new_size` leaves long
 * (write lock held, nothing changed yet): *fresh gets a new, empty table
 * when the current one cannot take them, else NULL. The only step of an
 * indexed insert that can fail (RT_ERR_NOMEM), so it runs before the tree
 * is touched. */
int rt_index_reserve(const rt_tree *tree, uint64_t count, uint64_t new_size,
                     rt_leaf_index **fresh);

/* The insert under way (write lock held) stages its batch as `plan` says
 * (rt_index_plan); rt_index_plan_end after it, whatever its status. */
void rt_index_plan_begin(rt_tree *tree, rt_index_plan *plan);
void rt_index_plan_end(rt_tree *tree);

/* Run write(ctx), which writes the insert's new nodes, and stage the
 * planned batch into `fresh` (from rt_index_reserve) or the index in place:
 * for a batch of two pool work units or more, on another pool thread while
 * the caller writes, the two helping each other once either is done; else
 * first, and then write(ctx) only if a checked batch repeats no leaf.
 * Without a plan just write(ctx). Cannot fail. */
void rt_index_beside(rt_tree *tree, rt_leaf_index *fresh, void (*write)(void *), void *ctx);

/* After rt_index_beside: RT_ERR_DUPLICATE when a checked plan met a repeat,
 * else RT_OK. */
static inline int rt_index_verdict(const rt_leaf_index *index)
{
    return index->plan && index->plan->check && index->plan->repeats ? RT_ERR_DUPLICATE : RT_OK;
}

/* Whether the insert under way may be refused after its nodes are written
 * (its edge nodes must then be kept to put back). */
static inline int rt_index_may_refuse(const rt_leaf_index *index)
{
    return index && index->plan && index->plan->check;
}

/* An insert refused after its nodes are written (repeats, or its gate):
 * the index, if the tree has one, exactly as before it, `fresh` dropped. */
void rt_index_abandon(rt_tree *tree, rt_leaf_index *fresh);

/* After the leaves [old_size, tree->size) are written and published: add
 * them to the index (fresh from rt_index_reserve, filled from every leaf,
 * replaces it; NULL: added in place). Cannot fail. */
void rt_index_add(rt_tree *tree, rt_leaf_index *fresh, uint64_t old_size);

/* Rebuild the tree's index from its leaves (write lock held), as enabling
 * it does; used after a restore. RT_ERR_NOMEM leaves the old one. */
int rt_index_rebuild_locked(rt_tree *tree);

#endif /* RT_INDEX_H */
