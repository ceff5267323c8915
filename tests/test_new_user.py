"""What a new user tripped over (issue 12), each as the story of one run.

Every test here failed before the fix: the user's command, the exit status,
the exact line on stderr and what is (or is not) left on disk.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, write_npy, write_safetensors

from dropout_core import DropoutError, load_tensors

SEED_LIMIT = 2**53  # seeds a JSON reader such as jq or JavaScript reads back exactly


def one_error_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    return err.rstrip("\n")


@pytest.fixture
def x_npy(tmp_path):
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    return write_npy(tmp_path / "x.npy", x), x


@pytest.fixture
def checkpoint(tmp_path):
    """A model checkpoint as transformers saves it: the position ids under a prefix."""
    tensors = {"embeddings.position_ids": np.arange(16, dtype=np.int64).reshape(1, 16),
               "encoder.weight": np.random.default_rng(1).standard_normal((8, 8))
               .astype(np.float32)}
    return write_safetensors(tmp_path / "weights.safetensors", tensors), tensors


def stats_of(out: bytes) -> dict:
    return json.loads(out)


# --- 1. --tensor/--exclude patterns that match nothing ----------------------------------


@pytest.mark.parametrize("option", ["--exclude", "--tensor"])
def test_a_pattern_matching_no_tensor_is_a_usage_error_naming_it(checkpoint, tmp_path, run_cli,
                                                                 option):
    path, _ = checkpoint
    out = tmp_path / "out.safetensors"
    code, _, err = run_cli("apply", path, "-o", str(out), "--seed", "7", option, "position_ids")
    assert (code, one_error_line(err)) == (
        2, f"Error: {option} pattern position_ids matches no tensor in any input (patterns "
           "match whole names; tensors are embeddings.position_ids, encoder.weight)")
    assert not out.exists()


@pytest.mark.parametrize("option", ["--exclude", "--tensor"])
def test_choosing_tensors_of_a_npy_file_is_a_usage_error(x_npy, tmp_path, run_cli, option):
    path, _ = x_npy
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "7",
                           option, "*")
    assert (code, one_error_line(err)) == (
        2, f"Error: {path}: holds one unnamed array; --tensor/--exclude choose tensors by name, "
           "in files that hold several")
    assert not (tmp_path / "y.npy").exists()


def test_readme_exclude_example_keeps_a_prefixed_position_ids(checkpoint, run_cli):
    path, before = checkpoint
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        [line] = [ln for ln in f if ln.startswith("tensor-dropout apply weights.safetensors "
                                                  "--inplace")]
    args = shlex.split(line)
    assert args[-2:] == ["--exclude", "*position_ids"]
    code, _, err = run_cli(*[path if a == "weights.safetensors" else a for a in args[1:]])
    assert code == 0, err
    after = load_tensors(path)
    assert after["embeddings.position_ids"].tobytes() == \
        before["embeddings.position_ids"].tobytes()
    assert (after["encoder.weight"] != before["encoder.weight"]).any()


# --- 2. seeds below 2**53 -----------------------------------------------------------------


def test_a_fresh_seed_is_below_2_pow_53(x_npy, tmp_path, run_cli):
    from dropout_core import new_seed

    path, _ = x_npy
    code, out, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--stats", "-", "-q")
    assert code == 0, err
    seed = stats_of(out)["seed"]
    assert isinstance(seed, int) and 0 <= seed < SEED_LIMIT
    assert max(new_seed() for _ in range(256)) < SEED_LIMIT


def test_repeat_seeds_are_below_2_pow_53(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, out, err = run_cli("apply", path, "--out-dir", str(tmp_path / "aug"), "--repeat", "5",
                             "--seed", "7", "--stats", "-", "-q")
    assert code == 0, err
    seeds = [f["seed"] for f in stats_of(out)["files"]]
    assert len(set(seeds)) == 5 and all(0 <= s < SEED_LIMIT for s in seeds), seeds


# --- 3. --jobs from a script without a __main__ guard ---------------------------------------


def test_jobs_in_a_script_without_main_guard_runs_the_script_once(tmp_path):
    for name in ("a.npy", "b.npy"):
        write_npy(tmp_path / name, np.ones((8, 8), np.float32))
    script = tmp_path / "augment.py"
    script.write_text(textwrap.dedent("""\
        from dropout_core import DropoutParams, apply_files

        print("augmenting", flush=True)
        apply_files(["a.npy", "b.npy"], params=DropoutParams(p=0.5), out_dir="out", seed=1,
                    jobs=2)
        """))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "augmenting\n"
    assert sorted(os.listdir(tmp_path / "out")) == ["a.npy", "b.npy"]


# --- 4. pathlib.Path everywhere in the Python API -----------------------------------------


def test_apply_file_takes_paths(x_npy, tmp_path):
    from dropout_core import apply_file

    path, x = x_npy
    stats = apply_file(Path(path), tmp_path / "y.npy", p=0.5, seed=1)
    assert stats["output"] == str(tmp_path / "y.npy")
    assert np.load(tmp_path / "y.npy").shape == x.shape


def test_apply_files_takes_paths_for_inputs_out_dir_and_stats(x_npy, tmp_path):
    from dropout_core import BatchOptions, DropoutParams, apply_files

    path, _ = x_npy
    doc = apply_files([Path(path)], params=DropoutParams(p=0.5), out_dir=tmp_path / "out",
                      seed=1, options=BatchOptions(stats=tmp_path / "s.json"))
    assert (tmp_path / "out" / "x.npy").is_file()
    assert json.loads((tmp_path / "s.json").read_text())["files"] == doc["files"]


def test_load_tensors_and_inspect_file_take_paths(checkpoint):
    from dropout_core import inspect_file

    path, tensors = checkpoint
    loaded = load_tensors(Path(path))
    assert {k: v.tobytes() for k, v in loaded.items()} == \
        {k: v.tobytes() for k, v in tensors.items()}
    assert [t["name"] for t in inspect_file(Path(path))["tensors"]] == list(tensors)


def test_save_tensors_takes_a_path(tmp_path):
    from dropout_core import save_tensors

    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_tensors(tmp_path / "w.safetensors", {"w": w})
    assert load_tensors(str(tmp_path / "w.safetensors"))["w"].tobytes() == w.tobytes()


# --- 5. --inplace on a file its user protected --------------------------------------------


def test_inplace_refuses_a_read_only_file_unless_forced(checkpoint, run_cli):
    path, _ = checkpoint
    os.chmod(path, 0o444)
    before = Path(path).read_bytes()
    args = ("apply", path, "--inplace", "-p", "0.5", "--seed", "1", "--exclude", "*ids")
    code, _, err = run_cli(*args)
    assert (code, one_error_line(err)) == (
        1, f"Error: {path}: is write-protected; use --force to replace it anyway")
    assert Path(path).read_bytes() == before
    code, _, err = run_cli(*args, "--force")
    assert code == 0, err
    assert Path(path).read_bytes() != before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444


OTHER_UID = 54321


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_inplace_force_keeps_another_users_file_theirs(checkpoint, run_cli):
    path, _ = checkpoint
    os.chown(path, OTHER_UID, OTHER_UID)
    before = Path(path).read_bytes()
    code, _, err = run_cli("apply", path, "--inplace", "--force", "-p", "0.5", "--seed", "1",
                           "--exclude", "*ids")
    assert code == 0, err
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (OTHER_UID, OTHER_UID)
    assert Path(path).read_bytes() != before


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_inplace_refuses_a_file_that_would_change_owner_unless_forced(checkpoint, run_cli):
    # root's file, writable by all, in a shared directory; the user is someone else
    src, _ = checkpoint
    shared = tempfile.mkdtemp(prefix="tensor-dropout-shared-")
    try:
        os.chmod(shared, 0o777)
        path = shutil.copy(src, os.path.join(shared, "weights.safetensors"))
        os.chmod(path, 0o666)
        before = Path(path).read_bytes()
        args = ("apply", path, "--inplace", "-p", "0.5", "--seed", "1", "--exclude", "*ids")
        run_cli(*args[:2], "-o", os.path.join(shared, "warm.safetensors"), *args[3:], "-q")
        os.unlink(os.path.join(shared, "warm.safetensors"))  # every module is loaded now
        os.seteuid(NOBODY)
        try:
            refused = run_cli(*args)
            forced = run_cli(*args, "--force")
        finally:
            os.seteuid(0)
        code, _, err = refused
        assert (code, one_error_line(err)) == (
            1, f"Error: {path}: belongs to another user (uid 0) and would become yours; use "
               "--force to replace it anyway")
        code, _, err = forced
        assert code == 0, err
        assert Path(path).read_bytes() != before
    finally:
        shutil.rmtree(shared)


# --- 6. two inputs with one base name --------------------------------------------------------


def test_two_inputs_with_one_base_name_are_not_told_to_use_suffix(tmp_path, run_cli):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_npy(tmp_path / d / "x.npy", np.ones(4, np.float32))
    a, b, out = tmp_path / "a" / "x.npy", tmp_path / "b" / "x.npy", tmp_path / "out"
    code, _, err = run_cli("apply", str(a), str(b), "--out-dir", str(out), "--seed", "1")
    line = one_error_line(err)
    assert "--suffix" not in line  # a suffix renames both the same way: no way out
    assert code == 2 and f"{a} and {b} would both be written to {out / 'x.npy'}" in line
    assert not out.exists()


# --- 7. masks that record their p -------------------------------------------------------------


@pytest.fixture
def masked_run(checkpoint, tmp_path, run_cli):
    """A first run that saves its mask (p = 0.3) beside its output."""
    path, _ = checkpoint
    mask, first = tmp_path / "m.safetensors", tmp_path / "first.safetensors"
    code, _, err = run_cli("apply", path, "-o", str(first), "-p", "0.3", "--seed", "4",
                           "--exclude", "*ids", "--mask-out", str(mask))
    assert code == 0, err
    return path, mask, first


def test_a_safetensors_mask_records_its_p(masked_run):
    from safetensors import safe_open

    _, mask, _ = masked_run
    with safe_open(str(mask), "np") as f:
        recorded = json.loads(f.metadata()["tensor-dropout"])
    assert recorded["p"] == 0.3


def test_replaying_a_mask_without_p_uses_its_p(masked_run, tmp_path, run_cli):
    path, mask, first = masked_run
    again = tmp_path / "again.safetensors"
    code, out, err = run_cli("apply", path, "-o", str(again), "--mask-in", str(mask),
                             "--exclude", "*ids", "--stats", "-", "-q")
    assert code == 0, err
    assert again.read_bytes() == first.read_bytes()
    doc = stats_of(out)
    assert doc["seed"] is None and doc["p"] == 0.3


@pytest.mark.parametrize("extra,text", [
    (["-p", "0.5"], "m.safetensors was made with p = 0.3; -p 0.5 would rescale it differently "
                    "(leave -p out, or give 0.3)"),
    (["--seed", "4"], "--seed has no effect with --mask-in: the mask is replayed, nothing is "
                      "drawn"),
], ids=["conflicting-p", "seed"])
def test_replaying_a_mask_refuses_a_conflicting_option(masked_run, tmp_path, run_cli, extra,
                                                       text):
    path, mask, _ = masked_run
    out = tmp_path / "again.safetensors"
    code, _, err = run_cli("apply", path, "-o", str(out), "--mask-in", str(mask), "--exclude",
                           "*ids", *extra)
    line = one_error_line(err)
    assert code == 2 and line.endswith(text), line
    assert not out.exists()


def test_replaying_a_npy_mask_without_p_asks_for_p(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    mask = tmp_path / "m.npy"
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "-p", "0.3", "--seed",
                           "4", "--mask-out", str(mask))
    assert code == 0, err
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "z.npy"), "--mask-in", str(mask))
    assert (code, one_error_line(err)) == (
        2, f"Error: {mask} records no p (only .safetensors masks do); give -p, the p it was "
           "made with")
    assert not (tmp_path / "z.npy").exists()


# --- 8, 9. outputs the run cannot write as named --------------------------------------------


@pytest.mark.parametrize("args,named", [
    (["-o", "out.safetensors"], "out.safetensors"),
    (["-o", "y.npy", "--mask-out", "m.txt"], "m.txt"),
    (["-o", "y.npy", "--suffix", "-aug"], "--suffix"),
], ids=["npy-as-safetensors", "mask-out-txt", "suffix-with-o"])
def test_output_names_that_cannot_be_honoured_are_usage_errors(x_npy, tmp_path, monkeypatch,
                                                               run_cli, args, named):
    path, _ = x_npy
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("apply", path, "--seed", "1", *args)
    line = one_error_line(err)
    assert code == 2 and named in line, line
    assert os.listdir(tmp_path) == ["x.npy"]  # nothing written


# --- 12. each interface's own option names in messages ------------------------------------


def test_python_int_tensor_message_names_the_keyword():
    from dropout_core import dropout

    with pytest.raises(DropoutError) as e:
        dropout(np.ones(4, np.int32), 0.5, seed=1)
    assert "scale=False" in str(e.value) and "--" not in str(e.value)


def test_cli_int_tensor_message_names_the_flag(tmp_path, run_cli):
    path = write_npy(tmp_path / "ids.npy", np.arange(4, dtype=np.int32))
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "1")
    line = one_error_line(err)
    assert code == 1 and "--no-scale" in line and "scale=False" not in line


def test_cli_torch_exact_count_message_names_the_flags(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "1",
                           "--rng", "torch", "--exact-count")
    assert (code, one_error_line(err)) == (
        2, "Error: --rng torch reproduces torch's own functions; --exact-count and "
           "--share-axes have no torch counterpart")


def test_python_torch_exact_count_message_names_the_keywords():
    from dropout_core import DropoutParams, UsageError

    with pytest.raises(UsageError) as e:
        DropoutParams(rng="torch", exact_count=True)
    assert "rng='torch'" in str(e.value) and "exact_count" in str(e.value)
    assert "--" not in str(e.value)


# --- 14. an unreachable Dask scheduler ------------------------------------------------------


@pytest.mark.dask
def test_unreachable_dask_scheduler_creates_no_out_dir(x_npy, tmp_path, monkeypatch, run_cli):
    pytest.importorskip("distributed")
    monkeypatch.setenv("TENSOR_DROPOUT_DASK_TIMEOUT", "2")
    path, _ = x_npy
    new = tmp_path / "new"
    code, _, err = run_cli("apply", path, "--out-dir", str(new), "--seed", "1",
                           "--dask-scheduler", "tcp://127.0.0.1:1")
    line = one_error_line(err)
    assert code == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in line, line
    assert not new.exists()


# --- 15. seeds and p at their edges -----------------------------------------------------------


def test_a_seed_of_5000_digits_with_leading_zeros_is_accepted(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    significant = "9" + "0123456789" * 429 + "876543210"  # 4300 digits, Python's limit
    text = "0" * 700 + significant
    assert len(text) == 5000
    code, out, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", text,
                             "--stats", "-", "-q")
    assert code == 0, err
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        assert stats_of(out)["seed"] == int(text)
    finally:
        sys.set_int_max_str_digits(limit)


def test_a_seed_of_4301_significant_digits_is_refused(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed",
                           "1" + "0" * 4300)
    assert (code, one_error_line(err)) == (
        2, "Error: Invalid value for '-s' / '--seed': seed has 4301 digits; at most 4300 are "
           "accepted")
    assert not (tmp_path / "y.npy").exists()


def test_p_minus_zero_is_reported_as_zero(x_npy, tmp_path, run_cli):
    path, x = x_npy
    code, out, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "-p", "-0.0",
                             "--stats", "-", "-q")
    assert code == 0, err
    text = out.decode()
    assert '"p": 0.0,' in text and "-0.0" not in text
    assert np.load(tmp_path / "y.npy").tobytes() == x.tobytes()


def test_summary_prints_effective_p_to_12_significant_digits(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "-p", "0.3",
                           "--seed", "7")
    assert code == 0, err
    assert err.splitlines()[-1] == "seed 7, effective p 0.300000000047"


# --- 17. the order of the totals ---------------------------------------------------------------


def test_file_totals_keys_lead_the_run_totals_in_the_same_order(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, out, err = run_cli("apply", path, "-o", str(tmp_path / "y.npy"), "--seed", "1",
                             "--stats", "-", "-q")
    assert code == 0, err
    doc = stats_of(out)
    file_keys, run_keys = list(doc["files"][0]["totals"]), list(doc["totals"])
    assert run_keys[:len(file_keys)] == file_keys
    assert run_keys[len(file_keys):] == ["files", "failed"]


# --- --key: the file part of the stream key ------------------------------------------------


def test_key_gives_a_renamed_copy_the_originals_masks(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    (tmp_path / "tmpdir").mkdir()
    copy = shutil.copy(path, tmp_path / "tmpdir" / "golden-input-1234.npy")
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "want.npy"), "--seed", "3")
    assert code == 0, err
    code, out, err = run_cli("apply", str(copy), "-o", str(tmp_path / "got.npy"), "--seed", "3",
                             "--key", "x.npy", "--stats", "-", "-q")
    assert code == 0, err
    assert (tmp_path / "got.npy").read_bytes() == (tmp_path / "want.npy").read_bytes()
    assert stats_of(out)["files"][0]["key"] == "x.npy"


def test_key_gives_stdin_the_files_masks(x_npy, tmp_path, run_cli):
    path, _ = x_npy
    code, _, err = run_cli("apply", path, "-o", str(tmp_path / "want.npy"), "--seed", "3")
    assert code == 0, err
    code, out, err = run_cli("apply", "-", "-o", "-", "--seed", "3", "--key", "x.npy", "-q",
                             input=Path(path).read_bytes())
    assert code == 0, err
    assert out == (tmp_path / "want.npy").read_bytes()


# --- output_digest --------------------------------------------------------------------------


def test_every_tensor_has_an_output_digest_that_inspect_repeats(checkpoint, tmp_path, run_cli):
    path, _ = checkpoint
    out = tmp_path / "out.safetensors"
    code, stats, err = run_cli("apply", path, "-o", str(out), "--seed", "1", "--exclude",
                               "*ids", "--stats", "-", "-q")
    assert code == 0, err
    recorded = {t["name"]: t["output_digest"] for t in stats_of(stats)["files"][0]["tensors"]}
    assert set(recorded) == {"embeddings.position_ids", "encoder.weight"}
    assert all(d.startswith("sha256:") for d in recorded.values())
    code, listing, err = run_cli("inspect", "--digest", "--json", str(out))
    assert code == 0, err
    [doc] = json.loads(listing)
    assert {t["name"]: t["digest"] for t in doc["tensors"]} == recorded


def test_one_array_has_one_digest_in_every_container(tmp_path, run_cli):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    files = [write_npy(tmp_path / "c.npy", a), write_npy(tmp_path / "f.npy", a, fortran=True),
             write_safetensors(tmp_path / "s.safetensors", {"a": a})]
    code, listing, err = run_cli("inspect", "--digest", "--json", *files)
    assert code == 0, err
    digests = [doc["tensors"][0]["digest"] for doc in json.loads(listing)]
    assert len(digests) == 3 and len(set(digests)) == 1 and digests[0].startswith("sha256:")


# --- verify ------------------------------------------------------------------------------------


def test_verify_confirms_a_run_then_names_a_changed_tensor(tmp_path, run_cli):
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    inputs = [write_safetensors(tmp_path / "in" / name, {
        "w": rng.standard_normal((8, 8)).astype(np.float32),
        "b": rng.standard_normal(8).astype(np.float32)}) for name in ("a.safetensors",
                                                                      "b.safetensors")]
    out, stats = tmp_path / "out", str(tmp_path / "s.json")
    code, _, err = run_cli("apply", *inputs, "--out-dir", str(out), "--seed", "2", "--stats",
                           stats, "-q")
    assert code == 0, err
    code, listing, err = run_cli("verify", stats)
    assert (code, err) == (0, "")
    assert listing.decode().splitlines() == [
        f"ok {inputs[0]} -> {out / 'a.safetensors'}", f"ok {inputs[1]} -> {out / 'b.safetensors'}"]

    changed = load_tensors(str(out / "b.safetensors"))
    changed["w"][3, 3] += 1
    write_safetensors(out / "b.safetensors", changed)
    code, listing, _ = run_cli("verify", stats)
    lines = listing.decode().splitlines()
    assert code == 1 and lines[0] == f"ok {inputs[0]} -> {out / 'a.safetensors'}"
    assert lines[1].startswith(f"DIFFERS {inputs[1]} -> {out / 'b.safetensors'}: tensor w: ")
    assert len(lines) == 2


# --- --keep-going -------------------------------------------------------------------------------


@pytest.fixture
def one_bad_of_three(tmp_path):
    (tmp_path / "in").mkdir()
    paths = [write_npy(tmp_path / "in" / n, np.ones((8, 8), np.float32))
             for n in ("a.npy", "b.npy", "c.npy")]
    data = Path(paths[1]).read_bytes()
    Path(paths[1]).write_bytes(data[:-5])  # truncated
    return paths


def test_keep_going_writes_the_good_files_and_lists_the_bad_one(one_bad_of_three, tmp_path,
                                                                run_cli):
    out, stats = tmp_path / "out", tmp_path / "s.json"
    code, _, err = run_cli("apply", *one_bad_of_three, "--out-dir", str(out), "--seed", "1",
                           "--keep-going", "--stats", str(stats), "-q")
    assert code == 1
    line = one_error_line(err)
    assert one_bad_of_three[1] in line and "truncated" in line
    assert sorted(os.listdir(out)) == ["a.npy", "c.npy"]
    files = {f["input"]: f for f in json.loads(stats.read_text())["files"]}
    assert [files[p]["status"] for p in one_bad_of_three] == ["done", "failed", "done"]
    assert "truncated" in files[one_bad_of_three[1]]["error"]


def test_without_keep_going_a_bad_file_stops_the_run_before_any_output(one_bad_of_three,
                                                                       tmp_path, run_cli):
    out = tmp_path / "out"
    code, _, err = run_cli("apply", *one_bad_of_three, "--out-dir", str(out), "--seed", "1")
    line = one_error_line(err)
    assert code == 1 and one_bad_of_three[1] in line and "truncated" in line
    assert not out.exists()


# --- --dry-run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target,written", [(["-o", "y.npy"], "y.npy"),
                                            (["--out-dir", "new"], "new/x.npy")],
                         ids=["output", "out-dir"])
def test_dry_run_says_what_it_would_write_and_writes_nothing(x_npy, tmp_path, monkeypatch,
                                                             run_cli, target, written):
    path, _ = x_npy
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("apply", path, *target, "--seed", "1", "--dry-run")
    assert code == 0, err
    lines = out.decode().splitlines()
    assert lines[0].startswith(f"would write {written} from {path} ")
    assert lines[-1] == "dry run: nothing was written"
    assert os.listdir(tmp_path) == ["x.npy"]  # no output, no --out-dir directory
