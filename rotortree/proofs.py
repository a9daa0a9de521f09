"""Inclusion and consistency proofs: pure-Python verification and encoding.

This module needs only the standard library, ``blake3`` and
:mod:`rotortree.errors`, so a light client can check proofs without the
compiled core. Semantics follow ``docs/spec.md`` and the Rust crate ``rotortree``
(0.15 with the default rule, 0.16 on with ``rule="leanimt"``): a proof made by
either verifies with the other.

Hashing: every proof carries its tree's hash rule (:mod:`rotortree.rules`).
Under the default ``"rotortree-0.15"`` the parent of a group of ``k >= 2``
children is ``blake3(bytes([0x01, k]) + child_0 + ... + child_{k-1})``; under
``"leanimt"`` it is ``blake3(child_0 + ... + child_{k-1})``; under
``"rfc6962"`` (arity 2) ``sha256(b"\x01" + left + right)``. In every rule a
group of one child is lifted (the parent is the child, no hash). A tree of
``size`` leaves has ``tree_depth(size, arity)`` levels above the leaves.

Binary layouts (version 2; all integers little-endian; hashes are 32 bytes)
--------------------------------------------------------------------------
Inclusion proof::

    offset  size  field
    0       4     magic b"RTIP"
    4       1     version u8 = 2
    5       1     arity u8 (2..255)
    6       1     level_count u8
    7       1     rule u8 (0 rotortree-0.15, 1 leanimt, 2 rfc6962)
    8       8     leaf_index u64
    16      8     tree_size u64
    24      32    root
    56      32    leaf
    88      ...   level_count times, from the leaves up:
                    position u8 | sibling_count u8 | sibling_count * 32 bytes

Consistency proof::

    offset  size  field
    0       4     magic b"RTCP"
    4       1     version u8 = 2
    5       1     arity u8 (2..255)
    6       1     level_count u8
    7       1     rule u8 (0 rotortree-0.15, 1 leanimt, 2 rfc6962)
    8       8     old_size u64
    16      8     new_size u64
    24      32    old_root
    56      32    new_root
    88      ...   level_count times, from the leaves up:
                    shared_count u8 | new_count u8 |
                    shared_count * 32 bytes (shared hashes) |
                    new_count * 32 bytes (new hashes)

Version 1 is the same layout with byte 7 always 0, from before rules: it
decodes as ``"rotortree-0.15"`` (and re-encodes as version 2).
``from_bytes`` checks structure only (magic, version, rule byte, arity
range, exact length) and raises :class:`InvalidProofError` otherwise; a
structurally sound but wrong proof decodes, and its ``verify()`` is False.
Every decodable version-2 input re-encodes to the same bytes.

Dict form (JSON-ready; hashes as lowercase hex)
-----------------------------------------------
Inclusion: ``{"type": "inclusion", "rule", "arity", "leaf_index", "tree_size",
"leaf", "root", "level_count", "levels": [{"position", "sibling_count",
"siblings": [hex]}]}``. Consistency: ``{"type": "consistency", "rule", "arity",
"old_size", "new_size", "old_root", "new_root", "level_count", "levels":
[{"shared_count", "new_count", "hashes": [hex]}]}`` where ``hashes`` is the
shared hashes followed by the new hashes. This is the shape of the proof
objects in the Rust-made test vectors, plus ``"arity"``, ``"rule"`` and
``"type"``; ``from_dict`` also takes those objects directly with ``arity=``
(and ``rule=``; a dict without ``"rule"`` means ``"rotortree-0.15"``) and
ignores their ``"verified"`` key. ``"type"`` is optional on input (documents
written before it existed), and a document of the other type is refused.
Hex strings may carry a ``0x`` prefix.

``verify()`` never raises and never crashes: any malformed proof (wrong
types, out-of-range numbers, wrong counts or lengths) gives False.
"""

from __future__ import annotations

import operator
import re
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import blake3

from ._validate import U64_MAX, shown
from .errors import ArgumentTypeError, InvalidArgumentError, InvalidProofError
from .rules import DEFAULT_RULE, RFC6962, RULES, check_same_rule, hash_group, known_rule, \
    rule_arg, rule_code

__all__ = [
    "HASH_LEN",
    "MIN_ARITY",
    "MAX_ARITY",
    "INCLUSION_MAGIC",
    "CONSISTENCY_MAGIC",
    "FORMAT_VERSION",
    "ProofLevel",
    "InclusionProof",
    "ConsistencyLevel",
    "ConsistencyProof",
    "tree_depth",
]

HASH_LEN = 32
MIN_ARITY = 2
MAX_ARITY = 255
INCLUSION_MAGIC = b"RTIP"
CONSISTENCY_MAGIC = b"RTCP"
FORMAT_VERSION = 2
# Before rules: byte 7 reserved (0), the rule rotortree-0.15.
_RULELESS_VERSION = 1

#: What from_bytes accepts (any object with the buffer protocol works).
BytesLike = Union[bytes, bytearray, memoryview]

_U8_MAX = 255
# magic | version | arity | level_count | reserved | u64 | u64 ; then two hashes
_HEADER = struct.Struct("<4sBBBBQQ")
_HEADER_LEN = _HEADER.size + 2 * HASH_LEN  # 88
_HEX_HASH = re.compile(r"(?:0[xX])?([0-9a-fA-F]{64})")
# The two header bytes of a parent of k children: 0x01, k.
_PARENT_HEADERS = tuple(bytes((0x01, k)) for k in range(256))
_blake3 = blake3.blake3
_object_setattr = object.__setattr__

_INCLUSION_KEYS = frozenset(
    {"type", "rule", "arity", "leaf_index", "tree_size", "leaf", "root", "level_count", "levels",
     "verified"}
)
_INCLUSION_LEVEL_KEYS = frozenset({"position", "sibling_count", "siblings"})
_CONSISTENCY_KEYS = frozenset(
    {"type", "rule", "arity", "old_size", "new_size", "old_root", "new_root", "level_count", "levels",
     "verified"}
)
_CONSISTENCY_LEVEL_KEYS = frozenset({"shared_count", "new_count", "hashes"})


# -- small helpers -----------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_int(value: object) -> bool:
    """A plain int. Verification walks only these: an int subclass could
    redefine ==, < or // and pass a proof whose shape is not its size's
    (constructors turn int subclasses into plain ints, see _plain_int)."""
    return type(value) is int


