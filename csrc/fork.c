/*
 * The registry of live trees and the library's fork handlers.
 */
#include "rt_config.h"

#include <pthread.h>

#include "level.h"
#include "rt_pool.h"
#include "rt_tree.h"

// A child gets only the forking thread. Had another thread been inside an
// insert, the child would inherit the tree's lock held by a thread that does
// not exist there, and its first read of that tree would wait forever. So
// fork() waits, in prepare, until it holds every live tree's write lock:
// the child sees each tree before or after any batch, and usable.
static struct {
    pthread_mutex_t lock;
    rt_tree *head;
} live_trees = {PTHREAD_MUTEX_INITIALIZER, NULL};

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

int rt_tree_lock_init(pthread_rwlock_t *lock)
{
    // Writer preference keeps a stream of proof readers from starving
    // inserts. Only glibc can ask for it; other libcs (musl's rwlock already
    // lets a waiting writer block new readers) get their default.
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    int failed = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return failed;
}

void rt_tree_register(rt_tree *tree)
{
    pthread_mutex_lock(&live_trees.lock);
    tree->live_next = live_trees.head;
    if (live_trees.head)
        live_trees.head->live_prev = tree;
    live_trees.head = tree;
    pthread_mutex_unlock(&live_trees.lock);
}

void rt_tree_unregister(rt_tree *tree)
{
    pthread_mutex_lock(&live_trees.lock);
    if (tree->live_prev)
        tree->live_prev->live_next = tree->live_next;
    else
        live_trees.head = tree->live_next;
    if (tree->live_next)
        tree->live_next->live_prev = tree->live_prev;
    pthread_mutex_unlock(&live_trees.lock);
}

// Lock order: trees, then the allocator (a writer holding its tree's lock
// takes the allocator's locks, never the reverse), then the pool, whose own
// prepare handler runs after this one (registered before it, see below): an
// insert holding its tree's lock may be starting pool workers.
static void fork_prepare(void)
{
    pthread_mutex_lock(&live_trees.lock);
    for (rt_tree *tree = live_trees.head; tree; tree = tree->live_next)
        tree->fork_locked = pthread_rwlock_wrlock(&tree->lock) == 0;
    rt_memory_fork_prepare();
}

static void fork_parent(void)
{
    rt_memory_fork_parent();
    for (rt_tree *tree = live_trees.head; tree; tree = tree->live_next) {
        if (tree->fork_locked)
            pthread_rwlock_unlock(&tree->lock);
        tree->fork_locked = 0;
    }
    pthread_mutex_unlock(&live_trees.lock);
}

// The forking thread has a new thread id in the child, and a write-locked
// rwlock checks its owner's id on unlock, so the locks are made fresh.
static void fork_child(void)
{
    rt_memory_fork_child();
    for (rt_tree *tree = live_trees.head; tree; tree = tree->live_next) {
        rt_tree_lock_init(&tree->lock);
        tree->fork_locked = 0;
    }
    pthread_mutex_init(&live_trees.lock, NULL);
}

static void register_fork_handlers(void)
{
    // Prepare handlers run in reverse order of registration: initialising
    // the pool first registers its handlers first, so ours run before them.
    rt_pool_tunables(NULL, NULL, NULL);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void rt_fork_handlers_install(void)
{
    pthread_once(&fork_once, register_fork_handlers);
}
