"""The README, followed top to bottom in a fresh home, does what it says.

The README's code blocks are this test's input: the first command (the demo), every `triage ...` line of the later
bash blocks in order, then the Python API block. `THREAD` stands for the thread id the last `triage run` printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[list[str]]:
    """The demo from the first block, then each `triage` line of the bash blocks after the development one."""
    bash = blocks("bash")
    first = bash[0].strip().split("&&")[-1].strip()
    assert first.startswith(".venv/bin/triage "), first
    commands = [shlex.split(first.removeprefix(".venv/bin/"))]
    for block in bash[2:]:
        commands += [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("triage ")]
    return commands


def cli(env: dict[str, str], cwd: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    assert args[0] == "triage"
    return subprocess.run(
        [sys.executable, "-m", "triage", *args[1:]],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )


def demo_table(stdout: str) -> str:
    return stdout.split("Ran in the demo's own home", 1)[0]


def test_readme_commands_are_the_ones_this_test_knows() -> None:
    names = [(c[1], c[c.index("--customer-id") + 1] if "--customer-id" in c else None) for c in readme_commands()]
    assert names == [
        ("demo", None),
        ("run", "cus_mid_dup"),
        ("approvals", None),
        ("approve", None),
        ("run", "cus_large_dup"),
        ("reject", None),
        ("sweep", None),
        ("show", None),
    ], "the README's examples changed: update the outcomes this test checks"


@pytest.mark.slow
def test_readme_top_to_bottom_in_a_fresh_home(tmp_path: Path, model_cache: Path) -> None:
    env = {**os.environ, "TRIAGE_CACHE_HOME": str(model_cache)}
    env.pop("TRIAGE_HOME", None)  # the README's default home, ./.triage, in a fresh working folder
    env.pop("TRIAGE_POLICY_DIR", None)
    thread = ""
    first_demo = ""
    for args in readme_commands():
        args = [thread if a == "THREAD" else a for a in args]
        done = cli(env, tmp_path, args)
        assert done.returncode == 0, f"{shlex.join(args)}\n{done.stdout}\n{done.stderr}"
        out = done.stdout
        if args[1] == "demo":
            first_demo = demo_table(out)
            assert "cus_mid_dup" in first_demo and "escalation" in first_demo
            assert ".triage/demo" in out
        elif args[1] == "run":
            thread = re.search(r"^thread (thr_\w+)", out, flags=re.M).group(1)  # type: ignore[union-attr]
            assert "status awaiting_approval" in out
            tier = "single" if "cus_mid_dup" in args else "dual"
            assert f"Tier {tier}" in out
            pending = json.loads(cli(env, tmp_path, ["triage", "approvals", "--json"]).stdout)
            assert thread in [p["thread_id"] for p in pending]
        elif args[1] == "approvals":
            assert "approvals awaiting a decision" in out
        elif args[1] == "approve":
            assert "status completed" in out and "action refund $240.00" in out
        elif args[1] == "reject":
            assert "status completed (rejected)" in out and "action refund " not in out
        elif args[1] == "sweep":
            assert "escalated 0 overdue approval(s)" in out
        elif args[1] == "show":
            assert f"timeline of {thread}" in out and "audit trail" in out

    (python,) = blocks("python")
    assert "'completed', 'billing', 'duplicate_charge'" in python and "amount_cents=1900" in python
    script = python + "\nimport json\nprint('RESULT ' + result.model_dump_json())\n"
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180, check=False
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.split("RESULT ", 1)[1])
    assert (result["status"], result["route"], result["intent"]) == ("completed", "billing", "duplicate_charge")
    assert result["confidence"] >= 0.9
    assert [a["kind"] for a in result["actions"]] == ["refund_request", "refund", "message"]
    assert result["actions"][1]["amount_cents"] == 1900 and result["actions"][1]["receipt_id"].startswith("re_")

    again = cli(env, tmp_path, readme_commands()[0])
    assert again.returncode == 0, again.stderr
    assert demo_table(again.stdout) == first_demo, "the demo printed a different table the second time"
