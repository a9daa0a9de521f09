"""The pure-Python proof module (rotortree.proofs) on its own: the Rust-made
vectors, proofs from the reference LeanIMT, updates, tampering, encodings
and garbage input. Nothing here touches the C core."""

from __future__ import annotations

import ast
import copy
import functools
import json
import pathlib
import pickle
import subprocess
import sys
from array import array
from typing import List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import vectors
from reference import (
    consistency_levels,
    depth_of,
    hash_parent,
    inclusion_proof_levels,
    reencoded_proof,
    root_of,
    vector_leaf,
)
from rotortree.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidProofError,
    RotorTreeError,
)
from rotortree.proofs import (
    ConsistencyLevel,
    ConsistencyProof,
    InclusionProof,
    ProofLevel,
    tree_depth,
)

PROOFS_PY = pathlib.Path(__file__).resolve().parent.parent / "rotortree" / "proofs.py"
PROOF_VECTORS = [v for v in vectors() if v.get("inclusion_proofs")]
MAX_LEAVES = 1300  # the largest tree of the random tests
LEAVES = [vector_leaf(i) for i in range(max(MAX_LEAVES, *(v["size"] for v in PROOF_VECTORS)))]
U64_MAX = (1 << 64) - 1
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers: proofs built from the reference tree -----------------------------


@functools.lru_cache(maxsize=None)
def root(arity: int, size: int) -> bytes:
    r = root_of(LEAVES[:size], arity)
    assert r is not None
    return r


@functools.lru_cache(maxsize=4096)
def ref_proof(arity: int, size: int, index: int) -> InclusionProof:
    levels = inclusion_proof_levels(LEAVES[:size], arity, index)
    return InclusionProof(
        root=root(arity, size),
        leaf=LEAVES[index],
        leaf_index=index,
        tree_size=size,
        arity=arity,
        levels=tuple(ProofLevel(position, tuple(siblings)) for position, siblings in levels),
    )


@functools.lru_cache(maxsize=4096)
def ref_consistency(arity: int, old_size: int, new_size: int) -> ConsistencyProof:
    levels = consistency_levels(LEAVES[:new_size], arity, old_size)
    return ConsistencyProof(
        arity=arity,
        old_size=old_size,
        new_size=new_size,
        old_root=root(arity, old_size),
        new_root=root(arity, new_size),
        levels=tuple(ConsistencyLevel(tuple(s), tuple(n)) for s, n in levels),
    )


