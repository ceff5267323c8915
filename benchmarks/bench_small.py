"""tensor-dropout small-work benchmark: start-up, many small files, --jobs, per-call cost.

    python benchmarks/bench_small.py                  # full run (3-6 minutes)
    python benchmarks/bench_small.py --quick          # fewer repeats (under 2 minutes)
    python benchmarks/bench_small.py --json out.json --torch-python /path/to/venv/bin/python
    python benchmarks/bench_small.py --only startup,files

Needs only the Python standard library and NumPy (plus the tool under test).  Every
row is a ratio against a baseline timed in the same run, the runs interleaved
(A B A B ...; one untimed warm-up round first, except for the files section under
--quick), so a ratio holds while a shared
machine's speed drifts.  Whole commands: median of N runs, ratio of the medians.
Per-call rows: best of several repeats of a few thousand calls.  On a busy machine
each section stops repeating at its time budget (never under a minimum count); the
tables state the counts actually run.

Sections (``--only``):

* startup  ``tensor-dropout --version``, ``inspect small.npy`` and ``apply`` of the 1x3x3
           sample against ``python -c "import numpy"`` (the tool's own interpreter).
* files    2000 float32 (3, 32, 32) .npy files: ``apply FILES --out-dir OUT`` against
           benchmarks/numpy_baseline.py (np.load, a default_rng mask, np.save) and
           against ``cp -r DIR OUT && sync``; and ``-j 2`` against ``-j 1``.
* calls    ``dropout(x, 0.1, seed=i)`` per call on 100 and 10,000 float32 elements, in
           a worker process of the tool's interpreter, against torch's
           ``F.dropout(t, 0.1, training=True)`` after ``torch.manual_seed(i)`` in the
           interpreter given by ``--torch-python`` (or the first ``python`` found that
           imports torch; without one the torch column stays empty).

The 1 GiB rows live in benchmarks/run.py.  The tool is ``--exe`` or the
``tensor-dropout`` beside this interpreter, else the one on PATH; its interpreter is
read from the script's ``#!`` line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import Table, cpu_name  # noqa: E402

ROOT = os.path.dirname(HERE)
SAMPLE = os.path.join(ROOT, "samples", "example_1x3x3.npy")
BASELINE = os.path.join(HERE, "numpy_baseline.py")
N_FILES = 2000
SHAPE = (3, 32, 32)
P = 0.1
SEED = 1
CALL_SIZES = (100, 10_000)

# Workers for the per-call rows: read "n calls first_seed" lines, answer seconds per call.
OURS_WORKER = r"""
import gc, sys, time
import numpy as np
from dropout_core import dropout
xs = {}
for line in sys.stdin:
    n, calls, first = map(int, line.split())
    x = xs.setdefault(n, np.random.default_rng(0).standard_normal(n, dtype=np.float32))
    dropout(x, 0.1, seed=first - 1)
    gc.disable()
    t = time.perf_counter()
    for i in range(first, first + calls):
        dropout(x, 0.1, seed=i)
    dt = time.perf_counter() - t
    gc.enable()
    print(dt / calls, flush=True)
