/*
 * Hash rules: rotortree-0.15 (tagged BLAKE3 parents), leanimt (untagged
 * BLAKE3, the crate from 0.16 on) and rfc6962 (SHA-256 interior nodes of
 * RFC 6962 / RFC 9162, binary only).
 */
#include "rt_config.h"

#include "rt_build.h"
#include "rt_rule.h"
#include "rt_sha256.h"
#include "rt_tree.h"

int rt_rule_check(int rule, unsigned arity)
{
    switch (rule) {
    case RT_RULE_ROTORTREE_015:
    case RT_RULE_LEANIMT:
        return RT_OK;
    case RT_RULE_RFC6962:
        // RFC 6962's tree is binary; a wider one has no RFC meaning.
        return arity == 2 ? RT_OK : RT_ERR_INVALID_ARGUMENT;
    default:
        return RT_ERR_INVALID_ARGUMENT;
    }
}

/* rt_parents_fn shape for SHA-256: groups are always two children (the
 * arity is checked when the tree is made). */
static void rfc6962_parents(const uint8_t *children, size_t count, unsigned arity,
                            uint8_t *out)
{
    (void)arity;
    rt_sha256_rfc6962_parents(children, count, out);
}

rt_parents_fn rt_rule_parents_fn(int rule)
{
    switch (rule) {
    case RT_RULE_LEANIMT:
        return rt_active_untagged_parents_fn();
    case RT_RULE_RFC6962:
        return rfc6962_parents;
    default:
        return rt_active_parents_fn();
    }
}

rt_parents_storing_fn rt_rule_storing_parents_fn(int rule)
{
    switch (rule) {
    case RT_RULE_LEANIMT:
        return rt_active_storing_parents_fn(0);
    case RT_RULE_RFC6962:
        return NULL;
    default:
        return rt_active_storing_parents_fn(1);
    }
}

void rt_rule_parent(int rule, const uint8_t *children, unsigned count, uint8_t *out)
{
    rt_rule_parents_fn(rule)(children, 1, count, out);
}

int rt_hash_parent_rule(int rule, const uint8_t *children, unsigned count, uint8_t *out)
{
    if (!children || !out || count < RT_MIN_ARITY || count > RT_MAX_ARITY)
        return RT_ERR_INVALID_ARGUMENT;
    int status = rt_rule_check(rule, count);
    if (status != RT_OK)
        return status;
    rt_rule_parent(rule, children, count, out);
    return RT_OK;
}

/* ---- RFC 6962 entries straight into a tree ---------------------------------- */

static void fill_leaf_hashes(const void *ctx, uint64_t first, uint64_t count, uint8_t *dst)
{
    rt_rfc6962_entries_hash(ctx, (size_t)first, (size_t)(first + count), dst);
}

int rt_tree_insert_rfc6962_entries(rt_tree *tree, const uint8_t *data, size_t data_len,
                                   const uint64_t *offsets, size_t count, size_t entry_len,
                                   uint8_t *root_out)
{
    if (!tree || !root_out || (data_len && !data))
        return RT_ERR_INVALID_ARGUMENT;
    if (rt_tree_rule(tree) != RT_RULE_RFC6962)
        return RT_ERR_INVALID_ARGUMENT;
    rt_rfc6962_entries entries;
    int status = rt_rfc6962_entries_init(&entries, data, data_len, offsets, count, entry_len);
    if (status != RT_OK)
        return status;
    // Blocks of SHA-256 per leaf over the two of a parent, weighed as
    // rt_rfc6962_leaf_hashes weighs them for its own pool run.
    uint64_t total = offsets ? offsets[count] : (uint64_t)count * entry_len;
    uint64_t weight = count ? (total / 64u + count) / (2u * count) : 1;
    rt_leaf_source source = {fill_leaf_hashes, &entries, weight ? weight : 1};
    return rt_tree_insert_from_source(tree, &source, count, root_out);
}
