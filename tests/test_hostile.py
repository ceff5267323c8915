"""The bad-input corpus: every case exits 1 with one clean line, and nothing else happens.

Each case in corpus.CASES runs through the real entry point four ways (apply
to a new file, apply --inplace, inspect, and as the --mask-in file of a good
input) and once more through stdin.  Every
run must exit 1 with exactly one ``Error: `` line naming the file (and the
tensor, for safetensors) and the problem; no traceback, no output file, no
temporary file, and the input's bytes unchanged.
"""

from __future__ import annotations

import json
import os
import re
import resource
import stat
import struct
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from corpus import (
    CASES,
    Case,
    f32,
    listing,
    npy_dict,
    npy_header,
    obey_permissions,
    one_error_line,
    run_cli,
    run_tool,
    valid_npy,
)

from dropout_core.formats import npy
from dropout_core.formats import safetensors as safetensors_file

HOW = {
    "apply-o": lambda p, out: ["apply", str(p), "-o", str(out), "-p", "0.5", "--seed", "1"],
    "apply-inplace": lambda p, out: ["apply", str(p), "--inplace", "-p", "0.5", "--seed", "1"],
    "inspect": lambda p, out: ["inspect", str(p)],
    # the bad file as the mask to replay, for a good input (good.npy, made by the test)
    # -p: a mask that records no p needs it given (otherwise that usage error comes first)
    "mask-in": lambda p, out: ["apply", str(p.parent / "good.npy"), "-o", str(out),
                               "--mask-in", str(p), "-p", "0.5"],
}


def _check_refusal(run, shown: str, case: Case) -> str:
    assert run.exception is None, f"escaped main(): {run.exception!r}"
    line = one_error_line(run.err)
    assert run.code == 1, f"exit {run.code}, want 1: {line}"
    assert line.startswith(f"Error: {shown}: "), f"file not named first: {line}"
    if case.tensor is not None:
        assert f"tensor {case.tensor}" in line, f"tensor {case.tensor!r} not named: {line}"
    assert re.search(case.problem, line), f"problem /{case.problem}/ not in: {line}"
    return line


def test_corpus_has_at_least_40_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(ids) >= 40


# a case whose header is fine (an int tensor with scaling on) is refused by apply, not
# by inspect, and makes a readable (if odd) mask
RUNS = [pytest.param(c, how, id=f"{c.id}-{how}") for c in CASES for how in HOW
        if not (c.apply_only and how in ("inspect", "mask-in"))]


@pytest.mark.parametrize(("case", "how"), RUNS)
def test_bad_input_is_refused_cleanly(tmp_path: Path, case: Case, how: str):
    src = case.build(tmp_path)
    if how == "mask-in":
        (tmp_path / "good.npy").write_bytes(valid_npy())
    before = src.read_bytes()
    # the output holds the input's format (good.npy's for mask-in), and is named for it
    out = tmp_path / ("out.npy" if how == "mask-in" else f"out{case.suffix}")
    files = listing(tmp_path)
    run = run_cli(HOW[how](src, out))
    _check_refusal(run, str(src), case)
    assert run.out == b"", "nothing may reach stdout"
    assert src.read_bytes() == before, "the input was modified"
    assert listing(tmp_path) == files, "an output or temporary file was left behind"
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists(), \
        "something was unpickled or executed"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_on_stdin_is_refused_cleanly(tmp_path: Path, case: Case):
    data = case.build(tmp_path).read_bytes()
    out = tmp_path / "out.bin"
    files = listing(tmp_path)
    run = run_cli(["apply", "-", "-o", str(out), "--seed", "1"], stdin=data)
    _check_refusal(run, "<stdin>", case)
    assert listing(tmp_path) == files


ABSURD = [c for c in CASES if "absurd" in c.id]


