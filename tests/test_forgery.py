"""Forged proofs: what a verifier that trusts a root and a size rejects.

Leaves are stored as given and parents are not domain-separated from
leaves, so a root alone does not fix the shape of its tree: an internal
node passes for a leaf of a smaller tree, a lifted node for a leaf at
another index, and a consistency proof can hold between real roots under
sizes that are not theirs. Every such proof is self-consistent (``verify()``
is True, and the old ``verify_against(root)`` accepted it); each must be
rejected by the trusted forms, which take the size as well, through every
path: pure Python, the C batch verifier, the single C verifier and the CLI.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rotortree
from conftest import kernels
from reference import build_levels, vector_leaf
from rotortree import cli
from rotortree._native import lib
from rotortree.proofs import ConsistencyLevel, ConsistencyProof, InclusionProof
from rotortree.snapshot import ProofBatch

BATCH_HEADER = struct.Struct("<4sB3xQ")


def tree_of(arity: int, leaves: List[bytes]) -> rotortree.LeanIMT:
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(b"".join(leaves))
    return tree


def leaves_of(size: int) -> List[bytes]:
    return [vector_leaf(i) for i in range(size)]


def node_as_leaf(snap: rotortree.Snapshot, level: int, index: int) -> InclusionProof:
    """The proof that node (level, index) is leaf ``index`` of the tree made
    of level ``level``'s nodes: the genuine proof of the first leaf under
    the node, minus its lowest ``level`` levels. It hashes to the real root."""
    genuine = snap.generate_proof(index * snap.arity ** level)
    return InclusionProof(root=snap.root, leaf=snap.get_node(level, index), leaf_index=index,
                          tree_size=snap.level_len(level), arity=snap.arity,
                          levels=genuine.levels[level:])


def batch_of(proofs: List[InclusionProof]) -> ProofBatch:
    body = b"".join(p.to_bytes() for p in proofs)
    return ProofBatch.from_bytes(BATCH_HEADER.pack(b"RTPB", 1, len(proofs)) + body)


def c_verify(proof: InclusionProof, root: bytes, size: int) -> bool:
    data = proof.to_bytes()
    return lib.rt_verify_inclusion(data, len(data), root, size) == lib.RT_OK


def is_true_statement(leaves: List[bytes], proof: InclusionProof) -> bool:
    return (proof.tree_size == len(leaves) and proof.leaf_index < len(leaves)
            and leaves[proof.leaf_index] == proof.leaf)


# -- the forgeries of the report, one by one ------------------------------------------


def test_internal_node_passed_off_as_a_leaf():
    leaves = leaves_of(64)
    snap = tree_of(4, leaves).snapshot()
    for level in (1, 2):
        forged = node_as_leaf(snap, level, 1)
        # Self-consistent, and it carries the real root: the old check
        # (verify() and root == trusted root) accepted it.
        assert forged.verify() and forged.root == snap.root
        assert not is_true_statement(leaves, forged)
        assert forged.verify_against(snap.root, 64) is False
        assert c_verify(forged, snap.root, 64) is False
        batch = batch_of([snap.generate_proof(0), forged])
        assert batch.verify()  # self-consistency only
        assert batch.verify_against(snap.root, 64) is False
        assert batch.first_invalid_against(snap.root, 64) == 1
    genuine = snap.generate_proof(4)
    assert genuine.verify_against(snap.root, 64) and c_verify(genuine, snap.root, 64)


def test_lifted_leaf_claimed_at_other_indices_and_sizes():
    # Arity 2, 5 leaves: leaf 4 is lifted twice, so it is also node 2 of the
    # 3-node level 1 and node 1 of the 2-node level 2.
    leaves = leaves_of(5)
    snap = tree_of(2, leaves).snapshot()
    genuine = snap.generate_proof(4)
    forgeries = [
        InclusionProof(snap.root, leaves[4], 2, 3, 2, genuine.levels[1:]),
        InclusionProof(snap.root, leaves[4], 1, 2, 2, genuine.levels[2:]),
    ]
    for forged in forgeries:
        assert forged.verify() and forged.root == snap.root
        assert not is_true_statement(leaves, forged)
        assert forged.verify_against(snap.root, 5) is False
        assert c_verify(forged, snap.root, 5) is False
    batch = batch_of([genuine, *forgeries])
    assert batch.first_invalid() is None
    assert batch.first_invalid_against(snap.root, 5) == 1
    assert genuine.verify_against(snap.root, 5)


def forged_consistency() -> Tuple[ConsistencyProof, bytes, bytes, rotortree.Snapshot]:
    """A proof "4 -> 8 leaves" between the real roots of 8 and 16 leaves:
    level 1 of the 16-leaf tree, taken as leaves, builds a tree with the
    same root whose 4-leaf prefix has the 8-leaf tree's root."""
    leaves = leaves_of(16)
    real = tree_of(2, leaves).snapshot()
    root8 = rotortree.compute_root(b"".join(leaves[:8]), 2)
    lifted = tree_of(2, [real.get_node(1, j) for j in range(8)]).snapshot()
    assert lifted.root == real.root
    return lifted.generate_consistency_proof(4, root8), root8, real.root, lifted


