"""inspect as a user meets it: one JSON shape, every file reported, columns that line up."""

from __future__ import annotations

import json
import os

from conftest import SAMPLES

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
