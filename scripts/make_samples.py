"""Write the small files in samples/ (deterministic; run from the repo root).

    python scripts/make_samples.py

- example_1x3x3.npy: the 1x3x3 float64 example of the README (values 1..9).
- multi.safetensors: f32, f16, bf16 and int64 tensors with __metadata__.
- batch_nchw.npy: an NCHW float32 batch (4, 3, 8, 8) for the channel variant.
"""

from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropout_core.formats import npy  # noqa: E402
from dropout_core.formats import safetensors as safetensors_file  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")


def write_npy(path: str, a: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(npy.header_bytes(a.dtype, a.shape))
        f.write(np.ascontiguousarray(a).tobytes())


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    header = safetensors_file.build_header([(k, v.dtype, v.shape) for k, v in tensors.items()],
                                           metadata)
    with open(path, "wb") as f:
        f.write(header)
        for v in tensors.values():
            f.write(np.ascontiguousarray(v).tobytes())


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261126)
    write_npy(os.path.join(OUT, "example_1x3x3.npy"),
              np.arange(1, 10, dtype=np.float64).reshape(1, 3, 3))
    write_safetensors(os.path.join(OUT, "multi.safetensors"), {
        "encoder.weight": rng.standard_normal((4, 8)).astype(np.float32),
        "encoder.bias": rng.standard_normal(8).astype(np.float16),
        "decoder.weight": rng.standard_normal((8, 4)).astype(np.float32).astype(ml_dtypes.bfloat16),
        "position_ids": np.arange(16, dtype=np.int64).reshape(1, 16),
    }, {"source": "tensor-dropout samples", "format": "np"})
    write_npy(os.path.join(OUT, "batch_nchw.npy"),
              rng.standard_normal((4, 3, 8, 8)).astype(np.float32))


if __name__ == "__main__":
    main()
