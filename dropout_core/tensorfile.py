"""What every reader returns: a validated description of the tensors in a file.

Readers check the whole header and every claimed size against the file's real
size before anything is allocated; after that, data is read chunk by chunk.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .errors import DropoutError, escape_name

MAX_NDIM = 64


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: its name, dtype, logical shape and where its bytes are."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    fortran_order: bool = False
    format_dtype: str = ""  # the dtype as the file spells it ("F32", "<f4")

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
    format: str  # "npy" or "safetensors"
    size: int
    header: bytes  # everything before the data
    tensors: list[TensorInfo]
    metadata: dict[str, str] | None = None
    real_path: str = ""  # where to read the bytes (a spool file for stdin)
    _spool: object = field(default=None, repr=False)

    @property
    def display(self) -> str:
        return "<stdin>" if self.path == "-" else self.path

    def where(self, tensor: TensorInfo | None = None) -> str:
        """'file', or 'file: tensor NAME' for messages."""
        text = escape_name(self.display)
        if tensor is not None and self.format == "safetensors":
            text += f": tensor {escape_name(tensor.name)}"
        return text

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def checked_shape(raw: object, where: str) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints, or a DropoutError."""
    if not isinstance(raw, (list, tuple)):
        raise DropoutError(f"{where}: shape must be a list of integers, got {type(raw).__name__}")
    if len(raw) > MAX_NDIM:
        raise DropoutError(f"{where}: shape has {len(raw)} dimensions, more than {MAX_NDIM}")
    for d in raw:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise DropoutError(f"{where}: shape {list(raw)!r} must hold non-negative integers")
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
    from .atomic import _reason

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
                           f"{_reason(e)}") from None
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
                                   f"{_reason(e)}") from None
    except BaseException:
        spool.close()
        raise
    return name, os.fstat(spool.fileno()).st_size, spool