def test_consistency_proof_between_real_roots_under_false_sizes():
    forged, root8, root16, _ = forged_consistency()
    assert (forged.old_size, forged.new_size) == (4, 8)
    assert (forged.old_root, forged.new_root) == (root8, root16)
    assert forged.verify()  # what the old verify_against(old_root, new_root) relied on
    assert forged.verify_against(root8, 8, root16, 16) is False
    assert forged.verify_against(root8, 4, root16, 16) is False
    assert forged.verify_against(root8, 8, root16, 8) is False


def test_consistency_proof_recomputes_a_real_new_root_under_a_wrong_new_size():
    # Arity 2: the real tree of 3 leaves, claimed as 4 with the lifted leaf 2
    # offered as node (1, 1). The old side is genuine (size 1, root leaf 0).
    leaves = leaves_of(3)
    root3 = rotortree.compute_root(b"".join(leaves), 2)
    forged = ConsistencyProof(2, 1, 4, leaves[0], root3,
                              (ConsistencyLevel((leaves[0],), (leaves[1],)),
                               ConsistencyLevel((), (leaves[2],))))
    assert forged.verify()
    assert forged.verify_against(leaves[0], 1, root3, 3) is False
    genuine = tree_of(2, leaves).snapshot().generate_consistency_proof(1, leaves[0])
    assert genuine.verify_against(leaves[0], 1, root3, 3)


def test_update_inclusion_proof_does_not_launder_a_forgery():
    forged, root8, root16, lifted = forged_consistency()
    # Node (1, 1) of the 8-leaf tree, passed off as leaf 1 of 4.
    prefix = tree_of(2, [lifted.get_node(0, j) for j in range(4)])
    forged_old = prefix.generate_proof(1)
    assert forged_old.root == root8
    assert forged_old.verify_against(root8, 4)  # self-consistent under its own size
    assert forged_old.verify_against(root8, 8) is False
    carried = forged.update_inclusion_proof(forged_old)
    assert carried.root == root16 and carried.tree_size == 8 and carried.verify()
    assert carried.verify_against(root16, 16) is False


def test_cli_rejects_forgeries_under_the_trusted_size(tmp_path, capsys):
    leaves = leaves_of(64)
    snap = tree_of(4, leaves).snapshot()
    forged = node_as_leaf(snap, 2, 1)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged.to_dict()))
    root = snap.root.hex()
    assert cli.main(["verify", str(path), "--root", root, "--size", "64"]) == 1
    assert "INVALID" in capsys.readouterr().out
    genuine = tmp_path / "genuine.json"
    genuine.write_text(json.dumps(snap.generate_proof(17).to_dict()))
    assert cli.main(["verify", str(genuine), "--root", root, "--size", "64"]) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(path), "--root", root]) == 2
    assert "--root needs --size" in capsys.readouterr().err


