"""Measure the inbox page time with many pending approvals: `python scripts/bench_inbox.py [--approvals 10000]`.

One real ticket is run to its approval pause; its latest checkpoint and pending writes are then copied under N-1
new thread ids (the store a busy team would have, without running N tickets). The inbox is requested through
the web app (httpx's ASGI transport, a signed-in approver) and the p50/p95 page times are printed, with the time
of the app API call that reads one page (`apending_approvals(limit=50)`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from triage import TriageApp
from triage.settings import Settings
from triage.web import WebSettings, create_app
from triage.web.app import web_store_path
from triage.web.store import WebStore


def clone_pending(checkpoints: Path, thread_id: str, copies: int) -> None:
    """Copy the thread's latest top-level checkpoint, its writes and its approval under `copies` new thread ids."""
    conn = sqlite3.connect(checkpoints)
    with conn:
        (latest,) = conn.execute(
            "SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''", (thread_id,)
        ).fetchone()
        conn.execute("CREATE TEMP TABLE n(i INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO n VALUES (?)", [(i,) for i in range(copies)])
        conn.execute(
            "INSERT INTO checkpoints SELECT printf('thr_bench_%06d', n.i), checkpoint_ns, checkpoint_id, "
            "parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints, n "
            "WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
            (thread_id, latest),
        )
        conn.execute(
            "INSERT INTO writes SELECT printf('thr_bench_%06d', n.i), checkpoint_ns, checkpoint_id, task_id, "
            "task_path, idx, channel, type, value FROM writes, n "
            "WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
            (thread_id, latest),
        )
        # The approval index (which the inbox reads) gets one pending row per copy, as the approve node writes it.
        conn.execute(
            "INSERT INTO approval_index SELECT approval_id || printf('_%06d', n.i), printf('thr_bench_%06d', n.i), "
            "origin_id, round, state, version, "
            "replace(replace(request, approval_id, approval_id || printf('_%06d', n.i)), thread_id, "
            "printf('thr_bench_%06d', n.i)), requested_at, expires_at, decided_by, decision, decided_at, tier, action "
            "FROM approval_index, n WHERE thread_id = ? AND state = 'pending'",
            (thread_id,),
        )
    conn.close()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def measure(home: Path, approvals: int, requests: int) -> None:
    """Build the store, then time the inbox."""
    settings = Settings(home=home)
    app = TriageApp(settings)
    try:
        paused = await app.arun(
            {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice."}
        )
        assert paused.status == "awaiting_approval", paused.status_reason
    finally:
        await app.aclose()
    started = time.perf_counter()
    clone_pending(settings.checkpoints_path, paused.thread_id, approvals - 1)
    print(f"store: {approvals} pending approvals ({time.perf_counter() - started:.1f} s to generate)")

    WebStore(web_store_path(settings)).set_password("alice", "benchmark-password")
    app = TriageApp(settings)
    api = create_app(web_settings=WebSettings(), triage=app)
    transport = httpx.ASGITransport(app=api)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            form = await client.get("/inbox/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            await client.post(
                "/inbox/login", data={"approver": "alice", "password": "benchmark-password", "csrf": token.group(1)}
            )
            api_times, page_times = [], []
            for _ in range(requests):
                started = time.perf_counter()
                pending = await app.apending_approvals(limit=50)
                api_times.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                page = await client.get("/inbox")
                page_times.append((time.perf_counter() - started) * 1000)
                assert page.status_code == 200 and f"Inbox ({approvals} pending" in page.text
            assert len(pending) == 50
    finally:
        await app.aclose()
    for name, times in (("inbox page", page_times), ("apending_approvals(limit=50)", api_times)):
        print(
            f"{name}: p50 {statistics.median(times):.0f} ms, p95 {percentile(times, 95):.0f} ms "
            f"over {len(times)} requests"
        )


def main() -> int:
    """Parse options and run the measurement in a temporary home."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--approvals", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="triage-bench-") as home:
        asyncio.run(measure(Path(home), options.approvals, options.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
