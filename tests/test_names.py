"""Strange but legal names: processed, printed escaped, never used as a path.

The safetensors format allows any string as a tensor name, so a file may hold
tensors called "\\x00", "\\x1b[2J" or "../../etc/passwd".  The tool processes
them like any other tensor, never lets a control character reach the terminal
(stderr, or the text of ``inspect``), keeps the exact name in JSON output and
in the output file, and never turns a name into a path.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from corpus import chdir, f32, listing, no_control_chars, one_error_line, run_cli, run_tool, st_file
from safetensors import safe_open

from dropout_core.errors import escape_name

NAMES = {
    "nul": "a\x00b",
    "only-nul": "\x00",
    "empty": "",
    "newline": "line1\nline2",
    "carriage-return": "fake\rError: spoofed",
    "esc-clear-screen": "\x1b[2J\x1b[H",
    "esc-color": "\x1b[31mred\x1b[0m",
    "esc-osc-title": "\x1b]0;pwned\x07",
    "c1-csi": "\x9b31m",
    "bell-backspace": "\x07\x08\x08",
    "del": "x\x7fy",
    "slash": "layer/weight",
    "dotdot": "../../PWNED",
    "absolute-path": "/tmp/tensor-dropout-PWNED",
    "backslash-quote": "a\\'b\"c",
    "bidi-override": "abc\u202edcba",
    "space-only": " ",
    "long": "w" * 5000,
    "dunder-metadata-lookalike": "__metadata__ ",
}


def _make(tmp_path: Path, name: str) -> Path:
    """A file with the strange tensor and a plain one beside it."""
    src = tmp_path / "in.safetensors"
    src.write_bytes(st_file([(name, "F32", [8], f32(*range(1, 9))),
                             ("plain", "F32", [2], f32(1, 2))], metadata={name: name}))
    return src


def _check_terminal_safe(text: str) -> None:
    assert no_control_chars(text), f"a control character reaches the terminal: {text!r}"
    assert "\u202e" not in text, "a bidi override reaches the terminal"


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_strange_tensor_name_is_processed_and_kept(tmp_path: Path, name: str):
    src = _make(tmp_path, name)
    out = tmp_path / "out.safetensors"
    with chdir(tmp_path):
        run = run_cli(["apply", str(src), "-o", str(out), "-p", "0.5", "--seed", "3",
                       "--stats", "-"])
    assert run.code == 0, run.err
    _check_terminal_safe(run.err)
    doc = json.loads(run.out)
    assert [t["name"] for t in doc["files"][0]["tensors"]] == [name, "plain"]
    assert doc["files"][0]["metadata"] == {name: name}
    # the output keeps the exact name and holds a correct result for it
    assert out.read_bytes()[:len(src.read_bytes()) - 40] == src.read_bytes()[:-40]
    y = np.frombuffer(out.read_bytes()[-40:-8], "<f4")
    x = np.arange(1, 9, dtype=np.float32)
    assert np.all((y == 0) | (y == 2 * x)), y
    assert int((y == 0).sum()) == doc["files"][0]["tensors"][0]["dropped"]


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_reference_reader_reads_our_output_under_the_same_name(tmp_path: Path, name: str):
    src = _make(tmp_path, name)
    out = tmp_path / "out.safetensors"
    run = run_cli(["apply", str(src), "-o", str(out), "-p", "0.5", "--seed", "3", "-q"])
    assert run.code == 0, run.err
    with safe_open(str(out), framework="np") as f:
        assert list(f.keys()) == sorted([name, "plain"])
        assert f.metadata() == {name: name}
        y = f.get_tensor(name)
    assert y.shape == (8,) and y.dtype == np.float32


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_inspect_prints_strange_names_escaped(tmp_path: Path, name: str):
    src = _make(tmp_path, name)
    run = run_cli(["inspect", str(src)])
    assert run.code == 0, run.err
    text = run.out.decode()
    _check_terminal_safe(text)
    assert re.search(rf"^  {re.escape(escape_name(name))} +float32  \[8\]", text, re.M)
    assert f"metadata {escape_name(name)} = {escape_name(name)}" in text
    [doc] = json.loads(run_cli(["inspect", "--json", str(src)]).out)  # always an array
    assert doc["tensors"][0]["name"] == name


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_error_about_a_strange_tensor_is_escaped(tmp_path: Path, name: str):
    src = tmp_path / "in.safetensors"
    src.write_bytes(st_file([(name, "I32", [2], b"\x01" * 8)]))  # ints cannot be scaled
    run = run_cli(["apply", str(src), "-o", str(tmp_path / "o.safetensors"), "--seed", "1"])
    line = one_error_line(run.err)
    assert run.code == 1
    _check_terminal_safe(line)
    assert f"tensor {escape_name(name)}: int32 tensor cannot take" in line


PATHLIKE = ["../../PWNED", "/tmp/tensor-dropout-PWNED", "sub/dir/PWNED", "PWNED", "."]


@pytest.mark.parametrize("name", PATHLIKE)
def test_tensor_name_is_never_used_as_a_path(tmp_path: Path, name: str):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    src = work / "in.safetensors"
    src.write_bytes(st_file([(name, "F32", [4], f32(1, 2, 3, 4))]))
    before = listing(tmp_path)
    with chdir(work):
        run = run_cli(["apply", "in.safetensors", "-o", "out.safetensors", "--seed", "1",
                       "--mask-out", "mask.safetensors", "--stats", "stats.json"])
    assert run.code == 0, run.err
    assert listing(tmp_path) == before | {"a/b/out.safetensors", "a/b/mask.safetensors",
                                          "a/b/stats.json"}
    assert not os.path.exists("/tmp/tensor-dropout-PWNED")
    with safe_open(str(work / "mask.safetensors"), framework="np") as f:
        assert list(f.keys()) == [name]


FILE_NAMES = {
    "esc": "x\x1b[2Jy.npy",
    "newline": "two\nlines.npy",
    "carriage-return": "a\rError: fake.npy",
    "quote-backslash": "it's\\.npy",
    "bidi": "evil\u202eypn.npy",
    "space": "has space.npy",
}


@pytest.mark.parametrize("fname", FILE_NAMES.values(), ids=FILE_NAMES.keys())
def test_strange_file_names_are_escaped_in_the_summary(tmp_path: Path, fname: str):
    src = tmp_path / fname
    src.write_bytes(st_file([("w", "F32", [2], f32(1, 2))]))
    # the input holds safetensors whatever its name says; the output is named for what it holds
    out = tmp_path / ("out-" + fname.removesuffix(".npy") + ".safetensors")
    run = run_cli(["apply", str(src), "-o", str(out), "--seed", "1"])
    assert run.code == 0, run.err
    _check_terminal_safe(run.err)
    assert escape_name(str(src)) in run.err and escape_name(str(out)) in run.err


@pytest.mark.parametrize("fname", FILE_NAMES.values(), ids=FILE_NAMES.keys())
def test_strange_file_names_are_escaped_in_errors(tmp_path: Path, fname: str):
    src = tmp_path / fname
    src.write_bytes(b"not a tensor at all")
    run = run_cli(["apply", str(src), "-o", str(tmp_path / "o.npy"), "--seed", "1"])
    line = one_error_line(run.err)
    assert run.code == 1
    _check_terminal_safe(line)
    assert line == f"Error: {escape_name(str(src))}: not a .npy, .safetensors or .npz file " \
                   "(unknown magic bytes)"


def test_undecodable_file_name_is_escaped_by_the_real_process(tmp_path: Path):
    # bytes that are not UTF-8 reach Python as lone surrogates; stderr must stay clean
    raw = os.fsencode(str(tmp_path)) + b"/bad-\xff\x1b[2J.npy"
    with open(raw, "wb") as f:
        f.write(b"junk junk junk")
    proc = run_tool([b"apply", raw, b"-o", os.fsencode(str(tmp_path)) + b"/o.npy"])
    assert proc.returncode == 1
    line = one_error_line(proc.stderr.decode("utf-8"))
    assert no_control_chars(line) and "\\udcff\\x1b[2J" in line, line
