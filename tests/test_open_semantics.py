"""What ``RotorTree.open`` opens: the stored tree's own arity and max_depth,
never a new tree at a mistyped path (``create=True`` is needed), never an
unrelated folder; paths as str, bytes or PathLike; and policy objects that
are checked when they are built, not after an insert committed."""

from __future__ import annotations

import errno
import os
import pathlib

import pytest

import rotortree
from rotortree import (
    ArgumentTypeError,
    CheckpointPolicy,
    FlushPolicy,
    InvalidArgumentError,
    NotATreeError,
    RotorTree,
    RotorTreeError,
    StorageMismatchError,
    TreeNotFoundError,
)
from rotortree import storage

LEAVES = b"".join(bytes([i]) * 32 for i in range(1, 21))


def make_tree(path, **kwargs) -> bytes:
    with RotorTree.open(path, create=True, flush_policy=FlushPolicy.manual(),
                        checkpoint_policy=CheckpointPolicy.manual(), **kwargs) as tree:
        tree.insert_many(LEAVES[:32 * 12])
        tree.checkpoint()
        tree.insert_durable(LEAVES[32 * 12:])
        return tree.root


@pytest.mark.parametrize("arity,max_depth", [(16, 32), (2, 10), (7, 5)])
def test_reopen_reads_arity_and_max_depth_from_disk(tmp_path, arity, max_depth):
    root = make_tree(tmp_path / "t", arity=arity, max_depth=max_depth)
    with RotorTree.open(tmp_path / "t") as tree:   # before: arity 4 -> StorageMismatchError
        assert (tree.arity, tree.max_depth, tree.size) == (arity, max_depth, 20)
        assert tree.root == root == rotortree.compute_root(LEAVES, arity)
    # Given explicitly, they must still match.
    with pytest.raises(StorageMismatchError, match=f"arity {arity}"):
        RotorTree.open(tmp_path / "t", arity=arity + 1)
    with pytest.raises(StorageMismatchError, match="max_depth"):
        RotorTree.open(tmp_path / "t", max_depth=max_depth + 1)
    with RotorTree.open(tmp_path / "t", arity, max_depth) as tree:
        assert tree.root == root


def test_a_missing_tree_is_not_created_without_create(tmp_path):
    path = tmp_path / "nullifiers"
    with pytest.raises(TreeNotFoundError, match="create=True") as info:
        RotorTree.open(path)
    error = info.value
    assert isinstance(error, FileNotFoundError) and isinstance(error, RotorTreeError)
    assert error.errno == errno.ENOENT and error.filename == str(path)
    assert not path.exists()   # before: an empty tree was created silently
    path.mkdir()
    with pytest.raises(TreeNotFoundError):
        RotorTree.open(path)
    assert os.listdir(path) == []   # not even a lock file
    with RotorTree.open(path, arity=3, max_depth=9, create=True) as tree:
        assert (tree.arity, tree.max_depth, tree.size) == (3, 9, 0)
        tree.insert_durable(LEAVES[:32])
    with RotorTree.open(path, create=True) as tree:   # an existing tree is opened as it is
        assert (tree.arity, tree.max_depth, tree.size) == (3, 9, 1)


def test_create_defaults(tmp_path):
    with RotorTree.open(tmp_path / "t", create=True) as tree:
        assert (tree.arity, tree.max_depth) == (4, 32)


def test_an_interrupted_creation_counts_as_no_tree(tmp_path):
    """A crash during creation, before the metadata record was renamed into
    place, leaves only the lock, sync record and temporary files."""
    path = tmp_path / "t"
    path.mkdir()
    for name in ("LOCK", storage.META_NAME + ".tmp", storage.SYNC_NAME):
        (path / name).write_bytes(b"x")
    with pytest.raises(TreeNotFoundError):
        RotorTree.open(path)
    with RotorTree.open(path, arity=5, create=True) as tree:
        assert tree.arity == 5 and tree.size == 0


@pytest.mark.parametrize("create", [False, True])
def test_a_non_empty_folder_that_is_not_a_tree_is_refused(tmp_path, create):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    (folder / "notes").mkdir()
    with pytest.raises(NotATreeError, match="cat.jpg") as info:
        RotorTree.open(folder, create=create)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, RotorTreeError)
    assert sorted(os.listdir(folder)) == ["cat.jpg", "notes"]   # nothing added


def test_tree_files_without_metadata_are_still_reported_as_damage(tmp_path):
    path = tmp_path / "t"
    make_tree(path)
    os.unlink(path / storage.META_NAME)
    for create in (False, True):
        with pytest.raises(rotortree.CorruptionError, match="missing"):
            RotorTree.open(path, create=create)