"""

TORCH_WORKER = r"""
import gc, sys, time
import torch
F = torch.nn.functional
print(torch.__version__, torch.get_num_threads(), flush=True)
xs = {}
for line in sys.stdin:
    n, calls, first = map(int, line.split())
    x = xs.setdefault(n, torch.randn(n, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(first - 1)
    F.dropout(x, 0.1, training=True)
    gc.disable()
    t = time.perf_counter()
    for i in range(first, first + calls):
        torch.manual_seed(i)
        F.dropout(x, 0.1, training=True)
    dt = time.perf_counter() - t
    gc.enable()
    print(dt / calls, flush=True)
"""


# ----------------------------------------------------------------------------- helpers

def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float], unit: float = 1.0, fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(min(xs) * unit)}-{fmt.format(max(xs) * unit)}"


def verdict(ratio: float | None, target: float, at_least: bool = False) -> str:
    if ratio is None:
        return "n/a"
    ok = ratio >= target if at_least else ratio <= target
    return "met" if ok else "**missed**"


def rm(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def run_cmd(cmd: list[str], cwd: str | None = None) -> float:
    """Wall time of one run of cmd (stdout discarded); a failure stops the benchmark."""
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        shown = " ".join(cmd[:6]) + (" ..." if len(cmd) > 6 else "")
        raise SystemExit(f"`{shown}` exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    return dt


def out_of_time(t0: float, rounds_run: int, timed: int, budget: tuple[int, float]) -> bool:
    """True when at least budget[0] timed rounds are done and one more round would end
    past budget[1] seconds from t0 (so a busy machine cuts the repeats, not the rows)."""
    min_rounds, seconds = budget
    elapsed = time.perf_counter() - t0
    return timed >= min_rounds and elapsed + elapsed / rounds_run > seconds


def interleave_commands(cmds: dict[str, list[str]], rounds: int, budget: tuple[int, float], *,
                        before=None, after_first=None,
                        warmup: bool = True) -> dict[str, list[float]]:
    """Each command once per round, in turn (A B C A B C ...), after one untimed warm-up
    round unless ``warmup`` is false; at most ``rounds`` timed rounds, fewer (never
    under budget[0]) when the section would pass budget[1] seconds.  ``before(name)``
    runs untimed before each run (fresh outputs, sync); ``after_first()`` after the
    first round (a sanity check)."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    skip = 1 if warmup else 0
    t0 = time.perf_counter()
    for r in range(rounds + skip):
        for name, cmd in cmds.items():
            if before:
                before(name)
            dt = run_cmd(cmd)
            if r >= skip:
                times[name].append(dt)
        if r == 0 and after_first:
            after_first()
        if out_of_time(t0, r + 1, r + 1 - skip, budget):
            break
    return times


def install_kind(py: str) -> str:
    """'editable' or 'regular': an editable install (pip install -e) adds its import hook
    to every start-up (about 40 ms here), which a user's regular install does not pay."""
    code = ("import importlib.metadata as m, json\n"
            "t = m.distribution('tensor-dropout').read_text('direct_url.json')\n"
            "print('editable' if t and json.loads(t).get('dir_info', {}).get('editable') "
            "else 'regular')")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, cwd="/")  # not a
    return r.stdout.strip() or "unknown"  # checkout's own *.egg-info


def tool_python(exe: str) -> str:
    """The interpreter of a console script (its #! line), else this one."""
    try:
        with open(exe, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
            found = shutil.which(parts[1])
            return found or sys.executable
        if parts and os.access(parts[0], os.X_OK):
            return parts[0]
    return sys.executable


def find_exe(given: str | None) -> str:
    if given:
        exe = shutil.which(given) or given
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"--exe {given}: not an executable")
        return os.path.abspath(exe)
    beside = os.path.join(os.path.dirname(sys.executable), "tensor-dropout")
    if os.access(beside, os.X_OK):
        return beside
    exe = shutil.which("tensor-dropout")
    if exe is None:
        raise SystemExit("no tensor-dropout beside this python nor on PATH: give --exe PATH")
    return exe


def find_torch_python(given: str | None, candidates: list[str]) -> str | None:
    """--torch-python if it imports torch; else the first candidate that does."""
    cands = [given] if given else candidates
    seen = set()
    for c in cands:
        if not c:
            continue
        path = shutil.which(c) or c
        if path in seen or not os.access(path, os.X_OK):
            continue
        seen.add(path)
        try:
            r = subprocess.run([path, "-c", "import torch"], capture_output=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return path
    return None


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--",
                                "dropout_core", "cli", "pyproject.toml"]).returncode != 0
        return head + (" (with uncommitted changes to the tool)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine(py: str) -> dict:
    cpu = cpu_name()
    r = subprocess.run([py, "-c", "import sys, platform, numpy; "
                        "print(platform.python_version(), numpy.__version__)"],
                       capture_output=True, text=True)
    pyv, npv = (r.stdout.split() + ["?", "?"])[:2]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"nproc": usable, "cpus": os.cpu_count(), "cpu": cpu, "python": pyv, "numpy": npv,
            "system": f"{platform.system()} {platform.release()}",
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}


# ----------------------------------------------------------------------------- sections

