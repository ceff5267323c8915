"""The ZIP container under .npz: a strict directory reader, member streams, a deterministic writer.

Only what NumPy writes is accepted: one disk, members stored (0) or deflated
(8), no encryption, Zip64 where sizes or offsets need it.  The reader checks
the end records, every central entry and every local header against each other
and against the file size before any member data is touched; members are then
read front to back in pieces of at most 1 MiB, whatever size a header claims.

The writer gives the same bytes for the same calls: fixed dates, versions and
attributes, no extra fields except Zip64, local headers fixed up in place with
positioned writes (no data descriptors).
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import DropoutError, escape_name
from .base import read_exact

STORED, DEFLATED = 0, 8
MAX_CENTRAL = 100_000_000  # bytes of central directory, like the safetensors header cap
MAX_DEFLATE_RATIO = 1032  # deflate spends at least 2 bits on 258 bytes of output

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_END64 = struct.Struct("<4sQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<4sIQI")
_SIG_LOCAL, _SIG_CENTRAL = b"PK\x03\x04", b"PK\x01\x02"
_SIG_END, _SIG_END64, _SIG_LOCATOR64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
_ZIP64_EXTRA = 0x0001
_M16, _M32 = 0xFFFF, 0xFFFFFFFF  # "the real value is in the Zip64 record"
# When the writer switches to Zip64 (tests lower these to exercise Zip64 on small files).
_ZIP64_AT, _COUNT64_AT = _M32, _M16

_FLAG_ENCRYPTED = 0x0001 | 0x0040 | 0x2000  # traditional, strong, central directory encryption
_FLAG_DESCRIPTOR = 0x0008  # crc and sizes follow the data; the local header may hold zeros
_FLAG_UTF8 = 0x0800
_AES = 99

_PIECE = 1 << 20  # bytes of compressed input (and of output) handled at a time
_VERSION, _VERSION64 = 20, 45  # version needed to extract: deflate, Zip64
_MADE_BY = (3 << 8) | _VERSION64  # Unix, spec 4.5
_EXTERNAL = 0o100644 << 16  # a regular file, rw-r--r--
_DOS_TIME, _DOS_DATE = 0, (0 << 9) | (1 << 5) | 1  # 1980-01-01 00:00:00


@dataclass(frozen=True)
class Member:
    """One member as the central directory describes it, checked against its local header."""

    name: str  # decoded: UTF-8 if flag bit 11 is set, else cp437; a name, never a path
    method: int  # STORED or DEFLATED
    crc32: int
    compressed_size: int
    uncompressed_size: int
    local_offset: int  # where the local header starts
    data_offset: int  # where the member's (compressed) data starts
    raw_name: bytes = b""
    flags: int = 0


def _read(fd: int, offset: int, n: int, where: str) -> bytes:
    buf = np.empty(n, dtype=np.uint8)
    read_exact(fd, offset, buf, where)
    return buf.tobytes()


def _byte_view(data) -> memoryview:
    """A flat unsigned-byte view of a bytes-like object or a contiguous array."""
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:  # reshape would copy: a read would fill the copy
            raise TypeError("a C-contiguous array is needed")
        data = data.reshape(-1).view(np.uint8)
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _zip64_fields(extra: bytes, what: str) -> bytes | None:
    """The body of the Zip64 extra field, or None; the extra field must be well formed."""
    found, pos = None, 0
    while pos < len(extra):
        if pos + 4 > len(extra):
            raise DropoutError(f"{what}: malformed extra field")
        tag, n = struct.unpack_from("<HH", extra, pos)
        if pos + 4 + n > len(extra):
            raise DropoutError(f"{what}: malformed extra field")
        if tag == _ZIP64_EXTRA:
            if found is not None:
                raise DropoutError(f"{what}: two Zip64 extra fields")
            found = extra[pos + 4:pos + 4 + n]
        pos += 4 + n
    return found


def _widen(values: list[int], body: bytes | None, what: str) -> list[int]:
    """Replace each value that is 0xFFFFFFFF by the next u64 of the Zip64 extra field's body."""
    wanted = sum(v == _M32 for v in values)
    if not wanted:
        return values
    if body is None or len(body) < 8 * wanted:
        raise DropoutError(f"{what}: a size or offset is 0xFFFFFFFF but the Zip64 extra field "
                           "that should hold it is missing or short")
    it = iter(struct.unpack_from(f"<{wanted}Q", body))
    return [next(it) if v == _M32 else v for v in values]