def test_cli_inclusion_proof_is_not_checked_against_the_old_tree_head_only(tmp_path, capsys):
    # --old-root/--old-size are a trusted head, but only consistency proofs
    # use it: an inclusion proof must not fall back to self-consistency
    # (which accepts the forgery) with exit 0 and without the warning.
    snap = tree_of(4, leaves_of(64)).snapshot()
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(node_as_leaf(snap, 2, 1).to_dict()))
    for size in ("64", "4"):
        assert cli.main(["verify", str(path), "--old-root", snap.root.hex(),
                         "--old-size", size]) == 2
        captured = capsys.readouterr()
        assert "valid" not in captured.out
        assert "--root" in captured.err and len(captured.err.strip().splitlines()) == 1


# -- search: every self-consistent proof the tree's own nodes can make ----------------


def candidate_proofs(arity: int, leaves: List[bytes]) -> Iterator[InclusionProof]:
    """Proofs that hash to the real root: every node of every level as a
    leaf of the tree made of its level (this covers internal and lifted
    nodes), and every genuine proof with every other claimed size whose
    path shape happens to fit."""
    snap = tree_of(arity, leaves).snapshot()
    for level in range(snap.depth + 1):
        for index in range(snap.level_len(level)):
            yield node_as_leaf(snap, level, index)
    for index in range(len(leaves)):
        genuine = snap.generate_proof(index)
        for size in range(index + 1, 2 * len(leaves) + 2):
            if size != len(leaves):
                yield InclusionProof(genuine.root, genuine.leaf, index, size, arity,
                                     genuine.levels)


def check_no_false_statement(arity: int, leaves: List[bytes]) -> Dict[str, int]:
    """Every candidate accepted under the true size is a true statement,
    in pure Python and in C, single and batched; returns counts."""
    root = rotortree.compute_root(b"".join(leaves), arity)
    size = len(leaves)
    accepted_genuine = self_consistent_forgeries = 0
    candidates = [p for p in candidate_proofs(arity, leaves) if p.verify()]
    verdicts = []
    for proof in candidates:
        trusted = proof.verify_against(root, size)
        assert trusted == is_true_statement(leaves, proof), proof
        assert c_verify(proof, root, size) == trusted, proof
        verdicts.append(trusted)
        accepted_genuine += trusted
        self_consistent_forgeries += not is_true_statement(leaves, proof)
    if candidates:
        batch = batch_of(candidates)
        want = next((i for i, ok in enumerate(verdicts) if not ok), None)
        assert batch.first_invalid_against(root, size) == want
        assert batch.first_invalid() is None
    return {"genuine": accepted_genuine, "forgeries": self_consistent_forgeries}


def test_exhaustive_small_trees_accept_only_true_statements():
    forgeries = 0
    for arity in (2, 3, 4, 5):
        for size in range(1, 3 * arity * arity + 2):
            counts = check_no_false_statement(arity, leaves_of(size))
            assert counts["genuine"] == size
            forgeries += counts["forgeries"]
    # The search has teeth: it builds many proofs that self-consistency accepts.
    assert forgeries > 500


