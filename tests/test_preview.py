"""`tensor-dropout preview`: the user looks at input, keep mask and output before training.

Every mask drawn is held against the mask `apply --mask-out` writes for the same
options, every output panel against `apply`'s output, so a preview never shows
other bits than the run it stands for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, write_npy, write_safetensors
from corpus import listing, one_error_line, run_cli

from dropout_core import load_tensors
from dropout_core import preview as preview_fn
from dropout_core.previews import (
    DROPPED,
    KEPT,
    LINE,
    MARGIN,
    NAN,
    NEEDS_PILLOW,
    NEG_INF,
    POS_INF,
    grey,
)

Image = pytest.importorskip("PIL.Image")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_preview_images  # noqa: E402


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def center(row, panel: str, r: int, c: int, i: int, j: int) -> tuple[int, int]:
    """(y, x) of the middle of element (i, j)'s cell in image (r, c) of a panel."""
    x, y = row.pixel(panel, r, c, i, j)
    zy, zx = row.layout.zoom
    return y + zy // 2, x + zx // 2


def applied(tmp_path: Path, src: str, *options: str) -> tuple[dict, dict]:
    """apply's output tensors and its keep masks broadcast to each tensor (True = kept)."""
    ext = os.path.splitext(src)[1]
    out, mask = tmp_path / f"applied{ext}", tmp_path / "applied-mask.safetensors"
    run = run_cli(["apply", src, "-o", str(out), "--mask-out", str(mask), "-q", *options])
    assert run.code == 0, run.err
    outputs = load_tensors(str(out))
    masks = {name: np.broadcast_to(m, outputs[name].shape)
             for name, m in load_tensors(str(mask)).items()}
    return outputs, masks


def drawn_mask(img: np.ndarray, row, grid_index) -> np.ndarray:
    """The keep mask read back from the picture's pixels, in the tensor's index space.

    ``grid_index(r, c, i, j)`` is the tensor index drawn at element (i, j) of image
    (r, c); returns {index: kept} checked to be one of the two mask colours.
    """
    (rows, cols), (h, w) = row.layout.grid, row.layout.tile
    out = {}
    for r in range(rows):
        for c in range(cols):
            for i in range(h):
                for j in range(w):
                    colour = tuple(img[center(row, "mask", r, c, i, j)])
                    assert colour in (KEPT, DROPPED), colour
                    out[grid_index(r, c, i, j)] = colour == KEPT
    return out


def cli_preview(src: str, out: Path, *options: str) -> None:
    run = run_cli(["preview", src, "-o", str(out), *options])
    assert run.code == 0, run.err


# ----------------------------------------------------------------------------- layout and size


def test_png_size_follows_the_nchw_grid(tmp_path: Path):
    src = os.path.join(ROOT, "samples", "batch_nchw.npy")  # (4, 3, 8, 8)
    out = tmp_path / "p.png"
    cli_preview(src, out, "-p", "0.5", "--seed", "7")
    shown = preview_fn(src, p=0.5, seed=7)
    [row] = shown.rows
    assert (row.layout.kind, row.layout.grid, row.layout.tile, row.layout.zoom) == \
        ("image", (4, 3), (8, 8), (8, 8))
    assert row.panel_size == (3 * 64 + 2 * 2, 4 * 64 + 3 * 2)
    # a legend line, then the row: title, panel labels, panels
    height = MARGIN + LINE + MARGIN + 2 * LINE + row.panel_size[1] + 2 * MARGIN
    img = pixels(out)
    assert img.shape[0] == height and img.shape[1] == shown.image.size[0]
    xs = [row.origins[p][0] for p in ("input", "mask", "output")]
    assert xs[0] == MARGIN and xs[0] < xs[1] < xs[2]
    assert xs[2] + row.panel_size[0] <= img.shape[1] - MARGIN
    assert row.pixel("mask", 1, 2, 3, 4) == (xs[1] + 2 * 66 + 4 * 8, row.origins["mask"][1]
                                               + 66 + 3 * 8)
    assert np.array_equal(img, np.asarray(shown.image))  # the CLI draws what Python draws


