"""Baseline for bench_small.py: naive dropout on many .npy files (no temp files, no fsync).
usage: python numpy_baseline.py OUT_DIR P SEED FILE..."""
import os
import sys

import numpy as np

out, p, seed, files = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(seed)
for path in files:
    x = np.load(path)
    mask = rng.random(x.shape) >= p
    np.save(os.path.join(out, os.path.basename(path)), x * mask / (1 - p))
