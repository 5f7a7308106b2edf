"""Commands that look after the stores themselves: retention."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

import typer

from triage.cli.common import HomeOption, JsonOption, cli, guard, out, print_json, with_app


@cli.command()
def prune(
    older_than: Annotated[
        str | None, typer.Option(help="Delete finished threads older than this age, e.g. 30d, 12h, 2w.")
    ] = None,
    keep: Annotated[int | None, typer.Option(min=0, help="Keep the newest N threads of each status.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only show what would be deleted.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete finished threads by age or beyond the newest N per status, then compact the checkpoint store.

    Never deletes a thread awaiting approval, one that has not finished, one that failed on a transient fault, or
    one whose refund or account request is open. The effects ledger and the audit trail are kept.
    """
    from triage.retention import check_rules, parse_age

    def rules() -> timedelta | None:
        check_rules(older_than, keep)
        return None if older_than is None else parse_age(older_than)

    age = guard(rules, as_json=as_json)  # before the stores are opened (or created)
    report = with_app(home, lambda app: app.prune(older_than=age, keep=keep, dry_run=dry_run), as_json=as_json)
    if as_json:
        print_json(asdict(report))
        return
    verb = "would delete" if report.dry_run else "deleted"
    out.print(f"{verb} {len(report.deleted)} thread(s), kept {len(report.kept)}")
    for thread_id in report.deleted:
        out.print(f"  - {thread_id}")
    reasons: dict[str, int] = {}
    for reason in report.kept.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        out.print(f"  kept {count}: {reason}")
    if not report.dry_run:
        out.print(
            f"checkpoint store {report.bytes_before / 1024:.0f} KB -> {report.bytes_after / 1024:.0f} KB "
            "(effects ledger and audit trail kept)"
        )
