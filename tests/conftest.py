"""Shared test helpers: binomial bounds, file writers, a CLI runner, and one Dask cluster."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dropout_core.formats import npy  # noqa: E402
from dropout_core.formats import safetensors as safetensors_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")


def binomial_bounds(n: int, p: float, z: float = 6.0) -> tuple[int, int]:
    """[lo, hi] holding a Binomial(n, p) count except with probability < 2e-9 (z = 6 sigma).

    Tests run at fixed seeds, so they never flake; the bound says what an
    honest stream could have produced, so a biased one fails.
    """
    sd = math.sqrt(n * p * (1.0 - p))
    return max(0, math.floor(n * p - z * sd - 1)), min(n, math.ceil(n * p + z * sd + 1))


def write_npy(path, a: np.ndarray, fortran: bool = False) -> str:
    with open(path, "wb") as f:
        f.write(npy.header_bytes(a.dtype, a.shape, fortran_order=fortran))
        f.write(np.asfortranarray(a).tobytes(order="F") if fortran else
                np.ascontiguousarray(a).tobytes())
    return str(path)


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> str:
    with open(path, "wb") as f:
        f.write(safetensors_file.build_header(
            [(k, v.dtype, v.shape) for k, v in tensors.items()], metadata))
        for v in tensors.values():
            f.write(np.ascontiguousarray(v).tobytes())
    return str(path)


@pytest.fixture
def run_cli():
    """Run the CLI's real entry point in-process (CliRunner's isolation).

    Returns (exit code, stdout bytes, stderr text).
    """
    from cli.main import main

    def run(*args: str, input: bytes | None = None):
        runner = CliRunner()
        with runner.isolation(input=input) as (out, err, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            stdout, stderr = out.getvalue(), err.getvalue()
        return code, stdout, stderr.decode()

    return run


@pytest.fixture(scope="session")
def cluster():
    """A real LocalCluster, two worker processes of one thread, shared by every Dask test."""
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("dask.array")
    # Port 0 everywhere: another run of the suite on this machine may hold 8787.
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="session")
def client(cluster):
    import distributed

    with distributed.Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c