@pytest.mark.parametrize("shape,kind,grid,tile,zoom,shown", [
    ((10, 20), "image", (1, 1), (10, 20), (3, 3), "[:, :]"),
    ((300,), "heatmap", (1, 1), (1, 128), (16, 1), "[:128]"),
    ((7,), "heatmap", (1, 1), (1, 7), (16, 9), "[:]"),
    ((6, 10, 20), "heatmap", (4, 1), (10, 20), (6, 3), "[:4, :, :]"),  # a sequence (B, T, D)
    ((3, 300, 200), "image", (1, 3), (128, 128), (1, 1), "[:, :128, :128]"),
    ((2, 2, 5, 6, 7), "image", (2, 2), (6, 7), (9, 9), "[:, :, 0, :, :]"),
])
def test_layout_and_the_part_shown(tmp_path: Path, shape, kind, grid, tile, zoom, shown):
    src = write_npy(tmp_path / "x.npy", np.arange(np.prod(shape), dtype=np.float32)
                    .reshape(shape))
    out = tmp_path / "x.png"
    cli_preview(src, out, "--seed", "1")
    [row] = preview_fn(src, seed=1).rows
    lay = row.layout
    assert (lay.kind, lay.grid, lay.tile, lay.zoom, row.shown) == (kind, grid, tile, zoom, shown)
    assert row.panel_size == (grid[1] * tile[1] * zoom[1] + (grid[1] - 1) * 2,
                              grid[0] * tile[0] * zoom[0] + (grid[0] - 1) * 2)
    assert pixels(out).shape[0] == (MARGIN + LINE + MARGIN + 2 * LINE + row.panel_size[1]
                                    + 2 * MARGIN)
    whole = all(p == ":" for p in shown[1:-1].split(", "))
    assert ("of the part shown, " + shown in row.title) is not whole


# ----------------------------------------------------------------------------- the bits


@pytest.mark.parametrize("options", [
    ("-p", "0.5", "--seed", "7"),
    ("-p", "0.5", "--seed", "7", "--variant", "channel"),
    ("-p", "0.3", "--seed", "11", "--exact-count"),
    ("-p", "0.4", "--seed", "5", "--share-axes", "2"),
    ("-p", "0.5", "--seed", "3", "--rng", "torch"),
    ("-p", "0.25", "--seed", "2", "--key", "other.npy"),
], ids=["element", "channel", "exact-count", "share-axes", "torch", "key"])
def test_mask_panel_shows_apply_mask_where_apply_drops(tmp_path: Path, options):
    src = os.path.join(ROOT, "samples", "batch_nchw.npy")
    outputs, masks = applied(tmp_path, src, *options)
    out = tmp_path / "p.png"
    cli_preview(src, out, *options)
    shown = preview_fn(src, **_kwargs(options))
    [row] = shown.rows
    seen = drawn_mask(pixels(out), row, lambda r, c, i, j: (r, c, i, j))
    want = masks[""]
    assert seen == {ix: bool(want[ix]) for ix in seen}
    assert len(seen) == want.size  # every element of the small batch is drawn
    assert row.dropped == int((~want).sum())
    assert f"dropped {100 * row.drop_fraction:.1f}%" in row.title
    # the output panel is apply's output, normalised on its own
    rgb, _ = grey(outputs[""])
    img = pixels(out)
    for ix in [(0, 0, 0, 0), (3, 2, 7, 7), (1, 1, 4, 2), (2, 0, 5, 6)]:
        assert tuple(img[center(row, "output", *ix)]) == tuple(rgb[ix])


def _kwargs(options: tuple[str, ...]) -> dict:
    names = {"-p": "p", "--seed": "seed", "--variant": "variant", "--rng": "rng",
             "--key": "key", "--channel-axis": "channel_axis"}
    kw, it = {}, iter(options)
    for opt in it:
        if opt == "--exact-count":
            kw["exact_count"] = True
        elif opt == "--share-axes":
            kw["share_axes"] = tuple(int(a) for a in next(it).split(","))
        else:
            value = next(it)
            kw[names[opt]] = {"p": float, "seed": int, "channel_axis": int}.get(
                names[opt], str)(value)
    return kw


