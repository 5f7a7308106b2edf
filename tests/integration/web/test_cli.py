"""`triage approvers` and `triage serve` from a shell: passwords stored as hashes, links that work once."""

from __future__ import annotations

import os
import socket
import subprocess

from tests.conftest import rows
from tests.integration.zygote import triage_cli
from triage.settings import Settings
from triage.web.app import web_store_path
from triage.web.store import WebStore


def triage(
    settings: Settings, *args: str, stdin: str = "", extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)}
    env.update(extra or {})
    return triage_cli(args, env=env, input=stdin, timeout=60)


def test_set_password_stores_a_hash_and_refuses_strangers_and_short_ones(settings: Settings) -> None:
    done = triage(settings, "approvers", "set-password", "alice", "--password-stdin", stdin="a long passphrase\n")
    assert done.returncode == 0, done.stderr
    [row] = rows(web_store_path(settings), "SELECT * FROM passwords")
    assert row["approver_id"] == "alice" and row["hash"].startswith("scrypt$") and "passphrase" not in row["hash"]
    assert WebStore(web_store_path(settings)).check_password("alice", "a long passphrase")
    stranger = triage(settings, "approvers", "set-password", "mallory", "--password-stdin", stdin="a long passphrase\n")
    assert stranger.returncode == 2 and "'mallory' is not an approver" in stranger.stderr
    short = triage(settings, "approvers", "set-password", "bob", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    listed = triage(settings, "approvers", "list")
    assert "alice  agent  -  password set" in listed.stdout and "bob  agent  -  no password" in listed.stdout


def test_login_link_is_printed_and_works_once(settings: Settings) -> None:
    done = triage(settings, "approvers", "login-link", "sam", "--base-url", "https://inbox.example.test/")
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith("https://inbox.example.test/inbox/login/link?token=")
    token = link.split("token=")[1]
    store = WebStore(web_store_path(settings))
    assert store.use_login_link(token) == "sam"
    assert store.use_login_link(token) is None
    assert token not in (web_store_path(settings)).read_bytes().decode(errors="ignore")


def test_serve_refuses_a_taken_port(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = triage(settings, "serve", "--port", str(port))
    assert refused.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in refused.stderr


def test_serve_refuses_a_short_intake_token(settings: Settings) -> None:
    refused = triage(settings, "serve", "--port", "0", extra={"TRIAGE_INTAKE_TOKEN": "short"})
    assert refused.returncode == 2
    assert "TRIAGE_INTAKE_TOKEN: String should have at least 16 characters" in refused.stderr
