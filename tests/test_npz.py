"""The .npz format end to end: NumPy's archives in, archives NumPy reads out.

Inputs are made by NumPy (np.savez, np.savez_compressed) or by zipfile (for
orders, names and compressions NumPy does not choose); outputs are read back
with np.load and zipfile, and every processed member must equal ``dropout()``
of the input member with ``file=<archive base name>``, ``tensor=<member name>``.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropout_core import apply_file, dropout, inspect_file, load_tensors, save_tensors
from dropout_core.errors import DropoutError
from dropout_core.formats import open_tensor_file, ziparchive

RNG = np.random.default_rng(2026)
W = RNG.standard_normal((300, 500)).astype(np.float32)  # > 512 KiB: several chunks
B = RNG.standard_normal(64).astype(np.float16)
IDS = np.arange(40, dtype=np.int64)


def npy_bytes(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def write_zip(path, members: list[tuple[str, bytes, int]]) -> str:
    """An archive made by zipfile from (member name, bytes, zipfile method), in that order."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data, method in members:
            z.writestr(name, data, compress_type=method)
    return str(path)


def members(path) -> list[tuple[str, int]]:
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        return [(i.filename, i.compress_type) for i in z.infolist()]


def raw_member(path, name: str) -> tuple[int, bytes]:
    """(CRC-32, the member's compressed bytes exactly as stored)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    raw = Path(path).read_bytes()
    nlen, xlen = struct.unpack_from("<HH", raw, info.header_offset + 26)
    start = info.header_offset + 30 + nlen + xlen
    return info.CRC, raw[start:start + info.compress_size]


def expected(path, name: str, p: float, seed: int, **kw) -> np.ndarray:
    with np.load(path) as z:
        x = z[name]
    return dropout(x, p, seed=seed, file=os.path.basename(path), tensor=name, **kw)


# --------------------------------------------------------------------------- NumPy's archives

@pytest.mark.parametrize("save, method", [(np.savez, zipfile.ZIP_STORED),
                                          (np.savez_compressed, zipfile.ZIP_DEFLATED)])
def test_numpy_archive_round_trip_equals_dropout_of_each_member(tmp_path, save, method):
    src = tmp_path / "data.npz"
    save(src, w=W, b=B, f=np.asfortranarray(W[:30, :7]))
    out = tmp_path / "aug.npz"
    stats = apply_file(str(src), str(out), p=0.3, seed=11)
    assert [t["name"] for t in stats["tensors"]] == ["w", "b", "f"]
    with np.load(out, allow_pickle=False) as z:
        assert z.files == ["w", "b", "f"]
        for name in z.files:
            assert z[name].tobytes() == expected(src, name, 0.3, 11).tobytes(), name
    assert members(out) == [("w.npy", method), ("b.npy", method), ("f.npy", method)]


def test_cli_apply_writes_what_the_python_api_writes(tmp_path, run_cli):
    src = tmp_path / "data.npz"
    np.savez_compressed(src, w=W, b=B)
    code, _, err = run_cli("apply", str(src), "-o", str(tmp_path / "aug.npz"), "-p", "0.1",
                           "--seed", "1")
    assert code == 0, err
    assert "data.npz -> " in err and "2 tensor(s) processed, 0 skipped" in err
    apply_file(str(src), str(tmp_path / "api.npz"), p=0.1, seed=1)
    assert (tmp_path / "aug.npz").read_bytes() == (tmp_path / "api.npz").read_bytes()


def test_output_bytes_never_depend_on_chunk_size_or_threads(tmp_path):
    src = write_zip(tmp_path / "mix.npz", [("w.npy", npy_bytes(W), zipfile.ZIP_DEFLATED),
                                           ("b.npy", npy_bytes(B), zipfile.ZIP_STORED)])
    outs = []
    for chunk, threads in ((1 << 20, None), (97, 1), (1000003, 3), (4097, 2)):
        out = tmp_path / f"o{len(outs)}.npz"
        apply_file(src, str(out), p=0.5, seed=3, chunk_size=chunk, threads=threads)
        outs.append(out.read_bytes())
    assert all(o == outs[0] for o in outs)


def test_eval_mode_rewrites_each_member_with_the_same_values(tmp_path):
    src = tmp_path / "data.npz"
    np.savez_compressed(src, w=W, ids=IDS)
    out = tmp_path / "same.npz"
    apply_file(str(src), str(out), p=0.5, seed=1, mode="eval", scale=False)
    with np.load(src) as a, np.load(out) as b:
        assert a.files == b.files
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files)


# --------------------------------------------------------------------------- kept byte for byte

def test_unchosen_tensors_and_other_members_are_copied_byte_for_byte(tmp_path):
    notes = b"trained on 2026-01-01\n" * 10
    src = write_zip(tmp_path / "ckpt.npz", [
        ("README.txt", notes, zipfile.ZIP_DEFLATED),
        ("w.npy", npy_bytes(W), zipfile.ZIP_DEFLATED),
        ("ids.npy", npy_bytes(IDS), zipfile.ZIP_DEFLATED),
        ("sub/", b"", zipfile.ZIP_STORED),
        ("b.npy", npy_bytes(B), zipfile.ZIP_STORED),
        ("extra.bin", bytes(range(256)), zipfile.ZIP_STORED),
    ])
    out = tmp_path / "out.npz"
    stats = apply_file(src, str(out), p=0.5, seed=2, exclude=("ids",))
    assert [n for n, _ in members(out)] == ["README.txt", "w.npy", "ids.npy", "sub/", "b.npy",
                                            "extra.bin"]
    assert members(out) == members(src)  # order and compression kept
    for name in ("README.txt", "ids.npy", "sub/", "extra.bin"):
        assert raw_member(out, name) == raw_member(src, name), name
    assert raw_member(out, "w.npy") != raw_member(src, "w.npy")
    entries = {t["name"]: t for t in stats["tensors"]}
    assert [t["name"] for t in stats["tensors"]] == ["w", "ids", "b", "README.txt", "sub/",
                                                     "extra.bin"]
    assert entries["ids"]["status"] == "skipped" and "numel" in entries["ids"]
    for name in ("README.txt", "sub/", "extra.bin"):
        assert entries[name] == {"name": name, "status": "skipped", "reason": "not a tensor"}
    assert stats["totals"]["tensors"] == 3 and stats["totals"]["processed"] == 2
    assert stats["totals"]["skipped"] == 1
    assert stats["totals"]["numel"] == W.size + B.size
    with np.load(out) as z:
        assert z["README.txt"] == notes


def test_other_members_before_after_and_between_tensors_keep_their_places(tmp_path):
    src = write_zip(tmp_path / "a.npz", [("first", b"1", zipfile.ZIP_STORED),
                                         ("x.npy", npy_bytes(B), zipfile.ZIP_DEFLATED),
                                         ("middle", b"2", zipfile.ZIP_DEFLATED),
                                         ("empty.npy", npy_bytes(np.zeros((0, 3))), 0),
                                         ("last", b"3", zipfile.ZIP_STORED)])
    out = tmp_path / "o.npz"
    apply_file(src, str(out), p=0.5, seed=1)
    assert members(out) == members(src)
    with np.load(out) as z:
        assert z["empty"].shape == (0, 3)


def test_inspect_lists_tensors_and_other_members(tmp_path, run_cli):
    src = write_zip(tmp_path / "a.npz", [("m.npy", npy_bytes(np.array([True, False, True])), 8),
                                         ("notes", b"x", 0)])
    doc = inspect_file(src)
    assert doc["format"] == "npz" and doc["others"] == ["notes"]
    assert doc["tensors"][0]["kept"] == 2 and doc["tensors"][0]["dropped"] == 1
    code, out, err = run_cli("inspect", src)
    assert code == 0, err
    assert "a.npz: npz" in out.decode() and "  m  bool  [3]" in out.decode()


# --------------------------------------------------------------------------- new archives

def test_save_tensors_writes_stored_members_like_np_savez(tmp_path):
    path = tmp_path / "new.npz"
    save_tensors(str(path), {"w": W, "empty": np.zeros((2, 0), np.float32), "s": np.float64(3)})
    assert members(path) == [("w.npy", 0), ("empty.npy", 0), ("s.npy", 0)]
    with np.load(path) as z:
        assert z.files == ["w", "empty", "s"]
        assert z["w"].tobytes() == W.tobytes() and z["s"] == 3.0
    got = load_tensors(str(path))
    assert list(got) == ["w", "empty", "s"] and got["empty"].shape == (2, 0)
    again = tmp_path / "again.npz"
    save_tensors(str(again), {"w": W, "empty": np.zeros((2, 0), np.float32), "s": np.float64(3)})
    assert again.read_bytes() == path.read_bytes()


def test_save_tensors_refuses_metadata(tmp_path):
    with pytest.raises(DropoutError, match="cannot hold metadata"):
        save_tensors(str(tmp_path / "m.npz"), {"w": W}, metadata={"a": "b"})


def test_mask_out_npz_holds_one_member_per_processed_tensor_and_replays(tmp_path, run_cli):
    src = tmp_path / "data.npz"
    np.savez_compressed(src, w=W, b=B, ids=IDS)
    code, _, err = run_cli("apply", str(src), "-o", str(tmp_path / "a.npz"), "-p", "0.4",
                           "--seed", "5", "--exclude", "ids", "--mask-out",
                           str(tmp_path / "m.npz"), "-q")
    assert code == 0, err
    assert members(tmp_path / "m.npz") == [("w.npy", 0), ("b.npy", 0)]
    with np.load(tmp_path / "m.npz") as m, np.load(tmp_path / "a.npz") as a:
        assert m["w"].dtype == bool and ((a["w"] != 0) == m["w"]).all()
    code, _, err = run_cli("apply", str(src), "-o", str(tmp_path / "b.npz"), "-p", "0.4",
                           "--exclude", "ids", "--mask-in", str(tmp_path / "m.npz"), "-q")
    assert code == 0, err
    assert (tmp_path / "b.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()


def test_npz_mask_of_a_safetensors_file_in_torch_order(tmp_path, run_cli):
    # torch mode visits safetensors tensors by name; the mask archive follows the visit
    from conftest import write_safetensors

    src = write_safetensors(tmp_path / "s.safetensors",
                            {"zz": np.ones(50, np.float32), "aa": np.ones(30, np.float32),
                             "mm": np.ones((0,), np.float32)})
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "o.safetensors"), "--rng", "torch",
                           "--seed", "3", "-p", "0.5", "--mask-out", str(tmp_path / "m.npz"),
                           "-q")
    assert code == 0, err
    out = load_tensors(str(tmp_path / "o.safetensors"))
    with np.load(tmp_path / "m.npz") as m:
        assert sorted(m.files) == ["aa", "mm", "zz"]
        assert all(((out[k] != 0) == m[k]).all() for k in m.files)


def test_a_npy_mask_replays_from_an_npz(tmp_path, run_cli):
    x = tmp_path / "x.npy"
    np.save(x, W)
    code, _, err = run_cli("apply", str(x), "-o", str(tmp_path / "y.npy"), "-p", "0.5", "--seed",
                           "1", "--mask-out", str(tmp_path / "m.npz"), "-q")
    assert code == 0, err
    assert members(tmp_path / "m.npz") == [(".npy", 0)]
    code, _, err = run_cli("apply", str(x), "-o", str(tmp_path / "z.npy"), "--mask-in",
                           str(tmp_path / "m.npz"), "-p", "0.5", "-q")
    assert code == 0, err
    assert (tmp_path / "z.npy").read_bytes() == (tmp_path / "y.npy").read_bytes()


# --------------------------------------------------------------------------- the CLI's ways

def test_stdin_to_stdout(tmp_path, run_cli):
    src = tmp_path / "data.npz"
    np.savez_compressed(src, w=W)
    code, out, err = run_cli("apply", "-", "-o", "-", "-p", "0.5", "--seed", "1", "-q",
                             input=src.read_bytes())
    assert code == 0, err
    with np.load(io.BytesIO(out)) as z:
        want = dropout(W, 0.5, seed=1, file="-", tensor="w")
        assert z["w"].tobytes() == want.tobytes()


def test_out_dir_and_inplace(tmp_path, run_cli):
    src = tmp_path / "data.npz"
    np.savez(src, w=W, b=B)
    code, _, err = run_cli("apply", str(src), "--out-dir", str(tmp_path / "aug"), "--suffix",
                           "-d", "-p", "0.2", "--seed", "4", "--tensor", "w", "-q")
    assert code == 0, err
    by_dir = (tmp_path / "aug" / "data-d.npz").read_bytes()
    code, _, err = run_cli("apply", str(src), "--inplace", "-p", "0.2", "--seed", "4",
                           "--tensor", "w", "-q")
    assert code == 0, err
    assert src.read_bytes() == by_dir
    with np.load(src) as z:
        assert z["b"].tobytes() == B.tobytes()
    assert sorted(os.listdir(tmp_path)) == ["aug", "data.npz"]  # no temporary file left


def test_jobs_give_the_same_files(tmp_path, run_cli):
    for i in range(3):
        np.savez_compressed(tmp_path / f"f{i}.npz", w=W[i:], b=B)
    files = [str(tmp_path / f"f{i}.npz") for i in range(3)]
    for jobs in ("1", "2"):
        code, _, err = run_cli("apply", *files, "--out-dir", str(tmp_path / f"j{jobs}"), "-p",
                               "0.3", "--seed", "9", "-j", jobs, "-q")
        assert code == 0, err
    for i in range(3):
        assert (tmp_path / "j1" / f"f{i}.npz").read_bytes() == \
            (tmp_path / "j2" / f"f{i}.npz").read_bytes()


def test_torch_mode_follows_member_order(tmp_path, run_cli):
    # the per-file torch stream continues from member to member in np.load(f).files order,
    # which here is the reverse of name order
    from test_torch_cli import CASES, load, same_bits

    case = next(c for c in CASES if c["id"] == "sequence_same_p")
    calls = case["calls"]
    names = [f"t{len(calls) - i:02d}" for i in range(len(calls))]
    src = write_zip(tmp_path / "seq.npz", [
        (f"{n}.npy", npy_bytes(load(c, "input")), zipfile.ZIP_DEFLATED)
        for n, c in zip(names, calls, strict=True)])
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "o.npz"), "--rng", "torch",
                           "--seed", str(case["seed"]), "-p", repr(calls[0]["p"]), "-q")
    assert code == 0, err
    with np.load(tmp_path / "o.npz") as z:
        assert z.files == names
        for n, c in zip(names, calls, strict=True):
            assert same_bits(z[n], load(c, "output")), n


# --------------------------------------------------------------------------- names

def test_member_names_are_tensor_names(tmp_path):
    odd = ["", "a/b", "../up", "é 名", "x.npy", "esc\x1b[2J"]
    src = write_zip(tmp_path / "n.npz", [(f"{n}.npy", npy_bytes(B), 8) for n in odd])
    with np.load(src) as z:
        assert z.files == odd
    stats = apply_file(src, str(tmp_path / "o.npz"), p=0.5, seed=1, tensors=("a/*", "x*"))
    assert [(t["name"], t["status"]) for t in stats["tensors"]] == [
        ("", "skipped"), ("a/b", "processed"), ("../up", "skipped"), ("é 名", "skipped"),
        ("x.npy", "processed"), ("esc\x1b[2J", "skipped")]
    with np.load(tmp_path / "o.npz") as z:
        assert z["x.npy"].tobytes() == expected(src, "x.npy", 0.5, 1).tobytes()
    assert sorted(os.listdir(tmp_path)) == ["n.npz", "o.npz"]  # no name was used as a path


def test_x_and_x_npy_are_one_name_and_refused(tmp_path, run_cli):
    src = write_zip(tmp_path / "d.npz", [("x.npy", npy_bytes(B), 0), ("x", b"raw", 0)])
    code, _, err = run_cli("inspect", src)
    assert code == 1
    assert err == f"Error: {src}: members x and x.npy both load as x; refused as a duplicate\n"


# --------------------------------------------------------------------------- Zip64, memory

@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip64_archives_round_trip(tmp_path, monkeypatch, method):
    src = tmp_path / "z.npz"
    with zipfile.ZipFile(src, "w", method) as z:  # what np.savez does: Zip64 extras always
        for name, a in (("w", W), ("b", B)):
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                f.write(npy_bytes(a))
    monkeypatch.setattr(ziparchive, "_ZIP64_AT", 1000)  # as if 1000 bytes were 4 GiB
    out = tmp_path / "o.npz"
    apply_file(str(src), str(out), p=0.5, seed=1)
    raw = out.read_bytes()
    assert b"PK\x06\x06" in raw and struct.unpack_from("<II", raw, 18) == (0xFFFFFFFF,) * 2
    with np.load(out) as z:
        assert z["w"].tobytes() == expected(src, "w", 0.5, 1).tobytes()


def test_memory_stays_bounded_for_a_large_deflated_member(tmp_path):
    x = np.tile(np.arange(1024, dtype=np.float32), 16 << 10)  # 64 MiB
    src = tmp_path / "big.npz"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_bytes(x))
    del x
    tracemalloc.start()
    try:
        apply_file(str(src), str(tmp_path / "o.npz"), p=0.5, seed=1, chunk_size=1 << 18)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"peak {peak / 2**20:.1f} MiB for a 64 MiB member"


# --------------------------------------------------------------------------- refusals

def test_crc_mismatch_leaves_no_output(tmp_path, run_cli):
    src = tmp_path / "c.npz"
    np.savez(src, w=W)
    raw = bytearray(src.read_bytes())
    raw[-2000] ^= 0xFF  # a data byte near the end of the member
    src.write_bytes(bytes(raw))
    code, _, err = run_cli("apply", str(src), "-o", str(tmp_path / "o.npz"), "--seed", "1")
    assert code == 1
    assert err.startswith(f"Error: {src}: member w.npy: CRC-32 mismatch")
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_object_member_is_refused_without_unpickling(tmp_path, run_cli):
    marker = tmp_path / "PWNED"
    f = io.BytesIO()
    np.save(f, np.array([open, str(marker)], dtype=object), allow_pickle=True)
    src = write_zip(tmp_path / "o.npz", [("evil.npy", f.getvalue(), 8)])
    code, _, err = run_cli("inspect", src)
    assert code == 1 and "member evil.npy: object arrays are refused" in err
    assert not marker.exists()


def test_open_tensor_file_describes_members(tmp_path):
    src = write_zip(tmp_path / "a.npz", [("w.npy", npy_bytes(W), 0), ("n", b"", 0),
                                         ("b.npy", npy_bytes(B), 8)])
    with open_tensor_file(src) as tf:
        assert tf.format == "npz" and tf.named and tf.metadata is None
        assert [(t.name, t.dtype, t.shape) for t in tf.tensors] == [("w", W.dtype, W.shape),
                                                                    ("b", B.dtype, B.shape)]
        assert [o.name for o in tf.others] == ["n"]
        raw = Path(src).read_bytes()  # a stored member's data lies raw in the file
        w = tf.tensors[0]
        assert raw[w.offset:w.offset + w.nbytes] == W.tobytes()
        assert tf.tensors[1].offset == -1  # a deflated one's does not


# --------------------------------------------------------------------------- properties

# NUL aside: zipfile (under np.load) cuts a member name at NUL (test_fuzz covers such names)
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=8)
DTYPES = ["<f4", "<f8", "<f2", ">f4", "<c8"]


@st.composite
def archives(draw):
    names = draw(st.lists(NAME, min_size=0, max_size=5, unique=True))
    # np.load(f)["a.npy"] is member a.npy (tensor a) when it exists, never member a.npy.npy
    names = [n for n in names if not any(m == n + ".npy" or n == m + ".npy" for m in names)]
    out = []
    for name in names:
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 7), max_size=3)))
        x = (np.arange(int(np.prod(shape)), dtype=np.float64) * 1.5 - 4).astype(dtype)
        x = x.reshape(shape)
        if draw(st.booleans()) and x.ndim > 1:
            x = np.asfortranarray(x)
        method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        out.append((name, x, method))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(arch=archives(), p=st.sampled_from([0.0, 0.25, 0.5, 1.0]), seed=st.integers(-99, 2**40),
       chunk=st.sampled_from([1, 5, 1 << 20]))
def test_any_archive_round_trips_to_dropout_of_each_member(tmp_path_factory, arch, p, seed,
                                                           chunk):
    d = tmp_path_factory.mktemp("prop")
    src = write_zip(d / "in put.npz", [(f"{n}.npy", npy_bytes(x), m) for n, x, m in arch])
    out = d / "out.npz"
    apply_file(src, str(out), p=p, seed=seed, chunk_size=chunk)
    assert members(out) == members(src)
    with np.load(out, allow_pickle=False) as z:
        assert z.files == [n for n, _, _ in arch]
        for name, x, _ in arch:
            want = dropout(x, p, seed=seed, file="in put.npz", tensor=name)
            assert z[name].dtype == x.dtype and z[name].shape == x.shape
            assert z[name].tobytes() == np.ascontiguousarray(want).tobytes(), name


def test_stats_document_is_json(tmp_path, run_cli):
    src = write_zip(tmp_path / "a.npz", [("w.npy", npy_bytes(B), 8), ("n", b"", 0)])
    code, out, err = run_cli("apply", src, "-o", str(tmp_path / "o.npz"), "--seed", "1",
                             "--stats", "-", "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["files"][0]["format"] == "npz"
    assert doc["files"][0]["tensors"][-1] == {"name": "n", "status": "skipped",
                                              "reason": "not a tensor"}


# --------------------------------------------------------------------------- a real > 4 GiB member

@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TENSOR_DROPOUT_BIG") != "1",
                    reason="writes about 9 GB; set TENSOR_DROPOUT_BIG=1 to run")
def test_real_npz_member_over_4_gib_round_trips(tmp_path, run_cli):
    from dropout_core import DropoutParams
    from dropout_core.engine import dropout_block

    n = (1 << 30) + 4099  # float32: the member is just over 4 GiB, so it needs Zip64
    piece = np.arange(1 << 22, dtype=np.float32)
    src = tmp_path / "big.npz"
    with zipfile.ZipFile(src, "w") as z:  # what np.savez writes, without holding the array
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (n,)})
            for s in range(0, n, piece.size):
                f.write((piece[:min(piece.size, n - s)] + s).tobytes())
    out = tmp_path / "out.npz"
    code, _, err = run_cli("apply", str(src), "-o", str(out), "-p", "0.1", "--seed", "1", "-q")
    assert code == 0, err
    src.unlink()
    with zipfile.ZipFile(out) as z:
        (info,) = z.infolist()
        assert info.file_size > 1 << 32 and info.compress_type == zipfile.ZIP_STORED
        with z.open(info) as f:  # zipfile checks the CRC-32 at the end
            while f.read(64 << 20):
                pass
    with open_tensor_file(str(out)) as tf:
        (t,) = tf.tensors
        assert t.shape == (n,)
        with open(out, "rb") as f:
            for a in (0, (1 << 30) - 2500, n - 5000):  # across the 4 GiB mark, and the end
                f.seek(t.offset + 4 * a)
                raw = f.read(4 * 5000)
                assert len(raw) == 4 * 5000, (a, t.offset, t.member, out.stat().st_size)
                got = np.frombuffer(raw, dtype=np.float32)
                x = (np.arange(a, a + 5000) % piece.size + (np.arange(a, a + 5000)
                     // piece.size) * piece.size).astype(np.float32)
                want = dropout_block(x, (slice(a, a + 5000),), (n,), DropoutParams(p=0.1), 1,
                                     "big.npz", "x")
                assert got.tobytes() == want.tobytes(), a
