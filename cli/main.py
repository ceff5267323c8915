"""tensor-dropout: parse options, call dropout_core, print.  Nothing else lives here."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time

import click

import dropout_core as core
from dropout_core.atomic import remove_temporaries
from dropout_core.batch import BatchOptions, apply_files
from dropout_core.errors import escape_name
from dropout_core.params import MODES, RNGS, VARIANTS

EXIT_CODES = "Exit status: 0 done, 1 bad data or a bad file, 2 bad command line."


def _check_p(ctx, param, value: float) -> float:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"p must be between 0 and 1 (0 <= p <= 1), got {value}")
    return value


def _parse_axes(ctx, param, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(a) for a in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated axes like 0,2, got {value!r}") \
            from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(core.__version__, prog_name="tensor-dropout")
def cli() -> None:
    """Apply dropout to .npy and .safetensors files, reproducibly, with mask statistics."""


@cli.command(epilog=EXIT_CODES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", metavar="PATH", help="Output file (- for stdout). One input.")
@click.option("--out-dir", metavar="DIR", help="Write outputs here under their own names.")
@click.option("--suffix", default="", show_default=True,
              help="Added to each name in --out-dir, before the extension.")
@click.option("--inplace", is_flag=True, help="Rewrite each input (atomically).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("-p", "--p", "p", type=float, default=0.5, show_default=True, callback=_check_p,
              help="Drop probability, 0 <= p <= 1.")
@click.option("-s", "--seed", type=int, default=None,
              help="Seed; without it a fresh one is drawn and reported in the stats.")
@click.option("--mode", type=click.Choice(MODES), default="train", show_default=True,
              help="train drops and rescales; eval is the identity.")
@click.option("--variant", type=click.Choice(VARIANTS), default="element", show_default=True,
              help="What one mask decision covers, and alpha dropout for SELU networks.")
@click.option("--channel-axis", type=int, default=1, show_default=True,
              help="Channel axis for channel and feature-alpha (-1 for channels-last).")
@click.option("--share-axes", callback=_parse_axes, metavar="AXES",
              help="Share one decision along these axes, e.g. 0,2 (like Keras' noise_shape).")
@click.option("--exact-count", is_flag=True,
              help="Drop exactly round(p * units) units, chosen uniformly.")
@click.option("--scale/--no-scale", default=True, show_default=True,
              help="Scale survivors by 1/(1-p) (alpha: apply the affine correction).")
@click.option("--fill", type=float, default=None,
              help="Value of dropped elements [default: 0; alpha: -1.7580993408473766].")
@click.option("--rng", type=click.Choice(RNGS), default="default", show_default=True,
              help="default: counter-based, any split; torch: torch's CPU masks bit for bit.")
@click.option("--mask-in", metavar="PATH", help="Replay a saved keep mask instead of drawing.")
@click.option("--mask-out", metavar="PATH", help="Save the keep mask (bool; .npy/.safetensors).")
@click.option("--tensor", "tensors", multiple=True, metavar="GLOB",
              help="Process only matching tensors (repeatable); others are copied.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Copy matching tensors unchanged (repeatable).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Make N augmented copies of each input, in --out-dir.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Process files in N parallel processes (same results).")
@click.option("--dask-scheduler", metavar="ADDRESS",
              help="Process the files on this running Dask scheduler, e.g. tcp://host:8786 "
                   "(same results; needs the dask extra and files the workers can see).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="Elements per chunk: memory use only, never the result.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads per file [default: the usable cores, at most 8]; same results.")
@click.option("--stats", "stats_path", metavar="PATH",
              help="Write the JSON statistics here (- for stdout).")
@click.option("-q", "--quiet", is_flag=True, help="No summary or progress on stderr.")
def apply(inputs, output, out_dir, suffix, inplace, force, p, seed, mode, variant,
          channel_axis, share_axes, exact_count, scale, fill, rng, mask_in, mask_out, tensors,
          exclude, repeat, jobs, chunk_size, threads, stats_path, quiet, dask_scheduler) -> None:
    """Apply dropout to each INPUT (.npy or .safetensors; - reads stdin).

    \b
    Examples:
      tensor-dropout apply x.npy -o y.npy -p 0.3 --seed 7 --stats -
      tensor-dropout apply weights.safetensors --inplace -p 0.1 --seed 7
      cat x.npy | tensor-dropout apply - -o - -p 0.5 --seed 1 > y.npy
    """
    if output == "-" and stats_path == "-":
        raise click.UsageError("-o - and --stats - both want stdout; write one to a file")
    params = core.DropoutParams(p=p, mode=mode, variant=variant, scale=scale, fill=fill,
                                channel_axis=channel_axis, share_axes=share_axes,
                                exact_count=exact_count, rng=rng, interface="cli")
    opts = BatchOptions(force=force, tensors=tensors, exclude=exclude, mask_in=mask_in,
                        mask_out=mask_out, stats=stats_path, chunk_size=chunk_size,
                        threads=threads)
    progress = None if quiet or not sys.stderr.isatty() else _Progress()
    doc = apply_files(list(inputs), params=params, seed=seed, output=output, out_dir=out_dir,
                      suffix=suffix, inplace=inplace, repeat=repeat, jobs=jobs, options=opts,
                      progress=progress, dask_scheduler=dask_scheduler)
    if progress:
        progress.close()
    if stats_path == "-":  # a file path was written by the library, atomically
        sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    if not quiet:
        for f in doc["files"]:
            click.echo(_summary(f), err=True)
        if doc["seed"] is not None:
            click.echo(f"seed {doc['seed']}, effective p {doc['effective_p']!r}", err=True)


def _summary(f: dict) -> str:
    """One human line per file: what was read, what was written, what was dropped."""
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


@cli.command(epilog=EXIT_CODES)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(files, as_json) -> None:
    """Show the tensors in each FILE: dtype, shape, zero fraction (kept/dropped for masks)."""
    docs = [core.inspect_file(f) for f in files]
    if as_json:
        click.echo(json.dumps(docs if len(docs) > 1 else docs[0], indent=2))
        return
    for d in docs:
        click.echo(f"{escape_name(_shown(d['file']))}: {d['format']}, {d['size']} bytes")
        if d["metadata"]:
            for k, v in d["metadata"].items():
                click.echo(f"  metadata {escape_name(k)} = {escape_name(v)}")
        for t in d["tensors"]:
            name = "(array)" if d["format"] == "npy" else escape_name(t["name"])
            line = (f"  {name}  {t['dtype']}  {t['shape']}  "
                    f"zeros {t['zeros']}/{t['numel']} ({100 * t['zero_fraction']:.2f}%)")
            if "kept" in t:
                line += f"  kept {t['kept']} dropped {t['dropped']}"
            if t["nonfinite"]:
                line += f"  nonfinite {t['nonfinite']}"
            click.echo(line)


def _terminate(signum: int, frame) -> None:
    # Ctrl-C, kill, a closed terminal: remove our temporary files and go, at once.
    # (Raising here instead could land inside a worker thread's lock and break it.)
    remove_temporaries()
    name = signal.Signals(signum).name
    text = "interrupted" if name == "SIGINT" else f"terminated by {name}"
    with contextlib.suppress(OSError):
        os.write(2, f"Error: {text}\n".encode())
    os._exit(128 + signum)


# click >= 8.2 raises this for a group called without a command; older versions exit 0.
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


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
        _run(argv)
    finally:
        for name, handler in saved.items():  # in-process callers (tests) get theirs back
            signal.signal(getattr(signal, name), handler)


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="tensor-dropout", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:  # click turns KeyboardInterrupt into Abort
        _fail("interrupted", 130)
    except _NO_ARGS as e:  # bare `tensor-dropout`: the help, not an error line
        sys.stderr.write(e.ctx.get_help() + "\n")
        sys.stderr.flush()
        sys.exit(2)
    except click.UsageError as e:
        _fail(e.format_message(), 2)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except core.DropoutError as e:
        _fail(str(e), e.exit_code)
    except BrokenPipeError:
        _quiet_exit()
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except MemoryError:
        _fail("out of memory", 1)
    except OSError as e:
        where = f"{escape_name(e.filename)}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("TENSOR_DROPOUT_DEBUG"):
            raise
        _fail(f"internal error ({type(e).__name__}: {e}); set TENSOR_DROPOUT_DEBUG=1 for "
              "details and please report it", 1)
    _flush_stdout()
    sys.exit(0)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_exit()


def _quiet_exit() -> None:
    # stdout was closed early (| head): exit without a traceback or a second error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


def _fail(message: str, code: int) -> None:
    text = " ".join(message.split("\n"))  # one line, always
    try:
        sys.stderr.write(f"Error: {text}\n")
        sys.stderr.flush()
    except OSError:
        pass
    sys.exit(code)


if __name__ == "__main__":
    main()
