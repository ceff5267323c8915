"""The ZIP layer under .npz: NumPy's archives read, ours read by NumPy, hostile ones refused.

Hostile archives are built here byte by byte with ``struct`` (``craft``), never
with the writer under test; zipfile and NumPy check what the writer makes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from dropout_core.errors import DropoutError
from dropout_core.formats import ziparchive
from dropout_core.formats.ziparchive import (
    DEFLATED,
    STORED,
    ArchiveWriter,
    MemberReader,
    Planned,
    crc32_combine,
    layout,
    read_directory,
)

WHERE = "in.npz"
M32 = 0xFFFFFFFF
LOCAL = struct.Struct("<4sHHHHHIIIHH")
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
END = struct.Struct("<4sHHHHIIH")
END64 = struct.Struct("<4sQHHIIQQQQ")
LOCATOR64 = struct.Struct("<4sIQI")


# --------------------------------------------------------------------------- helpers

class MemSink:
    """write_at into a bytearray, like dropout_core.formats.base.Sink into a file."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write_at(self, pos: int, data) -> None:
        data = bytes(memoryview(data).cast("B"))
        if pos > len(self.buf):
            self.buf += bytes(pos - len(self.buf))
        self.buf[pos:pos + len(data)] = data


def write_zip(members, chunk: int | None = None) -> bytes:
    """An archive from (name, method, data), each member written in pieces of ``chunk``."""
    sink = MemSink()
    w = ArchiveWriter(sink)
    for name, method, data in members:
        mw = w.add(name, method, len(data))
        step = chunk or max(len(data), 1)
        for s in range(0, len(data), step):
            mw.write(data[s:s + step])
        mw.close()
    w.finish()
    return bytes(sink.buf)