def _find_end(tail: bytes, base: int, where: str) -> int:
    """The offset of the end of central directory record: it and its comment end the file."""
    found = []
    i = len(tail) - _END.size
    while i >= 0:
        i = tail.rfind(_SIG_END, 0, i + 4)
        if i < 0:
            break
        if i + _END.size + struct.unpack_from("<H", tail, i + 20)[0] == len(tail):
            found.append(i)
        i -= 1
    if not found:
        raise DropoutError(f"{where}: not a zip archive, or truncated (no end of central "
                           "directory record at its end)")
    if len(found) > 1:
        raise DropoutError(f"{where}: ambiguous zip archive: its comment holds another end of "
                           "central directory record")
    return base + found[0]


def _multi_disk(where: str) -> DropoutError:
    return DropoutError(f"{where}: multi-disk (split or spanned) zip archives are not supported")


def _end_records(fd: int, size: int, where: str) -> tuple[int, int, int, int]:
    """(entry count, central directory size, its offset, where the end records start)."""
    tail_len = min(size, _END.size + _M16)
    tail = _read(fd, size - tail_len, tail_len, where)
    end = _find_end(tail, size - tail_len, where)
    _, disk, cd_disk, n_disk, n, cd_size, cd_off, _ = _END.unpack_from(tail, end - size + tail_len)
    loc = end - _LOCATOR64.size
    if loc < 0 or _read(fd, loc, 4, where) != _SIG_LOCATOR64:
        if disk or cd_disk or n_disk != n:
            raise _multi_disk(where)
        return n, cd_size, cd_off, end
    _, z_disk, rec, disks = _LOCATOR64.unpack(_read(fd, loc, _LOCATOR64.size, where))
    if z_disk or disks > 1:
        raise _multi_disk(where)
    if rec + _END64.size > loc:
        raise DropoutError(f"{where}: the Zip64 end record locator points to offset {rec}, "
                           "past itself")
    sig, rec_size, _, _, disk64, cd_disk64, n_disk64, n64, cd_size64, cd_off64 = \
        _END64.unpack(_read(fd, rec, _END64.size, where))
    if sig != _SIG_END64:
        raise DropoutError(f"{where}: no Zip64 end record at offset {rec}, where its locator "
                           "points")
    if rec + 12 + rec_size != loc:
        raise DropoutError(f"{where}: the Zip64 end record ({rec_size} bytes at offset {rec}) "
                           "does not end where its locator starts")
    if disk64 or cd_disk64 or n_disk64 != n64:
        raise _multi_disk(where)
    for short, full, marker in ((disk, disk64, _M16), (cd_disk, cd_disk64, _M16),
                                (n_disk, n_disk64, _M16), (n, n64, _M16),
                                (cd_size, cd_size64, _M32), (cd_off, cd_off64, _M32)):
        if short not in (marker, full):
            raise DropoutError(f"{where}: the end record and the Zip64 end record disagree")
    return n64, cd_size64, cd_off64, rec


