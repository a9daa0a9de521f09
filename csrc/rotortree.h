/*
 * rotortree: an n-ary Lean Incremental Merkle Tree (LeanIMT) over BLAKE3
 * (bit-compatible with the Rust crate `rotortree` 0.15, or 0.16+ with the
 * leanimt rule) or SHA-256 (RFC 6962 trees); see enum rt_rule.
 *
 * This is the only public header. Everything between CFFI_BEGIN and CFFI_END
 * is also fed verbatim to cffi by build_ffi.py, so that region must stay
 * plain declarations: no #include, no #ifdef, no function bodies.
 *
 * Conventions:
 *  - Every fallible function returns an `int` status from enum rt_status;
 *    RT_OK is 0. Output parameters are written only on RT_OK.
 *  - A failed call leaves every object exactly as it was.
 *  - Hashes are 32 raw bytes; buffers are owned by the caller unless stated.
 *  - All functions may be called from any thread. Tree functions serialise
 *    through the tree's own reader/writer lock; none of them call back into
 *    the caller, so they are safe to run with the Python GIL released.
 *  - fork() is safe while other threads use the library: it waits until it
 *    holds every live tree's write lock (so for any insert in progress), and
 *    the child can read and modify every tree and snapshot, each as it was
 *    before or after any batch. fork() from inside a library call is
 *    impossible (no callbacks); from a signal handler it is not supported.
 */
#ifndef ROTORTREE_H
#define ROTORTREE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CFFI_BEGIN */
#define RT_HASH_LEN 32
#define RT_MIN_ARITY 2
#define RT_MAX_ARITY 255
#define RT_MAX_DEPTH_LIMIT 64

enum rt_status {
    RT_OK = 0,
    RT_ERR_INVALID_ARGUMENT = 1, /* a parameter is out of its documented range */
    RT_ERR_INVALID_LEAF = 2,     /* leaf bytes not a whole number of 32-byte leaves */
    RT_ERR_EMPTY_BATCH = 3,      /* insert_many with zero leaves */
    RT_ERR_MAX_DEPTH = 4,        /* the insert would exceed arity^max_depth leaves */
    RT_ERR_INDEX = 5,            /* level or node index out of range */
    RT_ERR_NOMEM = 6,            /* allocation failed; nothing was changed */
    RT_ERR_BUSY = 7,             /* pool reconfiguration refused: work is running */
    RT_ERR_UNSUPPORTED = 8,      /* SIMD kernel not supported by this CPU or build */
    RT_ERR_THREAD = 9,           /* a pthread call failed (thread creation, lock) */
    RT_ERR_EMPTY_TREE = 10,      /* the operation needs at least one leaf */
    RT_ERR_INVALID_PROOF = 11,   /* a proof is malformed or does not verify */
    RT_ERR_NO_INDEX = 12,        /* the tree (or snapshot) has no leaf index */
    RT_ERR_DUPLICATE = 13,       /* a unique insert met a leaf already present */
    RT_ERR_IO = 14               /* a file write failed (its errno is returned beside) */
};

/* SIMD kernels for BLAKE3 parent hashing. */
enum rt_kernel {
    RT_KERNEL_PORTABLE = 0,
    RT_KERNEL_SSE41 = 1,
    RT_KERNEL_AVX2 = 2,
    RT_KERNEL_AVX512 = 3,        /* AVX-512F + VL: 16 lanes */
    RT_KERNEL_NEON = 4           /* aarch64 only */
};

/* Hash rules: how a parent is made from its children. Every rule lifts a
 * group of one child unchanged, so trees of every rule have the same shape.
 *  - RT_RULE_ROTORTREE_015: blake3(0x01 || u8 k || child_0 .. child_k-1),
 *    the Rust crate rotortree 0.15;
 *  - RT_RULE_LEANIMT: blake3(child_0 || .. || child_k-1), untagged, the
 *    crate from 0.16 on and other LeanIMT implementations;
 *  - RT_RULE_RFC6962: SHA-256(0x01 || left || right), arity 2 only: with
 *    leaves that are RFC 6962 leaf hashes, the tree, its roots and proofs
 *    are RFC 6962 / RFC 9162's Merkle tree (lifting a lone right child is
 *    exactly how MTH splits a size that is not a power of two). */
enum rt_rule {
    RT_RULE_ROTORTREE_015 = 0,
    RT_RULE_LEANIMT = 1,
    RT_RULE_RFC6962 = 2
};

/* Static message for a status code; never NULL, never freed. */
const char *rt_strerror(int status);

