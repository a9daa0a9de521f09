/*
 * Inclusion and consistency proofs: generation from snapshots, and
 * verification of the serialized form. The byte layouts are documented in
 * rotortree.h (and mirrored by the pure-Python rotortree/proofs.py).
 */
#include "rt_config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rt_arith.h"
#include "rt_blake3.h"
#include "rt_pool.h"
#include "rt_rule.h"
#include "snapshot.h"

static void put_u64(uint8_t *out, uint64_t value)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(value >> (8 * i));
}

static uint64_t get_u64(const uint8_t *in)
{
    uint64_t value = 0;
    for (int i = 0; i < 8; i++)
        value |= (uint64_t)in[i] << (8 * i);
    return value;
}

static void put_header(uint8_t *out, const char magic[4], const rt_snapshot *snap,
                       unsigned level_count, uint64_t a, uint64_t b,
                       const uint8_t *hash_a, const uint8_t *hash_b)
{
    memcpy(out, magic, 4);
    out[4] = RT_PROOF_VERSION;
    out[5] = (uint8_t)snap->arity;
    out[6] = (uint8_t)level_count;
    out[7] = (uint8_t)snap->rule;
    put_u64(out + 8, a);
    put_u64(out + 16, b);
    memcpy(out + 24, hash_a, 32);
    memcpy(out + 56, hash_b, 32);
}

/* ---- inclusion proofs ----------------------------------------------------- */

// The level walks below divide with rt_div (a shift at power-of-two
// arities): `/` and `%` by the run-time arity are 64-bit divides, three per
// level over the two walks of every proof.
static size_t inclusion_size(const rt_snapshot *snap, uint64_t index)
{
    const unsigned arity = snap->arity;
    size_t size = RT_PROOF_HEADER_LEN;
    for (unsigned l = 0; l < snap->depth; l++) {
        uint64_t group = rt_div(index, arity);
        uint64_t start = group * arity;
        uint64_t end = start + arity;
        if (end > snap->levels[l].len)
            end = snap->levels[l].len;
        size += 2 + 32u * (size_t)(end - start - 1);
        index = group;
    }
    return size;
}

static void inclusion_fill(const rt_snapshot *snap, uint64_t index, uint8_t *out)
{
    put_header(out, "RTIP", snap, snap->depth, index, snap->size, snap->root,
               rt_snapshot_node(snap, 0, index));
    out += RT_PROOF_HEADER_LEN;
    const unsigned arity = snap->arity;
    for (unsigned l = 0; l < snap->depth; l++) {
        uint64_t parent = rt_div(index, arity);
        uint64_t start = parent * arity;
        uint64_t position = index - start;
        uint64_t end = start + arity;
        if (end > snap->levels[l].len)
            end = snap->levels[l].len;
        *out++ = (uint8_t)position;
        *out++ = (uint8_t)(end - start - 1);
        // A group never straddles chunks, so its nodes are contiguous.
        const uint8_t *group = rt_snapshot_node(snap, l, start);
        memcpy(out, group, 32u * (size_t)position);
        out += 32u * position;
        size_t after = (size_t)(end - index - 1);
        memcpy(out, group + 32u * (position + 1), 32u * after);
        out += 32u * after;
        index = parent;
    }
}

size_t rt_indices_find_small(const uint64_t *indices, size_t count, size_t start)
{
    if (!indices)
        return count;
    for (size_t i = start; i < count; i++)
        if (indices[i] <= 1)
            return i;
    return count;
}

int rt_proofs_layout(const rt_snapshot *snap, const uint64_t *indices, size_t count,
                     uint64_t *offsets, size_t *bad_position)
{
    if (!snap || !offsets || (count && !indices))
        return RT_ERR_INVALID_ARGUMENT;
    uint64_t total = 0;
    offsets[0] = 0;
    for (size_t i = 0; i < count; i++) {
        if (indices[i] >= snap->size) {
            if (bad_position)
                *bad_position = i;
            return RT_ERR_INDEX;
        }
        total += inclusion_size(snap, indices[i]);
        offsets[i + 1] = total;
    }
    return RT_OK;
}

// Proofs of random leaves miss the cache at the large lower levels (several
// misses per proof at 1M leaves): a batch requests its groups a few proofs
// ahead so the misses overlap instead of running one after another.
#define FILL_PREFETCH_AHEAD 8
#define FILL_PREFETCH_LEVELS 6
#define FILL_PREFETCH_LINES 4