def read_directory(fd: int, size: int, where: str) -> list[Member]:
    """Validate the whole archive structure and return the members in central-directory order.

    Every refusal is a one-line DropoutError starting with ``where``.
    """
    count, cd_size, cd_off, end = _end_records(fd, size, where)
    if cd_off + cd_size > end:
        raise DropoutError(f"{where}: truncated or corrupt central directory: {cd_size} bytes "
                           f"at offset {cd_off} run past its end record at offset {end}")
    if cd_off + cd_size < end:
        raise DropoutError(f"{where}: {end - cd_off - cd_size} unexplained bytes between the "
                           "central directory and its end record (prepended data or a corrupt "
                           "end record)")
    if cd_size > MAX_CENTRAL:
        raise DropoutError(f"{where}: central directory of {cd_size} bytes exceeds the limit of "
                           f"{MAX_CENTRAL}")
    if count * _CENTRAL.size > cd_size:
        raise DropoutError(f"{where}: the end record claims {count} members, more than a "
                           f"central directory of {cd_size} bytes can hold")
    cd = _read(fd, cd_off, cd_size, where)
    members, names, pos = [], set(), 0
    for i in range(count):
        if pos + _CENTRAL.size > cd_size:
            raise DropoutError(f"{where}: the central directory holds fewer than the {count} "
                               "members its end record claims")
        member, pos = _central_entry(cd, pos, i, fd, size, cd_off, where)
        if member.name in names:
            raise DropoutError(f"{where}: member {escape_name(member.name)} appears twice")
        names.add(member.name)
        members.append(member)
    if pos != cd_size:
        raise DropoutError(f"{where}: the central directory holds {cd_size - pos} bytes after "
                           f"the {count} members its end record claims")
    spans = sorted(members, key=lambda m: m.local_offset)
    for a, b in itertools.pairwise(spans):
        if b.local_offset < a.data_offset + a.compressed_size:
            raise DropoutError(f"{where}: members {escape_name(a.name)} and "
                               f"{escape_name(b.name)} overlap")
    return members


def _central_entry(cd: bytes, pos: int, i: int, fd: int, size: int, cd_off: int,
                   where: str) -> tuple[Member, int]:
    """One central directory entry at ``pos``, checked with its local header; and the next pos."""
    (sig, _, _, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, disk, _, _,
     offset) = _CENTRAL.unpack_from(cd, pos)
    here = f"{where}: central directory entry {i}"
    if sig != _SIG_CENTRAL:
        raise DropoutError(f"{here}: bad signature (corrupt central directory)")
    start = pos + _CENTRAL.size
    pos = start + nlen + xlen + clen
    if pos > len(cd):
        raise DropoutError(f"{here}: runs past the end of the central directory")
    raw = cd[start:start + nlen]
    extra = cd[start + nlen:start + nlen + xlen]
    try:
        name = raw.decode("utf-8") if flags & _FLAG_UTF8 else raw.decode("cp437")
    except UnicodeDecodeError:
        raise DropoutError(f"{here}: name is flagged UTF-8 but is not valid UTF-8") from None
    here = f"{where}: member {escape_name(name)}"
    if flags & _FLAG_ENCRYPTED or method == _AES:
        raise DropoutError(f"{here}: is encrypted; encrypted archives are not supported")
    if method not in (STORED, DEFLATED):
        raise DropoutError(f"{here}: compression method {method} is not supported (only "
                           "stored and deflate)")
    body = _zip64_fields(extra, here)
    wide = 8 * sum(v == _M32 for v in (usize, csize, offset))
    usize, csize, offset = _widen([usize, csize, offset], body, here)
    if disk == _M16:  # the disk number is in the Zip64 extra field, after the u64 values
        if body is None or len(body) < wide + 4:
            raise DropoutError(f"{here}: the disk number is 0xFFFF but the Zip64 extra field "
                               "that should hold it is missing or short")
        (disk,) = struct.unpack_from("<I", body, wide)
    if disk:
        raise _multi_disk(where)
    if method == STORED and csize != usize:
        raise DropoutError(f"{here}: stored, but its compressed size {csize} differs from its "
                           f"size {usize}")
    if method == DEFLATED and usize > MAX_DEFLATE_RATIO * csize:
        raise DropoutError(f"{here}: claims {usize} bytes from {csize} compressed bytes, more "
                           "than deflate can produce; refused")
    data = _check_local(fd, size, cd_off, offset, raw, flags, method, crc, csize, usize, here)
    return Member(name=name, method=method, crc32=crc, compressed_size=csize,
                  uncompressed_size=usize, local_offset=offset, data_offset=data,
                  raw_name=raw, flags=flags), pos


