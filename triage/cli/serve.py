"""`triage serve` (the approvals inbox and ticket intake) and `triage approvers` (passwords and login links)."""

from __future__ import annotations

import getpass
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from triage.cli.common import HomeOption, TriageTyper, cli, err, guard, out

if TYPE_CHECKING:
    from fastapi import FastAPI

    from triage.policies import PolicyBundle
    from triage.settings import Settings

LISTEN_BACKLOG = 2048
"""Connections the listening socket queues before they are accepted (uvicorn's default)."""

approvers_cli = TriageTyper(help="Give approvers a way to sign in to the web inbox.", no_args_is_help=True)
cli.add_typer(approvers_cli, name="approvers")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0 picks a free one).")] = 8000,
    home: HomeOption = None,
) -> None:
    """Serve the approvals inbox and the ticket intake API (POST /api/tickets) until interrupted."""
    import socket

    import uvicorn

    from triage.settings import Settings
    from triage.web import create_app

    settings = Settings() if home is None else Settings(home=home)
    api = guard(lambda: create_app(settings))
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot listen on {host}:{port} ({exc.strerror}); pick another --port")
        raise typer.Exit(2) from None
    bound = listener.getsockname()[1]
    guard(lambda: open_frozen(api))
    # Connections from here on wait in the backlog until uvicorn accepts them: none is refused after the line.
    listener.listen(LISTEN_BACKLOG)
    # One line a supervisor (or a test) can read the real address from, then uvicorn's own logs.
    out.print(f"triage inbox on http://{host}:{bound}/inbox (intake: POST /api/tickets)", highlight=False)
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning", proxy_headers=False))
    server.run(sockets=[listener])


def open_frozen(api: FastAPI) -> None:
    """Open the web app's home and load the classifier now, then freeze what exists (`set_up_frozen`).

    The server lasts: full collections then skip the set-up (the worker's took 68-95 ms without), and the first
    request does not wait for the stores and the classifier. A home that cannot be opened stops the server here,
    with the store's error, not at its first request.
    """
    from triage.startup import set_up_frozen

    triage = api.state.web.triage
    try:
        set_up_frozen(triage.warm_up)
    except BaseException:
        triage.close()
        raise


@approvers_cli.command("list")
def list_approvers(home: HomeOption = None) -> None:
    """List the approvers of the approval policy, with their roles and whether they can sign in."""
    from triage.settings import Settings
    from triage.web.app import web_store_path
    from triage.web.store import WebStore

    settings = Settings() if home is None else Settings(home=home)
    policy = guard(lambda: _policy(settings))
    store = WebStore(web_store_path(settings))
    for approver in policy.approvals.approvers:
        signed = "password set" if store.has_password(approver.id) else "no password"
        out.print(f"{approver.id}  {approver.role}  {approver.email or '-'}  {signed}", highlight=False)


@approvers_cli.command("set-password")
def set_password(
    approver_id: Annotated[str, typer.Argument(metavar="ID", help="An approver id from the approval policy.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin instead of prompting.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Set (or replace) an approver's web password; it is stored as an scrypt hash and ends their sessions."""
    from triage.errors import TriageError
    from triage.settings import Settings
    from triage.web.app import web_store_path
    from triage.web.store import MIN_PASSWORD_CHARS, WebStore

    settings = Settings() if home is None else Settings(home=home)

    def go() -> None:
        _known_approver(settings, approver_id)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"New password for {approver_id}: ")
            if getpass.getpass("Again: ") != password:
                raise TriageError("the passwords differ; nothing was changed")
        if len(password) < MIN_PASSWORD_CHARS:
            raise TriageError(f"a password needs at least {MIN_PASSWORD_CHARS} characters; nothing was changed")
        WebStore(web_store_path(settings)).set_password(approver_id, password)

    guard(go)
    out.print(f"password set for {approver_id}; their other sessions were signed out", highlight=False)


@approvers_cli.command("login-link")
def login_link(
    approver_id: Annotated[str, typer.Argument(metavar="ID", help="An approver id from the approval policy.")],
    base_url: Annotated[
        str | None, typer.Option(help="Where the inbox is served \\[default: $TRIAGE_PUBLIC_URL or local].")
    ] = None,
    minutes: Annotated[int, typer.Option(min=1, max=7 * 24 * 60, help="How long the link works.")] = 30,
    home: HomeOption = None,
) -> None:
    """Print a one-time sign-in link for an approver (it works once, within --minutes)."""
    from triage.settings import Settings
    from triage.web.app import web_store_path
    from triage.web.settings import load_web_settings
    from triage.web.store import WebStore

    settings = Settings() if home is None else Settings(home=home)
    guard(lambda: _known_approver(settings, approver_id))
    base_url = base_url or guard(load_web_settings).public_url
    token = WebStore(web_store_path(settings)).create_login_link(approver_id, timedelta(minutes=minutes))
    sys.stdout.write(f"{base_url.rstrip('/')}/inbox/login/link?token={token}\n")


def _policy(settings: Settings) -> PolicyBundle:
    from triage.policies import load_policy_bundle

    return load_policy_bundle(settings.policy_dir)


def _known_approver(settings: Settings, approver_id: str) -> None:
    from triage.errors import TriageError

    policy = _policy(settings)
    if policy.approvals.role_of(approver_id) is None:
        known = ", ".join(a.id for a in policy.approvals.approvers)
        raise TriageError(f"'{approver_id}' is not an approver in the approval policy (approvers: {known})")
