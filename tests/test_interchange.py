"""rfc6962 trees against an independent RFC 9162 implementation (pymerkle),
the RFC 9162 and zk-kit proof forms, and 0x-prefixed hex (issue 16)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
import sys
import warnings

import pytest

import rotortree
from conftest import kernels
from reference import build_levels
from rotortree import InclusionProof, InvalidArgumentError, InvalidProofError, LeanIMT
from rotortree import interchange as ic

pymerkle = pytest.importorskip("pymerkle", reason="pymerkle (the [test] extra) is not installed")

ENTRIES = [b"entry %d" % i for i in range(600)]
LEAF_HASHES = [hashlib.sha256(b"\x00" + e).digest() for e in ENTRIES]


@pytest.fixture(scope="module")
def merkle():
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for entry in ENTRIES:
        tree.append_entry(entry)
    return tree


def pymerkle_root(tree, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tree.get_state(size)


def rfc_tree(size):
    tree = LeanIMT(2, rule="rfc6962")
    tree.insert_many(b"".join(LEAF_HASHES[:size]))
    return tree


@pytest.mark.parametrize("kernel", kernels())
@pytest.mark.parametrize("threads", [1, 2])
def test_roots_equal_pymerkle_for_every_size(merkle, kernel, threads):
    rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=1, par_chunk_size=4)
    grown = LeanIMT(2, rule="rfc6962")
    for size in range(1, len(ENTRIES) + 1):
        root = grown.insert(LEAF_HASHES[size - 1])
        assert root == pymerkle_root(merkle, size), size
    batch = rotortree.compute_root(b"".join(LEAF_HASHES), 2, rule="rfc6962")
    assert batch == pymerkle_root(merkle, len(ENTRIES))


def test_inclusion_paths_equal_pymerkle(merkle):
    rng = random.Random(1)
    for size in list(range(1, 70)) + [127, 128, 129, 599, 600]:
        tree = rfc_tree(size)
        for index in sorted({0, size - 1, rng.randrange(size)}):
            proof = tree.generate_proof(index)
            exported = ic.inclusion_to_rfc9162(proof)
            path = [base64.b64decode(h) for h in exported["audit_path"]]
            theirs = merkle.prove_inclusion(index + 1, size).serialize()  # 1-based
            # pymerkle's path opens with the leaf itself, then the audit path.
            assert [bytes.fromhex(h) for h in theirs["path"]] == [LEAF_HASHES[index]] + path
            assert exported == json.loads(json.dumps(exported))
            back = ic.inclusion_from_rfc9162(exported, leaf=LEAF_HASHES[index], root=tree.root)
            assert back == proof and back.verify_against(tree.root, size, rule="rfc6962")


def test_consistency_paths_verify_by_the_rfc_algorithm(merkle):
    rng = random.Random(2)
    for new_size in list(range(1, 40)) + [64, 65, 600]:
        tree = rfc_tree(new_size)
        for old_size in sorted({1, new_size, rng.randrange(1, new_size + 1)}):
            old_root = pymerkle_root(merkle, old_size)
            new_root = pymerkle_root(merkle, new_size)
            document = ic.consistency_to_rfc9162(tree, old_size)
            assert document["first"] == old_size and document["second"] == new_size
            path = [base64.b64decode(h) for h in document["consistency"]]
            assert ic.verify_rfc9162_consistency(document, old_root, new_root)
            if old_size == new_size:
                assert path == []
                continue
            # pymerkle's consistency proof (its own format) holds between our
            # tree's roots at the two sizes.
            ours_old = rotortree.compute_root(b"".join(LEAF_HASHES[:old_size]), 2,
                                              rule="rfc6962")
            pymerkle.verify_consistency(ours_old, tree.root,
                                        merkle.prove_consistency(old_size, new_size))
            # Any changed hash, a wrong root or a wrong size is refused.
            for at in range(len(path)):
                changed = list(document["consistency"])
                raw = bytearray(path[at])
                raw[0] ^= 1
                changed[at] = base64.b64encode(bytes(raw)).decode()
                assert not ic.verify_rfc9162_consistency({**document, "consistency": changed},
                                                         old_root, new_root)
            flipped = bytes([new_root[0] ^ 1]) + new_root[1:]
            assert not ic.verify_rfc9162_consistency(document, old_root, flipped)
            if old_size + 1 < new_size:
                assert not ic.verify_rfc9162_consistency({**document, "first": old_size + 1},
                                                         old_root, new_root)


def test_rfc9162_section_2_1_5_examples():
    """The RFC's worked example, a tree of 7 leaves d0..d6 with interior
    nodes g = MTH(d0, d1), i = MTH(d4, d5), k = MTH(d0..d3), l = MTH(d4..d6):
    PROOF(3, D[7]) = [c, d, g, l], PROOF(4, D[7]) = [l],
    PROOF(6, D[7]) = [i, j, k], and the audit paths of b, d and d6."""
    tree = rfc_tree(7)
    a, b, c, d, e, f, j = LEAF_HASHES[:7]
    levels = build_levels(LEAF_HASHES[:7], 2, "rfc6962")
    g, h, i = levels[1][0], levels[1][1], levels[1][2]
    k, l = levels[2][0], levels[2][1]
    assert ic.consistency_path(tree, 3) == [c, d, g, l]
    assert ic.consistency_path(tree, 4) == [l]
    assert ic.consistency_path(tree, 6) == [i, j, k]
    for index, path in ((1, [a, h, l]), (3, [c, g, l]), (4, [f, j, k]), (6, [i, k])):
        exported = ic.inclusion_to_rfc9162(tree.generate_proof(index))
        assert [base64.b64decode(x) for x in exported["audit_path"]] == path


def test_rfc9162_consistency_path_order():
    """RFC 9162's own example shape: from 5 to 13 leaves the path is leaf 4,
    leaf 5, MTH(D[6:8]), MTH(D[0:4]), MTH(D[8:13])."""
    tree = rfc_tree(13)
    levels = build_levels(LEAF_HASHES[:13], 2, "rfc6962")
    assert ic.consistency_path(tree, 5) == [LEAF_HASHES[4], LEAF_HASHES[5], levels[1][3],
                                            levels[2][0], levels[3][1]]


def test_rfc9162_errors():
    tree = rfc_tree(10)
    proof = tree.generate_proof(3)
    good = ic.inclusion_to_rfc9162(proof)
    for bad in ({**good, "audit_path": good["audit_path"][:-1]},
                {**good, "audit_path": good["audit_path"] + good["audit_path"][:1]},
                {**good, "audit_path": ["not base64!"] + good["audit_path"][1:]},
                {**good, "audit_path": [base64.b64encode(b"short").decode()]},
                {**good, "leaf_index": 10}, {**good, "tree_size": 0},
                {k: v for k, v in good.items() if k != "audit_path"}, [good]):
        with pytest.raises(InvalidProofError):
            ic.inclusion_from_rfc9162(bad, leaf=proof.leaf, root=proof.root)
    with pytest.raises(InvalidArgumentError):
        ic.inclusion_to_rfc9162(tree_with_rule("leanimt").generate_proof(0))
    with pytest.raises(InvalidArgumentError):
        ic.consistency_path(tree_with_rule("leanimt"), 1)
    with pytest.raises(InvalidArgumentError):
        ic.consistency_path(tree, 11)


def tree_with_rule(rule, size=9):
    tree = LeanIMT(2, rule=rule)
    tree.insert_many(b"".join(LEAF_HASHES[:size]))
    return tree


# -- zk-kit ----------------------------------------------------------------------


def zk_kit_reference(leaves, index):
    """zk-kit's LeanIMT proof as its generateProof builds it, with untagged
    BLAKE3: siblings only where one exists, index from those positions."""
    levels = build_levels(leaves, 2, "leanimt")
    siblings, bits = [], []
    for nodes in levels[:-1]:
        right = index & 1
        sibling = index - 1 if right else index + 1
        if sibling < len(nodes):
            bits.append(right)
            siblings.append(nodes[sibling])
        index >>= 1
    compressed = sum(bit << i for i, bit in enumerate(bits))
    return {"root": "0x" + levels[-1][0].hex(), "index": compressed,
            "siblings": ["0x" + s.hex() for s in siblings]}


def test_zk_kit_proofs_round_trip():
    rng = random.Random(3)
    for size in list(range(1, 40)) + [255, 256, 257]:
        leaves = [rng.randbytes(32) for _ in range(size)]
        tree = LeanIMT(2, rule="leanimt")
        tree.insert_many(b"".join(leaves))
        for index in sorted({0, size - 1, rng.randrange(size)}):
            proof = tree.generate_proof(index)
            exported = ic.inclusion_to_zk_kit(proof)
            want = zk_kit_reference(leaves, index)
            assert exported["root"] == want["root"] == "0x" + tree.root.hex()
            assert exported["leaf"] == "0x" + leaves[index].hex()
            assert exported["index"] == want["index"]
            assert exported["siblings"] == want["siblings"]
            assert ic.verify_zk_kit(exported)
            back = ic.inclusion_from_zk_kit(json.loads(json.dumps(exported)), leaf_index=index,
                                            tree_size=size)
            assert back == proof
            # Decimal strings (JSON of JavaScript bigints) read the same.
            decimal = {**exported, "root": str(int(exported["root"], 16)),
                       "siblings": [str(int(s, 16)) for s in exported["siblings"]]}
            assert ic.verify_zk_kit(decimal)
            if exported["siblings"]:
                wrong = {**exported, "index": exported["index"] ^ 1}
                assert not ic.verify_zk_kit(wrong)
                with pytest.raises(InvalidProofError):
                    ic.inclusion_from_zk_kit(wrong, leaf_index=index, tree_size=size)


def test_zk_kit_errors():
    tree = tree_with_rule("leanimt")
    good = ic.inclusion_to_zk_kit(tree.generate_proof(4))
    for bad in ({**good, "index": -1}, {**good, "index": True}, {**good, "index": 1 << 40},
                {**good, "siblings": "0x00"}, {**good, "root": "0xzz"}, {**good, "leaf": 1 << 256},
                {k: v for k, v in good.items() if k != "leaf"}, None):
        with pytest.raises(InvalidProofError):
            ic.verify_zk_kit(bad)
    for rule, arity in (("rotortree-0.15", 2), ("leanimt", 4)):
        other = LeanIMT(arity, rule=rule)
        other.insert_many(b"".join(LEAF_HASHES[:9]))
        with pytest.raises(InvalidArgumentError):
            ic.inclusion_to_zk_kit(other.generate_proof(0))


# -- 0x hex ------------------------------------------------------------------------


def test_hex_accepts_0x_prefix():
    tree = tree_with_rule("leanimt")
    proof = tree.generate_proof(2)
    d = proof.to_dict()
    prefixed = {**d, "root": "0x" + d["root"], "leaf": "0X" + d["leaf"].upper()}
    assert InclusionProof.from_dict(prefixed) == proof
    for bad in ("0x" + d["root"][:-2], "0x0x" + d["root"], "x" + d["root"]):
        with pytest.raises(InvalidProofError):
            InclusionProof.from_dict({**d, "root": bad})


def test_cli_verify_reads_0x_roots_and_checks_the_rule(tmp_path):
    tree = tree_with_rule("leanimt")
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(tree.generate_proof(2).to_dict()))
    base = [sys.executable, "-m", "rotortree", "verify", str(path), "--size", "9"]
    run = subprocess.run(base + ["--root", "0x" + tree.root.hex()], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "valid" in run.stdout, run.stderr
    run = subprocess.run(base + ["--root", "0x" + tree.root.hex(), "--rule", "rotortree-0.15"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "'leanimt' proof" in run.stderr


def test_cli_root_and_prove_take_a_rule(tmp_path):
    leaves = tmp_path / "leaves.bin"
    leaves.write_bytes(b"".join(LEAF_HASHES[:100]))
    run = subprocess.run([sys.executable, "-m", "rotortree", "root", str(leaves), "--arity", "2",
                          "--rule", "rfc6962", "--quiet"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == rotortree.compute_root(leaves.read_bytes(), 2,
                                                        rule="rfc6962").hex()
    run = subprocess.run([sys.executable, "-m", "rotortree", "root", str(leaves), "--rule",
                          "rfc6962"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--arity 2" in run.stderr
    run = subprocess.run([sys.executable, "-m", "rotortree", "prove", str(leaves), "--arity",
                          "2", "--rule", "leanimt", "--index", "5"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["rule"] == "leanimt"
