"""`triage policy check` says valid only when the graph builds with the bundle; it refuses unknown scopes and warns
on write scopes granted to read-only nodes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import policy_copy
from triage.cli import cli


def check(folder: Path, *args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(cli, ["policy", "check", "--dir", str(folder), *args])
    return done.exit_code, done.stdout, done.stderr


def test_default_bundle_is_valid_without_warnings(tmp_path: Path) -> None:
    code, stdout, _ = check(policy_copy(tmp_path), "--json", "--strict")
    report = json.loads(stdout)
    assert code == 0 and report["valid"] is True and report["warnings"] == []


def test_bundle_the_graph_refuses_is_not_valid(tmp_path: Path) -> None:
    folder = policy_copy(
        tmp_path, "permissions.toml", 'technical = ["kb:read", "tickets:read", "tickets:write"]', "technical = []"
    )
    code, stdout, stderr = check(folder)
    assert code == 2 and "valid" not in stdout
    assert "'technical' uses tool 'search_kb'" in stderr and "grant the scope" in stderr
    code, stdout, _ = check(folder, "--json")
    assert code == 2 and json.loads(stdout)["error"]["type"] == "GrantError"


def test_unknown_scope_is_refused(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path, "permissions.toml", 'general = ["kb:read"]', 'general = ["kb:read", "godmode"]')
    code, _, stderr = check(folder)
    assert code == 2 and "unknown scope(s) granted (general: godmode)" in stderr


def test_write_scope_on_a_read_only_node_is_warned(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path, "permissions.toml", "classify = []", 'classify = ["refunds:write"]')
    code, stdout, stderr = check(folder)
    assert code == 0 and stdout.startswith("valid")
    assert "warning: permissions.toml gives the read-only node 'classify' the write scope 'refunds:write'" in stderr
    assert check(folder, "--strict")[0] == 1
