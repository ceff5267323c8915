"""Fuzzing: mutated valid files give a clean error or a correct result, nothing else.

Hypothesis takes small valid files (.npy 1.0/2.0/3.0, C and Fortran order,
a multi-tensor .safetensors) and mutates them: flipped and overwritten bytes
(mostly in the header), cuts, insertions, deletions, lying length fields and
token swaps inside the header text ("F32" -> "I64", "False" -> "True", a
digit for another), with the length field fixed up or not.  .npz archives
(stored and deflated) get the same byte mutations aimed at their ZIP records
and at the .npy headers inside members, lying size and CRC fields (fixed up or
not), and archives generated from generated .npy members.

Every run must end one of two ways:
  * exit 1 with exactly one ``Error: `` line naming the input, no traceback,
    no "internal error", no output or temporary file, and the input unchanged;
  * exit 0, and an output in which every element is either the input's bytes
    (kept; ``--no-scale``) or all zero bytes (dropped, fill 0), with as many
    changed elements as the stats say were dropped, and (safetensors) the
    header copied byte for byte.

CI runs FUZZ_EXAMPLES (default 200) examples per seed file, derandomized so
that CI is repeatable; ``python scripts/fuzz.py`` runs the same properties
for much longer with fresh randomness.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from corpus import (
    listing,
    npy_dict,
    npy_header,
    npz_file,
    one_error_line,
    run_cli,
    st_file,
    zmember,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from dropout_core import load_tensors
from dropout_core.formats import open_tensor_file
from dropout_core.formats.ziparchive import read_directory

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
DERANDOMIZE = os.environ.get("FUZZ_RANDOM", "") == ""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                print_blob=True)


def _npy_seed(version, descr, shape, fortran=False) -> bytes:
    x = (np.arange(int(np.prod(shape))) % 7 - 3).astype(descr)
    data = x.reshape(shape).tobytes(order="F" if fortran else "C")
    return npy_header(npy_dict(descr, fortran, shape), version) + data


def _st_seed() -> bytes:
    return st_file([("w", "F32", [3, 2], np.arange(1, 7, dtype="<f4").tobytes()),
                    ("b", "BF16", [2], b"\x80\x3f\x00\x40"),
                    ("h", "F16", [2], np.array([1, -2], "<f2").tobytes()),
                    ("i", "I16", [3], np.array([1, 0, -1], "<i2").tobytes()),
                    ("m", "BOOL", [2], b"\x01\x00")],
                   metadata={"format": "pt", "k": "v"})


SEEDS = {
    "npy-v1-f4": _npy_seed((1, 0), "<f4", (3, 4)),
    "npy-v2-f8-fortran": _npy_seed((2, 0), "<f8", (2, 3, 2), fortran=True),
    "npy-v3-i2": _npy_seed((3, 0), "<i2", (5,)),
    "npy-v1-big-endian-f2": _npy_seed((1, 0), ">f2", (4, 1)),
    "safetensors": _st_seed(),
}

# tokens of the header text, in classes: a swap within a class keeps the syntax and
# changes the meaning (a dtype for another, True for False), which is where readers err
CLASSES = [
    [b"F32", b"I32", b"U32", b"F16", b"BF16", b"I16", b"U16", b"I64", b"F64", b"U64", b"C64",
     b"BOOL", b"U8", b"I8", b"F8_E4M3", b"F8_E5M2", b"F8_E8M0", b"F4", b"F6_E2M3", b"F128"],
    [b"<f4", b"<i4", b"<u4", b"<f2", b">f2", b"<i2", b"<f8", b">f8", b"<c8", b"<c16", b"|b1",
     b"|u1", b"|i1", b"|O", b"<U1", b"|V2", b"<M8", b"<f16", b"f4"],
    [b"True", b"False", b"None", b"true", b"false", b"null"],
    [b"shape", b"dtype", b"data_offsets", b"descr", b"fortran_order", b"__metadata__", b"w"],
    [b"(", b")", b"[", b"]", b"{", b"}", b",", b":", b'"', b"'", b" ", b""],
]
NUMBER = re.compile(rb"-?\d+")
NUMBERS = [0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 48, -1, 2**31, 2**32, 2**62, 2**64, 10**30]
INTERESTING_BYTES = [0, 1, 0x7F, 0x80, 0xFF, ord("{"), ord("}"), ord('"'), ord(","), ord("0"),
                     ord("9"), ord(" "), ord("\n"), ord("\\")]


def _header_span(data: bytes) -> tuple[int, int]:
    """(start, end) of the header text of a seed: where the interesting mutations go."""
    if data.startswith(b"\x93NUMPY"):
        fmt = "<H" if data[6] == 1 else "<I"
        start = 8 + struct.calcsize(fmt)
        return start, start + struct.unpack(fmt, data[8:start])[0]
    return 8, 8 + struct.unpack("<Q", data[:8])[0]


def _fix_length(data: bytearray, seed: bytes) -> None:
    """Rewrite the length field to match a header whose text changed size."""
    start, end = _header_span(seed)
    delta = len(data) - len(seed)
    n = end - start + delta
    if seed.startswith(b"\x93NUMPY"):
        fmt = "<H" if seed[6] == 1 else "<I"
        if 0 <= n < 1 << (8 * struct.calcsize(fmt)):
            data[8:start] = struct.pack(fmt, n)
    elif n >= 0:
        data[:8] = struct.pack("<Q", n)


@st.composite
def mutated(draw, seed_name: str) -> bytes:
    seed = SEEDS[seed_name]
    data = bytearray(seed)
    hstart, hend = _header_span(seed)
    tend = seed.rindex(b"}", 0, hend) + 1  # the text before the padding
    fix = False
    for _ in range(draw(st.integers(1, 2))):
        n = len(data)
        if n == 0:
            break
        in_text = st.integers(min(hstart, n - 1), max(min(hstart, n - 1), min(n, tend) - 1))
        anywhere = st.integers(0, n - 1)
        pos = draw(st.one_of(in_text, in_text, in_text, anywhere))
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "length",
                                     *["number"] * 3, *["token"] * 4]))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "set":
            data[pos] = draw(st.sampled_from(INTERESTING_BYTES))
        elif kind == "cut":
            del data[draw(anywhere):]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
            fix = fix or draw(st.booleans())
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
            fix = fix or draw(st.booleans())
        elif kind == "length":
            value = draw(st.sampled_from([0, 1, 2, hend - hstart - 1, hend - hstart + 1,
                                          n, 2**16 - 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
            if seed.startswith(b"\x93NUMPY"):
                fmt = "<H" if seed[6] == 1 else "<I"
                data[8:hstart] = struct.pack(fmt, value % (1 << (8 * struct.calcsize(fmt))))
            else:
                data[:8] = struct.pack("<Q", value)
        elif kind == "number":  # another number in place of one in the header text
            text = bytes(data[hstart:min(hend, len(data))])
            spots = list(NUMBER.finditer(text))
            if spots:
                m = draw(st.sampled_from(spots))
                old = int(m.group())
                new = draw(st.sampled_from([*NUMBERS, old + 1, old - 1, old * 2, old // 2]))
                data[hstart + m.start():hstart + m.end()] = str(new).encode()
                fix = fix or draw(st.sampled_from([True, True, True, False]))
        else:  # swap a token of the header text, mostly for one of its own class
            text = bytes(data[hstart:min(hend, len(data))])
            classes = [c for c in CLASSES if any(t and t in text for t in c)]
            if classes:
                cls = draw(st.sampled_from(classes))
                old = draw(st.sampled_from([t for t in cls if t and t in text]))
                spots = [i for i in range(len(text)) if text.startswith(old, i)]
                at = hstart + draw(st.sampled_from(spots))
                pool = draw(st.sampled_from([cls, cls, cls, [t for c in CLASSES for t in c]]))
                data[at:at + len(old)] = draw(st.sampled_from(pool))
                fix = fix or draw(st.sampled_from([True, True, True, False]))
    if fix:
        _fix_length(data, seed)
    return bytes(data)


def _elements(raw: bytes, info) -> np.ndarray:
    """A tensor's elements in logical C order, as rows of raw bytes."""
    size = info.dtype.itemsize
    rows = np.frombuffer(raw, np.uint8)[info.offset:info.offset + info.nbytes].reshape(-1, size)
    if info.fortran_order:
        rows = rows.reshape(*info.shape[::-1], size)
        rows = rows.transpose(*range(len(info.shape) - 1, -1, -1), len(info.shape))
        rows = rows.reshape(-1, size)
    return rows


