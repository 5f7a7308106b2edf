"""`POST /api/releases`: the release follow-up from the intake API, with the intake's token and idempotency rules,
and its mass notification in the approvals inbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.conftest import policy_copy, rows
from tests.integration.test_release import GANTT, engineering_ticket
from tests.integration.web.conftest import INTAKE_TOKEN, Web, csrf_of
from triage.settings import Settings

AUTH = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


async def test_a_posted_release_waits_in_the_inbox_and_runs_once_approved(
    tmp_path: Path, model_cache: Path, make_web: Callable[[Settings], Web]
) -> None:
    folder = policy_copy(tmp_path, "approvals.toml", "mass_notification_above = 10", "mass_notification_above = 1")
    settings = Settings(home=tmp_path / "home", cache_home=model_cache, policy_dir=folder)
    web = make_web(settings)
    try:
        fixed = [await asyncio.to_thread(engineering_ticket, web.triage, c, *GANTT) for c in ("cus_0001", "cus_0002")]
        release = {"version": "2.4.1", "fixes": fixed, "notes": "The gantt chart renders the right way up again."}
        async with web.client() as engineering:
            assert (await engineering.post("/api/releases", json=release)).status_code == 401
            bad = await engineering.post("/api/releases", json={**release, "version": "soon"}, headers=AUTH)
            assert bad.status_code == 422 and "'soon' is not a release version" in bad.json()["detail"]
            empty = await engineering.post("/api/releases", json={**release, "fixes": []}, headers=AUTH)
            assert empty.status_code == 422 and "names no fix" in empty.json()["detail"]
            headers = {**AUTH, "Idempotency-Key": "release-2.4.1"}
            first = await engineering.post("/api/releases", json=release, headers=headers)
            assert first.status_code == 202, first.text
            accepted = first.json()
            assert accepted["created"] is True and accepted["thread_id"].startswith("rel_")
            retried = await engineering.post("/api/releases", json=release, headers=headers)
            assert retried.json() == {**accepted, "created": False}
            other = await engineering.post("/api/releases", json={**release, "notes": "x"}, headers=headers)
            assert other.status_code == 409
            await asyncio.gather(*web.api.state.web.runs)
            paused = (await engineering.get(accepted["status_url"], headers=AUTH)).json()
            assert paused["status"] == "awaiting_approval" and paused["version"] == "2.4.1"

        alice = await web.signed_in("alice")
        inbox = await alice.get("/inbox")
        assert inbox.status_code == 200 and accepted["thread_id"] in inbox.text
        assert "Mass notification" in inbox.text and "2 customers, e.g." in inbox.text
        assert "<code>cus_0001</code>" in inbox.text and release["notes"] in inbox.text
        done = await alice.post(
            f"/inbox/threads/{accepted['thread_id']}/decision",
            data={"decision": "approve", "csrf": csrf_of(inbox.text), "reason": "notes read"},
        )
        assert done.status_code == 303, done.text
        page = await alice.get(done.headers["location"])
        assert page.status_code == 200 and "completed" in page.text
        await alice.aclose()
        result = (await web.triage.athread(accepted["thread_id"])).result
        assert result.status == "completed" and len(result.actions) == 4
        sent = rows(settings.helpdesk_path, "SELECT customer_id FROM outbox WHERE template = 'release.fixed'")
        assert sorted(row["customer_id"] for row in sent) == ["cus_0001", "cus_0002"]
    finally:
        await web.triage.aclose()
