"""Peak memory of `tensor-dropout apply` on a 4 GiB .npz, stored and deflated, against a .npy.

    python benchmarks/bench_npz.py --tmp /somewhere/with/20GB   # the run in docs/npz.md
    python benchmarks/bench_npz.py --gib 0.25                   # a quick look

Each input holds one float32 tensor a little over --gib GiB (so its member
needs Zip64: over 4 GiB at the default), written the way np.savez and
np.savez_compressed write (zipfile, Zip64 extras), chunk by chunk.  The values
are float32 normal samples, like trained weights (deflate saves about 7%).  Each
command runs under a fresh wrapper that reports ``resource.getrusage(
RUSAGE_CHILDREN)``; zipfile then checks every CRC-32 of each output.  Files
go to --tmp (9 GB at the default size) and are deleted as soon as they are
measured; the deflated case takes most of the 15 minutes.  docs/npz.md holds
one run's numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import GiB, MiB, cli_prefix, rm, run_measured  # noqa: E402

BLOCK = 16 * MiB  # bytes of data generated and written at a time


def _blocks(nbytes: int):
    rng = np.random.default_rng(12345)
    block = rng.standard_normal(BLOCK // 4, dtype=np.float32)
    raw = block.view(np.uint8)
    done = 0
    while done < nbytes:
        n = min(raw.size, nbytes - done)
        yield raw[:n]
        done += n


def write_npy(path: str, n: int) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (n,)})
        for b in _blocks(4 * n):
            f.write(b.data)


def write_npz(path: str, n: int, method: int) -> None:
    """What np.savez(_compressed)(path, x=x) writes, without holding x."""
    with zipfile.ZipFile(path, "w", method) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (n,)})
            for b in _blocks(4 * n):
                f.write(b.data)


def check(path: str) -> str:
    if not path.endswith(".npz"):
        return "-"
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        (info,) = z.infolist()
    assert bad is None, f"{path}: member {bad} has a bad CRC-32"
    return f"zipfile: CRC ok, member {info.file_size} bytes, stored as {info.compress_size}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=4.0, help="tensor size in GiB (default 4)")
    ap.add_argument("--tmp", default="bench-tmp", help="directory for the big files")
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    n = int(a.gib * GiB) // 4 + 16384  # a little over: the member needs Zip64 at 4 GiB
    cli = cli_prefix()
    rows = []
    cases = (("npy", write_npy), ("npz stored", lambda p, k: write_npz(p, k, zipfile.ZIP_STORED)),
             ("npz deflated", lambda p, k: write_npz(p, k, zipfile.ZIP_DEFLATED)))
    for label, make in cases:
        ext = ".npy" if label == "npy" else ".npz"
        src = os.path.join(a.tmp, f"bench-npz-in{ext}")
        out = os.path.join(a.tmp, f"bench-npz-out{ext}")
        try:
            t = time.perf_counter()
            make(src, n)
            made = time.perf_counter() - t
            os.sync()
            m = run_measured(cli + ["apply", src, "-o", out, "-p", "0.1", "--seed", "1", "-q"])
            rows.append((label, os.path.getsize(src), os.path.getsize(out), m, made, check(out)))
        finally:
            rm(src)
            rm(out)
    base = run_measured(cli + ["--version"])
    print(f"float32 tensor of {4 * n} bytes ({4 * n / GiB:.3f} GiB), p=0.1, -o, default chunk "
          "size and threads\n")
    print("| input | input bytes | output bytes | peak RSS MiB | wall s | user s | sys s |")
    print("|---|---|---|---|---|---|---|")
    for label, isize, osize, m, _, _ in rows:
        print(f"| {label} | {isize:,} | {osize:,} | {m['maxrss_kib'] / 1024:.0f} | "
              f"{m['wall']:.1f} | {m['user']:.1f} | {m['sys']:.1f} |")
    print(f"\n`tensor-dropout --version` alone: {base['maxrss_kib'] / 1024:.0f} MiB")
    for label, _, _, _, made, checked in rows:
        print(f"- {label}: input written in {made:.0f} s; output {checked}")


if __name__ == "__main__":
    main()
