"""The release follow-up, asserted on what people see: the closed ticket rows, the outbox, the approval, the audit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import policy_copy, race_in_processes, rows, store_fails_from_the_save_of
from tests.integration.zygote import triage_cli
from triage import TriageApp
from triage.errors import InvalidReleaseError, StoreUnavailableError
from triage.models.dev_server import DevModelServer
from triage.settings import Settings

NOTES = (
    "Release 2.4.1 fixes the gantt chart, which rendered upside down in quarter view. CSV exports now include the "
    "last row of every report. Internal: bumped the charting library."
)
GANTT = (
    "Bug: gantt chart renders upside down",
    "The gantt chart renders upside down when zoomed to quarter view in Firefox. Reproducible every time, it's a "
    "bug in the gantt view.",
)
EXPORT = (
    "Bug: CSV export drops the last row",
    "The CSV export drops the last row of every report, support said this is ENG-77. Reproducible every time, "
    "it's a bug in the export.",
)

EXPORT_AGAIN = (
    "Exporting a report to CSV still loses its final line. Reproducible every time, it's a bug in the export."
)
ASK_PERSON = "Please put me through to a human agent about ENG-77, the CSV export issue."
OTHER_PERSON = "I want to speak to a person about my last invoice, please have someone call me."


def engineering_ticket(app: TriageApp, customer_id: str, subject: str, body: str) -> str:
    """Report a bug the knowledge base cannot answer: the technical specialist opens an engineering ticket."""
    result = app.run({"customer_id": customer_id, "subject": subject, "body": body})
    [ticket] = [a.receipt_id for a in result.actions if a.kind == "ticket"]
    return ticket


@pytest.fixture
def reported(app: TriageApp) -> dict[str, str]:
    """Three engineering tickets from two customers: cus_0001's gantt (fixed by its ticket id) and export (linked
    by ENG-77), and cus_0002's export report (also naming ENG-77)."""
    return {
        "gantt": engineering_ticket(app, "cus_0001", *GANTT),
        "export": engineering_ticket(app, "cus_0001", *EXPORT),
        "export2": engineering_ticket(app, "cus_0002", EXPORT[0], EXPORT[1].replace("support said", "I read")),
    }


def outbox(settings: Settings) -> list[dict[str, Any]]:
    return rows(
        settings.helpdesk_path,
        "SELECT customer_id, to_address, subject, body, thread_id FROM outbox WHERE template = 'release.fixed' "
        "ORDER BY customer_id",
    )


def ticket_status(settings: Settings, ids: list[str]) -> dict[str, str]:
    found = rows(settings.helpdesk_path, "SELECT id, status FROM tickets WHERE queue = 'engineering'")
    return {row["id"]: row["status"] for row in found if row["id"] in ids}


def test_a_release_closes_three_tickets_and_notifies_two_customers(
    app: TriageApp, settings: Settings, reported: dict[str, str]
) -> None:
    assert set(ticket_status(settings, list(reported.values())).values()) == {"open"}
    result = app.release("2.4.1", [reported["gantt"], "ENG-77", "ENG-999"], NOTES)

    assert result.status == "completed" and result.thread_id.startswith("rel_")
    assert result.status_reason == (
        "release 2.4.1: 3 ticket(s) closed, 2 customer(s) notified; no engineering ticket names ENG-999"
    )
    assert sorted(result.closed) == sorted(reported.values())
    assert ticket_status(settings, list(reported.values())) == dict.fromkeys(reported.values(), "solved")
    assert result.notified == ["cus_0001", "cus_0002"] and result.unknown_keys == ["ENG-999"]
    assert {t["id"]: t["keys"] for t in result.tickets} == {
        reported["gantt"]: [reported["gantt"]],
        reported["export"]: ["ENG-77"],
        reported["export2"]: ["ENG-77"],
    }
    first, second = outbox(settings)
    assert (first["customer_id"], second["customer_id"]) == ("cus_0001", "cus_0002")
    # Each customer reads the fixes that concern them, and the summary of the notes.
    assert reported["gantt"] in first["body"] and reported["export"] in first["body"]
    assert reported["export2"] not in first["body"]
    assert reported["export2"] in second["body"] and reported["gantt"] not in second["body"]
    assert "fixed by ENG-77" in second["body"] and "release 2.4.1 fixes what you reported" in second["body"]
    assert NOTES.split(". ")[0] in first["body"]
    assert second["subject"] == f"Re: {EXPORT[0]}" and first["subject"] == "Re: Fixed in release 2.4.1"
    assert {row["thread_id"] for row in (first, second)} == {result.thread_id}
    assert [(a.kind, a.tool) for a in result.actions] == [("ticket_closed", "close_ticket")] * 3 + [
        ("message", "send_message")
    ] * 2
    # The customer's conversation shows the follow-up.
    conversation = next(t["thread_id"] for t in result.tickets if t["id"] == reported["export2"])
    [line] = [line for line in app.thread(conversation).audit if line["event"] == "release_followup"]
    assert line["details"]["version"] == "2.4.1" and line["details"]["release_thread"] == result.thread_id
    assert line["details"]["tickets"] == [reported["export2"]]
    assert app.thread(result.thread_id).result.status == "completed"


