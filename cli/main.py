"""tensor-dropout: parse options, call dropout_core, print.  Nothing else lives here.

Only dropout_core.params (the option choices) is imported at start-up; the rest of the
library inside the commands, so that --version and --help stay quick.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

import click

from .errors import EXIT_CODES, Group, command_error
from .options import (
    dropout_options,
    mask_in_option,
    mask_options,
    output_options,
    preview_options,
    preview_selection_options,
    run_options,
    selection_options,
)

TERMINAL = "refusing to write binary tensor data to a terminal; redirect stdout or use -o FILE"


def _version(ctx: click.Context, param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from dropout_core import __version__

    click.echo(f"tensor-dropout, version {__version__}")
    ctx.exit()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and exit.")
def cli() -> None:
    """Apply dropout to .npy and .safetensors files, reproducibly, with mask statistics."""


@cli.command(epilog=EXIT_CODES, short_help="Apply dropout to tensor files.")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@output_options
@dropout_options
@mask_options
@selection_options
@run_options
def apply(inputs: tuple[str, ...], quiet: bool, **kwargs) -> None:
    """Apply dropout to each INPUT (.npy, .safetensors, .npz, or a sharded checkpoint's
    .safetensors.index.json; - reads stdin).

    Every option is the library's parameter of the same name: --share-axes is
    DropoutParams(share_axes=...), --chunk-size is BatchOptions(chunk_size=...).

    \b
    Examples:
      tensor-dropout apply x.npy -o y.npy -p 0.3 --seed 7 --stats -
      tensor-dropout apply weights.safetensors --inplace -p 0.1 --seed 7
      cat x.npy | tensor-dropout apply - -o - -p 0.5 --seed 1 > y.npy
    """
    from dropout_core import DropoutError
    from dropout_core.batch import BatchOptions, apply_files

    ctx = click.get_current_context()
    params = _params(ctx, kwargs)
    options = BatchOptions(**_take(kwargs, BatchOptions))
    if kwargs["output"] == "-" and sys.stdout.isatty() and not options.dry_run:  # as gzip does
        raise click.UsageError(TERMINAL)
    progress = None if quiet or not sys.stderr.isatty() else _Progress()
    doc = apply_files(list(inputs), params=params, options=options, progress=progress, **kwargs)
    if progress:
        progress.close()
    if options.stats == "-":  # a file path was written by the library, atomically
        sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    if options.dry_run and options.stats != "-":
        for line in _plan_lines(doc):
            click.echo(line)
    failed = [f for f in doc["files"] if f.get("status") == "failed"]
    for f in failed:
        command_error(DropoutError(f["error"])).show()
    if not quiet and not options.dry_run:  # (a dry run printed its plan instead)
        for f in doc["files"]:
            if f.get("status") != "failed":
                click.echo(_summary(f), err=True)
        if doc["seed"] is not None:
            click.echo(f"seed {doc['seed']}, effective p {doc['effective_p']:.12g}", err=True)
    if failed:
        sys.stdout.flush()
        ctx.exit(1)


def _params(ctx: click.Context, kwargs: dict):
    """The DropoutParams of the options in ``kwargs`` (removed from it); with --mask-in and
    no -p, the p the mask was made with."""
    from dropout_core import DropoutParams
    from dropout_core.files import mask_p

    if kwargs["mask_in"] is not None:
        given = ctx.get_parameter_source("p") is not click.core.ParameterSource.DEFAULT
        kwargs["p"] = mask_p(kwargs["mask_in"], kwargs["p"] if given else None, "cli")
    return DropoutParams(**_take(kwargs, DropoutParams), interface="cli")


def _take(kwargs: dict, cls: type) -> dict:
    """Remove and return the options that are fields of the dataclass ``cls``."""
    import dataclasses

    return {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs}


def _plan_lines(doc: dict) -> list[str]:
    """--dry-run: per file what would be read and written, and each tensor's fate."""
    from dropout_core.errors import escape_name

    lines = []
    for f in doc["files"]:
        if f.get("status") == "failed":
            continue
        lines.append(f"would write {escape_name(_shown(f['output'], out=True))} from "
                     f"{escape_name(_shown(f['input']))} (key {escape_name(f['key'])}, "
                     f"seed {f['seed']})")
        for t in f["tensors"]:
            name = escape_name(t["name"]) if t["name"] else "(array)"
            what = (f"process, {t['units']} mask unit(s) of shape {t['mask_shape']}"
                    if t["status"] == "processed" and t["mask_shape"] is not None else
                    "copy unchanged" if t["status"] == "processed" else "skip (copied)")
            lines.append(f"  {name}  {t['dtype']}  {t['shape']}: {what}")
    lines.append("dry run: nothing was written")
    return lines


