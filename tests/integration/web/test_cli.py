"""`triage approvers` and `triage serve` from a shell: passwords stored as hashes, links that work once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import collectable, rows
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


def test_serve_opens_its_home_before_it_says_it_listens(settings: Settings) -> None:
    """When the address is printed, a connection is accepted, and the stores are open and seeded."""
    env = {**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)}
    server = subprocess.Popen(
        [sys.executable, "-m", "triage", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "http://127.0.0.1:" in line
        with urllib.request.urlopen(line.split()[3] + "/login", timeout=20) as page:  # at once: not refused
            assert page.status == 200
        assert rows(settings.helpdesk_path, "SELECT COUNT(*) AS n FROM customers")[0]["n"] > 0
        assert settings.checkpoints_path.exists()
    finally:
        server.terminate()
        server.communicate(timeout=20)


def test_serve_refuses_a_damaged_store_before_it_listens(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.checkpoints_path.write_bytes(b"not a database, " * 64)
    before = settings.checkpoints_path.read_bytes()
    refused = triage(settings, "serve", "--port", "0")
    assert refused.returncode == 2 and "http://" not in refused.stdout
    assert str(settings.checkpoints_path) in refused.stderr and "restore it from a backup" in refused.stderr
    assert settings.checkpoints_path.read_bytes() == before


def test_the_served_app_is_open_and_frozen_and_a_failed_opening_freezes_nothing(settings: Settings) -> None:
    """What `serve` set up lives as long as the server: full collections skip it (`set_up_frozen`)."""
    import gc

    from triage.cli.serve import open_frozen
    from triage.errors import DamagedStoreError
    from triage.web import create_app

    assert gc.get_freeze_count() == 0
    api = create_app(settings)
    triage_app = api.state.web.triage
    try:
        open_frozen(api)
        assert triage_app._engine is not None, "the home is open before the first request"
        assert gc.get_freeze_count() > 0 and gc.is_tracked(triage_app) and not collectable(triage_app)
    finally:
        triage_app.close()
        gc.unfreeze()
    damaged = settings.model_copy(update={"home": settings.home.parent / "damaged"})
    damaged.home.mkdir()
    damaged.checkpoints_path.write_bytes(b"not a database, " * 64)
    api = create_app(damaged)
    with pytest.raises(DamagedStoreError):
        open_frozen(api)
    assert gc.get_freeze_count() == 0
    assert api.state.web.triage._portal._thread is None, "the app that could not open was closed"
