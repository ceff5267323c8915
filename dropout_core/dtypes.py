"""One dtype table: safetensors names, NumPy dtypes, and what dropout may do with each.

bfloat16 and float8 come from ml_dtypes, which is imported only when a file or
an array holds one (it costs more start-up time than NumPy itself).
"""

from __future__ import annotations

import numpy as np

from .errors import DropoutError

# safetensors dtype name -> little-endian NumPy dtype (a str), or an ml_dtypes type name
_SAFETENSORS = {
    "BOOL": "bool",
    "U8": "<u1",
    "I8": "<i1",
    "U16": "<u2",
    "I16": "<i2",
    "U32": "<u4",
    "I32": "<i4",
    "U64": "<u8",
    "I64": "<i8",
    "F16": "<f2",
    "BF16": "ml_dtypes.bfloat16",
    "F32": "<f4",
    "F64": "<f8",
    "C64": "<c8",
    "F8_E4M3": "ml_dtypes.float8_e4m3fn",
    "F8_E5M2": "ml_dtypes.float8_e5m2",
    "F8_E8M0": "ml_dtypes.float8_e8m0fnu",
    "F8_E4M3FNUZ": "ml_dtypes.float8_e4m3fnuz",
    "F8_E5M2FNUZ": "ml_dtypes.float8_e5m2fnuz",
}
SAFETENSORS_NAMES = tuple(_SAFETENSORS)
# Packed sub-byte types: no NumPy dtype can hold one element per item.
UNSUPPORTED_SAFETENSORS = {"F4", "F6_E2M3", "F6_E3M2"}
_ML_FLOAT_NAMES = {v.split(".")[1] for v in _SAFETENSORS.values() if v.startswith("ml_dtypes.")}


def safetensors_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a safetensors dtype name (imports ml_dtypes only for its types)."""
    spec = _SAFETENSORS[name]
    if spec.startswith("ml_dtypes."):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, spec.split(".")[1]))
    return np.dtype(spec)


def is_ml_float(dtype: np.dtype) -> bool:
    """bfloat16 or a float8 (an ml_dtypes type), without importing ml_dtypes."""
    return dtype.type.__module__ == "ml_dtypes" and dtype.name in _ML_FLOAT_NAMES


def is_floating(dtype: np.dtype) -> bool:
    """Float or complex: the dtypes that can be scaled."""
    return dtype.kind in "fc" or is_ml_float(dtype)


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
    """The safetensors name of ``dtype`` (a DropoutError when it has none)."""
    for name, spec in _SAFETENSORS.items():
        if spec.startswith("ml_dtypes."):
            if is_ml_float(dtype) and dtype.name == spec.split(".")[1]:
                return name
        elif np.dtype(spec) == dtype:
            return name
    raise DropoutError(f"dtype {dtype} cannot be stored in safetensors")


def cast_fill(fill: float, dtype: np.dtype, where: str, fill_option: str = "--fill") -> np.ndarray:
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
                           f"{dtype_label(dtype)}; choose another {fill_option}")
    return value
