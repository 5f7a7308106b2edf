"""`langgraph dev` serves the support graph for Studio, blocking-call detector on, and the SDK drives an approval.

The server is the real one (langgraph-cli's in-memory runtime) on a free loopback port, started from a folder of
its own with a copy of the project's `langgraph.json`; it keeps its threads in the app's checkpoint store.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from tests.local_services import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INTAKE_TOKEN = "langgraph-dev-intake-token-0123"


def _refund_ticket(customer_id: str) -> dict[str, Any]:
    return {
        "ticket": {
            "customer_id": customer_id,
            "subject": "Charged twice",
            "body": "You charged me twice for the same order, please refund one of the charges.",
        }
    }


def _langgraph_cli() -> str:
    return str(Path(sys.executable).with_name("langgraph"))


class Server:
    def __init__(self, url: str, home: Path, log: Path, started_in: float) -> None:
        self.url, self.home, self.log, self.started_in = url, home, log, started_in

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("langgraph-dev")
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT)]
    (folder / "langgraph.json").write_text(json.dumps(config))
    home = folder / "home"
    port = free_port()
    env = {
        **os.environ,
        "TRIAGE_HOME": str(home),
        "TRIAGE_CACHE_HOME": str(model_cache),  # the session's trained classifier, not a training in the server
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "LANGSMITH_TRACING": "false",
        "TRIAGE_INTAKE_TOKEN": INTAKE_TOKEN,
    }
    log = folder / "server.log"
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            [_langgraph_cli(), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"langgraph dev exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ok", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not answer on {url} within 90 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.25)
        yield Server(url, home, log, time.perf_counter() - started)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _paused_thread(client: Any, customer_id: str) -> tuple[str, dict[str, Any]]:
    thread = await client.threads.create()
    out = await client.runs.wait(thread["thread_id"], "support", input=_refund_ticket(customer_id))
    [pending] = out["__interrupt__"]
    return thread["thread_id"], pending["value"]


def test_studio_round_trip_with_a_refused_approver_then_agent_inbox_accept(server: Server) -> None:
    from langgraph_sdk import get_client

    async def scenario() -> dict[str, Any]:
        async with get_client(url=server.url) as client:
            return await steps(client)

    async def steps(client: Any) -> dict[str, Any]:
        started = time.perf_counter()
        thread_id, request = await _paused_thread(client, "cus_mid_dup")
        first_run = time.perf_counter() - started
        assert (request["action"], request["tier"], request["args"]["amount_cents"]) == ("refund", "single", 24000)
        assert request["action_request"] == {"action": "refund", "args": request["args"]}

        # An approver the policy does not know: refused, told why, and the thread stays paused on the same approval.
        refused = await client.runs.wait(
            thread_id, "support", command={"resume": [{"type": "accept", "args": None}]}, context={"approver": "zed"}
        )
        [again] = refused["__interrupt__"]
        assert again["value"]["approval_id"] == request["approval_id"]
        assert "zed" in again["value"]["refusal"] and "not an approver" in again["value"]["refusal"]
        state = await client.threads.get_state(thread_id)
        assert state["next"] == ["approve"]

        # Agent Inbox's own shape, the approver from the run's context.
        started = time.perf_counter()
        done = await client.runs.wait(
            thread_id, "support", command={"resume": [{"type": "accept", "args": None}]}, context={"approver": "alice"}
        )
        resume_run = time.perf_counter() - started
        history = await client.threads.get_history(thread_id, limit=100)
        thread = await client.threads.get(thread_id)
        return {
            "thread_id": thread_id,
            "done": done,
            "history": history,
            "thread": thread,
            "first_run": first_run,
            "resume_run": resume_run,
        }

    result = _run(scenario())
    done, thread_id = result["done"], result["thread_id"]
    assert "__interrupt__" not in done
    assert (done["status"], done["route"]) == ("completed", "billing")
    assert [a["kind"] for a in done["actions"]] == ["refund_request", "refund", "message"]
    assert result["thread"]["status"] == "idle"
    step_numbers = [h["metadata"].get("step") for h in result["history"]]
    assert len(step_numbers) > 10 and step_numbers == sorted(step_numbers, reverse=True)

    refunds = rows(server.home / "helpdesk.sqlite", "SELECT * FROM refunds WHERE thread_id = ?", (thread_id,))
    assert [r["amount_cents"] for r in refunds] == [24000]
    audit = rows(
        server.home / "checkpoints.sqlite",
        "SELECT event, actor FROM audit_trail WHERE thread_id = ? ORDER BY id",
        (thread_id,),
    )
    assert [(a["event"], a["actor"]) for a in audit] == [
        ("approval_requested", "approve"),
        ("refused", "zed"),
        ("approved", "alice"),
        ("effect", "execute"),
    ]
    log = server.log_text()
    assert "BlockingError" not in log and "Blocking call" not in log
    assert "not fully defined" not in log
    print(
        f"langgraph dev ready in {server.started_in:.1f} s; first run to the approval {result['first_run']:.2f} s; "
        f"resume to completion {result['resume_run']:.2f} s"
    )


def test_bad_resume_values_re_interrupt_with_the_reason_never_an_error_thread(server: Server) -> None:
    from langgraph_sdk import get_client

    async def scenario() -> list[str]:
        async with get_client(url=server.url) as client:
            return await steps(client)

    async def steps(client: Any) -> list[str]:
        thread_id, request = await _paused_thread(client, "cus_large_dup")
        assert (request["tier"], request["args"]["amount_cents"]) == ("dual", 120000)
        reasons = []
        for resume, context in (
            ({"decision": "approve"}, {}),  # no approver anywhere
            ([{"type": "ignore", "args": None}], {"approver": "alice"}),  # the payload says ignore is not allowed
            ([{"type": "edit", "args": {"args": {"amount_cents": 200000}}}], {"approver": "alice"}),  # raises it
            ("yes please", {"approver": "alice"}),
        ):
            out = await client.runs.wait(thread_id, "support", command={"resume": resume}, context=context)
            [pending] = out["__interrupt__"]
            assert pending["value"]["approval_id"] == request["approval_id"]
            reasons.append(pending["value"]["refusal"])
        thread = await client.threads.get(thread_id)
        assert thread["status"] == "interrupted"
        # An edit down within the tier is taken: the smaller refund executes once.
        done = await client.runs.wait(
            thread_id,
            "support",
            command={"resume": [{"type": "edit", "args": {"args": {"amount_cents": 12000}}}]},
            context={"approver": "alice"},
        )
        assert done["status"] == "completed", done
        assert [(a["kind"], a["amount_cents"]) for a in done["actions"] if a["kind"] == "refund"] == [("refund", 12000)]
        return reasons

    reasons = _run(scenario())
    assert "approver" in reasons[0]
    assert "ignore" in reasons[1]
    assert "120000" in reasons[2] or "$1,200.00" in reasons[2]
    assert all(reason for reason in reasons)


def test_the_inbox_and_intake_are_served_by_langgraph_dev_through_http_app(server: Server) -> None:
    """langgraph.json's `http.app` mounts the web app: the inbox answers beside the graphs, and intake runs tickets."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        login = client.get("/inbox/login")
        assert login.status_code == 200 and 'name="password"' in login.text, login.text[:500]
        assert client.get("/inbox").status_code == 401
        schema = client.get("/api/openapi.json").json()
        assert "/api/tickets" in schema["paths"]
        auth = {"Authorization": f"Bearer {INTAKE_TOKEN}", "Idempotency-Key": "dev-mount-1"}
        ticket = {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "You charged me twice."}
        accepted = client.post("/api/tickets", json=ticket, headers=auth)
        assert accepted.status_code == 202, accepted.text
        status_url = accepted.json()["status_url"]
        deadline = time.monotonic() + 60
        while (answer := client.get(status_url, headers=auth)).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
        assert client.get("/ok").status_code == 200  # the server's own routes still answer
