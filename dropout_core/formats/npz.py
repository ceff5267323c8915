"""The .npz format (``np.savez`` and ``np.savez_compressed``): its door, its reader, its writer.

An .npz is a ZIP archive (``ziparchive``) whose members named ``NAME.npy``
each hold one .npy file: the tensor ``NAME``.  Other members are not
tensors; they are copied unchanged.  Members are streamed: a member is read
front to back through a ``MemberReader`` (inflated piece by piece, never past
its declared size, CRC-32 checked once its last byte is read) and written
through a ``MemberWriter`` (deflated piece by piece), so no member is ever
held whole, except a Fortran-order member, which is read whole like a
Fortran-order .npy.

A Dask split (``split_layout``) plans the output archive of an .npz whose tensor
members are stored, so that tasks write ranges of members in any order.
"""

from __future__ import annotations

import os
import weakref
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import DropoutError, escape_name
from . import npy
from .base import Entry, Sink, TensorFile, TensorInfo, read_exact
from .ziparchive import (
    STORED,
    ArchiveWriter,
    Member,
    MemberReader,
    Planned,
    crc32_combine,
    layout,
    read_directory,
)

NAME = "npz"
EXTENSIONS = (".npz",)
NAMED = True
MAX_TENSORS = None
METADATA = False
# The reader serves a member front to back (it may be deflated).  A Dask split does not use
# it: its tasks read a stored member's data at its file offset (TensorInfo.offset), any
# range, and the client checks the member's CRC-32 from the CRCs of their ranges.
SEQUENTIAL = True
SUFFIX = ".npy"  # a member NAME.npy is the tensor NAME, as in np.load(f).files
_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a first member, or the end record of an empty archive
_NPY_PROBE = 12  # bytes that hold a .npy header's magic, version and length in every version


@dataclass(frozen=True)
class Slot:
    """One archive member: its place in the archive, the member, its .npy header's length."""

    index: int  # position in the central directory: the order np.load(f).files lists
    member: Member
    header: int = 0  # bytes of .npy header before a tensor's data (0 for a non-tensor)

    @property
    def name(self) -> str:
        return self.member.name


def sniff(head: bytes, size: int) -> bool:
    """A ZIP archive starts with a local header (or, empty, with its end record)."""
    return head[:4] in _MAGIC


def read_index(fd: int, size: int, where: str) -> tuple[list[TensorInfo], None, list[Slot]]:
    """Validate the archive and every .npy member's header; return (tensors, no metadata, others).

    The ZIP layer checks the structure; here each ``NAME.npy`` member's first
    bytes are inflated and parsed as a .npy header whose data must fill the
    member's declared size exactly (so a declared size that disagrees with
    the header is refused, and nothing is allocated from either claim).
    """
    tensors: list[TensorInfo] = []
    others: list[Slot] = []
    for i, m in enumerate(read_directory(fd, size, where)):
        if m.name.endswith(SUFFIX):
            tensors.append(_member_tensor(fd, i, m, where))
        else:
            others.append(Slot(i, m))
    by_name = {t.name: t.member.name for t in tensors}
    for o in others:
        if o.name in by_name:  # np.load lists both as one name and serves only one of them
            raise DropoutError(f"{where}: members {escape_name(o.name)} and "
                               f"{escape_name(by_name[o.name])} both load as "
                               f"{escape_name(o.name)}; refused as a duplicate")
    return tensors, None, others


def _member_tensor(fd: int, index: int, m: Member, where: str) -> TensorInfo:
    here = f"{where}: member {escape_name(m.name)}"
    size = m.uncompressed_size
    r = MemberReader(fd, m, where)
    head = bytearray(min(size, _NPY_PROBE))
    r.readinto(head)
    end = npy.header_end(bytes(head), size, here)  # checked against the member's size
    if end > len(head):
        rest = bytearray(end - len(head))
        r.readinto(rest)
        head += rest
    (info,), _ = npy.read_header(bytes(head), size, here)
    # a stored member's data lies raw in the file; a deflated one's has no offset
    offset = m.data_offset + info.offset if m.method == STORED else -1
    return TensorInfo(name=m.name[:-len(SUFFIX)], dtype=info.dtype, shape=info.shape,
                      offset=offset, fortran_order=info.fortran_order,
                      member=Slot(index, m, info.offset))