/* ---- hashing ------------------------------------------------------------ */

/* BLAKE3 (default hash mode, 32-byte output) of `len` bytes at `msg` into
 * `out`. Uses the active kernel for compression. Any thread. */
void rt_blake3(const uint8_t *msg, size_t len, uint8_t *out);

/* The LeanIMT parent of `count` children laid out contiguously
 * (count * 32 bytes): blake3(0x01 || count || children). count 2..255. */
int rt_hash_parent(const uint8_t *children, unsigned count, uint8_t *out);

/* The parent of `count` (2..255) children under `rule` (RT_ERR_INVALID_ARGUMENT
 * for an unknown rule or a count the rule does not allow). */
int rt_hash_parent_rule(int rule, const uint8_t *children, unsigned count, uint8_t *out);

/* Kernel control. `rt_kernel_select` makes `kernel` the process-wide kernel
 * (RT_ERR_UNSUPPORTED if this CPU/OS cannot run it, or if the build has no
 * such kernel: SSE4.1 and AVX2 exist only for x86-64 with GCC or Clang, NEON
 * only for little-endian aarch64 with GCC or Clang, where it is always
 * available and the default).
 * Until a kernel is selected, the first use picks the best the CPU supports.
 * The C core reads no environment variable; the Python layer applies
 * ROTORTREE_SIMD through rt_kernel_select at import. */
int rt_kernel_available(int kernel);
int rt_kernel_select(int kernel);
int rt_kernel_active(void);
const char *rt_kernel_name(int kernel);

/* ---- SHA-256 and RFC 6962 hashing ------------------------------------------
 * SHA-256 as FIPS 180-4 defines it, for Certificate-Transparency-style trees
 * (RFC 6962 / RFC 9162: leaf = SHA-256(0x00 || entry), parent =
 * SHA-256(0x01 || left || right)). The implementation follows the active
 * kernel: portable under RT_KERNEL_PORTABLE, else the SHA extensions where
 * the CPU has them; batches of same-length messages (parents, fixed-size
 * leaves) may use a multi-lane kernel instead: sixteen AVX-512 lanes under
 * RT_KERNEL_AVX512, eight AVX2 lanes under RT_KERNEL_AVX2 on CPUs without
 * SHA extensions (rt_sha256_impl_active(1) says which). */
enum rt_sha256_impl {
    RT_SHA256_ACTIVE = -1,       /* whatever the active kernel selects */
    RT_SHA256_PORTABLE = 0,
    RT_SHA256_SHANI = 1,         /* x86 SHA extensions */
    RT_SHA256_AVX2 = 2,          /* batches: eight messages per vector */
    RT_SHA256_AVX512 = 3         /* batches: sixteen messages per vector */
};
int rt_sha256_impl_available(int impl);
/* The implementation used now for single messages (batch 0) or batches. */
int rt_sha256_impl_active(int batch);
const char *rt_sha256_impl_name(int impl);

/* SHA-256 of `len` bytes at `msg` into out (32 bytes). Any thread. */
void rt_sha256_hash(const uint8_t *msg, size_t len, uint8_t *out);
/* The same with a given implementation (tests and benchmarks);
 * RT_ERR_UNSUPPORTED if it cannot run here. */
int rt_sha256_with(int impl, const uint8_t *msg, size_t len, uint8_t *out);
/* out[32*i..] = SHA-256(prefix || bodies[i*body_len .. (i+1)*body_len)) for
 * i < count, on the calling thread: RFC 6962 parents are prefix 1 with
 * body_len 64. */
int rt_sha256_prefixed_many(int impl, uint8_t prefix, const uint8_t *bodies,
                            size_t body_len, size_t count, uint8_t *out);

/* RFC 6962 leaf hashes SHA-256(0x00 || entry) of `count` entries into out
 * (count * 32 bytes), on the pool when the batch is large. With offsets
 * NULL the entries are entry_len bytes each, back to back (data_len must be
 * count * entry_len); otherwise entry i is data[offsets[i] .. offsets[i+1])
 * (count + 1 non-decreasing offsets, the last <= data_len). Arguments are
 * checked before anything is written: RT_ERR_INVALID_ARGUMENT. */
int rt_rfc6962_leaf_hashes(const uint8_t *data, size_t data_len,
                           const uint64_t *offsets, size_t count,
                           size_t entry_len, uint8_t *out);

/* ---- thread pool and tunables ------------------------------------------ */

/* The most threads rt_pool_configure accepts, and the threshold and chunk
 * size the pool starts with (the Python package reads them from here). */
