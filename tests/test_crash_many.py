"""Crash safety of a many-file run, whose durability is paid once per group of files.

A real process writes 300 small files with --out-dir (and with -j 2) and is
killed with SIGKILL at random moments (seeded).  Afterwards every output is
either absent or complete and equal to the uninterrupted run's file; nothing
else is in the directory but the recognisable hidden temporary files.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from corpus import TOOL

FILES = 300
ARGS = ["-p", "0.2", "--seed", "4", "-q"]
TEMP = re.compile(r"^\..+\.tensor-dropout-tmp-[0-9a-f]{8}$")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    src = d / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(FILES):
        np.save(src / f"s{i:03d}.npy", rng.standard_normal((3, 32, 32)).astype(np.float32))
    paths = sorted(str(p) for p in src.iterdir())
    ref = d / "ref"
    t0 = time.perf_counter()
    subprocess.run([*TOOL, "apply", *paths, "--out-dir", str(ref), *ARGS], check=True)
    seconds = time.perf_counter() - t0
    want = {p.name: p.read_bytes() for p in ref.iterdir()}
    assert len(want) == FILES
    return {"paths": paths, "want": want, "seconds": seconds, "dir": d}


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_killed_many_file_run_leaves_each_output_absent_or_complete(inputs, jobs):
    rnd = random.Random(int(jobs))
    seen_partial_runs = 0
    for k in range(10):
        out = inputs["dir"] / f"out-{jobs}-{k}"
        proc = subprocess.Popen([*TOOL, "apply", *inputs["paths"], "--out-dir", str(out), "-j",
                                 jobs, *ARGS], stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.05, 1.2) * max(inputs["seconds"], 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        names = [p.name for p in out.iterdir()] if out.exists() else []
        done = [n for n in names if not n.startswith(".")]
        for name in names:
            if name.startswith("."):
                assert TEMP.match(name), name
            else:
                assert (out / name).read_bytes() == inputs["want"][name], name
        # interrupted while writing: temporaries waiting for their group's commit, or some
        # outputs but not all
        seen_partial_runs += len(done) < len(names) or 0 < len(done) < FILES
        if jobs == "2":  # a killed parent can leave its workers: let them finish or die
            time.sleep(0.2)
    # the kills must have landed in the middle of some runs, or this proved nothing
    assert seen_partial_runs >= 1
