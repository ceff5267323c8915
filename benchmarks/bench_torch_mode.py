"""Time torch-compatible dropout (dropout_core.streams.torch_cpu) against torch's own F.dropout.

    python benchmarks/bench_torch_mode.py [--log2n 24] [--p 0.5] [--repeat 7]

Runs with any interpreter that has numpy and ml_dtypes; torch is imported only
if it is installed (e.g. ``/work/torchvenv/bin/python benchmarks/bench_torch_mode.py``)
and then timed with its default thread count and with 1 thread.  Ours is timed
first, before torch is imported, so torch's idle OpenMP threads cannot slow it.
Prints median and min wall times in ms and the ratios torch / ours (of medians, of mins).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dropout_core.streams.torch_cpu import TorchMaskSource, torch_dropout  # noqa: E402


def timings_ms(fn, repeat: int) -> tuple[float, float]:
    """(median, min) wall time in ms; the min shrugs off other processes on a shared box."""
    fn()  # warm up (page faults, thread start)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2n", type=int, default=24)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    n, p = 1 << args.log2n, args.p
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    print(f"n = 2**{args.log2n} float32 elements, p = {p}, {os.cpu_count()} CPUs")

    src = TorchMaskSource(0)
    row = "  {:<40s} median {:7.1f} ms   min {:7.1f} ms"
    print(row.format("mt19937 words alone (skip n elements)",
                     *timings_ms(lambda: src.skip(n), args.repeat)))
    print(row.format("TorchMaskSource.keep(n, p)",
                     *timings_ms(lambda: src.keep(n, p), args.repeat)))
    ours = timings_ms(lambda: torch_dropout(x, p, src), args.repeat)
    print(row.format("torch_dropout (ours)", *ours))

    try:
        import torch
    except ImportError:
        print("  torch is not installed: no comparison")
        return
    xt = torch.from_numpy(x)
    torch.manual_seed(0)
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        med, low = timings_ms(lambda: torch.nn.functional.dropout(xt, p, training=True),
                              args.repeat)
        print(row.format(f"torch {torch.__version__} F.dropout, {threads} thread(s)", med, low)
              + f"   torch/ours: {med / ours[0]:.2f} (medians), {low / ours[1]:.2f} (mins)")


if __name__ == "__main__":
    main()
