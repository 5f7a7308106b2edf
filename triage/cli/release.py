"""`triage release`: follow up a shipped release (close the tickets it fixes, tell their reporters)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from triage.cli.common import HomeOption, JsonOption, cli, guard, out, print_json, with_app

if TYPE_CHECKING:
    from triage.schemas import ReleaseResult

MAX_NOTES_BYTES = 200_000


@cli.command()
def release(
    version: Annotated[str, typer.Argument(metavar="VERSION", help="The release, e.g. 2.4.1.")],
    fixes: Annotated[
        str, typer.Option(help="What it fixes, comma-separated: engineering ticket ids or issue keys (ENG-42).")
    ],
    notes: Annotated[
        Path | None, typer.Option(help="A file with the release notes, summarised for the customers told.")
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close the engineering tickets a release fixes and tell each reporting customer once.

    Running the same release again closes nothing twice and tells nobody twice. More recipients than the approval
    policy allows at once wait for approval (`triage approvals`).
    """
    from triage.schemas import Release

    def check() -> Release:
        text = _read_notes(notes) if notes is not None else ""
        return Release.model_validate({"version": version, "fixes": fixes, "notes": text})

    checked = guard(check, as_json=as_json)  # before the stores are opened (or created)
    result = with_app(home, lambda app: app.release(checked.version, checked.fixes, checked.notes), as_json=as_json)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        print_release(result)


def _read_notes(path: Path) -> str:
    from triage.errors import InvalidReleaseError

    try:
        data = path.read_bytes()[: MAX_NOTES_BYTES + 1]
    except OSError as exc:
        raise InvalidReleaseError(f"cannot read the notes file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_NOTES_BYTES:
        raise InvalidReleaseError(f"the notes file {path} is over {MAX_NOTES_BYTES} bytes; shorten it")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidReleaseError(f"the notes file {path} is not UTF-8 text") from None


def print_release(result: ReleaseResult) -> None:
    """A release follow-up's outcome for a person: status, tickets, customers, summary, pending approval."""
    out.print(f"[bold]thread[/]   {result.thread_id}")
    out.print(f"[bold]status[/]   {result.status} ({result.status_reason})", highlight=False)
    for ticket in result.tickets:
        out.print(f"[bold]ticket[/]   {ticket['id']} {ticket['state']} ({ticket['customer_id']}: {ticket['subject']})")
    if result.unknown_keys:
        out.print(f"[bold]unknown[/]  {', '.join(result.unknown_keys)}")
    if result.notified:
        out.print(f"[bold]notified[/] {', '.join(result.notified)}")
    if result.summary:
        out.print(
            f"[bold]summary[/]  ({result.summary.get('by')}, {result.summary.get('verdict')}) {result.summary['text']}"
        )
    if result.pending_approval:
        pending = result.pending_approval
        out.print(f"[bold]approval[/] {pending['approval_id']} ({pending['tier']}) expires {pending['expires_at']}")
        out.print(f"         approve with: triage approve {result.thread_id} --as APPROVER")