#define RT_POOL_MAX_THREADS 1024u
#define RT_POOL_DEFAULT_THRESHOLD 1024u
#define RT_POOL_DEFAULT_CHUNK 64u

struct rt_pool_config {
    uint32_t num_threads;        /* threads doing work, the caller included; >= 1 */
    uint64_t parallel_threshold; /* parents in one level before the pool is used; >= 1 */
    uint64_t par_chunk_size;     /* parents per work unit, and the least level-1
                                    parents of a fused block; >= 1 */
};

struct rt_pool_stats {
    uint64_t jobs;       /* parallel jobs submitted */
    uint64_t units;      /* work units executed */
    uint64_t helped;     /* units run by a thread other than the job's caller */
    uint64_t parks;      /* times a worker went to sleep */
    uint64_t idle_ns;    /* time workers spent parked */
    uint32_t threads_started; /* worker threads currently alive */
};

/* Replace the configuration. Fields are all validated before anything
 * changes. Changing num_threads while parallel work runs returns RT_ERR_BUSY
 * (threshold and chunk size may change at any time: jobs read them once at
 * the start). Worker threads start lazily on the first parallel job. */
int rt_pool_configure(const struct rt_pool_config *config);
void rt_pool_get_config(struct rt_pool_config *out);
void rt_pool_get_stats(struct rt_pool_stats *out);
/* Stop and join the worker threads (they restart on demand). RT_ERR_BUSY if
 * work is running. Called at interpreter exit. */
int rt_pool_shutdown(void);

/* Large level storage freed by dropped trees (and large result buffers) is
 * kept mapped for reuse, most recently freed first, up to
 * ROTORTREE_MEMORY_CACHE_MB (default 256; 0 disables), so a new tree does
 * not pay for the kernel zeroing fresh pages. This returns it all to the
 * system now. Any thread. */
void rt_release_cached_memory(void);

/* Memory held for tree levels, process-wide. Level storage is carved in
 * chunks from slabs; a freed chunk (for instance a snapshot's copy of a
 * level's last chunk, dropped with the snapshot) is reused by the next
 * chunk wanted with the same capacity, and a slab returns to the system
 * (or to the cache above) once none of its chunks is in use. */
struct rt_memory_stats {
    uint64_t chunk_bytes;      /* every slab alive, free chunks included */
    uint64_t free_chunk_bytes; /* freed chunks waiting in those slabs for reuse */
    uint64_t slabs;            /* slabs alive */
    uint64_t cached_bytes;     /* freed mappings kept by the cache above */
};
void rt_memory_get_stats(struct rt_memory_stats *out);

/* Memory for large results (proof batches), from the same cache of mappings:
 * a service generating batch after batch reuses pages already faulted in
 * instead of the kernel zeroing ~1 KB of fresh memory per proof, which can
 * cost as much as generating the proof. Contents are unspecified; NULL
 * when out of memory. Any thread. */
void *rt_buffer_alloc(size_t bytes);
void rt_buffer_free(void *buffer);

/* ---- trees --------------------------------------------------------------- */

typedef struct rt_tree rt_tree;

/* Create an empty tree. arity 2..255, max_depth 1..RT_MAX_DEPTH_LIMIT, rule
 * from enum rt_rule (RT_RULE_RFC6962 needs arity 2). The caller owns *out
 * and releases it with rt_tree_free. */
int rt_tree_new(unsigned arity, unsigned max_depth, int rule, rt_tree **out);
/* Free a tree. The caller must ensure no other thread still uses it. */
void rt_tree_free(rt_tree *tree);

/* Append one leaf (32 bytes); the new root is written to root_out. */
int rt_tree_insert(rt_tree *tree, const uint8_t *leaf, uint8_t *root_out);
/* Append `count` leaves stored contiguously (count * 32 bytes) as one atomic
 * batch: concurrent readers see the tree before or after, never between.
 * `leaves` may be any caller memory; each byte is read from it once, so the
 * leaves stored are the bytes hashed even if another thread changes it
 * during the call. */
int rt_tree_insert_many(rt_tree *tree, const uint8_t *leaves, size_t count,
                        uint8_t *root_out);
/* rt_tree_insert_many of a batch that no other thread changes during the
 * call (an immutable or private buffer): an indexed tree then reads it
 * twice, to index it on one pool thread while the others hash it, instead
 * of indexing the stored leaves after the hashing. Same tree, same index. */
int rt_tree_insert_many_stable(rt_tree *tree, const uint8_t *leaves, size_t count,
                               uint8_t *root_out);

