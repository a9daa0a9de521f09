"""Hash rules (issue 16): every rule against its vectors and the reference
under every kernel and thread count, and the rule recorded in every format
that outlives a tree (proofs, proof batches, saved files, durable meta)."""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
import zlib

import pytest

import rotortree
from conftest import DATA, kernels
from reference import (
    build_levels,
    consistency_levels,
    inclusion_proof_levels,
    root_of,
    vector_leaf,
)
from rotortree import (
    ConsistencyProof,
    InclusionProof,
    InvalidArgumentError,
    InvalidProofError,
    LeanIMT,
    ProofBatch,
    RotorTreeError,
    RuleMismatchError,
)
from rotortree import storage
from rotortree._native import ffi, lib
from rotortree.rules import RULES

LEANIMT_VECTORS = json.loads((DATA / "rotortree-0.17.json").read_text())["vectors"]
MAX_VECTOR = max(v["size"] for v in LEANIMT_VECTORS)
VECTOR_LEAVES = b"".join(vector_leaf(i) for i in range(MAX_VECTOR))
ENGINES = [(1, 1024), (2, 1)]


def rule_arities(rule):
    return [2] if rule == "rfc6962" else [2, 3, 4, 5, 7, 8, 16, 17, 31, 32, 33, 40]


def random_leaves(rng, count):
    return [rng.randbytes(32) for _ in range(count)]


@pytest.fixture(params=kernels())
def kernel(request):
    rotortree.configure(simd=request.param)
    return request.param


# -- the leanimt rule against the crate 0.17's vectors -------------------------


def test_vector_file_is_the_crates():
    meta = json.loads((DATA / "rotortree-0.17.json").read_text())
    assert meta["version"] == "0.17.0" and "untagged" not in meta["hash_rule"]
    assert meta["hash_rule"].startswith("parent = blake3(child_0 || ... || child_{k-1})")
    assert {v["n"] for v in LEANIMT_VECTORS} == {2, 4, 8, 16}


@pytest.mark.parametrize("threads,threshold", ENGINES, ids=str)
def test_leanimt_vectors(kernel, threads, threshold):
    rotortree.configure(num_threads=threads, parallel_threshold=threshold, par_chunk_size=4)
    for vector in LEANIMT_VECTORS:
        arity, size = vector["n"], vector["size"]
        expected = bytes.fromhex(vector["root"])
        leaves = VECTOR_LEAVES[:32 * size]
        assert rotortree.compute_root(leaves, arity, rule="leanimt") == expected, vector
        tree = LeanIMT(arity, rule="leanimt")
        assert tree.insert_many(leaves) == expected, vector
        # The same leaves under the old rule give another root (size >= 2).
        if size >= 2:
            assert rotortree.compute_root(leaves, arity) != expected


@pytest.mark.parametrize("vector", [v for v in LEANIMT_VECTORS if v["size"] <= 600],
                         ids=lambda v: f"n{v['n']}-size{v['size']}")
def test_leanimt_vector_single_inserts(kernel, vector):
    """Single inserts run through the per-level prefix cache, which must
    start its message at the first child when there is no header."""
    tree = LeanIMT(vector["n"], rule="leanimt")
    for i in range(vector["size"]):
        root = tree.insert(VECTOR_LEAVES[32 * i:32 * (i + 1)])
    assert root == bytes.fromhex(vector["root"])


