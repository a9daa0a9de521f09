"""Durable trees: a LeanIMT backed by a write-ahead log and checkpoints.

``RotorTree.open(path)`` opens a directory holding a tree (``create=True``
creates it). Every
insert is appended to a write-ahead log (WAL) before it reaches the in-memory
tree; a background thread (or you, with ``flush()``) fsyncs the log, and the
token an insert returns tells when its entry is on disk. Checkpoints write the
tree's new nodes to append-only level files plus a small metadata record, so
that reopening does not replay the whole history; levels below ``mmap_levels``
are then served from memory-mapped level files instead of RAM.

The file formats are described in :mod:`rotortree.storage`.

Guarantees
----------
* An entry whose token reported durable (``wait()`` returned True, or
  ``insert_durable`` / ``flush`` returned) survives a crash of the process or
  of the machine, provided fsync keeps its promise.
* Before an entry is reported durable, its sequence number is fsynced to
  the sync record (``synced``). Recovery replays the WAL after the last
  checkpoint and drops a torn tail (a frame cut short, damaged, or not the
  next entry, and everything after it) only if it lies beyond that record:
  acknowledged entries that are missing (a deleted, emptied or truncated
  segment, a damaged frame) raise :class:`~rotortree.CorruptionError`
  naming the file. What cannot be detected: the loss of entries never
  acknowledged (they may legitimately be torn), and an older copy of the
  sync record put back together with an older WAL.
* With ``FlushPolicy(..., acknowledge="wal")`` an entry is reported
  durable after the WAL fsync alone, and a recorder thread writes the sync
  record after it (at most once per 10 ms, concurrently with later
  rounds), only ever claiming entries whose WAL fsync completed. Survival
  of acknowledged entries is the same as above, and no crash at any point
  makes recovery report damage. Detection is weaker for the newest
  acknowledged entries, those the record does not claim yet (at most
  10 ms plus one record write after their round, longer under heavy load;
  ``stats()["recorded_seq"]``): lost to WAL damage, not a crash, they are
  taken for a torn tail (cut and logged) instead of raising
  :class:`~rotortree.CorruptionError`. ``flush()`` and ``close()`` bring
  the record up to date before returning (``close()`` also after an fsync
  failure, up to what was acknowledged before it). A failed write of the record is
  retried; a failed fdatasync of it makes the tree refuse writes but
  withdraws no acknowledgement.
* ``verify_checkpoint=True`` rehashes every stored level to the recorded
  root, so a changed node is caught even when its CRC was kept valid; the
  tree is never opened with a wrong root or a wrong stored node.
* A call that fails changes nothing: not the in-memory tree, not the data the
  files commit to, not the open descriptors (a failed insert's partial frame
  is truncated away; a failed checkpoint leaves the previous metadata record,
  the committed prefix of every level file and every WAL entry as they were,
  and deletes the WAL segment it started unless an insert already went
  there: it may leave bytes past the committed end of level files, which
  recovery ignores). The exception is ``insert_durable``,
  whose insert is done before its fsync fails. An fsync failure anywhere
  makes the tree refuse every later write (``DurabilityError``) until it is
  reopened, because after a failed fsync the kernel may have dropped the
  unsynced data ("fsyncgate"); a failed write whose partial frame could be
  truncated away does not.
* An insert's frame is checksummed (CRC-32C) and written in C without the
  GIL, by a writer thread while the batch is hashed when the batch is 64 KiB
  or more; the batch is published to readers only once its whole frame is
  written, under the tree's write lock. Segments reserve disk blocks ahead
  of their end without changing their size, and the writer thread starts
  the writeback of what it wrote (hints only: the fsync makes entries
  durable). If the write fails, the hashed
  batch is discarded (the last node of each level, which hashing rewrote in
  place, is put back), the partial frame is cut, and the call raises
  ``DurabilityError``; if the insert fails, the written frame is cut. Either
  way the tree and the WAL are as before the call.
* Interrupts: an exception at any point of an insert (a ``KeyboardInterrupt``
  raised as a long C call or pwrite returns, an asynchronous exception)
  leaves the batch either wholly applied, with its WAL entry and sequence
  number committed, or not applied at all, with its frame cut from the WAL;
  ``tree.size`` tells which. The append is recorded before its first side
  effect and resolved from the in-memory tree (the C insert is atomic) by
  the interrupted call, or, if that repair is interrupted too, by the next
  call, ``stats()``, ``close()`` or the finalizer. A long ``insert_many`` is
  not stopped midway: Ctrl-C is raised as soon as the current step returns.
  The entry of an interrupted call is not acknowledged; a later
  ``insert_durable`` or ``flush`` makes it durable with everything before.
* Fork: a forked child (a ``multiprocessing`` worker) closes its copies of
  the tree's descriptors at once, so the directory lock is the parent's
  alone; the child may read the tree as it was at the fork, and every write
  there raises :class:`~rotortree.ClosedTreeError`. All descriptors are
  close-on-exec.

Recovery (``RotorTree.open``)
-----------------------------
1. Lock the directory (``flock`` on ``LOCK`` and on the directory itself,
   which cannot be deleted away under an open tree); read ``meta``
   (CRC-checked always) and the sync record.
2. Map each level file; check its length; with ``verify_checkpoint`` check
   its CRC and rehash every level to the recorded root (``compute_root`` on
   the pool; level 0 and the files are read in place, a level above is
   copied once with its last node from ``meta``). Restore the tree from the
   files without hashing (levels below ``mmap_levels`` are served from the
   mappings, the rest copied).
3. Replay the WAL segments from ``wal_gen`` on, in order, frame after frame,
   while frames are valid and their sequence numbers and first indices
   continue exactly. The first bad frame (short, bad magic, bad CRC, not the
   next entry) is the torn tail; nothing after it in that segment is read.
   If the sync record (or a valid frame of a later segment, read from its
   header) says an entry beyond the replayed ones was acknowledged, that is
   :class:`~rotortree.CorruptionError`. Otherwise the torn tail is truncated
   away, later segments are deleted, and a warning is logged on the
   ``rotortree`` logger (as for every other repair). Replayed segments are
   fsynced (a crashed process may have left them in the page cache only),
   the sync record is advanced to them, and a new segment is started.
4. If ``meta`` has the leaf-index flag (or ``index=True`` was passed), build
   the index from the recovered leaves, on the pool. It is never stored: a
   stored table would have to be rewritten at every checkpoint and checked
   against the leaves on open, which costs about what this build does, and
   a rebuilt index cannot disagree with the leaves whatever the crash left
   behind. The checkpoint's leaves are indexed from the moment level 0 is
   mapped in step 2, on a background thread, into a table sized for the
   checkpoint plus the WAL: the checksum and Python's frame parsing leave a
   core idle, and the table's page faults are taken there too. After the
   replay the replayed leaves are added and the table becomes the tree's
   (``recovery["index_seconds"]`` is this last part, waiting included). A
   recovery that fails in step 2 or 3 waits for the build and frees it.

With ``read_only=True`` steps 1-3 write nothing: a shared lock on the
directory only, and a torn tail is ignored in memory (and logged), not cut.

Threads
-------
All methods may be called from any thread. Inserts are serialised by one lock
(the WAL append and the in-memory insert happen under it); fsync rounds
are serialised by another. Concurrent ``insert_durable`` callers share
fsyncs (group commit): one caller leads a round (fsync the WAL, then write
and fdatasync the sync record unless it lags) covering every entry written
before it started, the others wait at a gate in C, without the GIL, and
return when a round covers them; one of those not covered leads the next
round, after waiting (at most half the last round, never over 2 ms) for as
many writers as the last round covered. The leader acknowledges on the sync
state's condition (for ``token.wait()``) and then wakes every follower at
the gate at once. A round therefore costs two flushes however many callers
it acknowledges, or one with ``acknowledge="wal"``, whose recorder thread
writes the record on its own.
Do not call ``insert_durable``, ``flush`` or ``close`` from a signal
handler: a handler that interrupts its own thread's fsync round or insert
would wait for that thread forever (the locks are not reentrant). Set a
flag in the handler and flush from ordinary code.
Checkpoints are serialised by a third lock and run concurrently with
inserts (they write from a snapshot; writers wait only while the snapshot
is taken and the WAL segment switched). The lock order is
checkpoint -> sync -> write.

Modules
-------
:mod:`.policies` (flush and checkpoint policies), :mod:`.tokens`
(durability tokens and the shared sync state), :mod:`.files` (the file set
and the finalizer), :mod:`.background` (flusher, recorder and checkpointer threads,
the fork hook), :mod:`.opening`, :mod:`.recovery`, :mod:`.wal` (appends and
fsyncs), :mod:`.checkpoints`, and :mod:`.tree` (the ``RotorTree`` class,
which combines them).
"""

from __future__ import annotations

from .policies import DEFAULT_CHECKPOINT_POLICY, CheckpointPolicy, FlushPolicy
from .tokens import DurabilityToken
from .tree import RotorTree

__all__ = ["RotorTree", "FlushPolicy", "CheckpointPolicy", "DurabilityToken",
           "DEFAULT_CHECKPOINT_POLICY"]