def inclusion_shape(arity: int, size: int, index: int) -> Optional[Tuple[Tuple[int, int], ...]]:
    """(position, sibling count) per level: everything besides hashes that a
    verifier checks, or None if the numbers are out of range."""
    if not (2 <= arity <= 255 and 1 <= size <= U64_MAX and 0 <= index < size):
        return None
    shape = []
    level_len = size
    while level_len > 1:
        position = index % arity
        shape.append((position, min(arity, level_len - index + position) - 1))
        index //= arity
        level_len = -(-level_len // arity)
    return tuple(shape)


def consistency_shape(arity: int, old: int, new: int) -> Optional[Tuple[Tuple[int, int], ...]]:
    """(shared count, new count) per level, or None if out of range."""
    if not (2 <= arity <= 255 and 1 <= old <= new <= U64_MAX):
        return None
    if old == new:
        return ()
    shape = []
    old_len, new_len = old, new
    while old_len > 1 or new_len > 1:
        boundary = old_len - 1
        position = boundary % arity
        shared = position + 1 if not shape else position
        shape.append((shared, min(new_len, boundary - position + arity) - boundary - 1))
        old_len, new_len = -(-old_len // arity), -(-new_len // arity)
    return tuple(shape)


def flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def replace_level(proof, number: int, level):
    levels = list(proof.levels)
    levels[number] = level
    return copy_with(proof, levels=tuple(levels))


def copy_with(proof, **changes):
    fields = {name: getattr(proof, name) for name in type(proof).__slots__}
    fields.update(changes)
    return type(proof)(**fields)


# -- the Rust-made vectors -----------------------------------------------------


def vector_id(vector) -> str:
    return f"n{vector['n']}-size{vector['size']}"


@pytest.mark.parametrize("vector", PROOF_VECTORS, ids=vector_id)
def test_vector_inclusion_proofs(vector):
    arity, size = vector["n"], vector["size"]
    vector_root = bytes.fromhex(vector["root"])
    for raw in vector["inclusion_proofs"]:
        assert raw["verified"] is True
        proof = InclusionProof.from_dict(raw, arity=arity)
        assert proof.verify()
        assert proof.verify_against(vector_root, size)
        assert not proof.verify_against(vector_root, size + 1)
        assert proof.level_count == raw["level_count"] == tree_depth(size, arity)
        # The reference generator makes the very same proof.
        assert proof == ref_proof(arity, size, raw["leaf_index"])
        # Exact round trips.
        encoded = proof.to_bytes()
        assert InclusionProof.from_bytes(encoded) == proof
        assert InclusionProof.from_bytes(encoded).to_bytes() == encoded
        # The dict shape is the vector's plus "arity" and "type".
        expected = {key: value for key, value in raw.items() if key != "verified"}
        expected.update(arity=arity, type="inclusion", rule="rotortree-0.15")
        assert proof.to_dict() == expected
        assert InclusionProof.from_dict(proof.to_dict()) == proof
        assert InclusionProof.from_dict(json.loads(json.dumps(proof.to_dict()))) == proof
        assert not proof.verify_against(flip(vector_root), size)


@pytest.mark.parametrize("vector", PROOF_VECTORS, ids=vector_id)
def test_vector_consistency_proof(vector):
    arity, size = vector["n"], vector["size"]
    raw = vector["consistency_proof"]
    assert raw["verified"] is True
    proof = ConsistencyProof.from_dict(raw, arity=arity)
    old_root, new_root = bytes.fromhex(raw["old_root"]), bytes.fromhex(raw["new_root"])
    assert proof.verify()
    assert proof.verify_against(old_root, proof.old_size, new_root, size)
    assert not proof.verify_against(old_root, proof.old_size + 1, new_root, size)
    assert not proof.verify_against(old_root, proof.old_size, new_root, size + 1)
    assert new_root == bytes.fromhex(vector["root"]) and proof.new_size == size
    assert proof.level_count == raw["level_count"]
    assert proof == ref_consistency(arity, proof.old_size, size)
    encoded = proof.to_bytes()
    assert ConsistencyProof.from_bytes(encoded) == proof
    assert ConsistencyProof.from_bytes(encoded).to_bytes() == encoded
    expected = {key: value for key, value in raw.items() if key != "verified"}
    expected.update(arity=arity, type="consistency", rule="rotortree-0.15")
    assert proof.to_dict() == expected
    assert ConsistencyProof.from_dict(proof.to_dict()) == proof
    assert ConsistencyProof.from_dict(json.loads(json.dumps(proof.to_dict()))) == proof


@pytest.mark.parametrize("vector", PROOF_VECTORS, ids=vector_id)
def test_vector_update_inclusion_proof(vector):
    """The vector's old-tree proofs, updated, are the vector's new proofs."""
    arity, size = vector["n"], vector["size"]
    consistency = ConsistencyProof.from_dict(vector["consistency_proof"], arity=arity)
    old_size = consistency.old_size
    if old_size == size:
        with pytest.raises(InvalidArgumentError):
            consistency.update_inclusion_proof(ref_proof(arity, old_size, 0))
        return
    for raw in vector["inclusion_proofs"]:
        if raw["leaf_index"] < old_size:
            old = ref_proof(arity, old_size, raw["leaf_index"])
            assert old.root == consistency.old_root
            updated = consistency.update_inclusion_proof(old)
            assert updated == InclusionProof.from_dict(raw, arity=arity)


def test_vectors_cover_what_they_should():
    assert len(PROOF_VECTORS) == 36
    assert sum(len(v["inclusion_proofs"]) for v in PROOF_VECTORS) == 96


# -- reference-generated proofs ------------------------------------------------


@settings(FAST, max_examples=150)
@given(st.data())
def test_reference_inclusion_proofs_verify(data):
    arity = data.draw(st.one_of(st.sampled_from([2, 3, 4, 8, 16]), st.integers(2, 40)))
    size = data.draw(st.integers(1, MAX_LEAVES))
    index = data.draw(st.integers(0, size - 1))
    proof = ref_proof(arity, size, index)
    assert proof.verify()
    assert proof.verify_against(root(arity, size), size)
    assert proof.level_count == depth_of(size, arity) == tree_depth(size, arity)
    assert InclusionProof.from_bytes(proof.to_bytes()) == proof
    assert InclusionProof.from_dict(proof.to_dict()) == proof


def test_every_leaf_of_small_trees():
    for arity in (2, 3, 4, 5, 7):
        for size in range(1, 3 * arity * arity + 2):
            for index in range(size):
                assert ref_proof(arity, size, index).verify(), (arity, size, index)


def test_arity_255_and_single_leaf():
    for size in (1, 2, 254, 255, 256, 600):
        for index in {0, size // 2, size - 1}:
            assert ref_proof(255, size, index).verify()
    single = ref_proof(4, 1, 0)
    assert single.levels == () and single.root == single.leaf == LEAVES[0]
    assert single.verify()


def test_huge_tree_size():
    """A proof for a u64-max tree (2**64 - 1 leaves, 64 levels) verifies; the
    numbers are computed with Python ints, never overflowing."""
    leaf = LEAVES[0]
    current, levels = leaf, []
    for level in range(64):
        sibling = LEAVES[level + 1]
        levels.append(ProofLevel(0, (sibling,)))
        current = hash_parent([current, sibling])
    proof = InclusionProof(current, leaf, 0, U64_MAX, 2, tuple(levels))
    assert proof.verify()
    assert InclusionProof.from_bytes(proof.to_bytes()) == proof
    assert not copy_with(proof, tree_size=U64_MAX + 1).verify()
    assert not copy_with(proof, tree_size=1 << 200).verify()
    with pytest.raises(InvalidArgumentError):
        copy_with(proof, tree_size=U64_MAX + 1).to_bytes()


@settings(FAST, max_examples=120)
@given(st.data())
def test_reference_consistency_proofs_verify(data):
    arity = data.draw(st.one_of(st.sampled_from([2, 3, 4, 8, 16]), st.integers(2, 40)))
    new_size = data.draw(st.integers(1, MAX_LEAVES))
    old_size = data.draw(st.integers(1, new_size))
    proof = ref_consistency(arity, old_size, new_size)
    assert proof.verify()
    assert proof.verify_against(root(arity, old_size), old_size, root(arity, new_size), new_size)
    assert proof.level_count == (0 if old_size == new_size else tree_depth(new_size, arity))
    assert ConsistencyProof.from_bytes(proof.to_bytes()) == proof
    assert ConsistencyProof.from_dict(proof.to_dict()) == proof


def test_every_consistency_of_small_trees():
    for arity in (2, 3, 4, 5):
        for new_size in range(1, 2 * arity * arity + 3):
            for old_size in range(1, new_size + 1):
                proof = ref_consistency(arity, old_size, new_size)
                assert proof.verify(), (arity, old_size, new_size)
                # Swapped roots never verify (unless the roots are equal).
                swapped = copy_with(proof, old_root=proof.new_root, new_root=proof.old_root)
                assert swapped.verify() == (old_size == new_size)


def test_equal_sizes():
    r = root(4, 9)
    assert ConsistencyProof(4, 9, 9, r, r, ()).verify()
    assert not ConsistencyProof(4, 9, 9, r, flip(r), ()).verify()
    # Equal sizes carry no levels, even well-formed looking ones.
    assert not ConsistencyProof(4, 9, 9, r, r, (ConsistencyLevel((), ()),)).verify()
    assert not ConsistencyProof(4, 9, 8, r, r, ()).verify()
    assert not ConsistencyProof(4, 0, 0, r, r, ()).verify()


# -- update_inclusion_proof ----------------------------------------------------


def check_update(arity: int, old_size: int, new_size: int, index: int) -> None:
    consistency = ref_consistency(arity, old_size, new_size)
    updated = consistency.update_inclusion_proof(ref_proof(arity, old_size, index))
    assert updated == ref_proof(arity, new_size, index), (arity, old_size, new_size, index)
    assert updated.verify_against(consistency.new_root, new_size)


@settings(FAST, max_examples=250)
@given(st.data())
def test_update_matches_fresh_proof(data):
    arity = data.draw(st.one_of(st.sampled_from([2, 3, 4, 8, 16]), st.integers(2, 40)))
    old_size = data.draw(st.one_of(st.just(1), st.integers(1, 500)))
    new_size = data.draw(st.integers(old_size + 1, min(MAX_LEAVES, old_size + 800)))
    index = data.draw(st.one_of(st.just(old_size - 1), st.integers(0, old_size - 1)))
    check_update(arity, old_size, new_size, index)


def test_update_exhaustive_small():
    for arity in (2, 3, 4):
        for new_size in range(2, 19):
            for old_size in range(1, new_size):
                for index in range(old_size):
                    check_update(arity, old_size, new_size, index)


@pytest.mark.parametrize("arity", [2, 3, 4, 5, 8, 16, 33])
def test_update_at_powers_of_the_arity(arity):
    """Old or new size at arity**k, one off, and new trees several levels deeper."""
    cases = set()
    power = 1
    while power <= MAX_LEAVES:
        for old in (power - 1, power, power + 1):
            for new in (power, power + 1, power * arity, power * arity + 1,
                        power * arity * arity, MAX_LEAVES):
                if 1 <= old < new <= MAX_LEAVES:
                    cases.add((old, new))
        power *= arity
    for old in (1, 2):
        for new in (2, arity, arity + 1, MAX_LEAVES):
            if old < new:
                cases.add((old, new))
    for old, new in sorted(cases):
        for index in sorted({0, old // 2, old - 1}):
            check_update(arity, old, new, index)
    assert any(depth_of(new, arity) >= depth_of(old, arity) + 2 for old, new in cases)


def test_update_chains():
    """old -> mid -> new equals old -> new equals a fresh proof."""
    for arity, sizes in ((2, (3, 8, 9, 40)), (4, (1, 5, 16, 17, 300)), (7, (6, 49, 50, 400))):
        for index in (0, sizes[0] - 1):
            proof = ref_proof(arity, sizes[0], index)
            for old, new in zip(sizes, sizes[1:]):
                proof = ref_consistency(arity, old, new).update_inclusion_proof(proof)
                assert proof == ref_proof(arity, new, index)


def test_update_errors():
    consistency = ref_consistency(4, 10, 30)
    good = ref_proof(4, 10, 3)
    assert consistency.update_inclusion_proof(good) == ref_proof(4, 30, 3)
    # Equal sizes: nothing to update, as in the Rust crate.
    with pytest.raises(InvalidArgumentError):
        ref_consistency(4, 10, 10).update_inclusion_proof(good)
    # A consistency proof that does not verify: the proofs are inconsistent,
    # which errors.py documents as InvalidProofError.
    bad = copy_with(consistency, new_root=flip(consistency.new_root))
    with pytest.raises(InvalidProofError):
        bad.update_inclusion_proof(good)
    with pytest.raises(InvalidProofError):
        copy_with(consistency, levels=consistency.levels[:-1]).update_inclusion_proof(good)
    # An inclusion proof that does not fit.
    with pytest.raises(InvalidProofError):  # other tree size
        consistency.update_inclusion_proof(ref_proof(4, 11, 3))
    with pytest.raises(InvalidProofError):  # other arity
        consistency.update_inclusion_proof(ref_proof(3, 10, 3))
    with pytest.raises(InvalidProofError):  # does not verify
        consistency.update_inclusion_proof(copy_with(good, leaf=flip(good.leaf)))
    with pytest.raises(InvalidProofError):  # right size, other root
        other_tree = copy_with(good, root=flip(good.root))
        consistency.update_inclusion_proof(other_tree)
    with pytest.raises(InvalidProofError):  # garbage consistency proof
        ConsistencyProof(None, "a", 3, b"", b"", None).update_inclusion_proof(good)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        consistency.update_inclusion_proof(good.to_bytes())  # type: ignore[arg-type]
    # All of them are ValueErrors (TypeError for the wrong type).
    assert issubclass(InvalidArgumentError, ValueError)


# -- tampering: inclusion proofs -----------------------------------------------

INCLUSION_CASES = [
    (2, 2, 1), (2, 9, 8), (2, 16, 5), (3, 7, 6), (3, 28, 13), (4, 17, 16),
    (4, 16, 5), (4, 100, 50), (5, 126, 125), (7, 343, 0), (16, 1000, 999), (16, 257, 256),
]


@pytest.mark.parametrize("arity,size,index", INCLUSION_CASES)
def test_inclusion_tampering(arity, size, index):
    proof = ref_proof(arity, size, index)
    assert proof.verify()
    for at in range(32):
        assert not copy_with(proof, root=flip(proof.root, at)).verify()
        assert not copy_with(proof, leaf=flip(proof.leaf, at)).verify()
    for number, level in enumerate(proof.levels):
        siblings = level.siblings
        for s in range(len(siblings)):
            for at in (0, 17, 31):
                changed = siblings[:s] + (flip(siblings[s], at),) + siblings[s + 1:]
                assert not replace_level(proof, number, ProofLevel(level.position, changed)).verify()
            # Drop one sibling.
            fewer = siblings[:s] + siblings[s + 1:]
            assert not replace_level(proof, number, ProofLevel(level.position, fewer)).verify()
        # Add a sibling (a copy of the path node's neighbour, or a leaf).
        for extra in (LEAVES[0], siblings[0] if siblings else LEAVES[1]):
            for at in {0, len(siblings)}:
                more = siblings[:at] + (extra,) + siblings[at:]
                assert not replace_level(proof, number, ProofLevel(level.position, more)).verify()
        if len(siblings) >= 2 and siblings[0] != siblings[1]:
            swapped = (siblings[1], siblings[0]) + siblings[2:]
            assert not replace_level(proof, number, ProofLevel(level.position, swapped)).verify()
        # Every other position.
        for position in [*range(arity + 1), 255, 256, -1, 1 << 70]:
            if position != level.position:
                changed_level = ProofLevel(position, siblings)
                assert not replace_level(proof, number, changed_level).verify()
    # Drop or add a level.
    for number in range(proof.level_count):
        assert not copy_with(proof, levels=proof.levels[:number] + proof.levels[number + 1:]).verify()
    for extra in (ProofLevel(0, ()), ProofLevel(0, (LEAVES[2],))):
        assert not copy_with(proof, levels=proof.levels + (extra,)).verify()
        assert not copy_with(proof, levels=(extra,) + proof.levels).verify()
    if proof.level_count >= 2 and proof.levels[0] != proof.levels[1]:
        swapped_levels = (proof.levels[1], proof.levels[0]) + proof.levels[2:]
        assert not copy_with(proof, levels=swapped_levels).verify()
    # Any other leaf index changes a position digit (or is out of range).
    for other in {*range(0, min(size + 3, 400)), size - 1, size, size + 1, -1, U64_MAX, 1 << 64}:
        if other != index:
            assert not copy_with(proof, leaf_index=other).verify()


@pytest.mark.parametrize("arity,size,index", INCLUSION_CASES)
def test_inclusion_wrong_size_or_arity(arity, size, index):
    """A changed tree_size or arity fails exactly when it changes what the
    verifier checks (depth, positions, sibling counts). When it does not,
    the hashes are the same and the proof stands: the root is the only
    commitment, and a LeanIMT root does not pin the size down more than
    the path shape does (e.g. leaf 0 of 9 vs 10 leaves at arity 4)."""
    proof = ref_proof(arity, size, index)
    shape = inclusion_shape(arity, size, index)
    failed = 0
    sizes = {*range(max(0, size - 40), size + 40), size * arity, size * arity + 1,
             arity ** (proof.level_count + 1), 1, 0, -5, U64_MAX, U64_MAX + 1}
    for other in sizes:
        expected = inclusion_shape(arity, other, index) == shape
        assert copy_with(proof, tree_size=other).verify() == expected, other
        failed += not expected
    assert failed > 0
    assert not copy_with(proof, tree_size=index).verify()  # leaf_index >= tree_size
    for other in [*range(-1, 42), 254, 255, 256, 1 << 70]:
        expected = inclusion_shape(other, size, index) == shape
        assert copy_with(proof, arity=other).verify() == expected, other
    assert not copy_with(proof, arity=True).verify()


def test_leaf_index_past_the_tree_with_matching_positions():
    """leaf_index >= tree_size fails even when the positions are rewritten
    to that index's digits and the hashes would still give the root (leaf
    16 of 17 at arity 4 sits alone in its groups up to level 2; so would a
    "leaf 17" or "leaf 19")."""
    proof = ref_proof(4, 17, 16)
    for fake in (17, 19):
        levels, index = [], fake
        for level in proof.levels:
            levels.append(ProofLevel(index % 4, level.siblings))
            index //= 4
        forged = copy_with(proof, leaf_index=fake, levels=tuple(levels))
        assert not forged.verify()
        # The same rewrite with an in-range index is just the original.
        assert copy_with(forged, leaf_index=16, levels=proof.levels).verify()


def test_wrong_size_that_keeps_the_shape_is_accepted():
    """Documents the LeanIMT property above with a concrete case."""
    proof = ref_proof(4, 9, 0)
    assert inclusion_shape(4, 10, 0) == inclusion_shape(4, 9, 0)
    assert copy_with(proof, tree_size=10).verify()
    assert not copy_with(proof, tree_size=17).verify()
    # Only a 2-leaf tree is arity-independent.
    two = ref_proof(2, 2, 1)
    assert all(copy_with(two, arity=a).verify() for a in range(2, 256))


# -- tampering: consistency proofs ---------------------------------------------

CONSISTENCY_CASES = [
    (2, 1, 2), (2, 4, 9), (2, 7, 8), (2, 33, 100), (3, 5, 20), (3, 9, 10),
    (4, 16, 17), (4, 17, 64), (4, 6, 300), (5, 25, 26), (16, 1, 300), (16, 250, 1000),
]


@pytest.mark.parametrize("arity,old,new", CONSISTENCY_CASES)
def test_consistency_tampering(arity, old, new):
    proof = ref_consistency(arity, old, new)
    assert proof.verify()
    for at in range(32):
        assert not copy_with(proof, old_root=flip(proof.old_root, at)).verify()
        assert not copy_with(proof, new_root=flip(proof.new_root, at)).verify()
    assert not copy_with(proof, old_root=proof.new_root, new_root=proof.old_root).verify()
    for number, level in enumerate(proof.levels):
        for side in ("shared", "new"):
            hashes = getattr(level, side)
            other = level.new if side == "shared" else level.shared

            def with_side(values, side=side, other=other):
                pair = (values, other) if side == "shared" else (other, values)
                return replace_level(proof, number, ConsistencyLevel(*pair))

            for h in range(len(hashes)):
                for at in (0, 31):
                    assert not with_side(hashes[:h] + (flip(hashes[h], at),) + hashes[h + 1:]).verify()
                assert not with_side(hashes[:h] + hashes[h + 1:]).verify()
            assert not with_side(hashes + (LEAVES[3],)).verify()
            assert not with_side((LEAVES[3],) + hashes).verify()
            if len(hashes) >= 2 and hashes[0] != hashes[1]:
                assert not with_side((hashes[1], hashes[0]) + hashes[2:]).verify()
        # Move one hash across the shared/new split (same total).
        if level.shared:
            moved = ConsistencyLevel(level.shared[:-1], level.shared[-1:] + level.new)
            assert not replace_level(proof, number, moved).verify()
        if level.new:
            moved = ConsistencyLevel(level.shared + level.new[:1], level.new[1:])
            assert not replace_level(proof, number, moved).verify()
    for number in range(proof.level_count):
        assert not copy_with(proof, levels=proof.levels[:number] + proof.levels[number + 1:]).verify()
    for extra in (ConsistencyLevel((), ()), ConsistencyLevel((), (LEAVES[5],))):
        assert not copy_with(proof, levels=proof.levels + (extra,)).verify()
        assert not copy_with(proof, levels=(extra,) + proof.levels).verify()


@pytest.mark.parametrize("arity,old,new", CONSISTENCY_CASES)
def test_consistency_wrong_sizes_or_arity(arity, old, new):
    proof = ref_consistency(arity, old, new)
    shape = consistency_shape(arity, old, new)
    failed = 0
    for other_old in {*range(-1, old + 30), new, new + 1}:
        expected = consistency_shape(arity, other_old, new) == shape
        assert copy_with(proof, old_size=other_old).verify() == expected, other_old
        failed += not expected
    for other_new in {*range(max(0, new - 30), new + 30), new * arity, old, U64_MAX, U64_MAX + 1}:
        expected = consistency_shape(arity, old, other_new) == shape
        assert copy_with(proof, new_size=other_new).verify() == expected, other_new
        failed += not expected
    for other_arity in [*range(-1, 40), 255, 256]:
        expected = consistency_shape(other_arity, old, new) == shape
        assert copy_with(proof, arity=other_arity).verify() == expected, other_arity
    assert failed > 0
    assert not copy_with(proof, old_size=new + 1).verify()
    assert not copy_with(proof, old_size=0).verify()


# -- binary encoding -----------------------------------------------------------


def sample_encodings() -> List[Tuple[type, bytes]]:
    out = []
    for arity, size, index in ((2, 1, 0), (2, 2, 1), (4, 17, 16), (3, 28, 13)):
        out.append((InclusionProof, ref_proof(arity, size, index).to_bytes()))
    for arity, old, new in ((2, 1, 1), (2, 1, 2), (4, 6, 300), (3, 9, 10)):
        out.append((ConsistencyProof, ref_consistency(arity, old, new).to_bytes()))
    return out


def test_inclusion_layout():
    proof = ref_proof(3, 7, 4)  # levels: position 1 / 2 siblings, then 1 / 2
    data = proof.to_bytes()
    assert data[:4] == b"RTIP" and data[4] == 2 and data[5] == 3
    assert data[6] == proof.level_count == 2 and data[7] == 0
    assert int.from_bytes(data[8:16], "little") == 4
    assert int.from_bytes(data[16:24], "little") == 7
    assert data[24:56] == proof.root and data[56:88] == proof.leaf
    at = 88
    for level in proof.levels:
        assert data[at] == level.position and data[at + 1] == len(level.siblings)
        assert data[at + 2:at + 2 + 32 * len(level.siblings)] == b"".join(level.siblings)
        at += 2 + 32 * len(level.siblings)
    assert at == len(data)


def test_consistency_layout():
    proof = ref_consistency(4, 6, 300)
    data = proof.to_bytes()
    assert data[:4] == b"RTCP" and data[4] == 2 and data[5] == 4
    assert data[6] == proof.level_count and data[7] == 0
    assert int.from_bytes(data[8:16], "little") == 6
    assert int.from_bytes(data[16:24], "little") == 300
    assert data[24:56] == proof.old_root and data[56:88] == proof.new_root
    at = 88
    for level in proof.levels:
        assert data[at] == len(level.shared) and data[at + 1] == len(level.new)
        at += 2
        assert data[at:at + 32 * len(level.shared)] == b"".join(level.shared)
        at += 32 * len(level.shared)
        assert data[at:at + 32 * len(level.new)] == b"".join(level.new)
        at += 32 * len(level.new)
    assert at == len(data)


@pytest.mark.parametrize("cls,data", sample_encodings(), ids=lambda x: getattr(x, "__name__", ""))
def test_from_bytes_structure_errors(cls, data):
    assert cls.from_bytes(data).to_bytes() == data
    for kind in (bytearray, memoryview):
        assert cls.from_bytes(kind(data)).to_bytes() == data
    assert cls.from_bytes(array("B", data)).to_bytes() == data
    for length in range(len(data)):
        with pytest.raises(InvalidProofError):
            cls.from_bytes(data[:length])
    for tail in (b"\0", b"\x01" * 31, b"\0" * 34):
        with pytest.raises(InvalidProofError, match="trailing"):
            cls.from_bytes(data + tail)
    with pytest.raises(InvalidProofError, match="magic"):
        cls.from_bytes(b"XXXX" + data[4:])
    other = ConsistencyProof if cls is InclusionProof else InclusionProof
    with pytest.raises(InvalidProofError, match="looks like"):
        other.from_bytes(data)
    for version in (0, 3, 255):
        with pytest.raises(InvalidProofError, match="version"):
            cls.from_bytes(data[:4] + bytes([version]) + data[5:])
    with pytest.raises(InvalidProofError, match="version"):
        cls.from_bytes(data[:4] + b"\x03")
    # Version 1 had a reserved zero where version 2 has the rule number.
    for reserved in (1, 128, 255):
        with pytest.raises(InvalidProofError, match="reserved"):
            cls.from_bytes(data[:4] + b"\x01" + data[5:7] + bytes([reserved]) + data[8:])
    for unknown in (3, 128, 255):
        with pytest.raises(InvalidProofError, match="unknown rule"):
            cls.from_bytes(data[:7] + bytes([unknown]) + data[8:])
    if data[5] != 2:
        with pytest.raises(InvalidProofError, match="does not allow arity"):
            cls.from_bytes(data[:7] + b"\x02" + data[8:])
    for arity in (0, 1):
        with pytest.raises(InvalidProofError, match="arity"):
            cls.from_bytes(data[:5] + bytes([arity]) + data[6:])
    for garbage in ("RTIP", 5, None, [1, 2], 3.0, object()):
        with pytest.raises(ArgumentTypeError):
            cls.from_bytes(garbage)
    # A level count that claims more levels than present is truncation.
    with pytest.raises(InvalidProofError, match="truncated"):
        cls.from_bytes(data[:6] + bytes([data[6] + 1]) + data[7:])
    # Every error is a ValueError and a RotorTreeError.
    assert issubclass(InvalidProofError, ValueError)
    assert issubclass(InvalidProofError, RotorTreeError)


@pytest.mark.parametrize("cls,data", sample_encodings(), ids=lambda x: getattr(x, "__name__", ""))
def test_from_bytes_single_byte_corruption(cls, data):
    """Every single-byte change either fails to decode or decodes to a proof
    that re-encodes to the same bytes; a change in a hash, a count or a
    position never verifies."""
    original = cls.from_bytes(data)
    for at in range(len(data)):
        for value in {data[at] ^ 0x01, data[at] ^ 0x80, 0, 255}:
            if value == data[at]:
                continue
            corrupted = data[:at] + bytes([value]) + data[at + 1:]
            try:
                proof = cls.from_bytes(corrupted)
            except InvalidProofError:
                continue
            assert proof != original
            assert proof.to_bytes() == corrupted
            result = proof.verify()
            assert isinstance(result, bool)
            if at >= 24:
                assert not result, at


@settings(FAST, max_examples=300)
@given(
    st.sampled_from([InclusionProof, ConsistencyProof]),
    st.sampled_from([1, 2]),
    st.sampled_from([0, 1, 2, 3, 255]),
    st.integers(0, 6),
    st.binary(max_size=400),
)
@example(InclusionProof, 1, 2, 0, bytes(80))
@example(ConsistencyProof, 1, 2, 0, bytes(80))
@example(InclusionProof, 2, 2, 0, bytes(80))
def test_from_bytes_random(cls, version, arity_byte, level_count, tail):
    magic = b"RTIP" if cls is InclusionProof else b"RTCP"
    data = magic + bytes([version, arity_byte, level_count, 0]) + tail
    try:
        proof = cls.from_bytes(data)
    except InvalidProofError:
        return
    # Version 1 re-encodes as version 2 (documented), so "== data" was wrong
    # for the decodable version-1 inputs the strategy can draw.
    assert proof.to_bytes() == reencoded_proof(data)
    assert proof.verify() in (True, False)


@settings(FAST, max_examples=200)
@given(st.binary(max_size=300))
@example(b"RTIP\x01\x02\x00\x00" + bytes(80))
@example(b"RTCP\x01\x02\x00\x00" + bytes(80))
def test_from_bytes_arbitrary(data):
    for cls in (InclusionProof, ConsistencyProof):
        try:
            proof = cls.from_bytes(data)
        except InvalidProofError:
            continue
        assert proof.to_bytes() == reencoded_proof(data)


def test_to_bytes_rejects_unencodable():
    proof = ref_proof(4, 17, 16)
    bad_values = [
        ({"arity": 1}, InvalidArgumentError), ({"arity": 256}, InvalidArgumentError),
        ({"arity": "4"}, ArgumentTypeError), ({"leaf_index": -1}, InvalidArgumentError),
        ({"tree_size": 1 << 64}, InvalidArgumentError), ({"root": b"short"}, InvalidArgumentError),
        ({"leaf": "ab" * 32}, ArgumentTypeError), ({"levels": None}, ArgumentTypeError),
        ({"levels": (ProofLevel(0, ()),) * 256}, InvalidArgumentError),
        ({"levels": ({"position": 0},)}, ArgumentTypeError),
        ({"levels": (ProofLevel(256, ()),)}, InvalidArgumentError),
        ({"levels": (ProofLevel(0, (LEAVES[0],) * 256),)}, InvalidArgumentError),
        ({"levels": (ProofLevel(0, (b"x",)),)}, InvalidArgumentError),
        ({"levels": (ProofLevel(0, None),)}, ArgumentTypeError),  # type: ignore[arg-type]
    ]
    for changes, error in bad_values:
        with pytest.raises(error):
            copy_with(proof, **changes).to_bytes()
        with pytest.raises(error):
            copy_with(proof, **changes).to_dict()
    consistency = ref_consistency(4, 6, 300)
    for changes, error in [
        ({"old_size": -1}, InvalidArgumentError), ({"new_root": None}, ArgumentTypeError),
        ({"levels": (ConsistencyLevel((LEAVES[0],) * 256, ()),)}, InvalidArgumentError),
        ({"levels": (ProofLevel(0, ()),)}, ArgumentTypeError),
    ]:
        with pytest.raises(error):
            copy_with(consistency, **changes).to_bytes()
    # Out of range but encodable: round-trips, and does not verify.
    odd = copy_with(proof, tree_size=0, leaf_index=U64_MAX)
    assert InclusionProof.from_bytes(odd.to_bytes()) == odd and not odd.verify()


# -- dict encoding -------------------------------------------------------------


def test_from_dict_errors():
    proof = ref_proof(4, 17, 9)
    good = proof.to_dict()
    assert InclusionProof.from_dict(good) == proof
    assert InclusionProof.from_dict(good, arity=4) == proof

    def bad(d, **kw):
        with pytest.raises(InvalidProofError):
            InclusionProof.from_dict(d, **kw)

    for key in good:
        if key not in ("rule", "type"):  # both optional on input  # absent, the rule is rotortree-0.15 (dicts from before rules)
            bad({k: v for k, v in good.items() if k != key})
    assert InclusionProof.from_dict({k: v for k, v in good.items() if k != "rule"}) == proof
    bad(good, rule="leanimt")  # disagrees with the dict
    bad({**good, "rule": "sha256"})
    bad({**good, "rule": "rfc6962"})  # arity 4
    bad({**good, "rule": 1})
    without_arity = {k: v for k, v in good.items() if k != "arity"}
    assert InclusionProof.from_dict(without_arity, arity=4) == proof
    bad(good, arity=3)  # disagrees with the dict
    bad(without_arity, arity=1)
    bad(without_arity, arity="4")
    bad({**good, "extra": 1})
    assert InclusionProof.from_dict({**good, "verified": "whatever"}) == proof
    for key, value in [
        ("arity", 1), ("arity", 4.0), ("arity", True), ("leaf_index", "16"), ("leaf_index", -1),
        ("tree_size", 1 << 64), ("tree_size", None), ("root", proof.root), ("root", "ab"),
        ("root", "zz" * 32), ("root", " " + good["root"][1:]), ("leaf", good["leaf"] + "00"),
        ("leaf", good["leaf"][:-1] + "g"), ("level_count", good["level_count"] + 1), ("level_count", 256),
        ("levels", None), ("levels", "[]"), ("levels", good["levels"] + [good["levels"][0]]),
    ]:
        bad({**good, key: value})
    level = good["levels"][0]
    assert level["sibling_count"] == 3
    for changed in [
        {**level, "sibling_count": level["sibling_count"] + 1},
        {**level, "siblings": level["siblings"][:-1]},
        {**level, "siblings": level["siblings"] + ["00" * 32]},
        {**level, "siblings": "".join(level["siblings"])},
        {**level, "siblings": [bytes.fromhex(s) for s in level["siblings"]]},
        {**level, "position": 256}, {**level, "position": "0"},
        {**level, "extra": 0}, {k: v for k, v in level.items() if k != "position"},
        [level["position"], level["siblings"]], None,
    ]:
        bad({**good, "levels": [changed] + good["levels"][1:]})
    bad(None)
    bad([("arity", 4)])
    bad("{}")
    # Upper-case hex is read; output is lower case, so it round-trips exactly.
    upper = {**good, "root": good["root"].upper()}
    assert InclusionProof.from_dict(upper) == proof
    assert InclusionProof.from_dict(upper).to_dict() == good
    # A structurally fine but wrong proof decodes, then fails verify.
    wrong = InclusionProof.from_dict({**good, "tree_size": 3})
    assert not wrong.verify()


def test_consistency_from_dict_errors():
    proof = ref_consistency(4, 6, 300)
    good = proof.to_dict()
    assert ConsistencyProof.from_dict(good) == proof

    def bad(d, **kw):
        with pytest.raises(InvalidProofError):
            ConsistencyProof.from_dict(d, **kw)

    for key in good:
        if key not in ("rule", "type"):  # both optional on input
            bad({k: v for k, v in good.items() if k != key})
    bad(good, arity=5)
    bad(good, rule="leanimt")
    bad({**good, "rule": "rfc6962"})
    bad({**good, "extra": None})
    for key, value in [("old_size", "6"), ("new_size", -1), ("old_root", None),
                       ("new_root", "0" * 63), ("level_count", 0), ("levels", {})]:
        bad({**good, key: value})
    level = good["levels"][0]
    for changed in [
        {**level, "shared_count": level["shared_count"] + 1},
        {**level, "new_count": level["new_count"] + 1},
        {**level, "hashes": level["hashes"] + ["ff" * 32]},
        {**level, "hashes": [1] * len(level["hashes"])},
        {**level, "new_count": -1},
        {k: v for k, v in level.items() if k != "hashes"},
    ]:
        bad({**good, "levels": [changed] + good["levels"][1:]})
    assert ConsistencyProof.from_dict({**good, "verified": False}) == proof
    # The shared/new split is taken from the counts.
    moved = {**level, "shared_count": level["shared_count"] - 1, "new_count": level["new_count"] + 1}
    resplit = ConsistencyProof.from_dict({**good, "levels": [moved] + good["levels"][1:]})
    assert resplit != proof and not resplit.verify()


# -- garbage objects -----------------------------------------------------------


class Weird(bytes):
    """A bytes subclass whose comparisons blow up."""

    def __eq__(self, other):
        raise RuntimeError("boom")

    __hash__ = bytes.__hash__


def test_verify_never_raises_on_garbage_inclusion():
    proof = ref_proof(4, 17, 9)
    level = proof.levels[0]
    garbage = [
        {"root": None}, {"root": "00" * 32}, {"root": proof.root[:31]}, {"root": proof.root + b"\0"},
        {"leaf": 7},
        {"leaf_index": None}, {"leaf_index": "9"}, {"leaf_index": 9.0}, {"leaf_index": -1},
        {"leaf_index": 1 << 100}, {"tree_size": 1 << 100}, {"tree_size": 10 ** 1000},
        {"tree_size": -17}, {"tree_size": 17.0}, {"tree_size": None},
        {"arity": 0}, {"arity": 1}, {"arity": -4}, {"arity": 4.0}, {"arity": 1 << 80},
        {"arity": None}, {"levels": None}, {"levels": 3}, {"levels": "ab"},
        {"levels": iter(proof.levels)}, {"levels": ({"position": 1},) * 3},
        {"levels": (None, None, None)}, {"levels": proof.levels * 100},
        {"levels": (ProofLevel(1, None),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(1, "ab"),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(1, 5),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(1, (b"x",) * 3),) + proof.levels[1:]},
        {"levels": (ProofLevel(1, (1, 2, 3)),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(1, tuple(s + b"\0" for s in level.siblings)),) + proof.levels[1:]},
        {"levels": (ProofLevel(1, tuple(s.hex() for s in level.siblings)),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(1, iter(level.siblings)),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(None, level.siblings),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(True, level.siblings),) + proof.levels[1:]},
        {"levels": (ProofLevel(1.0, level.siblings),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ProofLevel(1 << 90, level.siblings),) + proof.levels[1:]},
        {"levels": (ProofLevel(-3, level.siblings),) + proof.levels[1:]},
        {"levels": (ProofLevel(1, (LEAVES[0],) * 10000),) + proof.levels[1:]},
    ]
    for changes in garbage:
        bad = copy_with(proof, **changes)
        assert bad.verify() is False, changes
        assert bad.verify_against(proof.root, proof.tree_size) is False, changes
    size = proof.tree_size
    assert proof.verify_against(None, size) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.root.hex(), size) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.root, None) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.root, str(size)) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.root, float(size)) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.root, 10 ** 500) is False
    assert proof.verify_against(Weird(proof.root), size) is True
    assert copy_with(proof, root=flip(proof.root)).verify_against(Weird(proof.root), size) is False
    # bytes subclasses and bytes-likes become plain bytes in the constructors.
    weird_sibling = (Weird(level.siblings[0]),) + level.siblings[1:]
    for weird in (copy_with(proof, leaf=Weird(proof.leaf), root=Weird(proof.root)),
                  replace_level(proof, 0, ProofLevel(1, weird_sibling))):
        assert weird == proof and weird.verify() is True
        assert type(weird.root) is bytes and type(weird.levels[0].siblings[0]) is bytes
    # Even a value forced past the constructor cannot make verify raise.
    forced = copy_with(proof)
    object.__setattr__(forced, "root", Weird(proof.root))
    assert forced.verify() is False and forced.verify_against(proof.root, size) is False
    assert proof.verify_against(bytearray(proof.root), size) is True
    assert proof.verify_against(memoryview(proof.root), size) is True


