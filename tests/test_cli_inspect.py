"""inspect as a user meets it: one JSON shape, every file reported, columns that line up."""

from __future__ import annotations

import json
import os
import re

import numpy as np
from conftest import SAMPLES, write_npy, write_safetensors

EXAMPLE = os.path.join(SAMPLES, "example_1x3x3.npy")
MULTI = os.path.join(SAMPLES, "multi.safetensors")


def test_inspect_json_is_an_array_even_for_one_file(run_cli):
    code, out, err = run_cli("inspect", "--json", EXAMPLE)
    assert code == 0, err
    docs = json.loads(out)
    assert isinstance(docs, list) and len(docs) == 1
    assert docs[0]["file"] == EXAMPLE and docs[0]["tensors"][0]["shape"] == [1, 3, 3]


def test_inspect_json_is_an_array_for_several_files(run_cli):
    code, out, err = run_cli("inspect", "--json", EXAMPLE, MULTI)
    assert code == 0, err
    assert [d["file"] for d in json.loads(out)] == [EXAMPLE, MULTI]


def test_inspect_reports_every_readable_file_and_an_error_line_per_bad_one(tmp_path, run_cli):
    missing, bad = str(tmp_path / "missing.npy"), tmp_path / "bad.npy"
    bad.write_bytes(b"not a tensor file")
    code, out, err = run_cli("inspect", EXAMPLE, missing, MULTI, str(bad))
    text = out.decode()
    assert code == 1
    assert f"{EXAMPLE}: npy" in text and f"{MULTI}: safetensors" in text
    assert text.index(EXAMPLE) < text.index(MULTI)
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("Error: ") for line in lines), err
    assert "missing.npy" in lines[0] and "no such file" in lines[0]
    assert "bad.npy" in lines[1]


def test_inspect_json_prints_the_readable_files_and_exits_1(tmp_path, run_cli):
    code, out, err = run_cli("inspect", "--json", EXAMPLE, str(tmp_path / "missing.npy"),
                             MULTI)
    assert code == 1
    assert [d["file"] for d in json.loads(out)] == [EXAMPLE, MULTI]
    assert err.count("\n") == 1 and err.startswith("Error: ") and "missing.npy" in err


def test_inspect_of_only_bad_files_prints_an_empty_array(tmp_path, run_cli):
    code, out, err = run_cli("inspect", "--json", str(tmp_path / "a.npy"),
                             str(tmp_path / "b.npy"))
    assert code == 1 and json.loads(out) == []
    assert [line.split(":")[1].strip()[-5:] for line in err.splitlines()] == ["a.npy", "b.npy"]


def test_inspect_table_columns_line_up(tmp_path, run_cli):
    src = write_safetensors(tmp_path / "m.safetensors", {
        "w": np.zeros((2, 3, 4), np.float32),
        "encoder.layer.0.weight": np.ones(7, np.float16),
        "b": np.ones((1000, 1), np.float64)})
    code, out, err = run_cli("inspect", src)
    assert code == 0, err
    rows = [line for line in out.decode().splitlines() if line.startswith("  ")]
    assert len(rows) == 3
    for column in (r"float\d+", r"\[[\d, ]*\]", r"zeros"):
        starts = {re.search(column, row).start() for row in rows}
        assert len(starts) == 1, f"{column} not aligned:\n" + "\n".join(rows)


def test_inspect_widths_are_per_file(tmp_path, run_cli):
    a = write_npy(tmp_path / "a.npy", np.ones(3, np.float32))
    b = write_safetensors(tmp_path / "b.safetensors",
                          {"a_very_long_tensor_name_indeed": np.ones(2, np.float32)})
    code, out, _ = run_cli("inspect", a, b)
    assert code == 0
    assert "  (array)  float32  [3]  zeros 0/3" in out.decode()
