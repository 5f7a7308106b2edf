"""The `triage` command line. Heavy imports happen inside commands so that `triage --help` stays fast."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triage.cli import model as model_commands  # noqa: F401  (registers train, model, export-labels, relabel)
from triage.cli import release as _release  # noqa: F401  (registers release)
from triage.cli import store  # noqa: F401  (its commands register themselves on `cli`)
from triage.cli.common import (
    HomeOption,
    JsonOption,
    TriageTyper,
    cli,
    err,
    guard,
    open_app,
    out,
    print_json,
    with_app,
)

if TYPE_CHECKING:
    from triage.app import TriageApp
    from triage.schemas import RunResult
    from triage.settings import Settings


@cli.command()
def demo(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Run sample tickets across every route in a fresh demo home (<home>/demo) and print what happened."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from triage.app import TriageApp
    from triage.demo import DEMO_TICKETS, demo_settings, reset_demo_home
    from triage.settings import Settings

    settings = demo_settings(Settings() if home is None else Settings(home=home))
    guard(lambda: reset_demo_home(settings.home))
    results: list[tuple[dict[str, Any], RunResult]] = []
    started = time.perf_counter()
    with (
        TriageApp.open(settings=settings) as app,
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=as_json,
        ) as progress,
    ):
        task = progress.add_task("Opening the helpdesk and loading the classifier (trains on first use)…")
        guard(app.warm_up, as_json=as_json)
        progress.update(task, description=f"Triaging {len(DEMO_TICKETS)} tickets…", total=len(DEMO_TICKETS))
        for ticket in DEMO_TICKETS:
            results.append((ticket, guard(lambda ticket=ticket: app.run(ticket), as_json=as_json)))  # type: ignore[misc]
            progress.advance(task)
    # One approval round trip, answered from a separate process as a person at another desk would.
    index, paused = next((i, r) for i, (t, r) in enumerate(results) if t["customer_id"] == DEMO_APPROVAL_CUSTOMER)
    approved = paused
    if paused.status == "awaiting_approval":  # not under a policy that lets the refund through unasked
        approved = _approve_in_another_process(settings, paused.thread_id, DEMO_APPROVER)
        results[index] = (results[index][0], approved)
    wall = time.perf_counter() - started
    if as_json:
        print_json(
            {
                "home": str(settings.home),
                "wall_time_s": round(wall, 2),
                "approval_round_trip": {
                    "thread_id": paused.thread_id,
                    "approver": DEMO_APPROVER,
                    "before": paused.status,
                    "after": approved.status,
                },
                "results": [r.model_dump(mode="json") for _, r in results],
            }
        )
        return
    _demo_table(results)
    refund = next((a for a in approved.actions if a.kind == "refund"), None)
    at = f"--home {settings.home}"
    out.print(
        f"\nRan in the demo's own home {settings.home}, emptied on every run (your helpdesk in "
        f"{settings.home.parent} is untouched).",
        highlight=False,
    )
    out.print(
        f"\nApproval round trip: {DEMO_APPROVAL_CUSTOMER}'s refund paused for approval "
        f"(thread {paused.thread_id}); [bold]{DEMO_APPROVER}[/] approved it from a separate process "
        f"(`triage approve {paused.thread_id} --as {DEMO_APPROVER} {at}`) and it finished {approved.status}"
        + (f" with refund {refund.receipt_id}." if refund else ".")
        + f" Other approvals wait in `triage approvals {at}`.",
        highlight=False,
    )
    latencies = sorted(r.duration_ms or 0.0 for _, r in results)
    out.print(
        f"\n{len(results)} tickets in {wall:.1f} s (median {latencies[len(latencies) // 2]:.0f} ms per ticket, "
        f"slowest {latencies[-1]:.0f} ms). Every node was checkpointed; inspect one with "
        f"[bold]triage show {results[0][1].thread_id} {at}[/].",
        highlight=False,
    )


DEMO_APPROVAL_CUSTOMER = "cus_mid_dup"
DEMO_APPROVER = "alice"
LOGGED_SHOWN = 5
"""Lines of what triage logged during `triage eval` printed with its summary (the JSON report has them all)."""


def _approve_in_another_process(settings: Settings, thread_id: str, approver: str) -> RunResult:
    import os
    import subprocess

    from triage.schemas import RunResult

    done = subprocess.run(
        [sys.executable, "-m", "triage", "approve", thread_id, "--as", approver, "--reason", "demo", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)},
    )
    if done.returncode != 0:
        err.print(done.stderr)
        raise typer.Exit(1)
    return RunResult.model_validate_json(done.stdout)


def _demo_table(results: list[tuple[dict[str, Any], RunResult]]) -> None:
    from rich.table import Table

    table = Table(title="triage demo: embedded default (local model tier, SQLite helpdesk)")
    for column in ("customer", "ticket", "route", "intent", "conf", "status", "actions"):
        table.add_column(column, overflow="fold", no_wrap=column in ("route", "conf", "status"))
    for ticket, result in results:
        table.add_row(
            ticket.get("customer_id") or "(anonymous)",
            _shorten(ticket.get("subject") or ticket["body"], 32),
            result.route or "-",
            result.intent or "-",
            f"{result.confidence:.2f}" if result.confidence is not None else "-",
            _status(result.status),
            ", ".join(_action_label(a.kind, None, a.amount_cents) for a in result.actions) or "-",
        )
    out.print(table)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _status(status: str) -> str:
    colour = {"completed": "green", "escalated": "yellow", "awaiting_approval": "cyan", "failed": "red"}[status]
    return f"[{colour}]{status}[/]"


def _action_label(kind: str, receipt: str | None, amount_cents: int | None) -> str:
    from triage.policies.billing import format_money

    label = kind + (f" {format_money(amount_cents)}" if amount_cents else "")
    return f"{label} ({receipt})" if receipt else label


@cli.command()
def run(
    customer_id: Annotated[str | None, typer.Option(help="Helpdesk customer id (omit for anonymous).")] = None,
    subject: Annotated[str, typer.Option(help="Ticket subject.")] = "",
    body: Annotated[str | None, typer.Option(help="Ticket body (required unless --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option(help="A ticket as a JSON file ('-' for stdin).")] = None,
    conversation_id: Annotated[
        str | None,
        typer.Option(help="Continue this conversation (a result's conversation id): the ticket is a follow-up."),
    ] = None,
    in_reply_to: Annotated[
        str | None,
        typer.Option(help="An email's In-Reply-To header: answering one of our replies continues its conversation."),
    ] = None,
    references: Annotated[
        str | None, typer.Option(help="An email's References header (message ids), read like --in-reply-to.")
    ] = None,
    message_id: Annotated[
        str | None,
        typer.Option(help="The message's own id (an email's Message-ID): a follow-up sent again with it runs once."),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(help="Override a budget limit for this run, e.g. max_model_tokens=2000 (repeatable)."),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Triage one ticket given as options, a JSON file, or JSON on stdin."""
    limits = _parse_limits(budget or [])
    from triage.errors import InvalidTicketError

    def read_ticket() -> Any:
        if body is not None:
            if file is not None:
                raise InvalidTicketError("give the ticket either as options or with --file, not both")
            ticket = {"customer_id": customer_id, "subject": subject, "body": body, "conversation_id": conversation_id}
            return ticket if message_id is None else {**ticket, "message_id": message_id}
        if file is not None and str(file) != "-":
            try:
                return file.read_text()
            except OSError as exc:
                raise InvalidTicketError(f"cannot read {file}: {exc.strerror}") from None
        if file is None and sys.stdin.isatty():
            raise InvalidTicketError("no ticket: give --body (with --subject, --customer-id), --file, or JSON on stdin")
        text = sys.stdin.read()
        if not text.strip():
            raise InvalidTicketError("no ticket: stdin was empty; pipe a JSON ticket or use --body")
        return text

    def go() -> RunResult | dict[str, Any]:
        request = {
            "command": "run",
            "ticket": read_ticket(),
            "conversation_id": conversation_id,
            "message_id": message_id,
            "in_reply_to": in_reply_to,
            "references": references,
            "budget": limits,
        }
        return _answer(home, request)

    result = guard(go, as_json=as_json)
    _show_result(result, as_json)


