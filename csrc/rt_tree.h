/*
 * The tree object and the registry of live trees (internal; cffi never
 * reads this file). tree.c owns lifecycle, reads and inserts; snapshot.c
 * and restore.c read and rebuild the same struct; fork.c keeps every live
 * tree's lock consistent across fork().
 */
#ifndef RT_TREE_H
#define RT_TREE_H

#include "rt_config.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "level.h"
#include "rotortree.h"

struct rt_tree {
    // Writers (inserts) take it exclusively, readers shared (rt_tree_lock_init).
    pthread_rwlock_t lock;
    unsigned arity;
    int rule; /* enum rt_rule, fixed at creation */
    unsigned max_depth;
    unsigned chunk_cap;
    unsigned depth;
    uint64_t size;
    uint64_t capacity; /* arity**max_depth, saturated at UINT64_MAX */
    rt_level levels[RT_MAX_DEPTH_LIMIT + 1];
    // Set when an insert reserved level memory, which is all that marks
    // pre-fault requests or asks for a spare slab: most single inserts
    // reserve nothing, and then skip asking every level for requests.
    int ahead_marked;
    // Single inserts: per level, the BLAKE3 state after the message blocks
    // that precede the group's last child (see append_one).
    struct prefix_cache {
        uint64_t group;
        unsigned members; /* 0: empty */
        unsigned blocks;
        uint32_t cv[8];
    } prefix[RT_MAX_DEPTH_LIMIT];
    // The level-0 prefix the next single insert will need, hashed ahead by
    // the last one (append_one's rider); members 0: none.
    struct prefix_cache next_prefix;
    // Links in the registry of live trees (fork.c, under its lock), which the
    // fork handlers walk; fork_locked: prepare holds this tree's lock.
    struct rt_tree *live_prev, *live_next;
    int fork_locked;
    // The leaf index (leaf_index.c), NULL until rt_tree_index_enable.
    struct rt_leaf_index *index;
};

/* An insert of `count` leaves with the write lock held (tree.c); all or
 * nothing, the index included. */
int rt_tree_insert_locked(rt_tree *tree, const uint8_t *leaves, uint64_t count,
                          uint8_t *root_out);

/* The root: node 0 of the top level. Caller holds the lock; size > 0. */
static inline void rt_tree_copy_root(const rt_tree *tree, uint8_t *root_out)
{
    memcpy(root_out, rt_level_node(&tree->levels[tree->depth], 0, tree->chunk_cap), 32);
}

/* rt_tree_insert_many, with `gate(gate_ctx)` called under the write lock
 * once the batch is hashed and before it is published: a status other than
 * RT_OK from it leaves the tree exactly as it was and is returned (the
 * durable tree's WAL write, csrc/wal.c, decides whether the batch stays). */
int rt_tree_insert_many_gated(rt_tree *tree, const uint8_t *leaves, size_t count,
                              uint8_t *root_out, int (*gate)(void *), void *gate_ctx);

/* rt_tree_insert_many of `count` leaves made by `source` (rt_build.h) while
 * the tree is built, in the same pool run: RFC 6962 entries go from the
 * caller's bytes to stored leaf hashes and parents in one pass. */
struct rt_leaf_source;
int rt_tree_insert_from_source(rt_tree *tree, const struct rt_leaf_source *source,
                               size_t count, uint8_t *root_out);

/* ---- fork registry (fork.c) ---------------------------------------------- */

/* Initialise a tree's rwlock (writer-preferring where the libc offers it). */
int rt_tree_lock_init(pthread_rwlock_t *lock);

/* Add a tree to / remove it from the registry the fork handlers walk. */
void rt_tree_register(rt_tree *tree);
void rt_tree_unregister(rt_tree *tree);

/* Registers the library's fork handlers once: every live tree's lock and
 * the allocator's locks are held across fork(), so a child never inherits a
 * lock that a thread which does not exist there still holds. Called by
 * everything that creates such state before it first locks. */
void rt_fork_handlers_install(void);

#endif /* RT_TREE_H */
