"""The statistics and verdicts every benchmark figure goes through, and the
exact compression counts behind the kernel bound."""

from __future__ import annotations

import math

import pytest

from rotortree.benchmarks import kernels
from rotortree.benchmarks.stats import (
    INCONCLUSIVE,
    MET,
    NOT_MEASURED,
    NOT_MET,
    paired_ratios,
    quantile,
    ratio_summary,
    summary,
    target,
    verdict,
)


def test_summary_gives_min_median_and_iqr():
    stats = summary([5.0, 1.0, 4.0, 2.0, 3.0])
    assert stats["min"] == 1.0 and stats["median"] == 3.0 and stats["max"] == 5.0
    assert stats["q1"] == 2.0 and stats["q3"] == 4.0 and stats["iqr"] == 2.0
    assert stats["n"] == 5


def test_quantile_interpolates_between_order_statistics():
    assert quantile([10.0, 20.0], 0.5) == 15.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.05) == pytest.approx(1.15)
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_ratios_are_per_paired_repetition():
    # A drift that slows both configurations alike cancels out per pair: the
    # ratio of medians (0.45 / 0.9 ... ) would not be exactly 0.5 here.
    a = [1.0, 2.0, 3.0, 8.0]
    b = [2.0, 4.0, 6.0, 16.0]
    ratios = paired_ratios(a, b)
    assert ratios == [0.5, 0.5, 0.5, 0.5]
    r = ratio_summary(ratios)
    assert r["median"] == r["low"] == r["high"] == 0.5 and r["above_one"] == 0.0
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_interval_is_the_5th_to_95th_percentile():
    ratios = [1.0 + k / 100 for k in range(101)]   # 1.00 .. 2.00
    r = ratio_summary(ratios)
    assert r["low"] == pytest.approx(1.05) and r["high"] == pytest.approx(1.95)
    assert r["median"] == pytest.approx(1.5)


@pytest.mark.parametrize("low, high, goal, at_least, expected", [
    (1.9, 2.1, 1.85, True, MET),
    (1.5, 1.8, 1.85, True, NOT_MET),
    (1.7, 1.9, 1.85, True, INCONCLUSIVE),
    (0.7, 0.9, 1.0, False, MET),
    (1.1, 1.3, 1.0, False, NOT_MET),
    (0.8, 1.2, 1.0, False, INCONCLUSIVE),
    (1.85, 1.85, 1.85, True, MET),
])
def test_verdict(low, high, goal, at_least, expected):
    assert verdict(low, high, goal, at_least) == expected


def test_never_slower_is_not_met_when_a_fifth_of_the_pairs_are_slower():
    """The old check (median ratio <= 1) called this "met" although one
    paired repetition in five was slower than sequential."""
    ratios = [0.75] * 16 + [1.2] * 4
    r = ratio_summary(ratios)
    assert r["median"] <= 1.0 and r["above_one"] == pytest.approx(0.2)
    assert verdict(r["low"], r["high"], 1.0, at_least=False) != MET


def test_a_target_without_a_measurement_is_never_met():
    row = target("1-thread pool costs at most 2%", "", reason="cannot be measured")
    assert row["status"] == NOT_MEASURED and row["measured"] == "cannot be measured"
    row = target("2 threads >= 1.85x", "1.60x", (1.5, 1.7), 1.85)
    assert row["status"] == NOT_MET and row["interval"] == [1.5, 1.7]
    with pytest.raises(ValueError):
        verdict(2.0, 1.0, 1.5, True)


@pytest.mark.parametrize("length, expected", [
    (0, 1), (1, 1), (64, 1), (65, 2), (1024, 16),
    # Two chunks (16 + 1 blocks) and the parent that joins them.
    (1025, 18),
    # 64 MiB: 2**20 blocks and 2**16 chunks joined by 2**16 - 1 parents, the
    # parents the old bound (bytes / 64) left out.
    (64 << 20, 2**20 + 2**16 - 1),
])
def test_blake3_compressions_count_chunk_blocks_and_parents(length, expected):
    assert kernels.blake3_compressions(length) == expected


def reference_tree_compressions(leaves: int, arity: int) -> int:
    """Level by level with explicit groups: a group of k >= 2 children costs
    ceil((2 + 32k) / 64) compressions, a group of one is lifted."""
    total, level = 0, leaves
    while level > 1:
        groups = [min(arity, level - start) for start in range(0, level, arity)]
        total += sum(math.ceil((2 + 32 * k) / 64) for k in groups if k >= 2)
        level = len(groups)
    return total


@pytest.mark.parametrize("arity", [2, 3, 4, 8, 16])
def test_tree_compressions_match_a_group_by_group_count(arity):
    for leaves in list(range(1, 80)) + [1_000, 4**10, 1_000_000]:
        assert kernels.tree_compressions(leaves, arity) == \
            reference_tree_compressions(leaves, arity), (leaves, arity)
