"""Sharded safetensors checkpoints: an index.json input stands for every shard it names."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import write_npy, write_safetensors

from dropout_core import DropoutError, DropoutParams, apply_file, dropout, load_tensors, sharded
from dropout_core.batch import apply_files

INDEX = "model.safetensors.index.json"
META = {"total_size": 580, "format": "pt"}


@pytest.fixture
def tensors():
    rng = np.random.default_rng(5)
    out = {f"layers.{i}.weight": rng.standard_normal((6, 5)).astype(np.float32)
           for i in range(4)}
    out["embed.weight"] = rng.standard_normal((7, 5)).astype(np.float16)
    return out


def make_checkpoint(folder, tensors: dict, groups: list[list[str]], metadata=META) -> str:
    """Write ``groups`` as shards model-0000k-of-0000n.safetensors plus their index."""
    os.makedirs(folder, exist_ok=True)
    weight_map = {}
    for k, names in enumerate(groups, 1):
        shard = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(os.path.join(folder, shard), {n: tensors[n] for n in names},
                          {"shard": str(k)})
        weight_map.update((n, shard) for n in names)
    doc = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    path = os.path.join(folder, INDEX)
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def two_shards(folder, tensors) -> str:
    names = sorted(tensors)
    return make_checkpoint(folder, tensors, [names[:2], names[2:]])


def snapshot(folder) -> dict[str, bytes]:
    out = {}
    for n in sorted(os.listdir(folder)):
        with open(os.path.join(folder, n), "rb") as f:
            out[n] = f.read()
    return out


def checkpoint_tensors(index: str) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, read shard by shard through its index."""
    folder = os.path.dirname(index)
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for shard in shards:
        out.update(load_tensors(os.path.join(folder, shard)))
    return out


