"""One large file: split across a 2-worker LocalCluster against the local command, side by side.

    python benchmarks/bench_dask_split.py [--gib 2] [--rounds 2] [--sizes 16,64,256]

Writes one float32 .npy file of GIB GiB into a new directory under --tmp (default
./bench-tmp; removed at the end), starts a
dask.distributed LocalCluster (2 worker processes, 1 thread each) on this machine, and
times the whole command, alternating, ROUNDS times:

    tensor-dropout apply big.npy -o out.npy -p 0.1 --seed 1 -q                    (baseline)
    tensor-dropout apply big.npy -o out.npy -p 0.1 --seed 1 -q --dask-scheduler ADDR \\
        --dask-split-size S                                                         (each S)

plus the split run with a split size above the file's size (one task: the file on
one worker, as before issue 15).  For each split run it reads the scheduler's task
stream to say where the time went: the range tasks (reading, dropout, writing, each
task's fsync), the per-tensor digest task (SHA-256 of the output, serial), and the
rest (start-up, planning, the client's fsync and rename).  It checks that every run
wrote the same bytes.  Needs only public tools: numpy, dask[array], distributed.
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
import time

import numpy as np

MiB = 1 << 20


def make_file(path: str, gib: float) -> None:
    n = int(gib * (1 << 30)) // 4
    block = np.random.default_rng(0).standard_normal(1 << 22).astype(np.float32)
    from numpy.lib import format as npformat

    with open(path, "wb") as f:
        npformat.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                            "shape": (n,)})
        for s in range(0, n, block.size):
            f.write(block[:min(block.size, n - s)].tobytes())


def run(cmd: list[str], out: str) -> float:
    if os.path.exists(out):
        os.unlink(out)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def phases(records: list[dict]) -> dict[str, float]:
    """Seconds of wall time from the first to the last task of each kind (task stream)."""
    spans: dict[str, list[float]] = {}
    for r in records:
        kind = str(r["key"]).split("-")[0].strip("('")
        for ss in r["startstops"]:
            if ss["action"] == "compute":
                lo, hi = spans.get(kind, [ss["start"], ss["stop"]])
                spans[kind] = [min(lo, ss["start"]), max(hi, ss["stop"])]
    return {k: hi - lo for k, (lo, hi) in spans.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sizes", default="16,64,256", help="split sizes in MiB")
    ap.add_argument("--tmp", default="bench-tmp")
    args = ap.parse_args()

    import distributed

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = [sys.executable, "-m", "cli.main", "apply"]
    os.makedirs(args.tmp, exist_ok=True)
    import tempfile

    tmp = tempfile.mkdtemp(prefix="bench-dask-split-", dir=os.path.abspath(args.tmp))
    os.chdir(root)
    src, out = os.path.join(tmp, "big.npy"), os.path.join(tmp, "out.npy")
    make_file(src, args.gib)
    size = os.path.getsize(src)
    common = [src, "-o", out, "-p", "0.1", "--seed", "1", "-q", "--force"]
    try:
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                      dashboard_address=":0", silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            addr = cluster.scheduler_address
            ways = {"local command (baseline)": exe + common}
            for s in (int(x) for x in args.sizes.split(",")):
                ways[f"split, --dask-split-size {s} MiB"] = exe + common + [
                    "--dask-scheduler", addr, "--dask-split-size", str(s * MiB)]
            ways["one task (split size > file)"] = exe + common + [
                "--dask-scheduler", addr, "--dask-split-size", str(2 * size)]
            reference = os.path.join(tmp, "reference.npy")
            run(ways["local command (baseline)"], out)  # warm up: page cache, imports
            os.replace(out, reference)
            same = True
            times: dict[str, list[float]] = {name: [] for name in ways}
            where: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for name, cmd in ways.items():
                    with distributed.get_task_stream(client=client) as ts:
                        times[name].append(run(cmd, out))
                    where[name] = phases(ts.data)
                    same = same and filecmp.cmp(out, reference, shallow=False)
            gib = size / (1 << 30)
            print(f"one float32 .npy of {gib:.2f} GiB, -p 0.1; {args.rounds} rounds, "
                  "alternating; median wall time of the whole command")
            print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
                  f"{platform.python_version()}, numpy {np.__version__}, distributed "
                  f"{distributed.__version__}; LocalCluster of 2 workers x 1 thread")
            base = statistics.median(times["local command (baseline)"])
            for name, ts in times.items():
                med = statistics.median(ts)
                ph = where[name]
                detail = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(ph.items()))
                print(f"  {name:36s} {med:6.2f} s  {size / MiB / med:6.0f} MiB/s  "
                      f"ratio {med / base:4.2f}  (min {min(ts):.2f}, max {max(ts):.2f})"
                      + (f"  [{detail}]" if detail else ""))
            print(f"  identical outputs: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