def test_verify_never_raises_on_garbage_consistency():
    proof = ref_consistency(4, 6, 300)
    level = proof.levels[0]
    garbage = [
        {"arity": None}, {"arity": 1}, {"arity": 256}, {"old_size": 0}, {"old_size": None},
        {"old_size": 301}, {"new_size": 1 << 64}, {"new_size": 10 ** 500}, {"old_size": "6"},
        {"old_root": None}, {"new_root": b""},
        {"levels": None}, {"levels": [None]}, {"levels": (None,) * proof.level_count},
        {"levels": proof.levels * 50}, {"levels": (ProofLevel(0, ()),) * proof.level_count},
        {"levels": (ConsistencyLevel(None, level.new),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ConsistencyLevel(level.shared, "x"),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ConsistencyLevel((1, 2), level.new),) + proof.levels[1:]},  # type: ignore[arg-type]
        {"levels": (ConsistencyLevel(tuple(h[:-1] for h in level.shared), level.new),)
         + proof.levels[1:]},
        {"levels": (ConsistencyLevel(level.shared, level.new + (LEAVES[0],) * 5000),)
         + proof.levels[1:]},
    ]
    for changes in garbage:
        bad = copy_with(proof, **changes)
        assert bad.verify() is False, changes
        assert bad.verify_against(proof.old_root, 6, proof.new_root, 300) is False
    assert proof.verify_against(None, 6, proof.new_root, 300) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.old_root, 6, None, 300) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.old_root, "6", proof.new_root, 300) is False  # type: ignore[arg-type]
    assert proof.verify_against(proof.old_root, 6, proof.new_root, None) is False  # type: ignore[arg-type]
    assert proof.verify_against(flip(proof.old_root), 6, proof.new_root, 300) is False
    assert proof.verify_against(proof.old_root, 6, flip(proof.new_root), 300) is False
    assert proof.verify_against(bytearray(proof.old_root), 6, proof.new_root, 300) is True
    weird = copy_with(proof, new_root=Weird(proof.new_root))
    assert weird == proof and type(weird.new_root) is bytes and weird.verify()
    assert proof.verify_against(Weird(proof.old_root), 6, Weird(proof.new_root), 300) is True
    forced = copy_with(proof)
    object.__setattr__(forced, "old_root", Weird(proof.old_root))
    assert forced.verify() is False
    assert forced.verify_against(proof.old_root, 6, proof.new_root, 300) is False


