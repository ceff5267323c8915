"""What every format shares: tensor descriptions, input files, chunk reads, positioned writes.

A format's door (``read_header``) checks the whole header and every claimed
size against the file's real size before anything is allocated; after that,
data is read chunk by chunk (``chunk_reader``) and written through a ``Sink``.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import DropoutError, escape_name, os_reason

MAX_NDIM = 64


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: its name, dtype, logical shape and where its bytes are."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file (raw formats)
    fortran_order: bool = False
    member: object = None  # what else the format needs to find the data (an archive member)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass
class TensorFile:
    """A validated tensor file: format, header bytes and tensors in file order."""

    path: str  # as the user named it ("-" for stdin)
    format: str  # a key of formats.REGISTRY: "npy", "safetensors", "npz"
    size: int
    header: bytes  # everything before the data
    tensors: list[TensorInfo]
    metadata: dict[str, str] | None = None
    named: bool = True  # False: one tensor without a name (a .npy file)
    # entries that are not tensors (an archive's other members): objects with a ``name``,
    # kept by the format's writer, listed as skipped in the stats
    others: list = field(default_factory=list)
    real_path: str = ""  # where to read the bytes (a spool file for stdin)
    _spool: object = field(default=None, repr=False)

    @property
    def display(self) -> str:
        return "<stdin>" if self.path == "-" else self.path

    def where(self, tensor: TensorInfo | None = None) -> str:
        """'file', or 'file: tensor NAME' for messages."""
        text = escape_name(self.display)
        if tensor is not None and self.named:
            text += f": tensor {escape_name(tensor.name)}"
        return text

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __getstate__(self) -> dict:
        # Sent to --jobs workers: the header travels, an open spool cannot (stdin is never
        # sent to a worker).
        return {**self.__dict__, "_spool": None}

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


MAX_BYTES = (1 << 63) - 1  # NumPy's largest array, in bytes (and its largest dimension)


def checked_shape(raw: object, where: str, itemsize: int = 1) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints, or a DropoutError.

    Refused as np.load and the reference safetensors reader refuse them, even
    next to a zero dimension: a dimension above 2**63 - 1, or non-zero
    dimensions whose product times the item size is (``(2**62, 4, 0)``).
    """
    if not isinstance(raw, (list, tuple)):
        raise DropoutError(f"{where}: shape must be a list of integers, got {type(raw).__name__}")
    if len(raw) > MAX_NDIM:
        raise DropoutError(f"{where}: shape has {len(raw)} dimensions, more than {MAX_NDIM}")
    for d in raw:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise DropoutError(f"{where}: shape {list(raw)!r} must hold non-negative integers")
    size = itemsize
    for d in raw:
        size *= d or 1
        if size > MAX_BYTES:
            raise DropoutError(f"{where}: shape {list(raw)!r} is too large for any array "
                               f"(more than 2**63 - 1 bytes, counting only non-zero "
                               "dimensions, as NumPy and the safetensors reader do)")
    return tuple(int(d) for d in raw)


