"""On-disk formats of durable trees, and ``LeanIMT.save`` / ``LeanIMT.load``.

All integers are little-endian. Every checksum is CRC-32 as computed by
``zlib.crc32``, except the frames of version-2 WAL segments (CRC-32C, see
below). Nodes and leaves are 32 raw bytes.

Durable tree directory (``RotorTree.open(path)``)
-------------------------------------------------

``LOCK``
    Empty-ish lock file (it holds the owner's pid, for diagnostics only).
    ``fcntl.flock(LOCK_EX | LOCK_NB)`` on it and on the directory itself
    makes a directory single-owner; the directory lock still holds if
    ``LOCK`` is deleted. Read-only opens take only a shared lock on the
    directory.

``synced``
    The sync record: the highest WAL sequence number ever reported durable.
    Two 32-byte slots at offsets 0 and 512, written alternately (a torn
    write spoils one slot only; the valid slot with the higher seq counts)::

        magic "RTSY" | version u16 (=1) | slot u16 | seq u64 | 0 u64 |
        crc32 u32 over the previous 24 bytes | 0 u32

    Each group commit fsyncs the WAL, then writes and fdatasyncs the record,
    then reports the entries durable; recovery that finds fewer entries than
    the record names reports corruption instead of a torn tail.

``meta``
    The checkpoint record, replaced atomically (written to ``meta.tmp``,
    fsynced, renamed over ``meta``, directory fsynced)::

        magic "RTMD" | version u16 (=2) | arity u16 | max_depth u16 |
        level_count u16 | flags u32 | size u64 | last_seq u64 |
        wal_gen u64 | root[32] (zeros when empty)                      72 bytes
        rule u8 | 7 zero bytes (version 2 only)                         8 bytes
        level_count times:  stored u64 | crc32 u32 | 0 u32 | last[32]  48 bytes
        crc32 u32 over everything before it

    ``rule`` is the hash rule's number (:mod:`rotortree.rules`); version 1
    records, from before rules, have no rule field and mean rotortree-0.15.
    ``level_count`` is ``depth(size) + 1`` (0 for the empty tree).
    ``stored`` is how many leading nodes of the level its level file holds:
    ``size`` for level 0 (leaves never change), ``len_l - 1`` for levels
    l >= 1, whose last node may still change on later inserts and therefore
    lives in the record (``last``) instead of the file. ``crc32`` covers the
    file's first ``stored * 32`` bytes. ``last_seq`` is the sequence number of
    the last WAL entry the checkpoint contains; ``wal_gen`` the first WAL
    segment that may hold later entries (older segments are garbage).
    A fresh directory gets a record with size 0 before anything else, so
    arity and max_depth are always on disk. ``flags`` bit 0: the directory
    keeps a sync record (a missing one is damage, not a tree written before
    the record existed); bit 1: the tree keeps a leaf index (not stored:
    rebuilt from the recovered leaves on every open); other bits are 0.

``level-LL.dat`` (LL = two decimal digits, the level)
    Raw nodes, node i at byte offset 32 * i, no header (so the file can be
    memory-mapped and read in place). Append-only: bytes before
    ``stored * 32`` of the committed record are never rewritten. The file
    may be longer than that (nodes of a checkpoint that did not commit, or
    zeros preallocated with ftruncate for memory-mapped levels); those
    bytes mean nothing.

``wal-GGGGGGGGGGGGGGGG.log`` (G = 16 hex digits, the generation)
    Write-ahead log segment. A 32-byte header::

        magic "RTWS" | version u16 (=2) | arity u16 | max_depth u16 | 0 u16 |
        gen u64 | 0 u64 | crc32 u32 over the previous 28 bytes

    then frames, back to back (each a multiple of 8 bytes)::

        magic "RTWF" | 0 u32 | seq u64 | first_index u64 | count u64 |
        synced u64 | crc u32 | 0 u32 | leaves[32 * count]

    The version names the frames' checksum: 2, CRC-32C (Castagnoli, the
    SSE4.2 ``crc32`` instruction's; ``rotortree.storage.crc32c``), which is
    what this version writes; 1, zlib's CRC-32 (segments written by older
    versions, still read). The segment header's own checksum is zlib's
    CRC-32 in both, so the version is checked before it is used.

    ``seq`` numbers entries 1, 2, 3, ... over the life of the tree (one entry
    per insert / insert_many call), ``first_index`` is the tree size before
    the entry, ``synced`` is the highest seq already known durable when the
    frame was written (a frame of a segment after a tear that says so shows
    the tear is damage to acknowledged data), and the crc covers the first
    40 header bytes and the leaves. Frames are read strictly one after the
    other: a frame's leaves are never searched for frames. A
    checkpoint starts a new segment, so that segments wholly covered by a
    committed checkpoint can be deleted ("WAL truncation").

Exported in-memory tree (``LeanIMT.save(path)``)
------------------------------------------------

One file, written atomically (``<path>.tmp-<pid>``, fsync, rename, directory
fsync)::

    magic "RTSV" | version u16 (=2) | arity u16 | max_depth u16 |
    level_count u16 | flags u32 | size u64 | root[32] (zeros when empty) 56 bytes
    rule u8 | 7 zero bytes (version 2 only)                           8 bytes
    level_count times: count u64 | crc32 u32 | 0 u32                  16 bytes
    crc32 u32 | 0 u32 over the header and table                        8 bytes
    level 0 nodes, level 1 nodes, ..., level depth nodes (all nodes)

``flags`` bit 0: the tree keeps a leaf index, which ``load`` rebuilds from
the leaves; other bits are 0 (a file with others is refused).
``rule`` is the hash rule's number; version 1 files, from before rules,
have no rule field and mean rotortree-0.15.

``load(verify=True)`` checks every level's crc and rehashes every level to
the root (in parallel, ``compute_root``; see :func:`first_bad_level`), so
any change to a stored node is caught, whatever its crc; ``verify=False``
checks only the header's crc, the file's length and that the top node is
the root. Neither
rehashes the tree to rebuild it: the nodes are copied into the tree, or with
``mmap=True`` served in place from a shared read-only mapping of the file.

Modules
-------

:mod:`rotortree.storage.formats`
    the encodings above and the tree shape they rely on;
:mod:`rotortree.storage.io`
    writes, fsyncs, renames and mappings, through system call seams that
    tests replace to inject failures; failures are DurabilityError;
:mod:`rotortree.storage.verify`
    rehashing stored levels to the root;
:mod:`rotortree.storage.savefile`
    ``LeanIMT.save`` / ``LeanIMT.load``.

The package re-exports their public names.
"""

from __future__ import annotations

from . import formats, io, savefile, verify
from .formats import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .savefile import *  # noqa: F401,F403
from .verify import *  # noqa: F401,F403

__all__ = [*formats.__all__, *io.__all__, *savefile.__all__, *verify.__all__]
