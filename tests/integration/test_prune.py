"""`triage prune` on a real home: finished threads go, the pending approval stays and can still be approved, the
effects ledger and audit trail are kept, and the checkpoint store shrinks on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import rows
from triage import TriageApp
from triage.cli import cli
from triage.demo import DEMO_TICKETS
from triage.errors import ThreadNotFoundError
from triage.settings import Settings

pytestmark = pytest.mark.slow


def prune(home: Path, *args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(cli, ["prune", "--home", str(home), *args])
    return done.exit_code, done.stdout, done.stderr


def test_prune_keeps_the_pending_approval_and_the_ledger_and_shrinks_the_store(settings: Settings) -> None:
    with TriageApp(settings) as app:
        results = [app.run(ticket) for ticket in DEMO_TICKETS * 2]
    paused = [r.thread_id for r in results if r.status == "awaiting_approval"]
    finished = [r.thread_id for r in results if r.status in ("completed", "escalated")]
    assert paused and len(finished) >= 20
    store = settings.checkpoints_path
    ledger = rows(store, "SELECT * FROM effects_ledger ORDER BY idempotency_key")
    audit = rows(store, "SELECT * FROM audit_trail ORDER BY id")
    assert ledger and audit

    held = {
        row["thread_id"]
        for row in rows(
            settings.helpdesk_path,
            "SELECT thread_id FROM refund_requests WHERE status IN ('requested', 'approved') "
            "UNION SELECT thread_id FROM account_requests WHERE status = 'pending'",
        )
    } - set(paused)
    finished = [t for t in finished if t not in held]
    code, stdout, _ = prune(settings.home, "--keep", "0", "--dry-run", "--json")
    planned = json.loads(stdout)
    assert code == 0 and planned["dry_run"] is True
    assert sorted(planned["deleted"]) == sorted(finished)
    assert all(planned["kept"][t] == "awaits approval" for t in paused)
    assert all(planned["kept"][t] == "holds an open refund or account request" for t in held)
    assert rows(store, "SELECT COUNT(DISTINCT thread_id) AS n FROM checkpoints")[0]["n"] == len(results)

    code, stdout, _ = prune(settings.home, "--older-than", "30d", "--json")
    assert code == 0 and json.loads(stdout)["deleted"] == []

    size_before = store.stat().st_size
    code, stdout, _ = prune(settings.home, "--keep", "0", "--json")
    report = json.loads(stdout)
    assert code == 0 and sorted(report["deleted"]) == sorted(finished)
    size_after = store.stat().st_size
    assert size_after < size_before / 2, (size_before, size_after)
    assert report["bytes_after"] == size_after + (
        Path(f"{store}-wal").stat().st_size if Path(f"{store}-wal").exists() else 0
    )

    assert rows(store, "SELECT * FROM effects_ledger ORDER BY idempotency_key") == ledger
    kept_audit = rows(store, "SELECT * FROM audit_trail WHERE event != 'pruned' ORDER BY id")
    assert kept_audit == audit
    pruned_lines = rows(store, "SELECT thread_id, actor FROM audit_trail WHERE event = 'pruned'")
    assert sorted(line["thread_id"] for line in pruned_lines) == sorted(finished)
    assert {line["actor"] for line in pruned_lines} == {"system:prune"}

    with TriageApp(settings) as app:
        assert sorted(p.thread_id for p in app.pending_approvals()) == sorted(paused)
        with pytest.raises(ThreadNotFoundError):
            app.thread(finished[0])
        done = app.resume(paused[0], {"approver": "alice", "decision": "approve", "reason": "after prune"})
        assert done.status == "completed" and any(a.kind == "refund" for a in done.actions)
