"""Where a sharded tree lives (a local directory or an fsspec URL) and the
layout of its files.

A sharded tree is a directory of:

- ``seg-<j>-<leaves>.rts``, one per aligned segment ``j`` of
  ``segment_leaves = arity ** k`` leaves (all full but the last): a header,
  then every level of the segment's own tree, leaves first;
- ``top-<size>.rtt``: a header, then every level of the tree over the
  segment roots (levels k.. of the whole tree);
- ``manifest.json``, written last: arity, rule, size, segment size, the top
  file's name and the root.

Names carry the leaf counts, so an append writes a new right-edge segment
and a new top next to the old ones and switches over by replacing the
manifest: a build or append that fails midway leaves the manifest, and the
files it names, as they were.

Headers (little-endian, 56 bytes): magic (``RTSG`` segment, ``RTTP`` top),
version u8 = 1, arity u8, level count u8, reserved u8, index u64 (the
segment's index; 0 for the top), leaf count u64, root (32 bytes).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import uuid
from typing import Any, Dict, Iterable, List, Optional

from .._native import HASH_LEN
from ..errors import CorruptionError, LeafSourceError
from ..storage.formats import level_lengths
from ..storage.io import replace_file, write_all
from ._sources import is_local, local_path, url_filesystem

HEADER = struct.Struct("<4sBBBBQQ32s")
SEGMENT_MAGIC = b"RTSG"
TOP_MAGIC = b"RTTP"
VERSION = 1
MANIFEST = "manifest.json"
FORMAT = "rotortree-sharded"


def segment_name(index: int, leaves: int) -> str:
    return f"seg-{index:09d}-{leaves}.rts"


def top_name(size: int) -> str:
    return f"top-{size}.rtt"


def level_offsets(leaves: int, arity: int) -> List[int]:
    """Byte offset of each level of a file holding the tree of ``leaves``."""
    offsets = []
    position = HEADER.size
    for length in level_lengths(leaves, arity):
        offsets.append(position)
        position += length * HASH_LEN
    offsets.append(position)  # the file's size
    return offsets


def encode_header(magic: bytes, arity: int, levels: int, index: int, leaves: int,
                  root: bytes) -> bytes:
    return HEADER.pack(magic, VERSION, arity, levels, 0, index, leaves, root)


def check_header(data: bytes, where: str, magic: bytes, arity: int, index: int, leaves: int,
                 root: Optional[bytes]) -> None:
    """CorruptionError naming ``where`` unless the header is the one expected."""
    if len(data) < HEADER.size:
        raise CorruptionError(f"{where}: truncated header", where)
    got = HEADER.unpack_from(data)
    expected = (magic, VERSION, arity, len(level_lengths(leaves, arity)), 0, index, leaves)
    if got[:7] != expected or (root is not None and got[7] != root):
        raise CorruptionError(f"{where}: header {got[:7]} does not match the manifest's "
                              f"{expected}" + ("" if got[:7] != expected else " (root differs)"),
                              where)


class Store:
    """A directory of a sharded tree."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or url
        self.local = is_local(url)
        if self.local:
            self.path = local_path(self.url)
            self.fs: Any = None
        else:
            self.fs, self.path = url_filesystem(self.url)

    def where(self, name: str) -> str:
        return f"{self.url}/{name}"

    def _full(self, name: str) -> str:
        return os.path.join(self.path, name) if self.local else f"{self.path}/{name}"

    def makedirs(self) -> None:
        try:
            if self.local:
                os.makedirs(self.path, exist_ok=True)
            else:
                self.fs.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise LeafSourceError(f"{self.url}: cannot create the output directory "
                                  f"({error})") from error

    def exists(self, name: str) -> bool:
        full = self._full(name)
        return os.path.exists(full) if self.local else bool(self.fs.exists(full))

    def write(self, name: str, chunks: Iterable[Any]) -> None:
        """Write ``name`` whole or not at all: locally a temporary file,
        fsync and rename; an object store's PUT is already atomic. A task
        retried after its worker died writes the same bytes again."""
        full = self._full(name)
        if self.local:
            tmp = f"{full}.tmp-{uuid.uuid4().hex}"

            def fill(fd: int) -> None:
                offset = 0
                for chunk in chunks:
                    write_all(fd, chunk, offset, tmp)
                    offset += memoryview(chunk).nbytes

            replace_file(full, tmp, True, fill)
        else:
            with self.fs.open(full, "wb") as stream:
                for chunk in chunks:
                    stream.write(chunk)

    def read(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        full = self._full(name)
        try:
            if self.local:
                with open(full, "rb", buffering=0) as stream:
                    stream.seek(offset)
                    return stream.read() if length is None else stream.read(length)
            end = None if length is None else offset + length
            data: bytes = self.fs.cat_file(full, start=offset, end=end)
            return data
        except FileNotFoundError:
            raise CorruptionError(f"{self.where(name)}: missing", self.where(name)) from None
        except OSError as error:
            raise CorruptionError(f"{self.where(name)}: cannot read ({error})",
                                  self.where(name)) from error

    def map(self, name: str) -> Optional[mmap.mmap]:
        """A read-only mapping of a local file (None elsewhere)."""
        if not self.local:
            return None
        full = self._full(name)
        try:
            with open(full, "rb") as stream:
                return mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise CorruptionError(f"{self.where(name)}: missing", self.where(name)) from None
        except (OSError, ValueError) as error:
            raise CorruptionError(f"{self.where(name)}: cannot map ({error})",
                                  self.where(name)) from error

    def remove(self, name: str) -> None:
        """Remove a file no manifest names any more; failures only leave litter."""
        try:
            if self.local:
                os.unlink(self._full(name))
            else:
                self.fs.rm(self._full(name))
        except (OSError, ValueError):
            pass

    def read_manifest(self) -> Optional[Dict[str, Any]]:
        if not self.exists(MANIFEST):
            return None
        text = self.read(MANIFEST)
        try:
            manifest = json.loads(text)
        except ValueError as error:
            raise CorruptionError(f"{self.where(MANIFEST)}: not JSON ({error})",
                                  self.where(MANIFEST)) from error
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CorruptionError(f"{self.where(MANIFEST)}: not a rotortree sharded tree",
                                  self.where(MANIFEST))
        return manifest

    def write_manifest(self, manifest: Dict[str, Any]) -> None:
        self.write(MANIFEST, [json.dumps(manifest, indent=1, sort_keys=True).encode()])
