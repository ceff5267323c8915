"""The command line as a user meets it: real files, exit codes, exact error lines."""

from __future__ import annotations

import json
import os
import shutil
import stat

import ml_dtypes
import numpy as np
import pytest
from conftest import SAMPLES, binomial_bounds, write_npy, write_safetensors

from dropout_core import dropout, load_tensors


@pytest.fixture
def x_npy(tmp_path):
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    return write_npy(tmp_path / "x.npy", x), x


def stats_of(out: bytes) -> dict:
    return json.loads(out)


def test_apply_writes_output_and_stats_to_stdout(x_npy, tmp_path, run_cli):
    path, x = x_npy
    code, out, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "-p", "0.3",
                             "--seed", "7", "--stats", "-")
    assert code == 0, err
    doc = stats_of(out)
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, dropout(x, 0.3, seed=7, file="x.npy"))
    t = doc["files"][0]["tensors"][0]
    assert t["dropped"] == int((y == 0).sum()) and t["numel"] == x.size
    assert doc["p"] == 0.3 and doc["seed"] == 7 and abs(doc["effective_p"] - 0.3) < 2**-32
    assert "dropped" in err  # the human summary goes to stderr


def test_stats_schema_holds_every_documented_key(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, out, _ = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "1",
                           "--stats", "-", "-q")
    doc = stats_of(out)
    assert {"tool", "version", "p", "effective_p", "seed", "mode", "variant", "rng", "scale",
            "fill", "files", "totals"} <= set(doc)
    f = doc["files"][0]
    assert {"input", "output", "format", "key", "seed", "tensors", "totals"} <= set(f)
    assert {"name", "dtype", "shape", "numel", "units", "kept_units", "dropped_units", "kept",
            "dropped", "drop_fraction", "scale", "overflow", "mask_digest", "mask_shape",
            "status"} <= set(f["tensors"][0])
    assert f["tensors"][0]["mask_digest"].startswith("sha256:")


def test_stats_to_a_file_and_quiet_prints_nothing(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, out, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "1",
                             "--stats", str(tmp_path / "s.json"), "-q")
    assert code == 0 and out == b"" and err == ""
    assert json.loads((tmp_path / "s.json").read_text())["seed"] == 1


def test_stdin_to_stdout_pipe(x_npy, run_cli):
    path, x = x_npy
    with open(path, "rb") as f:
        data = f.read()
    code, out, err = run_cli("apply", "-", "-o", "-", "-p", "0.5", "--seed", "1", input=data)
    assert code == 0, err
    import io

    y = np.load(io.BytesIO(out))
    np.testing.assert_array_equal(y, dropout(x, 0.5, seed=1, file="-"))


def test_eval_mode_output_equals_input(x_npy, tmp_path, run_cli):
    path, x = x_npy
    code, _, _ = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--mode", "eval", "-p",
                         "0.9")
    assert code == 0
    assert np.load(tmp_path / "y.npy").tobytes() == x.tobytes()