def test_out_dir_writes_every_shard_and_the_index(tmp_path, tensors, run_cli):
    index = two_shards(tmp_path / "ckpt", tensors)
    out = tmp_path / "ckpt-aug"
    code, _, err = run_cli("apply", index, "--out-dir", str(out), "-p", "0.3", "--seed", "4",
                           "--stats", str(tmp_path / "s.json"))
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["model-00001-of-00002.safetensors",
                                       "model-00002-of-00002.safetensors", INDEX]
    with open(index) as f:
        doc = json.load(f)
    assert (out / INDEX).read_text() == json.dumps(doc, indent=2) + "\n"
    assert json.loads((out / INDEX).read_text())["metadata"] == META
    got = checkpoint_tensors(str(out / INDEX))
    for name, x in tensors.items():
        assert np.array_equal(got[name], dropout(x, 0.3, seed=4, file=INDEX, tensor=name))
    stats = json.loads((tmp_path / "s.json").read_text())
    assert [(f["input"], f["output"], f["key"]) for f in stats["files"]] == [
        (os.path.join(tmp_path, "ckpt", s), os.path.join(out, s), INDEX)
        for s in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")]
    assert stats["indexes"] == [{"input": index, "output": str(out / INDEX), "key": INDEX,
                                 "shards": ["model-00001-of-00002.safetensors",
                                            "model-00002-of-00002.safetensors"]}]
    assert stats["files"][0]["metadata"] == {"shard": "1"}  # each shard's own header kept


def test_inplace_replaces_every_shard_and_leaves_the_index(tmp_path, tensors, run_cli):
    index = two_shards(tmp_path / "ckpt", tensors)
    before = snapshot(tmp_path / "ckpt")
    code, _, err = run_cli("apply", index, "--inplace", "-p", "0.3", "--seed", "4", "-q")
    assert code == 0, err
    after = snapshot(tmp_path / "ckpt")
    assert sorted(after) == sorted(before)  # no temporary file left
    assert after[INDEX] == before[INDEX]
    assert all(after[s] != before[s] for s in after if s != INDEX)
    got = checkpoint_tensors(index)
    for name, x in tensors.items():
        assert np.array_equal(got[name], dropout(x, 0.3, seed=4, file=INDEX, tensor=name))


def test_python_api_takes_the_index(tmp_path, tensors):
    index = two_shards(tmp_path / "ckpt", tensors)
    doc = apply_files([index], params=DropoutParams(p=0.2), seed=9, out_dir=str(tmp_path / "o"))
    assert doc["totals"]["files"] == 2
    assert doc["indexes"][0]["output"] == str(tmp_path / "o" / INDEX)
    got = checkpoint_tensors(str(tmp_path / "o" / INDEX))
    for name, x in tensors.items():
        assert np.array_equal(got[name], dropout(x, 0.2, seed=9, file=INDEX, tensor=name))


def test_masks_do_not_depend_on_the_sharding(tmp_path, tensors, run_cli):
    names = sorted(tensors)
    a = make_checkpoint(tmp_path / "a", tensors, [names[:1], names[1:3], names[3:]])
    b = make_checkpoint(tmp_path / "b", tensors, [names[::2], names[1::2]])
    for index, out, jobs in ((a, "a-out", "1"), (b, "b-out", "2")):
        code, _, err = run_cli("apply", index, "--out-dir", str(tmp_path / out), "-p", "0.4",
                               "--seed", "11", "-j", jobs, "-q")
        assert code == 0, err
    got_a = checkpoint_tensors(str(tmp_path / "a-out" / INDEX))
    got_b = checkpoint_tensors(str(tmp_path / "b-out" / INDEX))
    assert sorted(got_a) == sorted(got_b) == names
    for name, x in tensors.items():
        assert np.array_equal(got_a[name], got_b[name])
        assert np.array_equal(got_a[name], dropout(x, 0.4, seed=11, file=INDEX, tensor=name))


def test_readme_command_runs_from_the_checkpoint_s_parent(tmp_path, tensors, run_cli,
                                                          monkeypatch):
    two_shards(tmp_path / "ckpt", tensors)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("apply", f"ckpt/{INDEX}", "--out-dir", "ckpt-aug", "-p", "0.05",
                           "--seed", "1")
    assert code == 0, err
    assert "ckpt/model-00001-of-00002.safetensors -> ckpt-aug/model-00001-of-00002" in err
    assert sorted(checkpoint_tensors(f"ckpt-aug/{INDEX}")) == sorted(tensors)


def _edit_index(index, change):
    with open(index) as f:
        doc = json.load(f)
    change(doc)
    with open(index, "w") as f:
        json.dump(doc, f)


def _write_text(text):
    def edit(index, folder):
        with open(index, "w") as f:
            f.write(text)
    return edit


def _remap(tensor, shard):
    def edit(index, folder):
        _edit_index(index, lambda d: d["weight_map"].__setitem__(tensor, shard))
    return edit


def _drop_from_map(tensor):
    def edit(index, folder):
        _edit_index(index, lambda d: d["weight_map"].pop(tensor))
    return edit


def _missing_shard(index, folder):
    os.remove(os.path.join(folder, "model-00002-of-00002.safetensors"))


def _npy_shard(index, folder):
    write_npy(os.path.join(folder, "model-00002-of-00002.safetensors"), np.ones(3, np.float32))


def _garbage_shard(index, folder):
    with open(os.path.join(folder, "model-00002-of-00002.safetensors"), "wb") as f:
        f.write(b"not a tensor file at all")


def _hostile(name):
    def edit(index, folder):
        # the file a path would reach exists and is valid: the name alone is refused
        write_safetensors(os.path.join(folder, "..", "x.safetensors"),
                          {"layers.0.weight": np.ones(2, np.float32)})
        _remap("layers.0.weight", name)(index, folder)
    return edit


@pytest.mark.parametrize("breakage,message", [
    (_missing_shard, "shard model-00002-of-00002.safetensors is missing"),
    (_remap("layers.0.weight", "model-00002-of-00002.safetensors"),
     "shard model-00001-of-00002.safetensors holds tensor layers.0.weight, which the index "
     "maps to shard model-00002-of-00002.safetensors"),
    (_drop_from_map("layers.3.weight"),
     "shard model-00002-of-00002.safetensors holds tensor layers.3.weight, which the index "
     "does not map"),
    (lambda index, folder: _edit_index(
        index, lambda d: d["weight_map"].__setitem__("extra", "model-00001-of-00002.safetensors")),
     "tensor extra is mapped to shard model-00001-of-00002.safetensors, which does not hold it"),
    (_write_text("{\"weight_map\": "), "not valid JSON"),
    (_write_text("[1, 2]"), "not a JSON object"),
    (_write_text("{\"metadata\": {}}"), "has no \"weight_map\" object"),
    (_write_text("{\"weight_map\": [\"a\"]}"), "has no \"weight_map\" object"),
    (_write_text("{\"weight_map\": {}}"), "the weight_map is empty"),
    (_write_text("{\"weight_map\": {\"a\": 3}}"),
     "the weight_map maps tensor a to 3, not to a shard file name"),
    (_write_text("{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"y.safetensors\"}}"),
     "duplicate key a in the index"),
    (_write_text("{\"metadata\": {\"n\": NaN}, \"weight_map\": {}}"), "NaN is not JSON"),
    (_write_text("\xff"), "not valid JSON"),
    (_npy_shard, "shard model-00002-of-00002.safetensors is not a safetensors file"),
    (_garbage_shard, "shard model-00002-of-00002.safetensors is not a safetensors file"),
    (_hostile("../x.safetensors"), "shard name ../x.safetensors is not a plain file name"),
    (_hostile("/etc/x.safetensors"), "shard name /etc/x.safetensors is not a plain file name"),
    (_hostile("sub/x.safetensors"), "shard name sub/x.safetensors is not a plain file name"),
    (_hostile(".."), "shard name .. is not a plain file name"),
], ids=["missing-shard", "mapped-elsewhere", "unmapped-tensor", "tensor-not-in-shard",
        "bad-json", "not-object", "no-weight-map", "weight-map-list", "empty-weight-map",
        "not-string", "duplicate-key", "nan", "not-utf8", "npy-shard", "garbage-shard",
        "dotdot", "absolute", "separator", "bare-dotdot"])
@pytest.mark.parametrize("mode", ["--out-dir", "--inplace"])
def test_a_bad_checkpoint_is_refused_before_anything_is_written(tmp_path, tensors, run_cli,
                                                                 breakage, message, mode):
    folder = str(tmp_path / "ckpt")
    index = two_shards(folder, tensors)
    breakage(index, folder)
    before = snapshot(folder)
    out = tmp_path / "out"
    args = ["--out-dir", str(out)] if mode == "--out-dir" else ["--inplace"]
    code, _, err = run_cli("apply", index, *args, "-p", "0.5", "--seed", "1")
    assert code == 1
    assert err.startswith(f"Error: {index}: {message}"), err
    assert err.count("\n") == 1
    assert not out.exists()
    assert snapshot(folder) == before


def test_an_index_over_the_size_limit_is_refused_unread(tmp_path, tensors, run_cli,
                                                        monkeypatch):
    index = two_shards(tmp_path / "ckpt", tensors)
    monkeypatch.setattr(sharded, "MAX_INDEX", 100)
    size = os.path.getsize(index)
    code, _, err = run_cli("apply", index, "--out-dir", str(tmp_path / "o"), "--seed", "1")
    assert code == 1
    assert err == f"Error: {index}: index of {size} bytes exceeds the limit of 100\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", [
    (["-o", "x.safetensors"], "a sharded checkpoint is written as shards plus an index; use "
                              "--out-dir or --inplace, not -o/--output"),
    (["--out-dir", "o", "--repeat", "2"], "--repeat is not supported for a sharded checkpoint"),
    (["--out-dir", "o", "--suffix", "-aug"], "--suffix would rename the shards"),
    (["--out-dir", "o", "--rng", "torch"], "--rng torch draws one serial stream per file"),
], ids=["output", "repeat", "suffix", "torch"])
def test_options_a_checkpoint_cannot_take_exit_2(tmp_path, tensors, run_cli, monkeypatch,
                                                 args, message):
    index = two_shards(tmp_path / "ckpt", tensors)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("apply", index, *args, "--seed", "1")
    assert code == 2
    assert err.startswith(f"Error: {index}: {message}"), err
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