def _answer(home: Path | None, request: dict[str, Any]) -> RunResult | dict[str, Any]:
    """A `triage run` or decision request, answered by the home's resident worker, or else in this process."""
    from triage.cli.worker import ask_worker

    answer = ask_worker(home, request)  # None: no worker serves this home for this shell
    if answer is not None:
        return answer
    if request["command"] == "decide":
        with open_app(home) as app:
            return decide_request(app, request)
    parsed = parse_run_request(request)  # a malformed ticket is refused before the home is opened
    with open_app(home) as app:
        return run_request(app, parsed, request)


def answer_request(app: TriageApp, request: dict[str, Any]) -> RunResult:
    """Answer a request of `triage run`, `approve` or `reject` on `app` (the resident worker's side)."""
    if request["command"] == "decide":
        return decide_request(app, request)
    return run_request(app, parse_run_request(request), request)


def parse_run_request(request: dict[str, Any]) -> Any:
    """The ticket of a `triage run` request (a dict from options, or JSON text from a file or stdin), checked."""
    ticket = request["ticket"]
    if not isinstance(ticket, str):
        return ticket
    parsed = _parse_ticket(ticket)
    given = {key: request[key] for key in ("conversation_id", "message_id") if request.get(key) is not None}
    if given:  # the options name them for a ticket read from a file or stdin
        parsed = _parse_ticket({**parsed.model_dump(), **given})
    return parsed


