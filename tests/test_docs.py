"""The README documents every command and option, and its examples stay true."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "README.md")) as _f:
    README = _f.read()


def _options():
    for name, cmd in cli.commands.items():
        for param in cmd.params:
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("--"):
                    yield name, opt


@pytest.mark.parametrize("command,option", list(_options()))
def test_every_option_is_in_the_readme(command, option):
    assert re.search(re.escape(option) + r"\b", README), f"{command} {option} not in README.md"


@pytest.mark.parametrize("command", list(cli.commands))
def test_every_command_is_in_the_readme(command):
    assert f"tensor-dropout {command}" in README


def test_readme_example_output_is_what_the_tool_prints(tmp_path, run_cli):
    out = tmp_path / "out.npy"
    code, _, _ = run_cli("apply", os.path.join(ROOT, "samples", "example_1x3x3.npy"), "-o",
                         str(out), "-p", "0.5", "--seed", "7", "-q")
    assert code == 0
    shown = re.search(r"\[\[\[ 2\..*?\]\]\]", README, re.S).group(0)
    assert shown == str(np.load(out))


def test_readme_set_up_commands_are_the_ci_commands():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert "pip install --quiet '.[test,dask,preview]'" in ci and ".venv/bin/python -m pytest" in ci
    assert ".venv/bin/pip install '.[test,dask,preview]' && .venv/bin/python -m pytest" in README


def _readme_apply_table() -> dict[str, str]:
    """Each long option in the README's `apply` table, with its default cell as written."""
    section = README.split("### `apply`", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if line.startswith("| `") and len(cells) == 3:
            for opt in re.findall(r"--[a-z][a-z-]*", cells[0]):
                rows[opt] = cells[1].replace("`", "")
    return rows


def _help_defaults() -> list[tuple[str, str, bool]]:
    """(option, default as `apply --help` shows it, is a flag) for every option of apply."""
    import click

    apply = cli.commands["apply"]
    ctx = click.Context(apply, info_name="apply")
    out = []
    for param in apply.params:
        if isinstance(param, click.Option) and param.name != "help":
            shown = param.get_help_extra(ctx).get("default", "")
            shown = shown[1:-1] if shown.startswith("(") and shown.endswith(")") else shown
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("--"):
                    out.append((opt, shown, param.is_flag))
    return out


@pytest.mark.parametrize("option,shown,flag", _help_defaults())
def test_readme_option_table_has_the_default_help_shows(option, shown, flag):
    table = _readme_apply_table()
    assert option in table, f"apply {option} is missing from the README's option table"
    written = table[option]
    if flag and not shown:
        assert written in ("", "off"), f"{option}: README says {written!r}, a flag is off"
    else:
        assert written == shown, f"{option}: README says {written!r}, --help says {shown!r}"