def bench_startup(a) -> tuple[list[Table], list[dict]]:
    small = os.path.join(a.tmp, "small.npy")
    np.save(small, np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32))
    out = os.path.join(a.tmp, "out.npy")
    base = "python -c \"import numpy\""
    cmds = {
        base: [a.py, "-c", "import numpy"],
        "tensor-dropout --version": [a.exe, "--version"],
        "tensor-dropout inspect small.npy": [a.exe, "inspect", small],
        "tensor-dropout apply example_1x3x3.npy -o TMP/out.npy --force -p 0.5 --seed 1 -q":
            [a.exe, "apply", SAMPLE, "-o", out, "--force", "-p", "0.5", "--seed", "1", "-q"],
    }
    targets = {"tensor-dropout --version": 1.5, "tensor-dropout inspect small.npy": 1.5}
    times = interleave_commands(cmds, a.cmd_rounds, a.cmd_budget)
    t = Table(f"Start-up: whole commands against `{base}` ({len(times[base])} runs each, "
              f"interleaved)", ["command", "median ms", "min-max ms", "/ import numpy",
                                "target", "verdict"])
    rows = []
    for name, ts in times.items():
        r = med(ts) / med(times[base])
        target = targets.get(name, 2.0) if name != base else None
        t.add(f"`{name}`", f"{med(ts) * 1e3:.0f}", spread(ts, 1e3, "{:.0f}"), f"{r:.2f}",
              f"<= {target}" if target else "", verdict(r, target) if target else "")
        rows.append({"section": "startup", "what": name, "baseline": base,
                     "median_s": med(ts), "baseline_median_s": med(times[base]), "ratio": r,
                     "target": f"<= {target}" if target else None,
                     "met": (r <= target) if target else None, "times_s": ts})
    return [t], rows


def bench_files(a) -> tuple[list[Table], list[dict]]:
    src = os.path.join(a.tmp, "in")
    os.makedirs(src)
    x = np.random.default_rng(0).standard_normal((a.n_files, *SHAPE), dtype=np.float32)
    for i in range(a.n_files):
        np.save(os.path.join(src, f"x{i:05d}.npy"), x[i])
    files = sorted(glob.glob(os.path.join(src, "*.npy")))
    outs = {k: os.path.join(a.tmp, f"out-{k}") for k in ("j1", "numpy", "cp", "j2")}
    opts = ["-p", str(P), "--seed", str(SEED), "-q"]
    names = {"j1": "tensor-dropout apply FILES --out-dir OUT -p 0.1 --seed 1 -q",
             "numpy": "numpy_baseline.py (np.load, mask, np.save)",
             "cp": "cp -r DIR OUT && sync",
             "j2": "tensor-dropout apply ... -j 2"}
    cmds = {
        "j1": [a.exe, "apply", *files, "--out-dir", outs["j1"], *opts],
        "numpy": [a.py, BASELINE, outs["numpy"], str(P), str(SEED), *files],
        "cp": ["sh", "-c", 'cp -r "$0" "$1" && sync', src, outs["cp"]],
        "j2": [a.exe, "apply", *files, "--out-dir", outs["j2"], *opts, "-j", "2"],
    }

    def before(name):
        rm(outs[name])
        os.sync()  # the previous run's dirty pages are not charged to this one

    def check():
        for k, d in outs.items():
            got = len(os.listdir(d))
            if got != a.n_files:
                raise SystemExit(f"{names[k]}: wrote {got} files, expected {a.n_files}")
        y = np.load(os.path.join(outs["j1"], os.path.basename(files[0])))
        if y.dtype != np.float32 or y.shape != SHAPE:
            raise SystemExit(f"tool output is {y.dtype} {y.shape}")

    try:
        # --quick: no warm-up round here (the inputs are in the page cache already)
        times = interleave_commands(cmds, a.file_rounds, a.file_budget, before=before,
                                    after_first=check, warmup=not a.quick)
    finally:
        for d in outs.values():
            rm(d)
    m = {k: med(v) for k, v in times.items()}
    t = Table(f"{a.n_files} float32 {SHAPE} .npy files ({a.n_files * x[0].nbytes / 2**20:.1f} "
              f"MiB) in one command, p = {P} ({len(times['j1'])} "
              f"run{'' if len(times['j1']) == 1 else 's'} each, interleaved"
              f"{'' if a.quick else ', after a warm-up round'}; fresh OUT and `sync` "
              f"before each run, untimed)",
              ["command", "median s", "min-max s", "ms/file", "/ numpy_baseline",
               "/ cp + sync", "target", "verdict"])
    r_j = m["j1"] / m["j2"]
    targets = {"j1": ("/ numpy_baseline <= 1.0 (aim 0.5)", m["j1"] / m["numpy"] <= 1.0),
               "j2": (f"-j 1 / -j 2 = {r_j:.2f}, >= 1.6", r_j >= 1.6)}
    rows = []
    for k in ("numpy", "cp", "j1", "j2"):
        tgt, ok = targets.get(k, ("", None))
        t.add(f"`{names[k]}`", f"{m[k]:.3f}", spread(times[k]), f"{m[k] * 1e3 / a.n_files:.2f}",
              f"{m[k] / m['numpy']:.2f}", f"{m[k] / m['cp']:.2f}", tgt,
              "" if ok is None else ("met" if ok else "**missed**"))
        rows.append({"section": "files", "what": names[k], "median_s": m[k],
                     "ratio_to_numpy_baseline": m[k] / m["numpy"], "ratio_to_cp": m[k] / m["cp"],
                     "ratio": {"j1": m["j1"] / m["numpy"], "j2": r_j}.get(k),
                     "target": tgt or None, "met": ok, "times_s": times[k]})
    t.notes.append("`-j 2` target is the speed-up: median(-j 1) / median(-j 2) >= 1.6 on 2 cores.")
    return [t], rows


