"""The default path's channel and alpha variants against torch's own outputs.

The torch goldens (tests/golden/torch/, made with real torch by
scripts/make_torch_golden.py) hold torch's outputs for dropout1d/2d/3d,
alpha_dropout and feature_alpha_dropout.  Replaying torch's mask through the
default path (`mask=`) must give torch's mask structure exactly and torch's
values to within rounding: the default path computes ``a*x + b`` where torch
rounds ``x*noise + b`` step by step, so they may differ in the last bit.
(`rng="torch"` is the bit-exact mode, tested in test_torch_cli.py.)
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dropout_core import dropout
from dropout_core.streams.torch_cpu import TorchMaskSource

HERE = os.path.join(os.path.dirname(__file__), "golden", "torch")
with open(os.path.join(HERE, "cases.json")) as _f:
    CASES = json.load(_f)["cases"]

VARIANT = {"dropout1d": "channel", "dropout2d": "channel", "dropout3d": "channel",
           "alpha_dropout": "alpha", "feature_alpha_dropout": "feature-alpha"}
PICK = [c for c in CASES if len(c["calls"]) == 1 and c["calls"][0]["function"] in VARIANT
        and c["calls"][0]["dtype"] in ("float32", "float64") and c["calls"][0]["training"]
        and not c["calls"][0]["fortran"] and c["calls"][0]["transpose"] is None
        and not c["calls"][0].get("slices") and 0 < c["calls"][0]["p"] < 1]


def torch_mask_shape(call: dict) -> tuple[int, ...]:
    shape, fn = tuple(call["shape"]), call["function"]
    if fn == "alpha_dropout":
        return shape
    unbatched = (fn == "dropout1d" and len(shape) == 2) or (fn == "dropout3d" and len(shape) == 4)
    keep_axes = (0,) if unbatched else (0, 1)
    return tuple(d if k in keep_axes else 1 for k, d in enumerate(shape))


@pytest.mark.parametrize("case", PICK, ids=[c["id"] for c in PICK])
def test_default_path_with_torchs_mask_gives_torchs_values(case):
    call = case["calls"][0]
    x = np.load(os.path.join(HERE, call["input"]))
    want = np.load(os.path.join(HERE, call["output"]))
    mshape = torch_mask_shape(call)
    keep = TorchMaskSource(case["seed"]).keep(int(np.prod(mshape)), call["p"]).reshape(mshape)
    y = dropout(x, call["p"], variant=VARIANT[call["function"]], mask=keep)
    full = np.broadcast_to(keep, x.shape)
    # structure: the same elements were dropped, whole channels for the channel variants
    if VARIANT[call["function"]] == "channel":
        fin = np.isfinite(x)
        assert ((want == 0) | ~fin)[~full].all() and (y[~full] == 0).all()
    ok = np.isfinite(want) & np.isfinite(y)
    # torch forms the dropped alpha value as (0 - 1)*C1 + C2 in float32 steps, which
    # cancels; the default path rounds a*d + b once from double: up to ~8 ulp apart
    np.testing.assert_allclose(y[ok], want[ok], rtol=16 * np.finfo(x.dtype).eps,
                               atol=4 * np.finfo(x.dtype).tiny)
    # a kept NaN stays NaN in both
    assert (np.isnan(y) == np.isnan(want))[full].all()