# -- every rule against the reference ------------------------------------------


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("threads", [1, 2])
def test_random_trees_match_reference(kernel, rule, threads):
    """Random trees, grown by batches and single inserts, against the
    reference's levels; every kernel's lane groups and remainders (sizes
    around multiples of 16 groups) and the multi-chunk path (arity >= 32)."""
    rotortree.configure(num_threads=threads, parallel_threshold=1, par_chunk_size=4)
    rng = random.Random(f"{rule}-{kernel}-{threads}")
    for arity in rule_arities(rule):
        leaves = random_leaves(rng, rng.choice([16 * arity + 1, 17 * arity - 1, 3 * arity + 2]))
        tree = LeanIMT(arity, rule=rule)
        at = 0
        while at < len(leaves):
            step = rng.choice([1, 1, 2, arity, 5 * arity + 3])
            batch = leaves[at:at + step]
            if len(batch) == 1:
                root = tree.insert(batch[0])
            else:
                root = tree.insert_many(b"".join(batch))
            at += len(batch)
            assert root == root_of(leaves[:at], arity, rule), (arity, at)
        levels = build_levels(leaves, arity, rule)
        for level, nodes in enumerate(levels):
            assert [tree.get_node(level, i) for i in range(len(nodes))] == nodes
        assert rotortree.compute_root(b"".join(leaves), arity, rule=rule) == levels[-1][0]


@pytest.mark.parametrize("rule", RULES)
def test_proofs_match_reference(kernel, rule):
    rng = random.Random(rule)
    for arity in rule_arities(rule)[:6]:
        size = rng.randrange(2, 6 * arity * arity)
        leaves = random_leaves(rng, size)
        tree = LeanIMT(arity, rule=rule)
        tree.insert_many(b"".join(leaves))
        root = tree.root
        indices = sorted({0, size - 1, *(rng.randrange(size) for _ in range(8))})
        batch = tree.generate_proofs(indices)
        assert batch.rule == rule and batch.verify_against(root, size)
        for index, proof in zip(indices, batch):
            assert proof.rule == rule
            want = inclusion_proof_levels(leaves, arity, index, rule)
            assert [(level.position, list(level.siblings)) for level in proof.levels] == want
            assert proof.verify_against(root, size, rule=rule)
            data = proof.to_bytes()
            assert data[4] == 2 and data[7] == RULES.index(rule)
            assert lib.rt_verify_inclusion(data, len(data), root, size) == lib.RT_OK
            # The rule decides the hash: the same bytes under another rule fail.
            for other in RULES:
                if other != rule and (other != "rfc6962" or arity == 2):
                    changed = data[:7] + bytes([RULES.index(other)]) + data[8:]
                    assert lib.rt_verify_inclusion(changed, len(changed), root, size) \
                        == lib.RT_ERR_INVALID_PROOF
                    assert not InclusionProof.from_bytes(changed).verify()
        old_size = rng.randrange(1, size)
        old_root = root_of(leaves[:old_size], arity, rule)
        consistency = tree.generate_consistency_proof(old_size, old_root)
        assert consistency.rule == rule
        assert [(list(l.shared), list(l.new)) for l in consistency.levels] == \
            consistency_levels(leaves, arity, old_size, rule)
        assert consistency.verify_against(old_root, old_size, root, size, rule=rule)
        updated = consistency.update_inclusion_proof(
            InclusionProof.from_bytes(LeanIMT_proof_at(leaves[:old_size], arity, rule, 0)))
        assert updated.rule == rule and updated.verify_against(root, size)


def LeanIMT_proof_at(leaves, arity, rule, index):
    tree = LeanIMT(arity, rule=rule)
    tree.insert_many(b"".join(leaves))
    return tree.generate_proof(index).to_bytes()


@pytest.mark.parametrize("rule", RULES)
def test_c_parent_matches_reference(kernel, rule):
    rng = random.Random(rule)
    for count in ([2] if rule == "rfc6962" else range(2, 256)):
        children = rng.randbytes(32 * count)
        out = ffi.new("uint8_t[32]")
        assert lib.rt_hash_parent_rule(RULES.index(rule), children, count, out) == lib.RT_OK
        expected = build_levels([children[32 * i:32 * i + 32] for i in range(count)],
                                count, rule)[-1][0]
        assert ffi.buffer(out)[:] == expected


# -- arguments ---------------------------------------------------------------------