def _summary(f: dict) -> str:
    """One human line per file: what was read, what was written, what was dropped."""
    from dropout_core.errors import escape_name

    t = f["totals"]
    line = (f"{escape_name(_shown(f['input']))} -> {escape_name(_shown(f['output'], out=True))}: "
            f"{t['processed']} tensor(s) processed, {t['skipped']} skipped, dropped "
            f"{t['dropped']}/{t['numel']} ({100 * t['drop_fraction']:.2f}%)")
    if t["overflow"]:
        line += f", overflow {t['overflow']}"
    if f.get("copy") is not None:
        line += f", copy {f['copy']} seed {f['seed']}"
    return line


def _shown(path: str, out: bool = False) -> str:
    return path if path != "-" else ("<stdout>" if out else "<stdin>")


class _Progress:
    """A progress bar on stderr, only for a terminal and only once the work is long (> 1 s)."""

    def __init__(self, delay: float = 1.0, width: int = 30) -> None:
        self.start, self.delay, self.width, self.shown = time.monotonic(), delay, width, False

    def __call__(self, done: int, total: int) -> None:
        if not total or time.monotonic() - self.start < self.delay:
            return
        frac = min(1.0, done / total)
        fill = int(frac * self.width)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (self.width - fill)}] {100 * frac:5.1f}% "
                         f"{done / 2**20:,.0f}/{total / 2**20:,.0f} MiB")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


@cli.command(epilog=EXIT_CODES, short_help="Draw input, keep mask and output as a PNG.")
@click.argument("input", metavar="INPUT")
@preview_options
@dropout_options
@mask_in_option
@preview_selection_options
@click.pass_context
def preview(ctx: click.Context, input: str, quiet: bool, **kwargs) -> None:
    """Draw what apply would do to INPUT (.npy, .safetensors or .npz): for each chosen
    tensor a row of three panels, the input, the keep mask and the output, into a PNG.

    The options are apply's, and the bits drawn are the ones apply writes; nothing
    else is written, and only the part of each tensor that is drawn is read.
    --tensor and --exclude choose the tensors drawn.
    Needs Pillow: pip install 'tensor-dropout[preview]'.

    \b
    Examples:
      tensor-dropout preview samples/batch_nchw.npy -o preview.png -p 0.5 --seed 7
      tensor-dropout preview model.safetensors -o w.png --tensor 'encoder.*' --seed 1
    """
    from dropout_core.errors import escape_name
    from dropout_core.previews import preview as draw

    params = _params(ctx, kwargs)
    shown = draw(input, params=params, **kwargs)
    if not quiet:
        width, height = shown.image.size
        click.echo(f"{escape_name(_shown(input))} -> {escape_name(shown.output)}: "
                   f"{len(shown.rows)} tensor(s) drawn, {width}x{height} pixels", err=True)
        if shown.seed is not None:
            click.echo(f"seed {shown.seed}, effective p {params.effective_p():.12g}", err=True)


@cli.command(epilog=EXIT_CODES, short_help="Show the tensors in files.")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array, one object per file, instead of a table.")
@click.option("--digest", is_flag=True,
              help="Also each tensor's content digest (the stats' output_digest) and, for "
                   "bool masks, their mask_digest.")