def _check_local(fd: int, size: int, cd_off: int, offset: int, raw: bytes, flags: int,
                 method: int, crc: int, csize: int, usize: int, here: str) -> int:
    """Check the local header at ``offset`` against the central entry; return the data offset."""
    if offset + _LOCAL.size > size:
        raise DropoutError(f"{here}: local header at offset {offset} runs past the end of the "
                           f"file ({size} bytes; truncated?)")
    if offset + _LOCAL.size > cd_off:
        raise DropoutError(f"{here}: local header at offset {offset} overlaps the central "
                           "directory")
    (sig, _, l_flags, l_method, _, _, l_crc, l_csize, l_usize, nlen,
     xlen) = _LOCAL.unpack(_read(fd, offset, _LOCAL.size, here))
    if sig != _SIG_LOCAL:
        raise DropoutError(f"{here}: no local header at offset {offset} (bad signature)")
    data = offset + _LOCAL.size + nlen + xlen
    if data > cd_off:
        raise DropoutError(f"{here}: local header at offset {offset} overlaps the central "
                           "directory")
    tail = _read(fd, offset + _LOCAL.size, nlen + xlen, here)
    differs = []
    if tail[:nlen] != raw:
        differs.append("name")
    if l_flags != flags:
        differs.append("flags")
    if l_method != method:
        differs.append("method")
    if not flags & _FLAG_DESCRIPTOR and not differs:
        if _M32 in (l_usize, l_csize):  # local extra fields are read only when needed
            local = f"{here}: local header"
            l_usize, l_csize = _widen([l_usize, l_csize], _zip64_fields(tail[nlen:], local),
                                      local)
        differs += [what for what, a, b in (("CRC-32", l_crc, crc), ("compressed size",
                    l_csize, csize), ("size", l_usize, usize)) if a != b]
    if differs:
        raise DropoutError(f"{here}: the local header disagrees with the central directory "
                           f"({', '.join(differs)})")
    if data + csize > size:
        raise DropoutError(f"{here}: data runs past the end of the file ({size} bytes; "
                           "truncated?)")
    if data + csize > cd_off:
        raise DropoutError(f"{here}: data overlaps the central directory")
    return data