def test_rule_arguments():
    assert LeanIMT().rule == "rotortree-0.15" == LeanIMT(2).snapshot().rule
    for bad in ("sha256", "LEANIMT", ""):
        with pytest.raises(InvalidArgumentError, match="unknown rule"):
            LeanIMT(4, rule=bad)
        with pytest.raises(InvalidArgumentError, match="unknown rule"):
            rotortree.compute_root(bytes(64), 4, rule=bad)
    for bad in (1, None, b"leanimt"):
        with pytest.raises(rotortree.ArgumentTypeError):
            LeanIMT(4, rule=bad)
    for arity in (3, 4, 16):
        with pytest.raises(InvalidArgumentError, match="arity 2"):
            LeanIMT(arity, rule="rfc6962")
        with pytest.raises(InvalidArgumentError, match="arity 2"):
            rotortree.compute_root(bytes(64), arity, rule="rfc6962")
    # The C core checks the same on its own.
    out = ffi.new("rt_tree **")
    assert lib.rt_tree_new(4, 8, lib.RT_RULE_RFC6962, out) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_tree_new(4, 8, 3, out) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_tree_new(4, 8, -1, out) == lib.RT_ERR_INVALID_ARGUMENT
    root = ffi.new("uint8_t[32]")
    assert lib.rt_compute_root(bytes(64), 2, 4, 7, root) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_hash_parent_rule(lib.RT_RULE_RFC6962, bytes(96), 3, root) == \
        lib.RT_ERR_INVALID_ARGUMENT
    assert issubclass(RuleMismatchError, RotorTreeError) and issubclass(RuleMismatchError,
                                                                        ValueError)


# -- the rule in every format --------------------------------------------------------


def tree_with(rule, arity=2, size=37):
    tree = LeanIMT(arity, rule=rule)
    tree.insert_many(b"".join(vector_leaf(i) for i in range(size)))
    return tree


def as_version_1(data: bytes) -> bytes:
    return data[:4] + b"\x01" + data[5:7] + b"\x00" + data[8:]


def test_version_1_proofs_decode_as_rotortree_015():
    tree = tree_with("rotortree-0.15", 4, 50)
    proof = tree.generate_proof(17)
    old = as_version_1(proof.to_bytes())
    decoded = InclusionProof.from_bytes(old)
    assert decoded == proof and decoded.rule == "rotortree-0.15"
    assert lib.rt_verify_inclusion(old, len(old), tree.root, 50) == lib.RT_OK
    consistency = tree.generate_consistency_proof(9, root_of([vector_leaf(i) for i in range(9)], 4))
    assert ConsistencyProof.from_bytes(as_version_1(consistency.to_bytes())) == consistency
    # A dict from before rules has no "rule" key.
    legacy = {k: v for k, v in proof.to_dict().items() if k != "rule"}
    assert InclusionProof.from_dict(legacy) == proof
    # Pickles from before rules restore with the old rule.
    state = proof.__getstate__()[:-1]
    revived = object.__new__(InclusionProof)
    revived.__setstate__(state)
    assert revived == proof


@pytest.mark.parametrize("rule", RULES)
def test_proof_objects_carry_the_rule(rule):
    tree = tree_with(rule)
    proof = tree.generate_proof(5)
    assert proof.rule == rule
    for copy in (InclusionProof.from_bytes(proof.to_bytes()),
                 InclusionProof.from_dict(json.loads(json.dumps(proof.to_dict()))),
                 pickle.loads(pickle.dumps(proof))):
        assert copy == proof and copy.rule == rule
    assert proof.to_dict()["rule"] == rule
    others = [r for r in RULES if r != rule]
    for other in others:
        with pytest.raises(RuleMismatchError, match=f"{rule!r}.*expected {other!r}"):
            proof.verify_against(tree.root, tree.size, rule=other)
        batch = tree.generate_proofs([1, 2])
        with pytest.raises(RuleMismatchError):
            batch.verify_against(tree.root, tree.size, rule=other)
    with pytest.raises(InvalidArgumentError):
        proof.verify_against(tree.root, tree.size, rule="nope")


