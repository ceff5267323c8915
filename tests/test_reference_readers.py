"""What the reference readers (np.load, safetensors) accept or refuse, the tool does too.

Cases from numpy's and safetensors' own test suites: a dimension of 2**63 or more
beside a zero dimension is refused by both readers, so the tool refuses it rather
than writing a file nobody can read; a Python 2 header and a null __metadata__ are
read by both, so the tool reads them.  (A tensor entry with an unknown key stays
refused: see docs/hostile-inputs.md.)
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from dropout_core import load_tensors


def npy_bytes(header: str, data: bytes = b"") -> bytes:
    h = header.encode("latin1")
    pad = (-(10 + len(h) + 1)) % 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h) + pad + 1) + h + b" " * pad + b"\n" \
        + data


def st_bytes(doc: dict, data: bytes = b"") -> bytes:
    h = json.dumps(doc).encode()
    return struct.pack("<Q", len(h)) + h + data


HUGE = [
    ("npy-dim-1e19-beside-0", ".npy",
     npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000000000000, 0), }")),
    ("npy-2**62-beside-0", ".npy",
     npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 0), }")),
    ("st-2-2**64-2-0", ".safetensors",
     st_bytes({"a": {"dtype": "F32", "shape": [2, 2**64 - 2, 0], "data_offsets": [0, 0]}})),
    ("st-2**63-beside-0", ".safetensors",
     st_bytes({"a": {"dtype": "F32", "shape": [2**63, 0], "data_offsets": [0, 0]}})),
]


@pytest.mark.parametrize("name,suffix,data", HUGE, ids=[c[0] for c in HUGE])
def test_shapes_the_reference_readers_refuse_are_refused(name, suffix, data, tmp_path, run_cli):
    src = tmp_path / f"x{suffix}"
    src.write_bytes(data)
    code, _, err = run_cli("apply", str(src), "-o", str(tmp_path / f"o{suffix}"), "--seed", "1")
    assert code == 1 and err.startswith("Error: ") and "too large for any array" in err
    assert err.count("\n") == 1 and not (tmp_path / f"o{suffix}").exists()


def test_a_python2_header_is_read_like_np_load(tmp_path, run_cli):
    src = tmp_path / "x.npy"
    src.write_bytes(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
                              np.arange(6, dtype="<f4").tobytes()))
    code, _, err = run_cli("apply", str(src), "-o", str(tmp_path / "o.npy"), "--mode", "eval")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"),
                                  np.arange(6, dtype=np.float32).reshape(2, 3))


def test_null_metadata_is_no_metadata(tmp_path, run_cli):
    src = tmp_path / "x.safetensors"
    src.write_bytes(st_bytes({"__metadata__": None,
                              "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                             np.ones(2, "<f4").tobytes()))
    code, out, err = run_cli("apply", str(src), "-o", str(tmp_path / "o.safetensors"), "-p", "0",
                             "--stats", "-", "-q")
    assert code == 0, err
    assert json.loads(out)["files"][0]["metadata"] is None
    np.testing.assert_array_equal(load_tensors(tmp_path / "o.safetensors")["a"], np.ones(2))