def run_request(app: TriageApp, parsed: Any, request: dict[str, Any]) -> RunResult:
    """Run a `triage run` request on `app`: in the command's own process, or in the resident worker."""
    if request.get("in_reply_to") or request.get("references"):
        parsed = _thread_by_headers(app, _parse_ticket(parsed), request.get("in_reply_to"), request.get("references"))
    return app.run(parsed, budget=request.get("budget") or {})


def _thread_by_headers(app: Any, ticket: Any, in_reply_to: str | None, references: str | None) -> Any:
    """The ticket as a follow-up to the conversation its email headers answer (as it is when they name none)."""
    from triage.errors import InvalidTicketError

    found = app.conversation_replied_to(in_reply_to, references)
    if found is None:
        return ticket
    if ticket.conversation_id is not None and ticket.conversation_id != found:
        raise InvalidTicketError(
            f"the email answers conversation {found} but the ticket names {ticket.conversation_id}: give one"
        )
    return _parse_ticket({**ticket.model_dump(), "conversation_id": found})


def _parse_limits(pairs: list[str]) -> dict[str, float]:
    limits: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            limits[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"{pair!r}: write LIMIT=NUMBER, e.g. max_steps=20", param_hint="--budget")
    return limits


def _parse_ticket(text: str | dict[str, Any]) -> Any:
    from triage.schemas import Ticket

    return Ticket.parse(text)


def _show_result(result: RunResult | dict[str, Any], as_json: bool) -> None:
    """Print a result: a `RunResult`, or its JSON form as the resident worker answers it."""
    if as_json:
        print_json(result if isinstance(result, dict) else result.model_dump(mode="json"))
        return
    if isinstance(result, dict):
        from triage.schemas import RunResult

        result = RunResult.model_validate(result)
    _print_result(result)


def _print_result(result: RunResult) -> None:
    out.print(f"[bold]thread[/] {result.thread_id} (conversation turn {result.turn})")
    for turn in result.conversation:
        how = "attached while awaiting approval" if turn["status"] == "attached" else turn["status"]
        first_line = " ".join(str(turn["message"]).split())[:100]
        out.print(f"[bold]turn {turn['turn']}[/] {how}: {first_line}", highlight=False)
    out.print(f"[bold]status[/] {_status(result.status)} ({result.status_reason})")
    if result.route:
        out.print(
            f"[bold]route[/]  {result.route} / {result.intent} (confidence {result.confidence:.2f}; "
            f"urgency {result.urgency}; sentiment {result.sentiment})"
        )
        out.print(f"[bold]why[/]    {result.route_reason}")
        if result.model_version:
            out.print(f"[bold]model[/]  {result.model_version} (language {result.language})")
    for action in result.actions:
        out.print(f"[bold]action[/] {_action_label(action.kind, action.receipt_id, action.amount_cents)}")
    saga = result.saga
    if saga and saga["status"] != "not_run":
        undone = f"; undone: {', '.join(saga['undone']) or 'nothing'}" if saga["status"] != "completed" else ""
        failed = f" at {saga['failed_step']}" if saga["failed_step"] else ""
        still = f"; STILL IN EFFECT: {', '.join(saga['not_undone'])}" if saga["not_undone"] else ""
        ticket = f"; ticket {saga['ticket_id']}" if saga.get("ticket_id") else ""
        out.print(f"[bold]change[/] {saga['kind']} {saga['status']}{failed}{undone}{still}{ticket}", highlight=False)
    if result.pending_approval:
        pending = result.pending_approval
        out.print(
            f"[bold]approval[/] {pending['approval_id']} ({pending['tier']}, "
            f"{len(pending['approvals_received'])}/{pending['approvals_required']}) expires {pending['expires_at']}"
        )
        out.print(f"         approve with: triage approve {result.thread_id} --as APPROVER")
    for follow_up in result.follow_ups:
        out.print(f"[bold]follow-up[/] {follow_up.at}: {follow_up.message}", highlight=False)
    if result.reply:
        out.print(f"\n[bold]{result.reply.subject}[/]\n{result.reply.body}", highlight=False)


