"""I/O helpers of the durable files: every write, fsync, rename and truncate
goes through the system call seams ``sys_pwrite``, ``sys_fsync``,
``sys_fdatasync`` (the sync record only), ``sys_rename`` and
``sys_truncate``, looked up in this module at call time, so tests can inject
failures by replacing them (``monkeypatch.setattr(storage.io, "sys_pwrite",
...)``). Failures are reported as :class:`~rotortree.DurabilityError` with
``operation`` set to ``"write"``, ``"fsync"`` (also for fdatasync),
``"rename"``, ``"truncate"`` or ``"open"``.

WAL frames are the exception: ``rt_wal_append`` writes them in C (its own
fault injection is ``lib.rt_wal_fail_next_write``), unless ``sys_pwrite`` has
been replaced, in which case the durable tree writes them through it."""

from __future__ import annotations

import errno as _errno
import mmap
import os
import zlib
from typing import Any, Callable, Optional

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None  # type: ignore[assignment]

from .._native import ffi
from ..errors import ArgumentTypeError, DurabilityError, InvalidArgumentError

# --------------------------------------------------------------------------
# System call seams (replace in tests to inject failures)


def sys_pwrite(fd: int, data: Any, offset: int) -> int:
    return os.pwrite(fd, data, offset)


def full_fsync(fd: int) -> None:
    """fsync that reaches stable storage. On macOS, fsync() only hands the
    data to the drive, whose cache may lose it on power failure; only
    fcntl(F_FULLFSYNC) asks the drive to flush. File systems that do not
    support it (some network ones) get the plain fsync."""
    full = getattr(fcntl, "F_FULLFSYNC", None)
    if full is not None:
        try:
            fcntl.fcntl(fd, full)
            return
        except OSError as error:
            if error.errno not in (_errno.ENOTSUP, _errno.EOPNOTSUPP, _errno.EINVAL,
                                   _errno.ENOTTY):
                raise
    os.fsync(fd)


def sys_fsync(fd: int) -> None:
    full_fsync(fd)


def sys_fdatasync(fd: int) -> None:
    if getattr(fcntl, "F_FULLFSYNC", None) is not None or not hasattr(os, "fdatasync"):
        full_fsync(fd)  # macOS has no fdatasync, and its fsync is not durable
    else:
        os.fdatasync(fd)


def sys_rename(src: str, dst: str) -> None:
    os.rename(src, dst)


def sys_truncate(fd: int, length: int) -> None:
    os.ftruncate(fd, length)


def io_error(operation: str, path: str, error: BaseException) -> DurabilityError:
    """A DurabilityError for a failed ``operation`` on ``path``."""
    code = getattr(error, "errno", None) or _errno.EIO
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    result = DurabilityError(code, f"{operation} of {path} failed: {reason}")
    result.filename = path
    result.operation = operation
    result.__cause__ = error
    return result


def write_all(fd: int, data: Any, offset: int, path: str) -> None:
    """pwrite all of ``data`` at ``offset`` (looping over short writes)."""
    view = memoryview(data).cast("B")
    try:
        while view.nbytes:
            written = sys_pwrite(fd, view, offset)
            if written <= 0:
                raise OSError(_errno.EIO, "short write")
            view = view[written:]
            offset += written
    except OSError as error:
        raise io_error("write", path, error) from error
    finally:
        view.release()


def fsync_fd(fd: int, path: str) -> None:
    try:
        sys_fsync(fd)
    except OSError as error:
        raise io_error("fsync", path, error) from error


def fdatasync_fd(fd: int, path: str) -> None:
    """fsync for a file overwritten in place (its size never changes): the
    data without the timestamps, which spares a journal commit."""
    try:
        sys_fdatasync(fd)
    except OSError as error:
        raise io_error("fsync", path, error) from error


def truncate_fd(fd: int, length: int, path: str) -> None:
    try:
        sys_truncate(fd, length)
    except OSError as error:
        raise io_error("truncate", path, error) from error


def rename(src: str, dst: str) -> None:
    try:
        sys_rename(src, dst)
    except OSError as error:
        raise io_error("rename", dst, error) from error


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise io_error("open", path, error) from error
    try:
        fsync_fd(fd, path)
    finally:
        os.close(fd)


def open_fd(path: str, flags: int, mode: int = 0o644) -> int:
    try:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as error:
        raise io_error("open", path, error) from error


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def replace_file(path: str, tmp: str, exclusive: bool, write: Callable[[int], None]) -> None:
    """Replace ``path`` with what ``write(fd)`` writes into the temporary
    file ``tmp`` (created, or truncated unless ``exclusive``), then fsync it,
    rename it over ``path`` and fsync the directory. On failure the old file
    is untouched (the temporary is removed); a failed directory fsync leaves
    either version in place, both complete."""
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC))
    try:
        try:
            write(fd)
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` through ``path + ".tmp"`` (see
    :func:`replace_file`)."""
    tmp = path + ".tmp"
    replace_file(path, tmp, False, lambda fd: write_all(fd, data, 0, tmp))


def file_path(path: Any) -> str:
    """``path`` (str, bytes or os.PathLike) as a str; ArgumentTypeError otherwise."""
    try:
        result: "str | bytes" = os.fspath(path)
    except TypeError:
        raise ArgumentTypeError(f"path must be a str or os.PathLike, not "
                                f"{type(path).__name__}") from None
    text = os.fsdecode(result) if isinstance(result, bytes) else result
    if "\0" in text:   # os functions would raise a bare ValueError
        raise InvalidArgumentError(f"path must not contain a NUL character: {text!r:.80}")
    return text


# --------------------------------------------------------------------------
# Memory-mapped stored levels

def map_file(path: str, fd: Optional[int] = None) -> Optional[mmap.mmap]:
    """A read-only shared mapping of the whole file (None if it is empty)."""
    if fd is None:
        try:
            handle = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as error:
            raise io_error("open", path, error) from error
        try:
            return map_file(path, handle)
        finally:
            os.close(handle)
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)


def release_mapping(mapping: Optional[mmap.mmap], *cdatas: Any) -> None:
    """Release cffi views of ``mapping`` and unmap it (when nothing else
    exports it; otherwise the garbage collector unmaps it later)."""
    for cdata in cdatas:
        if cdata is not None:
            try:
                ffi.release(cdata)
            except (ValueError, TypeError):
                pass
    if mapping is not None:
        try:
            mapping.close()
        except BufferError:
            pass


def drop_resident_pages(mapping: Optional[mmap.mmap]) -> None:
    """Let the kernel drop this process's page-table entries of a file
    mapping (the pages stay in the page cache; reads fault them back in):
    verifying a level reads it all, which must not leave it counted as
    resident memory when the point of mapping it is to save RAM."""
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except OSError:
            pass


def crc_of(mapping: Any, nbytes: int) -> int:
    crc = 0
    step = 1 << 24
    with memoryview(mapping) as view:
        for start in range(0, nbytes, step):
            part = view[start:min(nbytes, start + step)]
            crc = zlib.crc32(part, crc)
            part.release()
    return crc


__all__ = [
    "sys_pwrite",
    "sys_fsync",
    "sys_fdatasync",
    "sys_rename",
    "sys_truncate",
    "io_error",
    "write_all",
    "fsync_fd",
    "fdatasync_fd",
    "truncate_fd",
    "rename",
    "fsync_dir",
    "open_fd",
    "unlink_quietly",
    "replace_file",
    "atomic_write",
    "file_path",
    "map_file",
    "release_mapping",
    "drop_resident_pages",
    "crc_of",
]
