"""Hash rules: how a parent node is made from its children.

Pure Python (``hashlib`` and ``blake3``), so light clients verify proofs of
every rule without the compiled core. Every rule lifts a group of one child
(the parent is the child), so trees of every rule have the same shape; only
the hash of a group of ``k >= 2`` children differs:

``"rotortree-0.15"`` (the default)
    ``blake3(0x01 || k || child_0 || ... || child_{k-1})``, the Rust crate
    ``rotortree`` 0.15.
``"leanimt"``
    ``blake3(child_0 || ... || child_{k-1})``, untagged: the crate from 0.16
    on, and the canonical LeanIMT node hash of other implementations.
``"rfc6962"``
    ``SHA-256(0x01 || left || right)``, arity 2 only. With leaves that are
    RFC 6962 leaf hashes (:func:`rotortree.rfc6962.leaf_hash`), roots and
    proofs are those of RFC 6962 / RFC 9162 for every size.

Each rule has a number, stored in proof encodings, saved files and durable
metadata (the C enum ``rt_rule``); formats older than rules mean
``"rotortree-0.15"``.
"""

from __future__ import annotations

import hashlib
from typing import Sequence, Tuple

import blake3

from .errors import ArgumentTypeError, InvalidArgumentError, RuleMismatchError

ROTORTREE_015 = "rotortree-0.15"
LEANIMT = "leanimt"
RFC6962 = "rfc6962"
DEFAULT_RULE = ROTORTREE_015
#: Rule names by their stored number.
RULES: Tuple[str, ...] = (ROTORTREE_015, LEANIMT, RFC6962)

_CODES = {name: code for code, name in enumerate(RULES)}
_PARENT_HEADERS = tuple(bytes((0x01, k)) for k in range(256))
_RFC6962_NODE_PREFIX = b"\x01"
_blake3 = blake3.blake3
_sha256 = hashlib.sha256


def known_rule(value: object) -> str:
    """``value`` checked as a rule name: ArgumentTypeError for a non-str,
    InvalidArgumentError for an unknown name."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"rule must be a str, not {type(value).__name__}")
    if value not in _CODES:
        raise InvalidArgumentError(
            f"unknown rule {value[:60]!r}; the rules are {', '.join(map(repr, RULES))}")
    return value


def rule_arg(value: object, arity: int) -> str:
    """``value`` checked as a rule name usable at ``arity``: the errors of
    :func:`known_rule`, and InvalidArgumentError for rfc6962 at an arity
    other than 2."""
    value = known_rule(value)
    if value == RFC6962 and arity != 2:
        raise InvalidArgumentError(f"rule 'rfc6962' needs arity 2, got {arity}")
    return value


def rule_code(name: str) -> int:
    """The stored number of a rule name (checked by :func:`rule_arg`)."""
    return _CODES[name]


def rule_name(code: int) -> str:
    """The rule stored as ``code``; KeyError-free: ValueError when unknown."""
    if not 0 <= code < len(RULES):
        raise ValueError(f"unknown rule number {code}")
    return RULES[code]


def check_same_rule(expected: str, found: str, what: str) -> None:
    """RuleMismatchError naming both rules unless they agree."""
    if expected != found:
        raise RuleMismatchError(
            f"{what} uses the hash rule {found!r}, expected {expected!r}")


def hash_group(rule: str, children: Sequence[bytes]) -> bytes:
    """The parent of ``children`` (32-byte hashes) under ``rule``; a group
    of one child is lifted."""
    count = len(children)
    if count == 1:
        return children[0]
    if rule == ROTORTREE_015:
        return _blake3(b"".join((_PARENT_HEADERS[count], *children))).digest()
    if rule == LEANIMT:
        return _blake3(b"".join(children)).digest()
    if rule == RFC6962 and count == 2:
        return _sha256(b"".join((_RFC6962_NODE_PREFIX, *children))).digest()
    raise InvalidArgumentError(f"rule {rule!r} cannot hash a group of {count}")


__all__ = ["ROTORTREE_015", "LEANIMT", "RFC6962", "DEFAULT_RULE", "RULES", "known_rule", "rule_arg",
           "rule_code", "rule_name", "check_same_rule", "hash_group"]