def visit_order(tensors: list[TensorInfo], serial: bool) -> list[TensorInfo]:
    """Member order, for every stream: the archive is read front to back, and it is the
    order of ``np.load(f).files`` (so a serial stream's draws follow it)."""
    return sorted(tensors, key=lambda t: t.member.index)


def reader(fd: int, tf: TensorFile, t: TensorInfo, take=None):
    """``(read(start, stop, slab), sliced)``: the member's elements in C order, read front to
    back (chunks must come in increasing order); its CRC-32 is checked after its last byte.

    A Fortran-order member is read whole and served in C-order hyperslabs, like a
    Fortran-order .npy.
    """
    slot: Slot = t.member
    r = MemberReader(fd, slot.member, escape_name(tf.display))
    r.skip(slot.header)
    n = t.numel
    if t.nbytes == 0:
        r.finish()
    if t.fortran_order:
        data = np.empty(n, dtype=t.dtype)
        r.readinto(data)
        if n:
            r.finish()
        logical = data.reshape(t.shape[::-1]).T

        def read_f(s, e, idx):
            return np.array(logical[idx], order="C").reshape(-1)

        return read_f, True

    at = [0]

    def read_c(s, e, idx):
        if s != at[0]:
            raise DropoutError(f"{tf.where(t)}: elements {s}..{e} asked for out of order "
                               f"(next is {at[0]}); an archive member is read front to back")
        buf = take(e - s, t.dtype) if take else np.empty(e - s, dtype=t.dtype)
        r.readinto(buf)
        at[0] = e
        if e == n:
            r.finish()
        return buf

    return read_c, False


# ----------------------------------------------------------------------------- writing


