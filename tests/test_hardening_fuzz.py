"""Hypothesis-driven fuzzing of proof decoding and verification (C and pure
Python, differentially) and of durable-tree recovery from corrupted files.

Properties:

* No input crashes or hangs either verifier; every decoder error is the
  documented class (InvalidProofError; ArgumentTypeError for non-bytes).
* The C verifier (``lib.rt_verify_inclusion``, and batches through
  ``ProofBatch.from_bytes`` / ``first_invalid``) and the pure-Python one
  (``InclusionProof.from_bytes(...).verify()``) give the same verdict.
* Nothing verifies falsely against what a verifier trusts: a mutated
  inclusion proof accepted by ``verify_against(root, size)`` (C and Python
  agreeing) for the root and size of the tree it came from states a true
  fact of that tree. Self-consistency (``verify()``) alone proves nothing
  (a root does not fix its tree's size; ``tests/test_forgery.py`` builds
  such proofs), so it is only compared between C and Python here. A mutated
  consistency proof that verifies links two genuine roots (old prefix, new
  tree) or states old_root == new_root for equal sizes.
* Decodable bytes re-encode to the same bytes.
* Opening a durable tree whose meta, level or WAL files were damaged at
  random either recovers a prefix of the written history (its root is the
  reference root for its size, its leaves are the history's first leaves)
  or raises CorruptionError; it never opens with a wrong root and the
  recovered tree keeps working.

``ROTORTREE_FUZZ_EXAMPLES`` sets the examples per property (default 150);
a long run is one command::

    ROTORTREE_FUZZ_EXAMPLES=100000 python -m pytest tests/test_hardening_fuzz.py
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import blake3
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

import rotortree
from rotortree import (
    ArgumentTypeError,
    CheckpointPolicy,
    ConsistencyProof,
    CorruptionError,
    FlushPolicy,
    InclusionProof,
    InvalidProofError,
    LeanIMT,
    ProofBatch,
    RotorTree,
)
from rotortree._native import ffi, lib
from reference import build_levels, reencoded_proof

EXAMPLES = int(os.environ.get("ROTORTREE_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
# File-system examples are ~10x slower: a fraction of the budget.
FS_FUZZ = settings(max_examples=max(20, EXAMPLES // 3), deadline=None,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.function_scoped_fixture])

ARITIES = (2, 3, 4, 5, 16, 255)
SIZES = (1, 2, 3, 4, 5, 7, 16, 17, 64, 100, 257, 1000)


def leaf(seed: int, i: int) -> bytes:
    return blake3.blake3(seed.to_bytes(4, "little") + i.to_bytes(8, "little")).digest()


@lru_cache(maxsize=None)
def tree_of(arity: int, size: int):
    """(leaves, LeanIMT snapshot) of a deterministic tree."""
    leaves = [leaf(arity * 7919 + size, i) for i in range(size)]
    tree = LeanIMT(arity)
    tree.insert_many(leaves)
    return leaves, tree.snapshot()


def c_verify(data: bytes, trusted_root: Optional[bytes] = None, trusted_size: int = 0) -> bool:
    return lib.rt_verify_inclusion(ffi.from_buffer("uint8_t[]", data) if data else ffi.new(
        "uint8_t[1]"), len(data), ffi.NULL if trusted_root is None else trusted_root,
        trusted_size) == lib.RT_OK


def py_decode_verify(data: bytes) -> Tuple[bool, object]:
    try:
        proof = InclusionProof.from_bytes(data)
    except InvalidProofError:
        return False, None
    assert proof.to_bytes() == reencoded_proof(data), "a decodable proof must re-encode to its bytes"
    return proof.verify(), proof


# -- mutations ------------------------------------------------------------------

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=70)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 40)),
    st.tuples(st.just("u64"), st.sampled_from((8, 16)),
              st.one_of(st.integers(0, 2000), st.integers(0, 2**64 - 1))),
    st.tuples(st.just("u8"), st.sampled_from((4, 5, 6, 7)), st.integers(0, 255)),
)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "flip" and buf:
            buf[op[1] % len(buf)] ^= 1 << op[2]
        elif kind == "set" and buf:
            buf[op[1] % len(buf)] = op[2]
        elif kind == "truncate":
            del buf[op[1] % (len(buf) + 1):]
        elif kind == "extend":
            buf += op[1]
        elif kind == "insert":
            at = op[1] % (len(buf) + 1)
            buf[at:at] = op[2]
        elif kind == "delete" and buf:
            at = op[1] % len(buf)
            del buf[at:at + op[2]]
        elif kind == "u64" and len(buf) >= op[1] + 8:
            buf[op[1]:op[1] + 8] = struct.pack("<Q", op[2])
        elif kind == "u8" and len(buf) > op[1]:
            buf[op[1]] = op[2]
    return bytes(buf)


shape = st.tuples(st.sampled_from(ARITIES), st.sampled_from(SIZES), st.integers(0, 10**6))


# -- inclusion proofs -------------------------------------------------------------


@FUZZ
@given(shape=shape, ops=st.lists(mutation, min_size=1, max_size=4))
@example(shape=(2, 1, 0), ops=[("u8", 4, 1)])  # version 1 re-encodes as version 2
def test_mutated_inclusion_proofs(shape, ops):
    arity, size, pick = shape
    leaves, snap = tree_of(arity, size)
    index = pick % size
    genuine = snap.generate_proof(index).to_bytes()
    assert c_verify(genuine) and py_decode_verify(genuine)[0]
    data = mutate(genuine, ops)
    c_ok = c_verify(data)
    py_ok, proof = py_decode_verify(data)
    assert c_ok == py_ok, f"C says {c_ok}, Python says {py_ok} for {data.hex()}"
    event("verifies" if py_ok else "decodes, fails" if proof is not None else "rejected")
    c_trusted = c_verify(data, snap.root, size)
    py_trusted = proof is not None and proof.verify_against(snap.root, size)
    assert c_trusted == py_trusted, f"trusted: C says {c_trusted}, Python {py_trusted}"
    if py_trusted:
        assert proof.tree_size == size and leaves[proof.leaf_index] == proof.leaf, (
            f"false proof verified: index {proof.leaf_index} root {proof.root.hex()}")


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda rest: b"RTIP\x01" + rest, st.binary(max_size=600)),
    st.builds(lambda a, n, rest: b"RTIP\x01" + bytes((a, n, 0)) + rest,
              st.integers(0, 255), st.integers(0, 70), st.binary(max_size=2000))))
def test_random_bytes_as_inclusion_proofs(data):
    c_ok = c_verify(data)
    py_ok, proof = py_decode_verify(data)
    assert c_ok == py_ok
    if py_ok:  # only a one-leaf "tree" whose root is its leaf can do this
        assert proof.tree_size >= 1 and proof.root == proof.leaf and not proof.levels


@FUZZ
@given(shapes=st.lists(shape, min_size=1, max_size=5),
       ops=st.lists(st.tuples(st.integers(0, 4), st.lists(mutation, max_size=3)), max_size=4),
       header_ops=st.lists(mutation, max_size=2))
def test_mutated_proof_batches(shapes, ops, header_ops):
    proofs = []
    for arity, size, pick in shapes:
        _, snap = tree_of(arity, size)
        proofs.append(snap.generate_proof(pick % size).to_bytes())
    # The verifier trusts the head of the first proof's tree.
    trusted_leaves, trusted = tree_of(*shapes[0][:2])
    for position, mutations in ops:
        if position < len(proofs):
            proofs[position] = mutate(proofs[position], mutations)
    header = struct.pack("<4sB3xQ", b"RTPB", 1, len(proofs))
    data = mutate(header, header_ops) + b"".join(proofs)
    try:
        batch = ProofBatch.from_bytes(data)
    except InvalidProofError:
        return
    verdicts = [py_decode_verify(batch.proof_bytes(i))[0] for i in range(len(batch))]
    c_verdicts = [c_verify(batch.proof_bytes(i)) for i in range(len(batch))]
    assert verdicts == c_verdicts
    expected_first = next((i for i, ok in enumerate(verdicts) if not ok), None)
    assert batch.first_invalid() == expected_first
    assert batch.verify() == (expected_first is None)
    def trusted_verdict(data: bytes) -> bool:
        try:
            return InclusionProof.from_bytes(data).verify_against(trusted.root, trusted.size)
        except InvalidProofError:  # the batch frames it, its header is not a proof's
            return False

    trusted_verdicts = [trusted_verdict(batch.proof_bytes(i)) for i in range(len(batch))]
    assert trusted_verdicts == [c_verify(batch.proof_bytes(i), trusted.root, trusted.size)
                                for i in range(len(batch))]
    assert batch.first_invalid_against(trusted.root, trusted.size) == next(
        (i for i, ok in enumerate(trusted_verdicts) if not ok), None)
    for i, ok in enumerate(trusted_verdicts):
        if ok:
            p = batch[i]
            assert p.tree_size == trusted.size and trusted_leaves[p.leaf_index] == p.leaf
    assert ProofBatch.from_bytes(batch.to_bytes()).to_bytes() == batch.to_bytes()


@FUZZ
@given(data=st.one_of(st.binary(max_size=400),
                      st.builds(lambda n, rest: b"RTPB\x01\0\0\0" + struct.pack("<Q", n) + rest,
                                st.integers(0, 2**64 - 1), st.binary(max_size=800))),
       as_type=st.sampled_from(("bytes", "bytearray", "memoryview")))
def test_random_bytes_as_proof_batches(data, as_type):
    wrapped = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[as_type](data)
    try:
        batch = ProofBatch.from_bytes(wrapped)
    except InvalidProofError:
        return
    first = batch.first_invalid()
    verdicts = [py_decode_verify(batch.proof_bytes(i))[0] for i in range(len(batch))]
    assert first == next((i for i, ok in enumerate(verdicts) if not ok), None)


@FUZZ
@given(value=st.one_of(st.none(), st.integers(), st.text(max_size=20), st.floats(),
                       st.lists(st.integers(0, 255), max_size=10)))
def test_non_bytes_never_decode(value):
    for decode in (InclusionProof.from_bytes, ConsistencyProof.from_bytes, ProofBatch.from_bytes):
        with pytest.raises((ArgumentTypeError, InvalidProofError)):
            decode(value)


# -- consistency proofs -----------------------------------------------------------


def genuine_pairs(arity: int, size: int) -> Set[Tuple[bytes, bytes]]:
    leaves, snap = tree_of(arity, size)
    roots = [rotortree.compute_root(b"".join(leaves[:n]), arity) for n in range(1, size + 1)]
    return {(roots[a], roots[b]) for a in range(size) for b in range(a, size)}


_pairs_cache: Dict[Tuple[int, int], Set[Tuple[bytes, bytes]]] = {}


@FUZZ
@given(shape=shape, old_pick=st.integers(0, 10**6), ops=st.lists(mutation, min_size=1,
                                                                 max_size=4))
@example(shape=(2, 1, 0), old_pick=0, ops=[("u8", 4, 1)])  # version 1: found by CI
def test_mutated_consistency_proofs(shape, old_pick, ops):
    arity, size, _ = shape
    assume(size <= 257)
    leaves, snap = tree_of(arity, size)
    old_size = 1 + old_pick % size
    old_root = rotortree.compute_root(b"".join(leaves[:old_size]), arity)
    genuine = snap.generate_consistency_proof(old_size, old_root).to_bytes()
    data = mutate(genuine, ops)
    try:
        proof = ConsistencyProof.from_bytes(data)
    except InvalidProofError:
        return
    assert proof.to_bytes() == reencoded_proof(data)
    if not proof.verify():
        assert not proof.verify_against(proof.old_root, proof.old_size,
                                        proof.new_root, proof.new_size)
        return
    if proof.old_size == proof.new_size:
        assert proof.old_root == proof.new_root
        return
    pairs = _pairs_cache.setdefault((arity, size), genuine_pairs(arity, size))
    assert (proof.old_root, proof.new_root) in pairs, "false consistency proof verified"


# -- durable recovery from damaged files --------------------------------------------

ARITY = 3


def _entry(seed: int, count: int) -> List[bytes]:
    return [leaf(10_000 + seed, i) for i in range(count)]


@pytest.fixture(scope="module")
def durable_template():
    """A durable tree with two checkpoints, WAL segments after them, every
    entry flushed, and then a few entries that were written but never
    fsynced (copied while the tree is open: a crash image). Returns
    (directory, history leaves, roots by size)."""
    base = Path(tempfile.mkdtemp(prefix="rt-fuzz-"))
    live = base / "live"
    history: List[bytes] = []
    tree = RotorTree.open(live, arity=ARITY, max_depth=20, create=True,
                          flush_policy=FlushPolicy.manual(),
                          checkpoint_policy=CheckpointPolicy.manual(), mmap_levels=1)
    try:
        for n in range(36):
            batch = _entry(n, 1 + (n * 7) % 23)
            if len(batch) == 1:
                tree.insert(batch[0])
            else:
                tree.insert_many(b"".join(batch))
            history.extend(batch)
            if n in (11, 23):
                tree.checkpoint()
            if n < 32:
                tree.flush()
        image = base / "image"
        shutil.copytree(live, image, ignore=shutil.ignore_patterns("LOCK"))
    finally:
        tree.close()
    levels = build_levels(history, ARITY)
    roots = {0: None}
    for size in range(1, len(history) + 1):
        roots[size] = rotortree.compute_root(b"".join(history[:size]), ARITY)
    assert roots[len(history)] == levels[-1][0]
    yield image, history, roots
    shutil.rmtree(base, ignore_errors=True)


damage = st.tuples(
    st.tuples(st.sampled_from(("wal", "wal", "meta", "level", "any")),
              st.integers(0, 1000)),             # which file (class, index)
    st.sampled_from(("flip", "zero", "truncate", "append", "delete", "garbage")),
    st.integers(0, 1 << 30),                    # where
    st.integers(1, 64),                         # how much
    st.binary(min_size=1, max_size=64),
)


@FS_FUZZ
@given(damages=st.lists(damage, min_size=1, max_size=3), verify=st.booleans(),
       mmap_levels=st.sampled_from((0, 1, 3)))
def test_recovery_from_damaged_files(durable_template, tmp_path_factory, damages, verify,
                                     mmap_levels):
    image, history, roots = durable_template
    work = tmp_path_factory.mktemp("damaged")
    target = work / "tree"
    shutil.copytree(image, target)
    touched_levels = False
    for (family, which), kind, where, amount, blob in damages:
        names = sorted(p.name for p in target.iterdir())
        prefix = {"wal": "wal-", "meta": "meta", "level": "level-", "any": ""}[family]
        names = [name for name in names if name.startswith(prefix)] or names
        if not names:
            break
        name = names[which % len(names)]
        path = target / name
        touched_levels |= name.startswith("level-")
        size = path.stat().st_size
        if kind == "delete":
            path.unlink()
            continue
        with open(path, "r+b") as handle:
            if kind == "truncate":
                handle.truncate(where % (size + 1))
            elif kind == "append":
                handle.seek(0, os.SEEK_END)
                handle.write(blob)
            elif size:
                at = where % size
                handle.seek(at)
                current = handle.read(amount)
                handle.seek(at)
                if kind == "flip":
                    handle.write(bytes(b ^ (1 << (where % 8)) for b in current[:1]) + current[1:])
                elif kind == "zero":
                    handle.write(bytes(len(current)))
                else:
                    handle.write((blob * (amount // len(blob) + 1))[:len(current)])
    if not verify and touched_levels:
        # verify_checkpoint=False trusts the level files by contract.
        verify = True
    try:
        tree = RotorTree.open(target, arity=None, max_depth=None, verify_checkpoint=verify,
                              flush_policy=FlushPolicy.manual(),
                              checkpoint_policy=CheckpointPolicy.manual(),
                              mmap_levels=mmap_levels)
    except CorruptionError as error:
        assert str(error), "CorruptionError without a message"
        text = re.sub(r"\S*/\S*", "<path>", str(error))
        event(f"CorruptionError: {' '.join(text.split()[:6])}")
        return
    try:
        size = tree.size
        event("opened with everything" if size == len(history) else "opened with a prefix")
        assert size in roots, f"recovered size {size} is not an entry boundary"
        assert tree.root == roots[size], f"opened with a wrong root at size {size}"
        snap = tree.snapshot()
        stored = [snap.get_node(0, i) for i in range(size)]
        assert stored == history[:size], "recovered leaves differ from the history"
        if size:
            assert rotortree.compute_root(b"".join(stored), tree.arity) == tree.root
            assert snap.generate_proofs(range(0, size, 5)).verify()
        # The recovered tree keeps working, and what it then writes survives.
        extra = leaf(77, size)
        tree.insert_durable(extra)
        new_root = tree.root
    finally:
        tree.close()
    again = RotorTree.open(target, arity=None, max_depth=None,
                           flush_policy=FlushPolicy.manual())
    try:
        assert again.size == size + 1 and again.root == new_root
    finally:
        again.close()