def read_exact(fd: int, offset: int, out: np.ndarray, where: str | None = None) -> None:
    """Fill ``out`` (contiguous) with the file's bytes at ``offset``.

    ``where`` names the file in the error; without it, the name comes from the fd.
    """
    view = memoryview(out.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise DropoutError(f"{where or _fd_name(fd)}: file shrank while it was being read "
                               "(did another program change it?)")
        done += n


def _fd_name(fd: int) -> str:
    try:
        return escape_name(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return "input"


def open_input(path: str) -> tuple[str, int, object]:
    """Check an input path and return (path to read, size, spool or None).

    stdin and FIFOs are copied into an anonymous temporary file first, so that
    every reader can check sizes and seek.  Devices are refused.
    """
    if path == "-":
        return _spool(sys.stdin.buffer, "<stdin>")
    shown = escape_name(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DropoutError(f"{shown}: no such file") from None
    except OSError as e:
        raise DropoutError(f"{shown}: cannot read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DropoutError(f"{shown}: is a directory, not a tensor file")
    if stat.S_ISCHR(st.st_mode):  # /dev/zero would be spooled until the disk is full
        raise DropoutError(f"{shown}: is a character device, not a tensor file (use - to read "
                           "stdin)")
    if stat.S_ISFIFO(st.st_mode):
        try:
            with open(path, "rb") as f:
                return _spool(f, shown)
        except OSError as e:
            raise DropoutError(f"{shown}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DropoutError(f"{shown}: not a regular file")
    if not os.access(path, os.R_OK):
        raise DropoutError(f"{shown}: cannot read: permission denied")
    return path, st.st_size, None


def _spool(stream, shown: str) -> tuple[str, int, object]:
    """Copy a stream into an anonymous temporary file (in TMPDIR); say which side failed."""
    import tempfile
    where = f"a temporary file in {escape_name(tempfile.gettempdir())}"
    try:
        # anonymous (already unlinked), so that not even SIGKILL can leave it behind;
        # readers open it again through /proc/self/fd where Linux offers that
        spool = tempfile.TemporaryFile(prefix="tensor-dropout-stdin-", buffering=0)
        name = f"/proc/self/fd/{spool.fileno()}"
        if not os.path.exists(name):
            spool.close()
            spool = tempfile.NamedTemporaryFile(prefix="tensor-dropout-stdin-", buffering=0)
            name = spool.name
    except OSError as e:
        raise DropoutError(f"{shown}: cannot create {where} to hold the input: "
                           f"{os_reason(e)}") from None
    try:
        while True:
            try:
                block = stream.read(1 << 20)
            except OSError as e:
                raise DropoutError(f"{shown}: cannot read: {e.strerror}") from None
            if not block:
                break
            try:
                spool.write(block)
            except OSError as e:
                raise DropoutError(f"{shown}: cannot copy the input to {where}: "
                                   f"{os_reason(e)}") from None
    except BaseException:
        spool.close()
        raise
    return name, os.fstat(spool.fileno()).st_size, spool


# ----------------------------------------------------------------------------- reading

Reader = Callable[[int, int, tuple], np.ndarray]  # (flat start, flat stop, slab index) -> flat


def chunk_reader(fd: int, tf: TensorFile, t: TensorInfo, take=None) -> tuple[Reader, bool]:
    """Read a tensor stored as raw bytes at ``t.offset``: ``(read, sliced)``.

    C order: each chunk is read with pread into a buffer from ``take(n, dtype)``
    (or a fresh one).  Fortran order: the tensor is read whole with pread (a
    memory map would turn a file truncated mid-run into SIGBUS) and served in
    C-order hyperslabs (``sliced``: ``read`` needs the slab index).
    """
    if t.fortran_order:
        data = np.empty(t.numel, dtype=t.dtype)
        read_exact(fd, t.offset, data, where=tf.where(t))
        logical = data.reshape(t.shape[::-1]).T

        def read_f(s, e, idx):
            return np.array(logical[idx], order="C").reshape(-1)

        return read_f, True

    def read_c(s, e, idx):
        buf = take(e - s, t.dtype) if take else np.empty(e - s, dtype=t.dtype)
        read_exact(fd, t.offset + s * t.dtype.itemsize, buf)
        return buf

    return read_c, False


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Entry:
    """A tensor to write: its name, dtype and shape."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def byte_view(data) -> memoryview:
    """A flat byte view of an array (made contiguous if it is not) or a bytes-like object."""
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    return memoryview(data)


def write_exact(fd: int, offset: int, data, piece: int = 256 << 10) -> int:
    """Write all of ``data`` at ``offset``, ``piece`` bytes per pwrite; the bytes written
    (``read_exact``'s twin)."""
    view = byte_view(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:done + piece], offset + done)
    return done


class Sink:
    """Positioned writes into an open file."""

    KICK = 32 << 20  # bytes written between two starts of writeback
    # Bytes per pwrite.  Large writes make the page cache allocate large folios,
    # which on some VMs are several times slower to fill (1 GiB: 0.8-3.3 s in
    # 4 MiB writes, 0.26-0.32 s in 256 KiB writes, like cp).
    PIECE = 256 << 10

    def __init__(self, f, where: str | None = None) -> None:
        self.f = f
        self.fd = f.fileno()
        self.where = where  # names the file in errors (atomic_write names its own target)
        self._lo, self._hi = None, 0

    def write_at(self, pos: int, data) -> None:
        try:
            done = write_exact(self.fd, pos, data, self.PIECE)
        except OSError as e:
            if self.where is None:
                raise
            raise DropoutError(f"{self.where}: {os.strerror(e.errno) if e.errno else e}") \
                from None
        self._lo = pos if self._lo is None else min(self._lo, pos)
        self._hi = max(self._hi, pos + done)
        if self._hi - self._lo >= self.KICK:
            self._start_writeback()

    def _start_writeback(self) -> None:
        # Start writing the dirty pages to disk now, without waiting, so that the
        # final fsync finds little left to do (on Linux, DONTNEED starts the
        # writeback of dirty pages and only drops pages that are already clean).
        if hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, self._lo, self._hi - self._lo,
                                 os.POSIX_FADV_DONTNEED)
        self._lo, self._hi = None, 0


class RawWriter:
    """A writer for formats that store each tensor's bytes at a fixed offset after a header.

    A format gives the header bytes and each tensor's data offset; ``write``
    then puts elements ``[start, ...)`` of a tensor at their place, and ``copy``
    moves a tensor's bytes from an input unchanged.
    """

    def __init__(self, sink: Sink, header: bytes, offsets: dict[str, int],
                 entries: dict[str, Entry]) -> None:
        self.sink, self.header, self.offsets, self.entries = sink, header, offsets, entries

    def begin(self) -> None:
        self.sink.write_at(0, self.header)

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        """Elements ``[start, start + data.size)`` of tensor ``name`` (C order)."""
        self.sink.write_at(self.offsets[name] + start * self.entries[name].dtype.itemsize, data)

    def end_tensor(self, name: str) -> None:
        pass

    def copy(self, name: str, fd: int, t: TensorInfo) -> None:
        """Tensor ``name``'s bytes, unchanged, from ``t`` of the open input ``fd``."""
        step = 1 << 24
        for s in range(0, t.nbytes, step):
            buf = np.empty(min(step, t.nbytes - s), dtype=np.uint8)
            read_exact(fd, t.offset + s, buf)
            self.sink.write_at(self.offsets[name] + s, buf)

    def finish(self) -> None:
        pass
