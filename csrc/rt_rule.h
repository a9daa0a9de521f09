/*
 * Hash rules (internal; cffi never reads this file): which function makes a
 * parent from its children. Every rule lifts a group of one child (the
 * parent is the child), so the tree's shape and all the level arithmetic are
 * the same for every rule; only the hash of a group of two or more differs.
 */
#ifndef RT_RULE_H
#define RT_RULE_H

#include "rt_config.h"

#include <stdint.h>

#include "rotortree.h"
#include "rt_blake3.h"

/* RT_OK if trees of `arity` may use `rule`, else RT_ERR_INVALID_ARGUMENT
 * (an unknown rule, or rfc6962 at an arity other than 2). */
int rt_rule_check(int rule, unsigned arity);

/* Full parents of `rule` with the active kernel (same contract as
 * rt_parents_fn; a group of `arity` children per parent). */
rt_parents_fn rt_rule_parents_fn(int rule);

/* The active kernel's parents of `rule` that also store the children
 * (rt_parents_storing_fn), or NULL where it has none. */
rt_parents_storing_fn rt_rule_storing_parents_fn(int rule);

/* One parent of `count` (2..255) children under `rule`. */
void rt_rule_parent(int rule, const uint8_t *children, unsigned count, uint8_t *out);

#endif /* RT_RULE_H */