class MemberReader:
    """The uncompressed bytes of one member, read front to back in bounded memory.

    Deflate output is asked for at most 1 MiB at a time and never past the
    declared size; ``finish`` then checks that the stream ends exactly there and
    that the CRC-32 matches.
    """

    def __init__(self, fd: int, member: Member, where: str) -> None:
        self._fd, self._member = fd, member
        self._where = f"{where}: member {escape_name(member.name)}"
        self._pos = member.data_offset  # next compressed byte to read
        self._left_in = member.compressed_size
        self._left_out = member.uncompressed_size
        self._crc = 0
        self._z = zlib.decompressobj(-15) if member.method == DEFLATED else None
        self._tail: bytes | memoryview = b""  # compressed input given to zlib but not yet consumed
        self._scratch: bytearray | None = None

    def readinto(self, out) -> None:
        """Fill ``out`` (a writable buffer) with the next len(out) uncompressed bytes."""
        view = _byte_view(out)
        n = len(view)
        if n > self._left_out:
            raise DropoutError(f"{self._where}: {n} bytes asked for, only {self._left_out} of "
                               f"its {self._member.uncompressed_size} remain")
        if self._z is None:
            read_exact(self._fd, self._pos, np.frombuffer(view, dtype=np.uint8), self._where)
            self._pos += n
            self._left_in -= n
        else:
            done = 0
            while done < n:
                chunk = self._inflate(min(n - done, _PIECE))
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
        self._crc = zlib.crc32(view, self._crc)
        self._left_out -= n

    def skip(self, n: int) -> None:
        """Consume ``n`` bytes without keeping them (they still count for the CRC-32)."""
        if n < 0 or n > self._left_out:
            raise DropoutError(f"{self._where}: cannot skip {n} bytes, {self._left_out} remain")
        if self._scratch is None:
            self._scratch = bytearray(min(_PIECE, max(n, 1)))
        scratch = memoryview(self._scratch)
        while n:
            k = min(n, len(scratch))
            self.readinto(scratch[:k])
            n -= k

    def finish(self) -> None:
        """Check that every byte was read, the deflate stream ends there, and the CRC-32."""
        m = self._member
        if self._left_out:
            raise DropoutError(f"{self._where}: only {m.uncompressed_size - self._left_out} of "
                               f"its {m.uncompressed_size} bytes were read")
        if self._z is not None:
            while not self._z.eof:  # the declared size is reached: the stream must end here
                if self._step(1):
                    raise DropoutError(f"{self._where}: deflate data holds more than the "
                                       f"declared {m.uncompressed_size} bytes (a "
                                       "decompression bomb?); refused")
            # at the end, unused_data holds all input fed but not consumed (zlib may leave a
            # copy of it in unconsumed_tail too); _left_in is the input never read
            rest = len(self._z.unused_data) + self._left_in
            if rest:
                raise DropoutError(f"{self._where}: {rest} bytes of compressed data after the "
                                   "end of the deflate stream")
        if self._crc != m.crc32:
            raise DropoutError(f"{self._where}: CRC-32 mismatch (the archive says "
                               f"{m.crc32:08x}, the data gives {self._crc:08x}): corrupt data")

    def _inflate(self, limit: int) -> bytes:
        """Between 1 and ``limit`` more uncompressed bytes."""
        while True:
            if self._z.eof:
                made = self._member.uncompressed_size - self._left_out
                raise DropoutError(f"{self._where}: deflate stream ends early, before the "
                                   f"declared {self._member.uncompressed_size} bytes (after "
                                   f"at least {made})")
            chunk = self._step(limit)
            if chunk:
                return chunk

    def _step(self, limit: int) -> bytes:
        """Feed zlib (1 MiB of input at most) and take up to ``limit`` bytes out."""
        if not self._tail and self._left_in:
            k = min(_PIECE, self._left_in)
            buf = np.empty(k, dtype=np.uint8)
            read_exact(self._fd, self._pos, buf, self._where)
            self._pos += k
            self._left_in -= k
            self._tail = memoryview(buf)
        try:
            chunk = self._z.decompress(self._tail, limit)
        except zlib.error as e:
            raise DropoutError(f"{self._where}: corrupt deflate data ({e})") from None
        self._tail = self._z.unconsumed_tail
        if not chunk and not self._tail and not self._left_in and not self._z.eof:
            raise DropoutError(f"{self._where}: truncated: the compressed data ends inside the "
                               "deflate stream")
        return chunk


def _encode_name(name: str, where: str) -> tuple[bytes, int]:
    """(name bytes, flags): ASCII as it is, anything else UTF-8 with flag bit 11."""
    try:
        raw, flags = name.encode("ascii"), 0
    except UnicodeEncodeError:
        try:
            raw, flags = name.encode("utf-8"), _FLAG_UTF8
        except UnicodeEncodeError:
            raise DropoutError(f"{where}: member name {escape_name(name)} cannot be stored "
                               "as UTF-8") from None
    if len(raw) > _M16:
        raise DropoutError(f"{where}: member name of {len(raw)} bytes is too long (at most "
                           f"{_M16})")
    return raw, flags


def _fit(value: int, at: int, marker: int) -> int:
    return marker if value >= at else value


def _deflate_bound(n: int) -> int:
    """zlib's compressBound: no deflate output of ``n`` bytes is longer."""
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13