def test_a_sync_record_of_acknowledged_entries_is_not_a_creation_leftover(tmp_path):
    # Everything but the sync record gone: it says entries were acknowledged,
    # so this is a lost tree, not an interrupted creation; create=True must
    # not silently start an empty tree over it (nor reset the record).
    path = tmp_path / "t"
    make_tree(path)
    for name in os.listdir(path):
        if name not in (storage.SYNC_NAME, "LOCK"):
            os.unlink(path / name)
    record = (path / storage.SYNC_NAME).read_bytes()
    for kwargs in ({}, {"create": True}, {"read_only": True}):
        with pytest.raises(rotortree.CorruptionError, match="acknowledged"):
            RotorTree.open(path, **kwargs)
    assert (path / storage.SYNC_NAME).read_bytes() == record


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlib"])
def test_path_types(tmp_path, kind):
    path = str(tmp_path / "t")
    given = {"str": path, "bytes": os.fsencode(path), "pathlib": pathlib.Path(path)}[kind]
    with RotorTree.open(given, create=True) as tree:   # before: bytes -> bare TypeError
        assert tree.path == path
        tree.insert_durable(LEAVES[:64])
    with RotorTree.open(given) as tree:
        assert tree.size == 2


@pytest.mark.parametrize("bad", [None, 12, 3.5, ["t"], object()])
def test_bad_path_types_create_nothing(tmp_path, bad):
    before = os.listdir(tmp_path)
    with pytest.raises(ArgumentTypeError, match="path must be"):
        RotorTree.open(bad, create=True)
    assert os.listdir(tmp_path) == before


def test_bytes_path_error_before_creating_anything(tmp_path):
    """Before, a bytes path made the directory and then failed joining names."""
    path = tmp_path / "b"
    with pytest.raises(TreeNotFoundError):
        RotorTree.open(os.fsencode(str(path)))
    assert not path.exists()


@pytest.mark.parametrize("name,value", [("create", "yes"), ("create", 1), ("create", None),
                                        ("read_only", "no"), ("verify_checkpoint", 0)])
def test_flags_must_be_bools(tmp_path, name, value):
    with pytest.raises(ArgumentTypeError, match=f"{name} must be a bool"):
        RotorTree.open(tmp_path / "t", **{name: value})
    assert not (tmp_path / "t").exists()


def test_flags_and_policies_are_keyword_only(tmp_path):
    with pytest.raises(TypeError):
        RotorTree.open(tmp_path / "t", 4, 32, True)   # create positionally
    with pytest.raises(TypeError):
        RotorTree.open(tmp_path / "t", 4, 32, FlushPolicy.manual())
    assert not (tmp_path / "t").exists()


def test_create_and_read_only_exclude_each_other(tmp_path):
    with pytest.raises(InvalidArgumentError, match="read_only"):
        RotorTree.open(tmp_path / "t", create=True, read_only=True)
    assert not (tmp_path / "t").exists()


# ---------------------------------------------------------------------------
# Policies are checked when built


@pytest.mark.parametrize("build,error,fragment", [
    (lambda: CheckpointPolicy(entries="10"), ArgumentTypeError, "entries must be an int"),
    (lambda: CheckpointPolicy(entries=0), InvalidArgumentError, "entries must be >= 1"),
    (lambda: CheckpointPolicy(entries=-3), InvalidArgumentError, "entries"),
    (lambda: CheckpointPolicy(entries=True), ArgumentTypeError, "entries"),
    (lambda: CheckpointPolicy(entries=2.0), ArgumentTypeError, "entries"),
    (lambda: CheckpointPolicy(nbytes="1"), ArgumentTypeError, "nbytes"),
    (lambda: CheckpointPolicy(nbytes=0), InvalidArgumentError, "nbytes"),
    (lambda: CheckpointPolicy(at_close="yes"), ArgumentTypeError, "at_close"),
    (lambda: CheckpointPolicy(None, None, 1), ArgumentTypeError, "at_close"),
    (lambda: FlushPolicy("0.01"), ArgumentTypeError, "interval"),
    (lambda: FlushPolicy(0), InvalidArgumentError, "interval"),
    (lambda: FlushPolicy(-1.0), InvalidArgumentError, "interval"),
    (lambda: FlushPolicy(float("nan")), InvalidArgumentError, "interval"),
    (lambda: FlushPolicy(True), ArgumentTypeError, "interval"),
])
def test_policies_are_validated_at_construction(build, error, fragment):
    with pytest.raises(error, match=fragment):
        build()


def test_a_bad_policy_never_reaches_an_insert(tmp_path):
    """Before, CheckpointPolicy(entries="10") was accepted; the first insert
    committed its entry and then raised TypeError comparing "10" with an int."""
    with pytest.raises(ArgumentTypeError):
        policy = CheckpointPolicy(entries="10")
        RotorTree.open(tmp_path / "t", create=True, checkpoint_policy=policy)
    assert not (tmp_path / "t").exists()


def test_valid_policies_still_build_and_combine():
    policy = CheckpointPolicy(entries=5) | CheckpointPolicy.memory_threshold(1 << 20)
    assert policy.entries == 5 and policy.nbytes == 1 << 20 and policy.automatic
    assert CheckpointPolicy() == CheckpointPolicy.manual()
    assert FlushPolicy(1) == FlushPolicy.interval(1.0) and FlushPolicy(None).seconds is None
