"""Every failure is one line 'Error: ...' on stderr with the documented exit status."""

from __future__ import annotations

import os

import pytest
from conftest import SAMPLES

EXAMPLE = os.path.join(SAMPLES, "example_1x3x3.npy")


def _one_error_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    return err.rstrip("\n")


@pytest.mark.parametrize("args,code,text", [
    (["apply", EXAMPLE, "-o", "-", "--stats", "-"], 2,
     "Error: -o - and --stats - both want stdout; write one to a file"),
    (["apply", EXAMPLE, "--inplace", "--out-dir", "d"], 2,
     "Error: give only one of -o/--output, --out-dir and --inplace"),
    (["apply", EXAMPLE], 2, "Error: give -o/--output, --out-dir or --inplace"),
    (["apply", EXAMPLE, "-o", "y.npy", "-p", "2"], 2,
     "Error: p must be a number with 0 <= p <= 1, got 2.0"),
    (["apply", EXAMPLE, "-o", "y.npy", "--variant", "channel", "--share-axes", "0"], 2,
     "Error: --share-axes and the channel variants both set the mask shape; give one of them"),
    (["apply", EXAMPLE, "-o", "y.npy", "--share-axes", "a,b"], 2,
     "Error: Invalid value for '--share-axes': expected comma-separated axes like 0,2, "
     "got 'a,b'"),
    (["apply", EXAMPLE, "-o", "y.npy", "--mode", "test"], 2,
     "Error: Invalid value for '--mode': 'test' is not one of 'train', 'eval'."),
    (["apply"], 2, "Error: Missing argument 'INPUT...'."),
    (["frobnicate"], 2, "Error: No such command 'frobnicate'."),
    (["--bogus"], 2, "Error: No such option '--bogus'."),
])
def test_bad_command_line_is_one_line_exit_2(tmp_path, monkeypatch, run_cli, args, code, text):
    monkeypatch.chdir(tmp_path)
    got_code, out, err = run_cli(*args)
    assert (got_code, _one_error_line(err)) == (code, text)
    assert os.listdir(tmp_path) == []


def test_bare_command_prints_the_help_on_stderr_and_exits_2(run_cli):
    code, out, err = run_cli()
    assert code == 2 and out == b""
    assert err.startswith("Usage: tensor-dropout") and "Commands:" in err


def test_interrupt_is_one_line_exit_130(monkeypatch, tmp_path, run_cli):
    import dropout_core.batch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dropout_core.batch, "apply_files", interrupted)
    code, _, err = run_cli("apply", EXAMPLE, "-o", str(tmp_path / "y.npy"))
    assert (code, _one_error_line(err)) == (130, "Error: interrupted")


def _bug(*args, **kwargs):
    raise ZeroDivisionError("a bug")


def test_a_bug_is_one_line_internal_error(monkeypatch, tmp_path, run_cli):
    import dropout_core.batch

    monkeypatch.delenv("TENSOR_DROPOUT_DEBUG", raising=False)
    monkeypatch.setattr(dropout_core.batch, "apply_files", _bug)
    code, _, err = run_cli("apply", EXAMPLE, "-o", str(tmp_path / "y.npy"))
    assert code == 1
    assert _one_error_line(err) == ("Error: internal error (ZeroDivisionError: a bug); set "
                                    "TENSOR_DROPOUT_DEBUG=1 for details and please report it")


def test_debug_variable_lets_a_bug_raise(monkeypatch, tmp_path, run_cli):
    import dropout_core.batch

    monkeypatch.setenv("TENSOR_DROPOUT_DEBUG", "1")
    monkeypatch.setattr(dropout_core.batch, "apply_files", _bug)
    with pytest.raises(ZeroDivisionError):
        run_cli("apply", EXAMPLE, "-o", str(tmp_path / "y.npy"))


def test_version_and_help_exit_0_on_stdout(run_cli):
    for args in (["--version"], ["-h"], ["apply", "--help"], ["inspect", "-h"]):
        code, out, err = run_cli(*args)
        assert code == 0 and out and err == "", args
