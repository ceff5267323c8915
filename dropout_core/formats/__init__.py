"""Tensor file formats: one module per format, one registry, one door.

Each format module offers the same small set of names:

* ``NAME``, ``EXTENSIONS``, ``NAMED`` (False: one tensor without a name),
  ``MAX_TENSORS`` (None: any number), ``METADATA`` (can it hold string metadata);
* ``sniff(head, size)``: do the first bytes say this format?
* ``header_size(head, size, where)``: how many bytes the header takes (checked
  against the file's size), and ``read_header(head, size, where)``: the whole
  header validated, as ``(tensors, metadata)``; or, for a format whose index is
  not at the front of the file (a ZIP archive's directory is at its end),
  ``read_index(fd, size, where)``: the index read through the open file and
  validated, as ``(tensors, metadata, others)``, ``others`` the entries that are
  not tensors (objects with a ``name``; the writer keeps them, the stats list them);
* ``visit_order(tensors, serial)``: the order a run processes the tensors in;
* ``reader(fd, tf, tensor, take)``: ``(read(start, stop, slab), sliced)``, the
  tensor's elements chunk by chunk in C order;
* ``SEQUENTIAL`` (optional, default False): True when ``read`` serves chunks
  only front to back, in increasing order (a deflated archive member);
* ``writer(sink, entries, metadata, like)``: an object with ``begin()``,
  ``write(name, start, data)``, ``end_tensor(name)``, ``copy(name, fd, info)``
  and ``finish()``;
* ``split_refusal(tf)`` and ``split_layout(tf, copied)`` (optional): why a file
  cannot be written by many Dask tasks at once (or None), and its output planned
  in advance for them (an archive: see ``dask_split._layout``); a format without
  them splits as raw bytes at its writer's offsets.

The rest of the library asks ``REGISTRY`` (through ``open_tensor_file``,
``output_format`` and ``format_module``), never ``if fmt == ...``.  A new
format is one module plus one line here.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

from ..errors import DropoutError, escape_name
from .base import Entry, Sink, TensorFile, TensorInfo, open_input

REGISTRY = {
    "npy": "npy",
    "safetensors": "safetensors",
    "npz": "npz",
}
PROBE = 1 << 16  # bytes read to sniff the format; the rest of a header is read on demand

__all__ = ["REGISTRY", "Entry", "Sink", "TensorFile", "TensorInfo", "format_module",
           "known_extensions", "open_tensor_file", "output_format"]


@functools.cache
def format_module(name: str) -> ModuleType:
    """The module of format ``name`` (a key of REGISTRY)."""
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}")


def _modules() -> list[ModuleType]:
    return [format_module(name) for name in REGISTRY]


def open_tensor_file(path: str) -> TensorFile:
    """Validate ``path`` ("-" for stdin) and describe its tensors; reads no tensor data.

    The format comes from the first bytes, never from the extension.
    """
    real, size, spool = open_input(path)
    shown = "<stdin>" if path == "-" else escape_name(path)
    try:
        if size == 0:
            raise DropoutError(f"{shown}: empty file")
        try:
            with open(real, "rb") as f:
                head = f.read(min(size, PROBE))
                fmt = next((m for m in _modules() if m.sniff(head, size)), None)
                if fmt is None:
                    raise DropoutError(f"{shown}: not a {known_extensions()} file (unknown "
                                       "magic bytes)")
                if hasattr(fmt, "read_index"):  # the index is not at the front: read it there
                    need = 0
                    tensors, metadata, others = fmt.read_index(f.fileno(), size, shown)
                else:
                    need = fmt.header_size(head, size, shown)
                    if need > len(head):  # checked against the size above: never absurd
                        head += f.read(need - len(head))
                    if len(head) < need:
                        raise DropoutError(f"{shown}: file shrank while it was being read")
                    (tensors, metadata), others = fmt.read_header(head, size, shown), []
        except OSError as e:
            raise DropoutError(f"{shown}: cannot read: {e.strerror}") from None
        tf = TensorFile(path, fmt.NAME, size, head[:need], tensors, metadata, fmt.NAMED,
                        others=others)
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    tf.real_path = real
    tf._spool = spool
    return tf


def _extensions() -> list[str]:
    return [ext for m in _modules() for ext in m.EXTENSIONS]


def known_extensions() -> str:
    """'.npy, .safetensors or .npz': the extensions of the formats we read."""
    exts = _extensions()
    return exts[0] if len(exts) == 1 else ", ".join(exts[:-1]) + " or " + exts[-1]


def format_of_name(path: str) -> str | None:
    """The format an output path's extension names, or None for an extension we don't know."""
    ext = os.path.splitext(path)[1].lower()
    return next((m.NAME for m in _modules() if ext in m.EXTENSIONS), None)


def output_format(path: str, default: str) -> str:
    """Format for a file we create, by extension; ``default`` when it has none we know."""
    return format_of_name(path) or default
