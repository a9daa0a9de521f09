"""Single operations from Python (issue 15): proofs kept encoded and decoded
on first access, the one-call proof in C, verification read from the
encoding, the list fast path of generate_proofs, and single inserts."""

from __future__ import annotations

import copy
import pickle
import random
import threading
from array import array

import numpy as np
import pytest

import rotortree
from rotortree._native import ffi, lib
from rotortree.errors import (ArgumentTypeError, InvalidProofError, NodeIndexError,
                              RotorTreeError)
from rotortree.proofs import InclusionProof, ProofLevel

FIELDS = ("root", "leaf", "leaf_index", "tree_size", "arity", "levels")


def leaves(count: int, seed: int = 15) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(32 * count))


def tree_of(arity: int, size: int) -> rotortree.LeanIMT:
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(leaves(size))
    return tree


def from_fields(proof: InclusionProof) -> InclusionProof:
    """The same proof built through the constructor (never kept encoded)."""
    levels = tuple(ProofLevel(level.position, tuple(level.siblings)) for level in proof.levels)
    return InclusionProof(proof.root, proof.leaf, proof.leaf_index, proof.tree_size,
                          proof.arity, levels, proof.rule)


def slot_is_set(obj: object, name: str) -> bool:
    try:
        object.__getattribute__(obj, name)
    except AttributeError:
        return False
    return True


# -- proofs kept encoded ---------------------------------------------------------


@pytest.mark.parametrize("make", ["generate_proof", "from_bytes", "batch item"])
def test_a_proof_made_from_bytes_decodes_its_fields_on_first_access(make):
    tree = tree_of(4, 1000)
    snap = tree.snapshot()
    if make == "generate_proof":
        proof = snap.generate_proof(777)
    elif make == "from_bytes":
        proof = InclusionProof.from_bytes(bytearray(snap.generate_proof(777).to_bytes()))
    else:
        proof = snap.generate_proofs([3, 777])[1]
    # Nothing is decoded until a field is read; the encoding is plain bytes
    # of the proof's own length (not a view of a reused buffer)...
    assert not any(slot_is_set(proof, name) for name in FIELDS)
    encoded = object.__getattribute__(proof, "_encoded")
    assert type(encoded) is bytes and encoded == proof.to_bytes()
    assert proof.verify() and proof.verify_against(snap.root, 1000)
    assert proof.level_count == snap.depth
    assert not any(slot_is_set(proof, name) for name in FIELDS)
    # ...then every field is, and the proof is the one built from its fields.
    assert proof.leaf_index == 777
    assert all(slot_is_set(proof, name) for name in FIELDS)
    built = from_fields(proof)
    assert proof == built and built == proof and hash(proof) == hash(built)
    assert repr(proof) == repr(built)
    assert proof.to_bytes() == built.to_bytes()
    assert type(proof.root) is bytes and type(proof.levels) is tuple
    assert proof.leaf == tree.get_node(0, 777) and proof.root == snap.root


def test_encoded_proofs_compare_hash_copy_and_pickle_before_any_access():
    snap = tree_of(3, 500).snapshot()
    first, again, other = (snap.generate_proof(i) for i in (10, 10, 11))
    assert first == again and hash(first) == hash(again) and first != other
    for proof in (snap.generate_proof(10), InclusionProof.from_bytes(first.to_bytes())):
        for clone in (pickle.loads(pickle.dumps(proof)), copy.copy(proof),
                      copy.deepcopy(proof)):
            assert clone == first and clone.verify() and clone.to_bytes() == first.to_bytes()
    with pytest.raises(AttributeError):
        snap.generate_proof(1).no_such_field  # noqa: B018
    with pytest.raises(AttributeError):
        setattr(snap.generate_proof(1), "root", None)


def test_from_bytes_still_checks_the_whole_structure_up_front():
    data = tree_of(4, 300).snapshot().generate_proof(299).to_bytes()
    for bad in (data[:-1], data + b"\0", data[:89], data[:88] + b"\x00\x05"):
        with pytest.raises(InvalidProofError):
            InclusionProof.from_bytes(bad)
    assert InclusionProof.from_bytes(memoryview(data)).to_bytes() == data


