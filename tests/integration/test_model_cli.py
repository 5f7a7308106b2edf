"""The model tier's commands as a user runs them: subprocesses, exit codes, the URL to set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.zygote import triage_cli
from triage.models.dev_server import DevModelServer


def triage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "OPENAI_"))}
    return triage_cli(args, env={**clean, **env}, timeout=60)


def test_doctor_without_a_model_reports_the_local_tier_alone() -> None:
    done = triage("doctor")
    assert done.returncode == 0
    assert "model tier: not configured" in done.stdout


def test_doctor_names_an_unreachable_endpoint_and_exits_2() -> None:
    with DevModelServer() as gone:
        url = gone.base_url
    done = triage("doctor", TRIAGE_MODEL_BASE_URL=url, TRIAGE_CHEAP_MODEL="dev-cheap")
    assert done.returncode == 2
    assert f"model endpoint {url} did not answer" in done.stderr
    assert "Traceback" not in done.stderr


def test_doctor_and_model_info_against_the_dev_server_never_print_the_key(tmp_path: Path) -> None:
    with DevModelServer() as server:
        env = {
            "TRIAGE_MODEL_BASE_URL": server.base_url,
            "TRIAGE_CHEAP_MODEL": "dev-cheap",
            "TRIAGE_STRONG_MODEL": "dev-strong",
            "OPENAI_API_KEY": "sk-live-doNotPrintThisKey1234567890",
        }
        doctor = triage("doctor", "--json", **env)
        tiers = triage("model", "info", "--home", str(tmp_path), **env)
        tiers_json = triage("model", "info", "--home", str(tmp_path), "--json", **env)
    assert doctor.returncode == 0, doctor.stderr
    info: dict[str, Any] = json.loads(doctor.stdout)
    assert [t["model"] for t in info["model_tiers"]["tiers"]] == ["dev-cheap", "dev-strong"]
    assert info["model_tiers"]["api_key"] == "set"
    assert "dev-cheap" in info["endpoint_models"]
    assert tiers.returncode == 0, tiers.stderr
    assert "local model local-" in tiers.stdout
    assert "cheap: dev-cheap" in tiers.stdout and "strong: dev-strong" in tiers.stdout
    both: dict[str, Any] = json.loads(tiers_json.stdout)
    assert both["local"]["source"] == "packaged"
    assert [t["model"] for t in both["model_tiers"]["tiers"]] == ["dev-cheap", "dev-strong"]
    assert both["model_tiers"]["api_key"] == "set"
    shown = doctor.stdout + doctor.stderr + tiers.stdout + tiers.stderr + tiers_json.stdout + tiers_json.stderr
    assert "doNotPrintThisKey" not in shown


def test_dev_model_server_prints_the_base_url_to_set() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "triage", "dev-model-server"], stdout=subprocess.PIPE, text=True, env=clean
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert first.startswith("dev model server listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        assert f"TRIAGE_MODEL_BASE_URL={url}" in server.stdout.readline()
        done = triage("doctor", TRIAGE_MODEL_BASE_URL=url, TRIAGE_CHEAP_MODEL="dev-cheap")
        assert done.returncode == 0, done.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
