"""tensor-dropout benchmarks: one command, a table of medians and ratios.

    python benchmarks/run.py            # the full run (about 15 minutes, ~15 GB of disk)
    python benchmarks/run.py --quick    # smaller sizes, fewer runs (a couple of minutes)
    python benchmarks/run.py --only kernel,command

Sections (each against a baseline timed in the same run, A/B interleaved, so a
ratio holds when a shared machine's speed drifts; medians are quoted):

* kernel   ``dropout()`` on 2**26 float32 at p=0.1 (default stream) against
           ``np.copyto``, naive NumPy (``rng.random(n) >= p``, ``x * mask / (1 - p)``)
           and ``torch.nn.functional.dropout`` (only when torch is importable).
* dtypes   the same kernel on float16, bfloat16 and float64, per byte against float32.
* command  ``tensor-dropout apply`` on a 1 GiB float32 .npy and a 1 GiB .safetensors
           against ``cp`` of the same file (inputs in the page cache, outputs beside
           them), plus the reference ``safetensors`` load_file + save_file round trip.
* rss      peak RSS of the whole command on a 4 GiB input, both formats, with -o and
           with --inplace (``resource.getrusage(RUSAGE_CHILDREN)`` of a fresh wrapper).
* torch    torch-exact mode (``rng="torch"``, 2**24 float32) against torch's F.dropout.

Big files go to --tmp (default: ./bench-tmp under the current directory) and are
deleted at the end.  Run it with an interpreter that has torch to get the torch
rows; the command rows run ``python -m cli.main`` (or ``tensor-dropout`` from PATH
when this interpreter lacks click).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# torch's OpenMP workers would otherwise spin after each call and steal the
# second core from whatever is timed next in this process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
P = 0.1
SEED = 1

RSS_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "rc": r.returncode, "maxrss_kib": u.ru_maxrss,
                  "user": u.ru_utime, "sys": u.ru_stime}))
"""


# ----------------------------------------------------------------------------- helpers

def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{min(xs) * 1e3:.0f}-{max(xs) * 1e3:.0f}"


def interleave(cands: dict, rounds: int, *, prepare=None) -> dict[str, list[float]]:
    """Time each candidate once per round, in turn (A B C A B C ...); one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in cands}
    for r in range(rounds + 1):
        for name, fn in cands.items():
            if prepare:
                prepare(name)
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            if r:
                times[name].append(dt)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of a/b, pair by pair."""
    return med([x / y for x, y in zip(times[a], times[b], strict=True)])