/* Append the RFC 6962 leaf hashes of `count` entries (read as by
 * rt_rfc6962_leaf_hashes) to a tree of the rfc6962 rule and return its new
 * root: the same tree as rt_rfc6962_leaf_hashes then rt_tree_insert_many,
 * but each piece of entries is hashed into leaves, stored and hashed into
 * its subtree while in cache, in one pool run, with no buffer of leaf
 * hashes. Each entry is read once, so the stored leaves hash to their
 * parents even if the caller's buffer changes meanwhile. All or nothing:
 * RT_ERR_INVALID_ARGUMENT (bad entries, or a tree of another rule),
 * RT_ERR_EMPTY_BATCH, RT_ERR_MAX_DEPTH, RT_ERR_NOMEM leave it unchanged. */
int rt_tree_insert_rfc6962_entries(rt_tree *tree, const uint8_t *data, size_t data_len,
                                   const uint64_t *offsets, size_t count, size_t entry_len,
                                   uint8_t *root_out);

struct rt_tree_state {
    uint64_t size;
    uint32_t depth;
    uint32_t has_root;          /* 0 for the empty tree */
    uint8_t root[32];
};
/* A consistent (size, depth, root) triple under one read lock. */
void rt_tree_state(rt_tree *tree, struct rt_tree_state *out);
void rt_tree_shape(const rt_tree *tree, unsigned *arity, unsigned *max_depth);
/* The tree's hash rule (fixed at rt_tree_new). */
int rt_tree_rule(const rt_tree *tree);

/* Number of nodes at `level` (0 = leaves); RT_ERR_INDEX above the depth. */
int rt_tree_level_len(rt_tree *tree, unsigned level, uint64_t *out);
/* Copy node `index` of `level` into out (32 bytes). */
int rt_tree_get_node(rt_tree *tree, unsigned level, uint64_t index, uint8_t *out);

/* Root of the LeanIMT over `count` contiguous leaves under `rule`, without
 * keeping the tree: memory is O(count / arity). RT_ERR_EMPTY_TREE for
 * count == 0. */
int rt_compute_root(const uint8_t *leaves, size_t count, unsigned arity, int rule,
                    uint8_t *root_out);

/* ---- snapshots ----------------------------------------------------------- */

typedef struct rt_snapshot rt_snapshot;

/* An immutable view of the tree as it is now. It shares every chunk with the
 * tree (the tree copies a chunk before writing one a snapshot still holds),
 * costs O(depth) to take, and stays valid, unchanged, after the tree grows
 * or is freed. Reads need no lock: any number of threads may use one
 * snapshot at once. The caller owns *out; release it with rt_snapshot_free. */
int rt_tree_snapshot(rt_tree *tree, rt_snapshot **out);
void rt_snapshot_free(rt_snapshot *snap);
void rt_snapshot_state(const rt_snapshot *snap, struct rt_tree_state *out);
unsigned rt_snapshot_arity(const rt_snapshot *snap);
int rt_snapshot_rule(const rt_snapshot *snap);
int rt_snapshot_level_len(const rt_snapshot *snap, unsigned level, uint64_t *out);
int rt_snapshot_get_node(const rt_snapshot *snap, unsigned level, uint64_t index,
                         uint8_t *out);
/* Copy nodes [start, start + count) of `level` into out (count * 32 bytes). */
int rt_snapshot_read_nodes(const rt_snapshot *snap, unsigned level, uint64_t start,
                           uint64_t count, uint8_t *out);

/* ---- leaf index ---------------------------------------------------------
 * An optional table from each distinct leaf to the first position holding
 * it (membership, index_of, unique inserts). Once enabled, every insert
 * keeps it, inside the same write-locked, all-or-nothing step: a failed
 * insert changes neither the tree nor the index. Memory: 4-byte slots
 * (8 past 2**32 leaves), at most 3/4 full, so 5.3..10.7 bytes per distinct
 * leaf; while it doubles, the old table lives until the new one is filled.
 * Snapshots share the table at the time they are taken and answer as of
 * their own size: a leaf whose first position is at or past it is absent.
 */

/* Build the index from the leaves already in the tree (on the pool) and
 * keep it from now on. RT_OK if it already exists. */
int rt_tree_index_enable(rt_tree *tree);
/* 1 if the tree has an index, else 0. */
int rt_tree_index_enabled(rt_tree *tree);