@pytest.mark.parametrize("simd", kernels())
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_verdicts_under_every_kernel_and_thread_count(simd, threads):
    rotortree.configure(num_threads=threads, parallel_threshold=1, simd=simd)
    for arity, size in ((2, 37), (3, 28), (4, 64), (16, 40)):
        counts = check_no_false_statement(arity, leaves_of(size))
        assert counts["genuine"] == size and counts["forgeries"] > 0


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(arity=st.integers(2, 6), data=st.data())
def test_hypothesis_adversarial_leaves(arity, data):
    """Leaves drawn from a tiny pool that also holds internal nodes of a
    prefix, so that leaves repeat and equal other nodes' values: still no
    false statement is accepted under the true size."""
    base = leaves_of(data.draw(st.integers(1, 12)))
    pool = list(base)
    for level in build_levels(base, arity)[1:]:
        pool.extend(level)
    size = data.draw(st.integers(1, 40))
    leaves = [pool[data.draw(st.integers(0, len(pool) - 1))] for _ in range(size)]
    counts = check_no_false_statement(arity, leaves)
    assert counts["genuine"] == size


def test_malformed_trusted_arguments_reject_without_raising():
    snap = tree_of(4, leaves_of(10)).snapshot()
    batch = snap.generate_proofs([0, 9])
    for root, size in ((None, 10), (snap.root[:31], 10), ("00" * 32, 10), (snap.root, 0),
                       (snap.root, -1), (snap.root, 1 << 64), (snap.root, "10"),
                       (snap.root, True), (snap.root, 10.0)):
        assert batch.verify_against(root, size) is False, (root, size)
        assert batch.first_invalid_against(root, size) == 0
        assert batch[0].verify_against(root, size) is False
    assert batch.verify_against(bytearray(snap.root), 10)
    assert batch.verify_against(memoryview(snap.root), 10)
    empty = batch_of([])
    assert empty.verify_against(snap.root, 10) and empty.first_invalid_against(None, 0) is None


def test_trusted_arguments_of_every_type_get_one_verdict_from_python_and_c():
    # The single (pure Python) and batch (C) verifiers must agree on what a
    # trusted root and size may be: numpy, array and ctypes roots and numpy
    # integer sizes were accepted by one and silently rejected by the other.
    import array
    import ctypes

    import numpy as np

    snap = tree_of(4, leaves_of(64)).snapshot()
    batch = snap.generate_proofs([0, 5, 63])
    proof = batch[1]
    consistency = snap.generate_consistency_proof(64, snap.root)
    root = snap.root
    roots = [root, bytearray(root), memoryview(root), np.frombuffer(root, np.uint8).copy(),
             array.array("B", root), (ctypes.c_ubyte * 32).from_buffer_copy(root),
             memoryview(root).cast("Q"), root.hex(), root[:31], None, 7]
    sizes = [64, np.int64(64), np.uint64(64), True, 64.0, "64", None, 63, 1 << 64, -1]
    for trusted_root in roots:
        for size in sizes:
            single = proof.verify_against(trusted_root, size)
            assert batch.verify_against(trusted_root, size) is single, (trusted_root, size)
            assert consistency.verify_against(trusted_root, size, trusted_root, size) is single
    assert proof.verify_against(np.frombuffer(root, np.uint8), np.int64(64))
    assert not proof.verify_against(root, True) and not proof.verify_against(root, 64.0)


def test_an_int_subclass_in_a_proof_cannot_pass_for_the_trusted_size():
    # A proof object whose size compares equal to anything (an int subclass
    # with its own __eq__, put there past the constructor as unpickling
    # does) must not make verify_against skip the size check.
    import enum

    class Anything(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    snap = tree_of(4, leaves_of(64)).snapshot()
    forged = node_as_leaf(snap, 1, 1)   # "leaf 1 of 16": self-consistent
    for build in (lambda: InclusionProof(forged.root, forged.leaf, 1, Anything(16), 4,
                                         forged.levels),
                  lambda: InclusionProof._trusted(forged.root, forged.leaf, 1, Anything(16), 4,
                                                  forged.levels)):
        assert build().verify_against(snap.root, 64) is False
    class Size(enum.IntEnum):
        FULL = 64

    genuine = snap.generate_proof(9)
    assert InclusionProof(genuine.root, genuine.leaf, 9, Size.FULL, 4,
                          genuine.levels).verify_against(snap.root, 64)