class Worker:
    def __init__(self, cmd: list[str], env: dict, cwd: str, banner: bool = False) -> None:
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.banner = self._line() if banner else None

    def _line(self) -> str:
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read()
            raise RuntimeError(f"worker {self.p.args[0]} died: {err.strip()[-2000:]}")
        return line.strip()

    def per_call(self, n: int, calls: int, first: int) -> float:
        self.p.stdin.write(f"{n} {calls} {first}\n")
        self.p.stdin.flush()
        return float(self._line())

    def close(self) -> None:
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def bench_calls(a) -> tuple[list[Table], list[dict]]:
    env = dict(os.environ)
    # run from the temp dir: the tool's installed dropout_core, not a copy in the cwd
    ours = Worker([a.py, "-c", OURS_WORKER], env, a.tmp)
    torch_w, torch_info = None, "not installed, skipped"
    if a.torch_py:
        tenv = dict(env, OMP_WAIT_POLICY="PASSIVE")  # idle OpenMP threads must not spin
        try:
            torch_w = Worker([a.torch_py, "-c", TORCH_WORKER], tenv, a.tmp, banner=True)
            v, threads = torch_w.banner.split()
            torch_info = f"torch {v}, {threads} threads, {a.torch_py}"
        except (RuntimeError, ValueError, OSError) as e:
            torch_w, torch_info = None, f"not usable ({e}), skipped"
    if a.torch_py and torch_w is None:
        print(f"torch: {torch_info}", flush=True)
    res = {(who, n): [] for who in ("ours", "torch") for n in CALL_SIZES}
    t0 = time.perf_counter()
    try:
        for r in range(a.call_repeats + 1):  # round 0: warm-up
            for n in CALL_SIZES:
                first = 1_000_000 * (r + 1)  # fresh seeds every repeat
                ts = ours.per_call(n, a.calls, first)
                if r:
                    res[("ours", n)].append(ts)
                if torch_w:
                    ts = torch_w.per_call(n, a.calls, first)
                    if r:
                        res[("torch", n)].append(ts)
            if out_of_time(t0, r + 1, r, a.call_budget):
                break
    finally:
        ours.close()
        if torch_w:
            torch_w.close()
    t = Table(f"One call per sample: `dropout(x, 0.1, seed=i)` on float32 against "
              f"`torch.manual_seed(i); F.dropout(t, 0.1, training=True)` ({a.calls} calls, "
              f"best of {len(res[('ours', CALL_SIZES[0])])} repeats, interleaved)",
              ["elements", "ours us/call (best)", "ours median", "torch us/call (best)",
               "torch median", "ours / torch", "target", "verdict"])
    t.notes.append(f"torch: {torch_info}")
    rows = []
    for n in CALL_SIZES:
        o = res[("ours", n)]
        tt = res[("torch", n)]
        r = min(o) / min(tt) if tt else None
        t.add(f"{n:,}", f"{min(o) * 1e6:.1f}", f"{med(o) * 1e6:.1f}",
              f"{min(tt) * 1e6:.1f}" if tt else "", f"{med(tt) * 1e6:.1f}" if tt else "",
              f"{r:.2f}" if r is not None else "", "<= 1.0", verdict(r, 1.0))
        rows.append({"section": "calls", "what": f"dropout(x, 0.1, seed=i), {n} float32",
                     "baseline": "torch F.dropout" if tt else None,
                     "best_us": min(o) * 1e6, "median_us": med(o) * 1e6,
                     "baseline_best_us": min(tt) * 1e6 if tt else None,
                     "ratio": r, "target": "<= 1.0", "met": None if r is None else r <= 1.0,
                     "times_s": o, "baseline_times_s": tt})
    return [t], rows