/* An index of `count` leaves read from a buffer, built on a background
 * thread of its own (not the pool) while the caller goes on: durable
 * recovery starts it on the checkpoint's mapped leaves, then verifies the
 * checkpoint and replays the WAL meanwhile. Sized for `expected` leaves (the tree it will
 * serve, at least `count`). The buffer must stay mapped and unchanged until
 * exactly one of rt_tree_index_adopt and rt_index_build_discard consumes
 * the build. RT_ERR_NOMEM or RT_ERR_THREAD: nothing was started. */
typedef struct rt_index_build rt_index_build;
int rt_index_build_start(const uint8_t *leaves, uint64_t count, uint64_t expected,
                         rt_index_build **out);
/* Wait for the build, add the tree's leaves past `count` to it and make it
 * the tree's index, as rt_tree_index_enable would (the tree's first `count`
 * leaves must be the buffer's). Builds the index from the tree instead if
 * the background one does not fit the tree or ran out of memory. Consumes
 * the build whatever it returns; RT_OK if the tree had an index already;
 * RT_ERR_NOMEM leaves the tree without one. */
int rt_tree_index_adopt(rt_tree *tree, rt_index_build *build);
/* Wait for the build and free it (recovery failed: nothing is kept). */
void rt_index_build_discard(rt_index_build *build);

struct rt_index_stats {
    uint64_t entries;     /* distinct leaves */
    uint64_t slots;
    uint64_t bytes;       /* memory of the table */
    uint32_t slot_bytes;  /* 4 or 8 */
};
int rt_tree_index_stats(rt_tree *tree, struct rt_index_stats *out);

/* Look up `count` contiguous leaves (count * 32 bytes): positions[i] is the
 * first position of leaf i, UINT64_MAX if absent, and found[i] is 1 or 0;
 * either output may be NULL (not both). Batches run on the pool.
 * RT_ERR_NO_INDEX without an index. */
int rt_tree_index_find(rt_tree *tree, const uint8_t *leaves, size_t count,
                       uint64_t *positions, uint8_t *found);
/* The same as of the snapshot's size (no lock: any thread, any time). */
int rt_snapshot_index_find(const rt_snapshot *snap, const uint8_t *leaves, size_t count,
                           uint64_t *positions, uint8_t *found);

/* One leaf (32 bytes): its first position, -1 if absent, or a negated
 * status (-RT_ERR_NO_INDEX, -RT_ERR_INVALID_ARGUMENT); a single call with
 * nothing to allocate, for membership checks from Python. */
int64_t rt_tree_index_position(rt_tree *tree, const uint8_t *leaf);
int64_t rt_snapshot_index_position(const rt_snapshot *snap, const uint8_t *leaf);

/* Insert modes for rt_tree_insert_unique. */
enum rt_unique_mode {
    RT_UNIQUE_REJECT = 1,   /* any duplicate: insert nothing, RT_ERR_DUPLICATE */
    RT_UNIQUE_SKIP = 2,     /* insert the leaves that are new, in order */
    /* or'ed into either: the caller guarantees `leaves` does not change
     * during the call (an immutable or private buffer), so the copy below
     * is skipped */
    RT_UNIQUE_STABLE = 4
};
/* insert_many for an indexed tree that refuses duplicates: duplicates[i]
 * (count bytes, caller memory) becomes 1 for a leaf already in the tree or
 * earlier in the batch, else 0, and *duplicate_count their number; these
 * two are written on RT_OK and on RT_ERR_DUPLICATE (the one error that
 * reports them). The check and the insert are one write-locked step.
 * With RT_UNIQUE_SKIP and every leaf a duplicate nothing is inserted and
 * root_out gets the current root. RT_ERR_NO_INDEX without an index. The
 * batch is copied once, first (unless RT_UNIQUE_STABLE): the check and the
 * insert both read that copy, so a caller changing `leaves` during the call
 * cannot make them disagree (the index then always matches the inserted
 * leaves). */
int rt_tree_insert_unique(rt_tree *tree, const uint8_t *leaves, size_t count, int mode,
                          uint8_t *duplicates, uint64_t *duplicate_count,
                          uint8_t *root_out);

/* The check of rt_tree_insert_unique alone (duplicates against the tree
 * now and inside the batch), changing nothing (it holds the write lock
 * while it briefly stages the batch in the index); for callers that log a
 * batch before inserting it and serialise their writers themselves. */
int rt_tree_index_duplicates(rt_tree *tree, const uint8_t *leaves, size_t count,
                             uint8_t *duplicates, uint64_t *duplicate_count);

/* ---- restoring stored trees ------------------------------------------------ */