class Table:
    def __init__(self, title: str, cols: list[str]) -> None:
        self.title, self.cols, self.rows, self.notes = title, cols, [], []

    def add(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        out = [f"\n### {self.title}\n", "| " + " | ".join(self.cols) + " |",
               "|" + "|".join("---" for _ in self.cols) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        out += [""] + self.notes if self.notes else []
        return "\n".join(out)


def try_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ----------------------------------------------------------------------------- files

def _block(dtype: np.dtype, nbytes: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    x = rng.standard_normal(nbytes // dtype.itemsize, dtype=np.float32)
    return x.astype(dtype)


def _fill(f, dtype: np.dtype, nbytes: int) -> None:
    blk = _block(dtype, min(nbytes, 16 * MiB)).view(np.uint8)
    done = 0
    while done < nbytes:
        n = min(blk.size, nbytes - done)
        f.write(blk[:n].data)
        done += n


def write_npy(path: str, dtype, nbytes: int) -> None:
    dtype = np.dtype(dtype)
    n = nbytes // dtype.itemsize
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": (n,)})
        _fill(f, dtype, n * dtype.itemsize)


ST_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def write_safetensors(path: str, dtype, nbytes: int, tensor_bytes: int = 64 * MiB) -> None:
    """A model-like file: nbytes / tensor_bytes tensors of shape (4096, k)."""
    dtype = np.dtype(dtype)
    count = max(1, nbytes // tensor_bytes)
    cols = tensor_bytes // dtype.itemsize // 4096
    header, off = {"__metadata__": {"format": "np"}}, 0
    for i in range(count):
        size = 4096 * cols * dtype.itemsize
        header[f"layers.{i:03d}.weight"] = {"dtype": ST_NAMES[dtype.name], "shape": [4096, cols],
                                            "data_offsets": [off, off + size]}
        off += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        _fill(f, dtype, off)


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(16 * MiB):
            pass


def cli_prefix() -> list[str]:
    try:
        import click  # noqa: F401

        return [sys.executable, "-m", "cli.main"]
    except ImportError:
        exe = shutil.which("tensor-dropout")
        if exe is None:
            raise SystemExit("no CLI: install the project or put tensor-dropout on PATH") from None
        return [exe]


def run_measured(cmd: list[str]) -> dict:
    """Run cmd under a fresh wrapper: wall time, exit code, peak RSS (KiB), CPU times."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *cmd], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"wrapper failed: {r.stderr}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res['rc']}: {r.stderr.strip()}")
    return res


def rm(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def interleave_commands(cmds: dict[str, tuple[list[str], str]], rounds: int,
                        inputs: tuple[str, ...] = ()) -> dict:
    """Whole commands, interleaved; before each run the output is removed, the inputs
    are read (so they are in the page cache) and dirty pages are synced."""
    res: dict[str, list[dict]] = {k: [] for k in cmds}
    for r in range(rounds + 1):
        for name, (cmd, out) in cmds.items():
            rm(out)
            for path in inputs:
                warm(path)
            os.sync()
            m = run_measured(cmd)
            if r:
                res[name].append(m)
        for _, out in cmds.values():
            rm(out)
    return res


# ----------------------------------------------------------------------------- sections

def bench_kernel(a, torch) -> list[Table]:
    from dropout_core import dropout

    n = a.kernel_n
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dst = np.empty_like(x)
    work = np.empty_like(x)
    np.copyto(work, x)
    cands = {
        "np.copyto(dst, x)": lambda: np.copyto(dst, x),
        "dropout(x) -> new array": lambda: dropout(x, P, seed=SEED, file="bench.npy"),
        "dropout(x, inplace=True)": lambda: dropout(work, P, seed=SEED, file="bench.npy",
                                                    inplace=True),
        "dropout(x, inplace=True), 1 thread": lambda: _one_thread(
            lambda: dropout(work, P, seed=SEED, file="bench.npy", inplace=True)),
        "x.copy()": lambda: x.copy(),
        "naive NumPy": lambda: _naive(x),
    }
    if torch is not None:
        xt = torch.from_numpy(x)
        cands["torch F.dropout"] = lambda: torch.nn.functional.dropout(xt, P, training=True)

    def prepare(name):
        if name.startswith("dropout(x, inplace=True)"):
            np.copyto(work, x)

    times = interleave(cands, a.rounds, prepare=prepare)
    t = Table(f"In-memory kernel: float32, n = 2**{n.bit_length() - 1}, p = {P} "
              f"({a.rounds} rounds, interleaved)",
              ["what", "median ms", "min-max ms", "ns/element", "/ np.copyto",
               "torch / this" if torch else "-"])
    for name, ts in times.items():
        tr = f"{ratio(times, 'torch F.dropout', name):.1f}" if torch else ""
        t.add(name, f"{med(ts) * 1e3:.1f}", spread(ts), f"{med(ts) * 1e9 / n:.2f}",
              f"{ratio(times, name, 'np.copyto(dst, x)'):.2f}", tr)
    from dropout_core import effective_p
    from dropout_core.params import DropoutParams

    eff = effective_p(DropoutParams(p=P))
    t.rows.append([f"effective p = {eff!r}; |effective p - p| = {abs(eff - P):.3g} "
                   f"(<= 2**-33 = {2.0 ** -33:.3g})", "", "", "", "", ""])
    if torch is not None:
        t.rows.append([f"torch {torch.__version__}, {torch.get_num_threads()} threads", "", "",
                       "", "", ""])
    return [t]


def _one_thread(fn):
    """Run fn with the library's compute threads set to one (its default is the cores)."""
    from dropout_core import threads as pipeline

    saved = pipeline.default_threads
    pipeline.default_threads = lambda: 1
    try:
        return fn()
    finally:
        pipeline.default_threads = saved


def _naive(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    mask = rng.random(x.size) >= P
    return x * mask / (1 - P)


def bench_dtypes(a, torch) -> list[Table]:
    import ml_dtypes

    from dropout_core import dropout

    nbytes = a.dtype_bytes
    dts = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
           "float64": np.float64}
    src = {k: _block(np.dtype(v), nbytes) for k, v in dts.items()}
    work = {k: np.empty_like(v) for k, v in src.items()}
    cands = {k: (lambda k=k: dropout(work[k], P, seed=SEED, file="bench.npy", inplace=True))
             for k in dts}
    times = interleave(cands, a.rounds, prepare=lambda k: np.copyto(work[k], src[k]))
    t = Table(f"Other dtypes, in-memory kernel (inplace=True), {nbytes // MiB} MiB each, "
              f"p = {P}", ["dtype", "median ms", "min-max ms", "ns/byte", "ns/element",
                           "per byte / float32"])
    for k, ts in times.items():
        n = src[k].size
        t.add(k, f"{med(ts) * 1e3:.1f}", spread(ts), f"{med(ts) * 1e9 / nbytes:.3f}",
              f"{med(ts) * 1e9 / n:.2f}", f"{ratio(times, k, 'float32'):.2f}")
    return [t]


def bench_command(a, torch) -> list[Table]:
    tmp = a.tmp
    cli = cli_prefix()
    tables = []
    size = a.file_bytes
    files = {"npy": os.path.join(tmp, "bench-in.npy"),
             "safetensors": os.path.join(tmp, "bench-in.safetensors")}
    write_npy(files["npy"], np.float32, size)
    write_safetensors(files["safetensors"], np.float32, size)
    for fmt, path in files.items():
        warm(path)
        out = os.path.join(tmp, f"bench-out.{fmt}")
        cp_out = os.path.join(tmp, f"bench-cp.{fmt}")
        cmds = {
            "cp": (["cp", path, cp_out], cp_out),
            "tensor-dropout apply": (cli + ["apply", path, "-o", out, "-p", str(P), "--seed",
                                            str(SEED), "-q"], out),
            # what the tool promises on top of cp: the output is on disk when it exits
            "cp + sync of the copy": (["sh", "-c", 'cp "$0" "$1" && sync "$1"', path, cp_out],
                                      cp_out),
        }
        ref_python = _safetensors_python()
        if fmt == "safetensors" and ref_python:
            ref_out = os.path.join(tmp, "bench-ref.safetensors")
            cmds["safetensors load_file + save_file"] = (
                [ref_python, "-c", "import sys; from safetensors.numpy import load_file, "
                 "save_file; save_file(load_file(sys.argv[1]), sys.argv[2])", path, ref_out],
                ref_out)
        res = interleave_commands(cmds, a.cmd_rounds, (path,))
        walls = {k: [m["wall"] for m in v] for k, v in res.items()}
        t = Table(f"Whole command, {size / GiB:g} GiB float32 .{fmt} in the page cache "
                  f"({a.cmd_rounds} rounds, interleaved; dirty pages synced between runs)",
                  ["command", "median s", "min-max ms", "/ cp", "user s", "sys s",
                   "peak RSS MiB"])
        for k, ms in res.items():
            t.add(k, f"{med(walls[k]):.3f}", spread(walls[k]), f"{ratio(walls, k, 'cp'):.2f}",
                  f"{med([m['user'] for m in ms]):.2f}", f"{med([m['sys'] for m in ms]):.2f}",
                  f"{max(m['maxrss_kib'] for m in ms) / 1024:.0f}")
        tables.append(t)
    for path in files.values():
        rm(path)
    if not a.quick:
        tables.append(_command_dtypes(a, cli))
    return tables


def _command_dtypes(a, cli) -> Table:
    import ml_dtypes

    size = a.file_bytes
    dts = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
           "float64": np.float64}
    cmds = {}
    paths = []
    for k, v in dts.items():
        path = os.path.join(a.tmp, f"bench-{k}.safetensors")
        out = os.path.join(a.tmp, f"bench-{k}-out.safetensors")
        write_safetensors(path, np.dtype(v), size)
        paths.append(path)
        cmds[k] = (cli + ["apply", path, "-o", out, "-p", str(P), "--seed", str(SEED), "-q"],
                   out)
    res = interleave_commands(cmds, a.cmd_rounds, tuple(paths))
    for p in paths:
        rm(p)
    walls = {k: [m["wall"] for m in v] for k, v in res.items()}
    t = Table(f"Other dtypes, whole command, {size / GiB:g} GiB .safetensors each",
              ["dtype", "median s", "min-max ms", "ns/byte", "per byte / float32"])
    for k in dts:
        t.add(k, f"{med(walls[k]):.3f}", spread(walls[k]), f"{med(walls[k]) * 1e9 / size:.3f}",
              f"{ratio(walls, k, 'float32'):.2f}")
    return t


def _safetensors_python() -> str | None:
    """An interpreter that has the reference safetensors library: this one, or python on PATH."""
    for exe in (sys.executable, shutil.which("python3"), shutil.which("python")):
        if exe and subprocess.run([exe, "-c", "import safetensors.numpy"],
                                  capture_output=True).returncode == 0:
            return exe
    return None


def bench_rss(a, torch) -> list[Table]:
    cli = cli_prefix()
    size = a.rss_bytes
    t = Table(f"Peak RSS of the whole command, {size / GiB:g} GiB float32 input",
              ["format", "output", "peak RSS MiB", "wall s", "user s", "sys s"])
    for fmt, writer in (("npy", write_npy), ("safetensors", write_safetensors)):
        path = os.path.join(a.tmp, f"bench-rss.{fmt}")
        out = os.path.join(a.tmp, f"bench-rss-out.{fmt}")
        writer(path, np.float32, size)
        try:
            for how, extra in (("-o", ["-o", out]), ("--inplace", ["--inplace"])):
                rm(out)
                os.sync()
                m = run_measured(cli + ["apply", path, *extra, "-p", str(P), "--seed", str(SEED),
                                        "-q"])
                t.add(fmt, how, f"{m['maxrss_kib'] / 1024:.0f}", f"{m['wall']:.2f}",
                      f"{m['user']:.2f}", f"{m['sys']:.2f}")
        finally:
            rm(out)
            rm(path)
    m = run_measured(cli + ["--version"])
    t.rows.append([f"for scale: `tensor-dropout --version` alone peaks at "
                   f"{m['maxrss_kib'] / 1024:.0f} MiB", "", "", "", "", ""])
    return [t]


def bench_torch_mode(a, torch) -> list[Table]:
    if not os.path.exists(os.path.join(ROOT, "dropout_core", "streams", "torch_cpu.py")):
        return []
    from dropout_core import dropout

    n = a.torch_n
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    cands = {"dropout(x, rng='torch')": lambda: dropout(x, P, seed=SEED, rng="torch")}
    if torch is not None:
        xt = torch.from_numpy(x)

        def tdrop():
            torch.manual_seed(SEED)
            return torch.nn.functional.dropout(xt, P, training=True)

        cands["torch F.dropout"] = tdrop
    times = interleave(cands, a.rounds)
    t = Table(f"torch-exact mode, float32, n = 2**{n.bit_length() - 1}, p = {P}",
              ["what", "median ms", "min-max ms", "ns/element", "/ torch F.dropout"])
    for k, ts in times.items():
        r = f"{ratio(times, k, 'torch F.dropout'):.2f}" if torch else ""
        t.add(k, f"{med(ts) * 1e3:.1f}", spread(ts), f"{med(ts) * 1e9 / n:.2f}", r)
    return [t]


SECTIONS = {"kernel": bench_kernel, "dtypes": bench_dtypes, "command": bench_command,
            "rss": bench_rss, "torch": bench_torch_mode}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "?"


def machine() -> str:
    cpu = cpu_name()
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
            mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, {platform.system()} {platform.release()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few runs")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections ({','.join(SECTIONS)})")
    ap.add_argument("--rounds", type=int, default=None, help="runs per in-process candidate")
    ap.add_argument("--tmp", default=os.path.join(os.getcwd(), f"bench-tmp-{os.getpid()}"),
                    help="directory for the big files (deleted afterwards)")
    a = ap.parse_args()
    q = a.quick
    a.rounds = a.rounds or (5 if q else 11)
    a.cmd_rounds = 3 if q else 7
    a.kernel_n = 1 << (24 if q else 26)
    a.torch_n = 1 << (22 if q else 24)
    a.dtype_bytes = (64 if q else 256) * MiB
    a.file_bytes = (256 * MiB) if q else GiB
    a.rss_bytes = GiB if q else 4 * GiB
    sections = [s for s in a.only.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            raise SystemExit(f"unknown section {s!r}; choose from {', '.join(SECTIONS)}")
    made_tmp = not os.path.exists(a.tmp)
    if {"command", "rss"} & set(sections):
        os.makedirs(a.tmp, exist_ok=True)
        need = (4 * a.file_bytes + (0 if q else 5 * a.file_bytes)) if "command" in sections \
            else 0
        need = max(need, 2 * a.rss_bytes + 64 * MiB if "rss" in sections else 0)
        free = shutil.disk_usage(a.tmp).free
        if free < need * 1.1:
            raise SystemExit(f"{a.tmp}: {free / GiB:.1f} GiB free, need {need / GiB:.1f} GiB")
    torch = try_torch()
    print(f"# tensor-dropout benchmarks{' (--quick)' if q else ''}")
    print(f"machine: {machine()}")
    print(f"torch: {torch.__version__ if torch else 'not importable (torch rows skipped)'}")
    sys.stdout.flush()
    try:
        for s in sections:
            for t in SECTIONS[s](a, torch):
                print(t.render())
                sys.stdout.flush()
    finally:
        if made_tmp and os.path.isdir(a.tmp):
            shutil.rmtree(a.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
