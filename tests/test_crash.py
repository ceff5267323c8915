"""Crash safety: SIGKILL at any moment never leaves a half-written file.

A real process rewrites an 80 MB file (--inplace, and -o over an existing
file with --force) and is killed with SIGKILL at a random moment: half of the
kills at a random time after start, half at a random moment after its
temporary file appeared (so every machine gets kills in the middle of the
write, however fast it is).  Afterwards the target must be byte for byte
either what it was before or the complete result, and any leftover file must
be the recognisable hidden temporary ``.NAME.tensor-dropout-tmp-XXXXXXXX``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from corpus import TOOL, st_file, valid_npy

ITERATIONS = 30
MB = 1 << 20


def _big_safetensors() -> bytes:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(16 * MB, dtype=np.float32)  # 64 MB
    b = rng.standard_normal(8 * MB, dtype=np.float32).astype("<f2")  # 16 MB
    return st_file([("layer.0/weight", "F32", [16, MB], a.tobytes()),
                    ("layer.1/bias", "F16", [8 * MB], b.tobytes()),
                    ("small", "F32", [3, 5], np.arange(15, dtype="<f4").tobytes())],
                   metadata={"format": "pt"})


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict:
    """The original file, and the result of an uninterrupted run, made once."""
    d = tmp_path_factory.mktemp("crash")
    orig = _big_safetensors()
    src = d / "model.safetensors"
    src.write_bytes(orig)
    ref = d / "reference.safetensors"
    subprocess.run([*TOOL, "apply", str(src), "-o", str(ref), *ARGS], check=True)
    result = ref.read_bytes()
    assert result != orig and len(result) == len(orig)
    assert src.read_bytes() == orig
    # how long an uninterrupted --inplace run takes here, fresh bytes and all
    t0 = time.perf_counter()
    subprocess.run([*TOOL, "apply", str(src), "--inplace", *ARGS], check=True)
    seconds = time.perf_counter() - t0
    assert src.read_bytes() == result, "--inplace and -o give different bytes"
    return {"orig": orig, "result": result, "seconds": seconds}


ARGS = ["-p", "0.3", "--seed", "5", "-q"]


def _temps(d: Path, target: str) -> list[str]:
    return [n for n in os.listdir(d) if ".tensor-dropout-tmp-" in n]


def _kill_at_random(cmd: list[str], d: Path, target: str, rng: random.Random,
                    seconds: float) -> str:
    """Start the tool, SIGKILL it at a random moment; say which kind of moment."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        moment = rng.choices(["at a random time", "while writing", "just after the rename"],
                             weights=[4, 4, 2])[0]
        if moment == "at a random time":
            time.sleep(rng.uniform(0, seconds * 1.3))
        else:
            deadline = time.monotonic() + 30
            while not _temps(d, target) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0002)
            if moment == "while writing":
                time.sleep(rng.uniform(0, seconds * 0.5))
            else:
                while _temps(d, target) and proc.poll() is None:
                    time.sleep(0.0002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return moment


def _crash_loop(tmp_path: Path, big: dict, target: Path, cmd: list[str], before: bytes,
                rng: random.Random) -> dict:
    name = target.name
    temp_re = re.compile(rf"^\.{re.escape(name)}\.tensor-dropout-tmp-[0-9a-f]{{8}}$")
    seen = {"original": 0, "result": 0, "leftover temp files": 0}
    moments = {}
    for i in range(ITERATIONS):
        target.write_bytes(before)
        moment = _kill_at_random(cmd, tmp_path, name, rng, big["seconds"])
        now = target.read_bytes()
        state = "original" if now == before else "result" if now == big["result"] else None
        assert state, (f"iteration {i}: killed {moment}, the target is neither the "
                       f"original nor the result ({len(now)} bytes)")
        seen[state] += 1
        moments[moment] = moments.get(moment, 0) + 1
        for leftover in _temps(tmp_path, name):
            assert temp_re.match(leftover), f"unrecognisable leftover {leftover!r}"
            seen["leftover temp files"] += 1
            os.unlink(tmp_path / leftover)
        assert set(os.listdir(tmp_path)) <= {"model.safetensors", "out.safetensors"}
    print(f"{name}: {seen}, kills {moments}")
    return seen


def test_sigkill_during_inplace_rewrite_never_corrupts(tmp_path: Path, big: dict):
    target = tmp_path / "model.safetensors"
    cmd = [*TOOL, "apply", str(target), "--inplace", *ARGS]
    seen = _crash_loop(tmp_path, big, target, cmd, big["orig"], random.Random(20261126))
    # the loop must have hit the interesting moments, or it proved nothing
    assert min(seen.values()) >= 1, f"the kills missed a phase: {seen}"


def test_sigkill_during_forced_overwrite_never_corrupts(tmp_path: Path, big: dict):
    src = tmp_path / "model.safetensors"
    src.write_bytes(big["orig"])
    target = tmp_path / "out.safetensors"
    old = valid_npy()  # whatever was there before must survive intact, or be replaced whole
    cmd = [*TOOL, "apply", str(src), "-o", str(target), "--force", *ARGS]
    seen = _crash_loop(tmp_path, big, target, cmd, old, random.Random(7))
    assert min(seen.values()) >= 1, f"the kills missed a phase: {seen}"
    assert src.read_bytes() == big["orig"], "the input changed"


CATCHABLE = {"SIGINT": (signal.SIGINT, "Error: interrupted", 130),
             "SIGTERM": (signal.SIGTERM, "Error: terminated by SIGTERM", 143),
             "SIGHUP": (signal.SIGHUP, "Error: terminated by SIGHUP", 129)}


@pytest.mark.parametrize(("signum", "line", "code"), CATCHABLE.values(), ids=CATCHABLE.keys())
def test_catchable_signal_mid_write_cleans_up(tmp_path: Path, big: dict, signum, line, code):
    # Ctrl-C, kill and a closed terminal unwind like an error: the temporary file goes
    target = tmp_path / "model.safetensors"
    rng = random.Random(signum)
    for i in range(3):
        target.write_bytes(big["orig"])
        with subprocess.Popen([*TOOL, "apply", str(target), "--inplace", *ARGS],
                              stderr=subprocess.PIPE) as proc:
            deadline = time.monotonic() + 30
            while not _temps(tmp_path, target.name) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.0002)
            time.sleep(rng.uniform(0, big["seconds"] * 0.3))
            proc.send_signal(signum)
            err = proc.stderr.read().decode()
            proc.wait()
        now = target.read_bytes()
        assert now in (big["orig"], big["result"]), f"iteration {i}: a partial file"
        assert _temps(tmp_path, target.name) == [], f"iteration {i}: a temporary file was left"
        if now == big["orig"]:  # stopped in time: the one clean line
            assert (proc.returncode, err) == (code, line + "\n"), (proc.returncode, err)
        else:  # finished first; the signal may still land while the interpreter shuts down
            assert proc.returncode in (0, code, -signum), (proc.returncode, err)
            assert err in ("", line + "\n"), err


def test_sigkill_while_reading_stdin_leaves_nothing_in_tmpdir(tmp_path: Path, big: dict):
    # stdin is copied to an anonymous temporary file: not even SIGKILL can leave it behind
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    src = tmp_path / "model.safetensors"
    src.write_bytes(big["orig"])
    rng = random.Random(3)
    for _ in range(3):
        with open(src, "rb") as stdin, \
                subprocess.Popen([*TOOL, "apply", "-", "-o", str(tmp_path / "o.safetensors"),
                                  "--force", *ARGS], stdin=stdin, stderr=subprocess.DEVNULL,
                                 env={**os.environ, "TMPDIR": str(tmpdir)}) as proc:
            time.sleep(rng.uniform(0.2, big["seconds"]))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert os.listdir(tmpdir) == []
