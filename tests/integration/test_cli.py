"""The `triage` CLI as a user runs it: real subprocesses, JSON output, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.zygote import triage_cli
from triage.settings import Settings


def cli_env(settings: Settings) -> dict[str, str]:
    """This environment with the settings' home and model cache for the CLI."""
    return {**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)}


def triage(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return triage_cli(args, env=cli_env(settings), input=stdin, timeout=120)


def test_run_show_threads_json(settings: Settings) -> None:
    ran = triage(
        settings,
        "run",
        "--customer-id",
        "cus_small_dup",
        "--subject",
        "Charged twice",
        "--body",
        "I was charged twice for my plan, please refund one.",
        "--json",
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert {
        "thread_id",
        "status",
        "route",
        "intent",
        "urgency",
        "confidence",
        "reply",
        "actions",
    } <= result.keys()
    assert (result["status"], result["route"]) == ("completed", "billing")

    shown = triage(settings, "show", result["thread_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    timeline = json.loads(shown.stdout)["timeline"]
    assert timeline and set(timeline[0]) == {"node", "namespace", "checkpoint_id", "duration_ms", "outcome", "branch"}
    assert {entry["branch"] for entry in timeline} == {None}, "only an ask's branch names its specialist"
    assert "lookup" in [e["node"] for e in timeline]

    listed = triage(settings, "threads", "--json")
    assert [t["thread_id"] for t in json.loads(listed.stdout)] == [result["thread_id"]]


def test_run_reads_json_from_stdin_and_file(settings: Settings, tmp_path: Path) -> None:
    ticket = {"subject": "Opening hours", "body": "When can I reach your support team?"}
    piped = triage(settings, "run", "--json", stdin=json.dumps(ticket))
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["route"] == "general"
    path = tmp_path / "ticket.json"
    path.write_text(json.dumps(ticket))
    from_file = triage(settings, "run", "--file", str(path), "--json")
    assert json.loads(from_file.stdout)["route"] == "general"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("run", "--body", "   "), None, "body: must contain text"),
        (("run", "--customer-id", "cus_nobody", "--body", "hi"), None, "unknown customer_id"),
        (("run",), "{not json", "not valid JSON"),
        (("run",), "", "stdin was empty"),
        (("run", "--file", "/nonexistent/ticket.json"), None, "cannot read"),
        (("show", "thr_missing"), None, "no thread 'thr_missing'"),
        (("run", "--body", "hi", "--budget", "max_colour=3"), None, "invalid budget override"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    settings: Settings, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    done = triage(settings, *args, stdin=stdin)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    listed = triage(settings, "threads", "--json")
    assert json.loads(listed.stdout) == []


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("TRIAGE_SQLITE_SYNCHRONOUS", "fast", "TRIAGE_SQLITE_SYNCHRONOUS: Input should be 'full', 'normal' or 'off'"),
        (
            "TRIAGE_CONVERSATION_LEASE_SECONDS",
            "-1",
            "TRIAGE_CONVERSATION_LEASE_SECONDS: Input should be greater than 0",
        ),
    ],
)
def test_a_bad_setting_exits_2_naming_the_variable(settings: Settings, variable: str, value: str, said: str) -> None:
    env = {
        **os.environ,
        "TRIAGE_HOME": str(settings.home),
        "TRIAGE_CACHE_HOME": str(settings.cache_dir),
        variable: value,
    }
    ran = triage_cli(["run", "--body", "When are you open?"], env=env, timeout=120)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip() == f"error: invalid setting: {said}"
    assert not settings.home.exists(), "nothing was written"


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from triage.cli import cli; "
        "heavy = [m for m in ('langgraph', 'sklearn', 'aiosqlite', 'langchain_core') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def run_then(settings: Settings, body: str, then: str) -> subprocess.CompletedProcess[str]:
    """`triage run --body BODY --json` through the CLI's `main` in a fresh interpreter, then the code `then` in it."""
    code = f"import sys; from triage.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n{then}"
    return subprocess.run(
        [sys.executable, "-c", code, "run", "--body", body, "--json"],
        capture_output=True,
        text=True,
        env=cli_env(settings),
        timeout=120,
        check=False,
    )


def test_run_in_a_warm_home_imports_no_scikit_learn(settings: Settings) -> None:
    warm = triage(settings, "run", "--body", "Please send me a copy of my last invoice.", "--json")
    assert warm.returncode == 0, warm.stderr
    done = run_then(
        settings,
        "Where is my refund for order 1234?",
        "heavy = [m for m in ('sklearn', 'scipy', 'joblib') if m in sys.modules]\n"
        "print('heavy:' + ','.join(heavy), file=sys.stderr)",
    )
    assert json.loads(done.stdout)["route"] == "billing"
    assert done.stderr.strip().splitlines()[-1] == "heavy:", "the model loads from its arrays, not the pickle"


def test_run_defers_the_package_inits_it_does_not_use(settings: Settings) -> None:
    done = run_then(
        settings,
        "Please send me a copy of my last invoice.",
        "skipped = [m for m in ('langgraph_sdk.client', 'httpx', 'langsmith.types.run') if m not in sys.modules]\n"
        "from langgraph_sdk import get_client\nimport langsmith.types\nrun = langsmith.types.Run\n"
        "used = [m for m in ('langgraph_sdk.client', 'langsmith.types.run') if m in sys.modules]\n"
        "print('skipped:' + ','.join(skipped), 'then:' + ','.join(used), run.__name__, get_client.__name__, "
        "file=sys.stderr)",
    )
    assert json.loads(done.stdout)["route"] == "billing", done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "skipped:langgraph_sdk.client,httpx,langsmith.types.run then:langgraph_sdk.client,langsmith.types.run Run "
        "get_client"
    ), "a run skips both initialisers, and the names they bind are still there when asked for"


@pytest.mark.slow
def test_demo_covers_every_route_and_an_approval_round_trip(settings: Settings) -> None:
    done = triage(settings, "demo", "--json")
    assert done.returncode == 0, done.stderr
    demo = json.loads(done.stdout)
    assert demo["home"] == str(settings.home / "demo"), "the demo runs in a home of its own"
    assert not (settings.home / "helpdesk.sqlite").exists(), "the user's helpdesk is left alone"
    results = demo["results"]
    assert {r["route"] for r in results} == {"billing", "technical", "account", "general", "escalation"}
    assert all(r["status"] in ("completed", "escalated", "awaiting_approval") for r in results)
    round_trip = demo["approval_round_trip"]
    assert (round_trip["before"], round_trip["after"]) == ("awaiting_approval", "completed")
    approved = next(r for r in results if r["thread_id"] == round_trip["thread_id"])
    assert [a["kind"] for a in approved["actions"]] == ["refund_request", "refund", "message"]


def test_an_edit_refusal_speaks_dollars_like_the_flag(settings: Settings) -> None:
    body = "You charged me twice for the same order."
    ran = triage(
        settings, "run", "--customer-id", "cus_mid_dup", "--subject", "Charged twice", "--body", body, "--json"
    )
    paused = json.loads(ran.stdout)
    assert paused["status"] == "awaiting_approval", paused["status_reason"]
    thread = paused["thread_id"]
    refused = triage(settings, "approve", thread, "--as", "alice", "--amount", "300")
    assert refused.returncode == 2
    assert "--amount $300.00 is above the refund awaiting approval ($240.00)" in refused.stderr
    assert "cents" not in refused.stderr and "Traceback" not in refused.stderr
    still = json.loads(triage(settings, "approvals", "--json").stdout)
    assert [p["thread_id"] for p in still] == [thread], "the approval stays pending"


def test_a_decision_naming_an_approval_decides_only_that_one(settings: Settings) -> None:
    """`--approval-id` (as `triage approvals` lists it): after an edit replaced the approval an approver looked at,
    their decision on the old one is refused and changes nothing; on the current one it goes through."""
    body = "You charged me twice for the same order."
    ran = triage(
        settings, "run", "--customer-id", "cus_large_dup", "--subject", "Charged twice", "--body", body, "--json"
    )
    thread = json.loads(ran.stdout)["thread_id"]
    (listed,) = json.loads(triage(settings, "approvals", "--json").stdout)
    assert listed["tier"] == "dual", listed
    edited = triage(
        settings, "approve", thread, "--as", "alice", "--amount", "1000", "--approval-id", listed["approval_id"]
    )
    assert edited.returncode == 0, edited.stderr
    (current,) = json.loads(triage(settings, "approvals", "--json").stdout)
    assert current["approval_id"] != listed["approval_id"], "the edit asks for a new approval"
    for command in ("approve", "reject"):
        stale = triage(
            settings, command, thread, "--as", "sam", "--reason", "seen", "--approval-id", listed["approval_id"]
        )
        assert stale.returncode == 2 and f"approval {listed['approval_id']} is no longer pending" in stale.stderr
        assert current["approval_id"] in stale.stderr and "Traceback" not in stale.stderr
    assert json.loads(triage(settings, "approvals", "--json").stdout) == [current], "nothing was decided"
    done = triage(settings, "approve", thread, "--as", "sam", "--approval-id", current["approval_id"], "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "completed", done.stderr
