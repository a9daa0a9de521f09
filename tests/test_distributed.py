"""rotortree.distributed: builds on Dask LocalClusters (2 worker processes,
and threads), executors and the local pool give compute_root's root and an
in-memory tree's proofs, around every segment boundary; dead workers and
bad sources give clear errors and never a wrong root or a half-written tree."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal

import pytest

import rotortree
from rotortree import (
    CorruptionError,
    DistributedBuildError,
    InvalidArgumentError,
    InvalidLeafError,
    LeafSourceError,
    RotorTreeError,
    TreeNotFoundError,
)

distributed = pytest.importorskip("distributed", reason="needs dask.distributed "
                                  "(pip install 'rotortree[distributed]')")
np = pytest.importorskip("numpy")
da = pytest.importorskip("dask.array")

from rotortree.distributed import CounterLeaves, ShardedTree, build  # noqa: E402

# Small powers of each arity, so a few hundred leaves cross many segment
# boundaries and the top tree has levels of its own.
SEGMENT = {2: 8, 4: 16, 16: 16}


def sizes_around_boundaries(arity: int):
    s = SEGMENT[arity]
    sizes = {1, 2, s - 1, s, s + 1, 2 * s - 1, 2 * s, 2 * s + 1,
             arity * s - 1, arity * s, arity * s + 1}
    if arity < 16:  # a top tree of three levels; at arity 16, 257 tasks: slow, not different
        sizes.add(arity * arity * s + 1)
    return sorted(sizes)


def leaves_of(count: int, seed: int = 0) -> bytes:
    return bytes(CounterLeaves(seed)(0, count))


def memory_tree(leaves: bytes, arity: int) -> rotortree.LeanIMT:
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(leaves)
    return tree


def _local_client(processes: bool):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def process_client():
    yield from _local_client(processes=True)


@pytest.fixture(scope="module")
def thread_client():
    yield from _local_client(processes=False)


@pytest.fixture(params=["processes", "threads"])
def client(request):
    return request.getfixturevalue({"processes": "process_client",
                                    "threads": "thread_client"}[request.param])


# -- roots and proofs -------------------------------------------------------------------------


@pytest.mark.parametrize("arity", [2, 4, 16])
def test_roots_equal_compute_root_around_segment_boundaries(client, arity):
    for size in sizes_around_boundaries(arity):
        expected = rotortree.compute_root(leaves_of(size), arity)
        got = build(CounterLeaves(), size=size, arity=arity, segment_leaves=SEGMENT[arity],
                    client=client)
        assert got == expected, size


@pytest.mark.parametrize("arity", [2, 4, 16])
def test_sharded_proofs_and_nodes_equal_an_in_memory_tree(client, arity, tmp_path):
    for size in sizes_around_boundaries(arity):
        leaves = leaves_of(size, seed=size)
        out = tmp_path / f"tree-{size}"
        root = build(CounterLeaves(seed=size), size=size, arity=arity,
                     segment_leaves=SEGMENT[arity], client=client, out=out)
        tree = memory_tree(leaves, arity)
        assert root == tree.root
        sharded = ShardedTree.open(out)
        assert (sharded.root, sharded.size, sharded.depth) == (tree.root, size, tree.depth)
        for level in range(tree.depth + 1):
            for index in range(tree.level_len(level)):
                assert sharded.get_node(level, index) == tree.get_node(level, index)
        for index in range(size):
            assert sharded.generate_proof(index).to_bytes() == \
                tree.generate_proof(index).to_bytes(), (size, index)
        batch = sharded.generate_proofs(range(size))
        assert [p.to_bytes() for p in batch] == [p.to_bytes() for p in
                                                 tree.generate_proofs(range(size))]
        assert batch.verify_against(tree.root, size)


def test_dask_array_source(client):
    size = 1000
    leaves = leaves_of(size)
    array = da.from_array(np.frombuffer(leaves, dtype=np.uint8).reshape(-1, 32),
                          chunks=(77, 32))  # chunks that straddle segments
    assert build(array, arity=4, segment_leaves=64, client=client) == \
        rotortree.compute_root(leaves, 4)


def test_files_and_file_urls_are_read_in_order_across_file_boundaries(client, tmp_path):
    size = 700
    leaves = leaves_of(size)
    paths = []
    for number, (start, stop) in enumerate([(0, 5), (5, 300), (300, 301), (301, 700)]):
        path = tmp_path / f"part{number}.bin"
        path.write_bytes(leaves[32 * start:32 * stop])
        paths.append(str(path))
    expected = rotortree.compute_root(leaves, 4)
    assert build(paths, arity=4, segment_leaves=64, client=client) == expected
    urls = ["file://" + path for path in paths]
    assert build(urls, arity=4, segment_leaves=64, client=client,
                 out="file://" + str(tmp_path / "out")) == expected
    assert ShardedTree.open(tmp_path / "out").generate_proof(299).to_bytes() == \
        memory_tree(leaves, 4).generate_proof(299).to_bytes()


def test_the_default_segment_is_about_64_mib_and_the_local_pool_is_the_default():
    size = 3000
    # No client: the segments are hashed here, on the local thread pool.
    assert build(CounterLeaves(), size=size, arity=2) == \
        rotortree.compute_root(leaves_of(size), 2)


@pytest.mark.parametrize("make", ["threads", "processes", "dask-executor"])
def test_any_executor_works_in_place_of_a_client(make, process_client):
    size = 500
    expected = rotortree.compute_root(leaves_of(size), 4)
    if make == "dask-executor":
        executor = process_client.get_executor()
    elif make == "threads":
        executor = cf.ThreadPoolExecutor(2)
    else:
        executor = cf.ProcessPoolExecutor(2)
    with executor:
        assert build(CounterLeaves(), size=size, arity=4, segment_leaves=16,
                     client=executor) == expected


def test_fsspec_output_is_served_with_ranged_reads():
    pytest.importorskip("fsspec")
    import fsspec

    size = 333
    leaves = leaves_of(size)
    url = "memory://rotortree-test/sharded"
    try:
        build(CounterLeaves(), size=size, arity=4, segment_leaves=16, out=url)
        sharded = ShardedTree.open(url)
        tree = memory_tree(leaves, 4)
        for index in (0, 15, 16, 17, 332):
            assert sharded.generate_proof(index).to_bytes() == \
                tree.generate_proof(index).to_bytes()
        more = bytes(CounterLeaves(seed=7)(0, 40))
        assert sharded.append(CounterLeaves(seed=7), size=40) == tree.insert_many(more)
        assert sharded.generate_proof(340).to_bytes() == tree.generate_proof(340).to_bytes()
    finally:
        fsspec.filesystem("memory").rm("/rotortree-test", recursive=True)


# -- append ------------------------------------------------------------------------------------


@pytest.mark.parametrize("first, extra", [(40, 1), (48, 16), (47, 100), (1, 200)])
def test_append_rewrites_only_the_right_edge_segment_and_the_top(tmp_path, process_client,
                                                                 first, extra):
    arity, segment = 4, 16
    out = tmp_path / "tree"
    build(CounterLeaves(), size=first, arity=arity, segment_leaves=segment, out=out,
          client=process_client)
    full_segments = first // segment
    before = {name: os.stat(out / name).st_ino for name in os.listdir(out)
              if name.startswith("seg-")}
    sharded = ShardedTree.open(out)
    new_leaves = bytes(CounterLeaves(seed=9)(0, extra))
    tree = memory_tree(leaves_of(first), arity)
    assert sharded.append(CounterLeaves(seed=9), size=extra, client=process_client) == \
        tree.insert_many(new_leaves)
    after = {name: os.stat(out / name).st_ino for name in os.listdir(out)
             if name.startswith("seg-")}
    for name, inode in before.items():
        if int(name.split("-")[1]) < full_segments:  # full segments are kept as they were
            assert after[name] == inode
        else:  # the old right edge is replaced, not left behind
            assert name not in after
    reopened = ShardedTree.open(out)
    assert (reopened.size, reopened.root) == (first + extra, tree.root)
    for index in range(0, first + extra):
        assert reopened.generate_proof(index).to_bytes() == tree.generate_proof(index).to_bytes()


def test_a_failed_append_changes_nothing(tmp_path):
    out = tmp_path / "tree"
    root = build(CounterLeaves(), size=50, arity=4, segment_leaves=16, out=out)

    def short(start, stop):
        return b"\0" * 32 * (stop - start - 1)

    sharded = ShardedTree.open(out)
    with pytest.raises(InvalidLeafError, match="short"):
        sharded.append(short, size=30)
    reopened = ShardedTree.open(out)
    assert (reopened.size, reopened.root) == (50, root)
    assert reopened.generate_proof(49).verify_against(root, 50)


# -- failures ------------------------------------------------------------------------------------


class KillWorkerOnce:
    """A generated source that kills its worker process the first time it
    is asked for leaf ``victim``: the worker dies mid-build, holding a task."""

    def __init__(self, flag: str, victim: int) -> None:
        self.flag, self.victim = flag, victim

    def __call__(self, start: int, stop: int):
        if start <= self.victim < stop:
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return CounterLeaves()(start, stop)


class KillWorkerAlways(KillWorkerOnce):
    def __call__(self, start: int, stop: int):
        if start <= self.victim < stop:
            os.kill(os.getpid(), signal.SIGKILL)
        return CounterLeaves()(start, stop)


def test_a_worker_killed_mid_build_is_retried_and_the_root_is_right(process_client, tmp_path):
    size = 2000
    source = KillWorkerOnce(str(tmp_path / "killed"), victim=1000)
    out = tmp_path / "tree"
    root = build(source, size=size, arity=4, segment_leaves=64, client=process_client, out=out)
    assert os.path.exists(tmp_path / "killed")  # a worker did die
    assert root == rotortree.compute_root(leaves_of(size), 4)
    assert ShardedTree.open(out).generate_proof(1000).verify_against(root, size)


def _set_allowed_failures(value, dask_scheduler=None):
    previous = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = value
    return previous


def test_a_worker_that_keeps_dying_fails_the_build_with_a_clear_error(process_client, tmp_path):
    out = tmp_path / "tree"
    # Dask gives up on a task at once instead of after 3 dead workers.
    previous = process_client.run_on_scheduler(_set_allowed_failures, 0)
    try:
        # Every task the dying worker held is suspect, so the error may name
        # any segment in flight; it must name one, and say why.
        with pytest.raises(DistributedBuildError,
                           match=r"segment \d+ \(leaves [\d,]+\.\.[\d,]+\) failed: KilledWorker"):
            build(KillWorkerAlways("", victim=1000), size=2000, arity=4, segment_leaves=64,
                  client=process_client, out=out)
    finally:
        process_client.run_on_scheduler(_set_allowed_failures, previous)
        process_client.wait_for_workers(2, timeout=60)
    # No manifest: nothing claims to be a tree.
    with pytest.raises(TreeNotFoundError, match="manifest"):
        ShardedTree.open(out)


def test_a_broken_process_pool_is_a_clear_error(tmp_path):
    with cf.ProcessPoolExecutor(1) as executor:
        with pytest.raises(DistributedBuildError, match="BrokenProcessPool"):
            build(KillWorkerAlways("", victim=100), size=300, arity=4, segment_leaves=16,
                  client=executor)


def test_a_short_file_is_named(tmp_path, process_client):
    good = tmp_path / "good.bin"
    good.write_bytes(leaves_of(10))
    short = tmp_path / "short.bin"
    short.write_bytes(leaves_of(10)[:-5])
    with pytest.raises(InvalidLeafError, match="short.bin.*not a whole number"):
        build([str(good), str(short)], arity=4, client=process_client)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(InvalidLeafError, match="empty.bin is empty"):
        build([str(empty)], arity=4)


@pytest.mark.parametrize("url", ["nosuchprotocol://bucket/leaves.bin",
                                 "file:///nonexistent/rotortree/leaves.bin",
                                 "/nonexistent/rotortree/leaves.bin"])
def test_an_unreadable_url_is_named(url):
    with pytest.raises(LeafSourceError, match=url.replace(".", r"\.")) as raised:
        build([url], arity=4)
    assert isinstance(raised.value, OSError) and isinstance(raised.value, RotorTreeError)


def test_a_file_that_shrinks_after_planning_is_named_by_the_worker(tmp_path, process_client):
    path = tmp_path / "leaves.bin"
    path.write_bytes(leaves_of(500))

    from rotortree.distributed import _sources

    plan = _sources.plan_source([str(path)], None)
    path.write_bytes(leaves_of(100))
    with pytest.raises(LeafSourceError, match="leaves.bin: ended at byte 3,200"):
        process_client.submit(plan.part(64, 128).read).result()


def test_a_generator_returning_the_wrong_length_is_named(process_client):
    with pytest.raises(InvalidLeafError, match=r"_ShortAt\(128, 192\) returned 2,016 bytes, not 2,048"):
        build(_ShortAt(150), size=300, arity=4, segment_leaves=64,
              client=process_client)


class _ShortAt:
    def __init__(self, leaf: int) -> None:
        self.leaf = leaf

    def __call__(self, start: int, stop: int):
        data = bytes(CounterLeaves()(start, stop))
        return data[:-32] if start <= self.leaf < stop else data


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(segment_leaves=24), InvalidArgumentError, "power of the arity 4"),
    (dict(segment_leaves=1), InvalidArgumentError, "power of the arity 4"),
    (dict(rule="no-such-rule"), InvalidArgumentError, "no-such-rule"),
    (dict(arity=1), InvalidArgumentError, "arity"),
    (dict(size=None), InvalidArgumentError, "needs size="),
])
def test_bad_arguments(kwargs, error, message):
    arguments = dict(size=100, arity=4)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        build(CounterLeaves(), **arguments)


def test_build_refuses_to_overwrite_a_sharded_tree(tmp_path):
    build(CounterLeaves(), size=20, arity=4, segment_leaves=16, out=tmp_path)
    with pytest.raises(InvalidArgumentError, match="already holds a sharded tree"):
        build(CounterLeaves(seed=1), size=20, arity=4, segment_leaves=16, out=tmp_path)


def test_a_segment_file_that_does_not_match_the_manifest_is_corruption(tmp_path):
    build(CounterLeaves(), size=40, arity=4, segment_leaves=16, out=tmp_path)
    name = "seg-000000001-16.rts"
    data = bytearray((tmp_path / name).read_bytes())
    data[-1] ^= 1  # the root in the header is checked against the top; here, a node: root
    data[30] ^= 1  # and the header's root
    (tmp_path / name).write_bytes(bytes(data))
    sharded = ShardedTree.open(tmp_path)
    with pytest.raises(CorruptionError, match=name):
        sharded.generate_proof(20)
    assert sharded.generate_proof(5).verify_against(sharded.root, 40)


# -- scale ----------------------------------------------------------------------------------------


def test_a_generated_build_of_100m_leaves_on_two_workers(process_client):
    # About 5 s on the local pool and 5-7 s on the cluster at the benchmark's
    # load (docs/scale.md): under the minute.
    size = 100_000_000
    local = build(CounterLeaves(), size=size, arity=16)
    assert build(CounterLeaves(), size=size, arity=16, client=process_client) == local


def test_the_local_pool_path_over_default_segments_is_compute_root():
    # Three default segments (2**20 leaves each at arity 16) and a short one.
    size = 3 * (1 << 20) + 12_345
    assert build(CounterLeaves(), size=size, arity=16) == \
        rotortree.compute_root(CounterLeaves()(0, size), 16)


@pytest.mark.scale
@pytest.mark.skipif(not os.environ.get("ROTORTREE_SCALE_TESTS"),
                    reason="opt-in: set ROTORTREE_SCALE_TESTS=1 to simulate a 10-billion-leaf "
                           "build (hours on 2 cores); see bench/dask_cluster.py")
def test_simulated_ten_billion_leaves():
    from rotortree.benchmarks.distributed import simulate

    report = simulate(leaves=10_000_000_000, arity=16, workers=2)
    assert len(bytes.fromhex(report["root"])) == 32
    assert report["segments"] == -(-10_000_000_000 // report["segment_leaves"])


def test_the_example_in_docs_scale_runs(tmp_path, monkeypatch):
    # The README's example is this block (the lead pastes it there).
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "scale.md").read_text()
    block = re.search(r"## Example\n.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(block, "docs/scale.md", "exec"), namespace)
    assert namespace["proof"].verify_against(namespace["root"], namespace["tree"].size)


def test_a_failed_build_leaves_no_tree_and_can_be_run_again(tmp_path):
    out = tmp_path / "tree"
    with pytest.raises(InvalidLeafError, match="_ShortAt"):
        build(_ShortAt(40), size=100, arity=4, segment_leaves=16, out=out)
    with pytest.raises(TreeNotFoundError, match="no sharded tree"):
        ShardedTree.open(out)
    root = build(CounterLeaves(), size=100, arity=4, segment_leaves=16, out=out)
    assert ShardedTree.open(out).root == root == rotortree.compute_root(leaves_of(100), 4)


def test_tasks_carry_descriptors_not_leaves(tmp_path):
    import pickle

    from rotortree.distributed import _sources

    path = tmp_path / "leaves.bin"
    with open(path, "wb") as file:
        file.truncate(32 << 20)  # a million leaves, sparse
    plan = _sources.plan_source([str(path)], None)
    assert len(pickle.dumps(plan.part(0, 1 << 20))) < 1024
    assert len(pickle.dumps(_sources.plan_source(CounterLeaves(), 1 << 20).part(0, 1 << 20))) \
        < 1024


def test_the_benchmark_runs_and_judges_its_targets(tmp_path):
    from rotortree.benchmarks import distributed as bench

    result = bench.run(20_000, 16, 1, 2, 200, 5_000, None, overhead_segments=50)
    statuses = {row["target"]: row["status"] for row in result["targets"]}
    assert len(statuses) == 6
    assert set(statuses.values()) <= {"met", "not met", "inconclusive"}
    assert "## Targets" in bench.markdown(result)