static void prefetch_groups(const rt_snapshot *snap, uint64_t index)
{
    if (index >= snap->size)
        return; // bad indices are reported by the fill itself
    const unsigned arity = snap->arity;
    for (unsigned l = 0; l < snap->depth && l < FILL_PREFETCH_LEVELS; l++) {
        uint64_t start = rt_div(index, arity) * arity;
        const uint8_t *group = rt_snapshot_node(snap, l, start);
        size_t bytes = 32u * (size_t)arity;
        for (size_t line = 0; line < FILL_PREFETCH_LINES && line * 64 < bytes; line++)
            __builtin_prefetch(group + 64 * line);
        index = rt_div(index, arity);
    }
}

int rt_proof_one(const rt_snapshot *snap, uint64_t index, uint8_t *out, size_t capacity,
                 size_t *length)
{
    if (!snap || !length || (capacity && !out))
        return RT_ERR_INVALID_ARGUMENT;
    if (index >= snap->size)
        return RT_ERR_INDEX;
    // Every level's group is requested before the first is copied, so a
    // random leaf's cache misses (several at 1M leaves) overlap.
    prefetch_groups(snap, index);
    size_t need = inclusion_size(snap, index);
    *length = need;
    if (need > capacity)
        return RT_ERR_INVALID_ARGUMENT;
    inclusion_fill(snap, index, out);
    return RT_OK;
}

int64_t rt_proof_one_sized(const rt_snapshot *snap, uint64_t index, uint8_t *out,
                           size_t capacity)
{
    size_t length = 0;
    int status = rt_proof_one(snap, index, out, capacity, &length);
    return status == RT_OK ? (int64_t)length : -(int64_t)status;
}

typedef struct fill_job {
    const rt_snapshot *snap;
    const uint64_t *indices;
    const uint64_t *offsets;
    uint8_t *out;
    atomic_int mismatch;
} fill_job;

static void fill_units(void *ctx, size_t begin, size_t end)
{
    fill_job *job = ctx;
    for (size_t i = begin; i < end && i < begin + FILL_PREFETCH_AHEAD; i++)
        prefetch_groups(job->snap, job->indices[i]);
    for (size_t i = begin; i < end; i++) {
        if (i + FILL_PREFETCH_AHEAD < end)
            prefetch_groups(job->snap, job->indices[i + FILL_PREFETCH_AHEAD]);
        // The indices are caller memory read without a copy; if another
        // thread changed one since rt_proofs_layout, its proof no longer
        // fits its slot. Refuse rather than write outside the buffer.
        uint64_t index = job->indices[i];
        if (index >= job->snap->size ||
            inclusion_size(job->snap, index) != job->offsets[i + 1] - job->offsets[i]) {
            atomic_store_explicit(&job->mismatch, 1, memory_order_relaxed);
            continue;
        }
        inclusion_fill(job->snap, index, job->out + job->offsets[i]);
    }
}

// Proof work is memory-bound copying plus no hashing, so a unit of 64
// proofs is already several microseconds: enough to amortise a claim.
#define PROOF_UNIT 64

static void run_units(size_t count, rt_range_fn fn, void *ctx)
{
    uint32_t threads;
    uint64_t threshold, unit;
    rt_pool_tunables(&threads, &threshold, &unit);
    if (threads > 1 && count >= 4 * PROOF_UNIT)
        rt_pool_parallel_for(count, PROOF_UNIT, fn, ctx);
    else
        fn(ctx, 0, count);
}

int rt_proofs_fill(const rt_snapshot *snap, const uint64_t *indices, size_t count,
                   const uint64_t *offsets, uint8_t *out)
{
    if (!snap || (count && (!indices || !offsets || !out)))
        return RT_ERR_INVALID_ARGUMENT;
    fill_job job = {snap, indices, offsets, out, 0};
    run_units(count, fill_units, &job);
    return atomic_load(&job.mismatch) ? RT_ERR_INVALID_ARGUMENT : RT_OK;
}

/* ---- inclusion verification ----------------------------------------------
 * One proof alone is a chain of dependent compressions (about three per level
 * at arity 4), so a core waits on latency most of the time. Proofs are
 * therefore verified in blocks, level by level: the groups of every proof in
 * the block whose group at this level has the same member count go to the
 * multi-lane parents kernel in one call, which hashes them side by side. The
 * kernel's `arity` is the message's member count, so partial groups at the
 * right edge batch too, with each other. */