/* Level l of a stored tree: its nodes, contiguous. The first `borrow` nodes
 * (rounded down to whole chunks, never the chunk of the last node) are read
 * in place instead of copied: that memory (e.g. a memory-mapped checkpoint)
 * must stay valid and unchanged while the tree or any snapshot of it lives. */
struct rt_level_source {
    const uint8_t *nodes;
    uint64_t borrow;
    const uint8_t *last; /* if not NULL, the level's last node is read here
                            instead of from nodes (stores that keep the one
                            mutable node apart from an append-only file) */
};

/* Fill an empty tree with `size` leaves from stored levels 0..depth(size)
 * (level_count = depth + 1), without hashing. Trusts the nodes: callers
 * verify the root (rt_compute_root over level 0) when the source may be
 * damaged. On failure the tree stays empty. An indexed tree's index is
 * rebuilt from the restored leaves. */
int rt_tree_restore(rt_tree *tree, uint64_t size, const struct rt_level_source *levels,
                    unsigned level_count);

/* Serve up to `count` leading nodes of `level` from `nodes` (identical bytes,
 * lifetime rules as for borrow above) and free the RAM that held them. The
 * prefix actually served (whole chunks, never the last one) goes to
 * *cold_out; a prefix never shrinks. */
int rt_tree_make_cold(rt_tree *tree, unsigned level, const uint8_t *nodes, uint64_t count,
                      uint64_t *cold_out);

/* ---- proofs ---------------------------------------------------------------
 * Serialized layouts (all integers little-endian), shared with the
 * pure-Python rotortree.proofs module:
 *
 * inclusion proof: "RTIP" | version u8 | arity u8 | level_count u8 | rule u8 |
 *   leaf_index u64 | tree_size u64 | root[32] | leaf[32] |
 *   per level: position u8 | sibling_count u8 | siblings[32 * sibling_count]
 * consistency proof: "RTCP" | version u8 | arity u8 | level_count u8 | rule u8 |
 *   old_size u64 | new_size u64 | old_root[32] | new_root[32] |
 *   per level: shared_count u8 | new_count u8 | shared hashes, new hashes
 *
 * Version 2 records the tree's rule (enum rt_rule) in byte 7; version 1
 * had 0 there and means RT_RULE_ROTORTREE_015. Generation writes version 2;
 * verification accepts both and hashes with the proof's rule.
 */
#define RT_PROOF_VERSION 2
#define RT_PROOF_HEADER_LEN 88

/* Batch inclusion proofs in two passes so that the caller owns the output
 * memory: rt_proofs_layout writes offsets[0..count] (proof i occupies
 * [offsets[i], offsets[i+1]) of the output), then rt_proofs_fill writes the
 * proofs on the pool. An index >= size gives RT_ERR_INDEX and, from
 * layout, its position in *bad_position (may be NULL). */
int rt_proofs_layout(const rt_snapshot *snap, const uint64_t *indices, size_t count,
                     uint64_t *offsets, size_t *bad_position);
int rt_proofs_fill(const rt_snapshot *snap, const uint64_t *indices, size_t count,
                   const uint64_t *offsets, uint8_t *out);
/* (rt_proofs_fill returns RT_ERR_INVALID_ARGUMENT, writing nothing outside
 * each proof's slot, if an index no longer matches the layout.) */

/* The position of the first of indices[start, count) that is 0 or 1, or
 * count if there is none (start > count counts as count). The Python
 * binding converts a list of ints in one pass that takes bools as 0 and 1,
 * then looks at the types of those items only. */
size_t rt_indices_find_small(const uint64_t *indices, size_t count, size_t start);

/* One inclusion proof in one call, for callers that pay per call (the
 * Python binding): writes its length to *length and, if it fits in
 * `capacity` bytes, the proof to out. RT_ERR_INDEX for index >= size;
 * RT_ERR_INVALID_ARGUMENT, writing nothing to out, when it does not fit.
 * No proof is longer than 88 + depth * (2 + 32 * (arity - 1)) bytes. */
int rt_proof_one(const rt_snapshot *snap, uint64_t index, uint8_t *out, size_t capacity,
                 size_t *length);
/* rt_proof_one with the length as the result: the proof's length in bytes
 * (written to out), or minus the status when there is none (-RT_ERR_INDEX,
 * -RT_ERR_INVALID_ARGUMENT, the latter writing nothing when the proof does
 * not fit). A single proof from Python then needs no length out-parameter,
 * whose read costs as much as a tenth of the call. */