@click.pass_context
def inspect(ctx: click.Context, files: tuple[str, ...], as_json: bool, digest: bool) -> None:
    """Show the tensors in each FILE: dtype, shape, zero fraction (kept/dropped for masks).

    A file that cannot be read gets an error line; the others are still shown,
    and the exit status is 1.
    """
    from dropout_core import DropoutError, inspect_file

    docs, status = [], 0
    for path in files:
        try:
            doc = inspect_file(path, digest=digest)
        except BrokenPipeError:
            raise
        except (DropoutError, OSError, MemoryError) as e:
            error = command_error(e)
            error.show()
            status = max(status, error.exit_code)
            continue
        if as_json:
            docs.append(doc)
        else:
            for line in _table(doc):
                click.echo(line)
    if as_json:
        click.echo(json.dumps(docs, indent=2))
    if status:
        ctx.exit(status)


def _table(doc: dict) -> list[str]:
    """The lines of one file: a heading, its metadata, one aligned row per tensor."""
    from dropout_core.errors import escape_name

    lines = [f"{escape_name(_shown(doc['file']))}: {doc['format']}, {doc['size']} bytes"]
    if "shards" in doc:
        lines[0] += f" in {len(doc['shards'])} shards"
    for k, v in (doc["metadata"] or {}).items():
        shown = escape_name(v) if isinstance(v, str) else json.dumps(v)
        lines.append(f"  metadata {escape_name(k)} = {shown}")
    rows = []
    for t in doc["tensors"]:
        name = "(array)" if doc["format"] == "npy" else escape_name(t["name"])
        rest = f"zeros {t['zeros']}/{t['numel']} ({100 * t['zero_fraction']:.2f}%)"
        if "kept" in t:
            rest += f"  kept {t['kept']} dropped {t['dropped']}"
        if t["nonfinite"]:
            rest += f"  nonfinite {t['nonfinite']}"
        if "shard" in t:
            rest += f"  in {escape_name(t['shard'])}"
        for key in ("digest", "mask_digest"):
            if key in t:
                rest += f"  {key} {t[key]}"
        rows.append((name, t["dtype"], str(t["shape"]), rest))
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[3]]))
    return lines


@cli.command(epilog=EXIT_CODES, short_help="Check a run against its stats.")
@click.argument("stats", metavar="STATS.json")
@click.pass_context
def verify(ctx: click.Context, stats: str) -> None:
    """Recompute every output a stats document describes and compare.

    Each input named in STATS.json is read again and each output recomputed in
    memory with the recorded options, seed and key; its content must match the
    recorded output_digest and the output file.  One line per file; exit 0 when
    everything matches, 1 otherwise.  Paths are read as recorded: run it where
    the run was made.
    """
    from dropout_core.errors import escape_name
    from dropout_core.files import verify as verify_run

    status = 0
    for r in verify_run(stats):
        shown = f"{escape_name(_shown(r['input']))} -> {escape_name(_shown(r['output'], True))}"
        if r["ok"]:
            click.echo(f"ok {shown}")
        else:
            click.echo(f"DIFFERS {shown}: {r['problem']}")
            status = 1
    ctx.exit(status)


def _terminate(signum: int, frame) -> None:
    # Ctrl-C, kill, a closed terminal: remove our temporary files and go, at once.
    # (Raising here instead could land inside a worker thread's lock and break it.)
    from dropout_core.atomic import remove_temporaries

    remove_temporaries()
    name = signal.Signals(signum).name
    text = "interrupted" if name == "SIGINT" else f"terminated by {name}"
    with contextlib.suppress(OSError):
        os.write(2, f"Error: {text}\n".encode())
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line 'Error: ...' on stderr for every failure, never a traceback."""
    handlers = {"SIGXFSZ": signal.SIG_IGN,  # a file-size limit becomes EFBIG, not a kill
                "SIGINT": _terminate, "SIGTERM": _terminate, "SIGHUP": _terminate}
    saved = {}
    for name, handler in handlers.items():
        if hasattr(signal, name):
            with contextlib.suppress(ValueError):  # not the main thread: leave them be
                saved[name] = signal.signal(getattr(signal, name), handler)
    try:
        cli.main(args=argv, prog_name="tensor-dropout")  # click's standalone mode: exits
    finally:
        for name, handler in saved.items():  # in-process callers (tests) get theirs back
            signal.signal(getattr(signal, name), handler)


if __name__ == "__main__":
    main()