def _rows(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(a.size, a.dtype.itemsize)


def _numpy_reads(path: Path, tensors: dict, others: list[str]) -> None:
    """NumPy reads each tensor member as we do (zipfile checking its CRC-32); the other
    members are copied as they were, a wrong CRC-32 and all."""
    with zipfile.ZipFile(path) as z:
        for name, a in tensors.items():
            if "\x00" in name:  # zipfile cuts a name at NUL, so NumPy cannot ask for it
                continue
            b = np.lib.format.read_array(io.BytesIO(z.read(name + ".npy")), allow_pickle=False)
            assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes(), name
    with open(path, "rb") as f:
        names = [m.name for m in read_directory(f.fileno(), os.fstat(f.fileno()).st_size, "out")]
    assert [n for n in names if not n.endswith(".npy")] == others, "other members changed"


def _event(text: str) -> None:
    # outcome statistics for --hypothesis-show-statistics (a fuzzer that only ever meets
    # one error message is not exploring)
    if currently_in_test_context():
        event(text)


def check_run(data: bytes, how: str) -> None:
    """The property: a clean error, or a correct result."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / "in.bin"
        src.write_bytes(data)
        out = d / "out.bin"
        stats = d / "stats.json"
        common = ["-p", "0.5", "--seed", "11", "--no-scale", "--stats", str(stats), "-q"]
        if how == "inplace":
            args, shown, result = ["apply", str(src), "--inplace", *common], str(src), src
        elif how == "stdin":
            args, shown, result = ["apply", "-", "-o", str(out), *common], "<stdin>", out
        else:
            args, shown, result = ["apply", str(src), "-o", str(out), *common], str(src), out
        run = run_cli(args, stdin=data if how == "stdin" else b"")
        assert run.exception is None, f"escaped main(): {run.exception!r}"
        if run.code != 0:
            line = one_error_line(run.err)
            assert run.code == 1, line
            assert line.startswith(f"Error: {shown}: "), line
            assert "internal error" not in line and "memory" not in line, line
            _event("error: " + re.sub(r"[\d']+|tensor \S+: ", "", line[len(shown) + 9:])[:40])
            assert src.read_bytes() == data, "input changed"
            assert listing(d) == {"in.bin"}, f"left behind: {listing(d)}"
            return
        assert run.err == "", run.err
        _event("ok")
        assert listing(d) == {"in.bin", "stats.json"} | ({"out.bin"} if how != "inplace" else set())
        if how != "inplace":
            assert src.read_bytes() == data
        doc = json.loads(stats.read_text())
        tf = open_tensor_file(str(result))  # the output is itself a valid file...
        tf.close()
        src_copy = d / "orig.bin"
        src_copy.write_bytes(data)
        tin = open_tensor_file(str(src_copy))
        tin.close()
        got = result.read_bytes()
        assert [(t.name, t.dtype, t.shape) for t in tf.tensors] == \
            [(t.name, t.dtype, t.shape) for t in tin.tensors], "names, dtypes or shapes changed"
        if tin.format == "safetensors":
            assert got[:len(tin.header)] == data[:len(tin.header)], "header not copied exactly"
        if tin.format == "npz":  # members are compressed: compare what the readers serve
            before, after = load_tensors(str(src_copy)), load_tensors(str(result))
            _numpy_reads(result, after, [o.name for o in tin.others])
        stats_by_name = {t["name"]: t for t in doc["files"][0]["tensors"]}
        for t_in, t_out in zip(tin.tensors, tf.tensors, strict=True):
            if tin.format == "npz":
                x, y = (_rows(a[t_in.name]) for a in (before, after))
            else:
                x, y = _elements(data, t_in), _elements(got, t_out)
            kept = np.all(x == y, axis=1)
            zero = np.all(y == 0, axis=1)
            assert np.all(kept | zero), f"tensor {t_in.name!r}: an element is neither kept nor 0"
            changed = int((~kept).sum())
            assert changed <= stats_by_name[t_in.name]["dropped"] <= int(zero.sum())


HOWS = st.sampled_from(["output", "output", "inplace", "stdin"])


@pytest.mark.parametrize("seed_name", list(SEEDS))
def test_seed_files_are_valid(seed_name: str):
    # the property must hold for the unmutated seeds, and they must succeed
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x"
        p.write_bytes(SEEDS[seed_name])
        open_tensor_file(str(p)).close()
    check_run(SEEDS[seed_name], "output")


@pytest.mark.parametrize("seed_name", list(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_file_gives_clean_error_or_correct_result(seed_name: str, data):
    check_run(data.draw(mutated(seed_name), label="file"), data.draw(HOWS, label="how"))


# ---- headers generated from their parts: most are valid, some lie a little

ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4,
             "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8, "F8_E4M3": 1,
             "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1}
small_shape = st.lists(st.integers(0, 4), min_size=0, max_size=3)
lie = st.sampled_from([0] * 8 + [-1, 1, 2, 8])  # mostly the truth


@st.composite
def generated_safetensors(draw) -> bytes:
    names = draw(st.lists(st.text(max_size=6), min_size=0, max_size=4, unique=True))
    doc: dict = {}
    if draw(st.booleans()):
        doc["__metadata__"] = draw(st.dictionaries(
            st.text(max_size=4), st.one_of(st.text(max_size=4), st.text(max_size=4),
                                           st.integers(), st.none()), max_size=3))
    pos = 0
    for name in names:
        if name == "__metadata__":
            continue
        dtype = draw(st.sampled_from([*ST_DTYPES, "F4", "X9"]))
        shape = draw(small_shape)
        nbytes = int(np.prod(shape)) * ST_DTYPES.get(dtype, 1) + draw(lie)
        begin = pos + draw(lie)
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, begin + nbytes]}
        pos = begin + nbytes
    blob = draw(st.binary(min_size=max(0, pos), max_size=max(0, pos)))
    return st_file(doc=doc, data=blob[:max(0, pos + draw(lie))].ljust(max(0, pos + draw(lie)),
                                                                    b"\x00"))


@st.composite
def generated_npy(draw) -> bytes:
    descr = draw(st.sampled_from(["<f4", "<f8", "<f2", ">f4", "<i2", "|u1", "|b1", "<c8",
                                  "<i8", ">u4", "|O", "<U2", "|V2", "<M8[s]"]))
    itemsize = np.dtype(descr).itemsize
    fortran = draw(st.sampled_from([True, False, False, 0, "False"]))
    shape = tuple(draw(small_shape))
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0)]))
    n = int(np.prod(shape)) * itemsize + draw(lie)
    blob = draw(st.binary(min_size=max(0, n), max_size=max(0, n)))
    return npy_header(npy_dict(descr, fortran, shape), version) + blob


@FUZZ
@given(file=generated_safetensors(), how=HOWS)
def test_generated_safetensors_gives_clean_error_or_correct_result(file: bytes, how: str):
    check_run(file, how)


@FUZZ
@given(file=generated_npy(), how=HOWS)
def test_generated_npy_gives_clean_error_or_correct_result(file: bytes, how: str):
    check_run(file, how)


# ---- .npz: archives mutated byte by byte, and archives of generated members

def _npz_seed(method: int) -> bytes:
    f4 = np.arange(12, dtype="<f4").reshape(3, 4) - 5
    f8 = np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3))
    return npz_file([zmember("w.npy", _npy_seed((1, 0), "<f4", (3, 4)), method),
                     zmember("notes", b"kept as it is", method),
                     zmember("f.npy", _npy_seed((2, 0), "<f8", (2, 3), fortran=True), method),
                     zmember("i.npy", _npy_seed((3, 0), "<i2", (5,)), method)]) \
        if f4.size and f8.size else b""


NPZ_SEEDS = {"npz-stored": _npz_seed(0), "npz-deflated": _npz_seed(8)}
ZIP_FIELD_VALUES = [0, 1, 2, 8, 12, 20, 45, 0x800, 0xFFFF, 0xFFFFFFFF, 2**31, 99, 14]


def _records(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of every ZIP record of a seed, local headers with their names."""
    spans = []
    for sig, size in ((b"PK\x03\x04", 30), (b"PK\x01\x02", 46), (b"PK\x05\x06", 22)):
        at = data.find(sig)
        while at >= 0:
            spans.append((at, size))
            at = data.find(sig, at + 1)
    return spans


def _fix_crcs(data: bytearray, seed: bytes) -> None:
    """Recompute each stored member's CRC-32 (local and central) over its current bytes, so
    that a mutation inside a member reaches the .npy reader instead of the CRC check."""
    for at, _ in _records(seed):
        if seed[at:at + 4] != b"PK\x03\x04" or seed[at + 8] != 0:
            continue
        csize, = struct.unpack_from("<I", seed, at + 18)
        nlen, xlen = struct.unpack_from("<HH", seed, at + 26)
        start = at + 30 + nlen + xlen
        if start + csize > len(data):
            continue
        crc = struct.pack("<I", zlib.crc32(bytes(data[start:start + csize])))
        name = seed[at + 30:at + 30 + nlen]
        data[at + 14:at + 18] = crc
        c = seed.find(b"PK\x01\x02" + seed[at + 4:at + 6])  # its central entry
        while c >= 0 and seed[c + 46:c + 46 + len(name)] != name:
            c = seed.find(b"PK\x01\x02", c + 1)
        if c >= 0:
            data[c + 16:c + 20] = crc


@st.composite
def mutated_npz(draw, seed_name: str) -> bytes:
    seed = NPZ_SEEDS[seed_name]
    data = bytearray(seed)
    records = _records(seed)
    texts = [(m.start(), m.end()) for m in re.finditer(rb"\{'descr'.*?\}", seed)]
    same_length = True
    for _ in range(draw(st.integers(1, 2))):
        n = len(data)
        if n == 0:
            break
        at, size = draw(st.sampled_from(records))
        in_record = st.integers(min(at, n - 1), min(at + size, n) - 1)
        spots = [in_record, st.integers(0, n - 1)]
        if texts and seed_name == "npz-stored":
            a, b = draw(st.sampled_from(texts))
            spots += [st.integers(min(a, n - 1), min(b, n) - 1)] * 2
        pos = draw(st.one_of(*spots))
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", *["field"] * 3,
                                     *["token"] * 2]))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "set":
            data[pos] = draw(st.sampled_from(INTERESTING_BYTES))
        elif kind == "cut":
            del data[draw(st.integers(0, n - 1)):]
            same_length = False
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
            same_length = False
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
            same_length = False
        elif kind == "field":  # a u16 or u32 field of a record: a size, a count, an offset
            width = draw(st.sampled_from([2, 4]))
            off = draw(st.integers(at + 4, at + size - width))
            if off + width <= len(data):
                value = draw(st.sampled_from(ZIP_FIELD_VALUES)) % (1 << (8 * width))
                data[off:off + width] = value.to_bytes(width, "little")
        elif texts and seed_name == "npz-stored":  # a token of a member's .npy header text
            a, b = draw(st.sampled_from(texts))
            text = bytes(data[a:min(b, len(data))])
            cls = [t for c in CLASSES[1:3] for t in c if t and t in text]
            if cls:
                old = draw(st.sampled_from(cls))
                i = a + text.index(old)
                new = draw(st.sampled_from([t for c in CLASSES[1:3] for t in c
                                            if len(t) == len(old)]))
                data[i:i + len(old)] = new
    if same_length and draw(st.booleans()):
        _fix_crcs(data, seed)
    return bytes(data)


