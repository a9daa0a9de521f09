"""The C BLAKE3 against the blake3 PyPI package, under every kernel."""

from __future__ import annotations

import random

import blake3
import pytest

import rotortree
from conftest import kernels
from rotortree._native import ffi, lib


def c_blake3(message: bytes) -> bytes:
    out = ffi.new("uint8_t[32]")
    lib.rt_blake3(ffi.from_buffer(message), len(message), out)
    return ffi.buffer(out)[:]


def c_parent(children: bytes, count: int) -> bytes:
    out = ffi.new("uint8_t[32]")
    status = lib.rt_hash_parent(ffi.from_buffer(children), count, out)
    assert status == lib.RT_OK
    return ffi.buffer(out)[:]


@pytest.mark.parametrize("kernel", kernels())
def test_every_length_up_to_9000(kernel):
    rotortree.configure(simd=kernel)
    rng = random.Random(9000)
    data = rng.randbytes(9001)
    mismatches = [n for n in range(9001) if c_blake3(data[:n]) != blake3.blake3(data[:n]).digest()]
    assert mismatches == []


@pytest.mark.parametrize("kernel", kernels())
def test_parent_of_every_child_count(kernel):
    rotortree.configure(simd=kernel)
    rng = random.Random(255)
    for count in range(2, 256):
        children = rng.randbytes(32 * count)
        expected = blake3.blake3(bytes([1, count]) + children).digest()
        assert c_parent(children, count) == expected, count


@pytest.mark.parametrize("count", [0, 1, 256, 1000])
def test_parent_rejects_bad_child_counts(count):
    out = ffi.new("uint8_t[32]")
    children = bytes(32 * max(count, 1))
    assert lib.rt_hash_parent(ffi.from_buffer(children), count, out) == lib.RT_ERR_INVALID_ARGUMENT


def test_known_answer_empty_input():
    # The BLAKE3 specification's published hash of the empty input.
    assert c_blake3(b"").hex() == (
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    )
