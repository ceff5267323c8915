"""See what a dropout does: each chosen tensor's input, keep mask and output, side by side.

``preview`` computes exactly what ``apply_file`` would for the same options (the
same plan, stream, key and kernel) but only for the block of each tensor that is
drawn, and draws one row of three panels per tensor into a PNG (Pillow, the
``preview`` extra, imported only here).

Layouts (the block shown; larger tensors are shown in part, and the title says
which part):

* 0-D and 1-D: a heat map strip, the first ``MAX_SIDE`` elements;
* 2-D ``(H, W)``: one image;
* 3-D ``(C, H, W)`` with at most 4 channels, or ``(H, W, C)`` with
  ``channel_axis=-1``: a row of channel images;
* 3-D otherwise, a sequence ``(B, T, D)``: one ``T x D`` heat map per sample;
* 4-D ``(N, C, H, W)``, or ``(N, H, W, C)`` with ``channel_axis=-1``: a grid,
  samples down, channels across; more dimensions (``(N, C, D, H, W)``) take
  index 0 of the middle axes.

At most ``max_images`` samples and channels, and ``MAX_SIDE`` elements along
each image axis.  Values are grey, normalised per panel: the 1st and 99th
percentiles of the panel's finite values are black and white (a constant
panel is mid grey); NaN, +inf and -inf have their own colours, complex values
show their magnitude.  The keep mask is drawn in ``KEPT`` and ``DROPPED``.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_write, check_target
from .dtypes import dtype_label
from .engine import CHUNK, dropout_block
from .errors import UsageError, escape_name
from .files import check_mask_in, check_selection, load_tensors, plan_file, replay_for
from .formats import TensorFile, TensorInfo, format_module, open_tensor_file
from .params import DropoutParams
from .plan import TensorPlan
from .seeds import file_key, resolve_seed
from .units import gather_block, keep_block

MAX_IMAGES = 4  # samples and channels drawn per tensor, by default
MAX_SIDE = 128  # elements along each axis of one image
TILE = 64  # pixels: a small image is enlarged by a whole factor up to about this size
MAX_ZOOM = 16
PERCENTILES = (1.0, 99.0)  # of a panel's finite values: black and white

KEPT = (0, 114, 178)  # blue
DROPPED = (230, 159, 0)  # orange
NAN = (204, 121, 167)  # reddish purple
POS_INF = (213, 94, 0)  # vermillion
NEG_INF = (86, 180, 233)  # sky blue
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)

MARGIN = 8  # pixels around the picture and between rows
GAP = 2  # pixels between the images of one panel
PANEL_GAP = 16  # pixels between the panels of a row
LINE = 14  # pixels per line of text (the bitmap font is 11 high)
SWATCH = 10

PANELS = ("input", "mask", "output")
NEEDS_PILLOW = "preview needs Pillow: pip install 'tensor-dropout[preview]'"


@dataclass(frozen=True)
class Layout:
    """How a tensor is drawn: the block shown and how it becomes a grid of 2-D images.

    ``np.transpose(block, perm).reshape(grid + tile)`` are the images, ``grid``
    (rows, columns) of them, each ``tile`` (height, width) elements.
    """

    kind: str  # "image" or "heatmap"
    location: tuple[slice, ...]  # the block shown, one slice per axis
    perm: tuple[int, ...]
    grid: tuple[int, int]
    tile: tuple[int, int]

    @property
    def zoom(self) -> tuple[int, int]:
        """Pixels per element (down, across): square for images, per axis for heat maps."""
        h, w = self.tile
        zy, zx = (max(1, min(MAX_ZOOM, TILE // max(d, 1))) for d in (h, w))
        if self.kind == "image":
            zy = zx = min(zy, zx)
        return zy, zx

    def images(self, block: np.ndarray) -> np.ndarray:
        """The block as (rows, columns, height, width) images."""
        return np.transpose(block, self.perm).reshape(self.grid + self.tile)


def layout(shape: tuple[int, ...], channel_axis: int = 1,
           max_images: int = MAX_IMAGES) -> Layout:
    """The layout of a tensor of ``shape`` (``channel_axis=-1``: channels last).

    >>> lay = layout((8, 3, 32, 32))
    >>> lay.kind, lay.grid, lay.tile, lay.zoom
    ('image', (4, 3), (32, 32), (2, 2))
    >>> layout((16, 200, 768)).location
    (slice(0, 4, None), slice(0, 128, None), slice(0, 128, None))
    """
    ndim = len(shape)
    last = ndim >= 3 and -ndim <= channel_axis < ndim and channel_axis % ndim == ndim - 1

    def first(axis: int, most: int) -> slice:
        return slice(0, min(shape[axis], most))

    if ndim <= 1:
        loc = (first(0, MAX_SIDE),) if ndim else ()
        n = loc[0].stop if ndim else 1
        return Layout("heatmap", loc, tuple(range(ndim)), (1, 1), (1, n))
    if ndim == 2:
        loc = (first(0, MAX_SIDE), first(1, MAX_SIDE))
        return Layout("image", loc, (0, 1), (1, 1), (loc[0].stop, loc[1].stop))
    if ndim == 3 and not last and shape[0] > 4:  # a sequence (B, T, D)
        loc = (first(0, max_images), first(1, MAX_SIDE), first(2, MAX_SIDE))
        return Layout("heatmap", loc, (0, 1, 2), (loc[0].stop, 1), (loc[1].stop, loc[2].stop))
    # images: (C, H, W), (H, W, C), (N, C, ..., H, W) or (N, ..., H, W, C)
    if ndim == 3:
        n_ax, c_ax, h_ax, w_ax = None, (2 if last else 0), (0 if last else 1), (1 if last else 2)
    else:
        n_ax, c_ax = 0, (ndim - 1 if last else 1)
        h_ax, w_ax = (ndim - 3, ndim - 2) if last else (ndim - 2, ndim - 1)
    loc = [slice(0, 1)] * ndim  # the other axes: index 0
    if n_ax is not None:
        loc[n_ax] = first(n_ax, max_images)
    loc[c_ax] = first(c_ax, max_images)
    loc[h_ax], loc[w_ax] = first(h_ax, MAX_SIDE), first(w_ax, MAX_SIDE)
    rest = [k for k in range(ndim) if k not in (n_ax, c_ax, h_ax, w_ax)]
    perm = tuple(rest + ([n_ax] if n_ax is not None else []) + [c_ax, h_ax, w_ax])
    rows = loc[n_ax].stop if n_ax is not None else 1
    return Layout("image", tuple(loc), perm, (rows, loc[c_ax].stop),
                  (loc[h_ax].stop, loc[w_ax].stop))


def shown_text(location: tuple[slice, ...], shape: tuple[int, ...]) -> str:
    """The part of a tensor a block is, in NumPy's words: ``[:4, :3, 0, :128]``.

    >>> shown_text((slice(0, 4), slice(0, 1), slice(0, 8)), (9, 5, 8))
    '[:4, 0, :]'
    """
    parts = []
    for sl, d in zip(location, shape, strict=True):
        if sl.stop - sl.start == d:
            parts.append(":")
        elif sl.stop - sl.start == 1:
            parts.append(str(sl.start))
        else:
            parts.append(f"{sl.start or ''}:{sl.stop}")
    return "[" + ", ".join(parts) + "]"


@dataclass
class PreviewRow:
    """One tensor's row: what was shown, how it was drawn, what the mask did there.

    ``origins`` are the top-left pixels of the three panels (``PANELS``);
    ``pixel(panel, r, c, i, j)`` is the top-left pixel of element ``(i, j)`` of
    image ``(r, c)`` of the grid.
    """

    file: str
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    layout: Layout
    shown: str  # the part drawn, "[:4, :3, :, :]"; whole when every axis is ":"
    elements: int  # drawn
    dropped: int  # of those drawn
    ranges: dict[str, tuple[float, float]]  # panel -> the values drawn black and white
    title: str
    notes: list[str] = field(default_factory=list)
    origins: dict[str, tuple[int, int]] = field(default_factory=dict)
    top: int = 0

    @property
    def whole(self) -> bool:
        return all(p == ":" for p in self.shown[1:-1].split(", ")) or not self.shape

    @property
    def drop_fraction(self) -> float:
        return self.dropped / self.elements if self.elements else 0.0

    @property
    def panel_size(self) -> tuple[int, int]:
        """(width, height) of each panel, in pixels."""
        (rows, cols), (h, w), (zy, zx) = self.layout.grid, self.layout.tile, self.layout.zoom
        if not rows * cols * h * w:  # an empty tensor: nothing to draw
            return 0, 0
        return cols * w * zx + (cols - 1) * GAP, rows * h * zy + (rows - 1) * GAP

    def pixel(self, panel: str, r: int, c: int, i: int, j: int) -> tuple[int, int]:
        (h, w), (zy, zx) = self.layout.tile, self.layout.zoom
        x0, y0 = self.origins[panel]
        return x0 + c * (w * zx + GAP) + j * zx, y0 + r * (h * zy + GAP) + i * zy


@dataclass
class Preview:
    """What ``preview`` drew: the image (a ``PIL.Image.Image``), its rows, the seed and key."""

    image: object
    rows: list[PreviewRow]
    seed: int | None
    key: str
    output: str | None = None

    def png(self) -> bytes:
        """The image as PNG bytes (no metadata, no time stamp: the same bytes every run)."""
        import io

        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()


def preview(input: str, output: str | None = None, *, params: DropoutParams | None = None,
            seed: int | None = None, key: str | None = None, tensors: tuple[str, ...] = (),
            exclude: tuple[str, ...] = (), mask_in: str | None = None,
            max_images: int = MAX_IMAGES, force: bool = False, **kwargs) -> Preview:
    """Draw each chosen tensor's input, keep mask and output, as ``apply_file`` computes them.

    The options are ``apply_file``'s (``params=`` or p=, variant=, ...; ``seed``,
    ``key``, ``tensors``, ``exclude``, ``mask_in``); nothing but ``output`` (a
    .png, written atomically; refused if it exists, unless ``force``) is
    written.  Only the block drawn is read, so memory does not grow with the
    tensor.  Needs Pillow (the ``preview`` extra).

    >>> shown = preview("samples/batch_nchw.npy", p=0.5, seed=7)  # doctest: +SKIP
    >>> shown.image.size, shown.rows[0].drop_fraction  # doctest: +SKIP
    """
    if params is None:
        params = DropoutParams(**kwargs)
    elif kwargs:
        raise UsageError("give params= or keyword options (p=, mode=, ...), not both")
    pil = _pillow()
    input = os.fspath(input)
    output = None if output is None else os.fspath(output)
    mask_in = None if mask_in is None else os.fspath(mask_in)
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise UsageError(f"{params.say('max_images')} must be a positive integer, got "
                         f"{max_images!r}")
    if output is not None and os.path.splitext(output)[1].lower() != ".png":
        raise UsageError(f"{escape_name(output)}: a preview is a PNG image; name it .png")
    from .sharded import is_index

    if is_index(input):
        raise UsageError(f"{escape_name(input)}: preview draws one file; give a shard, with "
                         f"{params.say('key')} {escape_name(os.path.basename(input))} (the key "
                         "apply uses for every shard)")
    check_mask_in(mask_in, seed, params)
    seed = resolve_seed(seed, needed=not (mask_in or params.identity))
    with open_tensor_file(input) as tf:
        check_selection([tf], tensors, exclude, params)
        if output is not None:
            check_target(output, force=force, inputs=[input], interface=params.interface)
        replay = replay_for(load_tensors(mask_in), tf) if mask_in else None
        key = key if key is not None else file_key(input)
        plans = plan_file(tf, params, seed, key, tensors=tensors, exclude=exclude,
                          replay=replay)
        if not plans:
            raise UsageError(f"{tf.where()}: no tensor is chosen ({params.say('tensor')} and "
                             f"{params.say('exclude')} leave none to draw)")
        rows, blocks = _compute(tf, plans, params, seed, max_images, mask_in)
    image = _draw(pil, rows, blocks)
    shown = Preview(image, rows, seed, key, output)
    if output is not None:
        with atomic_write(output) as f:
            image.save(f, format="PNG")
    return shown


def _pillow() -> types.SimpleNamespace:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise UsageError(NEEDS_PILLOW) from None
    return types.SimpleNamespace(Image=Image, ImageDraw=ImageDraw, ImageFont=ImageFont)


# ----------------------------------------------------------------------------- computing


class _Forward:
    """Serve increasing ranges from a source that only moves forward (a serial stream, a
    deflated member) by reading through the gaps, ``CHUNK`` elements at a time."""

    def __init__(self, fetch) -> None:
        self.fetch, self.pos = fetch, 0

    def __call__(self, a: int, b: int) -> np.ndarray:
        self.skip_to(a)
        out = self.fetch(a, b)
        self.pos = b
        return out

    def skip_to(self, a: int) -> None:
        while self.pos < a:
            e = min(a, self.pos + CHUNK)
            self.fetch(self.pos, e)
            self.pos = e


def read_block(fd: int, tf: TensorFile, t: TensorInfo, location: tuple[slice, ...]) -> np.ndarray:
    """The values of block ``location`` of tensor ``t``: only the runs it covers are read."""
    fmt = format_module(tf.format)
    read, sliced = fmt.reader(fd, tf, t, None)
    bshape = tuple(sl.stop - sl.start for sl in location)
    if sliced:  # Fortran order: the reader holds the tensor (as apply's does) and slices it
        return read(0, 0, location).reshape(bshape)

    def fetch(a: int, b: int) -> np.ndarray:
        return read(a, b, None)

    if getattr(fmt, "SEQUENTIAL", False):
        fetch = _Forward(fetch)
    return gather_block(fetch, t.shape, location, t.dtype)


def _keep(plan: TensorPlan, location: tuple[slice, ...], drain: bool) -> np.ndarray:
    """The keep bits of the block's elements, from the bound plan's source.

    A serial stream (torch) is walked from the tensor's first unit; ``drain``
    walks it to the tensor's end, where the next tensor's units begin.
    """
    bshape = tuple(sl.stop - sl.start for sl in location)
    if plan.identity:
        return np.ones(bshape, dtype=bool)
    uloc = tuple(slice(0, 1) if m == 1 else sl
                 for sl, m in zip(location, plan.mask_shape, strict=True))
    src = plan.source
    if src.serial:
        walk = _Forward(src.keep)
        bits = gather_block(walk, plan.mask_shape, uloc, bool)
        if drain:
            walk.skip_to(plan.units)
    else:
        bits = keep_block(src, plan.mask_shape, uloc)
    return np.broadcast_to(bits, bshape)


def _compute(tf: TensorFile, plans: dict[str, TensorPlan], params: DropoutParams,
             seed: int | None, max_images: int,
             mask_in: str | None) -> tuple[list[PreviewRow], list[tuple]]:
    """Each chosen tensor's block: (row, (input, keep, output)), in file order.

    Tensors are visited in the order ``run_file`` visits them, so a serial
    stream hands every tensor the units apply would.
    """
    fmt = format_module(tf.format)
    stream = params.stream_module()
    serial = hasattr(stream, "file_state")
    draws = any(not p.identity and not p.replayed for p in plans.values())
    state = stream.file_state(seed) if draws and serial else None
    order = [t for t in fmt.visit_order(tf.tensors, serial=serial) if t.name in plans]
    found = {}
    with open(tf.real_path, "rb") as f:
        for n, t in enumerate(order):
            plan = plans[t.name].bind(state)
            lay = layout(t.shape, params.channel_axis, max_images)
            x = read_block(f.fileno(), tf, t, lay.location)
            keep = _keep(plan, lay.location, drain=n + 1 < len(order))
            y = dropout_block(x, lay.location, t.shape, params, plan.seed, plan.file,
                              plan.tensor, plan=plan, dropped=~keep)
            found[t.name] = (_row(tf, t, plan, params, lay, keep, mask_in), (x, keep, y))
    chosen = [t.name for t in tf.tensors if t.name in found]
    return [found[n][0] for n in chosen], [found[n][1] for n in chosen]


def _row(tf: TensorFile, t: TensorInfo, plan: TensorPlan, params: DropoutParams,
         lay: Layout, keep: np.ndarray, mask_in: str | None) -> PreviewRow:
    dropped = int(keep.size - np.count_nonzero(keep))
    shown = shown_text(lay.location, t.shape)
    row = PreviewRow(tf.display, t.name, t.shape, dtype_label(t.dtype), lay, shown, keep.size,
                     dropped, {}, "")
    seed = "none" if plan.seed is None else str(plan.seed)
    name = escape_name(t.name) if tf.named else "(array)"
    parts = [escape_name(tf.display), name, f"{row.dtype} {list(t.shape)}", f"p={params.p:g}",
             f"seed={seed}", f"variant={params.variant}"]
    if params.exact_count:
        parts.append("exact-count")
        row.notes.append("exact count: the threshold was found over the whole tensor's keys")
    if params.rng != "default":
        parts.append(f"rng={params.rng}")
        row.notes.append("torch's stream is serial: it was drawn from the file's first unit "
                         "up to the part shown")
    if params.mode != "train":
        parts.append(f"mode={params.mode}")
    if mask_in is not None:
        parts.append(f"mask from {escape_name(mask_in)}")
    frac = f"dropped {100 * row.drop_fraction:.1f}%"
    parts.append(frac if row.whole else f"{frac} of the part shown, {shown}")
    row.title = "  ".join(parts)
    return row


# ----------------------------------------------------------------------------- drawing


def grey(values: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """RGB (uint8) of ``values``: grey between the 1st and 99th percentiles of the finite
    values (black to white), NaN and infinities in their colours; and that range.

    >>> rgb, (lo, hi) = grey(np.array([0.0, 1.0, np.nan]))
    >>> rgb[:, 0].tolist(), rgb[2].tolist()
    ([0, 255, 204], [204, 121, 167])
    """
    v = np.abs(values) if values.dtype.kind == "c" else values.astype(np.float64)
    finite = np.isfinite(v)
    lo = hi = 0.0
    if finite.any():
        lo, hi = (float(q) for q in np.percentile(v[finite], PERCENTILES))
    with np.errstate(invalid="ignore"):
        if hi > lo:
            g = np.round((np.clip(v, lo, hi) - lo) * (255.0 / (hi - lo)))
        else:
            g = np.full(v.shape, 128.0)
    g = np.where(finite, g, 0).astype(np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=-1)
    rgb[np.isnan(v)] = NAN
    rgb[v == np.inf] = POS_INF
    rgb[v == -np.inf] = NEG_INF
    return rgb, (lo, hi)


def _panel(row: PreviewRow, rgb: np.ndarray) -> np.ndarray:
    """The panel's pixels: the grid of images, enlarged, GAP apart."""
    lay = row.layout
    (rows, cols), (h, w), (zy, zx) = lay.grid, lay.tile, lay.zoom
    width, height = row.panel_size
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[...] = BACKGROUND
    if not out.size:
        return out
    images = np.transpose(rgb, lay.perm + (len(lay.perm),)).reshape(lay.grid + lay.tile + (3,))
    for r in range(rows):
        for c in range(cols):
            big = np.repeat(np.repeat(images[r, c], zy, axis=0), zx, axis=1)
            y, x = r * (h * zy + GAP), c * (w * zx + GAP)
            out[y:y + h * zy, x:x + w * zx] = big
    return out