def test_a_large_tensor_is_drawn_in_part_with_apply_bits(tmp_path: Path):
    # 3 channels of 300 x 200: a block of runs 200 apart, gathered from the stream
    x = np.random.default_rng(1).standard_normal((3, 300, 200)).astype(np.float32)
    src = write_npy(tmp_path / "big.npy", x)
    _, masks = applied(tmp_path, src, "-p", "0.5", "--seed", "9")
    out = tmp_path / "p.png"
    cli_preview(src, out, "-p", "0.5", "--seed", "9")
    [row] = preview_fn(src, p=0.5, seed=9).rows
    assert "of the part shown, [:, :128, :128]" in row.title
    seen = drawn_mask(pixels(out), row, lambda r, c, i, j: (c, i, j))
    assert seen == {ix: bool(masks[""][ix]) for ix in seen}


def test_deflated_npz_member_read_front_to_back(tmp_path: Path):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 150, 140)).astype(np.float32)
    b = rng.standard_normal((5, 6)).astype(np.float32)
    src = str(tmp_path / "d.npz")
    np.savez_compressed(src, a=a, b=b)
    _, masks = applied(tmp_path, src, "-p", "0.5", "--seed", "4")
    out = tmp_path / "p.png"
    cli_preview(src, out, "-p", "0.5", "--seed", "4")
    rows = preview_fn(src, p=0.5, seed=4).rows
    assert [r.tensor for r in rows] == ["a", "b"]
    img = pixels(out)
    seen = drawn_mask(img, rows[0], lambda r, c, i, j: (r, c, i, j))
    assert seen == {ix: bool(masks["a"][ix]) for ix in seen}
    # the input panel holds the archive's values (grey of the block drawn)
    rgb, _ = grey(a[:2, :3, :128, :128])
    assert tuple(img[center(rows[0], "input", 1, 2, 100, 127)]) == tuple(rgb[1, 2, 100, 127])


def test_channels_last_grid_and_mask(tmp_path: Path):
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 3)).astype(np.float32)
    src = write_npy(tmp_path / "nhwc.npy", x)
    options = ("-p", "0.5", "--seed", "21", "--variant", "channel", "--channel-axis", "-1")
    _, masks = applied(tmp_path, src, *options)
    out = tmp_path / "p.png"
    cli_preview(src, out, *options)
    [row] = preview_fn(src, **_kwargs(options)).rows
    assert (row.layout.grid, row.layout.tile) == ((2, 3), (8, 8))
    seen = drawn_mask(pixels(out), row, lambda r, c, i, j: (r, i, j, c))
    assert seen == {ix: bool(masks[""][ix]) for ix in seen}
    assert len(set(seen.values())) == 2  # this seed drops some channels and keeps others


def test_tensor_selection_in_safetensors_draws_only_the_chosen(tmp_path: Path):
    rng = np.random.default_rng(4)
    tensors = {"encoder.weight": rng.standard_normal((6, 9)).astype(np.float32),
               "encoder.bias": rng.standard_normal(9).astype(np.float32),
               "decoder.weight": rng.standard_normal((9, 6)).astype(np.float32)}
    src = write_safetensors(tmp_path / "m.safetensors", tensors)
    options = ("-p", "0.5", "--seed", "8", "--tensor", "encoder.*")
    _, masks = applied(tmp_path, src, *options)
    out = tmp_path / "p.png"
    cli_preview(src, out, *options)
    shown = preview_fn(src, p=0.5, seed=8, tensors=("encoder.*",))
    assert [r.tensor for r in shown.rows] == ["encoder.weight", "encoder.bias"]  # file order
    img = pixels(out)
    weight, bias = shown.rows
    assert "encoder.weight  float32 [6, 9]  p=0.5  seed=8  variant=element" in weight.title
    seen = drawn_mask(img, weight, lambda r, c, i, j: (i, j))
    assert seen == {ix: bool(masks["encoder.weight"][ix]) for ix in seen}
    seen = drawn_mask(img, bias, lambda r, c, i, j: (j,))
    assert seen == {ix: bool(masks["encoder.bias"][ix]) for ix in seen}


