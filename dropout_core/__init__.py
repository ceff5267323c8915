"""tensor-dropout: dropout on .npy and .safetensors files, reproducible on any machine.

>>> import numpy as np
>>> from dropout_core import dropout
>>> dropout(np.ones((2, 2), np.float32), p=0.0, seed=1).tolist()
[[1.0, 1.0], [1.0, 1.0]]

Names are imported on first use, so ``import dropout_core`` (and the command
line's start-up) costs only what a run needs.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "ALPHA_PRIME": "params",
    "BatchOptions": "batch",
    "Dropout": "array",
    "DropoutError": "errors",
    "DropoutParams": "params",
    "KeepStream": "streams.default",
    "UsageError": "errors",
    "apply_file": "files",
    "apply_files": "batch",
    "atomic_write": "atomic",
    "derive_repeat_seed": "seeds",
    "dropout": "array",
    "dropout_dask": "dask_backend",
    "effective_p": "params",
    "file_key": "seeds",
    "inspect_file": "files",
    "load_tensors": "files",
    "map_files": "batch",
    "new_seed": "seeds",
    "preview": "previews",
    "run_header": "stats",
    "save_tensors": "files",
    "threshold": "streams.default",
    "verify": "files",
    "write_stats": "batch",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
