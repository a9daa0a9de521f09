"""Proofs in the forms other implementations exchange.

Pure Python (no compiled core), like :mod:`rotortree.proofs`.

RFC 9162 (``rule="rfc6962"``)
    Certificate Transparency logs exchange an inclusion proof as its audit
    path, the list of sibling hashes from the leaf up (RFC 9162 §2.1.3), and
    a consistency proof as the list of hashes of §2.1.4; in JSON each hash is
    base64 (as in the CT APIs' ``audit_path`` and ``consistency``). A
    rotortree proof of an rfc6962 tree holds the audit path exactly: its
    levels with one sibling, in order (a lifted level is the RFC's
    unbalanced right edge and contributes nothing).

    - :func:`inclusion_to_rfc9162` / :func:`inclusion_from_rfc9162`
    - :func:`consistency_path` (from a tree or snapshot, whose stored nodes
      are the RFC's subtree hashes), :func:`consistency_to_rfc9162`,
      :func:`verify_rfc9162_consistency` (the RFC's verification algorithm).

zk-kit LeanIMT (``rule="leanimt"``, arity 2)
    ``{"root", "leaf", "index", "siblings"}``, the proof object of zk-kit's
    LeanIMT: ``siblings`` only for levels where the path node has one, and
    ``index`` not the leaf index but the bits of the path node's position on
    those levels (bit i for the i-th sibling). Hashes are written as
    ``0x``-prefixed hex (the 32 bytes as a big-endian number); a decimal
    string or int is read as that number.

    - :func:`inclusion_to_zk_kit`, :func:`inclusion_from_zk_kit` (needs the
      leaf index and tree size, which zk-kit's proof does not carry),
      :func:`verify_zk_kit` (what zk-kit's ``verifyProof`` computes, with
      untagged BLAKE3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import blake3

from ._validate import U64_MAX, shown
from .errors import ArgumentTypeError, InvalidArgumentError, InvalidProofError
from .proofs import HASH_LEN, InclusionProof, ProofLevel, tree_depth
from .rules import LEANIMT, RFC6962

_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]{64})")


def _sha_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _b64_hash(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidProofError(f"{where} must be a base64 string, not {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidProofError(f"{where} is not base64: {value[:80]!r}") from None
    if len(raw) != HASH_LEN:
        raise InvalidProofError(f"{where} decodes to {len(raw)} bytes, not {HASH_LEN}")
    return raw


def _hash_list(values: object, where: str, decode: Any) -> List[bytes]:
    if not isinstance(values, (list, tuple)):
        raise InvalidProofError(f"{where} must be a list, not {type(values).__name__}")
    return [decode(value, f"{where}[{i}]") for i, value in enumerate(values)]


def _size_arg(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidProofError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= U64_MAX:
        raise InvalidProofError(f"{name} {shown(value)} out of range {low}..2**64-1")
    return value


def _hash_arg(name: str, value: object) -> bytes:
    if isinstance(value, str):
        match = _HEX.fullmatch(value)
        if match:
            return bytes.fromhex(match.group(1))
        raise InvalidArgumentError(f"{name} must be 32 bytes or 64 hex digits, got {value[:80]!r}")
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == HASH_LEN:
        return bytes(value)
    raise InvalidArgumentError(f"{name} must be 32 bytes or 64 hex digits")


def _shape(index: int, size: int, arity: int) -> List[Tuple[int, int]]:
    """(position, sibling count) of each level of leaf ``index``'s path in a
    tree of ``size`` leaves."""
    out = []
    level_len = size
    for _ in range(tree_depth(size, arity)):
        position = index % arity
        start = index - position
        out.append((position, min(arity, level_len - start) - 1))
        index //= arity
        level_len = -(-level_len // arity)
    return out


def _levels(shape: Sequence[Tuple[int, int]], hashes: Sequence[bytes]) -> Tuple[ProofLevel, ...]:
    """Proof levels of ``shape`` (from :func:`_shape`) taking their siblings
    in order from ``hashes``, whose length the caller checked."""
    taken = iter(hashes)
    return tuple(ProofLevel(position, tuple(next(taken) for _ in range(count)))
                 for position, count in shape)


def _require_keys(d: object, keys: Sequence[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise InvalidProofError(f"{what} must be a dict, not {type(d).__name__}")
    for key in keys:
        if key not in d:
            raise InvalidProofError(f"{what}: missing key {key!r}")


def _require_rule(proof: InclusionProof, rule: str, arity: int, what: str) -> None:
    if not isinstance(proof, InclusionProof):
        raise ArgumentTypeError(f"expected an InclusionProof, not {type(proof).__name__}")
    if proof.rule != rule or proof.arity != arity:
        raise InvalidArgumentError(
            f"{what} needs a proof of rule {rule!r} at arity {arity}, got "
            f"{proof.rule!r} at arity {proof.arity}")


# -- RFC 9162 ---------------------------------------------------------------------


def inclusion_to_rfc9162(proof: InclusionProof) -> Dict[str, Any]:
    """``{"leaf_index", "tree_size", "audit_path": [base64]}`` for a proof of
    an rfc6962 tree (InvalidArgumentError for any other rule)."""
    _require_rule(proof, RFC6962, 2, "RFC 9162 export")
    path = [sibling for level in proof.levels for sibling in level.siblings]
    return {"leaf_index": proof.leaf_index, "tree_size": proof.tree_size,
            "audit_path": [base64.b64encode(h).decode("ascii") for h in path]}


def inclusion_from_rfc9162(d: Mapping[str, Any], *, leaf: object, root: object) -> InclusionProof:
    """The rotortree proof for an RFC 9162 audit path, given the leaf hash
    and the root it proves against (the RFC form carries neither). The path
    length must be the one the index and size imply (InvalidProofError); the
    result's :meth:`~InclusionProof.verify_against` does the hashing."""
    _require_keys(d, ("leaf_index", "tree_size", "audit_path"), "RFC 9162 proof")
    size = _size_arg("tree_size", d["tree_size"], 1)
    index = _size_arg("leaf_index", d["leaf_index"], 0)
    if index >= size:
        raise InvalidProofError(f"leaf_index {index} out of range for tree_size {size}")
    path = _hash_list(d["audit_path"], "audit_path", _b64_hash)
    shape = _shape(index, size, 2)
    if len(path) != sum(count for _, count in shape):
        raise InvalidProofError(
            f"audit_path has {len(path)} hashes; leaf {index} of {size} needs "
            f"{sum(count for _, count in shape)}")
    return InclusionProof(_hash_arg("root", root), _hash_arg("leaf", leaf), index, size, 2,
                          _levels(shape, path), RFC6962)


