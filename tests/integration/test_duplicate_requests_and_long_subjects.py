"""Tickets racing for one duplicate charge get one refund request and one approval; the longest allowed subject
still gets its reply."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import rows
from triage import TriageApp
from triage.errors import StoreError
from triage.helpdesk import Helpdesk
from triage.schemas import MAX_SUBJECT_CHARS
from triage.settings import Settings

DUPLICATE_CHARGE = {
    "customer_id": "cus_mid_dup",
    "subject": "Charged twice",
    "body": "You charged me twice for the same order, please refund one of them.",
}


async def test_concurrent_duplicate_tickets_yield_one_request_and_one_approval(settings: Settings) -> None:
    async with TriageApp(settings) as app:
        await app.arun({"customer_id": "cus_0001", "body": "warm up the classifier"})
        results = await asyncio.gather(*(app.arun(DUPLICATE_CHARGE) for _ in range(8)))
        paused = [r for r in results if r.status == "awaiting_approval"]
        told = [r for r in results if r.status == "completed"]
        assert (len(paused), len(told)) == (1, 7), [r.status for r in results]
        open_requests = rows(
            settings.helpdesk_path,
            "SELECT payment_id, thread_id FROM refund_requests WHERE status IN ('requested', 'approved')",
        )
        assert [r["thread_id"] for r in open_requests] == [paused[0].thread_id]
        for result in told:
            assert result.reply is not None and "awaiting review by our billing team" in result.reply.body
            assert open_requests[0]["payment_id"] in result.reply.body
        assert [p.thread_id for p in await app.apending_approvals() if p.action == "refund"] == [paused[0].thread_id]
        done = await app.aresume(paused[0].thread_id, {"approver": "alice", "decision": "approve"})
        assert done.status == "completed"
    refunds = rows(settings.helpdesk_path, "SELECT payment_id FROM refunds WHERE customer_id = 'cus_mid_dup'")
    assert [r["payment_id"] for r in refunds if r["payment_id"] == open_requests[0]["payment_id"]] == [
        open_requests[0]["payment_id"]
    ]


@pytest.mark.parametrize("length", [MAX_SUBJECT_CHARS - 3, MAX_SUBJECT_CHARS])
def test_longest_subject_still_gets_its_reply(app: TriageApp, settings: Settings, length: int) -> None:
    subject = ("Charged twice for my order " * 20)[: length - 1] + "!"
    result = app.run({"customer_id": "cus_small_dup", "subject": subject, "body": "I was charged twice, refund one."})
    assert result.status == "completed", result.status_reason
    assert result.reply is not None and result.reply.subject.startswith("Re: Charged twice")
    assert len(result.reply.subject) <= MAX_SUBJECT_CHARS and result.reply.subject.endswith("…")
    [message] = rows(settings.helpdesk_path, "SELECT subject FROM outbox WHERE thread_id = ?", (result.thread_id,))
    assert message["subject"] == result.reply.subject


async def test_open_requests_left_duplicated_by_an_earlier_version_are_named(tmp_path: Path) -> None:
    path = tmp_path / "helpdesk.sqlite"
    await (await Helpdesk.open(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX one_open_refund_request_per_payment")
    for request in ("rr_a", "rr_b"):
        conn.execute(
            "INSERT INTO refund_requests (id, payment_id, customer_id, amount_cents, reason, status, created_at, "
            "thread_id, idempotency_key) SELECT ?, id, customer_id, amount_cents, 'test', 'requested', created_at, "
            "'t', ? FROM payments WHERE customer_id = 'cus_mid_dup' ORDER BY created_at DESC LIMIT 1",
            (request, request),
        )
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"several open refund requests for one payment \(pay_\w+: rr_a, rr_b\)"):
        await Helpdesk.open(path)