@pytest.mark.parametrize("case", ABSURD, ids=lambda c: c.id)
def test_absurd_shape_is_refused_before_any_allocation(tmp_path: Path, case: Case):
    src = case.build(tmp_path)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        run = run_cli(["apply", str(src), "-o", str(tmp_path / "o"), "--seed", "1"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    _check_refusal(run, str(src), case)
    assert "memory" not in run.err.lower()
    assert peak < 20 << 20, f"peak allocation {peak} bytes for a file of {src.stat().st_size}"
    assert elapsed < 5, f"took {elapsed:.1f} s"


# ---- inputs that are not regular files, or cannot be read

def _special(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """Make an input of the given kind; return (path, problem regex)."""
    p = tmp_path / "in.npy"
    if kind == "empty-file":
        p.write_bytes(b"")
        return p, r"empty file"
    if kind == "directory":
        p.mkdir()
        return p, r"is a directory"
    if kind == "missing-file":
        return p, r"no such file"
    if kind == "dangling-symlink":
        p.symlink_to(tmp_path / "gone.npy")
        return p, r"no such file"
    if kind == "dev-null":
        return Path("/dev/null"), r"is a character device, not a tensor file"
    if kind in ("fifo-garbage", "fifo-empty", "fifo-truncated"):
        os.mkfifo(p)
        payload = {"fifo-garbage": b"\x00garbage" * 100, "fifo-empty": b"",
                   "fifo-truncated": valid_npy()[:-5]}[kind]

        def feed():
            with open(p, "wb") as f:
                f.write(payload)

        threading.Thread(target=feed, daemon=True).start()
        return p, {"fifo-garbage": r"unknown magic", "fifo-empty": r"empty file",
                   "fifo-truncated": r"truncated"}[kind]
    raise AssertionError(kind)


SPECIAL = ["empty-file", "directory", "missing-file", "dangling-symlink", "fifo-garbage",
           "fifo-empty", "fifo-truncated", "dev-null"]


@pytest.mark.parametrize("how", ["apply-o", "inspect"])
@pytest.mark.parametrize("kind", SPECIAL)
def test_special_input_is_refused_cleanly(tmp_path: Path, kind: str, how: str):
    src, problem = _special(tmp_path, kind)
    files = listing(tmp_path)
    run = run_cli(HOW[how](src, tmp_path / "out.npy"))
    _check_refusal(run, str(src), Case(kind, b"", problem))
    assert listing(tmp_path) == files


def _limit_64mb() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))


def test_endless_device_is_refused_not_spooled(tmp_path: Path):
    # /dev/zero never ends: copying it "like stdin" would fill the disk.  A real process,
    # with a file-size limit and a timeout, so that a regression fails instead of hanging.
    proc = run_tool(["inspect", "/dev/zero"], preexec_fn=_limit_64mb, timeout=30)
    line = one_error_line(proc.stderr.decode())
    assert proc.returncode == 1
    assert line == "Error: /dev/zero: is a character device, not a tensor file (use - to read " \
                   "stdin)"


@pytest.mark.parametrize("how", ["apply-o", "inspect"])
def test_unreadable_file_is_refused_cleanly(tmp_path: Path, how: str):
    # root reads anything: obey_permissions() makes the tool's process obey permission bits
    src = tmp_path / "in.npy"
    src.write_bytes(valid_npy())
    src.chmod(0)
    files = listing(tmp_path)
    proc = run_tool(HOW[how](src, tmp_path / "out.npy"), cwd=tmp_path,
                    **obey_permissions())
    line = one_error_line(proc.stderr.decode())
    assert proc.returncode == 1
    assert line == f"Error: {src}: cannot read: permission denied"
    assert listing(tmp_path) == files
    assert stat.S_IMODE(src.stat().st_mode) == 0


# ---- the documented limits hold exactly where the documentation says

def _npy_with_header_of(hlen: int) -> bytes:
    text = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
    body = text + b" " * (hlen - len(text) - 1) + b"\n"
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", hlen) + body + f32(1, 2)


def _safetensors_with_header_of(n: int) -> bytes:
    raw = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", n) + raw + b" " * (n - len(raw)) + f32(1, 2)


LIMITS = {
    "npy-header-at-limit": (lambda: _npy_with_header_of(npy.MAX_HEADER), None),
    "npy-header-over-limit": (lambda: _npy_with_header_of(npy.MAX_HEADER + 1),
                              r"header of 1048577 bytes exceeds the limit of 1048576"),
    "safetensors-header-at-limit": (lambda: _safetensors_with_header_of(100_000_000), None),
    "safetensors-header-over-limit": (lambda: _safetensors_with_header_of(100_000_001),
                                      r"header of 100000001 bytes exceeds the limit of "
                                      r"100000000"),
    "npy-64-dimensions": (lambda: npy_header(npy_dict(shape=(1,) * 64)) + f32(1), None),
    "npy-65-dimensions": (lambda: npy_header(npy_dict(shape=(1,) * 65)) + f32(1),
                          r"shape has 65 dimensions, more than 64"),
}


@pytest.mark.parametrize(("make", "refusal"), LIMITS.values(), ids=LIMITS.keys())
def test_limits_are_where_the_documentation_says(tmp_path: Path, make, refusal):
    assert npy.MAX_HEADER == 1 << 20 and safetensors_file.MAX_HEADER == 100_000_000
    src = tmp_path / "in.bin"
    src.write_bytes(make())
    run = run_cli(["inspect", str(src)])
    if refusal is None:
        assert run.code == 0, run.err
    else:
        _check_refusal(run, str(src), Case("limit", b"", refusal))


def test_every_case_is_in_the_documented_table():
    doc = (Path(__file__).parent.parent / "docs" / "hostile-inputs.md").read_text()
    missing = [c.id for c in CASES if f"| `{c.id}` |" not in doc]
    assert not missing, f"add these cases to the table in docs/hostile-inputs.md: {missing}"
