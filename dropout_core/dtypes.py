"""One dtype table: safetensors names, NumPy dtypes, and what dropout may do with each."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .errors import DropoutError

# safetensors dtype name -> little-endian NumPy dtype
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
}
# Packed sub-byte types: no NumPy dtype can hold one element per item.
UNSUPPORTED_SAFETENSORS = {"F4", "F6_E2M3", "F6_E3M2"}

_ML_FLOATS = {np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
                                    ml_dtypes.float8_e5m2, ml_dtypes.float8_e8m0fnu,
                                    ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2fnuz)}


def is_floating(dtype: np.dtype) -> bool:
    """Float or complex: the dtypes that can be scaled."""
    return dtype.kind in "fc" or dtype in _ML_FLOATS


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the arithmetic runs in: float64/complex stay, narrower floats use float32."""
    if dtype.kind == "c":
        return np.dtype(dtype.newbyteorder("="))
    if dtype.kind == "f" and dtype.itemsize == 8:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def dtype_label(dtype: np.dtype) -> str:
    """A short, stable dtype name for stats: float32, bfloat16, int64, bool..."""
    return dtype.name if dtype.name != "bool" else "bool"


def safetensors_name(dtype: np.dtype) -> str:
    for name, dt in SAFETENSORS_DTYPES.items():
        if dt == dtype:
            return name
    raise DropoutError(f"dtype {dtype} cannot be stored in safetensors")


def cast_fill(fill: float, dtype: np.dtype, where: str) -> np.ndarray:
    """The fill value as a 0-d array of ``dtype``; refuses a value the dtype cannot hold."""
    try:
        with np.errstate(all="ignore"):
            if dtype.kind == "b":
                value = np.array(fill).astype(dtype)
                ok = float(fill) in (0.0, 1.0)
            elif dtype.kind in "iu":
                info = np.iinfo(dtype)
                ok = float(fill).is_integer() and info.min <= fill <= info.max
                value = np.array(int(fill) if ok else 0).astype(dtype)
            else:
                value = np.array(fill, dtype=np.float64).astype(dtype)
                back = complex(value) if dtype.kind == "c" else float(value.astype(np.float64))
                ok = back == fill or (np.isnan(back) and np.isnan(fill))
    except (OverflowError, ValueError):
        ok = False
    if not ok:
        raise DropoutError(f"{where}: fill value {fill!r} cannot be represented exactly in "
                           f"{dtype_label(dtype)}; choose another --fill")
    return value