def _plain_int(value: object) -> object:
    """An int subclass (IntEnum, ...) -> the plain int of its value, without
    calling anything the subclass may have redefined; anything else
    unchanged (verify rejects it). Never raises."""
    if isinstance(value, int) and type(value) is not int and not isinstance(value, bool):
        return int.__int__(value)
    return value


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_LEN


def _is_hash_seq(values: object, count: int) -> bool:
    """True if ``values`` is a tuple/list of exactly ``count`` 32-byte hashes."""
    if not isinstance(values, (tuple, list)) or len(values) != count:
        return False
    for value in values:
        if not isinstance(value, bytes) or len(value) != HASH_LEN:
            return False
    return True


def _valid_rule(rule: object, arity: object) -> bool:
    """A rule name verification can hash with at this arity. Never raises."""
    return type(rule) is str and rule in RULES and (rule != RFC6962 or arity == 2)


def _normalize_bytes(value: object) -> object:
    """bytes subclasses, bytearray and memoryview -> plain bytes; anything
    else unchanged (verify rejects it). Never raises."""
    if type(value) is not bytes and isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value)
        except Exception:  # e.g. a released memoryview: leave it for verify to reject
            return value
    return value


def trusted_root_bytes(value: object) -> Optional[bytes]:
    """The 32 bytes of a trusted root given as any object with the buffer
    protocol (bytes, bytearray, memoryview, a numpy or array.array buffer),
    or None when it is not one. Every verifier (pure Python and the C
    batch) reads trusted roots by this one rule. Never raises."""
    if isinstance(value, str):
        return None
    try:
        root = bytes(memoryview(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return root if len(root) == HASH_LEN else None


def trusted_size_int(value: object) -> Optional[int]:
    """A trusted size as a plain int (an int or any ``__index__`` integer,
    such as a numpy integer; not a bool), or None. Never raises."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except Exception:  # numpy.bool_ and arrays define __index__ and refuse
        return None


def _normalize_hashes(values: object) -> object:
    """A list/tuple of hashes -> a tuple of normalized items. Never raises."""
    if isinstance(values, (tuple, list)):
        return tuple(_normalize_bytes(value) for value in values)
    return values


def tree_depth(size: int, arity: int) -> int:
    """depth(size): 0 for size <= 1, else the smallest d with arity**d >= size."""
    if not _is_int(size):
        raise ArgumentTypeError(f"size must be an int, not {type(size).__name__}")
    if not _is_int(arity):
        raise ArgumentTypeError(f"arity must be an int, not {type(arity).__name__}")
    if not MIN_ARITY <= arity <= MAX_ARITY:
        raise InvalidArgumentError(f"arity must be {MIN_ARITY}..{MAX_ARITY}, got {arity}")
    if size < 0:
        raise InvalidArgumentError(f"size must be >= 0, got {size}")
    depth, capacity = 0, 1
    while capacity < size:
        capacity *= arity
        depth += 1
    return depth


class _Frozen:
    """Pickle/copy support for frozen dataclasses with ``__slots__``."""

    __slots__ = ()

    @classmethod
    def _trusted(cls, *values: object) -> Any:
        """Build without __post_init__ (decoders: values already plain bytes
        and tuples)."""
        obj = object.__new__(cls)
        names: Tuple[str, ...] = cls.__slots__
        for name, value in zip(names, values):
            _object_setattr(obj, name, value)
        return obj

    def __getstate__(self) -> Tuple[object, ...]:
        names: Tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __setstate__(self, state: Tuple[object, ...]) -> None:
        names: Tuple[str, ...] = self.__slots__
        for name, value in zip(names, state):
            object.__setattr__(self, name, value)
        if len(state) < len(names) and names[-1] == "rule":
            # Pickled before proofs had a rule: they were all rotortree-0.15.
            object.__setattr__(self, "rule", DEFAULT_RULE)


class _Encoded(_Frozen):
    """A frozen proof that may hold its version-2 encoding instead of its
    fields: proofs made by the C core or decoded from bytes are built from
    the bytes alone, and their fields are decoded on first access (building
    a level object per level is most of a single proof's cost, and many
    proofs are only verified, sent or stored). The slot lives here, not in
    the proof class, so that the class's ``__slots__`` are its fields."""

    __slots__ = ("_encoded",)


# The slot's own setter: one call, where object.__setattr__ first looks the
# name up through the class's bases (a visible share of a single proof).
_set_encoded = _Encoded.__dict__["_encoded"].__set__


# -- encoding helpers ----------------------------------------------------------


def _check_encodable_int(name: str, value: object, low: int, high: int) -> int:
    if not _is_int(value):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    assert isinstance(value, int)
    if not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be {low}..{high} to encode, got {shown(value)}")
    return value


def _check_encodable_rule(rule: object, arity: int) -> int:
    if not _valid_rule(rule, arity):
        raise InvalidArgumentError(
            f"cannot encode: rule {shown(rule)} is not one of {', '.join(map(repr, RULES))}"
            f" usable at arity {arity}")
    return rule_code(rule)  # type: ignore[arg-type]


def _check_encodable_hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise ArgumentTypeError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_LEN:
        raise InvalidArgumentError(f"{name} must be {HASH_LEN} bytes, got {len(value)}")
    return value


def _check_encodable_hashes(name: str, values: object) -> Tuple[bytes, ...]:
    if not isinstance(values, (tuple, list)):
        raise ArgumentTypeError(f"{name} must be a tuple of bytes, not {type(values).__name__}")
    if len(values) > _U8_MAX:
        raise InvalidArgumentError(f"{name}: at most {_U8_MAX} hashes per level, got {len(values)}")
    return tuple(_check_encodable_hash(f"{name}[{i}]", value) for i, value in enumerate(values))


def _check_encodable_levels(values: object, level_type: type) -> Tuple[Any, ...]:
    if not isinstance(values, (tuple, list)):
        raise ArgumentTypeError(f"levels must be a tuple, not {type(values).__name__}")
    if len(values) > _U8_MAX:
        raise InvalidArgumentError(f"at most {_U8_MAX} levels can be encoded, got {len(values)}")
    for i, level in enumerate(values):
        if not isinstance(level, level_type):
            raise ArgumentTypeError(
                f"levels[{i}] must be a {level_type.__name__}, not {type(level).__name__}"
            )
    return tuple(values)


def _byte_view(data: object) -> bytes:
    """The bytes of any bytes-like object; ArgumentTypeError otherwise."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise ArgumentTypeError("expected a bytes-like object, not str")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(
            f"expected a bytes-like object, not {type(data).__name__}"
        ) from None
    except ValueError:  # a released memoryview
        raise ArgumentTypeError("cannot read a released buffer") from None
    with view:
        return view.tobytes()


def _decode_header(data: bytes, magic: bytes, what: str) -> Tuple[int, int, int, int, str]:
    """Check magic/version/rule/arity; returns (arity, level_count, a, b, rule)."""
    if len(data) < 4:
        raise InvalidProofError(f"{what} truncated: {len(data)} bytes, no magic")
    if data[:4] != magic:
        other = {INCLUSION_MAGIC: "an inclusion proof", CONSISTENCY_MAGIC: "a consistency proof"}
        hint = f" (this looks like {other[data[:4]]})" if data[:4] in other else ""
        raise InvalidProofError(
            f"not {what}: magic {data[:4]!r}, expected {magic!r}{hint}"
        )
    if len(data) >= 5 and data[4] not in (_RULELESS_VERSION, FORMAT_VERSION):
        raise InvalidProofError(
            f"unknown {what} version {data[4]} (this library reads versions "
            f"{_RULELESS_VERSION} and {FORMAT_VERSION})"
        )
    if len(data) < _HEADER_LEN:
        raise InvalidProofError(
            f"{what} truncated: {len(data)} bytes, the header needs {_HEADER_LEN}"
        )
    _, version, arity, level_count, code, first, second = _HEADER.unpack_from(data, 0)
    if version == _RULELESS_VERSION and code != 0:
        raise InvalidProofError(f"{what}: reserved byte is {code}, must be 0 in version 1")
    if code >= len(RULES):
        raise InvalidProofError(f"{what}: unknown rule number {code} (0..{len(RULES) - 1})")
    if not MIN_ARITY <= arity <= MAX_ARITY:
        raise InvalidProofError(f"{what}: arity {arity} out of range {MIN_ARITY}..{MAX_ARITY}")
    rule = RULES[code]
    if not _valid_rule(rule, arity):
        raise InvalidProofError(f"{what}: rule {rule!r} does not allow arity {arity}")
    return arity, level_count, first, second, rule


# One precompiled "32s"*k unpacker per sibling count: a single C call per
# level instead of k slices (decoding is most of a single proof's cost).
_HASH_RUNS = [struct.Struct(f"{HASH_LEN}s" * count) for count in range(_U8_MAX + 1)]


def _split_hashes(data: bytes, start: int, count: int) -> Tuple[bytes, ...]:
    hashes: Tuple[bytes, ...] = _HASH_RUNS[count].unpack_from(data, start)
    return hashes


def _dict_get(d: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise InvalidProofError(f"{where}: missing key {key!r}") from None


def _dict_int(d: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = _dict_get(d, key, where)
    if not _is_int(value):
        raise InvalidProofError(f"{where}: {key} must be an int, not {type(value).__name__}")
    assert isinstance(value, int)
    if not low <= value <= high:
        raise InvalidProofError(f"{where}: {key} {shown(value)} out of range {low}..{high}")
    return value


def _hex_hash(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidProofError(f"{where} must be a hex string, not {type(value).__name__}")
    match = _HEX_HASH.fullmatch(value)
    if not match:
        raise InvalidProofError(
            f"{where} must be {2 * HASH_LEN} hex digits (optionally after 0x), "
            f"got {value[:80]!r}"
        )
    return bytes.fromhex(match.group(1))


def _hex_list(value: object, where: str) -> Tuple[bytes, ...]:
    if not isinstance(value, (list, tuple)):
        raise InvalidProofError(f"{where} must be a list, not {type(value).__name__}")
    return tuple(_hex_hash(item, f"{where}[{i}]") for i, item in enumerate(value))


def _check_mapping(d: object, allowed: frozenset[str], where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise InvalidProofError(f"{where} must be a dict, not {type(d).__name__}")
    unknown = [key for key in d if key not in allowed]
    if unknown:
        raise InvalidProofError(f"{where}: unknown keys {sorted(map(repr, unknown))}")
    return d


def _dict_arity(d: Mapping[str, Any], arity: Optional[int], where: str) -> int:
    if arity is not None:
        if not _is_int(arity) or not MIN_ARITY <= arity <= MAX_ARITY:
            raise InvalidProofError(f"arity= must be an int in {MIN_ARITY}..{MAX_ARITY}, got {arity!r}")
        if "arity" in d and d["arity"] != arity:
            raise InvalidProofError(f"{where}: arity {d['arity']!r} disagrees with arity={arity}")
        if "arity" in d:
            _dict_int(d, "arity", where, MIN_ARITY, MAX_ARITY)
        return arity
    if "arity" not in d:
        raise InvalidProofError(f"{where}: missing key 'arity' (or pass arity=)")
    return _dict_int(d, "arity", where, MIN_ARITY, MAX_ARITY)


def _check_type(d: Mapping[str, Any], expected: str, where: str) -> None:
    """The ``"type"`` key says which proof a JSON document is; documents
    written before it existed have none and are still read."""
    if "type" in d and d["type"] != expected:
        raise InvalidProofError(f"{where}: type {d['type']!r}, expected {expected!r}")


def _short_hex(value: bytes) -> str:
    """A hash in a repr: enough hex to tell two apart at a glance."""
    text = value.hex()
    return text if len(text) <= 16 else f"{text[:8]}..{text[-6:]}"


def _dict_rule(d: Mapping[str, Any], rule: Optional[str], arity: int, where: str) -> str:
    """The proof's rule: the dict's "rule" (absent: rotortree-0.15, as
    before rules), which ``rule=`` must agree with when both are given."""
    found = d.get("rule", rule if rule is not None else DEFAULT_RULE)
    if rule is not None and found != rule:
        raise InvalidProofError(f"{where}: rule {found!r} disagrees with rule={rule!r}")
    try:
        return rule_arg(found, arity)
    except (ArgumentTypeError, InvalidArgumentError) as error:
        raise InvalidProofError(f"{where}: {error}") from None


def _dict_levels(d: Mapping[str, Any], where: str) -> List[Any]:
    level_count = _dict_int(d, "level_count", where, 0, _U8_MAX)
    levels = _dict_get(d, "levels", where)
    if not isinstance(levels, (list, tuple)):
        raise InvalidProofError(f"{where}: levels must be a list, not {type(levels).__name__}")
    if len(levels) != level_count:
        raise InvalidProofError(
            f"{where}: level_count {level_count} but {len(levels)} levels"
        )
    return list(levels)


# -- inclusion proofs ----------------------------------------------------------

_INCLUSION_FIELDS = frozenset({"root", "leaf", "leaf_index", "tree_size", "arity", "levels",
                               "rule"})
_new_object = object.__new__
_object_getattribute = object.__getattribute__


def _decode_inclusion(proof: Any, data: bytes) -> None:
    """Set every field of ``proof`` from ``data``, a structurally valid
    encoding (so nothing here can fail)."""
    _, _, arity, level_count, code, leaf_index, tree_size = _HEADER.unpack_from(data)
    levels: List[ProofLevel] = []
    append, runs, at = levels.append, _HASH_RUNS, _HEADER_LEN
    for _ in range(level_count):
        count = data[at + 1]
        level = _new_object(ProofLevel)
        _object_setattr(level, "position", data[at])
        _object_setattr(level, "siblings", runs[count].unpack_from(data, at + 2))
        append(level)
        at += 2 + count * HASH_LEN
    for name, value in (("root", data[24:56]), ("leaf", data[56:_HEADER_LEN]),
                        ("leaf_index", leaf_index), ("tree_size", tree_size),
                        ("arity", arity), ("levels", tuple(levels)), ("rule", RULES[code])):
        _object_setattr(proof, name, value)


def _level_hasher() -> Tuple[Any, Any, Any]:
    """reset, update and digest of a new hasher, for one verification to
    hash its levels with: resetting a hasher costs about half of making one
    per level with the blake3 package. Each call gets its own hasher, so
    threads never share one."""
    state = _blake3()
    return state.reset, state.update, state.digest


def _verify_encoded(data: bytes) -> bool:
    """InclusionProof._verify on a structurally valid encoding, read in
    place: the same checks, in the same order, without decoding a level.
    Encodings kept by proofs are version 2 with a valid rule for the arity.

    Every operation here is paid per level by every pure-Python verifier, so
    the checks are spelled with as few as give the same answers: the depth
    from one power instead of a loop, and each group's size from the path to
    the last leaf (a group is full unless it is the last of its level)
    instead of carrying the level's length."""
    _, _, arity, level_count, code, index, size = _HEADER.unpack_from(data)
    rule = RULES[code]
    if not 0 <= index < size:  # 2 <= arity <= 255 and size <= 2**64-1 by structure
        return False
    # level_count is the depth: the least d with arity**d >= size, which is
    # at most 64 (size < 2**64), so the power below stays small.
    if level_count > 64:
        return False
    top = arity ** level_count
    if top < size or (level_count and top >= size * arity):
        return False
    current, headers, join = data[56:_HEADER_LEN], _PARENT_HEADERS, b"".join
    tagged = rule == DEFAULT_RULE
    reset, update, digest = _level_hasher()
    at, last, full = _HEADER_LEN, size - 1, arity - 1
    for _ in range(level_count):
        position = index % arity
        index //= arity
        edge = last % arity
        last //= arity
        count = data[at + 1]
        # Siblings: arity - 1 in a group that another follows, else up to
        # the level's last node.
        if data[at] != position or count != (full if index < last else edge):
            return False
        at += 2
        if count:
            # The siblings are contiguous in the encoding: the path node goes
            # between the ones before it and the ones after it.
            split, end = at + position * HASH_LEN, at + count * HASH_LEN
            if tagged:
                reset()
                update(join((headers[count + 1], data[at:split], current, data[split:end])))
                current = digest()
            else:
                current = hash_group(rule, (*_split_hashes(data, at, position), current,
                                            *_split_hashes(data, split, count - position)))
            at = end
    return current == data[24:56]



@dataclass(frozen=True)
class ProofLevel(_Frozen):
    """One level of an inclusion proof: the path node's position in its group
    and the other members of the group, in order (none if it was lifted)."""

    __slots__ = ("position", "siblings")

    position: int
    siblings: Tuple[bytes, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _plain_int(self.position))
        object.__setattr__(self, "siblings", _normalize_hashes(self.siblings))


@dataclass(frozen=True, init=False)
class InclusionProof(_Encoded):
    """Proof that ``leaf`` is leaf ``leaf_index`` of the tree of ``tree_size``
    leaves whose root is ``root``. ``levels`` go from the leaves up; ``rule``
    is the tree's hash rule (:mod:`rotortree.rules`).

    A proof from :meth:`from_bytes` or from a snapshot keeps its encoding
    and decodes its fields when one is first read; equality, hashing,
    :meth:`verify`, :meth:`to_bytes` and every field behave as for a proof
    built from its fields."""

    __slots__ = ("root", "leaf", "leaf_index", "tree_size", "arity", "levels", "rule")

    root: bytes
    leaf: bytes
    leaf_index: int
    tree_size: int
    arity: int
    levels: Tuple[ProofLevel, ...]
    rule: str

    # Written out because a slotted dataclass cannot default a field (rule
    # must default to the rule proofs had before rules existed).
    def __init__(self, root: bytes, leaf: bytes, leaf_index: int, tree_size: int,
                 arity: int, levels: Sequence[ProofLevel], rule: str = DEFAULT_RULE) -> None:
        for name, value in (("root", root), ("leaf", leaf), ("leaf_index", leaf_index),
                            ("tree_size", tree_size), ("arity", arity), ("levels", levels),
                            ("rule", rule)):
            _object_setattr(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", _normalize_bytes(self.root))
        object.__setattr__(self, "leaf", _normalize_bytes(self.leaf))
        for name in ("leaf_index", "tree_size", "arity"):
            object.__setattr__(self, name, _plain_int(getattr(self, name)))
        if isinstance(self.levels, list):
            object.__setattr__(self, "levels", tuple(self.levels))

    @classmethod
    def _from_encoded(cls, data: bytes) -> "InclusionProof":
        """A proof over ``data``, a structurally valid version-2 encoding
        (plain bytes, checked by :meth:`from_bytes` or written by the C
        core); its fields are decoded on first access."""
        proof = _new_object(cls)
        _set_encoded(proof, data)
        return proof

    def __getattr__(self, name: str) -> Any:
        # Reached only for a slot that is not set: a proof kept encoded
        # decodes all its fields at the first read of one.
        if name == "_encoded":  # a proof built from its fields
            return None
        data = self._encoded
        if data is None or name not in _INCLUSION_FIELDS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        _decode_inclusion(self, data)
        return _object_getattribute(self, name)

    @property
    def level_count(self) -> int:
        data = self._encoded
        return data[6] if data is not None else len(self.levels)

    def __repr__(self) -> str:
        # Hashes shortened: a proof's siblings run to kilobytes, which is
        # to_dict()'s business, not a repr's.
        return (f"InclusionProof(arity={self.arity}, leaf_index={self.leaf_index}, "
                f"tree_size={self.tree_size}, leaf={_short_hex(self.leaf)}, "
                f"root={_short_hex(self.root)}, {len(self.levels)} levels)")

    # -- verification --------------------------------------------------------

    def verify(self) -> bool:
        """True iff the proof is well formed and its path hashes to ``root``.

        This is a self-consistency check, not a security check: it trusts the
        proof's own ``root``, ``tree_size`` and ``leaf_index``. Leaves are not
        domain-separated from parents, so without a trusted size an internal
        node or a lifted node can pass for a leaf at another index of a tree
        of another size with the same root. Use :meth:`verify_against`.

        Checks the rule (known, and arity 2 for rfc6962), arity (2..255),
        0 <= leaf_index < tree_size <= 2**64-1,
        32-byte hashes, level_count == depth(tree_size), each position equal
        to the base-arity digit of leaf_index, each sibling count equal to
        the size of that group in a tree of tree_size leaves minus one, and
        the recomputed root. Never raises.
        """
        data = self._encoded
        try:
            return self._verify() if data is None else _verify_encoded(data)
        except Exception:  # a safety net: malformed input is False, never an error
            return False

    def _verify(self) -> bool:
        arity, index, size, rule = self.arity, self.leaf_index, self.tree_size, self.rule
        if not (_exact_int(arity) and MIN_ARITY <= arity <= MAX_ARITY):
            return False
        if not _valid_rule(rule, arity):
            return False
        tagged = rule == DEFAULT_RULE
        if not (_exact_int(size) and 1 <= size <= U64_MAX):
            return False
        if not (_exact_int(index) and 0 <= index < size):
            return False
        root, current = self.root, self.leaf
        if not (_is_hash(root) and _is_hash(current)):
            return False
        levels = self.levels
        if not isinstance(levels, tuple) or len(levels) != tree_depth(size, arity):
            return False
        level_len = size
        reset, update, digest = _level_hasher()
        for level in levels:
            if not isinstance(level, ProofLevel):
                return False
            position = index % arity
            if not _exact_int(level.position) or level.position != position:
                return False
            group_start = index - position
            expected = min(arity, level_len - group_start) - 1
            siblings = level.siblings
            if not _is_hash_seq(siblings, expected):
                return False
            if expected and tagged:  # the default rule, inlined: the common case
                reset()
                update(b"".join((_PARENT_HEADERS[expected + 1], *siblings[:position], current,
                                 *siblings[position:])))
                current = digest()
            elif expected:
                current = hash_group(rule, (*siblings[:position], current, *siblings[position:]))
            index //= arity
            level_len = (level_len + arity - 1) // arity
        return current == root

    def verify_against(self, trusted_root: bytes, trusted_size: int, *,
                       rule: Optional[str] = None) -> bool:
        """True iff ``leaf`` is leaf ``leaf_index`` of the tree of
        ``trusted_size`` leaves whose root is ``trusted_root``.

        ``rule``, when given, is the hash rule the verifier's tree uses: a
        proof of another rule raises :class:`~rotortree.RuleMismatchError`
        (the one exception this method raises; an unknown ``rule`` raises
        InvalidArgumentError), since it names a configuration error, not a
        forged proof.

        ``trusted_root`` and ``trusted_size`` are what the verifier trusts
        (for instance a signed tree head); the proof's own claims are data.
        The proof must carry exactly that root and size, and its path must
        hash to the root. With the size fixed, the depth, every group's
        member count and every position on the path are fixed, so a proof
        for any (leaf, index) that is not in that tree needs a BLAKE3
        collision. Never raises: malformed arguments give False.
        """
        if rule is not None:
            check_same_rule(known_rule(rule), self.rule,
                            "the inclusion proof")
        trusted = trusted_root_bytes(trusted_root)
        size = trusted_size_int(trusted_size)
        if trusted is None or size is None:
            return False
        data = self._encoded
        if data is not None:  # the claims straight from the encoding, nothing decoded
            try:
                return (_HEADER.unpack_from(data)[6] == size and data[24:56] == trusted
                        and _verify_encoded(data))
            except Exception:  # as in verify: malformed input is False, never an error
                return False
        try:
            return self.tree_size == size and self.root == trusted and self.verify()
        except Exception:  # only reachable with objects forced past the constructor
            return False

    # -- encoding ------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The version-2 binary form (see the module docstring)."""
        data: Optional[bytes] = self._encoded
        if data is not None:  # what decoding the fields and encoding them again gives
            return data
        arity = _check_encodable_int("arity", self.arity, MIN_ARITY, MAX_ARITY)
        code = _check_encodable_rule(self.rule, arity)
        leaf_index = _check_encodable_int("leaf_index", self.leaf_index, 0, U64_MAX)
        tree_size = _check_encodable_int("tree_size", self.tree_size, 0, U64_MAX)
        root = _check_encodable_hash("root", self.root)
        leaf = _check_encodable_hash("leaf", self.leaf)
        levels = _check_encodable_levels(self.levels, ProofLevel)
        parts = [
            _HEADER.pack(INCLUSION_MAGIC, FORMAT_VERSION, arity, len(levels), code,
                         leaf_index, tree_size),
            root,
            leaf,
        ]
        for i, level in enumerate(levels):
            position = _check_encodable_int(f"levels[{i}].position", level.position, 0, _U8_MAX)
            siblings = _check_encodable_hashes(f"levels[{i}].siblings", level.siblings)
            parts.append(bytes((position, len(siblings))))
            parts.extend(siblings)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: BytesLike) -> InclusionProof:
        """Decode :meth:`to_bytes` output from any bytes-like object.

        Raises :class:`InvalidProofError` on a structural problem; the result
        may still fail :meth:`verify`.
        """
        buf = _byte_view(data)
        if type(buf) is not bytes:  # a bytes subclass: keep plain bytes only
            buf = bytes(buf)
        what = "inclusion proof"
        _, level_count, _, _, _ = _decode_header(buf, INCLUSION_MAGIC, what)
        # The structure is checked here, in full; the fields are decoded on
        # first access (_decode_inclusion), which then cannot fail.
        at, end = _HEADER_LEN, len(buf)
        for number in range(level_count):
            if end - at < 2:
                raise InvalidProofError(f"{what} truncated in level {number} of {level_count}")
            at += 2 + buf[at + 1] * HASH_LEN
            if at > end:
                raise InvalidProofError(
                    f"{what} truncated in the siblings of level {number} of {level_count}"
                )
        if at != end:
            raise InvalidProofError(f"{what}: {end - at} trailing bytes after {at}")
        if buf[4] == _RULELESS_VERSION:
            # Kept as the version-2 bytes of the same proof (rule 0), which
            # is what encoding its fields gives.
            buf = b"".join((buf[:4], bytes((FORMAT_VERSION,)), buf[5:]))
        return cls._from_encoded(buf)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (hashes as lowercase hex); see the module docstring."""
        self.to_bytes()  # the same encodability checks as the binary form
        return {
            "type": "inclusion",
            "rule": self.rule,
            "arity": self.arity,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf": self.leaf.hex(),
            "root": self.root.hex(),
            "level_count": len(self.levels),
            "levels": [
                {
                    "position": level.position,
                    "sibling_count": len(level.siblings),
                    "siblings": [sibling.hex() for sibling in level.siblings],
                }
                for level in self.levels
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, arity: Optional[int] = None,
                  rule: Optional[str] = None) -> InclusionProof:
        """Decode :meth:`to_dict` output, or a vector's proof object with
        ``arity=`` (and ``rule=``). A ``"verified"`` key is ignored. Raises
        :class:`InvalidProofError` on missing or unknown keys, wrong types,
        bad hex, out-of-range numbers or counts that disagree with lists."""
        where = "inclusion proof"
        d = _check_mapping(d, _INCLUSION_KEYS, where)
        _check_type(d, "inclusion", where)
        proof_arity = _dict_arity(d, arity, where)
        proof_rule = _dict_rule(d, rule, proof_arity, where)
        leaf_index = _dict_int(d, "leaf_index", where, 0, U64_MAX)
        tree_size = _dict_int(d, "tree_size", where, 0, U64_MAX)
        leaf = _hex_hash(_dict_get(d, "leaf", where), f"{where}: leaf")
        root = _hex_hash(_dict_get(d, "root", where), f"{where}: root")
        levels = []
        for number, raw in enumerate(_dict_levels(d, where)):
            at = f"{where}: levels[{number}]"
            raw = _check_mapping(raw, _INCLUSION_LEVEL_KEYS, at)
            position = _dict_int(raw, "position", at, 0, _U8_MAX)
            count = _dict_int(raw, "sibling_count", at, 0, _U8_MAX)
            siblings = _hex_list(_dict_get(raw, "siblings", at), f"{at}.siblings")
            if len(siblings) != count:
                raise InvalidProofError(
                    f"{at}: sibling_count {count} but {len(siblings)} siblings"
                )
            levels.append(ProofLevel(position, siblings))
        return cls(root, leaf, leaf_index, tree_size, proof_arity, tuple(levels), proof_rule)


# -- consistency proofs --------------------------------------------------------


@dataclass(frozen=True)
class ConsistencyLevel(_Frozen):
    """One level of a consistency proof: the shared hashes (in both trees)
    and the new hashes (only in the new tree) of the old boundary's group."""

    __slots__ = ("shared", "new")

    shared: Tuple[bytes, ...]
    new: Tuple[bytes, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shared", _normalize_hashes(self.shared))
        object.__setattr__(self, "new", _normalize_hashes(self.new))


@dataclass(frozen=True, init=False)
class ConsistencyProof(_Frozen):
    """Proof that the tree of ``old_size`` leaves (root ``old_root``) is a
    prefix of the tree of ``new_size`` leaves (root ``new_root``), both
    hashed under ``rule``."""

    __slots__ = ("arity", "old_size", "new_size", "old_root", "new_root", "levels", "rule")

    arity: int
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    levels: Tuple[ConsistencyLevel, ...]
    rule: str

    def __init__(self, arity: int, old_size: int, new_size: int, old_root: bytes,
                 new_root: bytes, levels: Sequence[ConsistencyLevel],
                 rule: str = DEFAULT_RULE) -> None:
        for name, value in (("arity", arity), ("old_size", old_size), ("new_size", new_size),
                            ("old_root", old_root), ("new_root", new_root),
                            ("levels", levels), ("rule", rule)):
            _object_setattr(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        object.__setattr__(self, "old_root", _normalize_bytes(self.old_root))
        object.__setattr__(self, "new_root", _normalize_bytes(self.new_root))
        for name in ("arity", "old_size", "new_size"):
            object.__setattr__(self, name, _plain_int(getattr(self, name)))
        if isinstance(self.levels, list):
            object.__setattr__(self, "levels", tuple(self.levels))

    @property
    def level_count(self) -> int:
        return len(self.levels)

    def __repr__(self) -> str:
        # Hashes shortened: the full proof is to_dict()'s business.
        return (f"ConsistencyProof(arity={self.arity}, {self.old_size} -> {self.new_size} "
                f"leaves, old_root={_short_hex(self.old_root)}, "
                f"new_root={_short_hex(self.new_root)}, {len(self.levels)} levels)")

    # -- verification --------------------------------------------------------

    def verify(self) -> bool:
        """True iff both roots are recomputed from the proof.

        A self-consistency check, not a security check: it trusts the sizes
        the proof carries, and a root does not fix its tree's size (a proof
        "4 -> 8 leaves" can hold between the real roots of 8 and 16 leaves).
        Use :meth:`verify_against` with the sizes you trust.

        The old root comes from the shared hashes alone, the new root from
        the shared and new hashes, level by level (docs/spec.md §3). Sizes must
        satisfy 1 <= old_size <= new_size <= 2**64-1 and every count must be
        exactly what they imply; old_size == new_size carries no levels and
        holds iff old_root == new_root. Never raises.
        """
        try:
            return self._walk(None)
        except Exception:  # a safety net: malformed input is False, never an error
            return False

    def _walk(self, boundaries: Optional[List[bytes]]) -> bool:
        """Verify; if ``boundaries`` is a list, append to it, per level l, the
        new tree's value of the old boundary's group parent (node l+1 of the
        new boundary path), for :meth:`update_inclusion_proof`."""
        arity, old_size, new_size, rule = self.arity, self.old_size, self.new_size, self.rule
        if not (_exact_int(arity) and MIN_ARITY <= arity <= MAX_ARITY):
            return False
        if not _valid_rule(rule, arity):
            return False
        if not (_exact_int(old_size) and _exact_int(new_size)
                and 1 <= old_size <= new_size <= U64_MAX):
            return False
        old_root, new_root, levels = self.old_root, self.new_root, self.levels
        if not (_is_hash(old_root) and _is_hash(new_root) and isinstance(levels, tuple)):
            return False
        if old_size == new_size:
            return not levels and old_root == new_root
        if len(levels) != tree_depth(new_size, arity):
            return False
        old_len, new_len = old_size, new_size
        old_node = new_node = b""
        for number, level in enumerate(levels):
            # len(levels) == depth(new_size), so new_len > 1 here.
            if not isinstance(level, ConsistencyLevel):
                return False
            boundary = old_len - 1
            boundary_pos = boundary % arity
            group_start = boundary - boundary_pos
            shared, new = level.shared, level.new
            new_count = min(new_len, group_start + arity) - boundary - 1
            if number == 0:
                if not (_is_hash_seq(shared, boundary_pos + 1) and _is_hash_seq(new, new_count)):
                    return False
                old_node = hash_group(rule, shared)
                new_node = hash_group(rule, (*shared, *new))
            else:
                if not (_is_hash_seq(shared, boundary_pos) and _is_hash_seq(new, new_count)):
                    return False
                old_node = hash_group(rule, (*shared, old_node))
                new_node = hash_group(rule, (*shared, new_node, *new))
            if boundaries is not None:
                boundaries.append(new_node)
            old_len = (old_len + arity - 1) // arity
            new_len = (new_len + arity - 1) // arity
        return old_node == old_root and new_node == new_root

    def verify_against(self, old_root: bytes, old_size: int,
                       new_root: bytes, new_size: int, *, rule: Optional[str] = None) -> bool:
        """True iff the tree of ``old_size`` leaves with root ``old_root`` is
        a prefix of the tree of ``new_size`` leaves with root ``new_root``.

        All four values are what the verifier trusts (two signed tree heads,
        say); the proof must carry exactly them and recompute both roots.
        The sizes fix the shape of both boundary paths, so a false statement
        needs a BLAKE3 collision. The new size is not implied by the new
        root: a proof can recompute a real new root under a wrong new size,
        which is why it must be trusted too. Never raises, except that a
        ``rule`` given and different from the proof's raises
        :class:`~rotortree.RuleMismatchError` (see
        :meth:`InclusionProof.verify_against`).
        """
        if rule is not None:
            check_same_rule(known_rule(rule), self.rule,
                            "the consistency proof")
        old, new = trusted_root_bytes(old_root), trusted_root_bytes(new_root)
        old_count, new_count = trusted_size_int(old_size), trusted_size_int(new_size)
        try:
            return (old is not None and new is not None and old_count is not None
                    and new_count is not None
                    and self.old_size == old_count and self.new_size == new_count
                    and self.old_root == old and self.new_root == new and self.verify())
        except Exception:  # only reachable with objects forced past the constructor
            return False

    # -- inclusion proof update ----------------------------------------------

    def update_inclusion_proof(self, old_proof: InclusionProof) -> InclusionProof:
        """The inclusion proof of ``old_proof``'s leaf against ``new_root``.

        ``old_proof`` must verify against ``old_root`` for a tree of
        ``old_size`` leaves of the same arity; only data in the two proofs is
        used. The result equals a proof generated from the new tree.

        Nothing here is trusted: the result is exactly as trustworthy as its
        inputs. Check it with ``verify_against(trusted_new_root,
        trusted_new_size)`` (a forged pair of inputs gives a proof for a
        wrong size, which that check rejects).
        Raises :class:`InvalidArgumentError` if old_size == new_size (as the
        Rust crate does: there is nothing to update), and
        :class:`InvalidProofError` if this proof does not verify or
        ``old_proof`` does not fit it (the two proofs are inconsistent).
        """
        if not isinstance(old_proof, InclusionProof):
            raise ArgumentTypeError(
                f"old_proof must be an InclusionProof, not {type(old_proof).__name__}"
            )
        if _is_int(self.old_size) and self.old_size == self.new_size:
            raise InvalidArgumentError(
                "old_size == new_size: the tree did not grow, there is nothing to update"
            )
        boundaries: List[bytes] = []
        try:
            verified = self._walk(boundaries)
        except Exception:
            verified = False
        if not verified:
            raise InvalidProofError("the consistency proof does not verify")
        check_same_rule(self.rule, old_proof.rule, "the inclusion proof")
        if old_proof.arity != self.arity:
            raise InvalidProofError(
                f"arity mismatch: inclusion proof {old_proof.arity!r}, "
                f"consistency proof {self.arity}"
            )
        if old_proof.tree_size != self.old_size:
            raise InvalidProofError(
                f"the inclusion proof is for a tree of {old_proof.tree_size!r} leaves, "
                f"the consistency proof starts at {self.old_size}"
            )
        if not old_proof.verify_against(self.old_root, self.old_size):
            raise InvalidProofError(
                "the inclusion proof does not verify against the consistency proof's old_root"
            )

        arity = self.arity
        index = old_proof.leaf_index
        old_len = self.old_size
        old_levels = old_proof.levels
        levels: List[ProofLevel] = []
        for number, level in enumerate(self.levels):
            position = index % arity
            boundary = old_len - 1
            if index - position != boundary - boundary % arity:
                # The path's group lies wholly before the old boundary's
                # group: complete in both trees, so unchanged. (Above the
                # old depth the path is always in the boundary group, so
                # this level exists in the old proof.)
                levels.append(old_levels[number])
            else:
                # The boundary group: shared hashes, the new value of the
                # boundary node (recomputed from the level below; at level 0
                # it is a leaf, among the shared hashes) and the new hashes.
                if number == 0:
                    members = (*level.shared, *level.new)
                else:
                    members = (*level.shared, boundaries[number - 1], *level.new)
                levels.append(ProofLevel(position, members[:position] + members[position + 1:]))
            index //= arity
            old_len = (old_len + arity - 1) // arity
        proof = InclusionProof(
            root=self.new_root,
            leaf=old_proof.leaf,
            leaf_index=old_proof.leaf_index,
            tree_size=self.new_size,
            arity=arity,
            levels=tuple(levels),
            rule=self.rule,
        )
        if not proof.verify():  # only a hash collision between the two proofs gets here
            raise InvalidArgumentError("the inclusion and consistency proofs disagree")
        return proof

    # -- encoding ------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The version-2 binary form (see the module docstring)."""
        arity = _check_encodable_int("arity", self.arity, MIN_ARITY, MAX_ARITY)
        code = _check_encodable_rule(self.rule, arity)
        old_size = _check_encodable_int("old_size", self.old_size, 0, U64_MAX)
        new_size = _check_encodable_int("new_size", self.new_size, 0, U64_MAX)
        old_root = _check_encodable_hash("old_root", self.old_root)
        new_root = _check_encodable_hash("new_root", self.new_root)
        levels = _check_encodable_levels(self.levels, ConsistencyLevel)
        parts = [
            _HEADER.pack(CONSISTENCY_MAGIC, FORMAT_VERSION, arity, len(levels), code,
                         old_size, new_size),
            old_root,
            new_root,
        ]
        for i, level in enumerate(levels):
            shared = _check_encodable_hashes(f"levels[{i}].shared", level.shared)
            new = _check_encodable_hashes(f"levels[{i}].new", level.new)
            parts.append(bytes((len(shared), len(new))))
            parts.extend(shared)
            parts.extend(new)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: BytesLike) -> ConsistencyProof:
        """Decode :meth:`to_bytes` output from any bytes-like object.

        Raises :class:`InvalidProofError` on a structural problem; the result
        may still fail :meth:`verify`.
        """
        buf = _byte_view(data)
        what = "consistency proof"
        arity, level_count, old_size, new_size, rule = _decode_header(
            buf, CONSISTENCY_MAGIC, what)
        old_root = buf[24:56]
        new_root = buf[56:_HEADER_LEN]
        at, end = _HEADER_LEN, len(buf)
        levels = []
        for number in range(level_count):
            if end - at < 2:
                raise InvalidProofError(f"{what} truncated in level {number} of {level_count}")
            shared_count, new_count = buf[at], buf[at + 1]
            at += 2
            if end - at < (shared_count + new_count) * HASH_LEN:
                raise InvalidProofError(
                    f"{what} truncated in the hashes of level {number} of {level_count}"
                )
            shared = _split_hashes(buf, at, shared_count)
            at += shared_count * HASH_LEN
            new = _split_hashes(buf, at, new_count)
            at += new_count * HASH_LEN
            levels.append(ConsistencyLevel._trusted(shared, new))
        if at != end:
            raise InvalidProofError(f"{what}: {end - at} trailing bytes after {at}")
        proof: ConsistencyProof = cls._trusted(arity, old_size, new_size, old_root, new_root,
                                               tuple(levels), rule)
        return proof

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (hashes as lowercase hex); see the module docstring."""
        self.to_bytes()  # the same encodability checks as the binary form
        return {
            "type": "consistency",
            "rule": self.rule,
            "arity": self.arity,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": self.old_root.hex(),
            "new_root": self.new_root.hex(),
            "level_count": len(self.levels),
            "levels": [
                {
                    "shared_count": len(level.shared),
                    "new_count": len(level.new),
                    "hashes": [h.hex() for h in level.shared] + [h.hex() for h in level.new],
                }
                for level in self.levels
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, arity: Optional[int] = None,
                  rule: Optional[str] = None) -> ConsistencyProof:
        """Decode :meth:`to_dict` output, or a vector's proof object with
        ``arity=`` (and ``rule=``). A ``"verified"`` key is ignored. Raises
        :class:`InvalidProofError` on missing or unknown keys, wrong types,
        bad hex, out-of-range numbers or counts that disagree with lists."""
        where = "consistency proof"
        d = _check_mapping(d, _CONSISTENCY_KEYS, where)
        _check_type(d, "consistency", where)
        proof_arity = _dict_arity(d, arity, where)
        proof_rule = _dict_rule(d, rule, proof_arity, where)
        old_size = _dict_int(d, "old_size", where, 0, U64_MAX)
        new_size = _dict_int(d, "new_size", where, 0, U64_MAX)
        old_root = _hex_hash(_dict_get(d, "old_root", where), f"{where}: old_root")
        new_root = _hex_hash(_dict_get(d, "new_root", where), f"{where}: new_root")
        levels = []
        for number, raw in enumerate(_dict_levels(d, where)):
            at = f"{where}: levels[{number}]"
            raw = _check_mapping(raw, _CONSISTENCY_LEVEL_KEYS, at)
            shared_count = _dict_int(raw, "shared_count", at, 0, _U8_MAX)
            new_count = _dict_int(raw, "new_count", at, 0, _U8_MAX)
            hashes = _hex_list(_dict_get(raw, "hashes", at), f"{at}.hashes")
            if len(hashes) != shared_count + new_count:
                raise InvalidProofError(
                    f"{at}: shared_count {shared_count} + new_count {new_count} "
                    f"but {len(hashes)} hashes"
                )
            levels.append(ConsistencyLevel(hashes[:shared_count], hashes[shared_count:]))
        return cls(proof_arity, old_size, new_size, old_root, new_root, tuple(levels),
                   proof_rule)