def test_the_reporters_other_open_tickets_about_the_fix_are_closed_or_noted_once(
    app: TriageApp, settings: Settings, reported: dict[str, str]
) -> None:
    """cus_0001 wrote about the export bug again in two other conversations: once as a new bug report with the same
    subject (an engineering ticket that does not name ENG-77), once asking a person about ENG-77 (a human-queue
    ticket); and once about something else. The duplicate is closed with the fixed tickets, the person's ticket stays
    open with a note that the customer was told, both conversations get the follow-up, the unrelated one nothing."""
    again = app.run({"customer_id": "cus_0001", "subject": EXPORT[0], "body": EXPORT_AGAIN})
    person = app.run({"customer_id": "cus_0001", "subject": "Export broken, I want a person", "body": ASK_PERSON})
    other = app.run({"customer_id": "cus_0001", "subject": "Invoice question", "body": OTHER_PERSON})
    [duplicate] = [a.receipt_id for a in again.actions if a.kind == "ticket"]
    [asked] = [a.receipt_id for a in person.actions if a.kind == "ticket"]
    [unrelated] = [a.receipt_id for a in other.actions if a.kind == "ticket"]
    queues = {r["id"]: r["queue"] for r in rows(settings.helpdesk_path, "SELECT id, queue FROM tickets")}
    assert (queues[duplicate], queues[asked], queues[unrelated]) == ("engineering", "human", "human")

    result = app.release("2.4.1", "ENG-77", NOTES)
    assert result.status_reason == (
        "release 2.4.1: 3 ticket(s) closed, 2 customer(s) notified; noted on 1 open ticket(s) in a person's queue "
        "about the same problem"
    )
    assert sorted(result.closed[:2]) == sorted([reported["export"], reported["export2"]])
    assert result.closed[2] == duplicate  # closed after the fixed tickets
    status = {r["id"]: r["status"] for r in rows(settings.helpdesk_path, "SELECT id, status FROM tickets")}
    assert [status[t] for t in (reported["export"], reported["export2"], duplicate)] == ["solved"] * 3
    assert (status[asked], status[unrelated], status[reported["gantt"]]) == ("open", "open", "open")
    # One message per customer; cus_0001's names the duplicate as fixed and the person's ticket as still open.
    first, second = outbox(settings)
    assert f"{EXPORT[0]} (ticket {duplicate}, the same problem)" in first["body"]
    assert (
        "Your other open request(s) about this problem stay with our team for anything else they ask: Export broken, "
        f"I want a person (ticket {asked}). The team can see this message" in first["body"]
    )
    assert unrelated not in first["body"] and "other open request" not in second["body"]
    messages = {r["customer_id"]: r["id"] for r in rows(settings.helpdesk_path, "SELECT id, customer_id FROM outbox")}
    # The person handling the open ticket reads that the customer was told, and by which message.
    [note] = rows(settings.helpdesk_path, "SELECT id, ticket_id, note, author, thread_id FROM ticket_notes")
    assert (note["ticket_id"], note["author"], note["thread_id"]) == (asked, "notify", result.thread_id)
    assert f"told in message {messages['cus_0001']}" in note["note"] and "(ENG-77)" in note["note"]
    assert "do not tell them again" in note["note"]
    # Each conversation concerned shows the follow-up once, naming its open ticket; the unrelated one shows nothing.
    for conversation, concerns in [(again.thread_id, [duplicate]), (person.thread_id, [asked])]:
        [line] = [line for line in app.thread(conversation).audit if line["event"] == "release_followup"]
        assert line["details"]["open_tickets"] == concerns
        assert line["details"]["message_id"] == messages["cus_0001"]
    assert not [line for line in app.thread(other.thread_id).audit if line["event"] == "release_followup"]
    assert [(a.kind, a.receipt_id) for a in result.actions if a.kind == "ticket_noted"] == [
        ("ticket_noted", note["id"])
    ]

    # Run again: nothing is closed, sent, noted or written in a conversation twice.
    repeated = app.release("2.4.1", "ENG-77", NOTES)
    assert repeated.actions == [] and len(outbox(settings)) == 2
    assert len(rows(settings.helpdesk_path, "SELECT id FROM ticket_notes")) == 1
    for conversation in (again.thread_id, person.thread_id):
        lines = [line for line in app.thread(conversation).audit if line["event"] == "release_followup"]
        assert len(lines) == 1
    ledger = rows(settings.checkpoints_path, "SELECT kind FROM effects_ledger ORDER BY kind")
    assert [row["kind"] for row in ledger] == ["release_notification"] * 2 + ["ticket_closed"] * 3 + ["ticket_noted"]


