/*
 * Inclusion and consistency proofs: generation from snapshots, and
 * verification of the serialized form. The byte layouts are documented in
 * rotortree.h (and mirrored by the pure-Python rotortree/proofs.py).
 */
#include <stdatomic.h>
#include <string.h>

#include "rt_internal.h"
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

static void put_header(uint8_t *out, const char magic[4], unsigned arity,
                       unsigned level_count, uint64_t a, uint64_t b,
                       const uint8_t *hash_a, const uint8_t *hash_b)
{
    memcpy(out, magic, 4);
    out[4] = RT_PROOF_VERSION;
    out[5] = (uint8_t)arity;
    out[6] = (uint8_t)level_count;
    out[7] = 0;
    put_u64(out + 8, a);
    put_u64(out + 16, b);
    memcpy(out + 24, hash_a, 32);
    memcpy(out + 56, hash_b, 32);
}

/* ---- inclusion proofs ----------------------------------------------------- */

static size_t inclusion_size(const rt_snapshot *snap, uint64_t index)
{
    size_t size = RT_PROOF_HEADER_LEN;
    for (unsigned l = 0; l < snap->depth; l++) {
        uint64_t start = index - index % snap->arity;
        uint64_t end = start + snap->arity;
        if (end > snap->levels[l].len)
            end = snap->levels[l].len;
        size += 2 + 32u * (size_t)(end - start - 1);
        index /= snap->arity;
    }
    return size;
}

static void inclusion_fill(const rt_snapshot *snap, uint64_t index, uint8_t *out)
{
    put_header(out, "RTIP", snap->arity, snap->depth, index, snap->size, snap->root,
               rt_snapshot_node(snap, 0, index));
    out += RT_PROOF_HEADER_LEN;
    for (unsigned l = 0; l < snap->depth; l++) {
        uint64_t position = index % snap->arity;
        uint64_t start = index - position;
        uint64_t end = start + snap->arity;
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
        index /= snap->arity;
    }
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

typedef struct fill_job {
    const rt_snapshot *snap;
    const uint64_t *indices;
    const uint64_t *offsets;
    uint8_t *out;
    atomic_int mismatch;
} fill_job;

// Proofs of random leaves miss the cache at the large lower levels (several
// misses per proof at 1M leaves): their groups are requested a few proofs
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
        uint64_t start = index - index % arity;
        const uint8_t *group = rt_snapshot_node(snap, l, start);
        size_t bytes = 32u * (size_t)arity;
        for (size_t line = 0; line < FILL_PREFETCH_LINES && line * 64 < bytes; line++)
            __builtin_prefetch(group + 64 * line);
        index /= arity;
    }
}

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

/* ---- inclusion verification ---------------------------------------------- */

/* RT_OK when the serialized proof is well formed and proves its leaf. */
static int verify_inclusion(const uint8_t *proof, size_t len)
{
    if (len < RT_PROOF_HEADER_LEN || memcmp(proof, "RTIP", 4) != 0 ||
        proof[4] != RT_PROOF_VERSION || proof[7] != 0)
        return RT_ERR_INVALID_PROOF;
    unsigned arity = proof[5];
    unsigned level_count = proof[6];
    uint64_t index = get_u64(proof + 8);
    uint64_t level_len = get_u64(proof + 16);
    if (arity < RT_MIN_ARITY || index >= level_len ||
        level_count != rt_depth_of(level_len, arity))
        return RT_ERR_INVALID_PROOF;
    const uint8_t *root = proof + 24;
    uint8_t current[32];
    memcpy(current, proof + 56, 32);
    uint8_t group[RT_MAX_ARITY * 32];
    size_t at = RT_PROOF_HEADER_LEN;
    for (unsigned l = 0; l < level_count; l++) {
        if (len - at < 2)
            return RT_ERR_INVALID_PROOF;
        uint64_t position = index % arity;
        uint64_t start = index - position;
        uint64_t members = level_len - start < arity ? level_len - start : arity;
        unsigned siblings = proof[at + 1];
        if (proof[at] != position || siblings != members - 1)
            return RT_ERR_INVALID_PROOF;
        at += 2;
        if ((len - at) / 32 < siblings)
            return RT_ERR_INVALID_PROOF;
        if (siblings) {
            const uint8_t *sib = proof + at;
            memcpy(group, sib, 32u * (size_t)position);
            memcpy(group + 32u * position, current, 32);
            memcpy(group + 32u * (position + 1), sib + 32u * position,
                   32u * (siblings - (size_t)position));
            rt_hash_parent(group, siblings + 1, current);
        }
        at += 32u * siblings;
        index /= arity;
        level_len = rt_ceil_div(level_len, arity);
    }
    if (at != len || memcmp(current, root, 32) != 0)
        return RT_ERR_INVALID_PROOF;
    return RT_OK;
}

int rt_verify_inclusion(const uint8_t *proof, size_t len)
{
    if (!proof)
        return RT_ERR_INVALID_ARGUMENT;
    return verify_inclusion(proof, len);
}

typedef struct verify_job {
    const uint8_t *data;
    const uint64_t *offsets;
    _Atomic uint64_t first_invalid;
} verify_job;

static void verify_units(void *ctx, size_t begin, size_t end)
{
    verify_job *job = ctx;
    for (size_t i = begin; i < end; i++) {
        uint64_t from = job->offsets[i], to = job->offsets[i + 1];
        if (verify_inclusion(job->data + from, (size_t)(to - from)) == RT_OK)
            continue;
        uint64_t seen = atomic_load_explicit(&job->first_invalid, memory_order_relaxed);
        while (i < seen && !atomic_compare_exchange_weak_explicit(
                               &job->first_invalid, &seen, i, memory_order_relaxed,
                               memory_order_relaxed)) {
        }
        return; // later proofs in this unit cannot lower the minimum
    }
}

int rt_verify_inclusion_batch(const uint8_t *data, size_t data_len, const uint64_t *offsets,
                              size_t count, uint64_t *first_invalid)
{
    if (!offsets || !first_invalid || (count && !data) || offsets[count] > data_len)
        return RT_ERR_INVALID_ARGUMENT;
    for (size_t i = 0; i < count; i++)
        if (offsets[i + 1] < offsets[i])
            return RT_ERR_INVALID_ARGUMENT;
    verify_job job = {data, offsets, UINT64_MAX};
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

int rt_consistency_size(const rt_snapshot *snap, uint64_t old_size, size_t *out)
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
    int status = rt_consistency_size(snap, old_size, &needed);
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
            rt_hash_parent(group, old_members, old_boundary);
        }
        old_len = rt_ceil_div(old_len, snap->arity);
        new_len = rt_ceil_div(new_len, snap->arity);
        level_count++;
    }
    // old_boundary is now the old root (a lone node is its own root).
    put_header(out, "RTCP", snap->arity, level_count, old_size, snap->size,
               old_size == snap->size ? snap->root : old_boundary, snap->root);
    return RT_OK;
}