@cli.command()
def show(
    thread_id: Annotated[
        str, typer.Argument(metavar="THREAD", help="A thread id from `triage run` or `triage threads`.")
    ],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a thread's result and its node-by-node timeline from the checkpoint store."""
    from rich.table import Table

    view = with_app(home, lambda app: app.thread(thread_id), as_json=as_json)
    if as_json:
        print_json(
            {
                **view.result.model_dump(mode="json"),
                "timeline": [e.model_dump(mode="json", exclude={"started_at"}) for e in view.timeline],
                "audit": view.audit,
                "customer_memory": view.customer_memory,
            }
        )
        return
    _print_result(view.result)
    if view.customer_memory:
        out.print(f"[bold]memory[/] {view.customer_memory['summary']}", highlight=False)
    out.print(f"[bold]web[/]    {_public_url()}/inbox/threads/{thread_id} (`triage serve`)", highlight=False)
    table = Table(title=f"timeline of {thread_id}")
    for column in ("node", "namespace", "checkpoint", "ms", "outcome"):
        table.add_column(column, overflow="fold")
    for entry in view.timeline:
        namespace = entry.namespace.split(":")[0] if entry.namespace else ""
        namespace += f" ({entry.branch})" if entry.branch else ""  # an ask's branch: the specialist that ran it
        table.add_row(entry.node, namespace, entry.checkpoint_id[-12:], f"{entry.duration_ms:.1f}", entry.outcome)
    out.print(table)
    if view.audit:
        audit = Table(title="audit trail")
        for column in ("at", "event", "actor", "approval", "details", "policy"):
            audit.add_column(column, overflow="fold")
        for line in view.audit:
            details = ", ".join(f"{k}={v}" for k, v in line["details"].items())
            audit.add_row(
                line["at"], line["event"], line["actor"], line["approval_id"] or "", details, line["policy_version"]
            )
        out.print(audit)


class ThreadStatus(StrEnum):
    """The statuses `triage threads --status` filters on."""

    running = "running"
    awaiting_approval = "awaiting_approval"
    completed = "completed"
    escalated = "escalated"
    failed = "failed"


def _public_url() -> str:
    from triage.errors import TriageError
    from triage.web.settings import WebSettings, load_web_settings

    try:
        return load_web_settings().public_url.rstrip("/")
    except TriageError:
        return str(WebSettings.model_fields["public_url"].default)


@cli.command()
def threads(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many of the newest threads.")] = 20,
    status: Annotated[
        ThreadStatus | None,
        typer.Option(help="Only threads in this state (running: started, neither finished nor paused)."),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the most recent threads with their status and route."""
    from rich.table import Table

    wanted = status.value if status is not None else None
    summaries = with_app(home, lambda app: app.threads(limit=limit, status=wanted), as_json=as_json)
    if as_json:
        print_json([s.model_dump(mode="json") for s in summaries])
        return
    table = Table(title="threads (newest first)")
    for column in ("thread", "updated", "status", "route", "customer", "subject"):
        table.add_column(
            column, overflow="fold", no_wrap=column == "thread", min_width=36 if column == "thread" else None
        )
    for s in summaries:
        table.add_row(
            s.thread_id,
            s.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            s.status,
            s.route or "-",
            s.customer_id or "-",
            s.subject,
        )
    out.print(table)


@cli.command()
def customers(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List the helpdesk's customers (the documented scenario customers first)."""
    from rich.table import Table

    rows = with_app(home, lambda app: app.customers(), as_json=as_json)
    if as_json:
        print_json(rows)
        return
    table = Table(title="helpdesk customers")
    for column in ("id", "name", "status", "notes"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["id"], row["name"], row["status"], row["notes"])
    out.print(table)


ApproverOption = Annotated[str, typer.Option("--as", help="Your approver id from the approval policy.")]
ApprovalIdOption = Annotated[
    str | None,
    typer.Option(
        "--approval-id",
        help="The approval you decide, as `triage approvals` lists it: refused if an edit or a new turn replaced it "
        "meanwhile, so you never decide an action you have not seen.",
    ),
]


@cli.command()
def approvals(
    overdue: Annotated[bool, typer.Option(help="Only approvals past their expiry.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List approvals waiting for a decision, oldest first."""
    from rich.table import Table

    pending = with_app(home, lambda app: app.pending_approvals(overdue=overdue), as_json=as_json)
    if as_json:
        print_json([p.model_dump(mode="json") for p in pending])
        return
    table = Table(title="approvals awaiting a decision (oldest first)")
    for column in ("thread", "approval", "action", "tier", "received", "expires", "description"):
        ids = column in ("thread", "approval")
        table.add_column(column, overflow="fold", no_wrap=ids, min_width=36 if column == "thread" else None)
    for p in pending:
        expires = p.expires_at + (" [red](overdue)[/]" if p.overdue else "")
        received = f"{len(p.approvals_received)}/{p.approvals_required}"
        follow_ups = "".join(f"\nFollow-up {f.at}: {f.message}" for f in p.follow_ups)
        table.add_row(p.thread_id, p.approval_id, p.action, p.tier, received, expires, p.description + follow_ups)
    out.print(table)


def _decide(
    home: Path | None, thread_id: str, decision: dict[str, Any], approval_id: str | None, as_json: bool
) -> None:
    if approval_id is not None:
        decision = {**decision, "approval_id": approval_id}
    request = {"command": "decide", "thread_id": thread_id, "decision": decision}
    _show_result(guard(lambda: _answer(home, request), as_json=as_json), as_json)


def decide_request(app: TriageApp, request: dict[str, Any]) -> RunResult:
    """Apply an approver's decision (`triage approve` or `reject`) and run the thread on.

    An edit refused for its amount is explained in the dollars the user typed with `--amount`.
    """
    from triage.errors import ApprovalRefusedError
    from triage.policies.billing import format_money

    thread_id, decision = request["thread_id"], request["decision"]
    try:
        return app.resume(thread_id, decision)
    except ApprovalRefusedError as exc:
        if decision.get("decision") != "edit" or "cents" not in str(exc):  # not a refusal of the edit's amount
            raise
        cents = decision["args"]["amount_cents"]
        pending = app.thread(thread_id).result.pending_approval or {}
        action, asked = pending.get("action"), (pending.get("args") or {}).get("amount_cents")
        if action is not None and action != "refund":
            raise ApprovalRefusedError(
                f"--amount applies to a refund; this approval is for {action}. The approval stays pending"
            ) from None
        if isinstance(asked, int) and cents > asked:
            raise ApprovalRefusedError(
                f"--amount {format_money(cents)} is above the refund awaiting approval ({format_money(asked)}); "
                "an edit may only lower it. The approval stays pending"
            ) from None
        raise


@cli.command()
def approve(
    thread_id: Annotated[str, typer.Argument(metavar="THREAD", help="The thread awaiting approval.")],
    approver: ApproverOption,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    amount: Annotated[
        float | None,
        typer.Option(help="Approve a smaller refund instead, in dollars (an edit).", min=0.01, max=1_000_000_000),
    ] = None,
    approval_id: ApprovalIdOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve the pending action of a thread (or, with --amount, approve a smaller refund) and run it on."""
    decision: dict[str, Any] = {"approver": approver, "decision": "approve", "reason": reason}
    if amount is not None:
        cents = round(amount * 100)
        decision.update(decision="edit", args={"amount_cents": cents}, reason=reason or "edited amount")
    _decide(home, thread_id, decision, approval_id, as_json)


@cli.command()
def reject(
    thread_id: Annotated[str, typer.Argument(metavar="THREAD", help="The thread awaiting approval.")],
    approver: ApproverOption,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")],
    approval_id: ApprovalIdOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject the pending action of a thread: nothing is executed and the customer is told."""
    decision = {"approver": approver, "decision": "reject", "reason": reason}
    _decide(home, thread_id, decision, approval_id, as_json)


@cli.command()
def recover(
    thread_id: Annotated[
        str, typer.Argument(metavar="THREAD", help="A thread whose run died or failed on a transient fault.")
    ],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Continue a thread that is not terminal: a run that died, a decision never taken in, a transient failure.

    Effects already done are not repeated. `triage threads --status running` and `--status failed` find them.
    """
    result = with_app(home, lambda app: app.recover(thread_id), as_json=as_json)
    _show_result(result, as_json)


@cli.command()
def sweep(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Escalate every overdue approval to the human queue (nothing is approved by default)."""
    results = with_app(home, lambda app: app.sweep(), as_json=as_json)
    if as_json:
        print_json([r.model_dump(mode="json") for r in results])
        return
    out.print(f"escalated {len(results)} overdue approval(s)")
    for result in results:
        out.print(f"  {result.thread_id}: {result.status} ({result.status_reason})")


policy_cli = TriageTyper(help="Check the policy bundle.", no_args_is_help=True)
cli.add_typer(policy_cli, name="policy")


@policy_cli.command("check")
def policy_check(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", envvar="TRIAGE_POLICY_DIR", help="Policy folder \\[default: the packaged bundle]."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail (exit 1) on warnings too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate the policy files, build the graph against them, and print the bundle's version hash.

    Unknown scopes and grants the graph's nodes do not cover are errors (exit 2); write scopes granted to a
    read-only node are warnings.
    """
    from triage.gateway import over_broad_grants
    from triage.graphs import all_node_tools
    from triage.graphs.release_followup import build_release_graph
    from triage.graphs.support import build_support_graph
    from triage.policies import load_policy_bundle

    def check() -> Any:
        bundle = load_policy_bundle(directory)
        build_support_graph(policy=bundle)
        build_release_graph(policy=bundle)
        return bundle

    bundle = guard(check, as_json=as_json)
    warnings = over_broad_grants(bundle.permissions, all_node_tools())
    grants = {node: sorted(scopes) for node, scopes in bundle.permissions.grants.items()}
    if as_json:
        print_json(
            {"valid": True, "version": bundle.version, "source": bundle.source, "grants": grants, "warnings": warnings}
        )
    else:
        out.print(f"[green]valid[/] policy bundle {bundle.version} from {bundle.source} (the graph builds with it)")
        for node, scopes in grants.items():
            out.print(f"  {node}: {', '.join(scopes) or '(no tools)'}")
    for warning in warnings:
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if strict and warnings:
        raise typer.Exit(1)


@cli.command("eval")
def eval_(
    dataset: Annotated[
        Path | None, typer.Option(help="Cases as JSONL, or a labelled CSV or JSONL file (see --text-col).")
    ] = None,
    text_col: Annotated[
        str | None, typer.Option(help="Column with the ticket text: route-only cases from a labelled file.")
    ] = None,
    route_col: Annotated[str | None, typer.Option(help="Column with the expected route in a labelled file.")] = None,
    intent_col: Annotated[
        str | None,
        typer.Option(help="Column with the expected intent in a labelled file \\[default: 'intent' when present]."),
    ] = None,
    conversations: Annotated[
        Path | None,
        typer.Option(
            help="Multi-turn cases as JSONL \\[default: the packaged conversations with the packaged suite, none "
            "with --dataset].",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Run only the first N cases (and the first N conversations).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for eval.json, .md and .html.")] = Path("reports"),
    update_baseline: Annotated[
        bool, typer.Option("--update-baseline", help="Write this run's figures as the new baseline.")
    ] = False,
    baseline: Annotated[
        Path | None, typer.Option(help="Baseline to gate against \\[default: evals/baseline.json].", show_default=False)
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Cases run at once in one process (only with --workers 1).")
    ] = 1,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processes the cases are shared across, each running one case at a time \\[default: one per core, "
            "at most 4].",
            show_default=False,
        ),
    ] = None,
    langsmith: Annotated[
        bool,
        typer.Option("--langsmith", help="Record the run as a LangSmith experiment (the default with a key)."),
    ] = False,
    no_langsmith: Annotated[
        bool, typer.Option("--no-langsmith", help="Do not record it, even with LANGSMITH_API_KEY set.")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the evaluation suite through the real graph, report per node and per run, gate against the baseline."""
    import asyncio
    import atexit
    import gc

    # Registered first, so it runs last as the process exits: by then every store is closed, the reports written and
    # LangSmith's own exit handlers done. It spares Python's final collection of every case's results (about 0.24 s
    # after 600 cases, 0.03 s with it); an unreachable cycle is then freed by the process's exit, not by Python.
    atexit.register(gc.freeze)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from triage.evals import dataset as datasets
    from triage.evals import experiment
    from triage.evals import report as reports
    from triage.evals.runner import default_workers, run_cases
    from triage.settings import Settings

    def load() -> Any:
        if dataset is None:
            return datasets.load_cases(limit=limit), "evals/datasets/support.jsonl"
        if text_col or route_col or intent_col or dataset.suffix.lower() == ".csv":
            cases = datasets.load_labelled(
                dataset,
                text_col=text_col or "text",
                route_col=route_col or "route",
                intent_col=intent_col,
                limit=limit,
            )
            return cases, str(dataset)
        return datasets.load_cases(dataset, limit=limit), str(dataset)

    def load_talks() -> Any:
        if conversations is not None:
            return datasets.load_conversations(conversations, limit=limit)
        return datasets.load_conversations(limit=limit) if dataset is None else []

    cases, source = guard(load, as_json=as_json)
    talks = guard(load_talks, as_json=as_json)
    if langsmith and no_langsmith:
        err.print("[bold red]error:[/] give --langsmith or --no-langsmith, not both")
        raise typer.Exit(2)
    if not langsmith:
        langsmith = not no_langsmith and experiment.langsmith_configured()
    elif not experiment.langsmith_configured():
        err.print(
            "[bold red]error:[/] --langsmith needs LANGSMITH_API_KEY (LANGSMITH_ENDPOINT for a self-hosted server)"
        )
        raise typer.Exit(2)
    settings = Settings() if home is None else Settings(home=home)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        what = f"{len(cases)} cases" + (f" and {len(talks)} conversations" if talks else "")
        task = progress.add_task(f"Evaluating {what}", total=len(cases) + len(talks))
        result = guard(
            lambda: asyncio.run(
                run_cases(
                    cases,
                    conversations=talks,
                    settings=settings,
                    concurrency=concurrency,
                    workers=workers or (1 if concurrency > 1 else default_workers()),
                    on_done=lambda _: progress.advance(task),
                )
            ),
            as_json=as_json,
        )
    report = reports.build_report(result, cases, source=source)
    baseline_path = baseline or reports.default_baseline()
    if update_baseline:
        regressions = []
        reports.gate(report, None, baseline_path=str(baseline_path))
        if report["gate"]["status"] != "failed":  # never record a baseline with an unsafe effect in it
            reports.write_baseline(report, baseline_path)
            report["gate"].update(status="updated", reason=f"baseline written to {baseline_path}")
    else:
        previous = (
            guard(lambda: reports.read_baseline(baseline_path), as_json=as_json)
            if baseline_path.exists() or baseline
            else None
        )
        regressions = reports.gate(report, previous, baseline_path=str(baseline_path))
        if dataset is None and conversations is None and limit is None and report["gate"]["status"] == "skipped":
            # The packaged suite itself changed: a silent skip would let CI pass without a gate.
            report["gate"].update(
                status="failed",
                reason=f"{report['gate']['reason']}; the packaged dataset changed "
                "since the baseline: rerun with --update-baseline on purpose",
            )
    if langsmith:
        from langsmith.utils import LangSmithError

        try:
            recorded = experiment.record_experiment(result, report)
        except (LangSmithError, OSError) as exc:
            err.print(f"[bold yellow]warning:[/] the LangSmith experiment was not recorded: {exc}", soft_wrap=True)
        else:
            report["langsmith"] = {"experiment": recorded.experiment, "dataset": recorded.dataset}
            err.print(f"LangSmith experiment {recorded.experiment} on dataset {recorded.dataset}", highlight=False)
    json_path, md_path, html_path = reports.write_reports(report, out_dir)
    if as_json:
        print_json(report)
    else:
        run_figures = report["run"]
        table = Table(title=f"triage eval: {what} in {result.wall_time_s:.1f} s")
        for column in ("node", "executions", "success", "errors", "p50 ms", "p95 ms"):
            table.add_column(column, justify="left" if column == "node" else "right")
        for node, stats in report["nodes"].items():
            rate = stats["success_rate"]
            table.add_row(
                node,
                str(stats["executions"]),
                "-" if rate is None else f"{rate:.1%}",
                str(stats["errors"]),
                f"{stats['latency_ms']['p50']:.0f}",
                f"{stats['latency_ms']['p95']:.0f}",
            )
        out.print(table)
        out.print(
            f"task success {run_figures['task_success_rate']:.1%}, route accuracy {run_figures['route_accuracy']:.1%}"
            f" (macro F1 {report['routes']['macro_f1']:.3f}), escalation rate {run_figures['escalation_rate']:.1%},"
            f" policy violations {run_figures['policy_violations']}, unexpected refund requests "
            f"{run_figures['unexpected_refund_requests']}, unsafe proposals stopped at approval "
            f"{run_figures['unsafe_proposals_stopped_at_approval']}, unsafe effects executed "
            f"{run_figures['unsafe_effects_executed']}, latency p50/p95 "
            f"{run_figures['latency_ms']['p50']:.0f}/{run_figures['latency_ms']['p95']:.0f} ms"
        )
        automatic, precision, intent = (
            run_figures["automatic_share"],
            run_figures["automatic_precision"],
            run_figures["intent_accuracy"],
        )
        out.print(
            f"route accuracy {run_figures['route_accuracy']:.1%}"
            + ("" if intent is None else f", intent accuracy {intent:.1%}")
            + f"; automatic (not handed on) {0.0 if automatic is None else automatic:.1%} of tickets, precision of "
            + ("automatic routes -" if precision is None else f"automatic routes {precision:.1%}"),
            highlight=False,
        )
        out.print(
            "decided by: "
            + ", ".join(
                f"{tier} {t['share']:.1%} (route accuracy {t['route_accuracy']:.1%}, {t['tokens']} tokens)"
                for tier, t in report["tiers"].items()
            )
            + (f"; replies: {report['reply_verdicts']}" if report["reply_verdicts"] else "")
        )
        if "conversations" in report:
            talk = report["conversations"]
            out.print(
                f"conversations: {talk['success_rate']:.1%} succeeded ({talk['successes']}/{talk['conversations']}), "
                f"turn success {talk['turn_success_rate']:.1%} of {talk['turns']} turns, follow-up turns "
                f"{0.0 if talk['follow_up_success_rate'] is None else talk['follow_up_success_rate']:.1%}",
                highlight=False,
            )
        if report["logged"]:
            shown = report["logged"][:LOGGED_SHOWN]
            more = len(report["logged"]) - len(shown)
            out.print(f"logged while the cases ran ({len(report['logged'])}, cases that plant faults expect some):")
            for line in shown:
                out.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
            if more:
                out.print(f"  ... {more} more in {json_path}", highlight=False)
        gate_section = report["gate"]
        out.print(
            f"gate: {gate_section['status']}" + (f" ({gate_section['reason']})" if "reason" in gate_section else "")
        )
        out.print(f"reports: {json_path}, {md_path}, {html_path}")
    for regression in regressions:
        err.print(f"[bold red]regression:[/] {regression.describe()}", highlight=False, soft_wrap=True)
    if regressions or report["gate"]["status"] == "failed":
        raise typer.Exit(1)


import triage.cli.llm  # noqa: E402, F401  (registers doctor, dev-model-server)

# Command groups in modules of their own register themselves on `cli` when imported.
from triage.cli import serve as _serve  # noqa: E402, F401
from triage.cli import worker as _worker  # noqa: E402, F401


def main() -> None:
    """Entry point of the `triage` console script.

    A bad `TRIAGE_*` environment variable (a setting out of range, an unknown choice) exits 2 with one line naming
    the variable, whichever command read the settings.
    """
    from triage.startup import defer_module_classes, defer_package_inits, pause_collector

    pause_collector(sys.argv[1:])  # a command that does one thing and exits: no collector going through start-up
    defer_package_inits()  # before any command imports LangGraph
    defer_module_classes()  # before Typer's help renderer imports them
    try:
        cli()
    except Exception as exc:
        from pydantic import ValidationError  # not at start-up: `triage --help` stays light

        if not isinstance(exc, ValidationError) or exc.title != "Settings":
            raise
        problems = [
            f"TRIAGE_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}" for error in exc.errors()
        ]
        err.print(f"[bold red]error:[/] invalid setting: {'; '.join(problems)}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