@dataclass(frozen=True)
class _Entry:
    raw: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    offset: int
    version: int

    def central(self) -> bytes:
        big = [v for v in (self.usize, self.csize, self.offset) if v >= _ZIP64_AT]
        extra = struct.pack(f"<HH{len(big)}Q", _ZIP64_EXTRA, 8 * len(big), *big) if big else b""
        return _CENTRAL.pack(
            _SIG_CENTRAL, _MADE_BY, self.version, self.flags, self.method, _DOS_TIME, _DOS_DATE,
            self.crc, _fit(self.csize, _ZIP64_AT, _M32), _fit(self.usize, _ZIP64_AT, _M32),
            len(self.raw), len(extra), 0, 0, 0, _EXTERNAL,
            _fit(self.offset, _ZIP64_AT, _M32)) + self.raw + extra


def _local_header(raw: bytes, flags: int, method: int, crc: int, csize: int, usize: int,
                  zip64: bool, version: int) -> bytes:
    if zip64:  # both sizes in the extra field, as the spec asks of a local header
        extra = struct.pack("<HHQQ", _ZIP64_EXTRA, 16, usize, csize)
        csize = usize = _M32
    else:
        extra = b""
    return _LOCAL.pack(_SIG_LOCAL, version, flags, method, _DOS_TIME, _DOS_DATE, crc, csize,
                       usize, len(raw), len(extra)) + raw + extra


class ArchiveWriter:
    """A deterministic archive written through ``sink.write_at(pos, data)``.

    Members are written one after the other: ``add`` (then the member's
    ``write`` calls and ``close``) or ``copy``; ``finish`` writes the central
    directory and the end records.
    """

    def __init__(self, sink, where: str = "zip archive") -> None:
        self._sink = sink
        self._where = where
        self._pos = 0
        self._entries: list[_Entry] = []
        self._names: set[str] = set()
        self._open: MemberWriter | None = None
        self._finished = False

    def add(self, name: str, method: int, uncompressed_size: int) -> MemberWriter:
        """Start a member of exactly ``uncompressed_size`` bytes, stored or deflated."""
        if method not in (STORED, DEFLATED):
            raise DropoutError(f"{self._where}: compression method {method} is not supported "
                               "(only stored and deflate)")
        if isinstance(uncompressed_size, bool) or not isinstance(uncompressed_size, int) \
                or uncompressed_size < 0:
            raise DropoutError(f"{self._where}: member size must be a non-negative integer, "
                               f"got {uncompressed_size!r}")
        raw, flags = self._start(name)
        # the local header is written before the compressed size is known: reserve Zip64
        # if the size, or the most deflate could make of it, reaches the limit
        bound = uncompressed_size if method == STORED else _deflate_bound(uncompressed_size)
        self._open = MemberWriter(self, name, raw, flags, method, uncompressed_size,
                                  zip64=bound >= _ZIP64_AT)
        return self._open

    def copy(self, fd: int, member: Member) -> None:
        """Copy a member read by read_directory unchanged: its compressed bytes, CRC and sizes."""
        pos = self.place(member.name, member.method, member.crc32, member.compressed_size,
                         member.uncompressed_size)
        buf = np.empty(min(_PIECE, member.compressed_size), dtype=np.uint8)
        for s in range(0, member.compressed_size, _PIECE):
            piece = buf[:min(_PIECE, member.compressed_size - s)]
            read_exact(fd, member.data_offset + s, piece)
            self._sink.write_at(pos + s, piece)

    def place(self, name: str, method: int, crc: int, compressed_size: int,
              uncompressed_size: int) -> int:
        """A member whose CRC and sizes are known: write its local header, leave room for its
        ``compressed_size`` bytes of data and return where they start (the caller writes them).

        ``copy`` is this plus the bytes; a stored member ``add``-ed with the same size and
        data gets the same header and central entry, so ``layout`` can plan an archive.
        """
        raw, flags = self._start(name)
        zip64 = max(uncompressed_size, compressed_size) >= _ZIP64_AT
        offset = self._pos
        version = self._version(zip64, offset)
        header = _local_header(raw, flags, method, crc, compressed_size, uncompressed_size,
                               zip64, version)
        self._sink.write_at(offset, header)
        self._pos = offset + len(header) + compressed_size
        self._entries.append(_Entry(raw, flags, method, crc, compressed_size,
                                    uncompressed_size, offset, version))
        return offset + len(header)

    def finish(self) -> None:
        """Write the central directory, the Zip64 end records when needed, and the end record."""
        self._check_state()
        self._finished = True
        cd_off = self._pos
        block = bytearray()
        for e in self._entries:
            block += e.central()
            if len(block) >= _PIECE:
                self._emit(block)
                block = bytearray()
        n = len(self._entries)
        cd_size = self._pos + len(block) - cd_off
        if n >= _COUNT64_AT or cd_size >= _ZIP64_AT or cd_off >= _ZIP64_AT:
            rec = self._pos + len(block)
            block += _END64.pack(_SIG_END64, _END64.size - 12, _MADE_BY, _VERSION64, 0, 0, n, n,
                                 cd_size, cd_off)
            block += _LOCATOR64.pack(_SIG_LOCATOR64, 0, rec, 1)
        count = _fit(n, _COUNT64_AT, _M16)
        block += _END.pack(_SIG_END, 0, 0, count, count, _fit(cd_size, _ZIP64_AT, _M32),
                           _fit(cd_off, _ZIP64_AT, _M32), 0)
        self._emit(block)

    def _emit(self, data) -> None:
        self._sink.write_at(self._pos, data)
        self._pos += len(data)

    def _check_state(self) -> None:
        if self._finished:
            raise DropoutError(f"{self._where}: the archive is already finished")
        if self._open is not None:
            raise DropoutError(f"{self._where}: member {escape_name(self._open.name)} is still "
                               "open")

    def _start(self, name: str) -> tuple[bytes, int]:
        self._check_state()
        if name in self._names:
            raise DropoutError(f"{self._where}: member {escape_name(name)} written twice")
        raw, flags = _encode_name(name, self._where)
        self._names.add(name)
        return raw, flags

    @staticmethod
    def _version(zip64: bool, offset: int) -> int:
        return _VERSION64 if zip64 or offset >= _ZIP64_AT else _VERSION