class NpzWriter:
    """Write an archive member by member through ``ArchiveWriter``.

    With ``like`` (the .npz being rewritten) the output has its members in its
    order, each tensor with its compression, and every member that is not a
    tensor copied unchanged where it was.  Without it (``save_tensors``, a mask
    file), each tensor becomes a stored member ``NAME.npy``, in the order the
    tensors are written (a tensor without elements takes its place in
    ``entries`` order as soon as a later one starts).

    Each tensor's elements must come in order (``write(name, start, data)``
    with ``start`` where the previous write ended), one tensor after another;
    a member is closed when its last byte is written or at ``end_tensor``.
    """

    def __init__(self, sink: Sink, entries: list[Entry], like: TensorFile | None) -> None:
        self._archive = ArchiveWriter(sink, where=".npz output")
        self._entries = {e.name: e for e in entries}
        self._fd = None
        if like is not None and like.format == NAME:
            slots = sorted([t.member for t in like.tensors] + list(like.others),
                           key=lambda s: s.index)
            tensor_of = {t.member.index: t.name for t in like.tensors}
            # (tensor name or None, member name, method, slot) in archive order
            self._queue = [(tensor_of.get(s.index), s.name, s.member.method, s) for s in slots]
            self._ordered = True
            if like.others:  # copied from the input as the run reaches them
                fd = os.open(like.real_path, os.O_RDONLY)
                self._fd = fd
                self._closer = weakref.finalize(self, os.close, fd)
        else:
            self._queue = [(e.name, e.name + SUFFIX, STORED, None) for e in entries]
            self._ordered = False
        self._done: set[str] = set()  # tensors whose member is written
        self._open = None  # (name, MemberWriter, bytes of data still to come)

    def begin(self) -> None:
        pass

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        """Elements ``[start, start + data.size)`` of tensor ``name`` (C order)."""
        if self._open is None or self._open[0] != name:
            self._start(name)
        _, mw, left = self._open
        e = self._entries[name]
        at = e.nbytes - left
        if start * e.dtype.itemsize != at:
            raise DropoutError(f".npz output: tensor {escape_name(name)}: elements from "
                               f"{start} written out of order; an archive member is written "
                               "front to back")
        mw.write(np.ascontiguousarray(data).reshape(-1))
        left -= data.size * e.dtype.itemsize
        self._open = (name, mw, left)
        if left <= 0:  # MemberWriter itself refuses more than the declared size
            self._close()

    def end_tensor(self, name: str) -> None:
        if name not in self._done:
            if self._open is None or self._open[0] != name:
                self._start(name)  # a tensor without elements
            self._close()

    def copy(self, name: str, fd: int, t: TensorInfo) -> None:
        """A tensor not processed: its member, compressed bytes and all, unchanged."""
        if not self._ordered:
            raise DropoutError(f".npz output: tensor {escape_name(name)} cannot be copied "
                               "without the archive it comes from")
        if self._open is not None:
            raise DropoutError(f".npz output: tensor {escape_name(self._open[0])} is "
                               f"unfinished when tensor {escape_name(name)} is copied")
        self._reach(name)
        self._queue.pop(0)
        self._archive.copy(fd, t.member.member)
        self._done.add(name)

    def finish(self) -> None:
        """Every member not written yet (copies, tensors without elements), then the directory."""
        try:
            while self._queue:
                name, _, _, slot = self._queue[0]
                if name is None:
                    self._copy_next()
                else:
                    self.end_tensor(name)
            self._archive.finish()
        finally:
            if self._fd is not None:
                self._closer()
                self._fd = None

    # -- members in order

    def _start(self, name: str) -> None:
        if self._open is not None:
            raise DropoutError(f".npz output: tensor {escape_name(self._open[0])} is "
                               f"unfinished when tensor {escape_name(name)} starts")
        if name in self._done or name not in self._entries:
            raise DropoutError(f".npz output: tensor {escape_name(name)} is not expected here")
        self._reach(name)
        _, member_name, method, _ = self._queue.pop(0)
        e = self._entries[name]
        header = npy.header_bytes(e.dtype, e.shape)
        mw = self._archive.add(member_name, method, len(header) + e.nbytes)
        mw.write(header)
        self._open = (name, mw, e.nbytes)

    def _close(self) -> None:
        name, mw, _ = self._open
        mw.close()  # checks that exactly the declared bytes came
        self._open = None
        self._done.add(name)

    def _reach(self, name: str) -> None:
        """Bring tensor ``name`` to the head of the queue: copy the non-tensor members before
        it; without ``like``, write the empty tensors before it first and let it jump the
        others (they follow in the order they are written)."""
        while self._queue[0][0] != name:
            first = self._queue[0][0]
            if first is None:
                self._copy_next()
            elif not self._ordered:
                k = next(i for i, q in enumerate(self._queue) if q[0] == name)
                before = [q for q in self._queue[:k] if self._entries[q[0]].nbytes == 0]
                if before:
                    self.end_tensor(before[0][0])
                else:
                    self._queue.insert(0, self._queue.pop(k))
            else:
                raise DropoutError(f".npz output: tensor {escape_name(name)} written before "
                                   f"tensor {escape_name(first)}, which comes first in the "
                                   "archive")

    def _copy_next(self) -> None:
        _, _, _, slot = self._queue.pop(0)
        self._archive.copy(self._fd, slot.member)


def writer(sink: Sink, entries: list[Entry], metadata: dict | None = None,
           like: TensorFile | None = None) -> NpzWriter:
    """An .npz of ``entries``: ``like``'s members, order and compression when rewriting an
    .npz, else a new archive of stored members (what ``np.savez`` writes)."""
    if metadata:
        raise DropoutError(".npz output: an .npz archive cannot hold metadata")
    return NpzWriter(sink, entries, like)


# ----------------------------------------------------------------------------- split runs


def split_refusal(tf: TensorFile) -> str | None:
    """Why this archive cannot be written by many tasks at once (a Dask split), or None.

    A stored member's bytes lie at fixed offsets, like a .npy's, and its CRC-32 combines
    from its parts'; a deflated member is one compressed stream whose bytes' places are
    known only once everything before them is compressed.
    """
    deflated = [t for t in tf.tensors if t.member.member.method != STORED]
    if deflated:
        return (f"a .npz with deflated members (np.savez_compressed; "
                f"{escape_name(deflated[0].member.name)} is one) is compressed member by "
                "member, front to back; only stored members (np.savez) split")
    return None


