"""Every command's help reads well in an 80-column terminal and a wide one: no stray markup, nothing cut off."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from triage.cli import cli


def _command_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(cli)
    paths: list[tuple[str, ...]] = [()]

    def walk(group: object, prefix: tuple[str, ...]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            paths.append((*prefix, name))
            walk(command, (*prefix, name))

    walk(root, ())
    return paths


COMMANDS = _command_paths()


def test_every_command_is_covered() -> None:
    names = {path[-1] for path in COMMANDS if path}
    assert {"demo", "run", "show", "approve", "reject", "eval", "policy", "check"} <= names


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "triage")
def test_help_has_no_stray_markup_and_fits(path: tuple[str, ...], columns: int) -> None:
    done = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": str(columns), "TERMINAL_WIDTH": None})
    assert done.exit_code == 0, done.output
    text = done.output
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert "<bool>" not in text, "a flag takes no value"
    assert not re.search(r"\{\w+\}", text), "usage shows an argument as {name}"
    assert not re.search(r"\w \.(?!\w)", text), "a stray space before a full stop (markup eaten?)"
    assert "…" not in text, "help text cut off"
    usage = next(line for line in lines if "Usage:" in line)
    assert usage.split("Usage: ", 1)[1].startswith("triage"), usage


@pytest.mark.parametrize("path", [("show",), ("approve",), ("reject",), ("recover",)])
def test_thread_argument_reads_as_thread(path: tuple[str, ...]) -> None:
    done = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "80"})
    assert f"Usage: triage {path[0]} [OPTIONS] THREAD" in done.output


def test_reject_marks_reason_required_and_asks_for_it() -> None:
    shown = CliRunner().invoke(cli, ["reject", "--help"], env={"COLUMNS": "200"})
    reason = next(line for line in shown.output.splitlines() if "--reason" in line)
    assert "*" in reason and "required" in shown.output.split("--reason", 1)[1].split("--home", 1)[0]
    missing = CliRunner().invoke(cli, ["reject", "thr_x", "--as", "alice"], env={"COLUMNS": "200"})
    assert missing.exit_code == 2
    assert "Missing option '--reason'" in missing.output
    assert "ticket" not in missing.output


def test_defaults_survive_the_markup() -> None:
    home = CliRunner().invoke(cli, ["threads", "--help"], env={"COLUMNS": "200"})
    assert "[default: ./.triage]" in home.output
    policy = CliRunner().invoke(cli, ["policy", "check", "--help"], env={"COLUMNS": "200"})
    assert "[default: the packaged bundle]" in policy.output