def test_update_refuses_proofs_of_another_rule():
    old = tree_with("leanimt", 2, 20)
    proof = old.generate_proof(3)
    new = tree_with("leanimt", 2, 30)
    consistency = new.generate_consistency_proof(20, old.root)
    assert consistency.update_inclusion_proof(proof).verify_against(new.root, 30)
    # The same path relabelled as another rule's proof.
    relabelled = InclusionProof(proof.root, proof.leaf, proof.leaf_index, proof.tree_size,
                                proof.arity, proof.levels, "rotortree-0.15")
    with pytest.raises(RuleMismatchError):
        consistency.update_inclusion_proof(relabelled)


@pytest.mark.parametrize("rule", RULES)
def test_proof_batches_carry_the_rule(rule):
    tree = tree_with(rule)
    batch = tree.generate_proofs(range(10))
    data = batch.to_bytes()
    assert data[4] == 2 and data[5] == RULES.index(rule)
    decoded = ProofBatch.from_bytes(data)
    assert decoded.rule == rule and decoded.verify_against(tree.root, tree.size, rule=rule)
    assert pickle.loads(pickle.dumps(batch)).rule == rule
    assert rule in repr(batch)
    # A batch of one rule holding a proof of another is malformed.
    other = (RULES.index(rule) + 1) % 2
    with pytest.raises(InvalidProofError, match="rule"):
        ProofBatch.from_bytes(data[:5] + bytes([other]) + data[6:])


def test_version_1_proof_batches_hold_rotortree_015_proofs():
    tree = tree_with("rotortree-0.15", 4, 40)
    batch = tree.generate_proofs(range(3))
    proofs = [as_version_1(batch.proof_bytes(i)) for i in range(3)]
    old = b"RTPB\x01\0\0\0" + struct.pack("<Q", 3) + b"".join(proofs)
    decoded = ProofBatch.from_bytes(old)
    assert decoded.rule == "rotortree-0.15" and decoded.verify_against(tree.root, 40)
    with pytest.raises(InvalidProofError):
        ProofBatch.from_bytes(old[:5] + b"\x01" + old[6:])  # version 1 has no rule byte


@pytest.mark.parametrize("rule", RULES)
def test_saved_files_record_the_rule(tmp_path, rule):
    tree = tree_with(rule, 2, 70)
    path = tmp_path / "tree.rt"
    tree.save(path)
    for mmap in (False, True):
        loaded = LeanIMT.load(path, mmap=mmap)
        assert loaded.rule == rule and loaded.root == tree.root
        loaded.insert(bytes(32))
        tree_copy = tree_with(rule, 2, 70)
        assert loaded.root == tree_copy.insert(bytes(32))
    assert LeanIMT.load(path, rule=rule).rule == rule
    for other in RULES:
        if other != rule:
            with pytest.raises(RuleMismatchError, match="saved tree"):
                LeanIMT.load(path, rule=other)


def rewrite_save_header(path, version=None, rule=None):
    """Rewrite a saved file's header as version 1 (the rule block taken out)
    or with another rule number, keeping its header CRC valid (so only the
    meaning of the fields is tested); returns the old (version, rule)."""
    formats = storage.formats
    data = bytearray(path.read_bytes())
    head = formats.SAVE_HEAD
    fields = list(head.unpack_from(data))
    (old_rule,) = formats.SAVE_RULE.unpack_from(data, head.size)
    old = (fields[1], old_rule)
    if rule is not None:
        formats.SAVE_RULE.pack_into(data, head.size, rule)
    if version == 1:
        fields[1] = 1
        del data[head.size:head.size + formats.SAVE_RULE.size]
    head.pack_into(data, 0, *fields)
    crc_at = head.size + (formats.SAVE_RULE.size if fields[1] == 2 else 0) + \
        fields[4] * formats.SAVE_LEVEL.size
    struct.pack_into("<I", data, crc_at, zlib.crc32(bytes(data[:crc_at])))
    path.write_bytes(bytes(data))
    return old


