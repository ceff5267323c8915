"""Binary data never goes to a terminal: -o - with stdout on a tty is refused, like gzip."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT, SAMPLES

EXAMPLE = os.path.join(SAMPLES, "example_1x3x3.npy")
REFUSAL = ("Error: refusing to write binary tensor data to a terminal; redirect stdout or use "
           "-o FILE\n")


def _run_with_stdout_on_a_pty(*args: str) -> tuple[int, bytes, str]:
    leader, follower = os.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "cli.main", *args], stdout=follower,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
                              timeout=120)
        os.close(follower)
        follower = -1
        written = b""
        os.set_blocking(leader, False)
        try:
            while chunk := os.read(leader, 65536):
                written += chunk
        except (BlockingIOError, OSError):
            pass
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    return proc.returncode, written, proc.stderr.decode()


def test_binary_output_to_a_terminal_is_refused():
    code, written, err = _run_with_stdout_on_a_pty("apply", EXAMPLE, "-o", "-", "--seed", "1")
    assert (code, err) == (2, REFUSAL)
    assert written == b""


def test_stats_to_a_terminal_are_fine(tmp_path):
    code, written, err = _run_with_stdout_on_a_pty("apply", EXAMPLE, "-o",
                                                   str(tmp_path / "y.npy"), "--seed", "1",
                                                   "--stats", "-", "-q")
    assert code == 0, err
    assert b'"seed": 1' in written
