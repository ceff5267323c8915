"""The tensor-dropout command line: a thin Click layer over dropout_core."""

import os

# The tool uses no BLAS; OpenBLAS's idle worker threads would otherwise spin for about
# 0.1 s of CPU at import, on a machine whose cores the tool wants. A user's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