ANY = st.one_of(
    st.none(), st.integers(-3, 300), st.integers(), st.binary(max_size=40), st.text(max_size=5),
    st.floats(allow_nan=True), st.booleans(), st.lists(st.binary(min_size=32, max_size=32), max_size=3),
)


@settings(FAST, max_examples=200)
@given(ANY, ANY, ANY, ANY, ANY, st.lists(st.builds(ProofLevel, ANY, ANY), max_size=4))
def test_garbage_inclusion_proofs(root_, leaf, index, size, arity, levels):
    proof = InclusionProof(root_, leaf, index, size, arity, tuple(levels))
    result = proof.verify()
    assert isinstance(result, bool)
    if result:  # only a genuine one-leaf proof can pass by chance
        assert size == 1 and index == 0 and root_ == leaf and not levels


@settings(FAST, max_examples=200)
@given(ANY, ANY, ANY, ANY, ANY, st.lists(st.builds(ConsistencyLevel, ANY, ANY), max_size=4))
def test_garbage_consistency_proofs(arity, old, new, old_root, new_root, levels):
    proof = ConsistencyProof(arity, old, new, old_root, new_root, tuple(levels))
    result = proof.verify()
    assert isinstance(result, bool)
    if result:  # only equal sizes with equal roots can pass by chance
        assert old == new and old_root == new_root and not levels


