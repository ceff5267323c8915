"""tensor-dropout: dropout on .npy and .safetensors files, reproducible on any machine.

>>> import numpy as np
>>> from dropout_core import dropout
>>> dropout(np.ones((2, 2), np.float32), p=0.0, seed=1).tolist()
[[1.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

__version__ = "0.1.0"

from .array import dropout, new_seed
from .atomic import atomic_write
from .batch import BatchOptions, apply_files, write_stats
from .dask_backend import dropout_dask, map_files  # imports dask only when called
from .engine import effective_p
from .errors import DropoutError, UsageError
from .files import apply_file, file_key, inspect_file, load_tensors, run_header
from .params import ALPHA_PRIME, DropoutParams
from .streams import KeepStream, derive_repeat_seed, threshold

__all__ = [
    "ALPHA_PRIME",
    "BatchOptions",
    "DropoutError",
    "DropoutParams",
    "KeepStream",
    "UsageError",
    "__version__",
    "apply_file",
    "apply_files",
    "atomic_write",
    "derive_repeat_seed",
    "dropout",
    "dropout_dask",
    "effective_p",
    "file_key",
    "inspect_file",
    "load_tensors",
    "map_files",
    "new_seed",
    "run_header",
    "threshold",
    "write_stats",
]