def test_same_seed_gives_byte_identical_files(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    for name in ("a.npy", "b.npy"):
        run_cli("apply", path, "-o", str(tmp_path / name), "--seed", "5", "-q")
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_without_seed_the_reported_seed_repeats_the_run(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    _, out, _ = run_cli("apply", path, "-o", str(tmp_path / "a.npy"), "--stats", "-", "-q")
    seed = stats_of(out)["seed"]
    run_cli("apply", path, "-o", str(tmp_path / "b.npy"), "--seed", str(seed), "-q")
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_inplace_rewrites_and_keeps_permissions(tmp_path, run_cli):
    src = str(shutil.copy(os.path.join(SAMPLES, "multi.safetensors"), tmp_path / "w.safetensors"))
    os.chmod(src, 0o640)
    before = load_tensors(src)
    code, _, err = run_cli("apply", src, "--inplace", "-p", "0.1", "--seed", "7",
                           "--exclude", "position_ids")
    assert code == 0, err
    assert stat.S_IMODE(os.stat(src).st_mode) == 0o640
    after = load_tensors(src)
    assert (after["position_ids"] == before["position_ids"]).all()
    assert (after["encoder.weight"] != before["encoder.weight"]).any()
    assert os.listdir(tmp_path) == ["w.safetensors"]  # no temp file left


def test_safetensors_output_read_by_reference_reader(tmp_path, run_cli):
    from safetensors import safe_open

    out = tmp_path / "o.safetensors"
    code, _, err = run_cli("apply", os.path.join(SAMPLES, "multi.safetensors"), "-o", str(out),
                           "-p", "0.5", "--seed", "3", "--exclude", "position_ids")
    assert code == 0, err
    with safe_open(str(out), "np") as f, safe_open(os.path.join(SAMPLES, "multi.safetensors"),
                                                   "np") as g:
        assert f.metadata() == g.metadata() == {"source": "tensor-dropout samples",
                                                "format": "np"}
        assert list(f.keys()) == list(g.keys())
        for k in g.keys():
            a, b = f.get_tensor(k), g.get_tensor(k)
            assert a.dtype == b.dtype and a.shape == b.shape
            if k != "position_ids":
                want = dropout(b, 0.5, seed=3, file="multi.safetensors", tensor=k)
                assert a.tobytes() == want.tobytes(), k
    # names and order in the header are the input's
    with open(os.path.join(SAMPLES, "multi.safetensors"), "rb") as f:
        assert out.read_bytes()[:200] == f.read()[:200]


def test_int_tensor_with_scaling_refused_naming_it(tmp_path, run_cli):
    out = tmp_path / "o.safetensors"
    code, _, err = run_cli("apply", os.path.join(SAMPLES, "multi.safetensors"), "-o", str(out),
                           "--seed", "1")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("Error: ")
    assert "position_ids" in err and "--no-scale" in err and "multi.safetensors" in err
    assert not out.exists()


def test_no_scale_masks_int_tensors(tmp_path, run_cli):
    out = tmp_path / "o.safetensors"
    code, _, err = run_cli("apply", os.path.join(SAMPLES, "multi.safetensors"), "-o", str(out),
                           "--seed", "1", "--no-scale", "-p", "0.5")
    assert code == 0, err
    ids = load_tensors(str(out))["position_ids"]
    assert set(np.unique(ids)) <= set(range(16))


@pytest.mark.parametrize("p", ["-0.1", "1.5", "nan", "abc"])
def test_bad_p_exits_2_with_the_valid_range(x_npy, tmp_path, run_cli, p):
    path, _ = x_npy
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "-p", p)
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1
    if p != "abc":
        assert "0 <= p <= 1" in err
    assert not (tmp_path / "y.npy").exists()


def test_missing_file_exits_1_naming_it(tmp_path, run_cli):
    code, _, err = run_cli("apply", str(tmp_path / "nope.npy"), "-o", str(tmp_path / "y.npy"))
    assert code == 1 and "nope.npy" in err and "no such file" in err
    assert not (tmp_path / "y.npy").exists()


def test_existing_output_refused_unless_force(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    (tmp_path / "y.npy").write_bytes(b"keep me")
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "1")
    assert code == 1 and "--force" in err
    assert (tmp_path / "y.npy").read_bytes() == b"keep me"
    code, _, _ = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "1", "--force")
    assert code == 0 and np.load(tmp_path / "y.npy").shape == (64, 64)


def test_corrupt_file_leaves_no_output(tmp_path, run_cli):
    bad = tmp_path / "bad.npy"
    good = np.zeros((4, 4), np.float32)
    write_npy(bad, good)
    data = bad.read_bytes()[:-5]
    bad.write_bytes(data)
    code, _, err = run_cli("apply", str(bad), "-o", str(tmp_path / "y.npy"))
    assert code == 1 and "truncated" in err and "bad.npy" in err
    assert bad.read_bytes() == data and not (tmp_path / "y.npy").exists()


def test_object_array_refused_never_unpickled(tmp_path, run_cli):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run_cli("apply", str(path), "-o", str(tmp_path / "y.npy"))
    assert code == 1 and "object" in err


def test_format_detected_from_magic_not_extension(tmp_path, run_cli):
    src = str(shutil.copy(os.path.join(SAMPLES, "example_1x3x3.npy"), tmp_path / "data.bin"))
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "out.bin"), "--seed", "1")
    assert code == 0, err
    assert np.load(tmp_path / "out.bin").shape == (1, 3, 3)


def test_npy_versions_and_fortran_order(tmp_path, run_cli):
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    results = []
    for name, version, order in (("a.npy", (1, 0), "C"), ("a.npy", (2, 0), "F"),
                                 ("a.npy", (3, 0), "C")):
        d = tmp_path / f"v{version[0]}{order}"
        d.mkdir()
        with open(d / name, "wb") as f:
            np.lib.format.write_array(f, np.asarray(x, order=order), version=version)
        code, _, err = run_cli("apply", str(d / name), "-o", str(d / "y.npy"), "--seed", "3")
        assert code == 0, err
        y = np.load(d / "y.npy")
        assert y.flags.c_contiguous
        results.append(y.tobytes())
    assert results[0] == results[1] == results[2]


def test_bfloat16_and_float8_round_trip_in_safetensors(tmp_path, run_cli):
    t = {"bf": np.linspace(-2, 2, 64, dtype=np.float32).astype(ml_dtypes.bfloat16),
         "e4": np.linspace(-2, 2, 64, dtype=np.float32).astype(ml_dtypes.float8_e4m3fn),
         "e5": np.linspace(-2, 2, 64, dtype=np.float32).astype(ml_dtypes.float8_e5m2)}
    src = write_safetensors(tmp_path / "f.safetensors", t)
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "o.safetensors"), "--seed", "2")
    assert code == 0, err
    out = load_tensors(str(tmp_path / "o.safetensors"))
    for k, v in t.items():
        assert out[k].dtype == v.dtype
        assert out[k].tobytes() == dropout(v, 0.5, seed=2, file="f.safetensors",
                                           tensor=k).tobytes()