def test_a_repeated_release_closes_and_notifies_nothing_twice(
    app: TriageApp, settings: Settings, reported: dict[str, str]
) -> None:
    first = app.release("2.4.1", [reported["gantt"], "ENG-77"], NOTES)
    again = app.release("2.4.1", [reported["gantt"], "ENG-77"], NOTES)
    assert again.thread_id != first.thread_id
    assert again.actions == [] and len(outbox(settings)) == 2
    assert again.status_reason is not None and "nothing left to do" in again.status_reason
    assert {t["state"] for t in again.tickets} == {"closed_by_release"}
    # A later release naming the same, now solved, tickets leaves them alone and tells nobody.
    later = app.release("2.5", ["ENG-77"], "Faster exports.")
    assert later.actions == [] and sorted(later.already_closed) == sorted([reported["export"], reported["export2"]])
    assert later.status_reason == (
        f"release 2.5: nothing left to do, its tickets were solved before ({', '.join(later.already_closed)})"
    )
    assert len(outbox(settings)) == 2
    effects = [line["event"] for line in app.thread(again.thread_id).audit]
    assert effects == []
    with pytest.raises(InvalidReleaseError, match="already followed up a release"):
        app.release("2.4.1", "ENG-77", thread_id=again.thread_id)


def test_a_release_that_fixes_nothing_we_know_says_so_and_does_nothing(app: TriageApp, settings: Settings) -> None:
    result = app.release("3.0", "ENG-1, ENG-2", NOTES)
    assert (result.status, result.actions, result.closed, result.notified) == ("completed", [], [], [])
    assert result.status_reason == (
        "release 3.0 fixes nothing we know: no engineering ticket names ENG-1, ENG-2; nothing was closed or sent"
    )
    assert result.summary is None  # nothing to tell, so nothing was summarised
    assert outbox(settings) == []


@pytest.fixture
def mass_settings(settings: Settings, tmp_path: Path) -> Settings:
    """A policy under which telling more than one customer is a mass message."""
    folder = policy_copy(tmp_path, "approvals.toml", "mass_notification_above = 10", "mass_notification_above = 1")
    return settings.model_copy(update={"policy_dir": folder})