def test_saved_files_of_version_1_are_rotortree_015(tmp_path):
    tree = tree_with("rotortree-0.15", 4, 70)
    path = tmp_path / "tree.rt"
    tree.save(path)
    assert rewrite_save_header(path, version=1) == (2, 0)
    loaded = LeanIMT.load(path)
    assert loaded.rule == "rotortree-0.15" and loaded.root == tree.root


def test_saved_file_rule_is_checked(tmp_path):
    tree = tree_with("leanimt", 4, 20)
    path = tmp_path / "tree.rt"
    tree.save(path)
    assert rewrite_save_header(path, rule=9) == (2, 1)
    with pytest.raises(rotortree.CorruptionError, match="rule"):
        LeanIMT.load(path)


def test_saved_file_rule_is_checked_against_the_arity(tmp_path):
    tree = tree_with("leanimt", 4, 20)
    path = tmp_path / "tree.rt"
    tree.save(path)
    rewrite_save_header(path, rule=2)  # rfc6962 at arity 4
    with pytest.raises(rotortree.CorruptionError, match="rule"):
        LeanIMT.load(path)


@pytest.mark.parametrize("rule", ["leanimt", "rfc6962"])
def test_durable_trees_record_the_rule(tmp_path, rule):
    path = tmp_path / "durable"
    leaves = b"".join(vector_leaf(i) for i in range(300))
    with rotortree.RotorTree.open(path, 2, create=True, rule=rule) as tree:
        assert tree.rule == rule
        tree.insert_many(leaves[:32 * 200])
        tree.checkpoint()
        tree.insert_many(leaves[32 * 200:])   # replayed from the WAL
        root = tree.root
    assert root == rotortree.compute_root(leaves, 2, rule=rule)
    with rotortree.RotorTree.open(path) as tree:
        assert tree.rule == rule and tree.root == root
        assert tree.generate_proof(7).rule == rule
    with rotortree.RotorTree.open(path, rule=rule) as tree:
        assert tree.root == root
    other = "rotortree-0.15"
    with pytest.raises(RuleMismatchError, match="durable tree"):
        rotortree.RotorTree.open(path, rule=other)
    with pytest.raises(RuleMismatchError):
        rotortree.RotorTree.open(path, create=True, rule=other)
    # A refused open changes nothing.
    with rotortree.RotorTree.open(path, read_only=True) as tree:
        assert tree.rule == rule and tree.root == root


def test_durable_rule_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="arity 2"):
        rotortree.RotorTree.open(tmp_path / "a", 4, create=True, rule="rfc6962")
    with pytest.raises(InvalidArgumentError, match="arity 2"):
        rotortree.RotorTree.open(tmp_path / "b", create=True, rule="rfc6962")  # default arity 4
    with pytest.raises(InvalidArgumentError, match="unknown rule"):
        rotortree.RotorTree.open(tmp_path / "c", 2, create=True, rule="sha")
    assert not any(os.path.exists(tmp_path / n) for n in "abc")


def test_meta_of_version_1_is_rotortree_015(tmp_path):
    meta = storage.Meta(4, 32, rule="leanimt")
    encoded = meta.encode()
    assert storage.Meta.decode(encoded, "m").rule == "leanimt"
    head = storage.formats._META_HEAD
    fields = list(head.unpack_from(encoded))
    assert fields[1] == storage.formats.META_VERSION == 2
    fields[1] = 1
    body = head.pack(*fields) + encoded[head.size + storage.formats._META_RULE.size:-4]
    old = body + struct.pack("<I", zlib.crc32(body))
    assert storage.Meta.decode(old, "m").rule == "rotortree-0.15"
    bad_rule = bytearray(encoded)
    bad_rule[head.size] = 9
    body = bytes(bad_rule[:-4])
    with pytest.raises(rotortree.CorruptionError, match="rule"):
        storage.Meta.decode(body + struct.pack("<I", zlib.crc32(body)), "m")


def test_reprs_name_the_rule():
    tree = LeanIMT(2, rule="leanimt")
    assert "rule='leanimt'" in repr(tree) and "rule='leanimt'" in repr(tree.snapshot())