def test_torch_stream_continues_from_tensor_to_tensor(tmp_path: Path):
    # torch's serial stream: the second tensor's mask starts where the first one's ended
    rng = np.random.default_rng(5)
    # (a is drawn in part: its units after the part drawn must still be walked past)
    tensors = {"a": rng.standard_normal((40, 300)).astype(np.float32),
               "b": rng.standard_normal((3, 200, 150)).astype(np.float32)}
    src = write_safetensors(tmp_path / "t.safetensors", tensors)
    options = ("-p", "0.5", "--seed", "13", "--rng", "torch")
    _, masks = applied(tmp_path, src, *options)
    out = tmp_path / "p.png"
    cli_preview(src, out, *options)
    rows = preview_fn(src, p=0.5, seed=13, rng="torch").rows
    img = pixels(out)
    assert drawn_mask(img, rows[0], lambda r, c, i, j: (i, j)) == \
        {(i, j): bool(masks["a"][i, j]) for i in range(40) for j in range(128)}
    seen = drawn_mask(img, rows[1], lambda r, c, i, j: (c, i, j))
    assert seen == {ix: bool(masks["b"][ix]) for ix in seen}
    assert "rng=torch" in rows[1].title and rows[1].notes


def test_replayed_mask_is_drawn(tmp_path: Path):
    src = os.path.join(ROOT, "samples", "batch_nchw.npy")
    mask = np.zeros((4, 3, 1, 1), bool)
    mask[1, 2] = mask[3, 0] = True
    mpath = write_npy(tmp_path / "m.npy", mask)
    out = tmp_path / "p.png"
    cli_preview(src, out, "--mask-in", mpath, "-p", "0.5")
    [row] = preview_fn(src, mask_in=mpath, p=0.5).rows
    seen = drawn_mask(pixels(out), row, lambda r, c, i, j: (r, c, i, j))
    assert seen == {ix: bool(mask[ix[0], ix[1], 0, 0]) for ix in seen}
    assert "mask from" in row.title and "seed=none" in row.title


# ----------------------------------------------------------------------------- values