int64_t rt_proof_one_sized(const rt_snapshot *snap, uint64_t index, uint8_t *out,
                           size_t capacity);

/* RT_OK if the serialized inclusion proof is well formed and its leaf,
 * index and siblings hash, under the proof's rule, to its root;
 * RT_ERR_INVALID_PROOF otherwise. (Which rule the caller expects is checked
 * by the caller: the rule is byte 7, or 0 for version 1.)
 *
 * trusted_root (32 bytes) and trusted_size are what the verifier trusts,
 * for instance from a signed tree head: with trusted_root non-NULL the
 * proof is valid only if its root equals trusted_root, its tree_size equals
 * trusted_size, and its path hashes to that root. Leaves are not domain
 * separated from parents, so a root alone does not fix the tree's shape:
 * without the size a lifted node or an internal node can pass for a leaf at
 * another index. With the size fixed the path's shape is fixed, and a
 * forgery needs a BLAKE3 collision. With trusted_root NULL the proof is only
 * checked against the root it carries (self-consistency, not a security
 * check) and trusted_size is ignored. */
int rt_verify_inclusion(const uint8_t *proof, size_t len, const uint8_t *trusted_root,
                        uint64_t trusted_size);
/* Every proof [offsets[i], offsets[i+1]) of `data` (data_len bytes), on
 * the pool, under the same trust rule as rt_verify_inclusion. RT_OK if all
 * verify; else RT_ERR_INVALID_PROOF and the lowest failing position in
 * *first_invalid (UINT64_MAX when all pass). */
int rt_verify_inclusion_batch(const uint8_t *data, size_t data_len, const uint64_t *offsets,
                              size_t count, const uint8_t *trusted_root,
                              uint64_t trusted_size, uint64_t *first_invalid);

/* Consistency proof from old_size (1..size) to the snapshot's size, in the
 * same two passes as inclusion proofs: rt_consistency_layout gives its byte
 * length, then rt_consistency_fill writes it (out_len must equal that
 * length). The
 * old root in the proof is recomputed from the snapshot's nodes. */
int rt_consistency_layout(const rt_snapshot *snap, uint64_t old_size, size_t *out);
int rt_consistency_fill(const rt_snapshot *snap, uint64_t old_size, uint8_t *out,
                        size_t out_len);
/* ---- write-ahead log (wal.c) ---------------------------------------------- */

/* A WAL frame header: 40 bytes covered by the checksum, then the checksum
 * (little-endian, bytes 40..43) and 4 zero bytes. */
#define RT_WAL_FRAME_HEADER_LEN 48
#define RT_WAL_FRAME_CRC_OFFSET 40

/* CRC-32C (Castagnoli polynomial, as in iSCSI, ext4 and SSE4.2) of
 * data[0..len), continuing `crc` (0 to start; the result of one call may be
 * passed to the next to checksum a message in pieces). */
uint32_t rt_crc32c(uint32_t crc, const uint8_t *data, size_t len);
/* The implementation rt_crc32c uses here: "sse4.2", "armv8-crc" or
 * "portable". */
const char *rt_crc32c_impl(void);
/* For tests: nonzero makes rt_crc32c use the portable code, 0 restores the
 * detected choice. */
void rt_crc32c_force_portable(int on);

/* Append one WAL frame and insert its leaves into `tree`, as one step:
 * `header` (RT_WAL_FRAME_HEADER_LEN bytes, its checksum field is filled in
 * here) followed by the `count` leaves at `leaves` is written at `offset`
 * of `fd` (pwritev, no copy), and the leaves are inserted as by
 * rt_tree_insert_many. Large batches are written by a writer thread while
 * the caller hashes; the batch is published to readers only once the whole
 * frame is written. Returns when both are done:
 *   RT_OK: the frame is written and the batch is in the tree;
 *   RT_ERR_IO: the write failed (*error_out = its errno); the tree is
 *     unchanged, part of the frame may be in the file;
 *   another status: the insert failed; the tree is unchanged, the frame may
 *     be in the file.
 * The caller cuts the frame when the tree does not hold the batch. */
int rt_wal_append(rt_tree *tree, int fd, uint64_t offset, uint8_t *header,
                  const uint8_t *leaves, size_t count, uint8_t *root_out, int *error_out);
/* Fault injection for tests: the next frame write of rt_wal_append writes
 * `after_bytes` bytes of the frame, then fails with `error_number` (0
 * disarms). */
