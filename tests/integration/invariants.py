"""Invariants the chaos, crash and concurrency suites check on a home after the dust settles."""

from __future__ import annotations

from tests.conftest import rows
from triage.settings import Settings


def effects_happened_once(settings: Settings) -> dict[str, int]:
    """No effect twice: one refund per thread at most, no payment refunded beyond its amount, one message per
    thread, every refund in the effects ledger, and an audit line for every ledger entry and approved refund."""
    helpdesk, checkpoints = settings.helpdesk_path, settings.checkpoints_path
    refunds = rows(helpdesk, "SELECT thread_id, payment_id, amount_cents, idempotency_key FROM refunds")
    per_thread: dict[str, int] = {}
    for refund in refunds:
        if refund["thread_id"]:
            per_thread[refund["thread_id"]] = per_thread.get(refund["thread_id"], 0) + 1
    assert all(count == 1 for count in per_thread.values()), per_thread
    overpaid = rows(
        helpdesk,
        "SELECT p.id FROM payments p WHERE p.amount_cents < "
        "(SELECT COALESCE(SUM(r.amount_cents), 0) FROM refunds r WHERE r.payment_id = p.id)",
    )
    assert overpaid == [], "a payment was refunded more than it was paid"
    messages = rows(helpdesk, "SELECT thread_id, COUNT(*) AS n FROM outbox GROUP BY thread_id HAVING n > 1")
    assert messages == [], messages
    ledger = rows(checkpoints, "SELECT idempotency_key, thread_id, kind FROM effects_ledger")
    effect_lines = rows(checkpoints, "SELECT dedupe_key FROM audit_trail WHERE event = 'effect'")
    assert sorted(f"effect:{e['idempotency_key']}" for e in ledger) == sorted(e["dedupe_key"] for e in effect_lines)
    ledger_keys = {e["idempotency_key"] for e in ledger if e["kind"] == "refund"}
    triage_refunds = [r for r in refunds if r["thread_id"]]
    assert {r["idempotency_key"] for r in triage_refunds} == ledger_keys, "every refund is in the ledger"
    for entry in ledger:
        events = {
            a["event"]
            for a in rows(checkpoints, "SELECT event FROM audit_trail WHERE thread_id = ?", (entry["thread_id"],))
        }
        if entry["kind"] == "refund" and "approval_requested" in events:
            assert "approved" in events or "edited" in events, (entry, events)
    return {"refunds": len(triage_refunds), "effects": len(ledger)}
