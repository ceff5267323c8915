"""Issue 3 from the command line and from Python: masks, many files, repeat, jobs, globs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import SAMPLES, write_npy, write_safetensors

from dropout_core import DropoutParams, apply_file, dropout, load_tensors
from dropout_core.batch import apply_files, output_name


@pytest.fixture
def samples(tmp_path):
    for f in os.listdir(SAMPLES):
        shutil.copy(os.path.join(SAMPLES, f), tmp_path / f)
    return tmp_path


def test_mask_out_writes_channel_mask_in_unit_shape(samples, run_cli):
    code, _, err = run_cli("apply", str(samples / "batch_nchw.npy"), "-o", str(samples / "o.npy"),
                           "--variant", "channel", "--seed", "1", "--mask-out",
                           str(samples / "m.npy"), "-q")
    assert code == 0, err
    m = np.load(samples / "m.npy")
    y = np.load(samples / "o.npy")
    assert m.dtype == bool and m.shape == (4, 3, 1, 1)
    assert ((y != 0) | ~np.broadcast_to(m, y.shape)).all()
    assert (y[np.broadcast_to(~m, y.shape)] == 0).all()


def test_mask_in_replays_the_mask_exactly(samples, run_cli):
    src = str(samples / "multi.safetensors")
    run_cli("apply", src, "-o", str(samples / "a.safetensors"), "--exclude", "position_ids",
            "--seed", "2", "--mask-out", str(samples / "m.safetensors"), "-q")
    code, _, err = run_cli("apply", src, "-o", str(samples / "b.safetensors"), "--exclude",
                           "position_ids", "--mask-in", str(samples / "m.safetensors"), "-q")
    assert code == 0, err
    assert (samples / "a.safetensors").read_bytes() == (samples / "b.safetensors").read_bytes()
    masks = load_tensors(str(samples / "m.safetensors"))
    assert set(masks) == {"encoder.weight", "encoder.bias", "decoder.weight"}


def test_mask_in_pairs_an_input_with_its_target(tmp_path, run_cli):
    x = write_npy(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    t = write_npy(tmp_path / "t.npy", np.full((8, 8), 3, np.float32))
    run_cli("apply", x, "-o", str(tmp_path / "xo.npy"), "--seed", "1", "--mask-out",
            str(tmp_path / "m.npy"), "-q")
    # a .npy mask records no p: the p it was made with is given again
    code, _, err = run_cli("apply", t, "-o", str(tmp_path / "to.npy"), "--mask-in",
                           str(tmp_path / "m.npy"), "-p", "0.5", "-q")
    assert code == 0, err
    assert ((np.load(tmp_path / "xo.npy") == 0) == (np.load(tmp_path / "to.npy") == 0)).all()


def test_mask_that_does_not_broadcast_is_a_clear_error(tmp_path, run_cli):
    x = write_npy(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    write_npy(tmp_path / "m.npy", np.ones((3,), bool))
    code, _, err = run_cli("apply", x, "-o", str(tmp_path / "o.npy"), "--mask-in",
                           str(tmp_path / "m.npy"), "-p", "0.5")
    assert code == 1 and "does not broadcast" in err and not (tmp_path / "o.npy").exists()


def test_inspect_counts_kept_and_dropped_in_a_mask_file(tmp_path, run_cli):
    write_npy(tmp_path / "m.npy", np.array([True, False, True, True]))
    code, out, _ = run_cli("inspect", str(tmp_path / "m.npy"))
    assert code == 0 and b"kept 3 dropped 1" in out


def test_out_dir_keeps_names_and_is_created(samples, run_cli):
    code, _, err = run_cli("apply", str(samples / "batch_nchw.npy"),
                           str(samples / "example_1x3x3.npy"), "--out-dir",
                           str(samples / "new" / "dir"), "--seed", "3", "-q")
    assert code == 0, err
    assert sorted(os.listdir(samples / "new" / "dir")) == ["batch_nchw.npy", "example_1x3x3.npy"]


def test_suffix_and_repeat_names_and_seeds(samples, run_cli):
    code, out, err = run_cli("apply", str(samples / "example_1x3x3.npy"), "--out-dir",
                             str(samples / "aug"), "--repeat", "3", "--suffix", "-aug",
                             "--seed", "5", "--stats", "-", "-q")
    assert code == 0, err
    doc = json.loads(out)
    names = sorted(os.listdir(samples / "aug"))
    assert names == [f"example_1x3x3-aug_{i}.npy" for i in range(3)]
    seeds = [f["seed"] for f in doc["files"]]
    assert len(set(seeds)) == 3 and [f["copy"] for f in doc["files"]] == [0, 1, 2]
    # each copy is reproducible alone with the seed the stats report
    run_cli("apply", str(samples / "example_1x3x3.npy"), "-o", str(samples / "one.npy"),
            "--seed", str(seeds[1]), "-q")
    assert (samples / "one.npy").read_bytes() == \
        (samples / "aug" / "example_1x3x3-aug_1.npy").read_bytes()


def test_repeat_copies_differ(samples, run_cli):
    run_cli("apply", str(samples / "batch_nchw.npy"), "--out-dir", str(samples / "r"),
            "--repeat", "2", "--seed", "1", "-q")
    a, b = (np.load(samples / "r" / f"batch_nchw_{i}.npy") for i in range(2))
    assert ((a == 0) != (b == 0)).any()


def test_tensor_and_exclude_globs_choose_tensors(samples, run_cli):
    code, out, err = run_cli("apply", str(samples / "multi.safetensors"), "-o",
                             str(samples / "o.safetensors"), "--tensor", "encoder.*",
                             "--exclude", "*.bias", "--seed", "1", "--stats", "-", "-q")
    assert code == 0, err
    status = {t["name"]: t["status"] for t in json.loads(out)["files"][0]["tensors"]}
    assert status == {"encoder.weight": "processed", "encoder.bias": "skipped",
                      "decoder.weight": "skipped", "position_ids": "skipped"}
    a, b = load_tensors(str(samples / "o.safetensors")), load_tensors(
        str(samples / "multi.safetensors"))
    for k in ("encoder.bias", "decoder.weight", "position_ids"):
        assert a[k].tobytes() == b[k].tobytes()


def test_jobs_give_identical_results(samples, tmp_path, run_cli):
    files = [write_npy(tmp_path / f"f{i}.npy", np.full((50, 50), i + 1, np.float32))
             for i in range(5)]
    run_cli("apply", *files, "--out-dir", str(tmp_path / "j1"), "--seed", "1", "-q")
    code, _, err = run_cli("apply", *files, "--out-dir", str(tmp_path / "j2"), "--seed", "1",
                           "-j", "2", "-q")
    assert code == 0, err
    for i in range(5):
        assert (tmp_path / "j1" / f"f{i}.npy").read_bytes() == \
            (tmp_path / "j2" / f"f{i}.npy").read_bytes()


def test_inplace_on_many_files(tmp_path, run_cli):
    files = [write_npy(tmp_path / f"f{i}.npy", np.ones((20, 20), np.float32)) for i in range(3)]
    code, _, err = run_cli("apply", *files, "--inplace", "--seed", "1", "-q")
    assert code == 0, err
    assert all((np.load(f) != 1).all() for f in files)


def test_a_bad_file_in_a_batch_writes_nothing(tmp_path, run_cli):
    good = write_npy(tmp_path / "good.npy", np.ones(10, np.float32))
    bad = write_npy(tmp_path / "bad.npy", np.ones(10, np.int32))
    code, _, err = run_cli("apply", good, bad, "--out-dir", str(tmp_path / "o"), "--seed", "1")
    assert code == 1 and "bad.npy" in err
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_two_inputs_with_one_output_name_refused(tmp_path, run_cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x = write_npy(tmp_path / "a" / "x.npy", np.ones(4, np.float32))
    y = write_npy(tmp_path / "b" / "x.npy", np.ones(4, np.float32))
    code, _, err = run_cli("apply", x, y, "--out-dir", str(tmp_path / "o"))
    # the hint must be one that works: --suffix applies to both, so it cannot help
    assert code == 2 and "would both be written to" in err and "--suffix" not in err
    assert "give them different names" in err


@pytest.mark.parametrize("args,msg", [
    (["-o", "a.npy", "--inplace"], "only one of"),
    (["--repeat", "2", "-o", "a.npy"], "--out-dir"),
    ([], "give -o"),
])
def test_conflicting_output_options_exit_2(tmp_path, run_cli, args, msg):
    x = write_npy(tmp_path / "x.npy", np.ones(4, np.float32))
    code, _, err = run_cli("apply", x, *args)
    assert code == 2 and msg in err


def test_python_api_has_the_same_names(samples):
    doc = apply_files([str(samples / "batch_nchw.npy")], params=DropoutParams(p=0.2),
                      seed=1, out_dir=str(samples / "py"), repeat=2)
    assert doc["totals"]["files"] == 2
    st = apply_file(str(samples / "multi.safetensors"), str(samples / "o.safetensors"), p=0.2,
                    seed=1, tensors=("encoder.*",), mask_out=str(samples / "m.safetensors"))
    assert [t["status"] for t in st["tensors"]] == ["processed", "processed", "skipped",
                                                    "skipped"]
    assert output_name("d/x.npy", "o", "-s", copy=3, copies=12) == os.path.join("o", "x-s_03.npy")


def test_safetensors_channel_masks_use_tensor_names(tmp_path):
    src = write_safetensors(tmp_path / "m.safetensors",
                            {"a": np.ones((2, 3, 4), np.float32), "b": np.ones((5, 2), np.float32)})
    apply_file(src, str(tmp_path / "o.safetensors"), p=0.5, seed=1, variant="channel",
               mask_out=str(tmp_path / "mask.safetensors"))
    m = load_tensors(str(tmp_path / "mask.safetensors"))
    assert m["a"].shape == (2, 3, 1) and m["b"].shape == (5, 2)
    y = load_tensors(str(tmp_path / "o.safetensors"))["a"]
    assert (y == dropout(np.ones((2, 3, 4), np.float32), 0.5, seed=1, file="m.safetensors",
                         tensor="a", variant="channel")).all()


def test_progress_bar_draws_on_stderr_once_work_is_long(capsys):
    from cli.main import _Progress

    bar = _Progress(delay=0.0)
    bar(50 * 2**20, 100 * 2**20)
    bar.close()
    err = capsys.readouterr()
    assert "50.0%" in err.err and "[###" in err.err and err.out == ""
    quiet = _Progress(delay=3600)
    quiet(1, 2)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_no_progress_bar_when_stderr_is_not_a_terminal(samples, run_cli):
    code, out, err = run_cli("apply", str(samples / "batch_nchw.npy"), "-o",
                             str(samples / "o.npy"), "--seed", "1")
    assert code == 0 and "[#" not in err and "%" in err  # the summary only


def test_batch_progress_reports_bytes(samples):
    calls = []
    apply_files([str(samples / "batch_nchw.npy"), str(samples / "example_1x3x3.npy")],
                params=DropoutParams(p=0.5), seed=1, out_dir=str(samples / "pp"),
                progress=lambda d, t: calls.append((d, t)))
    total = os.path.getsize(samples / "batch_nchw.npy") + os.path.getsize(
        samples / "example_1x3x3.npy")
    assert calls[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False))