/* Proofs walked side by side: one AVX-512 lane group, two AVX2 ones, four
 * SSE4.1 ones. */
#define VERIFY_LANES 16
/* Children of one kernel call live here. Enough for every lane of a block up
 * to arity 32 and for one group of any arity; larger blocks take a heap
 * buffer when one can be had. */
#define VERIFY_STACK_SCRATCH (16u * 1024u)
#define VERIFY_HEAP_SCRATCH ((size_t)VERIFY_LANES * RT_MAX_ARITY * 32u)

/* Levels of a proof: depth(tree_size) <= 64 since tree_size is a u64. */
#define VERIFY_MAX_LEVELS 64

/* A structurally valid proof on its way up. The walk takes every position,
 * member count and sibling offset from what parse_inclusion checked and
 * recorded, never from the bytes again: bytes changed underneath it by
 * another thread can change the verdict but not what memory is read. */
typedef struct verify_lane {
    const uint8_t *proof;
    const uint8_t *record; /* the next level's position byte */
    uint64_t tree_size; /* as parsed: the shape was derived from it */
    unsigned arity, level, levels;
    int rule;
    uint8_t position[VERIFY_MAX_LEVELS];
    uint8_t members[VERIFY_MAX_LEVELS];
    uint8_t current[32];
} verify_lane;

/* The rule of a proof header, or -1 if its version and rule byte are not a
 * known pair: version 1 predates rules (byte 7 was 0, rotortree-0.15). */
static int header_rule(const uint8_t *header)
{
    if (header[4] == 1)
        return header[7] == 0 ? RT_RULE_ROTORTREE_015 : -1;
    if (header[4] != RT_PROOF_VERSION || rt_rule_check(header[7], header[5]) != RT_OK)
        return -1;
    return header[7];
}

/* RT_OK when the serialized proof is well formed; then *lane is ready to
 * walk. The root is only compared after the walk. */
static int parse_inclusion(const uint8_t *proof, size_t len, verify_lane *lane)
{
    if (len < RT_PROOF_HEADER_LEN || memcmp(proof, "RTIP", 4) != 0)
        return RT_ERR_INVALID_PROOF;
    int rule = header_rule(proof);
    if (rule < 0)
        return RT_ERR_INVALID_PROOF;
    lane->rule = rule;
    unsigned arity = proof[5];
    unsigned level_count = proof[6];
    uint64_t index = get_u64(proof + 8);
    uint64_t level_len = get_u64(proof + 16);
    lane->tree_size = level_len;
    if (arity < RT_MIN_ARITY || index >= level_len ||
        level_count != rt_depth_of(level_len, arity))
        return RT_ERR_INVALID_PROOF;
    size_t at = RT_PROOF_HEADER_LEN;
    for (unsigned l = 0; l < level_count; l++) {
        if (len - at < 2)
            return RT_ERR_INVALID_PROOF;
        uint64_t position = rt_mod(index, arity);
        uint64_t start = index - position;
        uint64_t members = level_len - start < arity ? level_len - start : arity;
        unsigned siblings = proof[at + 1];
        if (proof[at] != position || siblings != members - 1)
            return RT_ERR_INVALID_PROOF;
        at += 2;
        if ((len - at) / 32 < siblings)
            return RT_ERR_INVALID_PROOF;
        at += 32u * siblings;
        lane->position[l] = (uint8_t)position;
        lane->members[l] = (uint8_t)members;
        index = rt_div(index, arity);
        level_len = rt_ceil_div(level_len, arity);
    }
    if (at != len)
        return RT_ERR_INVALID_PROOF;
    lane->proof = proof;
    lane->record = proof + RT_PROOF_HEADER_LEN;
    lane->arity = arity;
    lane->level = 0;
    lane->levels = level_count;
    memcpy(lane->current, proof + 56, 32);
    return RT_OK;
}

/* Hash the `used` queued groups of `count` members, one kernel call. */
static void flush_lanes(verify_lane *lanes, const unsigned *queued, unsigned used,
                        int rule, const uint8_t *scratch, unsigned count)
{
    uint8_t digests[VERIFY_LANES][32];
    rt_rule_parents_fn(rule)(scratch, used, count, digests[0]);
    for (unsigned q = 0; q < used; q++)
        memcpy(lanes[queued[q]].current, digests[q], 32);
}

