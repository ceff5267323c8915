"""The options of ``apply`` and ``preview``, in bundles, named and defaulted as the library
names them.

Every option's destination is a field of ``DropoutParams`` or ``BatchOptions`` or a
keyword of ``apply_files`` or ``preview`` (``--share-axes`` <-> ``share_axes``), and its default is
read from there when it is first needed (a run, or ``--help``), never copied here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import click

from dropout_core.params import ALPHA_PRIME, MODES, RNGS, VARIANTS


@functools.cache
def library_defaults(command: str = "apply") -> dict:
    """Each library name's default for ``command``: DropoutParams and BatchOptions fields,
    and the keywords of its function (``apply_files``, or ``preview``, imported only for
    preview)."""
    import inspect

    from dropout_core import DropoutParams
    from dropout_core.batch import BatchOptions, apply_files

    if command == "preview":
        from dropout_core.previews import preview as function
    else:
        function = apply_files
    out = {}
    for f in dataclasses.fields(DropoutParams) + dataclasses.fields(BatchOptions):
        out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    for name, p in inspect.signature(function).parameters.items():
        if p.kind is p.KEYWORD_ONLY:
            out.setdefault(name, p.default)
    return out


class LibraryOption(click.Option):
    """An option whose default is the library's default for the same name."""

    def __init__(self, *decls, **attrs) -> None:
        attrs.setdefault("show_default", True)
        super().__init__(*decls, **attrs)

    def get_default(self, ctx: click.Context, call: bool = True):
        return library_defaults(ctx.command.name)[self.name]


class Axes(click.ParamType):
    """Comma-separated axes, ``0,2`` -> ``(0, 2)``."""

    name = "axes"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(a) for a in value.split(",")) if value else ()
        except ValueError:
            self.fail(f"expected comma-separated axes like 0,2, got {value!r}", param, ctx)


class LibraryType(click.ParamType):
    """A value the library parses from text (``module.function``), so the command line and
    Python read it alike; the library's UsageError becomes click's message."""

    def __init__(self, name: str, parser: str) -> None:
        self.name, self.parser = name, parser

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        import importlib

        from dropout_core import UsageError

        module, function = self.parser.rsplit(".", 1)
        try:
            return getattr(importlib.import_module(module), function)(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)


# an integer of any size up to 4300 digits; a number of bytes, 67108864 or 64MiB
Seed = functools.partial(LibraryType, "integer", "dropout_core.seeds.parse_seed")
Size = functools.partial(LibraryType, "bytes", "dropout_core.params.parse_size")


def _bundle(*options: Callable) -> Callable:
    def decorate(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _option(*decls: str, **attrs) -> Callable:
    return click.option(*decls, cls=LibraryOption, **attrs)


output_options = _bundle(
    _option("-o", "--output", metavar="PATH", help="Output file (- for stdout). One input."),
    _option("--out-dir", metavar="DIR", help="Write outputs here under their own names."),
    _option("--suffix", help="Added to each name in --out-dir, before the extension."),
    _option("--inplace", is_flag=True, help="Rewrite each input (atomically)."),
    _option("--force", is_flag=True,
            help="Replace an existing output file (also a --stats or --mask-out file)."),
    _option("--repeat", type=click.IntRange(min=1),
            help="Make N augmented copies of each input, in --out-dir."),
)

dropout_options = _bundle(
    _option("-p", "--p", "p", type=float, help="Drop probability, 0 <= p <= 1."),
    _option("-s", "--seed", type=Seed(), show_default="fresh",
            help="Seed, any integer; without it a fresh one (below 2**53) is drawn and "
                 "reported in the stats."),
    _option("--key", metavar="NAME", show_default="the input's file name",
            help="The file part of the stream key: the same masks under any file name."),
    _option("--mode", type=click.Choice(MODES),
            help="train drops and rescales; eval is the identity."),
    _option("--variant", type=click.Choice(VARIANTS),
            help="What one mask decision covers, and alpha dropout for SELU networks."),
    _option("--channel-axis", type=int,
            help="Channel axis for channel and feature-alpha (-1 for channels-last)."),
    _option("--share-axes", type=Axes(), metavar="AXES",
            help="Share one decision along these axes, e.g. 0,2 (like Keras' noise_shape)."),
    _option("--exact-count", is_flag=True,
            help="Drop exactly round(p * units) units, chosen uniformly."),
    _option("--scale/--no-scale",
            help="Scale survivors by 1/(1-p) (alpha: apply the affine correction)."),
    _option("--fill", type=float, show_default=f"0; alpha: -{ALPHA_PRIME!r}",
            help="Value of dropped elements."),
    _option("--rng", type=click.Choice(RNGS),
            help="default: counter-based, any split; torch: torch's CPU masks bit for bit."),
)

mask_in_option = _option(
    "--mask-in", metavar="PATH",
    help="Replay a saved keep mask instead of drawing (p: the recorded one, or -p).")

mask_options = _bundle(
    mask_in_option,
    _option("--mask-out", metavar="PATH",
            help="Save the keep mask (bool; .npy, .npz or .safetensors, which also records "
                 "p)."),
)

def _selection(verb: str, tensor_others: str, excluded: str) -> Callable:
    return _bundle(
        _option("--tensor", "tensors", multiple=True, metavar="GLOB", show_default="all",
                help=f"{verb} only matching tensors (repeatable); {tensor_others}."),
        _option("--exclude", multiple=True, metavar="GLOB", show_default="none",
                help=f"{excluded} (repeatable)."),
    )


selection_options = _selection("Process", "others are copied",
                               "Copy matching tensors unchanged")
preview_selection_options = _selection("Draw", "others are left out",
                                       "Leave matching tensors out of the picture")

run_options = _bundle(
    _option("-j", "--jobs", type=click.IntRange(min=1),
            help="Process files in N parallel processes (same results)."),
    _option("--dask-scheduler", metavar="ADDRESS",
            help="Process the files on this running Dask scheduler, e.g. tcp://host:8786 "
                 "(same results; needs the dask extra and files the workers can see)."),
    _option("--dask-split-size", type=Size(), metavar="BYTES", show_default="64MiB",
            help="With --dask-scheduler: a file larger than this is split into tasks of "
                 "about this many bytes (67108864, 64MiB, 1G), spread over the workers "
                 "(same results)."),
    _option("--chunk-size", type=click.IntRange(min=1),
            help="Elements per chunk: memory use only, never the result."),
    _option("--threads", type=click.IntRange(min=1), show_default="the usable cores",
            help="Threads per file; never changes the result."),
    _option("--stats", metavar="PATH", help="Write the JSON statistics here (- for stdout)."),
    _option("--keep-going", is_flag=True,
            help="A bad file is reported and listed in the stats; the others are still "
                 "processed (exit status 1)."),
    _option("--dry-run", is_flag=True,
            help="Check everything and print what would be written; write nothing."),
    click.option("-q", "--quiet", is_flag=True, help="No summary or progress on stderr."),
)

preview_options = _bundle(
    click.option("-o", "--output", metavar="PATH", required=True,
                 help="The PNG to write (named .png)."),
    _option("--force", is_flag=True, help="Replace an existing output file."),
    _option("--max-images", type=click.IntRange(min=1),
            help="Samples, and channels, drawn per tensor."),
    click.option("-q", "--quiet", is_flag=True, help="No summary on stderr."),
)