@st.composite
def generated_npz(draw) -> bytes:
    names = draw(st.lists(st.text(max_size=4), max_size=3, unique=True))
    members = []
    for name in names:
        method = draw(st.sampled_from([0, 8]))
        if draw(st.integers(0, 5)) == 0:  # not a tensor
            members.append(zmember(name, draw(st.binary(max_size=8)), method))
            continue
        blob = draw(generated_npy())
        kw = {}
        if draw(lie):  # a size field that lies a little (the CRC is the truth's)
            kw["usize"] = max(0, len(blob) + draw(lie))
            if method == 0:
                kw["csize"] = kw["usize"]
        members.append(zmember(name + ".npy", blob, method, **kw))
    return npz_file(members, zip64=draw(st.booleans()))


@pytest.mark.parametrize("seed_name", list(NPZ_SEEDS))
def test_npz_seed_files_are_valid(seed_name: str):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x"
        p.write_bytes(NPZ_SEEDS[seed_name])
        open_tensor_file(str(p)).close()
    check_run(NPZ_SEEDS[seed_name], "output")


@pytest.mark.parametrize("seed_name", list(NPZ_SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_npz_gives_clean_error_or_correct_result(seed_name: str, data):
    check_run(data.draw(mutated_npz(seed_name), label="file"), data.draw(HOWS, label="how"))


@FUZZ
@given(file=generated_npz(), how=HOWS)
def test_generated_npz_gives_clean_error_or_correct_result(file: bytes, how: str):
    check_run(file, how)