@pytest.fixture
def mass_app(mass_settings: Settings) -> Iterator[TriageApp]:
    with TriageApp(mass_settings) as opened:
        yield opened


def test_a_mass_notification_waits_for_approval_then_runs(mass_app: TriageApp, mass_settings: Settings) -> None:
    reported = [
        engineering_ticket(mass_app, "cus_0001", *GANTT),
        engineering_ticket(mass_app, "cus_0002", *GANTT),
        engineering_ticket(mass_app, "cus_0003", *GANTT),
    ]
    paused = mass_app.release("2.4.1", reported, NOTES)
    assert paused.status == "awaiting_approval"
    assert (paused.closed, paused.notified, outbox(mass_settings)) == ([], [], [])
    assert set(ticket_status(mass_settings, reported).values()) == {"open"}
    [pending] = mass_app.pending_approvals()
    assert pending.thread_id == paused.thread_id and pending.action == "mass_notification"
    assert (pending.tier, pending.approvals_required, pending.args) == (
        "single",
        1,
        {"version": "2.4.1", "recipients": 3},
    )
    assert pending.evidence["recipients"] == 3
    assert [s["customer_id"] for s in pending.evidence["sample"]] == ["cus_0001", "cus_0002", "cus_0003"]
    assert pending.evidence["summary"] == paused.summary["text"] if paused.summary else False
    assert pending.description.startswith("Approve: notify 3 customers that release 2.4.1 fixes what they reported")

    done = mass_app.resume(paused.thread_id, {"approver": "alice", "decision": "approve", "reason": "notes ok"})
    assert done.status == "completed" and mass_app.pending_approvals() == []
    assert len(outbox(mass_settings)) == 3
    assert set(ticket_status(mass_settings, reported).values()) == {"solved"}
    events = [(line["event"], line["actor"]) for line in mass_app.thread(paused.thread_id).audit]
    assert events[:2] == [("approval_requested", "approve_mass"), ("approved", "alice")]
    assert [e for e, _ in events[2:]] == ["effect"] * 6


def test_an_approval_whose_step_runs_again_is_in_the_audit_trail_once(
    mass_app: TriageApp, mass_settings: Settings
) -> None:
    """The approval's step is lost after it recorded the decision (its save fails): `recover` runs it again, and
    the trail still shows one approval and each effect once."""
    reported = [engineering_ticket(mass_app, c, *GANTT) for c in ("cus_0001", "cus_0002")]
    paused = mass_app.release("2.4.1", reported, NOTES)
    stop = store_fails_from_the_save_of(mass_app, "approvals")
    with pytest.raises(StoreUnavailableError, match="recover"):
        mass_app.resume(paused.thread_id, {"approver": "alice", "decision": "approve", "reason": "notes ok"})
    assert stop(), "the approval's step was not saved"
    done = mass_app.recover(paused.thread_id)
    assert done.status == "completed", done.status_reason
    events = [(line["event"], line["actor"]) for line in mass_app.thread(paused.thread_id).audit]
    assert events[:2] == [("approval_requested", "approve_mass"), ("approved", "alice")], events
    assert [e for e, _ in events[2:]] == ["effect"] * 4
    assert len(outbox(mass_settings)) == 2


def test_a_rejected_mass_notification_closes_and_sends_nothing(mass_app: TriageApp, mass_settings: Settings) -> None:
    reported = [engineering_ticket(mass_app, c, *GANTT) for c in ("cus_0001", "cus_0002")]
    paused = mass_app.release("2.4.1", reported, NOTES)
    done = mass_app.resume(paused.thread_id, {"approver": "bob", "decision": "reject", "reason": "wrong notes"})
    assert done.status == "completed" and done.rejection is not None
    assert done.status_reason is not None and done.status_reason.startswith("bob rejected notifying 2 customers")
    assert outbox(mass_settings) == [] and set(ticket_status(mass_settings, reported).values()) == {"open"}