# -- the objects themselves ----------------------------------------------------


def test_objects_are_frozen_hashable_and_picklable():
    proof = ref_proof(4, 17, 9)
    consistency = ref_consistency(4, 6, 300)
    for obj in (proof, consistency, proof.levels[0], consistency.levels[0]):
        assert pickle.loads(pickle.dumps(obj)) == obj
        assert copy.deepcopy(obj) == obj and copy.copy(obj) == obj
        assert hash(obj) == hash(copy.deepcopy(obj))
        first = type(obj).__slots__[0]
        with pytest.raises(AttributeError):
            setattr(obj, first, None)
    assert not hasattr(proof.levels[0], "__dict__")
    # Lists and bytes-likes given to the constructors become tuples and bytes.
    built = InclusionProof(
        bytearray(proof.root), memoryview(proof.leaf), 9, 17, 4,
        [ProofLevel(level.position, [bytearray(s) for s in level.siblings]) for level in proof.levels],
    )
    assert built == proof and hash(built) == hash(proof) and built.verify()
    rebuilt = ConsistencyProof(4, 6, 300, bytearray(consistency.old_root), consistency.new_root,
                               [ConsistencyLevel(list(l.shared), list(l.new)) for l in consistency.levels])
    assert rebuilt == consistency and rebuilt.verify()