@pytest.mark.parametrize("dtype", ["F4", "F6_E2M3"])
def test_packed_sub_byte_dtypes_refused_clearly(tmp_path, run_cli, dtype):
    header = json.dumps({"t": {"dtype": dtype, "shape": [2], "data_offsets": [0, 1]}}).encode()
    path = tmp_path / "f.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0")
    code, _, err = run_cli("apply", str(path), "-o", str(tmp_path / "o.safetensors"))
    assert code == 1 and dtype in err and "not supported" in err


def test_each_file_and_tensor_gets_its_own_stream(tmp_path, run_cli):
    x = np.ones((256, 256), np.float32)
    a = write_npy(tmp_path / "a.npy", x)
    b = write_npy(tmp_path / "b.npy", x)
    run_cli("apply", a, b, "--out-dir", str(tmp_path / "out"), "--seed", "1", "-q")
    ya, yb = np.load(tmp_path / "out" / "a.npy"), np.load(tmp_path / "out" / "b.npy")
    agree = int((ya == yb).sum())
    lo, hi = binomial_bounds(x.size, 0.5)
    assert lo <= agree <= hi  # independent masks, not one pattern stamped on both


def test_file_result_does_not_depend_on_the_batch(tmp_path, run_cli):
    x = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    a = write_npy(tmp_path / "a.npy", x)
    b = write_npy(tmp_path / "b.npy", x * 2)
    run_cli("apply", a, "-o", str(tmp_path / "alone.npy"), "--seed", "4", "-q")
    run_cli("apply", b, a, "--out-dir", str(tmp_path / "batch"), "--seed", "4", "-q")
    assert (tmp_path / "alone.npy").read_bytes() == (tmp_path / "batch" / "a.npy").read_bytes()


def test_adding_a_tensor_never_changes_another_tensors_mask(tmp_path, run_cli):
    w = np.ones((32, 32), np.float32)
    one = write_safetensors(tmp_path / "m.safetensors", {"w": w})
    d = tmp_path / "two"
    d.mkdir()
    two = write_safetensors(d / "m.safetensors", {"a": w, "w": w, "z": w})
    run_cli("apply", one, "-o", str(tmp_path / "o1.safetensors"), "--seed", "9", "-q")
    run_cli("apply", two, "-o", str(tmp_path / "o2.safetensors"), "--seed", "9", "-q")
    assert (load_tensors(str(tmp_path / "o1.safetensors"))["w"]
            == load_tensors(str(tmp_path / "o2.safetensors"))["w"]).all()


def test_inspect_shows_tensors_and_zero_fraction(tmp_path, run_cli):
    code, out, _ = run_cli("inspect", os.path.join(SAMPLES, "multi.safetensors"))
    text = out.decode()
    assert code == 0 and "encoder.weight" in text and "bfloat16" in text and "zeros" in text
    code, out, _ = run_cli("inspect", "--json", os.path.join(SAMPLES, "example_1x3x3.npy"))
    [doc] = json.loads(out)  # an array, even for one file
    assert doc["tensors"][0]["shape"] == [1, 3, 3] and doc["tensors"][0]["zero_fraction"] == 0


def test_help_states_exit_codes_and_version(run_cli):
    code, out, _ = run_cli("apply", "--help")
    assert code == 0 and b"Exit status: 0" in out
    code, out, _ = run_cli("--version")
    assert code == 0 and b"tensor-dropout" in out


def test_unknown_option_is_exit_2_one_line(run_cli):
    code, _, err = run_cli("apply", "x.npy", "--bogus")
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_threads_and_chunk_size_never_change_the_file(tmp_path, run_cli, fmt):
    x = np.random.default_rng(3).standard_normal((301, 257)).astype(np.float16)
    src = write_npy(tmp_path / "x.npy", x) if fmt == "npy" else \
        write_safetensors(tmp_path / "x.safetensors", {"a": x, "b": x.astype(np.float32)})
    outs = []
    for k, extra in enumerate((["--threads", "1"], ["--threads", "2", "--chunk-size", "1001"],
                               ["--chunk-size", "65536"], [])):
        out = tmp_path / f"o{k}.{fmt}"
        code, _, err = run_cli("apply", src, "-o", str(out), "--seed", "9", "-q", *extra)
        assert code == 0, err
        outs.append(out.read_bytes())
    assert len(set(outs)) == 1


def test_bare_command_prints_help_not_an_error_line(run_cli):
    code, out, err = run_cli()
    assert code in (0, 2) and "apply" in (err + out.decode()) and "Error:" not in err


def test_command_list_shows_whole_descriptions(run_cli):
    from cli.main import cli

    code, out, _ = run_cli("--help")
    listing = out.decode().split("Commands:")[1]
    assert code == 0 and "..." not in listing
    for name, cmd in cli.commands.items():
        assert f"{name}  " in listing and cmd.short_help and cmd.short_help in listing
