"""Argument checks shared by the public API (one rule for every index)."""

from __future__ import annotations

import operator

from .errors import ArgumentTypeError


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


__all__ = ["int_arg", "shown"]
