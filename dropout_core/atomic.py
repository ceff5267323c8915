"""Never lose a file: write beside the target, fsync, then os.replace over it."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from .errors import DropoutError, UsageError, escape_name, os_reason

TEMP_MARK = ".tensor-dropout-tmp-"  # users find leftovers with: ls -a | grep tensor-dropout-tmp
_LIVE: set[str] = set()  # temporary files being written now, for remove_temporaries()


def remove_temporaries() -> None:
    """Unlink every temporary file this process is writing.

    For a signal handler that is about to ``os._exit``: unwinding with an
    exception from a signal handler can break locks held by worker threads.
    """
    for path in list(_LIVE):
        with contextlib.suppress(OSError):
            os.unlink(path)


def temp_name(target: str) -> str:
    """The temporary file's name: hidden, beside the target, recognisably ours."""
    d, base = os.path.split(target)
    return os.path.join(d, f".{base}{TEMP_MARK}{os.urandom(4).hex()}")


def resolve_target(path: str) -> str:
    """A symlinked target is written through: replace the file the link points to."""
    return os.path.realpath(path) if os.path.islink(path) else path


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def _not_regular(real: str) -> str | None:
    """What ``real`` is when it exists and is no regular file ("a FIFO"), else None."""
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _fd_alias(path: str) -> bool:
    """True for /dev/stdout, /dev/fd/N, /proc/self/fd/N and links to them.

    Following such a link lands on whatever the shell redirected (a pipe, a
    terminal, someone's file): never a file to replace.
    """
    p = os.path.abspath(path)
    for _ in range(40):
        if p.startswith(("/proc/", "/dev/fd/", "/dev/std")):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return False


def _refuse_special(path: str, shown: str) -> None:
    if _fd_alias(path):
        raise DropoutError(f"{shown}: is a file-descriptor alias, not a file; write to stdout "
                           "with '-' instead")
    kind = _not_regular(resolve_target(path))
    if kind:
        raise DropoutError(f"{shown}: is {kind}, not a regular file; it cannot be replaced "
                           "(to stream, write to stdout with '-')")


def check_target(path: str, *, force: bool, inputs: list[str] = (),
                 interface: str = "python", made_dir: str | None = None) -> None:
    """Refuse an output that exists (without force), is an input, or has no directory.

    Devices, FIFOs and sockets are refused too: replacing /dev/null with a
    regular file is what a careless writer does as root.  ``made_dir``: a
    directory the run will create (``--out-dir``) may be missing still.
    """
    from .params import say

    shown = escape_name(path)
    real = resolve_target(path)
    parent = os.path.dirname(os.path.abspath(real)) or "."
    if os.path.isdir(real):
        raise DropoutError(f"{shown}: output is a directory")
    _refuse_special(path, shown)
    if not os.path.isdir(parent):
        if made_dir is not None and os.path.abspath(made_dir) == os.path.abspath(parent):
            return  # nothing can be in the way in a directory that does not exist yet
        raise DropoutError(f"{shown}: output directory {escape_name(parent)} does not exist")
    if os.path.exists(real):
        for src in inputs:
            if src != "-" and os.path.exists(src) and os.path.samefile(src, real):
                raise DropoutError(f"{shown}: output is the input file; use "
                                   f"{say('inplace', interface)} to rewrite it")
        if not force:
            raise DropoutError(f"{shown}: output exists; use {say('force', interface)} to "
                               "replace it")


def check_replaceable(path: str, *, force: bool, interface: str = "python") -> None:
    """--inplace: refuse a file its user protected, unless forced.

    A write-protected file (no write permission for us, or no write bit at all,
    as ``rm`` asks about even for root), and a file of another user that would
    become ours (only root can give it back to its owner, which atomic_write does).
    """
    from .params import say

    real = resolve_target(path)
    try:
        st = os.stat(real)
    except OSError:
        return  # the input's own checks name the problem
    if force:
        return
    shown = escape_name(path)
    hint = f"use {say('force', interface)} to replace it anyway"
    directory = os.path.dirname(os.path.abspath(real)) or "."
    denied = not os.access(real, os.W_OK) and os.access(directory, os.W_OK)
    if not (st.st_mode & 0o222) or denied:  # (a read-only file system is atomic_write's to name)
        raise DropoutError(f"{shown}: is write-protected; {hint}")
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        raise DropoutError(f"{shown}: belongs to another user (uid {st.st_uid}) and would "
                           f"become yours; {hint}")