def npy_bytes(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def put(tmp_path, blob: bytes, name: str = "a.npz") -> str:
    p = tmp_path / name
    p.write_bytes(blob)
    return str(p)


def directory(path: str, where: str = WHERE) -> list:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_directory(fd, os.fstat(fd).st_size, where)
    finally:
        os.close(fd)


def read_all(path: str, where: str = WHERE, piece: int = 7919) -> dict[str, bytes]:
    """Every member's bytes through MemberReader, read in odd-sized pieces."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = {}
        for m in read_directory(fd, os.fstat(fd).st_size, where):
            r = MemberReader(fd, m, where)
            buf = bytearray(m.uncompressed_size)
            view = memoryview(buf)
            for s in range(0, len(buf), piece):
                r.readinto(view[s:s + piece])
            r.finish()
            out[m.name] = bytes(buf)
        return out
    finally:
        os.close(fd)


def refused(fn, *args) -> str:
    """The one-line message of the DropoutError that fn(*args) raises, starting with WHERE."""
    with pytest.raises(DropoutError) as e:
        fn(*args)
    msg = str(e.value)
    assert type(e.value) is DropoutError
    assert msg.startswith(f"{WHERE}: "), msg
    assert "\n" not in msg and "\x1b" not in msg, repr(msg)
    return msg


def deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


# --------------------------------------------------------------------------- a raw builder

def entry(name: bytes = b"x.npy", plain: bytes = b"hello world", method: int = 0,
          **kw) -> dict:
    """One member for ``craft``: header fields, data, and overrides for either header."""
    data = deflate(plain) if method == DEFLATED else plain
    m = dict(name=name, data=data, method=method, flags=0, crc=zlib.crc32(plain),
             csize=len(data), usize=len(plain), extra=b"", disk=0, local={}, central={},
             emit=True, after=b"")
    m.update(kw)
    return m


def local_header(m: dict, zip64: bool = False) -> bytes:
    f = {**m, **m["local"]}
    csize, usize, extra = f["csize"], f["usize"], f.get("lextra", b"")
    if zip64:
        extra = struct.pack("<HHQQ", 1, 16, usize, csize) + extra
        csize = usize = M32
    return LOCAL.pack(f.get("sig", b"PK\x03\x04"), 45 if zip64 else 20, f["flags"], f["method"],
                      0, 0x21, f["crc"], csize, usize, len(f["name"]), len(extra)) + \
        f["name"] + extra


def craft(members: list[dict], *, zip64: bool = False, end: dict | None = None,
          end64: dict | None = None, locator: dict | None = None, comment: bytes = b"",
          prefix: bytes = b"") -> bytes:
    """An archive laid out by hand; ``end``, ``end64``, ``locator`` override record fields.

    With ``zip64``, every header carries Zip64 extras for all its sizes and
    offsets (32-bit fields 0xFFFFFFFF) and the end record points to a Zip64 one.
    """
    out = bytearray(prefix)
    offsets = []
    for m in members:
        offsets.append(len(out) - len(prefix))
        if m["emit"]:
            out += local_header(m, zip64) + m["data"] + m["after"]
    cd_off = len(out) - len(prefix)
    for m, offset in zip(members, offsets, strict=True):
        f = {**m, **m["central"]}
        csize, usize, off = f["csize"], f["usize"], f.get("offset", offset)
        extra = f["extra"]
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, usize, csize, off) + extra
            csize = usize = off = M32
        out += CENTRAL.pack(f.get("sig", b"PK\x01\x02"), 0x32D, 45 if zip64 else 20,
                            f["flags"], f["method"], 0, 0x21, f["crc"], csize, usize,
                            len(f["name"]), len(extra), 0, f["disk"], 0, 0, off) + \
            f["name"] + extra
    n, cd_size = len(members), len(out) - len(prefix) - cd_off
    rec = dict(disk=0, cd_disk=0, n_disk=n, n=n, cd_size=cd_size, cd_off=cd_off)
    if zip64:
        z = {**rec, "size": 44, **(end64 or {})}
        pos = len(out) - len(prefix)
        out += END64.pack(b"PK\x06\x06", z["size"], 0x32D, 45, z["disk"], z["cd_disk"],
                          z["n_disk"], z["n"], z["cd_size"], z["cd_off"])
        loc = {"disk": 0, "offset": pos, "disks": 1, **(locator or {})}
        out += LOCATOR64.pack(b"PK\x06\x07", loc["disk"], loc["offset"], loc["disks"])
        rec.update(n_disk=0xFFFF, n=0xFFFF, cd_size=M32, cd_off=M32)
    rec.update(end or {})
    out += END.pack(b"PK\x05\x06", rec["disk"], rec["cd_disk"], rec["n_disk"], rec["n"],
                    rec["cd_size"], rec["cd_off"], len(comment)) + comment
    return bytes(out)


# --------------------------------------------------------------------------- NumPy's archives

ARRAYS = {
    "weights": np.random.default_rng(0).normal(size=(700, 500)).astype(np.float32),  # > 1 MiB
    "ints": np.arange(1000, dtype=np.int64),
    "zeros": np.zeros((300, 300)),
    "empty": np.zeros((0, 3), dtype=np.float16),
}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_numpy_archives_read_member_by_member_like_zipfile(tmp_path, save):
    path = str(tmp_path / "a.npz")
    save(path, **ARRAYS)
    members = directory(path)
    got = read_all(path)
    with zipfile.ZipFile(path) as z:
        assert [m.name for m in members] == z.namelist()
        for m, info in zip(members, z.infolist(), strict=True):
            assert (m.method, m.crc32, m.compressed_size, m.uncompressed_size,
                    m.local_offset) == (info.compress_type, info.CRC, info.compress_size,
                                        info.file_size, info.header_offset)
            assert got[m.name] == z.read(m.name)


def test_reading_into_numpy_views_and_skipping(tmp_path):
    path = str(tmp_path / "a.npz")
    np.savez_compressed(path, w=ARRAYS["weights"])
    fd = os.open(path, os.O_RDONLY)
    try:
        (m,) = read_directory(fd, os.fstat(fd).st_size, WHERE)
        want = npy_bytes(ARRAYS["weights"])
        r = MemberReader(fd, m, WHERE)
        r.skip(128)  # the .npy header
        out = np.empty(ARRAYS["weights"].shape, dtype=np.float32)
        r.readinto(out.reshape(-1).view(np.uint8))
        r.finish()
        np.testing.assert_array_equal(out, ARRAYS["weights"])
        assert len(want) == 128 + out.nbytes
    finally:
        os.close(fd)


def test_reading_past_the_member_or_finishing_early_is_refused(tmp_path):
    path = put(tmp_path, write_zip([("m", DEFLATED, b"abc" * 100)]))
    fd = os.open(path, os.O_RDONLY)
    try:
        (m,) = read_directory(fd, os.fstat(fd).st_size, WHERE)
        r = MemberReader(fd, m, WHERE)
        assert "bytes asked for" in refused(r.readinto, bytearray(301))
        r.skip(10)
        assert "only 10 of its 300 bytes were read" in refused(r.finish)
        assert "cannot skip" in refused(r.skip, 291)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- our archives

@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_written_archives_load_in_numpy_and_zipfile(tmp_path, method):
    blobs = {f"{k}.npy": npy_bytes(v) for k, v in ARRAYS.items()}
    path = put(tmp_path, write_zip([(k, method, v) for k, v in blobs.items()], chunk=65537))
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(ARRAYS)
        for k, v in ARRAYS.items():
            np.testing.assert_array_equal(npz[k], v)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        for info in z.infolist():
            assert info.compress_type == method
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.extra == b""
            assert info.flag_bits == 0
            assert z.read(info.filename) == blobs[info.filename]
    assert read_all(path) == blobs


def test_empty_archive(tmp_path):
    blob = write_zip([])
    assert blob == b"PK\x05\x06" + bytes(18)
    path = put(tmp_path, blob)
    assert directory(path) == []
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == []
    with np.load(path) as npz:
        assert npz.files == []


@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_zero_length_member(tmp_path, method):
    path = put(tmp_path, write_zip([("nothing", method, b""), ("after", method, b"x")]))
    with zipfile.ZipFile(path) as z:
        assert z.read("nothing") == b"" and z.read("after") == b"x"
    assert read_all(path) == {"nothing": b"", "after": b"x"}


NAMES = ["plain.npy", "é/ü 名前.npy", "../../etc/passwd", "/abs", "a\x1b[2Jb", "nul\x00byte",
         "back\\slash", "", "C:\\x", "\u202eevil"]


def test_unicode_and_hostile_names_are_kept_as_names(tmp_path):
    blobs = {name: name.encode() * 3 for name in NAMES}
    path = put(tmp_path, write_zip([(n, DEFLATED, b) for n, b in blobs.items()]))
    members = directory(path)
    assert [m.name for m in members] == NAMES
    assert [bool(m.flags & 0x800) for m in members] == [not n.isascii() for n in NAMES]
    assert read_all(path) == blobs
    with zipfile.ZipFile(path) as z:
        assert [i.orig_filename for i in z.infolist()] == NAMES
        assert z.testzip() is None


def test_names_without_the_utf8_flag_are_cp437(tmp_path):
    path = put(tmp_path, craft([entry(name=b"caf\x82\x9b.npy")]))
    (m,) = directory(path)
    with zipfile.ZipFile(path) as z:
        assert m.name == "café¢.npy" == z.namelist()[0]
    assert m.raw_name == b"caf\x82\x9b.npy"


def test_same_calls_give_the_same_bytes():
    members = [(f"{k}.npy", (STORED, DEFLATED)[i % 2], npy_bytes(v))
               for i, (k, v) in enumerate(ARRAYS.items())]
    assert write_zip(members) == write_zip(members)


def test_stored_archive_bytes_are_pinned():
    # remake: write_zip([("x.npy", STORED, b"hi"), ("é", DEFLATED, b"")]).hex()
    blob = write_zip([("x.npy", STORED, b"hi"), ("é", DEFLATED, b"")])
    assert blob.hex() == (
        # local header of x.npy: version 2.0, no flags, stored, 1980-01-01 00:00, crc, sizes
        "504b0304" "1400" "0000" "0000" "0000" "2100" "ac2a93d8" "02000000" "02000000" "0500"
        "0000" + b"x.npy".hex() + b"hi".hex() +
        # local header of the UTF-8 name (flag bit 11), deflated: an empty deflate stream
        "504b0304" "1400" "0008" "0800" "0000" "2100" "00000000" "02000000" "00000000" "0200"
        "0000" "c3a9" "0300" +
        # central entries: made by Unix 4.5, no extra, no comment, mode 0100644, offsets 0, 37
        "504b0102" "2d03" "1400" "0000" "0000" "0000" "2100" "ac2a93d8" "02000000" "02000000"
        "0500" "0000" "0000" "0000" "0000" "0000a481" "00000000" + b"x.npy".hex() +
        "504b0102" "2d03" "1400" "0008" "0800" "0000" "2100" "00000000" "02000000" "00000000"
        "0200" "0000" "0000" "0000" "0000" "0000a481" "25000000" "c3a9" +
        # end record: 2 members, central directory of 99 bytes at offset 71, no comment
        "504b0506" "0000" "0000" "0200" "0200" "63000000" "47000000" "0000")


def test_copy_keeps_the_compressed_bytes(tmp_path):
    src = str(tmp_path / "src.npz")
    data = npy_bytes(ARRAYS["weights"])
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("w.npy", data)  # level 1: recompressing at the default level would differ
        z.writestr("s.npy", npy_bytes(ARRAYS["ints"]), compress_type=zipfile.ZIP_STORED)
    sink = MemSink()
    w = ArchiveWriter(sink)
    fd = os.open(src, os.O_RDONLY)
    try:
        members = read_directory(fd, os.fstat(fd).st_size, WHERE)
        for m in members:
            w.copy(fd, m)
        mw = w.add("new.npy", DEFLATED, 3)
        mw.write(b"abc")
        mw.close()
        w.finish()
    finally:
        os.close(fd)
    out = put(tmp_path, bytes(sink.buf), "out.npz")
    raw_in = (tmp_path / "src.npz").read_bytes()
    copied = directory(out)
    for a, b in zip(members, copied, strict=False):
        assert (a.name, a.method, a.crc32, a.compressed_size, a.uncompressed_size) == \
            (b.name, b.method, b.crc32, b.compressed_size, b.uncompressed_size)
        assert sink.buf[b.data_offset:b.data_offset + b.compressed_size] == \
            raw_in[a.data_offset:a.data_offset + a.compressed_size]
    assert deflate(data) != raw_in[members[0].data_offset:][:members[0].compressed_size]
    with np.load(out) as npz:
        np.testing.assert_array_equal(npz["w"], ARRAYS["weights"])
        np.testing.assert_array_equal(npz["s"], ARRAYS["ints"])
    assert read_all(out)["new.npy"] == b"abc"


def _writer_misuse(case: str) -> None:
    w = ArchiveWriter(MemSink(), where=WHERE)
    if case == "method":
        w.add("a", 12, 1)
    m = w.add("a", STORED, 3)
    if case == "short":
        m.write(b"ab")
        m.close()
    if case == "long":
        m.write(b"abcd")
    if case == "still-open":
        w.add("b", STORED, 1)
    if case == "finish-open":
        w.finish()
    m.write(b"abc")
    m.close()
    if case == "write-closed":
        m.write(b"")
    if case == "duplicate":
        w.add("a", DEFLATED, 0)
    if case == "surrogate":
        w.add("\udc80", STORED, 0)
    if case == "size":
        w.add("b", STORED, -1)
    w.finish()
    if case == "finished":
        w.add("b", STORED, 0)


@pytest.mark.parametrize("case, problem", [
    ("method", "compression method 12"), ("short", "2 of its declared 3 bytes"),
    ("long", "more than its declared 3 bytes"), ("still-open", "member a is still open"),
    ("finish-open", "still open"), ("write-closed", "already closed"),
    ("duplicate", "written twice"), ("surrogate", "cannot be stored as UTF-8"),
    ("size", "non-negative integer"), ("finished", "already finished"),
])
def test_writer_misuse_is_refused(case, problem):
    assert re.search(problem, refused(_writer_misuse, case))


def test_memory_stays_bounded_for_large_members(tmp_path):
    size = 64 << 20
    zeros = np.zeros(size, dtype=np.uint8)

    class Discard:
        written = 0

        def write_at(self, pos, data):
            self.written = max(self.written, pos + len(memoryview(data).cast("B")))

    tracemalloc.start()
    try:
        w = ArchiveWriter(Discard())
        mw = w.add("z", DEFLATED, size)
        mw.write(zeros)  # one call: deflated 1 MiB at a time
        mw.close()
        _, write_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    path = put(tmp_path, write_zip([("z", DEFLATED, bytes(size))]))
    fd = os.open(path, os.O_RDONLY)
    tracemalloc.start()
    try:
        (m,) = read_directory(fd, os.fstat(fd).st_size, WHERE)
        r = MemberReader(fd, m, WHERE)
        r.skip(size)
        r.finish()
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        os.close(fd)
    assert write_peak < 8 << 20 and read_peak < 8 << 20, (write_peak, read_peak)


# --------------------------------------------------------------------------- Zip64

@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zipfile_force_zip64_archives_are_read(tmp_path, method):
    path = str(tmp_path / "z.npz")
    blobs = {"a.npy": npy_bytes(ARRAYS["ints"]), "b.npy": npy_bytes(ARRAYS["zeros"])}
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in blobs.items():
            with z.open(name, "w", force_zip64=True) as f:
                f.write(data)
    raw = (tmp_path / "z.npz").read_bytes()
    assert struct.unpack_from("<II", raw, 18) == (M32, M32)  # sizes in the local Zip64 extra
    assert read_all(path) == blobs


@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_full_zip64_archive_is_read(tmp_path, method):
    blob = craft([entry(b"a", b"first" * 50, method), entry(b"b", b"second", method)],
                 zip64=True)
    path = put(tmp_path, blob)
    with zipfile.ZipFile(path) as z:  # the builder makes what zipfile reads
        assert z.read("a") == b"first" * 50
    assert read_all(path) == {"a": b"first" * 50, "b": b"second"}


@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_writer_uses_zip64_where_values_reach_the_limit(tmp_path, monkeypatch, method):
    monkeypatch.setattr(ziparchive, "_ZIP64_AT", 100)  # as if 100 were 4 GiB
    monkeypatch.setattr(ziparchive, "_COUNT64_AT", 3)  # and 3 were 65535 members
    blobs = {"small": b"s" * 10, "big.npy": npy_bytes(ARRAYS["ints"]), "last": b"z" * 50}
    blob = write_zip([(k, method, v) for k, v in blobs.items()])
    path = put(tmp_path, blob)
    assert blob[-22:] == END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, M32, M32, 0)
    assert b"PK\x06\x06" in blob and b"PK\x06\x07" in blob
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        infos = z.infolist()
        assert [i.header_offset >= 100 for i in infos] == [False, False, True]
        assert all(z.read(k) == v for k, v in blobs.items())
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["big"], ARRAYS["ints"])
    assert read_all(path) == blobs


def test_deflate_output_past_the_limit_was_reserved_for(tmp_path, monkeypatch):
    monkeypatch.setattr(ziparchive, "_ZIP64_AT", 1000)
    noise = np.random.default_rng(1).bytes(996)  # incompressible: deflate adds a few bytes
    blob = write_zip([("n", DEFLATED, noise)])
    path = put(tmp_path, blob)
    assert struct.unpack_from("<II", blob, 18) == (M32, M32)  # reserved in the local header
    with zipfile.ZipFile(path) as z:
        (info,) = z.infolist()
        assert info.file_size < 1000 <= info.compress_size
        assert z.read("n") == noise
    assert read_all(path) == {"n": noise}


def test_reading_into_a_strided_array_is_a_type_error(tmp_path):
    path = put(tmp_path, write_zip([("m", STORED, bytes(8))]))
    fd = os.open(path, os.O_RDONLY)
    try:
        (m,) = read_directory(fd, os.fstat(fd).st_size, WHERE)
        with pytest.raises(TypeError):
            MemberReader(fd, m, WHERE).readinto(np.zeros(16, dtype=np.uint8)[::2])
    finally:
        os.close(fd)


def test_zip64_end_record_must_agree_with_the_end_record(tmp_path):
    path = put(tmp_path, craft([entry()], zip64=True, end={"n": 2, "n_disk": 2}))
    assert "disagree" in refused(directory, path)


# --------------------------------------------------------------------------- hostile archives

def _overlapping() -> bytes:
    """Member b's local header and data sit inside member a's stored data."""
    inner = entry(b"b", b"inner")
    a = entry(b"a", local_header(inner) + inner["data"])
    inner.update(emit=False, central={"offset": LOCAL.size + 1})
    return craft([a, inner])


def _ambiguous_end() -> bytes:
    fake = END.pack(b"PK\x05\x06", 0, 0, 0, 0, 0, 0, 0)
    return craft([entry()], comment=fake)


def _valid() -> bytes:
    return craft([entry(b"a"), entry(b"b", method=DEFLATED)])


HOSTILE = {
    "empty file": (b"", "not a zip archive"),
    "not a zip": (b"\x93NUMPY" + bytes(200), "not a zip archive"),
    "truncated by one byte": (_valid()[:-1], "not a zip archive, or truncated"),
    "truncated to half": (_valid()[:len(_valid()) // 2], "not a zip archive"),
    "trailing garbage": (_valid() + b"junk", "no end of central directory"),
    "ambiguous end record": (_ambiguous_end(), "ambiguous"),
    "central directory past its end record": (
        craft([entry()], end={"cd_size": 1000}), "truncated or corrupt central directory"),
    "central directory offset too low": (craft([entry()], end={"cd_off": 0}),
                                         "46 unexplained bytes"),
    "central directory offset too high": (craft([entry()], end={"cd_off": 60}),
                                          "truncated or corrupt central directory"),
    "prepended data": (craft([entry()], prefix=b"#!/bin/sh\n"), "unexplained bytes"),
    "more entries claimed": (craft([entry()], end={"n": 2, "n_disk": 2}),
                             "claims 2 members, more than"),
    "huge entry count": (craft([entry()], end={"n": 0xFFFE, "n_disk": 0xFFFE}),
                         "claims 65534 members"),
    "fewer entries claimed": (craft([entry(b"a"), entry(b"b")], end={"n": 1, "n_disk": 1}),
                              "bytes after the 1 members"),
    "multi-disk end record": (craft([entry()], end={"disk": 1}), "multi-disk"),
    "split entry counts": (craft([entry(b"a"), entry(b"b")], end={"n_disk": 1}), "multi-disk"),
    "multi-disk member": (craft([entry(disk=2)]), "multi-disk"),
    "multi-disk zip64 locator": (craft([entry()], zip64=True, locator={"disks": 3}),
                                 "multi-disk"),
    "multi-disk zip64 record": (craft([entry()], zip64=True, end64={"cd_disk": 1}),
                                "multi-disk"),
    "zip64 locator points nowhere": (craft([entry()], zip64=True, locator={"offset": 0}),
                                     "no Zip64 end record"),
    "zip64 locator points past itself": (craft([entry()], zip64=True,
                                               locator={"offset": 1 << 40}), "past itself"),
    "zip64 record size wrong": (craft([entry()], zip64=True, end64={"size": 60}),
                                "does not end where its locator starts"),
    "bad central signature": (craft([entry(central={"sig": b"PK\x01\x09"})]), "bad signature"),
    "bad local signature": (craft([entry(local={"sig": b"PK\x03\x09"})]),
                            "no local header at offset 0"),
    "local name differs": (craft([entry(local={"name": b"y.npy"})]), r"disagrees.*\(name\)"),
    "local method differs": (craft([entry(method=8, local={"method": 0})]), r"\(method\)"),
    "local flags differ": (craft([entry(local={"flags": 0x800})]), r"\(flags\)"),
    "local crc differs": (craft([entry(local={"crc": 1})]), r"\(CRC-32\)"),
    "local sizes differ": (craft([entry(local={"csize": 3, "usize": 3})]),
                           r"\(compressed size, size\)"),
    "duplicate names": (craft([entry(b"a\x1b]0;x"), entry(b"a\x1b]0;x")]),
                        r"member 'a\\x1b\]0;x' appears twice"),
    "encrypted": (craft([entry(flags=1)]), "encrypted"),
    "strong encryption": (craft([entry(flags=0x40)]), "encrypted"),
    "AES (method 99)": (craft([entry(method=99)]), "encrypted"),
    "bzip2": (craft([entry(method=12)]), "compression method 12 is not supported"),
    "lzma": (craft([entry(method=14)]), "compression method 14"),
    "overlapping members": (_overlapping(), "members a and b overlap"),
    "second entry for the same data": (craft([entry(b"a"), entry(b"a", emit=False,
                                                                     central={"offset": 0})]),
                                       "appears twice"),
    "data into the central directory": (craft([entry(csize=20, usize=20)]),
                                        "data overlaps the central directory"),
    "data past the end of the file": (craft([entry(csize=1 << 31, usize=1 << 31)]),
                                      "data runs past the end of the file"),
    "local header past the end": (craft([entry(central={"offset": 1 << 31})]),
                                  "runs past the end of the file"),
    "local header in the central directory": (craft([entry(central={"offset": 20})]),
                                              "overlaps the central directory"),
    "stored sizes differ": (craft([entry(usize=12)]), "stored, but its compressed size"),
    "deflate claims too much": (craft([entry(method=8, plain=b"x" * 1000, usize=10 ** 9)]),
                                "more than deflate can produce"),
    "malformed extra field": (craft([entry(extra=b"\x01\x00\x10\x00abc")]),
                              "malformed extra field"),
    "zip64 marker without extra": (craft([entry(csize=M32, usize=M32)]),
                                   "Zip64 extra field that should hold it is missing"),
    "bad UTF-8 name": (craft([entry(name=b"\xff\xfe", flags=0x800)]), "not valid UTF-8"),
}


@pytest.mark.parametrize("blob, problem", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archives_are_refused(tmp_path, blob, problem):
    msg = refused(directory, put(tmp_path, blob))
    assert re.search(problem, msg), msg


def test_central_directory_size_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(ziparchive, "MAX_CENTRAL", 50)
    assert "exceeds the limit of 50" in refused(directory, put(tmp_path, _valid()))


def test_data_descriptor_members_skip_the_local_size_check(tmp_path):
    e = entry(flags=0x8, local={"crc": 0, "csize": 0, "usize": 0},
              after=struct.pack("<4sIII", b"PK\x07\x08", zlib.crc32(b"hello world"), 11, 11))
    path = put(tmp_path, craft([e]))
    assert read_all(path) == {"x.npy": b"hello world"}
    with zipfile.ZipFile(path) as z:
        assert z.read("x.npy") == b"hello world"


def test_names_with_paths_and_controls_are_accepted(tmp_path):
    names = [b"../../x", b"/etc/passwd", b"a\x1bb", b"C:\\win"]
    path = put(tmp_path, craft([entry(n) for n in names]))
    assert [m.name for m in directory(path)] == [n.decode() for n in names]


# --------------------------------------------------------------------------- hostile data

PLAIN = bytes(range(256)) * 40
PACKED = deflate(PLAIN)


def _bomb() -> bytes:
    big = bytes(100_000)
    return craft([entry(method=8, plain=big, usize=1000, crc=zlib.crc32(big[:1000]))])


DATA_HOSTILE = {
    "stored CRC mismatch": (craft([entry(plain=PLAIN, crc=zlib.crc32(PLAIN) ^ 1)]),
                            "CRC-32 mismatch"),
    "deflate CRC mismatch": (craft([entry(plain=PLAIN, method=8, crc=5)]), "CRC-32 mismatch"),
    "corrupt deflate": (craft([entry(method=8, data=b"\xff" * 40, csize=40, usize=100)]),
                        "corrupt deflate data"),
    "deflate stream ends early": (craft([entry(method=8, plain=PLAIN, usize=len(PLAIN) + 5)]),
                                  "deflate stream ends early"),
    "compressed data cut short": (craft([entry(method=8, plain=PLAIN, data=PACKED[:-20],
                                               csize=len(PACKED) - 20)]),
                                  "compressed data ends inside the deflate stream"),
    "decompression bomb": (_bomb(), "more than the declared 1000 bytes"),
    "bytes after the deflate stream": (craft([entry(method=8, plain=PLAIN, data=PACKED + b"xyz",
                                                    csize=len(PACKED) + 3)]),
                                       "3 bytes of compressed data after the end"),
}


@pytest.mark.parametrize("blob, problem", DATA_HOSTILE.values(), ids=DATA_HOSTILE.keys())
def test_bad_member_data_is_refused_by_the_reader(tmp_path, blob, problem):
    path = put(tmp_path, blob)
    directory(path)  # the structure is fine
    msg = refused(read_all, path)
    assert msg.startswith(f"{WHERE}: member x.npy: ")
    assert re.search(problem, msg), msg


def test_a_bomb_never_fills_more_than_asked(tmp_path):
    path = put(tmp_path, _bomb())
    fd = os.open(path, os.O_RDONLY)
    try:
        (m,) = read_directory(fd, os.fstat(fd).st_size, WHERE)
        r = MemberReader(fd, m, WHERE)
        buf = bytearray(b"\x01" * 2000)
        r.readinto(memoryview(buf)[:1000])
        assert buf[:1000] == bytes(1000) and buf[1000:] == b"\x01" * 1000
        assert "decompression bomb" in refused(r.finish)
    finally:
        os.close(fd)


def test_a_file_that_shrinks_after_the_directory_is_read(tmp_path):
    path = put(tmp_path, write_zip([("m", STORED, PLAIN)]))
    fd = os.open(path, os.O_RDONLY)
    try:
        (m,) = read_directory(fd, os.fstat(fd).st_size, WHERE)
        os.truncate(path, 100)
        assert "shrank" in refused(MemberReader(fd, m, WHERE).readinto, bytearray(len(PLAIN)))
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- a real > 4 GiB member

@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TENSOR_DROPOUT_BIG") != "1",
                    reason="writes about 4.3 GB; set TENSOR_DROPOUT_BIG=1 to run")
def test_real_members_over_4_gib(tmp_path):
    from dropout_core.formats.base import Sink

    big = (1 << 32) + 12345
    piece = np.arange(16 << 20, dtype=np.uint32).view(np.uint8)[: 16 << 20]
    tail = npy_bytes(ARRAYS["ints"])
    path = tmp_path / "big.npz"
    with open(path, "wb") as f:
        w = ArchiveWriter(Sink(f))
        for name, method in (("zeros.bin", DEFLATED), ("counts.bin", STORED)):
            mw = w.add(name, method, big)
            for s in range(0, big, len(piece)):
                chunk = piece[:min(len(piece), big - s)]
                mw.write(np.zeros_like(chunk) if method == DEFLATED else chunk)
            mw.close()
        mw = w.add("after.npy", STORED, len(tail))  # its local header starts past 4 GiB
        mw.write(tail)
        mw.close()
        w.finish()
    members = directory(str(path))
    assert [m.uncompressed_size for m in members] == [big, big, len(tail)]
    assert members[2].local_offset > M32
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        assert [(i.file_size, i.compress_size, i.header_offset, i.CRC) for i in infos] == \
            [(m.uncompressed_size, m.compressed_size, m.local_offset, m.crc32) for m in members]
        assert z.read("after.npy") == tail
        with z.open("zeros.bin") as f:  # zipfile checks the CRC at the end
            while f.read(64 << 20):
                pass
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["after"], ARRAYS["ints"])
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(64 << 20)
        digests = []
        for m in members:
            r = MemberReader(fd, m, WHERE)
            h = hashlib.sha256()
            left = m.uncompressed_size
            while left:
                view = memoryview(buf)[:min(left, len(buf))]
                r.readinto(view)
                h.update(view)
                left -= len(view)
            r.finish()
            digests.append(h.hexdigest())
    finally:
        os.close(fd)
    assert digests[2] == hashlib.sha256(tail).hexdigest()


# --------------------------------------------------------------------------- planned archives


def test_crc32_combine_equals_the_crc_of_the_concatenation():
    rng = np.random.default_rng(7)
    lengths = [0, 1, 2, 3, 7, 8, 255, 256, 4095, 65537] + \
        [int(n) for n in rng.integers(0, 5000, 40)]
    for la in lengths[:20]:
        for lb in lengths:
            a, b = rng.bytes(la), rng.bytes(lb)
            got = crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b))
            assert got == zlib.crc32(a + b), (la, lb)
    parts = [rng.bytes(int(n)) for n in rng.integers(0, 3, 30)] + [b"", b"x", rng.bytes(9999)]
    total = 0
    for part in parts:  # in order, as a split run combines its ranges
        total = crc32_combine(total, zlib.crc32(part), len(part))
    assert total == zlib.crc32(b"".join(parts))
    # a length past 2**32 (a member of Zip64 size): zero bytes, checked piecewise
    zeros = zlib.crc32(bytes(1 << 20))
    big = 0
    for _ in range(8):
        big = crc32_combine(big, zeros, 1 << 20)
    assert big == zlib.crc32(bytes(8 << 20))
    assert crc32_combine(0x12345678, 0, 0) == 0x12345678
    with pytest.raises(ValueError):
        crc32_combine(0, 0, -1)


def _planned_equals_written(tmp_path) -> None:
    """``layout`` plus each member's data gives ArchiveWriter's bytes (stored adds, copies)."""
    src = str(tmp_path / "src.npz")
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("notes.txt", b"deflated, copied as it is" * 9,
                   compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("k.npy", npy_bytes(ARRAYS["ints"]))
    datas = {"a.npy": npy_bytes(ARRAYS["weights"]), "empty": b"", "é.npy": b"x" * 130}
    sink = MemSink()
    w = ArchiveWriter(sink)
    fd = os.open(src, os.O_RDONLY)
    try:
        members = read_directory(fd, os.fstat(fd).st_size, WHERE)
        planned = []
        mw = w.add("a.npy", STORED, len(datas["a.npy"]))
        mw.write(datas["a.npy"])
        mw.close()
        planned.append(Planned("a.npy", STORED, zlib.crc32(datas["a.npy"]),
                               len(datas["a.npy"]), len(datas["a.npy"])))
        for m in members:
            w.copy(fd, m)
            planned.append(Planned(m.name, m.method, m.crc32, m.compressed_size,
                                   m.uncompressed_size))
        for name in ("empty", "é.npy"):
            mw = w.add(name, STORED, len(datas[name]))
            mw.write(datas[name])
            mw.close()
            planned.append(Planned(name, STORED, zlib.crc32(datas[name]), len(datas[name]),
                                   len(datas[name])))
        w.finish()
        raw = (tmp_path / "src.npz").read_bytes()
        contents = [datas["a.npy"]] + \
            [raw[m.data_offset:m.data_offset + m.compressed_size] for m in members] + \
            [datas["empty"], datas["é.npy"]]
    finally:
        os.close(fd)
    zeroed, _, size0 = layout([Planned(p.name, p.method, 0, p.compressed_size,
                                       p.uncompressed_size) for p in planned])
    offsets, writes, size = layout(planned)
    assert zeroed == offsets and size0 == size == len(sink.buf)  # the CRCs move nothing
    out = bytearray(size)
    for pos, data in writes:
        out[pos:pos + len(data)] = data
    for off, data in zip(offsets, contents, strict=True):
        out[off:off + len(data)] = data
    assert bytes(out) == bytes(sink.buf)
    path = put(tmp_path, bytes(out), "planned.npz")
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None


def test_a_planned_archive_is_the_written_one(tmp_path):
    _planned_equals_written(tmp_path)


def test_a_planned_archive_is_the_written_one_with_zip64(tmp_path, monkeypatch):
    monkeypatch.setattr(ziparchive, "_ZIP64_AT", 100)  # as if 100 were 4 GiB
    monkeypatch.setattr(ziparchive, "_COUNT64_AT", 3)  # and 3 were 65535 members
    _planned_equals_written(tmp_path)