@pytest.mark.parametrize("kwargs,message", [
    ({"output": "x.safetensors"}, "use out_dir or inplace=True, not output"),
    ({"out_dir": "o", "repeat": 2}, "repeat is not supported for a sharded checkpoint"),
    ({"out_dir": "o", "suffix": "-aug"}, "suffix would rename the shards"),
], ids=["output", "repeat", "suffix"])
def test_the_python_api_names_its_own_parameters(tmp_path, tensors, monkeypatch, kwargs,
                                                 message):
    index = two_shards(tmp_path / "ckpt", tensors)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DropoutError) as e:
        apply_files([index], params=DropoutParams(p=0.5), seed=1, **kwargs)
    assert message in str(e.value) and "--" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_out_dir_that_is_the_checkpoint_s_own_folder_is_refused(tmp_path, tensors, run_cli):
    folder = tmp_path / "ckpt"
    index = two_shards(folder, tensors)
    before = snapshot(folder)
    code, _, err = run_cli("apply", index, "--out-dir", str(folder), "--force", "--seed", "1")
    assert code == 1 and "output is the input file; use --inplace" in err
    assert snapshot(folder) == before


def test_an_existing_output_index_needs_force(tmp_path, tensors, run_cli):
    index = two_shards(tmp_path / "ckpt", tensors)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / INDEX).write_text("old")
    code, _, err = run_cli("apply", index, "--out-dir", str(tmp_path / "o"), "--seed", "1")
    assert code == 1 and err == f"Error: {tmp_path / 'o' / INDEX}: output exists; use --force " \
                                "to replace it\n"
    assert os.listdir(tmp_path / "o") == [INDEX]
    code, _, err = run_cli("apply", index, "--out-dir", str(tmp_path / "o"), "--seed", "1",
                           "--force", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / INDEX).read_text())["metadata"] == META


