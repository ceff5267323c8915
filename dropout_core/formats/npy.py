"""The .npy format (versions 1.0, 2.0, 3.0): its door and its writer.

The header is parsed with ``ast.literal_eval`` (never unpickled), checked
key by key, and the data size it implies must equal the bytes in the file.
A .npy file holds one tensor, whose name is "".
"""

from __future__ import annotations

import ast
import re
import struct
import warnings

import numpy as np

from ..errors import DropoutError, UsageError
from .base import Entry, RawWriter, Sink, TensorInfo, checked_shape, chunk_reader

NAME = "npy"
EXTENSIONS = (".npy",)
NAMED = False  # its one tensor has no name ("")
MAX_TENSORS = 1
METADATA = False
MAGIC = b"\x93NUMPY"
_PY2_LONG = re.compile(r"\b(\d+)L\b")  # a Python 2 long literal in a shape: (2L, 3L)
MAX_HEADER = 1 << 20  # bytes of header dict; NumPy's own default is 10,000
_VERSIONS = {(1, 0): "<H", (2, 0): "<I", (3, 0): "<I"}


def _dtype_from_descr(descr: object, where: str) -> np.dtype:
    if isinstance(descr, list):
        raise DropoutError(f"{where}: structured dtype {descr!r} is not a tensor; refused")
    if not isinstance(descr, str):
        raise DropoutError(f"{where}: descr must be a dtype string, got {descr!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated aliases ('a') still parse
            dtype = np.dtype(descr)
    except Exception:  # np.dtype's string parser raises TypeError, ValueError, SyntaxError...
        raise DropoutError(f"{where}: unknown dtype {descr!r}") from None
    if dtype.hasobject:
        raise DropoutError(f"{where}: object arrays are refused (they would need unpickling)")
    ok = (dtype.kind in "biu" and dtype.itemsize <= 8) or \
        (dtype.kind == "f" and dtype.itemsize in (2, 4, 8)) or \
        (dtype.kind == "c" and dtype.itemsize in (8, 16))
    if not ok or dtype.fields or dtype.subdtype:
        hint = ""
        if dtype.kind == "V" and not dtype.fields and not dtype.subdtype:  # raw bytes
            hint = " (bfloat16 and float8 arrays saved by NumPy lose their dtype; use .safetensors)"
        raise DropoutError(f"{where}: unsupported dtype {descr!r}{hint}")
    return dtype


def sniff(head: bytes, size: int) -> bool:
    """Do the first bytes say .npy?"""
    return head[:1] == b"\x93" and head[:6] == MAGIC[: len(head[:6])]


def header_end(head: bytes, size: int, where: str) -> int:
    """Where the data starts: magic, version and header length checked against the file.

    ``head`` holds at least the first min(size, 12) bytes.
    """
    if not head.startswith(MAGIC[: min(len(head), len(MAGIC))]) or not head:
        raise DropoutError(f"{where}: not a .npy file (bad magic)")
    if size < 8:
        raise DropoutError(f"{where}: truncated: {size} bytes is too short for a .npy file")
    version = (head[6], head[7])
    if version not in _VERSIONS:
        raise DropoutError(f"{where}: unsupported .npy version {version[0]}.{version[1]} "
                           "(1.0, 2.0 and 3.0 are supported)")
    fmt = _VERSIONS[version]
    start = 8 + struct.calcsize(fmt)
    if size < start:
        raise DropoutError(f"{where}: truncated: {size} bytes is too short for a .npy "
                           f"{version[0]}.0 header")
    (hlen,) = struct.unpack(fmt, head[8:start])
    if hlen > MAX_HEADER:
        raise DropoutError(f"{where}: .npy header of {hlen} bytes exceeds the limit of "
                           f"{MAX_HEADER}")
    if start + hlen > size:
        raise DropoutError(f"{where}: .npy header length {hlen} runs past the end of the file "
                           f"({size} bytes)")
    return start + hlen


# The header NumPy (and every writer that copies it) writes; parsing it with a pattern
# gives literal_eval's result without compiling Python, which a small file notices.
_USUAL = re.compile(r"\{'descr': '([<>|=]?[a-zA-Z]\d{0,2})', 'fortran_order': (True|False), "
                    r"'shape': \(((?:\d{1,20}, )*\d{0,20},?)\), \}[ ]*\n?")


def _usual_header(text: str) -> dict | None:
    """The header dict when ``text`` has NumPy's own layout exactly, else None."""
    m = _USUAL.fullmatch(text)
    if m is None:
        return None
    dims = m.group(3)
    if dims.endswith(","):  # (5,) or (2, 3,)
        parts = dims[:-1].split(", ")
    else:  # () or (2, 3); (5) is no tuple
        parts = dims.split(", ") if dims else []
        if len(parts) == 1:
            return None
    if not all(p.isdigit() for p in parts):
        return None
    return {"descr": m.group(1), "fortran_order": m.group(2) == "True",
            "shape": tuple(int(p) for p in parts)}


header_size = header_end  # the format interface's name: bytes the door needs to read


def read_header(head: bytes, size: int, where: str) -> tuple[list[TensorInfo], None]:
    """Validate a .npy header; return ([its one tensor], no metadata).

    ``head`` holds at least the first ``header_end`` bytes.
    """
    end = header_end(head, size, where)
    version = (head[6], head[7])
    start = 8 + struct.calcsize(_VERSIONS[version])
    hlen = end - start
    raw = head[start:start + hlen]
    try:
        text = raw.decode("utf-8" if version == (3, 0) else "latin1")
        try:
            d = _usual_header(text) or ast.literal_eval(text)
        except (SyntaxError, ValueError):
            # Python 2 wrote long integers as 2L: np.load reads them (with a warning), so do we
            d = ast.literal_eval(_PY2_LONG.sub(r"\1", text))
    except (SyntaxError, ValueError, UnicodeDecodeError, MemoryError, RecursionError, TypeError):
        raise DropoutError(f"{where}: .npy header is not a valid Python literal") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise DropoutError(f"{where}: .npy header must be a dict with keys descr, fortran_order, "
                           "shape")
    dtype = _dtype_from_descr(d["descr"], where)
    if not isinstance(d["fortran_order"], bool):
        raise DropoutError(f"{where}: fortran_order must be True or False, got "
                           f"{d['fortran_order']!r}")
    if not isinstance(d["shape"], tuple):
        raise DropoutError(f"{where}: .npy shape must be a tuple")
    shape = checked_shape(d["shape"], where, dtype.itemsize)
    info = TensorInfo(name="", dtype=dtype, shape=shape, offset=start + hlen,
                      fortran_order=d["fortran_order"] and len(shape) > 1)
    have = size - info.offset
    if info.nbytes > have:
        raise DropoutError(f"{where}: truncated: shape {list(shape)} of {dtype.name} needs "
                           f"{info.nbytes} bytes of data, the file has {have}")
    if info.nbytes < have:
        raise DropoutError(f"{where}: {have - info.nbytes} bytes of trailing garbage after the "
                           "data")
    return [info], None


def visit_order(tensors: list[TensorInfo], serial: bool) -> list[TensorInfo]:
    return list(tensors)


reader = chunk_reader


def header_bytes(dtype: np.dtype, shape: tuple[int, ...], fortran_order: bool = False) -> bytes:
    """A .npy header, byte for byte the same on every machine and NumPy version.

    >>> header_bytes(np.dtype("<f4"), (2, 3))[:10]
    b'\\x93NUMPY\\x01\\x00v\\x00'
    """
    shape_txt = "(" + "".join(f"{d}, " for d in shape)[:-2] + ("," if len(shape) == 1 else "") + ")"
    if not shape:
        shape_txt = "()"
    text = (f"{{'descr': {dtype.str!r}, 'fortran_order': {fortran_order}, "
            f"'shape': {shape_txt}, }}")
    for version, fmt in (((1, 0), "<H"), ((2, 0), "<I")):
        prefix = 8 + struct.calcsize(fmt)
        total = prefix + len(text) + 1
        pad = (-total) % 64
        body = (text + " " * pad + "\n").encode("latin1")
        if len(body) < 1 << (8 * struct.calcsize(fmt)):
            return MAGIC + bytes(version) + struct.pack(fmt, len(body)) + body
    raise DropoutError("npy header too large")  # pragma: no cover - unreachable for valid shapes


def writer(sink: Sink, entries: list[Entry], metadata: dict | None = None,
           like=None) -> RawWriter:
    """A .npy file of one tensor, always in C order (version 1.0 header when it fits)."""
    if len(entries) != 1:
        raise UsageError(f"a .npy file holds one tensor, not {len(entries)}; use .safetensors")
    e = entries[0]
    header = header_bytes(e.dtype, e.shape)
    return RawWriter(sink, header, {e.name: len(header)}, {e.name: e})