SECTIONS = {"startup": bench_startup, "files": bench_files, "calls": bench_calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--exe", help="the tensor-dropout to time (default: beside this python, "
                                  "else on PATH)")
    ap.add_argument("--torch-python", help="an interpreter that imports torch (default: the "
                                           "first python that does)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections ({','.join(SECTIONS)})")
    ap.add_argument("--tmp", help="where the temp dir goes (default: the system's)")
    a = ap.parse_args()
    q = a.quick
    a.cmd_rounds = 5 if q else 15
    a.file_rounds = 2 if q else 5
    a.calls = 1000 if q else 3000
    a.call_repeats = 3 if q else 7
    a.n_files = N_FILES
    # (min repeats, seconds): a busy machine cuts the repeats down to the min
    a.cmd_budget = (3, 35.0) if q else (7, 80.0)
    a.file_budget = (1, 70.0) if q else (3, 180.0)
    a.call_budget = (2, 15.0) if q else (3, 45.0)
    sections = [s for s in a.only.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            raise SystemExit(f"unknown section {s!r}; choose from {', '.join(SECTIONS)}")
    a.exe = find_exe(a.exe)
    a.py = tool_python(a.exe)
    a.torch_py = None
    if "calls" in sections:
        a.torch_py = find_torch_python(a.torch_python, [a.py, sys.executable, "python",
                                                        "python3"])
    mach = machine(a.py)
    commit = git_commit()
    t0 = time.perf_counter()
    print(f"# tensor-dropout small-work benchmark{' (--quick)' if q else ''}\n")
    print(f"commit {commit}; `nproc` {mach['nproc']} ({mach['cpu']}), Python {mach['python']}, "
          f"NumPy {mach['numpy']}, {mach['system']}; load average at start "
          f"{mach['load']:.1f}")
    kind = install_kind(a.py)
    print(f"tool: {a.exe} (python {a.py}; a {kind} install)")
    if kind == "editable":
        print("note: an editable install's import hook slows every start-up; measure start-up "
              "with --exe pointing at a regular install (pip install .)")
    if "calls" in sections:
        print(f"torch: {a.torch_py or 'not installed, skipped'}")
    sys.stdout.flush()
    a.tmp = tempfile.mkdtemp(prefix="bench-small-", dir=a.tmp)
    tables, rows = [], []
    try:
        for s in sections:
            ts, rs = SECTIONS[s](a)
            for t in ts:
                print(t.render())
                sys.stdout.flush()
            tables += ts
            rows += rs
    finally:
        shutil.rmtree(a.tmp, ignore_errors=True)
    took = time.perf_counter() - t0
    load = f", load average at the end {os.getloadavg()[0]:.1f}" \
        if hasattr(os, "getloadavg") else ""
    print(f"\n({took:.0f} s in all{load})")
    if a.json:
        doc = {"commit": commit, "machine": mach, "quick": q, "exe": a.exe, "python": a.py,
               "torch_python": a.torch_py, "seconds": took, "rows": rows}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
