"""`triage eval` and LangSmith: no key means no connection at all; a key records the run as an experiment.

The configured path talks to a fake LangSmith HTTP API on 127.0.0.1 that implements the endpoints dataset upload
and `langsmith.evaluate` use; the real service is never contacted.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from langsmith import utils as langsmith_utils
from typer.testing import CliRunner

from tests.conftest import eval_subset
from triage.cli import cli

SUBSET = ("billing-dup-001", "acct-email-001")
LANGSMITH_VARIABLES = (
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LANGSMITH_ENDPOINT",
    "LANGCHAIN_ENDPOINT",
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING",
    "LANGCHAIN_TRACING_V2",
)


@pytest.fixture
def subset(tmp_path: Path) -> Path:
    return eval_subset(tmp_path, SUBSET)


@pytest.fixture
def env(eval_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in LANGSMITH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    langsmith_utils.get_env_var.cache_clear()
    yield
    langsmith_utils.get_env_var.cache_clear()


def test_without_a_key_eval_attempts_no_connection(
    subset: Path, tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1] if len(args) > 1 else args)
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    out = tmp_path / "reports"
    ran = CliRunner().invoke(cli, ["eval", "--dataset", str(subset), "--out", str(out), "--json"])

    assert ran.exit_code == 0, ran.output
    assert attempts == []
    report = json.loads(ran.stdout)
    assert report["dataset"]["cases"] == len(SUBSET)
    assert "langsmith" not in report
    page = (out / "eval.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)

    refused = CliRunner().invoke(cli, ["eval", "--dataset", str(subset), "--out", str(out), "--langsmith"])
    assert refused.exit_code == 2
    assert "--langsmith needs LANGSMITH_API_KEY" in refused.stderr
    assert attempts == []


# -- a fake LangSmith ------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FakeLangSmith:
    """The state behind the fake API: what was created, and every request in order."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    ingested: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
            return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        if path == "/info":
            return 200, {
                "version": "0.10.0",
                "batch_ingest_config": {
                    "use_multipart_endpoint": True,
                    "size_limit": 100,
                    "size_limit_bytes": 20_971_520,
                    "scale_up_qsize_trigger": 1000,
                    "scale_up_nthreads_limit": 16,
                    "scale_down_nempty_trigger": 4,
                },
            }
        if path == "/datasets" and method == "GET":
            return 200, [d for d in self.datasets.values() if d["name"] in query.get("name", [])]
        if path == "/datasets" and method == "POST":
            name = json.loads(body)["name"]
            dataset = {"id": str(uuid.uuid4()), "name": name, "created_at": _now(), "modified_at": _now()}
            self.datasets[dataset["id"]] = dataset
            return 200, dataset
        if path == "/examples/bulk" and method == "POST":
            made = [{**item, "id": str(item["id"]), "created_at": _now()} for item in json.loads(body)]
            self.examples.update((example["id"], example) for example in made)
            return 200, made
        if path == "/examples" and method == "GET":
            dataset_id, offset = query["dataset"][0], int(query.get("offset", ["0"])[0])
            matching = [e for e in self.examples.values() if e["dataset_id"] == dataset_id]
            return 200, matching[offset : offset + int(query.get("limit", ["100"])[0])]
        if path == "/sessions" and method == "GET":
            return 200, list(self.sessions.values())[:1]
        if path == "/sessions" and method == "POST":
            session = {**json.loads(body), "tenant_id": str(uuid.UUID(int=1)), "start_time": _now()}
            session["id"] = str(session.get("id") or uuid.uuid4())
            self.sessions[session["id"]] = session
            return 200, session
        if path.startswith("/sessions/") and method == "PATCH":
            session = self.sessions[path.rsplit("/", 1)[1]]
            session.update((k, v) for k, v in json.loads(body).items() if v is not None)
            return 200, session
        if path in ("/runs/multipart", "/runs/batch", "/runs"):
            self.ingested.append(body)
            return 202, {}
        if path == "/feedback" and method == "POST":
            self.feedback.append(json.loads(body))
            return 200, {**self.feedback[-1], "id": str(uuid.uuid4())}
        return 404, {"detail": f"fake LangSmith has no {method} {path}"}

    def feedback_keys(self) -> set[str]:
        """Keys of all feedback: posted to /feedback, or batched into the run ingestion."""
        batched = {key.decode() for body in self.ingested for key in re.findall(rb'"key":\s*"([^"]+)"', body)}
        return batched | {item["key"] for item in self.feedback}


@pytest.fixture
def fake_langsmith() -> Iterator[tuple[str, FakeLangSmith]]:
    state = FakeLangSmith()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            status, payload = state.handle(self.command, url.path, parse_qs(url.query), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", state
    finally:
        server.shutdown()
        server.server_close()


def test_with_a_key_eval_records_a_langsmith_experiment(
    subset: Path,
    tmp_path: Path,
    env: None,
    monkeypatch: pytest.MonkeyPatch,
    fake_langsmith: tuple[str, FakeLangSmith],
) -> None:
    url, service = fake_langsmith
    monkeypatch.setenv("LANGSMITH_ENDPOINT", url)
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2_test_key")
    langsmith_utils.get_env_var.cache_clear()

    out = tmp_path / "reports"
    ran = CliRunner().invoke(cli, ["eval", "--dataset", str(subset), "--out", str(out), "--json"])

    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)  # the SDK's own messages went to stderr
    recorded = report["langsmith"]
    [dataset] = service.datasets.values()
    assert dataset["name"] == recorded["dataset"] == f"triage-subset-{report['dataset']['fingerprint']}"
    assert sorted(e["inputs"]["case_id"] for e in service.examples.values()) == sorted(SUBSET)
    email_case = next(e for e in service.examples.values() if e["inputs"]["case_id"] == "acct-email-001")
    assert "@" not in json.dumps(email_case), "examples leave the process redacted"

    [experiment] = service.sessions.values()
    assert experiment["name"] == recorded["experiment"] and experiment["name"].startswith("triage-local-")
    assert experiment["reference_dataset_id"] == dataset["id"]
    assert experiment["extra"]["metadata"]["policy_version"] == report["policy_version"]
    assert ("PATCH", f"/sessions/{experiment['id']}") in service.requests, "the experiment was finalised"
    keys = service.feedback_keys()
    assert {"task_success", "route_correct", "node.classify.success", "node.billing.success"} <= keys
    assert {"route_macro_f1", "task_success_rate"} <= keys
    assert ("POST", "/runs/multipart") in service.requests, "the replayed runs were posted"
    assert recorded["experiment"] in (out / "eval.html").read_text()