/* The lane's group at its current level, current node inserted among the
 * siblings, into group; the lane moves on to its next level. Fixed 32-byte
 * copies: a libc memcpy call per piece cost more than the copy. */
static void lane_take_group(verify_lane *lane, unsigned count, uint8_t *group)
{
    const uint8_t *sibling = lane->record + 2;
    unsigned position = lane->position[lane->level];
    for (unsigned c = 0; c < count; c++, group += 32) {
        if (c == position) {
            memcpy(group, lane->current, 32);
        } else {
            memcpy(group, sibling, 32);
            sibling += 32;
        }
    }
    lane->record = sibling;
    lane->level++;
}

/* Batches are usually far larger than the caches, so the next block's bytes
 * would come from DRAM as parse_inclusion and then the walk reached them,
 * one level record at a time. They are fetched while the current block
 * hashes, a slice after each group taken: issued a level's worth at once,
 * the prefetches queued behind each other and stalled the walk (at arity
 * 16, 1.6 against 1.3 us per proof). Capped so that high-arity blocks don't
 * evict the one being walked. */
#define VERIFY_PREFETCH_MAX (32u * 1024u)

/* Addresses as integers: the cursor may step past the end of the data, and
 * only ever names a cache line to prefetch, which cannot fault. */
typedef struct verify_prefetch {
    uintptr_t at, end;
    size_t step; /* bytes per group taken, a multiple of 64 */
} verify_prefetch;

static void prefetch_slice(verify_prefetch *ahead)
{
    if (ahead->at >= ahead->end) // the cursor steps by lines and may overshoot
        return;
    uintptr_t stop = ahead->end - ahead->at > ahead->step ? ahead->at + ahead->step
                                                           : ahead->end;
    for (; ahead->at < stop; ahead->at += 64)
        __builtin_prefetch((const void *)ahead->at);
}

/* Hash every parsed lane up to its root. scratch holds at least one group of
 * RT_MAX_ARITY children; a bigger one lets more groups share a kernel call. */
static void walk_lanes(verify_lane *lanes, unsigned n, uint8_t *scratch,
                       size_t scratch_len, verify_prefetch *ahead)
{
    // members[k]: the lane's member count at this level, tagged with its
    // rule above bit 8, so only groups hashed the same way share a call.
    unsigned members[VERIFY_LANES], queued[VERIFY_LANES];
    for (;;) {
        int active = 0;
        for (unsigned k = 0; k < n; k++) {
            verify_lane *lane = &lanes[k];
            members[k] = 0;
            if (lane->level == lane->levels)
                continue;
            active = 1;
            unsigned count = lane->members[lane->level];
            if (count == 1) { // lifted: current stays
                lane->record += 2;
                lane->level++;
            } else {
                members[k] = count | (unsigned)lane->rule << 8;
            }
        }
        if (!active)
            return;
        for (unsigned k = 0; k < n; k++) {
            unsigned key = members[k];
            if (key == 0)
                continue;
            unsigned count = key & 0xFF;
            int rule = (int)(key >> 8);
            size_t group_len = 32u * (size_t)count;
            unsigned used = 0;
            for (unsigned j = k; j < n; j++) {
                if (members[j] != key)
                    continue;
                members[j] = 0;
                lane_take_group(&lanes[j], count, scratch + used * group_len);
                if (ahead)
                    prefetch_slice(ahead);
                queued[used++] = j;
                if ((used + 1) * group_len > scratch_len) {
                    flush_lanes(lanes, queued, used, rule, scratch, count);
                    used = 0;
                }
            }
            if (used)
                flush_lanes(lanes, queued, used, rule, scratch, count);
        }
    }
}

/* What the verifier trusts; root NULL means only the proof's own root. */
typedef struct verify_trust {
    const uint8_t *root;
    uint64_t size;
} verify_trust;

/* A walked lane proves its statement only if it reached the root the proof
 * carries and, when the caller trusts a root, that root at the trusted size:
 * the size is what fixes the path's shape (see rotortree.h). */
static int lane_proves(const verify_lane *lane, const verify_trust *trust)
{
    if (memcmp(lane->current, lane->proof + 24, 32) != 0)
        return 0;
    if (!trust->root)
        return 1;
    return lane->tree_size == trust->size && memcmp(lane->current, trust->root, 32) == 0;
}