def test_nan_and_infinities_have_their_own_colours(tmp_path: Path):
    x = np.linspace(-1, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    x[2, 3], x[5, 5], x[7, 1] = np.nan, np.inf, -np.inf
    src = write_npy(tmp_path / "x.npy", x)
    out = tmp_path / "p.png"
    cli_preview(src, out, "-p", "0", "--seed", "1")  # p = 0: the output is the input
    [row] = preview_fn(src, p=0.0).rows
    img = pixels(out)
    for panel in ("input", "output"):
        assert tuple(img[center(row, panel, 0, 0, 2, 3)]) == NAN
        assert tuple(img[center(row, panel, 0, 0, 5, 5)]) == POS_INF
        assert tuple(img[center(row, panel, 0, 0, 7, 1)]) == NEG_INF
        value = img[center(row, panel, 0, 0, 0, 0)]
        assert value[0] == value[1] == value[2]  # finite values are grey
    lo, hi = row.ranges["input"]
    finite = x[np.isfinite(x)]
    assert (lo, hi) == (pytest.approx(np.percentile(finite, 1)),
                        pytest.approx(np.percentile(finite, 99)))
    assert row.dropped == 0


def test_grey_is_robust_to_an_outlier():
    x = np.concatenate([np.linspace(0, 1, 999), [1e30]])
    rgb, (lo, hi) = grey(x)
    assert hi < 2  # the outlier is clipped, not the white point
    assert rgb[-1].tolist() == [255, 255, 255] and rgb[0].tolist() == [0, 0, 0]
    flat, _ = grey(np.full(5, 3.0))
    assert flat[:, 0].tolist() == [128] * 5


# ----------------------------------------------------------------------------- files


def test_same_command_draws_the_same_bytes(tmp_path: Path):
    src = os.path.join(ROOT, "samples", "multi.safetensors")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        cli_preview(src, out, "-p", "0.5", "--seed", "7", "--no-scale")
    assert a.read_bytes() == b.read_bytes()
    assert preview_fn(src, p=0.5, seed=7, scale=False).png() == a.read_bytes()
    assert b"tIME" not in a.read_bytes() and b"tEXt" not in a.read_bytes()


def test_writes_only_the_png_and_leaves_the_input_alone(tmp_path: Path):
    src = write_npy(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    before = (tmp_path / "x.npy").read_bytes()
    run = run_cli(["preview", src, "-o", str(tmp_path / "x.png"), "--seed", "3"])
    assert run.code == 0
    height, width, _ = pixels(tmp_path / "x.png").shape
    assert run.err.splitlines() == [f"{src} -> {tmp_path / 'x.png'}: 1 tensor(s) drawn, "
                                    f"{width}x{height} pixels", "seed 3, effective p 0.5"]
    assert listing(tmp_path) == {"x.npy", "x.png"}
    assert (tmp_path / "x.npy").read_bytes() == before
    quiet = run_cli(["preview", src, "-o", str(tmp_path / "x.png"), "--force", "-q"])
    assert quiet.code == 0 and quiet.err == ""


def test_python_preview_is_the_function_even_after_importing_its_module(tmp_path: Path):
    import dropout_core
    import dropout_core.previews  # noqa: F401  (a module of another name: nothing is shadowed)

    src = write_npy(tmp_path / "x.npy", np.ones((2, 2), np.float32))
    assert dropout_core.preview(src, seed=1).rows[0].elements == 4
    assert dropout_core.preview is dropout_core.previews.preview


@pytest.mark.parametrize("case,code,message", [
    ("missing", 1, "{d}/nope.npy: no such file"),
    ("garbage", 1, "{d}/bad.npy: not a .npy, .safetensors or .npz file (unknown magic bytes)"),
    ("not-png", 2, "{d}/out.jpg: a preview is a PNG image; name it .png"),
    ("exists", 1, "{d}/old.png: output exists; use --force to replace it"),
    ("no-match", 2, "--tensor pattern nothing* matches no tensor in any input (patterns "
                    "match whole names; tensors are w)"),
    ("int", 1, "{d}/ints.safetensors: tensor w: int32 tensor cannot take scaling by 1/(1-p); "
               "use --no-scale to mask it without scaling, or leave it out (--exclude)"),
    ("bad-p", 2, "p must be a number with 0 <= p <= 1, got 1.5"),
    ("channel-1d", 1, "{d}/ints.safetensors: tensor w: channel dropout needs at least 2 "
                      "dimensions (N, C, ...), the tensor has shape [3]"),
    ("index", 2, "{d}/m.safetensors.index.json: preview draws one file; give a shard, with "
                 "--key m.safetensors.index.json (the key apply uses for every shard)"),
])
def test_bad_input_is_one_error_line(tmp_path: Path, case, code, message):
    d = tmp_path
    write_safetensors(d / "ints.safetensors", {"w": np.arange(3, dtype=np.int32)})
    (d / "bad.npy").write_bytes(b"not a tensor at all")
    (d / "old.png").write_bytes(b"keep me")
    (d / "m.safetensors.index.json").write_text("{}")
    ok = write_npy(d / "ok.npy", np.ones((2, 2), np.float32))
    args = {
        "missing": [str(d / "nope.npy"), "-o", str(d / "o.png")],
        "garbage": [str(d / "bad.npy"), "-o", str(d / "o.png")],
        "not-png": [ok, "-o", str(d / "out.jpg")],
        "exists": [ok, "-o", str(d / "old.png")],
        "no-match": [str(d / "ints.safetensors"), "-o", str(d / "o.png"), "--tensor",
                     "nothing*"],
        "int": [str(d / "ints.safetensors"), "-o", str(d / "o.png")],
        "bad-p": [ok, "-o", str(d / "o.png"), "-p", "1.5"],
        "channel-1d": [str(d / "ints.safetensors"), "-o", str(d / "o.png"), "--variant",
                       "channel", "--no-scale"],
        "index": [str(d / "m.safetensors.index.json"), "-o", str(d / "o.png")],
    }[case]
    before = {p: p.read_bytes() for p in d.iterdir()}
    run = run_cli(["preview", *args, "--seed", "1"])
    assert run.code == code
    assert one_error_line(run.err) == "Error: " + message.format(d=d)
    assert {p: p.read_bytes() for p in d.iterdir()} == before  # nothing new, nothing changed


def test_missing_option_is_a_usage_error(tmp_path: Path):
    run = run_cli(["preview", os.path.join(ROOT, "samples", "batch_nchw.npy")])
    assert run.code == 2 and "Missing option '-o' / '--output'" in one_error_line(run.err)
    run = run_cli(["preview", os.path.join(ROOT, "samples", "batch_nchw.npy"), "-o",
                   str(tmp_path / "x.png"), "--mask-out", str(tmp_path / "m.npy")])
    assert run.code == 2 and "No such option '--mask-out'" in one_error_line(run.err)
    assert not list(tmp_path.iterdir())


def test_without_pillow_one_line_and_exit_2(tmp_path: Path):
    out = tmp_path / "p.png"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["PIL"] = None  # as if Pillow were not installed
        from cli.main import main
        main(["preview", {os.path.join(ROOT, "samples", "batch_nchw.npy")!r}, "-o",
              {str(out)!r}, "--seed", "1"])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"Error: {NEEDS_PILLOW}\n"
    assert NEEDS_PILLOW == "preview needs Pillow: pip install 'tensor-dropout[preview]'"
    assert not out.exists()
    # and the other commands never needed it
    code = code.replace('"preview"', '"apply"').replace(repr(str(out)), repr(str(tmp_path /
                                                                               "o.npy")))
    proc = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


MEASURE = """
import sys
from cli.main import main
try:
    main(sys.argv[1:])
finally:
    status = open("/proc/self/status").read()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    sys.stderr.write("PEAK " + peak.split()[1] + "\\n")
"""


@pytest.mark.parametrize("options", [("-p", "0.5"), ("-p", "0.5", "--rng", "torch"),
                                     ("-p", "0.5", "--exact-count")],
                         ids=["default", "torch", "exact-count"])
def test_memory_stays_bounded_on_a_400mb_file(tmp_path: Path, options):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc to read the peak memory")
    shape = (100, 1000, 1000)  # float32: 400 MB, a sequence of 100 samples
    src = tmp_path / "big.npy"
    from dropout_core.formats import npy

    header = npy.header_bytes(np.dtype("<f4"), shape)
    with open(src, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 4 * int(np.prod(shape)))  # sparse: zeros, not on disk
    size = src.stat().st_size
    out = tmp_path / "big.png"
    proc = subprocess.run([sys.executable, "-c", MEASURE, "preview", str(src), "-o", str(out),
                           "--seed", "1", *options], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    peak_kib = int(proc.stderr.rsplit("PEAK ", 1)[1])
    assert peak_kib * 1024 < size / 3, f"peak {peak_kib} KiB for a {size} byte file"
    assert "of the part shown, [:4, :128, :128]" in preview_fn(str(src), seed=1).rows[0].title


# ----------------------------------------------------------------------------- docs


@pytest.mark.parametrize("name", list(make_preview_images.IMAGES))
def test_committed_docs_images_are_what_the_script_draws(name: str):
    committed = pixels(os.path.join(ROOT, name))
    now = np.asarray(make_preview_images.draw(name).image)
    assert committed.shape == now.shape and np.array_equal(committed, now), \
        f"{name} is out of date: run python scripts/make_preview_images.py"


def test_readme_shows_both_images():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for name in make_preview_images.IMAGES:
        assert f"]({name})" in readme


@pytest.mark.parametrize("array", [
    np.zeros((0, 5), np.float32),
    np.zeros((2, 0, 3, 3), np.float32),
    np.array(3.0, np.float64),
    (np.arange(6) * (1 + 2j)).astype(np.complex64).reshape(2, 3),
    np.array([True, False] * 5),
], ids=["empty-2d", "empty-4d", "scalar", "complex", "bool"])
def test_empty_scalar_complex_and_bool_tensors_are_drawn(tmp_path: Path, array):
    src = write_npy(tmp_path / "x.npy", array)
    options = ("-p", "0.5", "--seed", "6", "--no-scale")
    _, masks = applied(tmp_path, src, *options)
    out = tmp_path / "x.png"
    cli_preview(src, out, *options)
    [row] = preview_fn(src, p=0.5, seed=6, scale=False).rows
    assert row.elements == array.size and row.dropped == int((~masks[""]).sum())
    if not array.size:
        assert row.panel_size == (0, 0)