def test_tree_depth():
    for arity in (2, 3, 4, 7, 16, 255):
        for size in [*range(0, 300), 1000, 4097, 65537]:
            assert tree_depth(size, arity) == depth_of(size, arity)
    assert tree_depth(U64_MAX, 2) == 64 and tree_depth(1 << 64, 2) == 64
    assert tree_depth(U64_MAX, 255) == 9
    for args, error in [((5, 1), InvalidArgumentError), ((5, 256), InvalidArgumentError),
                        ((-1, 4), InvalidArgumentError), ((5.0, 4), ArgumentTypeError),
                        ((5, True), ArgumentTypeError), (("5", 4), ArgumentTypeError)]:
        with pytest.raises(error):
            tree_depth(*args)


# -- a light client: no compiled module needed ---------------------------------

STDLIB = getattr(sys, "stdlib_module_names", None)


# The package modules proofs.py may import: pure Python themselves (checked
# below), so a light client needs neither cffi nor the compiled core.
PURE_MODULES = {"errors": ("errors",), "_validate": ("errors",), "rules": ("errors",)}


@pytest.mark.parametrize("module,allowed", [("proofs", ("errors", "_validate", "rules")),
                                            *PURE_MODULES.items()])
def test_proofs_module_imports_only_stdlib_blake3_and_errors(module, allowed):
    tree = ast.parse((PROOFS_PY.parent / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1 and node.module in allowed, ast.dump(node)
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if name == "rotortree.errors" or top in ("blake3", "__future__"):
                continue
            if STDLIB is not None:
                assert top in STDLIB, name
            else:
                assert top in {"re", "struct", "dataclasses", "typing"}, name


LIGHT_CLIENT = r"""
import importlib.abc, json, sys, types

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if ((name.startswith("rotortree._") and name != "rotortree._validate")
                or "cffi" in name or name in ("numpy", "psutil")):
            raise ImportError("blocked in this test: " + name)
        return None

sys.meta_path.insert(0, Block())
package = types.ModuleType("rotortree")  # skip rotortree/__init__.py
package.__path__ = [sys.argv[1]]
sys.modules["rotortree"] = package
from rotortree.proofs import ConsistencyProof, InclusionProof

vector = json.loads(sys.stdin.read())
proof = InclusionProof.from_dict(vector["inclusion_proofs"][-1], arity=vector["n"])
consistency = ConsistencyProof.from_dict(vector["consistency_proof"], arity=vector["n"])
assert proof.verify() and consistency.verify()
assert InclusionProof.from_bytes(proof.to_bytes()) == proof
assert not any((m.startswith("rotortree._") and m != "rotortree._validate") or "cffi" in m
               for m in sys.modules)
print("light client ok")
"""


def test_light_client_without_the_compiled_module():
    vector = next(v for v in PROOF_VECTORS if v["n"] == 16 and v["size"] == 10000)
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_CLIENT, str(PROOFS_PY.parent)],
        input=json.dumps(vector), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "light client ok" in result.stdout