class MemberWriter:
    """One member being written: uncompressed bytes in, stored or deflated bytes out."""

    def __init__(self, archive: ArchiveWriter, name: str, raw: bytes, flags: int, method: int,
                 size: int, zip64: bool) -> None:
        self.name = name
        self._archive, self._raw, self._flags, self._method = archive, raw, flags, method
        self._size, self._zip64, self._count, self._crc = size, zip64, 0, 0
        self._offset = archive._pos
        self._version = archive._version(zip64, self._offset)
        self._z = zlib.compressobj(level=zlib.Z_DEFAULT_COMPRESSION, method=zlib.DEFLATED,
                                   wbits=-15) if method == DEFLATED else None
        archive._emit(self._header())  # a placeholder until close() knows the CRC and size
        self._data = archive._pos

    def write(self, data) -> None:
        """Append uncompressed bytes (any bytes-like object or contiguous array)."""
        if self._archive._open is not self:
            raise DropoutError(f"{self._archive._where}: member {escape_name(self.name)} is "
                               "already closed")
        view = _byte_view(data)
        if self._count + len(view) > self._size:
            raise DropoutError(f"{self._archive._where}: member {escape_name(self.name)}: "
                               f"more than its declared {self._size} bytes written")
        for s in range(0, len(view), _PIECE):
            piece = view[s:s + _PIECE]
            self._crc = zlib.crc32(piece, self._crc)
            out = piece if self._z is None else self._z.compress(piece)
            if out:
                self._archive._emit(out)
        self._count += len(view)

    def close(self) -> None:
        """Check the byte count, fix up the local header and record the central entry."""
        archive = self._archive
        if archive._open is not self:
            raise DropoutError(f"{archive._where}: member {escape_name(self.name)} is already "
                               "closed")
        if self._count != self._size:
            raise DropoutError(f"{archive._where}: member {escape_name(self.name)}: "
                               f"{self._count} of its declared {self._size} bytes written")
        if self._z is not None:
            archive._emit(self._z.flush())
        csize = archive._pos - self._data
        if csize >= _ZIP64_AT and not self._zip64:  # pragma: no cover - _deflate_bound prevents it
            raise DropoutError(f"{archive._where}: member {escape_name(self.name)}: compressed "
                               "size needs Zip64, which its local header did not reserve")
        archive._sink.write_at(self._offset, self._header(csize))
        archive._entries.append(_Entry(self._raw, self._flags, self._method, self._crc, csize,
                                       self._size, self._offset, self._version))
        archive._open = None

    def _header(self, csize: int = 0) -> bytes:
        return _local_header(self._raw, self._flags, self._method, self._crc,
                             self._size if self._method == STORED else csize, self._size,
                             self._zip64, self._version)


