"""The .safetensors format: its door (a strict header reader) and its writer.

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, the data
buffer.  The reader refuses duplicate keys, holes, overlaps, offsets out of
range, unknown dtypes and sizes that disagree with shapes, all before any
tensor data is touched.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from ..dtypes import (
    SAFETENSORS_NAMES,
    UNSUPPORTED_SAFETENSORS,
    safetensors_dtype,
    safetensors_name,
)
from ..errors import DropoutError, escape_name
from .base import Entry, RawWriter, Sink, TensorFile, TensorInfo, checked_shape, chunk_reader

NAME = "safetensors"
EXTENSIONS = (".safetensors",)
NAMED = True
MAX_TENSORS = None
METADATA = True
MAX_HEADER = 100_000_000  # the reference loader's cap, in bytes


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for k, v in pairs:
        if k in seen:
            raise DropoutError(f"duplicate key {escape_name(k)} in the safetensors header")
        _check_unicode(k)
        if isinstance(v, str):
            _check_unicode(v)
        seen[k] = v
    return seen


def _check_unicode(text: str) -> None:
    # JSON can spell a lone surrogate ("\ud800"); it is no Unicode text, the reference
    # loader refuses it, and it could not be hashed into a stream key or written as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DropoutError(f"{escape_name(text)} in the safetensors header is not valid "
                           "Unicode (a lone surrogate escape)") from None


def sniff(head: bytes, size: int) -> bool:
    """A safetensors header starts with ``{`` at byte 8.

    The reference loader also takes leading whitespace, which we accept only
    when the length field fits the file, so that a text file is not called a
    safetensors file with an absurd header.
    """
    if len(head) >= 9 and head[8:9] == b"{":
        return True
    if len(head) >= 9 and head[8:9] in b" \t\r\n":
        return 8 + int.from_bytes(head[:8], "little") <= size
    return False


def header_size(head: bytes, size: int, where: str) -> int:
    """Bytes before the data: the length field and the JSON."""
    return 8 + header_length(head, size, where)


def header_length(head: bytes, size: int, where: str) -> int:
    """The JSON length N, checked against the limit and the file's size."""
    if size < 8:
        raise DropoutError(f"{where}: truncated: {size} bytes is too short for a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER:
        raise DropoutError(f"{where}: safetensors header of {n} bytes exceeds the limit of "
                           f"{MAX_HEADER}")
    if 8 + n > size:
        raise DropoutError(f"{where}: safetensors header length {n} runs past the end of the "
                           f"file ({size} bytes)")
    if n < 2:
        raise DropoutError(f"{where}: safetensors header of {n} bytes is too short")
    return n


def read_header(head: bytes, size: int, where: str) -> tuple[list[TensorInfo], dict | None]:
    """Validate the header; return the tensors in file (listing) order and the metadata."""
    n = header_length(head, size, where)
    try:
        text = head[8:8 + n].decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except DropoutError as e:
        raise DropoutError(f"{where}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DropoutError(f"{where}: safetensors header is not valid UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise DropoutError(f"{where}: safetensors header must be a JSON object")
    metadata = None
    tensors: list[TensorInfo] = []
    base = 8 + n
    for name, entry in doc.items():
        here = f"{where}: tensor {escape_name(name)}"
        if name == "__metadata__":
            if isinstance(entry, dict) and {"dtype", "data_offsets"} & set(entry):
                raise DropoutError(f"{here}: the name __metadata__ is reserved and cannot name "
                                   "a tensor")
            if entry is None:  # the reference reader takes null as no metadata; so do we
                continue
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise DropoutError(f"{where}: __metadata__ must map strings to strings")
            metadata = entry
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise DropoutError(f"{here}: entry must have exactly dtype, shape and data_offsets")
        dname = entry["dtype"]
        if not isinstance(dname, str) or dname not in SAFETENSORS_NAMES \
                and dname not in UNSUPPORTED_SAFETENSORS:
            raise DropoutError(f"{here}: unknown dtype {dname!r}")
        if dname in UNSUPPORTED_SAFETENSORS:
            raise DropoutError(f"{here}: dtype {dname} is a packed sub-byte type that NumPy "
                               "cannot hold; not supported")
        dtype = safetensors_dtype(dname)
        shape = checked_shape(entry["shape"], here, dtype.itemsize)
        offs = entry["data_offsets"]
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise DropoutError(f"{here}: data_offsets must be [begin, end] with "
                               f"0 <= begin <= end, got {offs!r}")
        info = TensorInfo(name=name, dtype=dtype, shape=shape,
                          offset=base + offs[0])
        if offs[1] - offs[0] != info.nbytes:
            raise DropoutError(f"{here}: shape {list(shape)} of {dname} needs {info.nbytes} "
                               f"bytes but data_offsets span {offs[1] - offs[0]}")
        tensors.append(info)
    _check_layout(tensors, base, size, where)
    return tensors, metadata


def _check_layout(tensors: list[TensorInfo], base: int, size: int, where: str) -> None:
    """Tensors must tile the data buffer exactly: no holes, no overlaps, nothing past the end."""
    pos = base
    for t in sorted(tensors, key=lambda t: (t.offset, t.nbytes)):
        here = f"{where}: tensor {escape_name(t.name)}"
        if t.offset > pos:
            raise DropoutError(f"{here}: hole of {t.offset - pos} bytes before its data")
        if t.offset < pos:
            raise DropoutError(f"{here}: data overlaps the previous tensor")
        pos = t.offset + t.nbytes
        if pos > size:
            raise DropoutError(f"{here}: data runs past the end of the file (truncated? the file "
                               f"has {size} bytes, the tensor ends at {pos})")
    if pos < size:
        raise DropoutError(f"{where}: {size - pos} bytes after the last tensor")


def build_header(tensors: list[tuple[str, np.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> bytes:
    """A header for tensors laid out in the given order, byte-for-byte deterministic.

    Metadata comes first with its keys in the given order, JSON is compact and
    padded with spaces to a multiple of 8, like the reference writer.
    """
    doc: dict[str, object] = {}
    if metadata:
        doc["__metadata__"] = dict(metadata)
    pos = 0
    for name, dtype, shape in tensors:
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
        doc[name] = {"dtype": safetensors_name(dtype), "shape": list(shape),
                     "data_offsets": [pos, pos + size]}
        pos += size
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()
    body += b" " * ((-len(body)) % 8)
    return struct.pack("<Q", len(body)) + body


def visit_order(tensors: list[TensorInfo], serial: bool) -> list[TensorInfo]:
    """Data order (sequential I/O); for a serial stream the order of name, which is
    the order of ``safetensors.numpy.load_file(path).keys()``."""
    return sorted(tensors, key=(lambda t: t.name) if serial else (lambda t: t.offset))


reader = chunk_reader


def writer(sink: Sink, entries: list[Entry], metadata: dict | None = None,
           like: TensorFile | None = None) -> RawWriter:
    """A safetensors file of ``entries``.

    ``like``: the input this output rewrites; when it holds the same names,
    dtypes and shapes, its header is kept byte for byte (names, order, offsets
    and metadata unchanged).  Otherwise the header is ``build_header``'s.
    """
    by_name = {e.name: e for e in entries}
    if like is not None and like.format == NAME and len(like.tensors) == len(entries) and all(
            t.name in by_name and by_name[t.name].dtype == t.dtype
            and by_name[t.name].shape == t.shape for t in like.tensors):
        header = like.header
        offsets = {t.name: t.offset for t in like.tensors}
    else:
        header = build_header([(e.name, e.dtype, e.shape) for e in entries], metadata)
        offsets, pos = {}, len(header)
        for e in entries:
            offsets[e.name] = pos
            pos += e.nbytes
    return RawWriter(sink, header, offsets, by_name)
