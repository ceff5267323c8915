"""Many files: `--dask-scheduler` on a 2-worker LocalCluster against `--jobs 2`, side by side.

    python benchmarks/bench_dask.py [--files 200] [--mib 4] [--rounds 5]

Writes FILES float32 .npy files of MIB MiB each into a temporary directory,
starts a dask.distributed LocalCluster (2 worker processes, 1 thread each) on
this machine, and times the same command both ways, alternating, ROUNDS times:

    tensor-dropout apply <files> --out-dir OUT -p 0.1 --seed 1 -q --jobs 2
    tensor-dropout apply <files> --out-dir OUT -p 0.1 --seed 1 -q --dask-scheduler ADDR

A third line uses a second LocalCluster whose workers do not get distributed's
default MALLOC_TRIM_THRESHOLD_=65536: setting it turns off glibc's adaptive mmap
threshold, so every chunk buffer is a fresh mmap and its pages fault in again.

Each timing is the whole command (process start, checks, connecting, all
files read and written).  Prints the medians, the throughput in MiB/s of
input, and the ratio, and checks that both runs wrote the same bytes.
Needs only public tools: numpy, dask[array], distributed, and the project.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_files(d: str, count: int, mib: int) -> list[str]:
    n = mib * (1 << 20) // 4
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n).astype(np.float32)
    paths = []
    for k in range(count):
        p = os.path.join(d, f"x{k:04d}.npy")
        np.save(p, np.roll(base, k))
        paths.append(p)
    return paths


def run(cmd: list[str], out: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(cmd + ["--out-dir", out], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import distributed

    exe = [sys.executable, "-m", "cli.main", "apply"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    import dask

    def local_cluster():
        return distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                        dashboard_address=":0", silence_logs=40)

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        untrimmed = local_cluster()
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as d, local_cluster() as cluster, \
            untrimmed:
        src = os.path.join(d, "in")
        os.mkdir(src)
        paths = make_files(src, args.files, args.mib)
        common = [*paths, "-p", "0.1", "--seed", "1", "-q"]
        ways = {
            "--jobs 2": exe + common + ["--jobs", "2"],
            "--dask-scheduler (LocalCluster, 2 workers)":
                exe + common + ["--dask-scheduler", cluster.scheduler_address],
            "  the same, without MALLOC_TRIM_THRESHOLD_":
                exe + common + ["--dask-scheduler", untrimmed.scheduler_address],
        }
        outs = {name: os.path.join(d, f"out{k}") for k, name in enumerate(ways)}
        for name, cmd in ways.items():  # warm up: page cache, imports, worker start-up
            run(cmd, outs[name])
        a, *others = outs.values()
        same = all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False)
                   for b in others for f in os.listdir(a))
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, cmd in ways.items():
                times[name].append(run(cmd, outs[name]))
        total = args.files * args.mib
        print(f"{args.files} files x {args.mib} MiB float32 = {total} MiB in, the same out; "
              f"{args.rounds} rounds, alternating; median wall time of the whole command")
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}, numpy {np.__version__}, distributed "
              f"{distributed.__version__}")
        med = {}
        for name, ts in times.items():
            med[name] = statistics.median(ts)
            print(f"  {name:45s} {med[name]:7.2f} s  {total / med[name]:7.0f} MiB/s  "
                  f"(min {min(ts):.2f}, max {max(ts):.2f})")
        jobs, dflt, tuned = med.values()
        print(f"  time ratio dask / jobs: {dflt / jobs:.2f} (without the trim threshold "
              f"{tuned / jobs:.2f}); identical outputs: {same}")


if __name__ == "__main__":
    main()
