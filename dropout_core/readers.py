"""Open any tensor file: detect the format from its first bytes, validate the header."""

from __future__ import annotations

import os

from . import npy, safetensors_file
from .errors import DropoutError, escape_name
from .tensorfile import TensorFile, open_input


def detect_format(head: bytes, size: int | None = None) -> str | None:
    """'npy', 'safetensors' or None, from the first bytes (not the extension).

    A safetensors header starts with ``{`` at byte 8; the reference loader
    also takes leading whitespace, which we accept only when the length field
    fits the file (``size``), so that a text file is not called a safetensors
    file with an absurd header.
    """
    if head[:1] == b"\x93" and head[:6] == npy.MAGIC[: len(head[:6])]:
        return "npy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if len(head) >= 9 and head[8:9] in b" \t\r\n":
        n = int.from_bytes(head[:8], "little")
        if size is None or 8 + n <= size:
            return "safetensors"
    return None


PROBE = 1 << 16  # bytes read to detect the format; the rest of a header is read on demand


def open_tensor_file(path: str) -> TensorFile:
    """Validate ``path`` ("-" for stdin) and describe its tensors; reads no tensor data."""
    real, size, spool = open_input(path)
    shown = "<stdin>" if path == "-" else escape_name(path)
    try:
        if size == 0:
            raise DropoutError(f"{shown}: empty file")
        try:
            with open(real, "rb") as f:
                head = f.read(min(size, PROBE))
                fmt = detect_format(head, size)
                if fmt == "npy":
                    need = npy.header_end(head, size, shown)
                elif fmt == "safetensors":
                    need = 8 + safetensors_file.header_length(head, size, shown)
                else:
                    raise DropoutError(f"{shown}: not a .npy or .safetensors file (unknown "
                                       "magic bytes)")
                if need > len(head):  # checked against the size above: never absurd
                    head += f.read(need - len(head))
        except OSError as e:
            raise DropoutError(f"{shown}: cannot read: {e.strerror}") from None
        if len(head) < need:
            raise DropoutError(f"{shown}: file shrank while it was being read")
        if fmt == "npy":
            hlen, info = npy.read_header(head, size, shown)
            tf = TensorFile(path, "npy", size, head[:info.offset], [info])
        else:
            tensors, metadata = safetensors_file.read_header(head, size, shown)
            tf = TensorFile(path, "safetensors", size, head[:need], tensors, metadata)
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    tf.real_path = real
    tf._spool = spool
    return tf


def output_format(path: str, default: str) -> str:
    """Format for a file we create, by extension; ``default`` when it has none we know."""
    ext = os.path.splitext(path)[1].lower()
    return {".npy": "npy", ".safetensors": "safetensors"}.get(ext, default)
