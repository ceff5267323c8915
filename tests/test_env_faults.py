"""Environment faults: full disks, size limits, read-only places, links and closed pipes.

Each fault gets one clean ``Error: `` line and exit 1, leaves the target
(and the input) exactly as it was, and leaves no temporary file behind.
Faults that need a real process (rlimits, capabilities, pipes, mounts) run
the tool with subprocess; the rest run in-process.  Tests that need root to
build the fault (a small tmpfs, a read-only bind mount, chattr +i) skip with
the reason when they cannot.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from corpus import (
    TOOL,
    f32,
    listing,
    obey_permissions,
    one_error_line,
    run_cli,
    run_tool,
    st_file,
    valid_npy,
)

from dropout_core.formats import npy

SEED = ["--seed", "1", "-q"]


def big_npy(path: Path, mb: float = 4) -> bytes:
    """A float32 .npy of about ``mb`` MiB."""
    n = int(mb * (1 << 18))
    data = npy.header_bytes(np.dtype("<f4"), (n,)) + np.ones(n, "<f4").tobytes()
    path.write_bytes(data)
    return data


def _clean_failure(proc: subprocess.CompletedProcess, *, says: str) -> str:
    line = one_error_line(proc.stderr.decode())
    assert proc.returncode == 1, line
    assert says in line, f"want {says!r} in: {line}"
    return line


def _temps(d: Path) -> list[str]:
    return [p for p in listing(d) if "tensor-dropout-tmp" in p]


# ---- a file too large (RLIMIT_FSIZE) -----------------------------------------------------

def _limit_1mb() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def _write_args(how: str, src: Path, out: Path) -> list[str]:
    """The three ways of writing a target: a new -o, --inplace, and -o --force over a file."""
    return {"new-output": [str(src), "-o", str(out)], "inplace": [str(src), "--inplace"],
            "force-over-existing": [str(src), "-o", str(out), "--force"]}[how]


@pytest.mark.parametrize("how", ["new-output", "inplace", "force-over-existing"])
def test_file_size_limit_gives_clean_error_and_keeps_target(tmp_path: Path, how: str):
    src = tmp_path / "x.npy"
    data = big_npy(src)
    out = tmp_path / "out.npy"
    old = valid_npy()
    if how == "force-over-existing":
        out.write_bytes(old)
    args = _write_args(how, src, out)
    proc = run_tool(["apply", *args, *SEED], preexec_fn=_limit_1mb)
    target = src if how == "inplace" else out
    line = _clean_failure(proc, says="write failed: file too large; the target is unchanged")
    assert line.startswith(f"Error: {target}: ")
    assert src.read_bytes() == data
    assert (out.read_bytes() == old) if how == "force-over-existing" else \
        (how == "inplace" or not out.exists())
    assert _temps(tmp_path) == []


def test_file_size_limit_on_stdout_output_gives_clean_error(tmp_path: Path):
    src = tmp_path / "x.npy"
    big_npy(src)
    proc = run_tool(["apply", str(src), "-o", "-", *SEED], preexec_fn=_limit_1mb)
    _clean_failure(proc, says="File too large")
    assert proc.stdout == b"", "half a file reached stdout"


def test_file_size_limit_on_stdin_spool_gives_clean_error(tmp_path: Path):
    src = tmp_path / "x.npy"
    big_npy(src)
    out = tmp_path / "out.npy"
    with open(src, "rb") as f:
        proc = run_tool(["apply", "-", "-o", str(out), *SEED], preexec_fn=_limit_1mb, stdin=f)
    _clean_failure(proc, says="<stdin>: cannot copy the input to a temporary file in ")
    assert "file too large" in proc.stderr.decode()
    assert not out.exists()


# ---- a full disk (a 1 MiB tmpfs) -----------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path: Path):
    """A 1 MiB tmpfs mounted for this test; skipped where mounting is not allowed."""
    d = tmp_path / "small"
    d.mkdir()
    if os.getuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.parametrize("how", ["new-output", "inplace", "force-over-existing"])
def test_full_disk_gives_clean_error_and_keeps_target(tmp_path: Path, small_fs: Path, how: str):
    if how == "inplace":
        src = small_fs / "x.npy"
        data = big_npy(src, mb=0.6)  # fits once, not twice
    else:
        src = tmp_path / "x.npy"
        data = big_npy(src, mb=4)
    out = small_fs / "out.npy"
    old = valid_npy()
    if how == "force-over-existing":
        out.write_bytes(old)
    args = _write_args(how, src, out)
    before = listing(small_fs)
    proc = run_tool(["apply", *args, *SEED])
    _clean_failure(proc, says="write failed: no space left on device; the target is unchanged")
    assert src.read_bytes() == data
    assert listing(small_fs) == before, "a temporary or partial file was left on the full disk"
    if how == "force-over-existing":
        assert out.read_bytes() == old
    free = os.statvfs(small_fs)
    assert free.f_bfree * free.f_bsize >= (1 << 20) - len(data if how == "inplace" else old) \
        - 64 * 1024, "the space of the temporary file was not given back"


def test_full_tmpdir_for_stdout_output_gives_clean_error(tmp_path: Path, small_fs: Path):
    src = tmp_path / "x.npy"
    big_npy(src)
    proc = run_tool(["apply", str(src), "-o", "-", *SEED],
                    env={**os.environ, "TMPDIR": str(small_fs)})
    _clean_failure(proc, says="No space left on device")
    assert proc.stdout == b""
    assert listing(small_fs) == set()


def test_full_tmpdir_for_stdin_input_gives_clean_error(tmp_path: Path, small_fs: Path):
    src = tmp_path / "x.npy"
    big_npy(src)
    out = tmp_path / "out.npy"
    with open(src, "rb") as f:
        proc = run_tool(["apply", "-", "-o", str(out), *SEED], stdin=f,
                        env={**os.environ, "TMPDIR": str(small_fs)})
    _clean_failure(proc, says=f"<stdin>: cannot copy the input to a temporary file in {small_fs}: "
                              "no space left on device")
    assert not out.exists() and listing(small_fs) == set()


# ---- a read-only target directory ---------------------------------------------------------

READ_ONLY = ["read-only-mount", "mode-555", "immutable"]


@pytest.fixture(params=READ_ONLY)
def read_only_dir(request, tmp_path: Path):
    """(dir, extra subprocess kwargs, expected reason); the dir holds x.npy and old.npy."""
    d = tmp_path / "ro"
    d.mkdir()
    big_npy(d / "x.npy", mb=0.25)
    (d / "old.npy").write_bytes(valid_npy())
    kind = request.param
    undo: list[list[str]] = []
    kwargs: dict = {}
    if kind == "mode-555":
        d.chmod(0o555)
        undo_mode = True
        kwargs = obey_permissions()  # root ignores mode bits unless its child drops the caps
        reason = "Permission denied"
    else:
        undo_mode = False
        if os.getuid() != 0:
            pytest.skip(f"{kind} needs root")
        cmds = {"read-only-mount": [["mount", "--bind", str(d), str(d)],
                                    ["mount", "-o", "remount,ro,bind", str(d)]],
                "immutable": [["chattr", "+i", str(d)]]}[kind]
        undo = {"read-only-mount": [["umount", "-l", str(d)]],
                "immutable": [["chattr", "-i", str(d)]]}[kind]
        for cmd in cmds:
            try:
                r = subprocess.run(cmd, capture_output=True)
            except FileNotFoundError:
                pytest.skip(f"{cmd[0]} is not installed")
            if r.returncode != 0:
                for u in undo:
                    subprocess.run(u, capture_output=True)
                pytest.skip(f"cannot make a {kind} directory here: {r.stderr.decode().strip()}")
        reason = {"read-only-mount": "Read-only file system",
                  "immutable": "Operation not permitted"}[kind]
    try:
        yield d, kwargs, reason
    finally:
        for u in undo:
            subprocess.run(u, capture_output=True)
        if undo_mode:
            d.chmod(0o755)


@pytest.mark.parametrize("how", ["new-output", "inplace", "force-over-existing"])
def test_read_only_directory_gives_clean_error(read_only_dir, how: str):
    d, kwargs, reason = read_only_dir
    before = {p: (d / p).read_bytes() for p in ("x.npy", "old.npy")}
    args = {"new-output": [str(d / "x.npy"), "-o", str(d / "new.npy")],
            "inplace": [str(d / "x.npy"), "--inplace"],
            "force-over-existing": [str(d / "x.npy"), "-o", str(d / "old.npy"), "--force"]}[how]
    proc = run_tool(["apply", *args, *SEED], **kwargs)
    _clean_failure(proc, says=f"cannot create a file in its directory: {reason}")
    assert sorted(os.listdir(d)) == ["old.npy", "x.npy"]
    assert {p: (d / p).read_bytes() for p in before} == before


# ---- output paths that cannot be written, or must not be -----------------------------------

def test_output_into_missing_directory_is_refused(tmp_path: Path):
    src = tmp_path / "x.npy"
    src.write_bytes(valid_npy())
    out = tmp_path / "no" / "such" / "dir" / "y.npy"
    run = run_cli(["apply", str(src), "-o", str(out), *SEED])
    line = one_error_line(run.err)
    assert run.code == 1
    assert line == f"Error: {out}: output directory {out.parent} does not exist"
    assert listing(tmp_path) == {"x.npy"}


def test_output_that_is_a_directory_is_refused(tmp_path: Path):
    src = tmp_path / "x.npy"
    src.write_bytes(valid_npy())
    (tmp_path / "d").mkdir()
    run = run_cli(["apply", str(src), "-o", str(tmp_path / "d"), "--force", *SEED])
    assert run.code == 1 and "output is a directory" in one_error_line(run.err)
    assert listing(tmp_path) == {"x.npy", "d"}


SAME_FILE = {
    "same-path": lambda d: "x.npy",
    "dot-slash": lambda d: "./x.npy",
    "absolute": lambda d: str(d / "x.npy"),
    "via-dotdot": lambda d: f"../{d.name}/x.npy",
    "symlink-to-input": lambda d: (os.symlink("x.npy", d / "link.npy"), "link.npy")[1],
    "hardlink-to-input": lambda d: (os.link(d / "x.npy", d / "hard.npy"), "hard.npy")[1],
}


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
@pytest.mark.parametrize("spelling", SAME_FILE.values(), ids=SAME_FILE.keys())
def test_output_that_is_the_input_needs_inplace(tmp_path: Path, spelling, force: bool):
    src = tmp_path / "x.npy"
    src.write_bytes(valid_npy())
    out = spelling(tmp_path)
    files = listing(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        run = run_cli(["apply", "x.npy", "-o", out, *SEED, *(["--force"] if force else [])])
    finally:
        os.chdir(cwd)
    line = one_error_line(run.err)
    assert run.code == 1
    assert "output is the input file; use --inplace to rewrite it" in line
    assert src.read_bytes() == valid_npy() and listing(tmp_path) == files


# ---- symlinked outputs are written through ------------------------------------------------

@pytest.mark.parametrize("mode", [0o640, 0o600, 0o755])
@pytest.mark.parametrize("link", ["relative", "absolute", "chain", "dir-elsewhere"])
def test_symlink_output_is_written_through_keeping_target_mode(tmp_path: Path, link: str,
                                                               mode: int):
    src = tmp_path / "x.safetensors"
    src.write_bytes(st_file([("w", "F32", [4], f32(1, 2, 3, 4))]))
    real_dir = tmp_path / ("elsewhere" if link == "dir-elsewhere" else ".")
    real_dir.mkdir(exist_ok=True)
    target = real_dir / "target.safetensors"
    target.write_bytes(b"old contents")
    target.chmod(mode)
    out = tmp_path / "out.safetensors"
    if link == "chain":
        (tmp_path / "mid.safetensors").symlink_to("target.safetensors")
        out.symlink_to("mid.safetensors")
    else:
        out.symlink_to(target if link in ("absolute", "dir-elsewhere") else target.name)
    pointer = os.readlink(out)
    run = run_cli(["apply", str(src), "-o", str(out), "--force", *SEED])
    assert run.code == 0, run.err
    assert out.is_symlink() and os.readlink(out) == pointer, "the link itself was replaced"
    assert target.read_bytes()[:8] == src.read_bytes()[:8], "the target was not written"
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert _temps(tmp_path) == []


def test_dangling_symlink_output_creates_its_target(tmp_path: Path):
    src = tmp_path / "x.npy"
    src.write_bytes(valid_npy())
    out = tmp_path / "out.npy"
    out.symlink_to("target.npy")
    run = run_cli(["apply", str(src), "-o", str(out), *SEED])
    assert run.code == 0, run.err
    assert out.is_symlink() and (tmp_path / "target.npy").is_file()


# ---- stdout closed early ------------------------------------------------------------------

def _many_tensors(path: Path) -> None:
    path.write_bytes(st_file([(f"t{i}", "F32", [1], f32(i)) for i in range(3000)]))


PIPED = {
    "apply-o-stdout": lambda d: ["apply", str(d / "x.npy"), "-o", "-", *SEED],
    "apply-stats-stdout": lambda d: ["apply", str(d / "m.safetensors"), "-o",
                                     str(d / "o.safetensors"), "--stats", "-", *SEED],
    "inspect": lambda d: ["inspect", str(d / "m.safetensors")],
    "inspect-json": lambda d: ["inspect", "--json", str(d / "m.safetensors")],
    "stdin-to-stdout": lambda d: ["apply", "-", "-o", "-", *SEED],
}


@pytest.mark.parametrize("cmd", PIPED.values(), ids=PIPED.keys())
def test_stdout_closed_early_exits_quietly(tmp_path: Path, cmd):
    big_npy(tmp_path / "x.npy")
    _many_tensors(tmp_path / "m.safetensors")
    with open(tmp_path / "x.npy", "rb") as stdin, \
            subprocess.Popen([*TOOL, *cmd(tmp_path)], stdin=stdin, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) as proc:
        head = proc.stdout.read(10)  # like `| head -c 10`
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
    assert len(head) == 10
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err == "", f"want silence on a closed pipe, got {err!r}"
    assert proc.returncode in (0, 1), proc.returncode
    assert _temps(tmp_path) == []


def test_stdout_closed_early_in_a_shell_pipeline(tmp_path: Path):
    big_npy(tmp_path / "x.npy")
    cmd = " ".join(TOOL) + f" apply {tmp_path / 'x.npy'} -o - --seed 1 -q | head -c 10"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True)
    assert len(proc.stdout) == 10 and proc.stderr == b""


# ---- outputs that are devices, pipes or redirected streams are never replaced --------------

def _special_output(tmp_path: Path, kind: str) -> str:
    if kind == "fifo":
        os.mkfifo(tmp_path / "out.npy")
        return str(tmp_path / "out.npy")
    if kind in ("char-device", "symlink-to-char-device"):
        # a private null device: if this test ever fails, it must not take /dev/null with it
        dev = tmp_path / ("out.npy" if kind == "char-device" else "null")
        try:
            os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a character device needs root (CAP_MKNOD)")
        if kind != "char-device":
            (tmp_path / "out.npy").symlink_to("null")
        return str(tmp_path / "out.npy")
    return kind  # /dev/stdout and friends; stdout goes to a file of the test's own


SPECIAL_OUT = {
    "fifo": "is a FIFO, not a regular file",
    "char-device": "is a character device, not a regular file",
    "symlink-to-char-device": "is a character device, not a regular file",
    "/dev/stdout": "is a file-descriptor alias, not a file",
    "/dev/stderr": "is a file-descriptor alias, not a file",
    "/dev/fd/1": "is a file-descriptor alias, not a file",
    "/proc/self/fd/1": "is a file-descriptor alias, not a file",
}


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
@pytest.mark.parametrize(("kind", "says"), SPECIAL_OUT.items(), ids=SPECIAL_OUT.keys())
def test_special_output_is_never_replaced(tmp_path: Path, kind: str, says: str, force: bool):
    # as root, a careless writer replaces /dev/null, or the file the shell redirected
    # stdout to, with a regular file of its own
    src = tmp_path / "x.npy"
    src.write_bytes(valid_npy())
    out = _special_output(tmp_path, kind)
    redirected = tmp_path / "redirected"
    redirected.write_bytes(b"the shell's file")
    before = os.lstat(out)
    with open(redirected, "r+b") as so:
        proc = run_tool(["apply", str(src), "-o", out, *SEED, *(["--force"] if force else [])],
                        stdout=so, stderr=subprocess.PIPE, capture_output=False)
    _clean_failure(proc, says=says)
    after = os.lstat(out)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), "it was replaced"
    assert redirected.read_bytes() == b"the shell's file"
    assert _temps(tmp_path) == []


def test_stats_to_a_redirected_stream_alias_is_refused(tmp_path: Path):
    src = tmp_path / "x.npy"
    src.write_bytes(valid_npy())
    redirected = tmp_path / "redirected"
    redirected.write_bytes(b"")
    with open(redirected, "r+b") as so:
        proc = run_tool(["apply", str(src), "-o", str(tmp_path / "y.npy"), "--stats",
                         "/dev/stdout", *SEED], stdout=so, stderr=subprocess.PIPE,
                        capture_output=False)
        assert redirected.stat().st_ino == os.fstat(so.fileno()).st_ino, "it was replaced"
    _clean_failure(proc, says="/dev/stdout: is a file-descriptor alias")


# ---- side outputs and the stdout spool

SIDE_OUTPUT_CLASH = {
    "stats-is-the-input": (["--stats", "x.npy"], "x.npy"),
    "mask-out-is-the-input": (["--mask-out", "x.npy"], "x.npy"),
    "mask-out-is-the-output": (["--mask-out", "y.npy"], "y.npy"),
    "stats-is-the-output": (["--stats", "y.npy"], "y.npy"),
}


@pytest.mark.parametrize(("extra", "clash"), SIDE_OUTPUT_CLASH.values(),
                         ids=SIDE_OUTPUT_CLASH.keys())
def test_side_output_that_is_the_input_or_output_is_refused(tmp_path: Path, extra, clash):
    src = tmp_path / "x.npy"
    data = big_npy(src, mb=0.1)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        run = run_cli(["apply", "x.npy", "-o", "y.npy", *SEED, *extra])
    finally:
        os.chdir(cwd)
    assert src.read_bytes() == data, "the input was replaced"
    # a clash between two paths of the command line is a usage error
    assert run.code == 2 and "y.npy" not in listing(tmp_path), "the clash was not refused"


def test_stats_into_missing_directory_is_refused_before_any_output(tmp_path: Path):
    src = tmp_path / "x.npy"
    src.write_bytes(valid_npy())
    run = run_cli(["apply", str(src), "-o", str(tmp_path / "y.npy"), "--stats",
                   str(tmp_path / "no" / "s.json"), *SEED])
    assert run.code == 1
    assert listing(tmp_path) == {"x.npy"}, "the run failed but its output was left behind"


def test_stdout_spool_failure_names_stdout(tmp_path: Path):
    src = tmp_path / "x.npy"
    big_npy(src)
    proc = run_tool(["apply", str(src), "-o", "-", *SEED], preexec_fn=_limit_1mb)
    line = _clean_failure(proc, says="File too large")
    assert line.startswith("Error: <stdout>: "), line


# ---- the input changes under our feet -----------------------------------------------------

def test_input_truncated_while_being_read_gives_clean_error(tmp_path: Path):
    src = tmp_path / "x.npy"
    big_npy(src, mb=16)
    out = tmp_path / "out.npy"
    # small chunks make the run long enough to be caught in the middle
    with subprocess.Popen([*TOOL, "apply", str(src), "-o", str(out), "--chunk-size", "4096",
                           *SEED], stderr=subprocess.PIPE) as proc:
        while not _temps(tmp_path) and proc.poll() is None:
            time.sleep(0.0005)
        os.truncate(src, 1000)
        err = proc.stderr.read().decode()
        proc.wait()
    line = one_error_line(err)
    assert proc.returncode == 1
    assert line == f"Error: {src}: file shrank while it was being read (did another program " \
                   "change it?)"
    assert listing(tmp_path) == {"x.npy"}


def test_read_exact_names_the_file_from_its_descriptor(tmp_path: Path):
    from dropout_core.errors import DropoutError
    from dropout_core.formats.base import read_exact

    p = tmp_path / "short.bin"
    p.write_bytes(b"1234")
    with open(p, "rb") as f, pytest.raises(DropoutError, match=rf"^{p}: file shrank"):
        read_exact(f.fileno(), 0, np.empty(8, np.uint8))