void rt_wal_fail_next_write(int error_number, size_t after_bytes);
/* Reserve disk blocks for [offset, offset + length) of a WAL segment without
 * changing its size (fallocate with FALLOC_FL_KEEP_SIZE): later frame writes
 * into the range need no block allocation, and what recovery reads (the file
 * up to its size) is unchanged. Returns 0, or an errno (EOPNOTSUPP where the
 * system or file system has no such call); a failure changes nothing. */
int rt_wal_reserve(int fd, uint64_t offset, uint64_t length);
/* How many frames written by the writer thread had their writeback started
 * at once (sync_file_range, Linux); for tests. */
uint64_t rt_wal_writeback_started(void);

/* Group commit: the fsync rounds of a durable tree and the callers waiting
 * for them. rt_sync_gate_wait blocks (without the GIL) until `seq` is
 * durable, the gate failed, no round is running (the caller then leads the
 * next one: it must call rt_sync_gate_end, from the same thread, however the
 * round ends), or `timeout_ms` passed. A caller made the leader first
 * gathers: it waits until as many followers as the last round had (those
 * waiting as it ended) wait behind it, for at most half the last round's
 * length and `gather_max_ns` (0: never), so that writers a round released
 * get into the next one. rt_sync_gate_end raises the durable point to
 * `synced` (0 changes nothing), gives up the lead if the calling thread
 * holds it, and wakes every waiter. rt_sync_gate_fail makes every wait,
 * present and future, return RT_SYNC_FAILED. rt_sync_gate_leading and
 * rt_sync_gate_waiting report whether a round runs and how many followers
 * wait. Timed waits run on the monotonic clock (a step of the system time
 * does not stretch them). */
typedef struct rt_sync_gate rt_sync_gate;
#define RT_SYNC_DURABLE 0
#define RT_SYNC_LEAD 1
#define RT_SYNC_FAILED 2
#define RT_SYNC_TIMEOUT 3
rt_sync_gate *rt_sync_gate_new(uint64_t synced, uint64_t gather_max_ns);
void rt_sync_gate_free(rt_sync_gate *gate);
int rt_sync_gate_wait(rt_sync_gate *gate, uint64_t seq, uint32_t timeout_ms);
void rt_sync_gate_end(rt_sync_gate *gate, uint64_t synced);
void rt_sync_gate_fail(rt_sync_gate *gate);
int rt_sync_gate_leading(rt_sync_gate *gate);
int rt_sync_gate_waiting(rt_sync_gate *gate);

/* ---- log views --------------------------------------------------------------
 * Every earlier state of an append-only tree is in its stored levels: a node
 * whose subtree was complete at size n is unchanged since, and only the
 * right edge at n (one node per level) is recomputed, O(depth x arity)
 * hashes. Sizes are 1..the snapshot's (or tree's) size; outside that range
 * these return RT_ERR_INDEX. */

/* The root the tree had when it held `size` leaves. The tree form reads a
 * snapshot it takes and frees, so it holds the tree's lock only for that. */
int rt_snapshot_root_at(const rt_snapshot *snap, uint64_t size, uint8_t *root_out);
int rt_tree_root_at(rt_tree *tree, uint64_t size, uint8_t *root_out);
/* The tree as it was at `size` leaves, as a snapshot in its own right (free
 * it with rt_snapshot_free; it does not depend on `snap` living): reads,
 * rt_proofs_layout/fill (inclusion proofs at that size, tree_size = size,
 * root = root at size) and rt_consistency_layout/fill (consistency from any
 * m <= size to size) all work on it. It shares storage with `snap` and
 * copies at most one chunk per level, where the edge node was recomputed. */
int rt_snapshot_at(const rt_snapshot *snap, uint64_t size, rt_snapshot **out);
/* rt_proof_one of leaf `index` (< size) in the tree at `size`, without
 * keeping a view: for callers that pay per call. */
int rt_proof_one_at(const rt_snapshot *snap, uint64_t size, uint64_t index, uint8_t *out,
                    size_t capacity, size_t *length);
/* The consistency proof from old_size to new_size (1 <= old <= new <= size)
 * in one call: its length to *length and, if it fits in `capacity` bytes,
 * the proof to out (RT_ERR_INVALID_ARGUMENT, out untouched, if not). No
 * proof is longer than 88 + depth(new) * (2 + 64 * arity) bytes. */
int rt_consistency_at(const rt_snapshot *snap, uint64_t old_size, uint64_t new_size,
                      uint8_t *out, size_t capacity, size_t *length);
/* CFFI_END */

#ifdef __cplusplus
}
#endif

#endif /* ROTORTREE_H */