@pytest.fixture
def server() -> Iterator[DevModelServer]:
    with DevModelServer() as running:
        yield running


def with_model(settings: Settings, server: DevModelServer) -> Settings:
    return settings.model_copy(
        update={"model_base_url": server.base_url, "cheap_model": "dev-cheap", "model_timeout_seconds": 2.0}
    )


def test_a_verified_model_summary_is_sent(
    app: TriageApp, settings: Settings, reported: dict[str, str], server: DevModelServer
) -> None:
    app.close()
    written = "The gantt chart shows the right way up again in quarter view, and CSV exports keep every row."
    server.script(written, model="dev-cheap")
    with TriageApp(with_model(settings, server)) as modelled:
        result = modelled.release("2.4.1", "ENG-77", NOTES)
    assert result.summary is not None
    assert (result.summary["by"], result.summary["verdict"], result.summary["text"]) == ("cheap", "verified", written)
    assert all(written in row["body"] for row in outbox(settings))
    [request] = server.requests_for("dev-cheap")
    assert "<notes>" in request["messages"][-1]["content"]


def test_a_summary_the_verifier_rejects_falls_back_to_the_extractive_one(
    app: TriageApp, settings: Settings, reported: dict[str, str], server: DevModelServer
) -> None:
    app.close()
    promise = "Release 2.5 fixes the gantt chart, and we will refund every affected customer within 24 hours."
    server.script(promise, times=2, model="dev-cheap")
    with TriageApp(with_model(settings, server)) as modelled:
        result = modelled.release("2.4.1", "ENG-77", NOTES)
    assert result.summary is not None and result.summary["verdict"] == "extractive_fallback"
    assert result.summary["by"] == "local" and result.summary["text"].startswith("Release 2.4.1 fixes the gantt")
    findings = " ".join(result.summary["findings"])
    assert "version '2.5' that the notes do not contain" in findings and "commitment 'refund'" in findings
    assert [c["outcome"] for c in result.model_calls] == ["ok", "ok"]  # asked twice, refused twice
    retry = server.requests_for("dev-cheap")[-1]["messages"][-1]["content"]
    assert "refused because" in retry
    bodies = [row["body"] for row in outbox(settings)]
    assert len(bodies) == 2 and not any("refund" in body or "2.5" in body for body in bodies)


@pytest.mark.parametrize(
    ("version", "fixes", "message"),
    [
        ("banana", "ENG-1", "'banana' is not a release version; use numbers like 2.4, 2.4.1 or v2.4.1-rc.1"),
        ("2.4.1", "", "names no fix; give the keys it fixes"),
        ("2.4.1", " , ", "names no fix"),
        ("2.4.1", "ENG-1,drop table", "'drop table' is not a ticket id or issue key"),
    ],
)
def test_bad_releases_are_refused_before_anything_is_written(
    app: TriageApp, settings: Settings, version: str, fixes: str, message: str
) -> None:
    with pytest.raises(InvalidReleaseError, match=message):
        app.release(version, fixes)
    assert app.threads() == []


def test_the_cli_refuses_bad_releases_with_one_line_and_exit_2(tmp_path: Path) -> None:
    def release(*args: str) -> subprocess.CompletedProcess[str]:
        return triage_cli(["release", *args, "--home", str(tmp_path / "home")], env=os.environ, timeout=120)

    for args, message in [
        (("v2", "--fixes", "ENG-1"), "error: invalid release: version: 'v2' is not a release version"),
        (("2.4.1", "--fixes", ""), "error: invalid release: fixes: names no fix"),
        (("2.4.1", "--fixes", "ENG-1", "--notes", str(tmp_path / "missing.txt")), "error: cannot read the notes file"),
    ]:
        done = release(*args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "home").exists()  # refused before the stores were opened