class StoredLayout:
    """The output archive of a run over an .npz whose tensor members are all stored, planned
    before any data is written, byte for byte what ``NpzWriter`` writes.

    Members keep the input's order and names.  A processed tensor's member is its .npy
    header (``npy.header_bytes``, as ``NpzWriter`` writes it) and its data; a copied
    tensor's member (``copied``: tensors not processed) and every other member are the
    input's bytes.  ``offsets``: each tensor's data offset in the output; ``prefixes``: the
    bytes before it in its member (written by the client); ``others``: (input offset, output
    offset, bytes) of each non-tensor member's data; ``size``: the archive's size.  Once
    every range is written, ``end(parts)`` checks each input member's CRC-32 and gives the
    local headers, central directory and end records with the output CRCs.
    """

    def __init__(self, tf: TensorFile, copied: set[str]) -> None:
        self.tf = tf
        slots = sorted([t.member for t in tf.tensors] + list(tf.others), key=lambda s: s.index)
        tensor_of = {t.member.index: t for t in tf.tensors}
        self._slots: list[tuple[Slot, TensorInfo | None, bool]] = []
        self.prefixes: dict[str, bytes] = {}
        self._in_prefix: dict[str, bytes] = {}  # each tensor member's input .npy header
        fd = os.open(tf.real_path, os.O_RDONLY)
        try:
            for s in slots:
                t = tensor_of.get(s.index)
                self._slots.append((s, t, t is not None and t.name in copied))
                if t is None:
                    continue
                head = np.empty(s.header, dtype=np.uint8)
                read_exact(fd, s.member.data_offset, head, escape_name(tf.display))
                self._in_prefix[t.name] = head.tobytes()
                self.prefixes[t.name] = (self._in_prefix[t.name] if t.name in copied else
                                         npy.header_bytes(t.dtype, t.shape))
        finally:
            os.close(fd)
        starts, _, self.size = layout(self._planned({}), ".npz output")
        self.offsets: dict[str, int] = {}
        self.others: list[tuple[int, int, int]] = []
        for (s, t, _), start in zip(self._slots, starts, strict=True):
            if t is None:
                self.others.append((s.member.data_offset, start, s.member.compressed_size))
            else:
                self.offsets[t.name] = start + len(self.prefixes[t.name])

    checksummed = True  # ranges report CRC-32s: every member has one

    def begin(self) -> list[tuple[int, bytes]]:
        """Bytes the client writes before the ranges: each tensor member's .npy header."""
        return [(self.offsets[name] - len(head), head) for name, head in self.prefixes.items()]

    def _planned(self, crcs: dict[str, int]) -> list[Planned]:
        out = []
        for s, t, copied in self._slots:
            m = s.member
            if t is None or copied:
                out.append(Planned(m.name, m.method, m.crc32, m.compressed_size,
                                   m.uncompressed_size))
            else:
                size = len(self.prefixes[t.name]) + t.nbytes
                out.append(Planned(m.name, STORED, crcs.get(t.name, 0), size, size))
        return out

    def end(self, parts: dict[str, list[tuple[int, int, int]]]) -> list[tuple[int, bytes]]:
        """The archive's bytes around the data, from each tensor's ranges in order as
        (bytes, CRC-32 of the input bytes, CRC-32 of the output bytes).

        Every tensor member's CRC-32 is checked as the local run's reader checks it.
        """
        crcs = {}
        for s, t, _ in self._slots:
            if t is None:
                continue
            read = zlib.crc32(self._in_prefix[t.name])
            wrote = zlib.crc32(self.prefixes[t.name])
            for n, c_in, c_out in parts[t.name]:
                read = crc32_combine(read, c_in, n)
                wrote = crc32_combine(wrote, c_out, n)
            if read != s.member.crc32:
                raise DropoutError(f"{escape_name(self.tf.display)}: member "
                                   f"{escape_name(s.name)}: CRC-32 mismatch (the archive says "
                                   f"{s.member.crc32:08x}, the data gives {read:08x}): "
                                   "corrupt data")
            crcs[t.name] = wrote
        return layout(self._planned(crcs), ".npz output")[1]


def split_layout(tf: TensorFile, copied: set[str]) -> StoredLayout:
    """``StoredLayout`` of ``tf`` (``split_refusal(tf)`` must be None)."""
    return StoredLayout(tf, copied)
