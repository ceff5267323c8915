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

from dropout_core import npy

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


@pytest.mark.parametrize("how", ["new-output", "inplace", "force-over-existing"])
def test_file_size_limit_gives_clean_error_and_keeps_target(tmp_path: Path, how: str):
    src = tmp_path / "x.npy"
    data = big_npy(src)
    out = tmp_path / "out.npy"
    old = valid_npy()
    if how == "force-over-existing":
        out.write_bytes(old)
    args = {"new-output": [str(src), "-o", str(out)], "inplace": [str(src), "--inplace"],
            "force-over-existing": [str(src), "-o", str(out), "--force"]}[how]
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
    args = {"new-output": [str(src), "-o", str(out)], "inplace": [str(src), "--inplace"],
            "force-over-existing": [str(src), "-o", str(out), "--force"]}[how]
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