def _ascii(text: str) -> str:
    """The bitmap font has Latin-1 glyphs only; names were escaped, anything else is \\u."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _draw(pil, rows: list[PreviewRow], blocks: list[tuple]) -> object:
    """The picture: a legend line, then per tensor a title, panel labels and three panels."""
    font = getattr(pil.ImageFont, "load_default_imagefont", pil.ImageFont.load_default)()

    def width_of(text: str) -> int:
        box = font.getbbox(_ascii(text))
        return box[2] - box[0]

    pictures, labels = [], []
    for row, (x, keep, y) in zip(rows, blocks, strict=True):
        rgb_in, row.ranges["input"] = grey(x)
        rgb_out, row.ranges["output"] = grey(y)
        mask = np.where(keep[..., None], np.array(KEPT, np.uint8), np.array(DROPPED, np.uint8))
        pictures.append([_panel(row, rgb_in), _panel(row, mask), _panel(row, rgb_out)])
        labels.append([f"input  {_range(row.ranges['input'])}", "keep mask",
                       f"output  {_range(row.ranges['output'])}"])
    legend = [("kept", KEPT), ("dropped", DROPPED), ("NaN", NAN), ("+inf", POS_INF),
              ("-inf", NEG_INF)]
    legend_text = "grey: each panel's 1st..99th percentile of finite values, black to white"
    widths = [sum(SWATCH + 4 + width_of(name) + 12 for name, _ in legend) + width_of(legend_text)]
    top = MARGIN + LINE + MARGIN
    for row, names in zip(rows, labels, strict=True):
        row.top = top
        x = MARGIN
        slot = max(row.panel_size[0], *(width_of(n) for n in names))
        for panel in PANELS:
            row.origins[panel] = (x, top + 2 * LINE)
            x += slot + PANEL_GAP
        widths += [x - PANEL_GAP - MARGIN, width_of(row.title)]
        top += 2 * LINE + row.panel_size[1] + MARGIN + MARGIN
    size = (MARGIN + max(widths) + MARGIN, top)
    image = pil.Image.new("RGB", size, BACKGROUND)
    draw = pil.ImageDraw.Draw(image)
    x = MARGIN
    for name, colour in legend:
        draw.rectangle([x, MARGIN + 1, x + SWATCH - 1, MARGIN + SWATCH], fill=colour)
        x += SWATCH + 4
        draw.text((x, MARGIN), name, fill=INK, font=font)
        x += width_of(name) + 12
    draw.text((x, MARGIN), legend_text, fill=INK, font=font)
    for row, panels, names in zip(rows, pictures, labels, strict=True):
        draw.text((MARGIN, row.top), _ascii(row.title), fill=INK, font=font)
        for panel, pixels, name in zip(PANELS, panels, names, strict=True):
            px, py = row.origins[panel]
            draw.text((px, row.top + LINE), _ascii(name), fill=INK, font=font)
            if pixels.size:
                image.paste(pil.Image.fromarray(pixels, "RGB"), (px, py))
    return image


def _range(r: tuple[float, float]) -> str:
    return f"black {r[0]:.3g}, white {r[1]:.3g}"


__all__ = ["Layout", "Preview", "PreviewRow", "grey", "layout", "preview", "read_block"]
