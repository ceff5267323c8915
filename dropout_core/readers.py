"""Open any tensor file: detect the format from its first bytes, validate the header."""

from __future__ import annotations

import os

from . import npy, safetensors_file
from .errors import DropoutError, escape_name
from .tensorfile import TensorFile, open_input


def detect_format(head: bytes) -> str | None:
    """'npy', 'safetensors' or None, from the first bytes (not the extension)."""
    if head[:6] == npy.MAGIC[: len(head[:6])] and head[:1] == b"\x93":
        return "npy"
    if len(head) >= 9 and head[8:9] in (b"{", b" "):
        return "safetensors"
    return None


def open_tensor_file(path: str) -> TensorFile:
    """Validate ``path`` ("-" for stdin) and describe its tensors; reads no tensor data."""
    real, size, spool = open_input(path)
    shown = "<stdin>" if path == "-" else escape_name(path)
    try:
        try:
            with open(real, "rb") as f:
                head = f.read(min(size, 8 + safetensors_file.MAX_HEADER))
        except OSError as e:
            raise DropoutError(f"{shown}: cannot read: {e.strerror}") from None
        if size == 0:
            raise DropoutError(f"{shown}: empty file")
        fmt = detect_format(head)
        if fmt == "npy":
            hlen, info = npy.read_header(head, size, shown)
            tf = TensorFile(path, "npy", size, head[:info.offset], [info])
        elif fmt == "safetensors":
            tensors, metadata = safetensors_file.read_header(head, size, shown)
            base = 8 + safetensors_file.header_length(head, size, shown)
            tf = TensorFile(path, "safetensors", size, head[:base], tensors, metadata)
        else:
            raise DropoutError(f"{shown}: not a .npy or .safetensors file (unknown magic bytes)")
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
