"""The benchmarks that judge issue 15's single-operation and growth targets
run end to end at a tiny size and judge by code."""

from __future__ import annotations

import pytest

from rotortree.benchmarks import growth, single_ops
from rotortree.benchmarks.stats import INCONCLUSIVE, MET, NOT_MEASURED, NOT_MET

VERDICTS = {MET, NOT_MET, INCONCLUSIVE, NOT_MEASURED}


def test_single_ops_judges_every_target():
    payload, text = single_ops.run(leaves=3_000, singles=300, proofs=50, batch=400, repeat=2,
                                   show_progress=False, harness=None)
    names = [t["target"] for t in payload["targets"]]
    assert len(names) == 5 and all(t["status"] in VERDICTS for t in payload["targets"])
    # Without the Rust harness the insert target is not measured, never met.
    assert payload["targets"][0]["status"] == NOT_MEASURED
    assert all(t["status"] != NOT_MEASURED for t in payload["targets"][1:])
    assert "| target |" in text and "thread CPU" in text
    for row in payload["rows"]:
        assert len(row["samples_s"]) == 2 and len(row["cpu_samples_s"]) == 2
    assert set(payload["breakdown"]) == {"insert", "generate_proof"}
    assert len(payload["parts"]) == 6 and "Where the time goes" in text


def test_single_ops_breakdown_splits_each_operation_by_its_loops():
    rounds = [
        {"insert": 2.0, "generate_proof": 3.0, single_ops.EMPTY_LOOP: 0.1,
         single_ops.CFFI_FLOOR: 0.3, single_ops.INSERT_C: 1.5, single_ops.INSERT_C_RESULT: 1.6,
         single_ops.PROOF_C: 1.1, single_ops.PROOF_C_RESULT: 1.6},
        # A second round with everything 10% slower, and a third far off:
        # the medians of the per-round shares follow the first two.
        {}, {},
    ]
    rounds[1] = {name: 1.1 * value for name, value in rounds[0].items()}
    rounds[2] = {name: 5.0 * value for name, value in rounds[0].items()}
    cpu = {name: [r[name] for r in rounds] for name in rounds[0]}
    split = single_ops.breakdown(cpu)
    insert, proof = split["insert"], split["generate_proof"]
    # Round 1 gives C work 1.2, cffi 0.2, result 0.1, wrapper 0.5; round 2
    # is 1.1 times that: the medians.
    assert insert["c_work"] == pytest.approx(1.32) and insert["cffi"] == pytest.approx(0.22)
    assert insert["result"] == pytest.approx(0.11) and insert["wrapper"] == pytest.approx(0.55)
    assert proof["c_work"] == pytest.approx(0.88) and proof["result"] == pytest.approx(0.55)
    assert proof["wrapper"] == pytest.approx(1.65)
    for parts in split.values():
        assert parts["c_work"] + parts["cffi"] + parts["result"] + parts["wrapper"] == \
            pytest.approx(parts["total"])


def run_of(walls):
    return {"wall_s": walls}


@pytest.mark.parametrize("grow, reused, touch, expected", [
    (0.030, 0.025, 0.020, MET),           # within 1.5x of reused memory
    (0.060, 0.025, 0.040, MET),           # not within 1.5x, but within reused + first touch
    (0.100, 0.025, 0.020, NOT_MET),       # beyond both
])
def test_growth_target_takes_either_bound(grow, reused, touch, expected):
    runs = [run_of([0.5, grow, grow])] * 3
    references = [{"reused_s": [reused] * 3, "first_touch_s": [touch] * 3}] * 3
    verdict = growth.growth_target(1_000_000, runs, references)
    assert verdict["status"] == expected
    # The first batch goes into an empty tree: it is not an append.
    assert verdict["over_reused"]["median"] == pytest.approx(grow / reused)


def test_growth_benchmark_reports_its_target():
    payload, text = growth.run(workloads=[(1_000, 3_000)], repeat=2, show_progress=False,
                               harness=None)
    target = payload["workloads"][0]["target"]
    assert target["status"] in VERDICTS - {NOT_MEASURED}
    assert len(target["references"]) == 2 and "Target:" in text
    assert all(b > 0 for run in payload["workloads"][0]["rows"][1]["per_run"]
               for b in run["chunk_bytes_added"][:1])
    # The configuration that leaves the pre-faulting time between batches,
    # against the same reused-memory references.
    idle = payload["workloads"][0]["idle"]
    assert idle["over_reused"]["n"] == 2 and idle["idle_s"] > 0
    assert growth.IDLE_CONFIG in text and "idle before each batch" in text