def mutations(data: bytes, rng: random.Random, count: int):
    """Single-byte changes anywhere (header, root, leaf, positions, counts,
    siblings) and header fields set to edge values."""
    for _ in range(count):
        at = rng.randrange(len(data))
        yield data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
    for offset, width in ((8, 8), (16, 8)):  # leaf_index, tree_size
        for value in (0, 1, 2 ** 64 - 1, int.from_bytes(data[offset:offset + width], "little") + 1):
            yield data[:offset] + value.to_bytes(width, "little") + data[offset + width:]


@pytest.mark.parametrize("arity", [2, 3, 4, 7, 16])
def test_verification_read_from_the_encoding_agrees_with_the_fields(arity):
    rng = random.Random(arity)
    size = arity ** 3 + 5
    snap = tree_of(arity, size).snapshot()
    checked = 0
    for index in (0, size // 2, size - 1, size - 2):
        data = snap.generate_proof(index).to_bytes()
        for changed in mutations(data, rng, 60):
            try:
                encoded = InclusionProof.from_bytes(changed)
            except InvalidProofError:
                continue
            built = from_fields(InclusionProof.from_bytes(changed))
            assert encoded.verify() == built.verify()
            for root, trusted_size in ((snap.root, size), (encoded.root, encoded.tree_size),
                                       (built.root, size - 1)):
                assert (encoded.verify_against(root, trusted_size)
                        == built.verify_against(root, trusted_size))
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("arity", [2, 3, 4, 255])
def test_encoded_verification_takes_the_depth_and_group_sizes_from_the_size_alone(arity):
    # The encoded path checks the depth with one power and each group's
    # size from the path to the last leaf; claimed sizes on either side of
    # every power of the arity must get the answers of the field checks.
    size = arity ** 2 + 1 if arity < 255 else 300
    snap = tree_of(arity, size).snapshot()
    powers = [arity ** k for k in range(0, 66) if arity ** k < 2 ** 64]
    claims = sorted({c for p in powers for c in (p - 1, p, p + 1) if 1 <= c < 2 ** 64}
                    | {size, 2 ** 64 - 1})
    agreed = valid = 0
    for index in (0, 1, size // 2, size - 2, size - 1):
        data = snap.generate_proof(index).to_bytes()
        for claim in claims:
            for count in {data[6], data[6] - 1, data[6] + 1} - {-1, 256}:
                changed = data[:6] + bytes([count]) + data[7:16] + claim.to_bytes(8, "little") + data[24:]
                try:
                    encoded = InclusionProof.from_bytes(changed)
                except InvalidProofError:
                    continue
                built = from_fields(InclusionProof.from_bytes(changed))
                assert encoded.verify() == built.verify(), (index, claim, count)
                assert (encoded.verify_against(snap.root, claim)
                        == built.verify_against(snap.root, claim))
                agreed += 1
                valid += encoded.verify()
    assert agreed > 50 and valid >= 5
    # A lifted (empty) level added above the root of a tree whose size is a
    # power of the arity: every group check passes, only the depth fails.
    power = tree_of(arity, arity ** 2).snapshot()
    data = power.generate_proof(arity + 1).to_bytes()
    taller = data[:6] + bytes([data[6] + 1]) + data[7:] + b"\x00\x00"
    for proof in (InclusionProof.from_bytes(taller), from_fields(InclusionProof.from_bytes(taller))):
        assert not proof.verify() and not proof.verify_against(power.root, arity ** 2)


def test_one_proof_in_one_c_call():
    snap = tree_of(4, 1000).snapshot()
    expected = snap.generate_proofs([123]).proof_bytes(0)
    length = ffi.new("size_t *")
    out = ffi.new("uint8_t[]", 4096)
    assert lib.rt_proof_one(snap._snap, 123, out, 4096, length) == lib.RT_OK
    assert ffi.buffer(out, length[0])[:] == expected
    # Too small: the length is reported and nothing is written.
    small = ffi.new("uint8_t[]", len(expected) - 1)
    assert lib.rt_proof_one(snap._snap, 123, small, len(expected) - 1,
                            length) == lib.RT_ERR_INVALID_ARGUMENT
    assert length[0] == len(expected) and ffi.buffer(small)[:] == bytes(len(expected) - 1)
    assert lib.rt_proof_one(snap._snap, 1000, out, 4096, length) == lib.RT_ERR_INDEX
    assert lib.rt_proof_one(ffi.NULL, 0, out, 4096, length) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_proof_one(snap._snap, 0, out, 4096, ffi.NULL) == lib.RT_ERR_INVALID_ARGUMENT


def test_one_proof_with_its_length_as_the_result():
    snap = tree_of(4, 1000).snapshot()
    expected = snap.generate_proofs([123]).proof_bytes(0)
    out = ffi.new("uint8_t[]", 4096)
    assert lib.rt_proof_one_sized(snap._snap, 123, out, 4096) == len(expected)
    assert ffi.buffer(out, len(expected))[:] == expected
    # Too small: minus the status, and nothing is written.
    small = ffi.new("uint8_t[]", len(expected) - 1)
    assert lib.rt_proof_one_sized(snap._snap, 123, small,
                                  len(expected) - 1) == -lib.RT_ERR_INVALID_ARGUMENT
    assert ffi.buffer(small)[:] == bytes(len(expected) - 1)
    assert lib.rt_proof_one_sized(snap._snap, 1000, out, 4096) == -lib.RT_ERR_INDEX
    assert lib.rt_proof_one_sized(ffi.NULL, 0, out, 4096) == -lib.RT_ERR_INVALID_ARGUMENT


def test_generate_proof_raises_the_c_status_and_keeps_its_scratch(monkeypatch):
    from rotortree import snapshot as snapshot_module

    snap = tree_of(4, 100).snapshot()
    snap.generate_proof(5)  # a scratch buffer is on the free list now
    spare = len(snapshot_module._proof_scratch)
    monkeypatch.setattr(snapshot_module, "_proof_one_sized",
                        lambda *args: -lib.RT_ERR_INDEX)
    with pytest.raises(NodeIndexError):
        snap.generate_proof(5)
    assert len(snapshot_module._proof_scratch) == spare
    monkeypatch.undo()
    assert snap.generate_proof(5).to_bytes() == snap.generate_proofs([5]).proof_bytes(0)


@pytest.mark.parametrize("arity", [2, 5, 255])
def test_generate_proof_is_the_batch_proof_at_every_index(arity):
    size = 300
    snap = tree_of(arity, size).snapshot()
    batch = snap.generate_proofs(range(size))
    for index in range(size):
        assert snap.generate_proof(index).to_bytes() == batch.proof_bytes(index)
    # The longest proof of the shape fits the scratch the snapshot sizes.
    assert max(len(batch.proof_bytes(i)) for i in range(size)) <= snap._proof_max


def test_generate_proof_from_many_threads_and_snapshots_of_other_shapes():
    snaps = [tree_of(arity, size).snapshot() for arity, size in ((2, 700), (40, 2000), (4, 5))]
    expected = {id(s): s.generate_proofs(range(s.size)) for s in snaps}
    errors = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(400):
            snap = rng.choice(snaps)
            index = rng.randrange(snap.size)
            if snap.generate_proof(index).to_bytes() != expected[id(snap)].proof_bytes(index):
                errors.append((seed, index))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_generate_proof_index_rules_are_unchanged():
    snap = tree_of(4, 10).snapshot()
    assert snap.generate_proof(np.uint64(3)).leaf_index == 3
    for bad in (True, 1.0, "3"):
        with pytest.raises(ArgumentTypeError):
            snap.generate_proof(bad)
    for bad in (-1, 10, 2 ** 64):
        with pytest.raises(NodeIndexError):
            snap.generate_proof(bad)


# -- generate_proofs from a list ---------------------------------------------------


def test_generate_proofs_of_a_list_equals_the_array_path():
    snap = tree_of(4, 5000).snapshot()
    rng = random.Random(3)
    indices = [rng.randrange(5000) for _ in range(2000)]
    reference = snap.generate_proofs(np.array(indices, dtype=np.uint64))
    for given in (indices, tuple(indices), iter(indices), (i for i in indices),
                  array("Q", indices)):
        batch = snap.generate_proofs(given)
        assert batch.to_bytes() == reference.to_bytes()
    assert len(snap.generate_proofs([])) == 0


def test_generate_proofs_list_errors_name_the_position():
    snap = tree_of(4, 100).snapshot()

    class Index:
        def __index__(self) -> int:
            return 7

    assert snap.generate_proofs([1, Index(), np.int64(2)])[1].leaf_index == 7
    for bad, position, error in (([1, 2, True], 2, ArgumentTypeError),
                                 ([1, -1], 1, NodeIndexError),
                                 ([0, 2 ** 64], 1, NodeIndexError),
                                 ([5, 1.5], 1, ArgumentTypeError),
                                 ([3, 100], 1, NodeIndexError)):
        with pytest.raises(error, match=f"position {position}"):
            snap.generate_proofs(bad)


def test_find_small_gives_the_next_index_that_is_zero_or_one():
    values = array("Q", [256, 0, 2 ** 64 - 1, 1, 2, 1])
    items = ffi.from_buffer("uint64_t[]", values)
    found, at = [], lib.rt_indices_find_small(items, len(values), 0)
    while at < len(values):
        found.append(at)
        at = lib.rt_indices_find_small(items, len(values), at + 1)
    assert found == [1, 3, 5]
    assert lib.rt_indices_find_small(items, 3, 2) == 3  # none in [2, 3)
    assert lib.rt_indices_find_small(items, 6, 9) == 6  # past the end
    assert lib.rt_indices_find_small(ffi.NULL, 0, 0) == 0


def test_a_list_converts_in_one_pass_and_only_its_zeros_and_ones_are_type_checked():
    from rotortree.snapshot import _SMALL_ITEMS_CHECKED, _plain_indices

    assert list(_plain_indices([256, 512, 3])) == [256, 512, 3]
    assert list(_plain_indices([np.int64(4), 1, 0])) == [4, 1, 0]
    for needs_checks in ([0, False], [True], [7, 1, 5, True], [4, -1], [2 ** 64], [1.0], ["1"]):
        assert _plain_indices(needs_checks) is None
    # Past the items checked one by one, every item's type is looked at.
    many = [0, 1] * _SMALL_ITEMS_CHECKED
    assert list(_plain_indices(many)) == many
    assert _plain_indices(many + [True]) is None


def test_generate_proofs_of_a_list_with_leaf_zero_and_one_and_bools():
    snap = tree_of(4, 600).snapshot()
    reference = snap.generate_proofs(np.array([0, 1, 256, 512, 1], dtype=np.uint64))
    assert snap.generate_proofs([0, 1, 256, 512, 1]).to_bytes() == reference.to_bytes()
    for bad, position in (([False, 5], 0), ([3, 256, True], 2), ([0, np.int64(1), False], 2)):
        with pytest.raises(ArgumentTypeError, match=f"position {position}"):
            snap.generate_proofs(bad)


# -- single inserts ------------------------------------------------------------------


def test_an_insert_nested_inside_an_insert_gets_its_own_root_buffer(monkeypatch):
    # What a signal handler that inserts does: run between the C call that
    # writes the root into the buffer and the read of that buffer.
    from rotortree import tree as tree_module

    outer, inner = rotortree.LeanIMT(4), rotortree.LeanIMT(4)
    real = tree_module._insert_one
    nested_roots = []

    def insert_then_nest(handle, leaf, out):
        status = real(handle, leaf, out)
        if handle == outer._tree:
            nested_roots.append(inner.insert(bytes(32)))
        return status

    monkeypatch.setattr(tree_module, "_insert_one", insert_then_nest)
    data = leaves(50)
    for i in range(50):
        assert outer.insert(data[32 * i: 32 * i + 32]) == rotortree.compute_root(data[: 32 * i + 32])
    assert nested_roots[-1] == inner.root and len(set(nested_roots)) == 50
    # Each root is its own bytes object, not a view of the reused buffer.
    assert all(type(root) is bytes for root in nested_roots)


def test_insert_argument_rules_are_unchanged():
    tree = rotortree.LeanIMT(2)
    first = tree.insert(bytearray(32))
    assert tree.insert(memoryview(bytes(32))) == rotortree.compute_root(bytes(64), 2) != first
    for bad in (b"short", "x" * 32, None, bytes(33)):
        with pytest.raises(RotorTreeError):
            tree.insert(bad)
    assert tree.size == 2


@pytest.mark.parametrize("rule", ["rotortree-0.15", "leanimt"])
@pytest.mark.parametrize("arity", [2, 3, 4, 5, 16])
def test_single_inserts_past_chunk_ends_and_under_snapshots_keep_every_root(arity, rule):
    # A single insert skips the level reservation when each written node's
    # chunk is installed and private: this crosses level 0's chunk ends (a
    # new chunk), the depth growing, odd arities (the one-division level
    # walk), and snapshots taken after every insert for a stretch (chunks
    # shared, so they must still be copied before being written).
    size = 700
    data = leaves(size, seed=arity)
    tree = rotortree.LeanIMT(arity, rule=rule)
    kept = []
    for i in range(size):
        root = tree.insert(data[32 * i: 32 * i + 32])
        assert root == rotortree.compute_root(data[: 32 * i + 32], arity, rule=rule), i
        if i % 41 == 0 or 250 <= i < 270:
            kept.append((tree.snapshot(), root, i + 1))
    for snap, root, count in kept:
        assert (snap.root, snap.size) == (root, count)
        assert snap.get_node(snap.depth, 0) == root
        assert snap.generate_proof(count - 1).verify_against(root, count)


# -- the level-0 prefix hashed ahead by single inserts ---------------------------


def _mixed_operations(tree, rng, arity, rule, steps, accepted, snapshots, tmp_path):
    """Random single inserts (plain and unique), refused unique inserts of
    leaves already in the tree, batches of every size around a group, and
    snapshots; every few steps the root is checked against compute_root of
    the accepted leaves."""
    for step in range(steps):
        action = rng.random()
        if action < 0.6:
            leaf = rng.randbytes(32)
            root = tree.insert(leaf, unique=rng.random() < 0.3)
            accepted.append(leaf)
        elif action < 0.75 and accepted:
            # Refused after its nodes were hashed: the tree and whatever it
            # hashed ahead for the next insert must be as before.
            with pytest.raises(rotortree.DuplicateLeafError):
                tree.insert(rng.choice(accepted), unique=True)
            root = tree.root
        elif action < 0.9:
            batch = [rng.randbytes(32) for _ in range(rng.randrange(1, 2 * arity + 2))]
            root = tree.insert_many(b"".join(batch))
            accepted.extend(batch)
        else:
            snapshots.append((tree.snapshot(), len(accepted)))
            root = tree.root
        if accepted and (step % 9 == 0 or step == steps - 1):
            assert root == rotortree.compute_root(b"".join(accepted), arity, rule=rule), step


@pytest.mark.parametrize("rule", ["rotortree-0.15", "leanimt"])
def test_single_inserts_with_prefixes_hashed_ahead_agree_with_batches(rule, tmp_path):
    # Single inserts hash the next insert's level-0 prefix beside their own
    # chain (paired compressions on AVX2 and AVX-512), and keep it only once
    # published. Every kernel (those without a paired compression hash the
    # same prefixes one by one), 1 and 2 threads, arities 2..40, each tree
    # mixing single and unique inserts, refused ones, batches, snapshots,
    # and a save/load in the middle (a loaded tree has nothing hashed ahead).
    from rotortree import config as rt_config

    for kernel in rt_config.available_kernels():
        for threads in (1, 2):
            rt_config.configure(simd=kernel, num_threads=threads, parallel_threshold=1,
                                par_chunk_size=1)
            for arity in range(2, 41):
                rng = random.Random(f"{kernel}-{threads}-{arity}-{rule}")
                tree = rotortree.LeanIMT(arity, rule=rule, index=True)
                accepted, snapshots = [], []
                steps = 60 + 3 * arity
                _mixed_operations(tree, rng, arity, rule, steps, accepted, snapshots, tmp_path)
                path = tmp_path / f"{kernel}-{threads}-{arity}.rt"
                tree.save(path)
                tree = rotortree.LeanIMT.load(path)
                if not tree.indexed:
                    tree.enable_index()
                _mixed_operations(tree, rng, arity, rule, steps, accepted, snapshots, tmp_path)
                for snap, count in snapshots:
                    assert snap.size == count
                    if count:
                        assert snap.root == rotortree.compute_root(
                            b"".join(accepted[:count]), arity, rule=rule)
