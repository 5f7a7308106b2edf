"""The web app over HTTP (httpx's ASGI transport, real SQLite files): every refusal, and the decisions that pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FailCheckpointWrites, HoldCheckpointWrite, policy_copy, rows
from tests.integration.web.conftest import DUPLICATE_CHARGE, INTAKE_TOKEN, Web, csrf_of
from tests.integration.zygote import triage_cli
from triage import TriageApp
from triage.settings import Settings
from triage.web import WebSettings
from triage.web.auth import SESSION_COOKIE
from triage.web.intake import restart_unstarted
from triage.web.store import WebStore

AUTH = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


def decision_url(thread_id: str) -> str:
    return f"/inbox/threads/{thread_id}/decision"


def refunds(settings: Settings, thread_id: str) -> list[dict[str, object]]:
    return rows(settings.helpdesk_path, "SELECT * FROM refunds WHERE thread_id = ?", (thread_id,))


async def test_pages_need_a_session(web: Web) -> None:
    thread = await web.pause("cus_mid_dup")
    async with web.client() as anonymous:
        for path in ("/inbox", f"/inbox/threads/{thread}"):
            page = await anonymous.get(path)
            assert page.status_code == 401
            assert 'action="/inbox/login"' in page.text
        decided = await anonymous.post(decision_url(thread), data={"decision": "approve", "csrf": "x"})
        assert decided.status_code == 401
    assert (await web.triage.athread(thread)).result.status == "awaiting_approval"


async def test_signed_in_approver_sees_the_queue_and_approves_as_themself(web: Web, settings: Settings) -> None:
    thread = await web.pause("cus_mid_dup")
    alice = await web.signed_in("alice")
    inbox = await alice.get("/inbox")
    assert inbox.status_code == 200
    assert "<title>Inbox (1 pending, 0 overdue)" in inbox.text
    assert thread in inbox.text and "$240.00" in inbox.text and "single: 0/1 approvals" in inbox.text
    # A form field naming someone else changes nothing: the decider is the session's approver.
    done = await alice.post(
        decision_url(thread),
        data={"decision": "approve", "csrf": csrf_of(inbox.text), "approver": "sam", "reason": "bank confirms"},
    )
    assert done.status_code == 303 and done.headers["location"] == f"/inbox/threads/{thread}?decided=approve"
    page = await alice.get(done.headers["location"])
    assert "completed" in page.text and "refund $240.00" in page.text and "Reply sent" in page.text
    view = await web.triage.athread(thread)
    assert [(line["event"], line["actor"]) for line in view.audit][:2] == [
        ("approval_requested", "approve"),
        ("approved", "alice"),
    ]
    assert [r["amount_cents"] for r in refunds(settings, thread)] == [24000]
    await alice.aclose()


async def test_bad_csrf_token_is_refused(web: Web, settings: Settings) -> None:
    thread = await web.pause("cus_mid_dup")
    alice = await web.signed_in("alice")
    for token in ("", "forged-token"):
        refused = await alice.post(decision_url(thread), data={"decision": "approve", "csrf": token})
        assert refused.status_code == 403 and "CSRF" in refused.text
    bob = await web.signed_in("bob")
    bobs_token = csrf_of((await bob.get("/inbox")).text)
    refused = await alice.post(decision_url(thread), data={"decision": "approve", "csrf": bobs_token})
    assert refused.status_code == 403
    assert refunds(settings, thread) == []
    async with web.client() as stranger:
        await stranger.get("/inbox/login")
        credentials = {"approver": "alice", "password": "alice-password-1", "csrf": "x"}
        login = await stranger.post("/inbox/login", data=credentials)
        assert login.status_code == 403 and SESSION_COOKIE not in login.cookies
    await alice.aclose()
    await bob.aclose()


async def test_wrong_role_is_refused(web: Web, settings: Settings) -> None:
    thread = await web.pause("cus_large_dup")
    # Someone signed in who is not (or no longer) an approver in the policy.
    session_id, _ = web.store.create_session("mallory", __import__("datetime").timedelta(hours=1))
    async with web.client(cookies={SESSION_COOKIE: session_id}) as mallory:
        assert (await mallory.get("/inbox")).status_code == 403
    # Two agents cannot complete a dual approval: the second needs to be a supervisor.
    alice, bob = await web.signed_in("alice"), await web.signed_in("bob")
    first = await alice.post(
        decision_url(thread), data={"decision": "approve", "csrf": csrf_of((await alice.get("/inbox")).text)}
    )
    assert first.status_code == 303
    refused = await bob.post(
        decision_url(thread), data={"decision": "approve", "csrf": csrf_of((await bob.get("/inbox")).text)}
    )
    assert refused.status_code == 403 and "a dual approval needs a supervisor" in refused.text
    assert refunds(settings, thread) == []
    sam = await web.signed_in("sam")
    done = await sam.post(
        decision_url(thread), data={"decision": "approve", "csrf": csrf_of((await sam.get("/inbox")).text)}
    )
    assert done.status_code == 303
    assert [r["amount_cents"] for r in refunds(settings, thread)] == [120000]
    for client in (alice, bob, sam):
        await client.aclose()


async def test_nobody_decides_on_their_own_ticket(
    tmp_path: Path, model_cache: Path, make_web: Callable[[Settings], Web]
) -> None:
    folder = policy_copy(
        tmp_path, "approvals.toml", 'id = "sam"\nrole = "supervisor"', 'id = "sam"\nrole = "supervisor"\nemail = "x@y"'
    )
    settings = Settings(home=tmp_path / "home", cache_home=model_cache, policy_dir=folder)
    web = make_web(settings)
    try:
        customer = await web.triage.acustomer("cus_mid_dup")
        assert customer is not None
        policy_file = folder / "approvals.toml"
        policy_file.write_text(policy_file.read_text().replace("x@y", customer["email"].upper()))
        web = Web(web.triage, web.api.state.web.web_settings)  # reload the policy with the real email
        thread = await web.pause("cus_mid_dup")
        sam = await web.signed_in("sam")
        refused = await sam.post(
            decision_url(thread),
            data={"decision": "approve", "csrf": csrf_of((await sam.get("/inbox")).text)},
        )
        assert refused.status_code == 403 and "your own email" in refused.text
        assert refunds(settings, thread) == []
        await sam.aclose()
    finally:
        await web.triage.aclose()


async def test_reject_and_edit_down(web: Web, settings: Settings) -> None:
    rejected, edited = await web.pause("cus_mid_dup"), await web.pause("cus_large_dup")
    sam = await web.signed_in("sam")
    token = csrf_of((await sam.get("/inbox")).text)
    no_reason = await sam.post(decision_url(rejected), data={"decision": "reject", "csrf": token})
    assert no_reason.status_code == 422 and "a rejection needs a reason" in no_reason.text
    done = await sam.post(
        decision_url(rejected), data={"decision": "reject", "csrf": token, "reason": "preorder, not a dup"}
    )
    assert done.status_code == 303
    assert (await web.triage.athread(rejected)).result.rejection["reason"] == "preorder, not a dup"  # type: ignore[index]
    for amount, message in [("1300", "not raise it"), ("abc", "not an amount"), ("1.234", "two decimals")]:
        refused = await sam.post(decision_url(edited), data={"decision": "edit", "csrf": token, "amount": amount})
        assert refused.status_code in (403, 422) and message in refused.text, refused.text
    # $1,200 down to $450.50: a single-tier amount now, and sam's edit is its approval.
    done = await sam.post(decision_url(edited), data={"decision": "edit", "csrf": token, "amount": "450.50"})
    assert done.status_code == 303
    assert [r["amount_cents"] for r in refunds(settings, edited)] == [45050]
    assert refunds(settings, rejected) == []
    await sam.aclose()


async def test_concurrent_decisions_one_wins_the_other_is_told(web: Web, settings: Settings) -> None:
    thread = await web.pause("cus_mid_dup")
    alice, bob = await web.signed_in("alice"), await web.signed_in("bob")
    forms = [
        (client, {"decision": "approve", "csrf": csrf_of((await client.get("/inbox")).text)}) for client in (alice, bob)
    ]
    answers = await asyncio.gather(*(c.post(decision_url(thread), data=f) for c, f in forms))
    assert sorted(a.status_code for a in answers) == [303, 409]
    loser = next(a for a in answers if a.status_code == 409)
    assert "not awaiting approval" in loser.text or "decided" in loser.text
    assert len(refunds(settings, thread)) == 1
    await alice.aclose()
    await bob.aclose()


async def test_login_burst_is_throttled(web: Web) -> None:
    async with web.client() as attacker:
        statuses = []
        for _ in range(6):
            form = await attacker.get("/inbox/login")
            answer = await attacker.post(
                "/inbox/login", data={"approver": "alice", "password": "guess", "csrf": csrf_of(form.text)}
            )
            statuses.append(answer.status_code)
        assert statuses == [401] * 5 + [429]
        form = await attacker.get("/inbox/login")
        right = await attacker.post(
            "/inbox/login", data={"approver": "alice", "password": "alice-password-1", "csrf": csrf_of(form.text)}
        )
        assert right.status_code == 429 and "Retry-After" in right.headers
    # The throttle is per person and per address: another approver elsewhere still gets in.
    bob = await web.client(address="127.0.0.2").__aenter__()
    form = await bob.get("/inbox/login")
    credentials = {"approver": "bob", "password": "bob-password-22", "csrf": csrf_of(form.text)}
    ok = await bob.post("/inbox/login", data=credentials)
    assert ok.status_code == 303
    await bob.aclose()


async def test_logout_ends_the_session_everywhere_and_links_work_once(web: Web) -> None:
    alice = await web.signed_in("alice")
    session_id = alice.cookies[SESSION_COOKIE]
    inbox = await alice.get("/inbox")
    out = await alice.post("/inbox/logout", data={"csrf": csrf_of(inbox.text)})
    assert out.status_code == 303
    async with web.client(cookies={SESSION_COOKIE: session_id}) as replayed:
        assert (await replayed.get("/inbox")).status_code == 401
    token = web.store.create_login_link("bob", __import__("datetime").timedelta(minutes=5))
    async with web.client() as bob:
        assert (await bob.get(f"/inbox/login/link?token={token}")).status_code == 200
        assert (await bob.post("/inbox/login/link", data={"token": token})).status_code == 303
        assert (await bob.get("/inbox")).status_code == 200
    async with web.client() as again:
        assert (await again.post("/inbox/login/link", data={"token": token})).status_code == 401
    await alice.aclose()


async def test_identity_header_is_trusted_only_from_the_proxy(web: Web) -> None:
    async with web.client(address="10.9.8.7") as proxied:
        page = await proxied.get("/inbox", headers={"X-Forwarded-User": "sam"})
        assert page.status_code == 200 and 'id="signed-in-as">sam<' in page.text
    async with web.client(address="10.0.0.1") as spoofed:
        assert (await spoofed.get("/inbox", headers={"X-Forwarded-User": "sam"})).status_code == 401


async def test_intake_runs_a_ticket_once_per_key(web: Web) -> None:
    ticket = {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": DUPLICATE_CHARGE}
    async with web.client() as helpdesk:
        first = await helpdesk.post("/api/tickets", json=ticket, headers={**AUTH, "Idempotency-Key": "mail-42"})
        assert first.status_code == 202, first.text
        accepted = first.json()
        assert accepted["created"] is True and accepted["status_url"] == f"/api/threads/{accepted['thread_id']}"
        retried = await helpdesk.post("/api/tickets", json=ticket, headers={**AUTH, "Idempotency-Key": "mail-42"})
        assert retried.status_code == 202
        assert retried.json() == {**accepted, "created": False}
        other = await helpdesk.post(
            "/api/tickets", json={**ticket, "body": "something else"}, headers={**AUTH, "Idempotency-Key": "mail-42"}
        )
        assert other.status_code == 409
        await asyncio.gather(*web.api.state.web.runs)
        result = await helpdesk.get(accepted["status_url"], headers=AUTH)
        assert result.status_code == 200 and result.json()["status"] == "completed"
        assert (await helpdesk.get(accepted["status_url"])).status_code == 401
        assert (await helpdesk.get("/api/threads/thr_nope", headers=AUTH)).status_code == 404
    threads = await web.triage.athreads(limit=100)
    assert [t.thread_id for t in threads] == [accepted["thread_id"]]


async def test_intake_refuses_bad_token_oversize_and_bad_tickets(web: Web, settings: Settings) -> None:
    async with web.client() as helpdesk:
        ticket = {"customer_id": "cus_small_dup", "body": "hello"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {INTAKE_TOKEN}"}):
            refused = await helpdesk.post("/api/tickets", json=ticket, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        huge = await helpdesk.post("/api/tickets", content=b'{"body": "' + b"x" * 70_000 + b'"}', headers=AUTH)
        assert huge.status_code == 413
        for bad in (
            '{"body": ""}',
            '{"cusotmer_id": "x", "body": "hi"}',
            "not json",
            '{"customer_id": "cus_nobody", "body": "hi"}',
            '{"body": "any news?", "conversation_id": "thr_nobody"}',
        ):
            answer = await helpdesk.post("/api/tickets", content=bad, headers=AUTH)
            assert answer.status_code == 422, bad
            cli = triage_cli(
                ["run", "--file", "-"],
                input=bad,
                env={**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)},
                timeout=120,
            )
            assert cli.returncode == 2
            assert answer.json()["detail"] in " ".join(cli.stderr.split()), (answer.json(), cli.stderr)
    assert await web.triage.athreads() == []


async def test_openapi_schema_describes_intake(web: Web) -> None:
    async with web.client() as client:
        schema = (await client.get("/api/openapi.json")).json()
    submit = schema["paths"]["/api/tickets"]["post"]
    assert set(submit["responses"]) >= {"202", "401", "409", "413", "422"}
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["body"] and set(body["properties"]) == {
        "customer_id",
        "subject",
        "body",
        "channel",
        "conversation_id",
        "message_id",
        "in_reply_to",
        "references",
    }
    assert {p["name"] for p in submit["parameters"]} == {"authorization", "idempotency-key"}
    assert "/api/threads/{thread_id}" in schema["paths"]
    assert not any(path.startswith(("/inbox", "/inbox/login")) for path in schema["paths"])
    json.dumps(schema)


async def test_a_session_cookie_not_signed_here_is_refused(web: Web, tmp_path: Path) -> None:
    alice = await web.signed_in("alice")
    cookie = alice.cookies[SESSION_COOKIE]
    token, _, signature = cookie.rpartition(".")
    assert (await alice.get("/inbox")).status_code == 200
    elsewhere = WebStore(tmp_path / "other-web.sqlite")
    other_cookie, _ = elsewhere.create_session("alice", timedelta(hours=1))
    other_token, _, other_signature = other_cookie.rpartition(".")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    forged = (
        token,  # the session id without its signature
        f"{token}.{flipped}",  # one character of the signature changed
        f"{token}.{other_signature}",  # signed with another server's key
        other_cookie,  # a whole session of another server
        f"{other_token}.{signature}",
        "",
    )
    for value in forged:
        async with web.client(cookies={SESSION_COOKIE: value}) as mallory:
            assert (await mallory.get("/inbox")).status_code == 401, value
    assert (await alice.get("/inbox")).status_code == 200
    await alice.aclose()


def _accept_without_running(web: Web, key: str, ticket: dict[str, Any]) -> str:
    """What a server that stopped right after answering 202 leaves behind: the key taken, no run started."""
    thread_id, created = web.store.claim_intake_key(key, f"thr_{key}", json.dumps(ticket).encode())
    assert created
    return thread_id


async def test_accepted_tickets_whose_run_never_started_are_started_once(
    settings: Settings, web_settings: WebSettings
) -> None:
    quick = web_settings.model_copy(update={"intake_retry_seconds": 2.0})
    servers = [Web(TriageApp(settings), quick), Web(TriageApp(settings), quick)]
    ticket = {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": DUPLICATE_CHARGE}
    orphan = _accept_without_running(servers[0], "mail-7", ticket)
    gone = _accept_without_running(servers[0], "mail-8", {"customer_id": "cus_nobody", "body": "Where is my order?"})
    # Within the lease nobody takes it on: the server that accepted it may still be starting it.
    assert await restart_unstarted(servers[1].api.state.web) == []
    async with servers[0].client() as helpdesk:
        pending = await helpdesk.get(f"/api/threads/{orphan}", headers=AUTH)
        assert pending.status_code == 202 and pending.json()["status"] == "accepted"
        await asyncio.sleep(2.1)
        # Two servers look at once: one of them starts it.
        barrier = asyncio.Barrier(2)

        async def look(server: Web) -> list[str]:
            await barrier.wait()
            return await restart_unstarted(server.api.state.web)

        found = await asyncio.gather(*(look(server) for server in servers))
        assert sorted(found, key=len) == [[], [orphan]], found
        for server in servers:
            await asyncio.gather(*server.api.state.web.runs)
        done = await helpdesk.get(f"/api/threads/{orphan}", headers=AUTH)
        assert done.status_code == 200 and done.json()["status"] == "completed", done.text
        refused = await helpdesk.get(f"/api/threads/{gone}", headers=AUTH)
        assert refused.status_code == 410 and "cus_nobody" in refused.json()["detail"], refused.text
        await asyncio.sleep(2.1)
        assert await restart_unstarted(servers[1].api.state.web) == []
    assert [t.thread_id for t in await servers[0].triage.athreads(limit=10)] == [orphan]
    assert len(refunds(settings, orphan)) == 1
    for server in servers:
        await server.triage.aclose()


def test_a_web_store_from_before_intake_restarts_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "web.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE intake_keys (key TEXT PRIMARY KEY, thread_id TEXT NOT NULL, body_digest TEXT NOT NULL, "
        "created_at TEXT NOT NULL);"
        "INSERT INTO intake_keys VALUES ('mail-1', 'thr_old', 'abc', '2026-01-01T00:00:00+00:00');"
    )
    old.commit()
    old.close()
    store = WebStore(path)
    # The old key still answers retries with its thread, and is never run again (its ticket was not kept).
    try:
        store.claim_intake_key("mail-1", "thr_new", b"whatever")
    except ValueError:
        pass  # another body under the old key: refused, as before
    else:
        raise AssertionError("an old key was bound to a new thread")
    assert store.intake_state("thr_old") == (True, None)
    assert store.unstarted_intakes(timedelta(0)) == []


async def test_intake_threads_an_email_reply_into_its_conversation(web: Web, settings: Settings) -> None:
    first = {"customer_id": "cus_new", "subject": "Change my email", "body": "I want to change my account email."}
    async with web.client() as mail:
        started = (await mail.post("/api/tickets", json=first, headers=AUTH)).json()
        await asyncio.gather(*web.api.state.web.runs)
        thread_id = started["thread_id"]
        (sent,) = rows(settings.helpdesk_path, "SELECT id FROM outbox WHERE thread_id = ?", (thread_id,))
        reply = {
            "subject": "Re: Change my email",
            "body": "Please use web.reply@example.org",
            "in_reply_to": f"<{sent['id']}@support.example>",
            "references": [f"<{sent['id']}@support.example>"],
        }
        answered = await mail.post("/api/tickets", json=reply, headers=AUTH)
        assert answered.status_code == 202, answered.text
        assert answered.json()["thread_id"] == thread_id
        await asyncio.gather(*web.api.state.web.runs)
        result = (await mail.get(f"/api/threads/{thread_id}", headers=AUTH)).json()
        assert (result["turn"], result["intent"], result["status"]) == (2, "email_change", "completed")

        for bad, detail in (
            ({**reply, "in_reply_to": 42}, "in_reply_to: must be a string or a list of message ids"),
            ({**reply, "conversation_id": "thr_other"}, f"the email answers conversation {thread_id}"),
        ):
            refused = await mail.post("/api/tickets", json=bad, headers=AUTH)
            assert refused.status_code == 422 and detail in refused.json()["detail"], refused.text
        fresh = await mail.post("/api/tickets", json={**first, "in_reply_to": "<CAF+9@mail.example>"}, headers={**AUTH})
        assert fresh.status_code == 202 and fresh.json()["thread_id"] != thread_id
        await asyncio.gather(*web.api.state.web.runs)


async def test_an_intake_follow_up_that_saved_nothing_is_run_again_by_the_sweep(
    settings: Settings, web_settings: WebSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Its conversation's thread exists, so "the thread exists" does not say it ran (found by review: it was taken
    for started, then given up as "send it again"). It stays accepted; the restart sweep runs it again, and its
    message id makes the conversation take it in once."""

    web = Web(TriageApp(settings), web_settings.model_copy(update={"intake_retry_seconds": 1.0}))
    first = {"customer_id": "cus_small_dup", "body": "What are your opening hours?"}
    try:
        async with web.client() as mail:
            thread_id = (await mail.post("/api/tickets", json=first, headers=AUTH)).json()["thread_id"]
            await asyncio.gather(*web.api.state.web.runs)
            (await _saver(web.triage)).faults = FailCheckpointWrites(1, 1)
            follow_up = {"body": "And are you open on Sundays?", "conversation_id": thread_id}
            answered = await mail.post("/api/tickets", json=follow_up, headers={**AUTH, "Idempotency-Key": "fu-1"})
            assert answered.status_code == 202, answered.text
            await asyncio.gather(*web.api.state.web.runs)
            (await _saver(web.triage)).faults = None
            pending = await mail.get(f"/api/threads/{thread_id}", headers=AUTH)
            assert pending.status_code == 202 and pending.json()["status"] == "running", pending.text
            assert (await web.triage.athread(thread_id)).result.turn == 1, "the conversation is as it was"
            await asyncio.sleep(1.1)
            assert await restart_unstarted(web.api.state.web) == [thread_id]
            await asyncio.gather(*web.api.state.web.runs)
            result = (await mail.get(f"/api/threads/{thread_id}", headers=AUTH)).json()
    finally:
        await web.triage.aclose()
    assert (result["turn"], result["status"]) == (2, "completed"), result
    said = [r.getMessage() for r in caplog.records if r.name == "triage.web.intake"]
    assert len(said) == 1 and "it will be tried again" in said[0] and "disk I/O error" in said[0], said


