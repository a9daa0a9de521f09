"""Argument checks shared by the public API: one rule for every integer
argument, one for positive counts, one 64-bit limit. Pure Python (no C
core), so the proof classes can use it in light client mode."""

from __future__ import annotations

import operator

from typing import Optional

from .errors import ArgumentTypeError, InvalidArgumentError

#: Sizes, indices and counts cross into C as uint64_t.
U64_MAX = (1 << 64) - 1


def shown(value: object, limit: int = 60) -> str:
    """A caller's value for a one-line message: repr() (which escapes
    newlines), cut when long. Never str() of a huge int, which Python refuses
    past 4300 digits: the message would turn into a bare ValueError."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def int_arg(name: str, value: object) -> int:
    """``value`` as a plain int. Anything with ``__index__`` is accepted
    (numpy integer scalars, IntEnum members), so indices computed with numpy
    work as they do for a list; bools are refused because ``True`` passed as
    an index is almost always a bug, and floats because they are not exact."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:  # numpy.bool_ and non-scalar arrays define __index__ and refuse
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}") from None



def positive_int(name: str, value: object, upper: Optional[int] = None) -> int:
    """``value`` as an int in ``1..upper`` (``upper`` None: any value below
    2**64, the width C stores it in), by the rules of :func:`int_arg`."""
    value = int_arg(name, value)
    if value < 1 or (upper is not None and value > upper):
        bound = f"1..{upper}" if upper is not None else ">= 1"
        raise InvalidArgumentError(f"{name} must be {bound}, got {shown(value)}")
    if value > U64_MAX:
        raise InvalidArgumentError(f"{name} must be below 2**64, got {shown(value)}")
    return value


__all__ = ["U64_MAX", "int_arg", "positive_int", "shown"]