def test_read_index_names_the_problem(tmp_path):
    with pytest.raises(DropoutError, match="cannot read"):
        sharded.read_index(str(tmp_path / INDEX))


def test_an_old_shard_finished_alone_with_the_index_key_matches_the_run(tmp_path, tensors,
                                                                        run_cli):
    # README, crashes: after an interrupted --inplace run, an old shard is finished alone
    index = two_shards(tmp_path / "ckpt", tensors)
    code, _, err = run_cli("apply", index, "--out-dir", str(tmp_path / "o"), "-p", "0.3",
                           "--seed", "4", "-q")
    assert code == 0, err
    shard = str(tmp_path / "ckpt" / "model-00002-of-00002.safetensors")
    apply_file(shard, inplace=True, key=INDEX, p=0.3, seed=4)
    with open(shard, "rb") as a, open(tmp_path / "o" / os.path.basename(shard), "rb") as b:
        assert a.read() == b.read()


def test_stats_that_would_replace_a_shard_is_refused(tmp_path, tensors, run_cli):
    folder = tmp_path / "ckpt"
    index = two_shards(folder, tensors)
    before = snapshot(folder)
    shard = str(folder / "model-00001-of-00002.safetensors")
    code, _, err = run_cli("apply", index, "--out-dir", str(tmp_path / "o"), "--seed", "1",
                           "--stats", shard, "--force")
    assert code == 2 and err == f"Error: {shard}: --stats names an input file; it would be " \
                                "replaced\n"
    assert snapshot(folder) == before and not (tmp_path / "o").exists()


def test_inspect_describes_a_checkpoint_through_its_index(tmp_path, tensors, run_cli):
    from dropout_core import inspect_file

    index = two_shards(tmp_path / "ckpt", tensors)
    doc = inspect_file(index, digest=True)
    assert doc["format"] == "safetensors-index"
    with open(index) as f:
        assert doc["shards"] == sorted(set(json.load(f)["weight_map"].values()))
    assert doc["size"] == sum(os.path.getsize(tmp_path / "ckpt" / s) for s in doc["shards"])
    # every tensor once, with the same description the shard itself gives
    by_shard = {s: inspect_file(str(tmp_path / "ckpt" / s), digest=True) for s in doc["shards"]}
    expected = [dict(t, shard=s) for s in doc["shards"] for t in by_shard[s]["tensors"]]
    assert doc["tensors"] == expected
    assert sorted(t["name"] for t in doc["tensors"]) == sorted(tensors)
    code, out, err = run_cli("inspect", index)
    assert code == 0, err
    out = out.decode()
    assert f"safetensors-index, {doc['size']} bytes in 2 shards" in out
    for t in doc["tensors"]:
        assert any(line.split()[0] == t["name"] and line.endswith(f"in {t['shard']}")
                   for line in out.splitlines())


def test_inspect_of_an_index_with_a_missing_shard_is_one_error(tmp_path, tensors, run_cli):
    index = two_shards(tmp_path / "ckpt", tensors)
    shard = sorted(os.listdir(tmp_path / "ckpt"))[0]
    os.unlink(tmp_path / "ckpt" / shard)
    code, out, err = run_cli("inspect", index)
    assert code == 1 and out == b""
    assert err.count("\n") == 1 and err.startswith("Error: ") and "is missing" in err