async def _saver(triage: TriageApp) -> Any:
    return (await triage._portal.acall(triage._get_engine())).services.saver


async def _only_thread(settings: Settings) -> str:
    (row,) = rows(settings.checkpoints_path, "SELECT DISTINCT thread_id FROM checkpoints")
    return str(row["thread_id"])


@contextlib.asynccontextmanager
async def _first_turn_held_in_another_app(
    settings: Settings,
) -> AsyncIterator[tuple[str, HoldCheckpointWrite, asyncio.Task[Any]]]:
    """Another app on the home runs `FIRST`, stopped at its third checkpoint: (its thread, the hold, the run)."""
    other = TriageApp(settings)
    hold = HoldCheckpointWrite(at=5)
    try:
        (await _saver(other)).faults = hold
        first = asyncio.create_task(other.arun(FIRST))
        assert await asyncio.to_thread(hold.reached.wait, 30)
        yield await _only_thread(settings), hold, first
    finally:
        hold.release.set()
        await other.aclose()


FIRST = {"customer_id": "cus_small_dup", "body": "What are your opening hours?"}
FOLLOW_UP = "And are you open on Sundays?"


async def test_an_intake_follow_up_sent_while_the_first_turn_runs_here_waits_for_it(
    make_web: Callable[[Settings], Web], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The mail gateway posts a reply seconds after the first message: it became the second turn, not a refusal
    as busy that the restart sweep then took for started (found by review: the follow-up was lost). No retry is
    allowed here (`conversation_wait_seconds` 0): the first turn holds its thread in this process."""
    web = make_web(settings.model_copy(update={"conversation_wait_seconds": 0.0}))
    try:
        hold = HoldCheckpointWrite(at=5)
        (await _saver(web.triage)).faults = hold
        async with web.client() as mail:
            thread_id = (await mail.post("/api/tickets", json=FIRST, headers=AUTH)).json()["thread_id"]
            assert await asyncio.to_thread(hold.reached.wait, 30)
            follow_up = {"body": FOLLOW_UP, "conversation_id": thread_id}
            answered = await mail.post("/api/tickets", json=follow_up, headers={**AUTH, "Idempotency-Key": "fu-1"})
            assert answered.status_code == 202 and answered.json()["thread_id"] == thread_id, answered.text
            for _ in range(200):  # until the follow-up waits for the thread (bounded: 10 s)
                if web.triage._conversation_locks.get(thread_id, (None, 0))[1] == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the follow-up never waited for the first turn")
            hold.release.set()
            await asyncio.gather(*web.api.state.web.runs)
            result = (await mail.get(f"/api/threads/{thread_id}", headers=AUTH)).json()
    finally:
        await web.triage.aclose()
    assert (result["turn"], result["status"]) == (2, "completed"), result
    assert [turn["turn"] for turn in result["conversation"]] == [1], result["conversation"]
    assert not [r for r in caplog.records if r.name == "triage.web.intake"], caplog.text


async def test_an_intake_follow_up_to_a_turn_running_in_another_app_is_sent_again_until_it_ends(
    web: Web, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Another app on the home runs the first turn (a first turn holds no lease): the follow-up is refused as busy
    and sent again until that turn ends; then it is the second turn."""
    async with _first_turn_held_in_another_app(settings) as (thread_id, hold, first), web.client() as mail:
        follow_up = {"body": FOLLOW_UP, "conversation_id": thread_id}
        answered = await mail.post("/api/tickets", json=follow_up, headers=AUTH)
        assert answered.status_code == 202, answered.text
        await asyncio.sleep(0.5)  # refused as busy, and sent again, a few times
        assert not first.done() and web.api.state.web.runs
        hold.release.set()
        assert (await first).status == "completed"
        await asyncio.gather(*web.api.state.web.runs)
        result = (await mail.get(f"/api/threads/{thread_id}", headers=AUTH)).json()
    assert (result["turn"], result["status"]) == (2, "completed"), result
    assert not [r for r in caplog.records if r.name == "triage.web.intake"], caplog.text


async def test_an_intake_follow_up_still_refused_as_busy_when_its_time_is_up_is_tried_again_then_given_up(
    make_web: Callable[[Settings], Web], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused as busy through its retries, it stays accepted and the restart sweep tries it again; at its last
    allowed try it is given up (410: send it again with a new key). A later follow-up is what the conversation's
    status URL answers for from then on."""
    quick = WebSettings(
        intake_token=INTAKE_TOKEN, intake_max_bytes=64 * 1024, intake_retry_seconds=1.0, intake_attempts=2
    )
    web = Web(TriageApp(settings.model_copy(update={"conversation_wait_seconds": 0.3})), quick)
    try:
        async with _first_turn_held_in_another_app(settings) as (thread_id, hold, first), web.client() as mail:
            follow_up = {"body": FOLLOW_UP, "conversation_id": thread_id}
            assert (await mail.post("/api/tickets", json=follow_up, headers=AUTH)).status_code == 202
            await asyncio.wait_for(asyncio.gather(*web.api.state.web.runs), 10)
            waiting = await mail.get(f"/api/threads/{thread_id}", headers=AUTH)
            for _ in range(2):  # the sweep's tries: the second is the last allowed
                await asyncio.sleep(1.1)
                assert await restart_unstarted(web.api.state.web) == [thread_id]
                await asyncio.wait_for(asyncio.gather(*web.api.state.web.runs), 10)
            given_up = await mail.get(f"/api/threads/{thread_id}", headers=AUTH)
            hold.release.set()
            assert (await first).status == "completed"
            again = await mail.post("/api/tickets", json=follow_up, headers={**AUTH, "Idempotency-Key": "again"})
            assert again.status_code == 202, again.text
            await asyncio.gather(*web.api.state.web.runs)
            result = (await mail.get(f"/api/threads/{thread_id}", headers=AUTH)).json()
    finally:
        await web.triage.aclose()
    assert waiting.status_code == 202 and waiting.json()["status"] == "running", waiting.text
    assert given_up.status_code == 410, given_up.text
    assert "still running its last turn" in given_up.json()["detail"], given_up.text
    assert "send it again with a new Idempotency-Key" in given_up.json()["detail"], given_up.text
    assert (result["turn"], result["status"]) == (2, "completed"), result
    said = [r.getMessage() for r in caplog.records if r.name == "triage.web.intake"]
    assert [("tried again" in m, "given up" in m) for m in said] == [(True, False)] * 2 + [(False, True)], said


async def test_follow_ups_a_stopped_server_left_are_run_by_the_sweep_and_taken_in_once(
    settings: Settings, web_settings: WebSettings
) -> None:
    """A follow-up's thread is its conversation's, so "the thread exists" does not say it ran (found by review: the
    sweep took such a follow-up for started and it was never run). The sweep runs it again; its message id (the
    intake key) makes the conversation take it in once, also when it had run before its server stopped. An email
    reply (threaded by its headers) is run as a follow-up too, not refused as an unknown field."""
    quick = web_settings.model_copy(update={"intake_retry_seconds": 1.0})
    web = Web(TriageApp(settings), quick)
    try:
        async with web.client() as mail:
            first = {
                "customer_id": "cus_new",
                "subject": "Change my email",
                "body": "I want to change my account email.",
            }
            thread = (await mail.post("/api/tickets", json=first, headers=AUTH)).json()["thread_id"]
            await asyncio.gather(*web.api.state.web.runs)
        ran_before_the_stop = {"body": "Please use ran.before@example.org", "conversation_id": thread}
        web.store.claim_intake_key("fu-ran", thread, json.dumps(ran_before_the_stop).encode())
        assert (await web.triage.arun({**ran_before_the_stop, "message_id": "fu-ran"})).turn == 2
        never_ran = {"body": "Actually, use never.ran@example.org", "conversation_id": thread}
        web.store.claim_intake_key("fu-never", thread, json.dumps(never_ran).encode())
        await asyncio.sleep(1.1)  # past the claim: the server that accepted them is taken for stopped
        assert await restart_unstarted(web.api.state.web) == [thread, thread]
        await asyncio.gather(*web.api.state.web.runs)
        (sent, *_) = rows(settings.helpdesk_path, "SELECT id FROM outbox WHERE thread_id = ? ORDER BY rowid", (thread,))
        emailed = {"body": "One more thing: keep my old email too.", "in_reply_to": f"<{sent['id']}@support.example>"}
        web.store.claim_intake_key("fu-mail", thread, json.dumps(emailed).encode())
        await asyncio.sleep(1.1)
        assert await restart_unstarted(web.api.state.web) == [thread]
        await asyncio.gather(*web.api.state.web.runs)
        await asyncio.sleep(1.1)
        assert await restart_unstarted(web.api.state.web) == [], "each was marked started once it ran"
        view = await web.triage.athread(thread)
        latest = web.store.intake_state(thread)
    finally:
        await web.triage.aclose()
    messages = [turn["message"] for turn in view.result.conversation]
    assert view.result.turn == 4 and len(messages) == 3, messages
    assert "Please use" in messages[1] and "Actually, use" in messages[2], messages  # each once, in order
    assert latest == (True, None), "the email reply (the latest intake) ran, and was not refused"
    assert rows(settings.helpdesk_path, "SELECT COUNT(*) AS n FROM outbox WHERE thread_id = ?", (thread,)) == [
        {"n": 4}
    ], "one reply a turn: the follow-up that had run was not run again"


async def test_a_run_that_outlasts_the_retry_period_keeps_its_claim_and_is_not_run_again(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A follow-up whose turn takes longer than `intake_retry_seconds` (a slow model or helpdesk): its claim is
    renewed while it runs, so no sweep runs it beside itself or gives it up (found by review: it ended with a 410
    telling the client to send again a turn that had completed)."""
    quick = WebSettings(
        intake_token=INTAKE_TOKEN, intake_max_bytes=64 * 1024, intake_retry_seconds=0.6, intake_attempts=1
    )
    web = Web(TriageApp(settings), quick)
    try:
        async with web.client() as mail:
            thread_id = (await mail.post("/api/tickets", json=FIRST, headers=AUTH)).json()["thread_id"]
            await asyncio.gather(*web.api.state.web.runs)
            hold = HoldCheckpointWrite(at=5)
            (await _saver(web.triage)).faults = hold
            follow_up = {"body": FOLLOW_UP, "conversation_id": thread_id}
            assert (await mail.post("/api/tickets", json=follow_up, headers=AUTH)).status_code == 202
            assert await asyncio.to_thread(hold.reached.wait, 30)
            for _ in range(2):  # two retry periods and more pass while the turn is stalled
                await asyncio.sleep(0.7)
                assert await restart_unstarted(web.api.state.web) == []
            hold.release.set()
            await asyncio.gather(*web.api.state.web.runs)
            result = await mail.get(f"/api/threads/{thread_id}", headers=AUTH)
    finally:
        await web.triage.aclose()
    assert result.status_code == 200 and (result.json()["turn"], result.json()["status"]) == (2, "completed")
    assert not [r for r in caplog.records if r.name == "triage.web.intake"], caplog.text
