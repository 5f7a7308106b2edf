"""SIGKILL a release follow-up at many points, recover it with `triage recover` from a fresh process, and check
exactly once: every ticket closed once, every customer told once, every note written once, the audit complete.

Each crashed run is compared with the same release run undisturbed on a copy of the same helpdesk: the same rows,
the same messages and the same audit lines, whatever point the kill landed on. Four points run by default; the other 24
with `pytest tests/integration/test_release_crashes.py -m long` (about 20 minutes on a busy 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from tests.integration.test_release import ASK_PERSON, EXPORT, EXPORT_AGAIN, GANTT, NOTES
from triage import TriageApp
from triage.settings import Settings

DRIVER = Path(__file__).with_name("release_crash_driver.py")
THREAD = "rel_crash"
VERSION = "2.4.1"
EFFECTS = ["release_notification"] * 2 + ["ticket_closed"] * 4 + ["ticket_noted"]
"""Two customers told, three fixed tickets and cus_0001's duplicate report closed, their ticket with a person noted."""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    """A helpdesk with the reports (copied for each crash point), and the release run undisturbed on one copy."""
    home = tmp_path_factory.mktemp("release-template") / "home"
    with TriageApp(Settings(home=home, cache_home=model_cache)) as app:
        runs = {
            "gantt": app.run({"customer_id": "cus_0001", "subject": GANTT[0], "body": GANTT[1]}),
            "export": app.run({"customer_id": "cus_0001", "subject": EXPORT[0], "body": EXPORT[1]}),
            "export2": app.run({"customer_id": "cus_0002", "subject": EXPORT[0], "body": EXPORT[1]}),
            "again": app.run({"customer_id": "cus_0001", "subject": EXPORT[0], "body": EXPORT_AGAIN}),
            "person": app.run({"customer_id": "cus_0001", "subject": "Export broken", "body": ASK_PERSON}),
        }
    tickets = {name: next(a.receipt_id for a in run.actions if a.kind == "ticket") for name, run in runs.items()}
    conversations = sorted(run.thread_id for run in runs.values())
    probe = tmp_path_factory.mktemp("release-probe") / "home"
    shutil.copytree(home, probe)
    fixes = f"{tickets['gantt']},ENG-77"
    clean = drive(probe, model_cache, fixes, "none")
    assert clean.returncode == 0 and clean.stdout.strip().endswith("finished completed"), clean.stderr[-2000:]
    return {
        "home": home,
        "fixes": fixes,
        "tickets": tickets,
        "conversations": conversations,
        "undisturbed": observed(probe),
    }


def drive(home: Path, cache: Path, fixes: str, point: str) -> subprocess.CompletedProcess[str]:
    """Run the release in the driver, killed at `point` (`none`: undisturbed)."""
    return subprocess.run(
        [sys.executable, str(DRIVER), str(home), str(cache), THREAD, VERSION, fixes, NOTES, point],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def recover(home: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`triage recover THREAD` from a fresh process, as an operator would after the crash."""
    env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "triage", "recover", THREAD, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def observed(home: Path) -> dict[str, Any]:
    """What a person can check after the release: ticket states, messages, notes, ledger and audit lines."""
    helpdesk, checkpoints = home / "helpdesk.sqlite", home / "checkpoints.sqlite"
    audit = rows(
        checkpoints,
        "SELECT thread_id, event, actor, details FROM audit_trail WHERE event IN ('effect', 'release_followup') "
        "ORDER BY thread_id, event, details",
    )
    return {
        "tickets": {r["id"]: r["status"] for r in rows(helpdesk, "SELECT id, status FROM tickets")},
        "outbox": rows(
            helpdesk,
            "SELECT id, customer_id, subject, body, thread_id FROM outbox WHERE template = 'release.fixed' "
            "ORDER BY customer_id",
        ),
        "notes": rows(helpdesk, "SELECT id, ticket_id, note, author, thread_id FROM ticket_notes"),
        "ledger": sorted(r["kind"] for r in rows(checkpoints, "SELECT kind FROM effects_ledger")),
        "audit": sorted((a["thread_id"], a["event"], a["actor"], same_effect(a["details"])) for a in audit),
    }


def same_effect(details: str) -> str:
    """An audit line's details without what tells a first call from its repeat after a crash (`created`, `closed`):
    a call repeated under its idempotency key returns the first call's row, saying it did not write it again."""
    parsed = json.loads(details)
    return json.dumps({k: v for k, v in parsed.items() if k not in ("created", "closed")}, sort_keys=True)


def crash_points() -> list[Any]:
    """Every window of the run: after each close (before its ledger entry, and after), between the last close and
    the first outbox write, after each outbox write and its ledger entry, between the follow-up lines of one
    customer's conversations, around the note; and after each checkpoint. The long variant runs them all."""
    quick = ["ledger:ticket_closed:4", "call:send_message:1", "audit:release_followup:2", "call:note_ticket:1"]
    every = [
        *(f"call:close_ticket:{n}" for n in (1, 2, 3, 4)),
        *(f"ledger:ticket_closed:{n}" for n in (1, 2, 3)),
        "call:send_message:2",
        "ledger:release_notification:1",
        "ledger:release_notification:2",
        *(f"audit:release_followup:{n}" for n in (1, 3, 4, 5)),
        "ledger:ticket_noted:1",
        *(f"checkpoint:{n}" for n in range(1, 10)),
    ]
    return [*quick, *(pytest.param(point, marks=pytest.mark.long) for point in every)]


@pytest.mark.slow
@pytest.mark.parametrize("point", crash_points())
def test_a_release_killed_anywhere_is_recovered_with_every_effect_once(
    scenario: dict[str, Any], model_cache: Path, tmp_path: Path, point: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(scenario["home"], home)
    crashed = drive(home, model_cache, scenario["fixes"], point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert crashed.stdout.strip().splitlines()[-1] == f"killed at {point}"  # inside the window, not before it

    recovered = recover(home, model_cache)
    assert recovered.returncode == 0, recovered.stderr[-2000:]
    result = json.loads(recovered.stdout)
    assert result["status"] == "completed", result["status_reason"]

    after, undisturbed = observed(home), scenario["undisturbed"]
    tickets = scenario["tickets"]
    # Each ticket closed once (the ledger has one entry per effect), the person's ticket left open with one note.
    assert after["ledger"] == EFFECTS
    fixed = [tickets[name] for name in ("gantt", "export", "export2", "again")]
    assert [after["tickets"][t] for t in fixed] == ["solved"] * 4 and after["tickets"][tickets["person"]] == "open"
    # Each customer told exactly once, with the very message an undisturbed run sends.
    assert [m["customer_id"] for m in after["outbox"]] == ["cus_0001", "cus_0002"]
    assert after["outbox"] == undisturbed["outbox"]
    assert [n["ticket_id"] for n in after["notes"]] == [tickets["person"]] and after["notes"] == undisturbed["notes"]
    # The audit is complete and nothing in it is doubled: one effect line per effect, one follow-up per conversation.
    assert after["audit"] == undisturbed["audit"]
    followed_up = Counter(thread for thread, event, _, _ in after["audit"] if event == "release_followup")
    assert followed_up == dict.fromkeys(scenario["conversations"], 1)
    assert Counter(event for _, event, _, _ in after["audit"])["effect"] == len(EFFECTS)