def consistency_path(tree: Any, old_size: int) -> List[bytes]:
    """The RFC 9162 §2.1.4 consistency proof from ``old_size`` to the size
    of ``tree`` (a LeanIMT, Snapshot or RotorTree of rule rfc6962).

    Every hash in it is the root of a subtree D[lo:hi] with lo a multiple of
    2**l and hi = min(lo + 2**l, n): node (l, lo >> l) of the stored levels,
    so nothing is rehashed."""
    snap = tree.snapshot() if hasattr(tree, "snapshot") else tree
    if getattr(snap, "rule", None) != RFC6962:
        raise InvalidArgumentError("consistency_path needs a tree of rule 'rfc6962'")
    size = snap.size
    if isinstance(old_size, bool) or not isinstance(old_size, int):
        raise ArgumentTypeError(f"old_size must be an int, not {type(old_size).__name__}")
    if not 1 <= old_size <= size:
        raise InvalidArgumentError(f"old_size must be 1..{size}, got {shown(old_size)}")

    def node(lo: int, hi: int) -> bytes:
        level = (hi - lo - 1).bit_length()
        stored: bytes = snap.get_node(level, lo >> level)
        return stored

    out: List[bytes] = []

    def subproof(m: int, lo: int, hi: int, complete: bool) -> None:
        # RFC 9162 SUBPROOF(m, D[lo:hi], b), appending in the RFC's order.
        n = hi - lo
        if m == n:
            if not complete:
                out.append(node(lo, hi))
            return
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            subproof(m, lo, lo + k, complete)
            out.append(node(lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            out.append(node(lo, lo + k))

    if old_size < size:
        subproof(old_size, 0, size, True)
    return out


def consistency_to_rfc9162(tree: Any, old_size: int) -> Dict[str, Any]:
    """``{"first", "second", "consistency": [base64]}``: :func:`consistency_path`
    in the JSON of the CT APIs."""
    path = consistency_path(tree, old_size)
    size = (tree.snapshot() if hasattr(tree, "snapshot") else tree).size
    return {"first": old_size, "second": size,
            "consistency": [base64.b64encode(h).decode("ascii") for h in path]}


def verify_rfc9162_consistency(d: Mapping[str, Any], old_root: object, new_root: object) -> bool:
    """RFC 9162 §2.1.4.2: True iff ``d`` (as from
    :func:`consistency_to_rfc9162`) proves the tree of ``first`` leaves with
    root ``old_root`` a prefix of the tree of ``second`` leaves with root
    ``new_root``. Malformed input raises InvalidProofError."""
    _require_keys(d, ("first", "second", "consistency"), "RFC 9162 proof")
    first = _size_arg("first", d["first"], 1)
    second = _size_arg("second", d["second"], 1)
    path = _hash_list(d["consistency"], "consistency", _b64_hash)
    old, new = _hash_arg("old_root", old_root), _hash_arg("new_root", new_root)
    if first > second:
        return False
    if first == second:
        return not path and old == new
    if not path:
        return False
    if first & (first - 1) == 0:  # a power of two: the old root is the first node
        path = [old] + path
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha_node(c, fr)
            sr = _sha_node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha_node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old and sr == new


# -- zk-kit LeanIMT -------------------------------------------------------------------


def _zk_hash(value: object, where: str) -> bytes:
    if isinstance(value, bool):
        raise InvalidProofError(f"{where} must be a hash, not bool")
    if isinstance(value, str):
        match = _HEX.fullmatch(value)
        if match:
            return bytes.fromhex(match.group(1))
        if value.isdigit():
            value = int(value)
        else:
            raise InvalidProofError(f"{where} must be 0x-hex or decimal, got {value[:80]!r}")
    if isinstance(value, int):
        if not 0 <= value < 1 << 256:
            raise InvalidProofError(f"{where} does not fit in 32 bytes")
        return value.to_bytes(HASH_LEN, "big")
    raise InvalidProofError(f"{where} must be a string or int, not {type(value).__name__}")


def _zk_hex(value: bytes) -> str:
    return "0x" + value.hex()


def inclusion_to_zk_kit(proof: InclusionProof) -> Dict[str, Any]:
    """zk-kit's LeanIMT proof object for a proof of a leanimt tree of arity 2
    (InvalidArgumentError otherwise)."""
    _require_rule(proof, LEANIMT, 2, "zk-kit export")
    siblings: List[bytes] = []
    index = 0
    for level in proof.levels:
        if level.siblings:
            index |= level.position << len(siblings)
            siblings.append(level.siblings[0])
    return {"root": _zk_hex(proof.root), "leaf": _zk_hex(proof.leaf), "index": index,
            "siblings": [_zk_hex(s) for s in siblings]}


def _zk_fields(d: Mapping[str, Any]) -> Tuple[bytes, bytes, int, List[bytes]]:
    _require_keys(d, ("root", "leaf", "index", "siblings"), "zk-kit proof")
    index = d["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InvalidProofError(f"zk-kit proof: index must be an int >= 0, got {shown(index)}")
    siblings = _hash_list(d["siblings"], "siblings", _zk_hash)
    if index >> len(siblings):
        raise InvalidProofError("zk-kit proof: index has bits beyond its siblings")
    return _zk_hash(d["root"], "root"), _zk_hash(d["leaf"], "leaf"), index, siblings


def verify_zk_kit(d: Mapping[str, Any]) -> bool:
    """What zk-kit's ``LeanIMT.verifyProof`` computes, with untagged BLAKE3
    as the hash: the leaf folded with each sibling (on the left where bit i
    of ``index`` is set) equals ``root``. Like zk-kit's, it checks the path
    against the root only; :func:`inclusion_from_zk_kit` with a trusted size
    is the check that also fixes the leaf's index."""
    root, node, index, siblings = _zk_fields(d)
    for i, sibling in enumerate(siblings):
        pair = sibling + node if (index >> i) & 1 else node + sibling
        node = blake3.blake3(pair).digest()
    return node == root


def inclusion_from_zk_kit(d: Mapping[str, Any], *, leaf_index: int,
                          tree_size: int) -> InclusionProof:
    """The rotortree proof for a zk-kit proof of leaf ``leaf_index`` in a
    tree of ``tree_size`` leaves (zk-kit's proof carries neither). Its
    siblings and index bits must be exactly those that position implies
    (InvalidProofError)."""
    root, leaf, index, siblings = _zk_fields(d)
    size = _size_arg("tree_size", tree_size, 1)
    at = _size_arg("leaf_index", leaf_index, 0)
    if at >= size:
        raise InvalidProofError(f"leaf_index {at} out of range for tree_size {size}")
    shape = _shape(at, size, 2)
    wanted = [position for position, count in shape if count]
    if len(wanted) != len(siblings) or any(
            ((index >> i) & 1) != position for i, position in enumerate(wanted)):
        raise InvalidProofError(
            f"the zk-kit proof's index and siblings do not fit leaf {at} of {size}")
    return InclusionProof(root, leaf, at, size, 2, _levels(shape, siblings), LEANIMT)


__all__ = [
    "inclusion_to_rfc9162", "inclusion_from_rfc9162", "consistency_path",
    "consistency_to_rfc9162", "verify_rfc9162_consistency",
    "inclusion_to_zk_kit", "inclusion_from_zk_kit", "verify_zk_kit",
]
