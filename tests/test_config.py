"""configure(), pool_info(), environment variables and CPU counting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rotortree
from rotortree import config as rt_config
from rotortree._native import lib


def run_python(code: str, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROTORTREE_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=60)


INFO = "import json, rotortree; print(json.dumps(rotortree.pool_info()))"


def test_pool_info_reports_settings():
    rotortree.configure(num_threads=3, parallel_threshold=77, par_chunk_size=5)
    info = rotortree.pool_info()
    assert (info["num_threads"], info["parallel_threshold"], info["par_chunk_size"]) == (3, 77, 5)
    assert info["sources"]["num_threads"] == "argument"
    assert info["simd"] in info["available_simd"]
    assert "portable" in info["available_simd"]


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"num_threads": 0}, ValueError),
        ({"num_threads": -2}, ValueError),
        ({"num_threads": 1025}, ValueError),
        ({"num_threads": "2"}, TypeError),
        ({"num_threads": 2.0}, TypeError),
        ({"num_threads": True}, TypeError),
        ({"parallel_threshold": 0}, ValueError),
        ({"parallel_threshold": 2**64}, ValueError),
        ({"par_chunk_size": 0}, ValueError),
        ({"par_chunk_size": None, "simd": "mmx"}, ValueError),
        ({"simd": 2}, TypeError),
    ],
)
def test_invalid_configuration_changes_nothing(kwargs, error):
    before = rotortree.pool_info()
    with pytest.raises(error) as caught:
        # num_threads=2 alongside the bad value: nothing may be applied.
        rotortree.configure(**{"num_threads": 2, **kwargs})
    assert isinstance(caught.value, rotortree.RotorTreeError)
    after = rotortree.pool_info()
    for key in ("num_threads", "parallel_threshold", "par_chunk_size", "simd"):
        assert after[key] == before[key]


def test_every_available_kernel_can_be_selected():
    for name in rt_config.available_kernels():
        rotortree.configure(simd=name)
        assert rotortree.pool_info()["simd"] == name
    rotortree.configure(simd="auto")
    assert rotortree.pool_info()["simd"] == rt_config.available_kernels()[-1]


def _cpu_flags():
    """The CPU feature flags Linux reports, or None where there is no
    /proc/cpuinfo. Linux lists a vector extension only when it also enabled
    the extension's register state in XCR0 (it clears the flags of features
    whose state it does not save), so these flags mean CPU *and* OS support,
    the rule the dispatcher applies with CPUID and XGETBV."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def test_available_kernels_match_the_cpu_flags():
    """A dispatch regression (a kernel missing on a CPU that has it, or
    offered on one that lacks it) fails here, and with it the kernel's tests
    that would otherwise quietly not run."""
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags: cannot tell which kernels this CPU has")
    if lib.rt_kernel_available(lib.RT_KERNEL_SSE41) == 0 and "sse4_1" in flags:
        # Only a build without the SIMD kernels (not x86-64 GCC/Clang) may lack it.
        pytest.skip("this build has no SIMD kernels (x86-64 GCC/Clang only)")
    expected = ["portable"]
    if "sse4_1" in flags:
        expected.append("sse41")
        if "avx2" in flags:
            expected.append("avx2")
            if {"avx512f", "avx512vl"} <= flags:
                expected.append("avx512")
    assert rt_config.available_kernels() == expected


def test_c_kernel_select_rejects_unknown_numbers():
    assert lib.rt_kernel_select(99) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_kernel_select(-1) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_kernel_available(99) == 0


def test_environment_sets_defaults():
    result = run_python(INFO, ROTORTREE_NUM_THREADS="3", ROTORTREE_PARALLEL_THRESHOLD="99",
                        ROTORTREE_PAR_CHUNK_SIZE="7", ROTORTREE_SIMD="portable")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["num_threads"], info["parallel_threshold"], info["par_chunk_size"]) == (3, 99, 7)
    assert info["simd"] == "portable"
    assert info["sources"] == {"num_threads": "environment", "parallel_threshold": "environment",
                               "par_chunk_size": "environment", "simd": "environment"}


def test_defaults_without_environment():
    info = json.loads(run_python(INFO).stdout)
    assert info["num_threads"] == rt_config.available_cpus()
    assert info["parallel_threshold"] == 1024
    assert info["par_chunk_size"] == 64
    assert info["sources"]["num_threads"] == "default"


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("ROTORTREE_NUM_THREADS", "lots", "ROTORTREE_NUM_THREADS='lots' ignored: not an integer"),
        ("ROTORTREE_NUM_THREADS", "0", "num_threads must be"),
        ("ROTORTREE_NUM_THREADS", "9" * 5000, "5000-digit integer is out of range"),
        ("ROTORTREE_PARALLEL_THRESHOLD", "-5", "parallel_threshold must be"),
        ("ROTORTREE_SIMD", "sse9", "unknown SIMD kernel"),
        ("ROTORTREE_MEMORY_CACHE_MB", "-5", "not a non-negative integer"),
        ("ROTORTREE_MEMORY_CACHE_MB", "lots", "not a non-negative integer"),
        ("ROTORTREE_MEMORY_CACHE_MB", "1" * 30, "more than"),
    ],
)
def test_bad_environment_is_ignored_with_a_warning(name, value, message):
    result = run_python(INFO, **{name: value})
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "RotorTreeWarning" in line]
    assert len(warning) == 1 and message in warning[0], result.stderr
    info = json.loads(result.stdout)
    assert len(info["config_errors"]) == 1
    assert info["config_errors"][0].startswith(f"{name}=")
    assert message in info["config_errors"][0]
    assert len(info["config_errors"][0]) < 300   # one readable line, not the value in full
    assert set(info["sources"].values()) == {"default"}


@pytest.mark.parametrize("value", ["0", "1024", " 64 ", ""])
def test_valid_memory_cache_values_are_accepted(value):
    result = run_python(INFO, ROTORTREE_MEMORY_CACHE_MB=value)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert json.loads(result.stdout)["config_errors"] == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_default_threads_follow_cpu_affinity():
    code = "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); " + INFO
    info = json.loads(run_python(code).stdout)
    assert info["num_threads"] == 1
    assert info["available_cpus"] == 1


def test_cgroup_quota_parsing(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert rt_config._cgroup_cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert rt_config._cgroup_cpu_quota(v2) is None

    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert rt_config._cgroup_cpu_quota(v1) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert rt_config._cgroup_cpu_quota(v1) is None
    assert rt_config._cgroup_cpu_quota(tmp_path / "missing") is None


def test_available_cpus_applies_quota(monkeypatch):
    monkeypatch.setattr(rt_config, "_affinity_cpus", lambda: 8)
    monkeypatch.setattr(rt_config, "_cgroup_cpu_quota", lambda: 2.5)
    assert rt_config.available_cpus() == 3
    monkeypatch.setattr(rt_config, "_cgroup_cpu_quota", lambda: 0.2)
    assert rt_config.available_cpus() == 1
    monkeypatch.setattr(rt_config, "_cgroup_cpu_quota", lambda: None)
    assert rt_config.available_cpus() == 8


def test_pool_stats_count_parallel_work():
    rotortree.configure(num_threads=2, parallel_threshold=1, par_chunk_size=8)
    before = rotortree.pool_stats()
    rotortree.LeanIMT(4).insert_many(bytes(32 * 50_000))
    after = rotortree.pool_stats()
    assert after["jobs"] > before["jobs"]
    # 12,500 level-1 parents: fused blocks of 1024 of them (at least 4 per
    # thread), then one unit per 8 parents in each level pass above.
    assert after["units"] >= before["units"] + 12_500 // 1024