int rt_verify_inclusion(const uint8_t *proof, size_t len, const uint8_t *trusted_root,
                        uint64_t trusted_size)
{
    if (!proof)
        return RT_ERR_INVALID_ARGUMENT;
    verify_lane lane;
    uint8_t scratch[RT_MAX_ARITY * 32];
    if (parse_inclusion(proof, len, &lane) != RT_OK)
        return RT_ERR_INVALID_PROOF;
    walk_lanes(&lane, 1, scratch, sizeof scratch, NULL);
    verify_trust trust = {trusted_root, trusted_size};
    return lane_proves(&lane, &trust) ? RT_OK : RT_ERR_INVALID_PROOF;
}

typedef struct verify_job {
    const uint8_t *data;
    const uint64_t *offsets;
    verify_trust trust;
    _Atomic uint64_t first_invalid;
} verify_job;

static void record_invalid(verify_job *job, uint64_t i)
{
    uint64_t seen = atomic_load_explicit(&job->first_invalid, memory_order_relaxed);
    while (i < seen && !atomic_compare_exchange_weak_explicit(
                           &job->first_invalid, &seen, i, memory_order_relaxed,
                           memory_order_relaxed)) {
    }
}

static void verify_units(void *ctx, size_t begin, size_t end)
{
    verify_job *job = ctx;
    uint8_t stack_scratch[VERIFY_STACK_SCRATCH];
    uint8_t *heap_scratch = NULL;
    int heap_tried = 0;
    verify_lane lanes[VERIFY_LANES];
    size_t i = begin;
    while (i < end) {
        // Parse a block; a malformed proof ends it, and is the unit's
        // failure unless a proof before it in the block fails to hash to
        // its root.
        size_t first = i;
        uint64_t malformed = UINT64_MAX;
        unsigned n = 0, widest = 0, levels = 0;
        for (; i < end && n < VERIFY_LANES; i++) {
            uint64_t from = job->offsets[i], to = job->offsets[i + 1];
            if (parse_inclusion(job->data + from, (size_t)(to - from), &lanes[n]) != RT_OK) {
                malformed = i;
                break;
            }
            if (lanes[n].arity > widest)
                widest = lanes[n].arity;
            if (lanes[n].levels > levels)
                levels = lanes[n].levels;
            n++;
        }
        uint8_t *scratch = stack_scratch;
        size_t scratch_len = sizeof stack_scratch;
        if ((size_t)n * widest * 32u > scratch_len) {
            if (!heap_tried) {
                heap_scratch = malloc(VERIFY_HEAP_SCRATCH);
                heap_tried = 1;
            }
            if (heap_scratch) {
                scratch = heap_scratch;
                scratch_len = VERIFY_HEAP_SCRATCH;
            }
        }
        verify_prefetch ahead, *next = NULL;
        if (malformed == UINT64_MAX && i < end && levels) {
            size_t last = i + VERIFY_LANES < end ? i + VERIFY_LANES : end;
            uint64_t from = job->offsets[i], to = job->offsets[last];
            if (to - from > VERIFY_PREFETCH_MAX)
                to = from + VERIFY_PREFETCH_MAX;
            ahead.at = ((uintptr_t)job->data + from) & ~(uintptr_t)63;
            ahead.end = (uintptr_t)job->data + to;
            ahead.step = ((size_t)(ahead.end - ahead.at) / (levels * n) + 64) & ~(size_t)63;
            next = &ahead;
        }
        walk_lanes(lanes, n, scratch, scratch_len, next);
        uint64_t failed = malformed;
        for (unsigned k = 0; k < n; k++)
            if (!lane_proves(&lanes[k], &job->trust)) {
                failed = first + k;
                break;
            }
        if (failed != UINT64_MAX) {
            record_invalid(job, failed);
            break; // later proofs in this unit cannot lower the minimum
        }
    }
    free(heap_scratch);
}

int rt_verify_inclusion_batch(const uint8_t *data, size_t data_len, const uint64_t *offsets,
                              size_t count, const uint8_t *trusted_root,
                              uint64_t trusted_size, uint64_t *first_invalid)
{
    if (!offsets || !first_invalid || (count && !data) || offsets[count] > data_len)
        return RT_ERR_INVALID_ARGUMENT;
    for (size_t i = 0; i < count; i++)
        if (offsets[i + 1] < offsets[i])
            return RT_ERR_INVALID_ARGUMENT;
    verify_job job = {data, offsets, {trusted_root, trusted_size}, UINT64_MAX};
    run_units(count, verify_units, &job);
    *first_invalid = atomic_load(&job.first_invalid);
    return *first_invalid == UINT64_MAX ? RT_OK : RT_ERR_INVALID_PROOF;
}

