"""Hostile tensor files, built by code at test time (no binary blobs in the repo).

The builders write files byte by byte with ``struct`` and ``json``, never with
the code under test nor with a reference writer, so that a bug in our writer
cannot hide a bug in our reader.  ``CASES`` is the bad-input corpus the tests
in test_hostile.py run; ``valid_npy``, ``valid_safetensors`` and ``npz_file``
make the seeds the fuzz tests mutate.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from click.testing import CliRunner

# --------------------------------------------------------------------------- builders


def npy_header(text: str | bytes, version: tuple[int, int] = (1, 0), *,
               hlen: int | None = None, pad: bool = True) -> bytes:
    """Magic, version, header length and the header text, padded like NumPy pads it."""
    body = text.encode("latin1" if version != (3, 0) else "utf-8") \
        if isinstance(text, str) else text
    fmt = "<H" if version == (1, 0) else "<I"
    prefix = 8 + struct.calcsize(fmt)
    if pad:
        body = body + b" " * ((-(prefix + len(body) + 1)) % 64) + b"\n"
    n = len(body) if hlen is None else hlen
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, n) + body


def npy_dict(descr: object = "<f4", fortran_order: object = False, shape: object = (2, 3)) -> str:
    return f"{{'descr': {descr!r}, 'fortran_order': {fortran_order!r}, 'shape': {shape!r}, }}"


def valid_npy(version: tuple[int, int] = (1, 0), shape: tuple[int, ...] = (2, 3),
              descr: str = "<f4", fortran: bool = False) -> bytes:
    """A small, correct .npy file holding 1, 2, 3, ... in the given dtype."""
    dtype = np.dtype(descr)
    data = np.arange(1, int(np.prod(shape)) + 1).astype(dtype)
    return npy_header(npy_dict(descr, fortran, shape), version) + data.tobytes()


def st_file(entries: list[tuple[str, str, list, bytes]] | None = None,
            metadata: object = None, *, doc: object = None, raw: bytes | None = None,
            n: int | None = None, data: bytes | None = None, pad: bool = True) -> bytes:
    """A .safetensors file from (name, dtype, shape, bytes) entries, laid out in order.

    ``doc`` replaces the JSON object, ``raw`` the JSON text, ``n`` the length
    field and ``data`` the data buffer: each is a way to lie.
    """
    entries = entries or []
    if doc is None:
        doc = {}
        if metadata is not None:
            doc["__metadata__"] = metadata
        pos = 0
        for name, dtype, shape, blob in entries:
            doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(blob)]}
            pos += len(blob)
    if raw is None:
        raw = json.dumps(doc, separators=(",", ":")).encode()
    if pad:
        raw += b" " * ((-len(raw)) % 8)
    if data is None:
        data = b"".join(blob for _, _, _, blob in entries)
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def f32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


def valid_safetensors() -> bytes:
    """Two float tensors, an int tensor and metadata: the fuzz seed."""
    return st_file([("a", "F32", [2, 2], f32(1, 2, 3, 4)),
                    ("b", "F16", [3], np.array([1, 2, 3], "<f2").tobytes()),
                    ("c", "I32", [2], np.array([5, 6], "<i4").tobytes())],
                   metadata={"format": "pt"})


# .npz: a ZIP archive of .npy members, laid out by hand (test_ziparchive.py does the
# ZIP layer's own cases; these go through the whole tool)
_ZLOCAL = struct.Struct("<4sHHHHHIIIHH")
_ZCENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_ZEND = struct.Struct("<4sHHHHIIH")
_ZEND64 = struct.Struct("<4sQHHIIQQQQ")
_ZLOCATOR64 = struct.Struct("<4sIQI")


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zmember(name: bytes | str, plain: bytes, method: int = 0, **kw) -> dict:
    """One member for ``npz_file``: its bytes (deflated when method is 8) and honest header
    fields, each of which ``kw`` may replace (crc, csize, usize, flags, data, ...)."""
    data = deflate(plain) if method == 8 else plain
    raw = name.encode() if isinstance(name, str) else name
    m = dict(name=raw, data=data, method=method, flags=0 if raw.isascii() else 0x800,
             crc=zlib.crc32(plain), csize=len(data), usize=len(plain))
    m.update(kw)
    return m


def npz_file(members: list[dict], *, zip64: bool = False, end: dict | None = None) -> bytes:
    """An archive: local headers and data, central directory, end records (Zip64 ones with
    ``zip64``, sizes and offsets then in Zip64 extra fields); ``end`` overrides end record
    fields (disk, n, cd_size, cd_off)."""
    out, central = bytearray(), bytearray()
    for m in members:
        offset = len(out)
        csize, usize, lextra = m["csize"], m["usize"], b""
        if zip64:
            lextra = struct.pack("<HHQQ", 1, 16, usize, csize)
            csize = usize = 0xFFFFFFFF
        out += _ZLOCAL.pack(b"PK\x03\x04", 45 if zip64 else 20, m["flags"], m["method"], 0, 0x21,
                            m["crc"], csize, usize, len(m["name"]), len(lextra))
        out += m["name"] + lextra + m["data"]
        cextra, off = b"", offset
        if zip64:
            cextra = struct.pack("<HHQQQ", 1, 24, m["usize"], m["csize"], offset)
            off = 0xFFFFFFFF
        central += _ZCENTRAL.pack(b"PK\x01\x02", 0x32D, 45 if zip64 else 20, m["flags"],
                                  m["method"], 0, 0x21, m["crc"], csize, usize, len(m["name"]),
                                  len(cextra), 0, 0, 0, 0, off) + m["name"] + cextra
    cd_off = len(out)
    out += central
    rec = dict(disk=0, n=len(members), cd_size=len(central), cd_off=cd_off)
    if zip64:
        pos = len(out)
        out += _ZEND64.pack(b"PK\x06\x06", 44, 0x32D, 45, 0, 0, rec["n"], rec["n"],
                            rec["cd_size"], cd_off)
        out += _ZLOCATOR64.pack(b"PK\x06\x07", 0, pos, 1)
        rec.update(n=0xFFFF, cd_size=0xFFFFFFFF, cd_off=0xFFFFFFFF)
    rec.update(end or {})
    out += _ZEND.pack(b"PK\x05\x06", rec["disk"], 0, rec["n"], rec["n"], rec["cd_size"],
                      rec["cd_off"], 0)
    return bytes(out)


def valid_npz(method: int = 0) -> bytes:
    """Two float members, an int member and a non-tensor member."""
    x = valid_npy()
    return npz_file([zmember("x.npy", x, method), zmember("notes.txt", b"made by hand", method),
                     zmember("h.npy", valid_npy((2, 0), (4,), "<f2"), method),
                     zmember("i.npy", valid_npy((1, 0), (3,), "<i2"), method)])


def _npz_one(npy_bytes: bytes, method: int = 0, name: str = "x.npy", **kw) -> bytes:
    return npz_file([zmember(name, npy_bytes, method, **kw)])


def _npz_bomb() -> bytes:
    """A member whose header is fine and whose deflate stream holds far more than declared."""
    x = valid_npy()
    big = x + bytes(1_000_000)
    return npz_file([zmember("x.npy", big, 8, usize=len(x), crc=zlib.crc32(x))])


def _npz_pickled(d: Path) -> bytes:
    return _npz_one(_pickled_object_array(d), 8)


# duplicate keys cannot come out of json.dumps: write the text by hand
_DUP = (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')


def _deep(n: int) -> str:
    return "[" * n + "]" * n


class _Evil:
    """Unpickling this creates the marker file: proof that someone unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_object_array(d: Path) -> bytes:
    payload = pickle.dumps(np.array([_Evil(str(d / "PWNED"))], dtype=object), protocol=2)
    return npy_header(npy_dict("|O", False, (1,))) + payload


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it and what the error line must say."""

    id: str
    make: Callable[[Path], bytes] | bytes  # the file's bytes (or a function of the dir)
    problem: str  # regex the error line must match
    tensor: str | None = None  # safetensors: the tensor the message must name
    suffix: str = ".npy"
    apply_only: bool = False  # the header is fine; only applying dropout must refuse it

    def build(self, d: Path) -> Path:
        path = d / f"in{self.suffix}"
        path.write_bytes(self.make(d) if callable(self.make) else self.make)
        return path


def _npy_cuts() -> list[Case]:
    """A valid .npy cut at every structural boundary."""
    out = []
    for version in ((1, 0), (2, 0), (3, 0)):
        full = valid_npy(version)
        prefix = 10 if version == (1, 0) else 12
        hend = len(full) - 24
        v = f"v{version[0]}"
        cuts = {"in-magic": 3, "after-magic": 6, "in-version": 7, "after-version": 8,
                "in-header-length": prefix - 1, "after-header-length": prefix,
                "in-header": prefix + 20, "before-newline": hend - 1, "at-data": hend,
                "in-data": hend + 10, "last-byte": len(full) - 1}
        for where, at in cuts.items():
            if at < prefix:
                problem = rf"truncated: {at} bytes is too short for a \.npy"
            elif at < hend:
                problem = r"header length \d+ runs past the end of the file"
            else:
                problem = r"truncated: shape \[2, 3\] of float32 needs 24 bytes of data, " \
                          rf"the file has {at - hend}"
            out.append(Case(f"npy-{v}-cut-{where}", full[:at], problem))
    return out


def _st_cuts() -> list[Case]:
    """A valid .safetensors cut at every structural boundary."""
    full = valid_safetensors()
    (n,) = struct.unpack("<Q", full[:8])
    base = 8 + n
    cuts = {"in-length": (4, r"unknown magic|truncated", None),
            "after-length": (8, r"unknown magic|truncated", None),
            "after-brace": (9, r"runs past the end of the file", None),
            "in-json": (8 + n // 2, r"runs past the end of the file", None),
            "before-padding-end": (base - 1, r"runs past the end of the file", None),
            "at-data": (base, r"data runs past the end of the file", "a"),
            "after-first-tensor": (base + 16, r"data runs past the end of the file", "b"),
            "in-second-tensor": (base + 18, r"data runs past the end of the file", "b"),
            "last-byte": (len(full) - 1, r"data runs past the end of the file", "c")}
    return [Case(f"st-cut-{where}", full[:at], problem, tensor, ".safetensors")
            for where, (at, problem, tensor) in cuts.items()]


def _npz_cuts() -> list[Case]:
    """A valid stored .npz cut at its structural boundaries: every cut loses the end record."""
    full = valid_npz()
    first = _ZLOCAL.size + len(b"x.npy")
    cd_off = struct.unpack_from("<I", full, len(full) - 6)[0]
    cuts = {"in-local-header": 10, "in-npy-header": first + 20, "in-member-data": first + 140,
            "at-central-directory": cd_off, "in-central-directory": cd_off + 30,
            "in-end-record": len(full) - 10, "last-byte": len(full) - 1}
    return [Case(f"npz-cut-{where}", full[:at], r"not a zip archive, or truncated",
                 suffix=".npz") for where, at in cuts.items()]


def _npz_cases() -> list[Case]:
    x = valid_npy()
    return [
        *_npz_cuts(),
        # ---- the ZIP layer (each refused at the door)
        Case("npz-trailing-garbage", valid_npz() + b"junk", r"no end of central directory",
             suffix=".npz"),
        Case("npz-prepended-data", b"PK\x03\x04" + valid_npz(), r"unexplained bytes",
             suffix=".npz"),
        Case("npz-member-count-lies", npz_file([zmember("x.npy", x)], end={"n": 3}),
             r"claims 3 members", suffix=".npz"),
        Case("npz-duplicate-member", npz_file([zmember("x.npy", x), zmember("x.npy", x)]),
             r"member x\.npy appears twice", suffix=".npz"),
        Case("npz-x-and-x.npy", npz_file([zmember("x.npy", x), zmember("x", b"raw")]),
             r"members x and x\.npy both load as x; refused as a duplicate", suffix=".npz"),
        Case("npz-encrypted", _npz_one(x, flags=1), r"member x\.npy: is encrypted",
             suffix=".npz"),
        Case("npz-bzip2", _npz_one(x, method=12), r"compression method 12 is not supported",
             suffix=".npz"),
        Case("npz-multi-disk", npz_file([zmember("x.npy", x)], end={"disk": 1}), r"multi-disk",
             suffix=".npz"),
        Case("npz-stored-sizes-differ", _npz_one(x, usize=len(x) + 4),
             r"stored, but its compressed size", suffix=".npz"),
        Case("npz-deflate-claims-too-much", _npz_one(x, 8, usize=10**9),
             r"more than deflate can produce", suffix=".npz"),
        Case("npz-member-past-the-end", _npz_one(x, csize=len(x) + 1000, usize=len(x) + 1000),
             r"data (overlaps the central directory|runs past the end)", suffix=".npz"),
        Case("npz-zip64-sizes-lie", npz_file([zmember("x.npy", x, usize=2**40, csize=2**40)],
                                             zip64=True),
             r"member x\.npy: (local header|data)", suffix=".npz"),
        # ---- the .npy header inside a member (refused at the door)
        Case("npz-member-not-npy", _npz_one(b"PK" + x[2:], 8),
             r"member x\.npy: not a \.npy file \(bad magic\)", suffix=".npz"),
        Case("npz-member-empty", _npz_one(b""), r"member x\.npy: not a \.npy file",
             suffix=".npz"),
        Case("npz-member-npy-version-4.0", _npz_one(npy_header(npy_dict(), (4, 0)) + x[-24:]),
             r"member x\.npy: unsupported \.npy version 4\.0", suffix=".npz"),
        Case("npz-member-header-past-member", _npz_one(x[:100], 8),
             r"member x\.npy: \.npy header length 118 runs past the end of the file \(100 "
             r"bytes\)", suffix=".npz"),
        Case("npz-member-header-over-limit",
             _npz_one(npy_header(npy_dict(), (2, 0), hlen=(1 << 20) + 1) + x[-24:]),
             r"member x\.npy: \.npy header of 1048577 bytes exceeds the limit", suffix=".npz"),
        Case("npz-member-header-code", _npz_one(npy_header("__import__('os').system('x')"), 8),
             r"member x\.npy: \.npy header is not a valid Python literal", suffix=".npz"),
        Case("npz-member-pickled-object-array", _npz_pickled,
             r"member x\.npy: object arrays are refused", suffix=".npz"),
        Case("npz-member-structured-dtype",
             _npz_one(npy_header(npy_dict([("a", "<f4")], False, (1,))) + f32(1)),
             r"member x\.npy: structured dtype", suffix=".npz"),
        Case("npz-member-fortran-order-string",
             _npz_one(npy_header(npy_dict(fortran_order="True")) + f32(*range(6))),
             r"fortran_order must be True or False", suffix=".npz"),
        Case("npz-member-data-short", _npz_one(x[:-4]),
             r"member x\.npy: truncated: shape \[2, 3\] of float32 needs 24 bytes of data, "
             r"the file has 20", suffix=".npz"),
        Case("npz-member-trailing-bytes", _npz_one(x + b"tail", 8),
             r"member x\.npy: 4 bytes of trailing garbage", suffix=".npz"),
        Case("npz-deflated-size-below-header", _npz_one(x, 8, usize=len(x) - 8),
             r"member x\.npy: truncated: shape \[2, 3\] of float32 needs 24 bytes of data, "
             r"the file has 16", suffix=".npz"),
        Case("npz-deflated-size-above-header", _npz_one(x, 8, usize=len(x) + 8),
             r"member x\.npy: 8 bytes of trailing garbage", suffix=".npz"),
        Case("npz-member-absurd-shape-2**62",
             _npz_one(npy_header(npy_dict(shape=(_ABSURD,))) + f32(*range(6)), 8),
             rf"member x\.npy: shape \[{_ABSURD}\] is too large for any array", suffix=".npz"),
        Case("npz-corrupt-deflate", _npz_one(x, 8, data=b"\xff" * 40, csize=40),
             r"member x\.npy: corrupt deflate data", suffix=".npz"),
        # ---- member data, refused when it is read (the output is then removed)
        Case("npz-stored-crc-mismatch", _npz_one(x, crc=zlib.crc32(x) ^ 1),
             r"member x\.npy: CRC-32 mismatch", suffix=".npz"),
        Case("npz-deflated-crc-mismatch", _npz_one(x, 8, crc=zlib.crc32(x) ^ 1),
             r"member x\.npy: CRC-32 mismatch", suffix=".npz"),
        Case("npz-decompression-bomb", _npz_bomb(),
             r"member x\.npy: deflate data holds more than the declared 152 bytes",
             suffix=".npz"),
        Case("npz-deflate-ends-early", _npz_one(x[:-8], 8, usize=len(x), crc=zlib.crc32(x)),
             r"member x\.npy: deflate stream ends early", suffix=".npz"),
        # ---- a fine archive, refused data
        Case("npz-int-tensor-with-scaling",
             _npz_one(npy_header(npy_dict("<i8", False, (2,))) + b"\x01" * 16, 8, name="ids.npy"),
             r"int64 tensor cannot take .*--no-scale", tensor="ids", suffix=".npz",
             apply_only=True),
    ]


_ABSURD = 2**62

CASES: list[Case] = [
    *_npy_cuts(),
    # ---- .npy header and magic
    Case("npy-bad-magic", b"\x93NUMPX\x01\x00" + valid_npy()[8:], r"not a \.npy"),
    Case("npy-text-file", b"hello, I am not a tensor\n", r"unknown magic"),
    Case("npy-version-4.0", npy_header(npy_dict(), (4, 0)) + f32(*range(6)),
         r"unsupported \.npy version 4\.0"),
    Case("npy-version-0.0", b"\x93NUMPY\x00\x00" + valid_npy()[8:],
         r"unsupported \.npy version 0\.0"),
    Case("npy-version-1.1", b"\x93NUMPY\x01\x01" + valid_npy()[8:],
         r"unsupported \.npy version 1\.1"),
    Case("npy-header-length-past-end", npy_header(npy_dict(), hlen=60000) + f32(*range(6)),
         r"header length 60000 runs past the end"),
    Case("npy-header-length-too-short", npy_header(npy_dict(), hlen=20) + f32(*range(6)),
         r"not a valid Python literal"),
    Case("npy-header-length-over-limit",
         npy_header(npy_dict(), (2, 0), hlen=(1 << 20) + 1) + f32(*range(6)),
         r"header of 1048577 bytes exceeds the limit of 1048576"),
    Case("npy-header-length-4GiB", npy_header(npy_dict(), (2, 0), hlen=2**32 - 1),
         r"exceeds the limit"),
    Case("npy-header-code-not-literal",
         npy_header("__import__('os').system('touch PWNED')") + f32(*range(6)),
         r"not a valid Python literal"),
    Case("npy-header-not-dict", npy_header("[1, 2, 3]") + f32(*range(6)),
         r"must be a dict with keys descr, fortran_order, shape"),
    Case("npy-header-missing-shape",
         npy_header("{'descr': '<f4', 'fortran_order': False}") + f32(*range(6)),
         r"must be a dict with keys"),
    Case("npy-header-extra-key",
         npy_header(npy_dict()[:-1] + "'x': 1, }") + f32(*range(6)), r"must be a dict with keys"),
    Case("npy-header-deep-nesting", npy_header("{'descr': " + _deep(50000) + "}", (2, 0)),
         r"not a valid Python literal"),
    Case("npy-header-huge-int-literal",
         npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",), }"),
         r"not a valid Python literal"),
    Case("npy-header-unary-minus-chain", npy_header("-" * 500_000 + "1", (2, 0)),
         r"not a valid Python literal"),
    Case("npy-header-addition-chain", npy_header("1" + "+1" * 100_000, (2, 0)),
         r"not a valid Python literal"),
    Case("npy-v3-header-not-utf8", npy_header(b"{'descr': '\xff\xfe', }", (3, 0)),
         r"not a valid Python literal"),
    # ---- .npy dtypes
    Case("npy-pickled-object-array", _pickled_object_array, r"object arrays are refused"),
    Case("npy-object-in-structured-dtype",
         npy_header(npy_dict([("a", "|O")], False, (1,))) + b"\x00" * 8,
         r"structured dtype .* refused"),
    Case("npy-structured-dtype", npy_header(npy_dict([("a", "<f4")], False, (1,))) + f32(1),
         r"structured dtype .* refused"),
    Case("npy-unknown-dtype", npy_header(npy_dict("<q9")) + f32(*range(6)),
         r"unknown dtype '<q9'"),
    Case("npy-dtype-not-a-string", npy_header(npy_dict(42)) + f32(*range(6)),
         r"descr must be a dtype string, got 42"),
    Case("npy-dtype-numpy-cannot-parse", npy_header(npy_dict(",f0")) + f32(*range(6)),
         r"unknown dtype ',f0'"),
    Case("npy-dtype-deprecated-alias", npy_header(npy_dict("a4")) + b"\x00" * 24,
         r"unsupported dtype 'a4'"),
    Case("npy-dtype-comma-structured", npy_header(npy_dict("f4,")) + f32(*range(6)),
         r"unsupported dtype 'f4,'$"),
    Case("npy-unicode-dtype", npy_header(npy_dict("<U2")) + b"\x00" * 48,
         r"unsupported dtype '<U2'"),
    Case("npy-subarray-dtype", npy_header(npy_dict("(2,)<f4")) + b"\x00" * 48,
         r"unsupported dtype '\(2,\)<f4'$"),
    Case("npy-void-dtype", npy_header(npy_dict("|V2")) + b"\x00" * 12,
         r"unsupported dtype '\|V2' \(bfloat16"),
    Case("npy-datetime-dtype", npy_header(npy_dict("<M8[s]")) + b"\x00" * 48,
         r"unsupported dtype"),
    # ---- .npy fortran_order and shape
    Case("npy-fortran-order-string", npy_header(npy_dict(fortran_order="False")) + f32(*range(6)),
         r"fortran_order must be True or False, got 'False'"),
    Case("npy-fortran-order-int", npy_header(npy_dict(fortran_order=0)) + f32(*range(6)),
         r"fortran_order must be True or False, got 0"),
    Case("npy-fortran-order-none", npy_header(npy_dict(fortran_order=None)) + f32(*range(6)),
         r"fortran_order must be True or False, got None"),
    Case("npy-shape-list", npy_header(npy_dict(shape=[2, 3])) + f32(*range(6)),
         r"shape must be a tuple"),
    Case("npy-shape-negative", npy_header(npy_dict(shape=(-1, 6))) + f32(*range(6)),
         r"must hold non-negative integers"),
    Case("npy-shape-float", npy_header(npy_dict(shape=(2.0, 3))) + f32(*range(6)),
         r"must hold non-negative integers"),
    Case("npy-shape-bool", npy_header(npy_dict(shape=(True,))) + f32(1),
         r"must hold non-negative integers"),
    Case("npy-shape-65-dims", npy_header(npy_dict(shape=(1,) * 65)) + f32(1),
         r"65 dimensions, more than 64"),
    Case("npy-absurd-shape-2**62", npy_header(npy_dict(shape=(_ABSURD,))) + f32(*range(6)),
         # refused by the shape rule (what np.load refuses) before the size check
         rf"shape \[{_ABSURD}\] is too large for any array"),
    Case("npy-absurd-shape-2**62-squared",
         npy_header(npy_dict(shape=(_ABSURD, _ABSURD))) + f32(*range(6)),
         rf"shape \[{_ABSURD}, {_ABSURD}\] is too large for any array"),
    Case("npy-trailing-garbage", valid_npy() + b"GARBAGE", r"7 bytes of trailing garbage"),
    Case("npy-data-short-by-one", valid_npy()[:-1], r"needs 24 bytes of data, the file has 23"),
    # ---- safetensors boundaries and header length
    *_st_cuts(),
    Case("st-header-length-past-end", st_file(raw=b'{"a":1}', n=4096),
         r"header length 4096 runs past the end of the file", suffix=".safetensors"),
    Case("st-header-length-over-100MB", st_file(raw=b"{}", n=100_000_001),
         r"header of 100000001 bytes exceeds the limit of 100000000", suffix=".safetensors"),
    Case("st-header-length-2**64-1", st_file(raw=b"{}", n=2**64 - 1),
         r"exceeds the limit of 100000000", suffix=".safetensors"),
    Case("st-header-length-too-short", st_file(raw=b"{", n=1, pad=False),
         r"header of 1 bytes is too short", suffix=".safetensors"),
    Case("st-header-length-zero", st_file(raw=b"", n=0, pad=False) + b"{}",
         r"too short|not valid", suffix=".safetensors"),
    Case("st-header-length-cuts-json", st_file(raw=b'{"__metadata__":{"a":"b"}}', n=10),
         r"not valid UTF-8 JSON", suffix=".safetensors"),
    # ---- safetensors JSON
    Case("st-bad-json", st_file(raw=b'{"a": {"dtype": "F32",'),
         r"not valid UTF-8 JSON", suffix=".safetensors"),
    Case("st-not-utf8", st_file(raw=b'{"\xff\xfe": 1}'),
         r"not valid UTF-8 JSON", suffix=".safetensors"),
    Case("st-json-array", st_file(raw=b" [1, 2]"),
         r"must be a JSON object", suffix=".safetensors"),
    Case("st-json-deep-nesting", st_file(raw=b'{"a":' + _deep(100000).encode() + b"}"),
         r"not valid UTF-8 JSON", suffix=".safetensors"),
    Case("st-json-huge-int", st_file(raw=b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000
                                     + b'],"data_offsets":[0,4]}}'),
         r"not valid UTF-8 JSON", suffix=".safetensors"),
    Case("st-json-nan-in-shape", st_file(raw=b'{"a":{"dtype":"F32","shape":[NaN],'
                                         b'"data_offsets":[0,4]}}', data=f32(1)),
         r"must hold non-negative integers", tensor="a", suffix=".safetensors"),
    Case("st-duplicate-key", st_file(raw=_DUP, data=f32(1, 2)),
         r"duplicate key a in the safetensors header", suffix=".safetensors"),
    Case("st-duplicate-metadata-key",
         st_file(raw=b'{"__metadata__":{"k":"1","k":"2"}}'),
         r"duplicate key k", suffix=".safetensors"),
    Case("st-name-lone-surrogate", st_file([("\ud800x", "F32", [1], f32(1))]),
         r"'\\ud800x' in the safetensors header is not valid Unicode", suffix=".safetensors"),
    Case("st-metadata-lone-surrogate", st_file([("w", "F32", [1], f32(1))], {"k": "\udfff"}),
         r"'\\udfff' in the safetensors header is not valid Unicode", suffix=".safetensors"),
    # ---- safetensors offsets
    Case("st-offsets-overlap",
         st_file(doc={"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                 data=f32(1, 2, 3)),
         r"data overlaps the previous tensor", tensor="b", suffix=".safetensors"),
    Case("st-offsets-same-range",
         st_file(doc={"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                 data=f32(1, 2)),
         r"data overlaps the previous tensor", suffix=".safetensors"),
    Case("st-offsets-hole",
         st_file(doc={"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                      "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                 data=f32(1, 2, 3)),
         r"hole of 4 bytes before its data", tensor="b", suffix=".safetensors"),
    Case("st-offsets-hole-at-start",
         st_file(doc={"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                 data=f32(1, 2)),
         r"hole of 4 bytes", tensor="a", suffix=".safetensors"),
    Case("st-offsets-out-of-range",
         st_file(doc={"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                 data=f32(1)),
         r"data runs past the end of the file", tensor="a", suffix=".safetensors"),
    Case("st-offsets-reversed",
         st_file(doc={"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}},
                 data=f32(1)),
         r"data_offsets must be \[begin, end\]", tensor="a", suffix=".safetensors"),
    Case("st-offsets-negative",
         st_file(doc={"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}},
                 data=f32(1)),
         r"data_offsets must be", tensor="a", suffix=".safetensors"),
    Case("st-offsets-floats",
         st_file(doc={"a": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}},
                 data=f32(1)),
         r"data_offsets must be", tensor="a", suffix=".safetensors"),
    Case("st-offsets-three",
         st_file(doc={"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}},
                 data=f32(1)),
         r"data_offsets must be", tensor="a", suffix=".safetensors"),
    Case("st-offsets-beyond-2**64",
         st_file(doc={"a": {"dtype": "F32", "shape": [2**63],
                            "data_offsets": [0, 2**65]}}, data=f32(1)),
         r"shape \[9223372036854775808\] is too large for any array", tensor="a",
         suffix=".safetensors"),
    Case("st-trailing-bytes", valid_safetensors() + b"junk",
         r"4 bytes after the last tensor", suffix=".safetensors"),
    # ---- safetensors dtypes and shapes
    Case("st-unknown-dtype", st_file([("w", "F128", [1], b"\x00" * 16)]),
         r"unknown dtype 'F128'", tensor="w", suffix=".safetensors"),
    Case("st-dtype-lowercase", st_file([("w", "f32", [1], f32(1))]),
         r"unknown dtype 'f32'", tensor="w", suffix=".safetensors"),
    Case("st-dtype-not-string", st_file([("w", 32, [1], f32(1))]),
         r"unknown dtype 32", tensor="w", suffix=".safetensors"),
    Case("st-dtype-list", st_file([("w", ["F32"], [1], f32(1))]),
         r"unknown dtype", tensor="w", suffix=".safetensors"),
    Case("st-dtype-F4-packed", st_file([("w", "F4", [2], b"\x00")]),
         r"dtype F4 is a packed sub-byte type", tensor="w", suffix=".safetensors"),
    Case("st-shape-itemsize-mismatch", st_file([("w", "F32", [3], f32(1, 2))]),
         r"shape \[3\] of F32 needs 12 bytes but data_offsets span 8", tensor="w",
         suffix=".safetensors"),
    Case("st-shape-dtype-mismatch", st_file([("w", "F64", [2], f32(1, 2))]),
         r"needs 16 bytes but data_offsets span 8", tensor="w", suffix=".safetensors"),
    Case("st-absurd-shape-2**62", st_file([("w", "F32", [_ABSURD], f32(1))]),
         rf"shape \[{_ABSURD}\] is too large for any array", tensor="w",
         suffix=".safetensors"),
    Case("st-absurd-shape-matching-offsets",
         st_file(doc={"w": {"dtype": "U8", "shape": [_ABSURD],
                            "data_offsets": [0, _ABSURD]}}, data=b"\x00"),
         r"data runs past the end of the file", tensor="w", suffix=".safetensors"),
    Case("st-shape-negative", st_file([("w", "F32", [-1], f32(1))]),
         r"must hold non-negative integers", tensor="w", suffix=".safetensors"),
    Case("st-shape-not-list", st_file([("w", "F32", 1, f32(1))]),
         r"shape must be a list of integers", tensor="w", suffix=".safetensors"),
    Case("st-shape-bool", st_file([("w", "F32", [True], f32(1))]),
         r"must hold non-negative integers", tensor="w", suffix=".safetensors"),
    Case("st-entry-missing-dtype",
         st_file(doc={"w": {"shape": [1], "data_offsets": [0, 4]}}, data=f32(1)),
         r"entry must have exactly dtype, shape and data_offsets", tensor="w",
         suffix=".safetensors"),
    Case("st-entry-extra-key",
         st_file(doc={"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}},
                 data=f32(1)),
         r"entry must have exactly", tensor="w", suffix=".safetensors"),
    Case("st-entry-not-object", st_file(doc={"w": [1, 2]}),
         r"entry must have exactly", tensor="w", suffix=".safetensors"),
    # ---- __metadata__
    Case("st-tensor-named-__metadata__", st_file([("__metadata__", "F32", [1], f32(1))]),
         r"the name __metadata__ is reserved", tensor="__metadata__", suffix=".safetensors"),
    Case("st-metadata-int-value", st_file([("w", "F32", [1], f32(1))], {"epoch": 3}),
         r"__metadata__ must map strings to strings", suffix=".safetensors"),
    Case("st-metadata-null-value", st_file([("w", "F32", [1], f32(1))], {"a": None}),
         r"__metadata__ must map strings to strings", suffix=".safetensors"),
    Case("st-metadata-nested", st_file([("w", "F32", [1], f32(1))], {"a": {"b": "c"}}),
         r"__metadata__ must map strings to strings", suffix=".safetensors"),
    Case("st-metadata-string", st_file([("w", "F32", [1], f32(1))], "pt"),
         r"__metadata__ must map strings to strings", suffix=".safetensors"),
    Case("st-metadata-list", st_file([("w", "F32", [1], f32(1))], ["a"]),
         r"__metadata__ must map strings to strings", suffix=".safetensors"),
    # ---- fine headers, refused data: integer tensors cannot be scaled
    Case("st-int-tensor-with-scaling", st_file([("ids", "I64", [2], b"\x01" * 16)]),
         r"int64 tensor cannot take .*--no-scale", tensor="ids", suffix=".safetensors",
         apply_only=True),
    Case("npy-bool-with-scaling", npy_header(npy_dict("|b1", False, (2,))) + b"\x01\x00",
         r"bool tensor cannot take .*--no-scale", apply_only=True),
    # ---- .npz: the ZIP layer, the .npy header of each member, member data
    *_npz_cases(),
]


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Run:
    code: int
    out: bytes
    err: str
    exception: BaseException | None = None


def run_cli(args: list[str], stdin: bytes = b"") -> Run:
    """Call the real entry point (cli.main.main) in this process, with captured streams."""
    from cli.main import main

    runner = CliRunner()
    code = 0
    exc = None
    with runner.isolation(input=stdin) as (out, err, _mixed):
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: B036 - whatever escapes main is a bug to report
            exc, code = e, -1
        sys.stdout.flush()
        sys.stderr.flush()
        out_bytes, err_bytes = out.getvalue(), err.getvalue()
    return Run(code, out_bytes, err_bytes.decode("utf-8", "backslashreplace"), exc)


def one_error_line(err: str) -> str:
    """The single ``Error: ...`` line, or an AssertionError that shows all of stderr."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and err.endswith("\n"), \
        f"want exactly one 'Error: ' line on stderr, got {err!r}"
    assert "Traceback" not in err
    return lines[0]


def no_control_chars(text: str) -> bool:
    """True when nothing a terminal could interpret (ESC, other C0/C1 controls) is present."""
    return not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)


def listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@contextlib.contextmanager
def chdir(d: Path):
    old = os.getcwd()
    os.chdir(d)
    try:
        yield
    finally:
        os.chdir(old)




TOOL = [sys.executable, "-m", "cli.main"]


def run_tool(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run tensor-dropout as a real process (signals, rlimits, pipes, other users)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run([*TOOL, *args], **kwargs)


def _drop_dac_capabilities() -> None:
    """preexec_fn: take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the bounding set,
    so that a root child obeys permission bits after exec, like any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def obey_permissions() -> dict:
    """subprocess.run keyword arguments under which permission bits bind the tool.

    Root ignores permission bits; its child drops the two capabilities that let
    it.  Calls pytest.skip, with the reason, where that cannot be done.
    """
    import pytest

    if os.getuid() != 0:
        return {}
    probe = subprocess.run([sys.executable, "-c", "import os; print(os.access('/', os.W_OK))"],
                           preexec_fn=_drop_dac_capabilities, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (no CAP_SETPCAP), so "
                    "permission bits cannot be tested")
    return {"preexec_fn": _drop_dac_capabilities}