def test_the_readme_example_runs_as_written(tmp_path: Path, model_cache: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Release follow-up", 1)[1]
    [example] = re.findall(r"```sh\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path / "home"), "TRIAGE_CACHE_HOME": str(model_cache)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["sh", "-e", "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "release 2.4.1: 1 ticket(s) closed, 1 customer(s) notified" in done.stdout
    assert "nothing left to do" in done.stdout
    [sent] = rows(tmp_path / "home" / "helpdesk.sqlite", "SELECT body FROM outbox WHERE template = 'release.fixed'")
    assert "CSV exports now include the last row of every report." in sent["body"]


def check_once(settings: Settings, reported: dict[str, str]) -> None:
    """Three tickets solved, one message per customer, and one ledger entry per effect, whatever ran at once."""
    assert ticket_status(settings, list(reported.values())) == dict.fromkeys(reported.values(), "solved")
    assert [row["customer_id"] for row in outbox(settings)] == ["cus_0001", "cus_0002"]
    ledger = rows(settings.checkpoints_path, "SELECT kind FROM effects_ledger ORDER BY kind")
    assert [row["kind"] for row in ledger] == ["release_notification"] * 2 + ["ticket_closed"] * 3


def test_the_same_release_run_three_times_at_once_in_one_loop(
    app: TriageApp, settings: Settings, reported: dict[str, str]
) -> None:
    import asyncio

    fixes = [reported["gantt"], "ENG-77"]

    async def race() -> list[Any]:
        barrier = asyncio.Barrier(3)

        async def one() -> Any:
            await barrier.wait()
            return await app.arelease("2.4.1", fixes, NOTES)

        return list(await asyncio.gather(one(), one(), one()))

    results = asyncio.run(race())
    assert {r.status for r in results} == {"completed"}
    check_once(settings, reported)


@pytest.mark.slow
def test_the_same_release_run_at_once_from_separate_processes(
    app: TriageApp, settings: Settings, reported: dict[str, str], model_cache: Path
) -> None:
    from tests.integration.release_race_driver import follow_up

    app.close()
    fixes = [reported["gantt"], "ENG-77"]
    outcomes = race_in_processes(follow_up, [(str(settings.home), str(model_cache), fixes, NOTES)] * 2)
    assert {o["status"] for o in outcomes} == {"completed"}
    check_once(settings, reported)


@pytest.mark.parametrize("seed", [3, 11])
def test_faults_and_lost_answers_repeat_no_effect(
    app: TriageApp, settings: Settings, reported: dict[str, str], seed: int
) -> None:
    """Tool calls fail (transient), or happen and lose their answer (timeout); retries and recover repeat nothing."""
    app.close()
    faulty = settings.model_copy(update={"faults": f"transient=0.25,timeout=0.25,seed={seed}"})
    with TriageApp(faulty) as flaky:
        result = flaky.release("2.4.1", [reported["gantt"], "ENG-77"], NOTES)
        for _ in range(10):
            if result.status != "failed":
                break
            assert result.failure_class == "transient", result.status_reason
            result = flaky.recover(result.thread_id)
        injector = flaky._portal.call(flaky._get_engine()).services.gateway.faults
        assert injector is not None and injector.injected["timeout"] > 0 and injector.injected["transient"] > 0
    assert result.status == "completed", result.status_reason
    check_once(settings, reported)


def test_a_release_takes_the_closed_tickets_off_the_customers_open_requests(
    app: TriageApp, reported: dict[str, str]
) -> None:
    def open_requests(customer_id: str) -> list[str]:
        memory = app.customer_memory(customer_id)
        assert memory is not None
        return [r["id"] for r in memory["open_requests"]]

    assert {reported["gantt"], reported["export"]} <= set(open_requests("cus_0001"))
    assert reported["export2"] in open_requests("cus_0002")
    app.release("2.4.1", ["ENG-77"], NOTES)  # fixes both exports, not the gantt chart
    assert reported["gantt"] in open_requests("cus_0001")
    assert reported["export"] not in open_requests("cus_0001")
    assert reported["export2"] not in open_requests("cus_0002")
    memory = app.customer_memory("cus_0002")
    assert memory is not None and reported["export2"] not in memory["summary"]