class CommitGroup:
    """Atomic writes whose durability is paid once for a group of files.

    Each file is written to its temporary file as ``atomic_write`` does, but not
    synced: at ``commit`` every pending temporary file is fsynced (from several
    threads, so the file system commits them together), then each is renamed
    over its target, then each target directory is fsynced once.  After a crash
    every target is old or new and complete, as with one file at a time; what
    the group saves is a journal commit per file.  At most ``limit`` files wait.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._pending: list[tuple[BinaryIO, str, str, str]] = []  # (file, tmp, real, shown)

    def __enter__(self) -> CommitGroup:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None or issubclass(kind, Exception):
            self.commit()  # what was written completely is kept, as file by file it would be
        else:
            self.discard()

    def add(self, f: BinaryIO, tmp: str, real: str, shown: str) -> None:
        self._pending.append((f, tmp, real, shown))
        if len(self._pending) >= self.limit:
            self.commit()

    def commit(self) -> None:
        """Make every pending file durable, then move each over its target."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        from .threads import pool

        done = 0
        try:
            if len(pending) == 1:  # no thread to start for one file
                os.fsync(pending[0][0].fileno())
            else:
                list(pool(min(8, len(pending))).map(lambda item: os.fsync(item[0].fileno()),
                                                    pending))
            for f, tmp, real, _ in pending:
                f.close()
                os.replace(tmp, real)
                _LIVE.discard(tmp)
                done += 1
        except OSError as exc:
            shown = pending[done][3]
            _remove(pending[done:])
            raise DropoutError(f"{shown}: write failed: {os_reason(exc)}; the target is "
                               "unchanged") from None
        except BaseException:
            _remove(pending[done:])
            raise
        for d in dict.fromkeys(os.path.dirname(os.path.abspath(real)) for _, _, real, _ in pending):
            _fsync_dir(d)

    def discard(self) -> None:
        """Remove every pending temporary file: no target changes."""
        pending, self._pending = self._pending, []
        _remove(pending)


def _remove(pending: list) -> None:
    for f, tmp, _, _ in pending:
        f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _LIVE.discard(tmp)


@contextlib.contextmanager
def atomic_write(path: str, *, mode_from: str | None = None,
                 group: CommitGroup | None = None) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it atomically replaces ``path``.

    The new file keeps the permission bits of the file it replaces (or of
    ``mode_from``); on any error the temporary file is removed and ``path`` is
    left as it was.  With ``group``, the sync and the replacement wait for the
    group's commit.
    """
    with atomic_file(path, mode_from=mode_from, group=group) as (f, _):
        yield f


@contextlib.contextmanager
def side_file(target: str) -> Iterator[str]:
    """A hidden scratch file beside ``target`` (its path), removed at the end whatever happens."""
    tmp = temp_name(resolve_target(target))
    _LIVE.add(tmp)
    try:
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            raise DropoutError(f"{escape_name(target)}: cannot create a file in its directory: "
                               f"{e.strerror}") from None
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _LIVE.discard(tmp)


@contextlib.contextmanager
def atomic_file(path: str, *, mode_from: str | None = None,
                group: CommitGroup | None = None) -> Iterator[tuple[BinaryIO, str]]:
    """``atomic_write``, also naming the temporary file: other processes that see the same
    file system may write into it too (a file split over a Dask cluster)."""
    real = resolve_target(path)
    tmp = temp_name(real)
    shown = escape_name(path)
    _refuse_special(path, shown)  # never replace a device, a pipe or a redirected stream
    try:
        st = os.stat(mode_from or real)
        mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode, owner = 0o666 & ~umask, None
    _LIVE.add(tmp)  # before it exists: a signal between open and add would leak it
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        _LIVE.discard(tmp)
        raise DropoutError(f"{shown}: cannot create a file in its directory: "
                           f"{e.strerror}") from None
    f = os.fdopen(fd, "wb", buffering=0)
    try:
        yield f, tmp
        f.flush()
        if owner is not None and hasattr(os, "fchown"):
            with contextlib.suppress(OSError):
                os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        if group is not None:
            group.add(f, tmp, real, shown)
            return
        os.fsync(fd)
        f.close()
        os.replace(tmp, real)
        _LIVE.discard(tmp)
        _fsync_dir(os.path.dirname(os.path.abspath(real)))
    except BaseException as exc:
        f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _LIVE.discard(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise DropoutError(f"{shown}: write failed: {os_reason(exc)}; the target is "
                               "unchanged") from None
        raise


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _same_path(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_side_outputs(side: dict[str, str | None], inputs: list[str], outputs: list[str], *,
                       force: bool, interface: str = "python") -> None:
    """--stats and --mask-out may not name an input, an output or each other."""
    given = [(opt, p) for opt, p in side.items() if p not in (None, "-")]
    for k, (opt, path) in enumerate(given):
        for other in [i for i in inputs if i != "-"]:
            if _same_path(path, other):
                raise UsageError(f"{escape_name(path)}: {opt} names an input file; it would be "
                                 "replaced")
        for other in outputs:
            if _same_path(path, other):
                raise UsageError(f"{escape_name(path)}: {opt} names an output file")
        for opt2, other in given[k + 1:]:
            if _same_path(path, other):
                raise UsageError(f"{escape_name(path)}: {opt} and {opt2} name the same file")
        check_target(path, force=force, inputs=list(inputs), interface=interface)