class _Recorder:
    """A sink that keeps what is written, as (position, bytes)."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes]] = []

    def write_at(self, pos: int, data) -> None:
        self.writes.append((pos, bytes(data)))


@dataclass(frozen=True)
class Planned:
    """One member of an archive laid out before its data exists (``layout``)."""

    name: str
    method: int
    crc: int
    compressed_size: int
    uncompressed_size: int


def layout(members: list[Planned], where: str = "zip archive") -> tuple[
        list[int], list[tuple[int, bytes]], int]:
    """An archive planned in advance: (each member's data offset, every byte that is not
    member data as (position, bytes): local headers, central directory, end records, and
    the archive's size).

    It is ``ArchiveWriter``'s own output: each member ``place``-d, then ``finish``.  Filling
    each member's data at its offset gives the bytes ``ArchiveWriter`` writes when the same
    members are ``copy``-ed, or ``add``-ed stored.  Offsets and sizes do not depend on the
    CRCs, so a first layout with CRCs 0 places the data and a second one, with the CRCs,
    gives the headers.
    """
    rec = _Recorder()
    w = ArchiveWriter(rec, where)
    offsets = [w.place(m.name, m.method, m.crc, m.compressed_size, m.uncompressed_size)
               for m in members]
    w.finish()
    size = max([0] + [pos + len(data) for pos, data in rec.writes])
    return offsets, rec.writes, size


# --------------------------------------------------------------------------- CRC-32 combine

_CRC_POLY = 0xEDB88320  # CRC-32 (zlib, ZIP), reflected


def _gf2_times(mat: list[int], vec: int) -> int:
    total, i = 0, 0
    while vec:
        if vec & 1:
            total ^= mat[i]
        vec >>= 1
        i += 1
    return total


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


_ZEROS: list[list[int]] = []  # _ZEROS[k]: the operator that appends 2**k zero bytes to a CRC


def _zeros_operator(k: int) -> list[int]:
    if not _ZEROS:
        one_bit = [_CRC_POLY] + [1 << n for n in range(31)]
        op = one_bit
        for _ in range(3):  # 2, 4, 8 zero bits: one zero byte
            op = _gf2_square(op)
        _ZEROS.append(op)
    while len(_ZEROS) <= k:
        _ZEROS.append(_gf2_square(_ZEROS[-1]))
    return _ZEROS[k]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A + B from crc1 = crc32(A), crc2 = crc32(B) and len2 = len(B).

    zlib's crc32_combine (its GF(2) matrix method; Python's zlib does not offer it):
    crc1 is advanced over len2 zero bytes by squared operators, one per set bit of
    len2, then crc2 is added.  Lets tasks that wrote parts of a member report CRCs of
    their parts, combined in order by the client.
    """
    if len2 < 0:
        raise ValueError(f"len2 must be non-negative, got {len2}")
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(_zeros_operator(k), crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2