/* ---- consistency proofs --------------------------------------------------- */

/* Nodes of level `level` in a tree of `size` leaves. */
typedef struct consistency_level {
    uint64_t group_start, boundary, new_end;
    unsigned shared, fresh;
} consistency_level;

static consistency_level consistency_shape(unsigned level, uint64_t old_len,
                                           uint64_t new_len, unsigned arity)
{
    consistency_level shape;
    shape.boundary = old_len - 1;
    uint64_t boundary_pos = shape.boundary % arity;
    shape.group_start = shape.boundary - boundary_pos;
    // Level 0 sends the boundary leaf itself; above it the verifier
    // recomputes the boundary node from the level below.
    shape.shared = (unsigned)(level == 0 ? boundary_pos + 1 : boundary_pos);
    uint64_t group_end = shape.group_start + arity;
    shape.new_end = new_len < group_end ? new_len : group_end;
    shape.fresh = (unsigned)(shape.new_end - shape.boundary - 1);
    return shape;
}

static int consistency_check(const rt_snapshot *snap, uint64_t old_size)
{
    if (!snap)
        return RT_ERR_INVALID_ARGUMENT;
    if (snap->size == 0)
        return RT_ERR_EMPTY_TREE;
    if (old_size < 1 || old_size > snap->size)
        return RT_ERR_INDEX;
    return RT_OK;
}

int rt_consistency_layout(const rt_snapshot *snap, uint64_t old_size, size_t *out)
{
    int status = consistency_check(snap, old_size);
    if (status != RT_OK)
        return status;
    size_t size = RT_PROOF_HEADER_LEN;
    uint64_t old_len = old_size, new_len = snap->size;
    for (unsigned l = 0; old_size != snap->size && (old_len > 1 || new_len > 1); l++) {
        consistency_level shape = consistency_shape(l, old_len, new_len, snap->arity);
        size += 2 + 32u * (size_t)(shape.shared + shape.fresh);
        old_len = rt_ceil_div(old_len, snap->arity);
        new_len = rt_ceil_div(new_len, snap->arity);
    }
    *out = size;
    return RT_OK;
}

int rt_consistency_fill(const rt_snapshot *snap, uint64_t old_size, uint8_t *out,
                        size_t out_len)
{
    size_t needed;
    int status = rt_consistency_layout(snap, old_size, &needed);
    if (status != RT_OK)
        return status;
    if (!out || out_len != needed)
        return RT_ERR_INVALID_ARGUMENT;

    // The old root is not stored anywhere; it falls out of the same fold
    // the verifier runs over the shared hashes, carried level by level as
    // the old boundary node.
    uint8_t old_boundary[32];
    uint8_t group[RT_MAX_ARITY * 32];
    uint8_t *cursor = out + RT_PROOF_HEADER_LEN;
    unsigned level_count = 0;
    uint64_t old_len = old_size, new_len = snap->size;
    memcpy(old_boundary, rt_snapshot_node(snap, 0, old_size - 1), 32);
    for (unsigned l = 0; old_size != snap->size && (old_len > 1 || new_len > 1); l++) {
        consistency_level shape = consistency_shape(l, old_len, new_len, snap->arity);
        *cursor++ = (uint8_t)shape.shared;
        *cursor++ = (uint8_t)shape.fresh;
        const uint8_t *start = rt_snapshot_node(snap, l, shape.group_start);
        memcpy(cursor, start, 32u * shape.shared);
        cursor += 32u * shape.shared;
        memcpy(cursor, rt_snapshot_node(snap, l, shape.boundary) + 32, 32u * shape.fresh);
        cursor += 32u * shape.fresh;

        unsigned old_members = (unsigned)(shape.boundary - shape.group_start + 1);
        if (old_members > 1) {
            memcpy(group, start, 32u * (old_members - 1));
            memcpy(group + 32u * (old_members - 1), old_boundary, 32);
            rt_rule_parent(snap->rule, group, old_members, old_boundary);
        }
        old_len = rt_ceil_div(old_len, snap->arity);
        new_len = rt_ceil_div(new_len, snap->arity);
        level_count++;
    }
    // old_boundary is now the old root (a lone node is its own root).
    put_header(out, "RTCP", snap, level_count, old_size, snap->size,
               old_size == snap->size ? snap->root : old_boundary, snap->root);
    return RT_OK;
}
