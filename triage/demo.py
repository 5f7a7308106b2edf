"""What `triage demo` runs, and where.

The sample tickets: one per documented scenario customer, plus anonymous ones. The demo runs in a home of its own,
`<home>/demo`, emptied on every run, so it prints the same table every time and leaves the user's helpdesk alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from triage.errors import TriageError
from triage.helpdesk.seed import DEMO_CUSTOMERS, SEED_EPOCH
from triage.settings import Settings

_ANONYMOUS: list[dict[str, Any]] = [
    {
        "customer_id": None,
        "subject": "Do you ship to Norway?",
        "body": "Hi! Before I order a docking hub: what delivery options do you have and how long does it take?",
    },
    {
        "customer_id": None,
        "subject": "Someone logged into my account",
        "body": "I got a login alert from a country I've never been to and my password no longer works. "
        "I think my account was hacked. Please help urgently.",
    },
    {
        "customer_id": None,
        "subject": "",
        "body": "love the new dark mode, great work team!",
    },
]

DEMO_TICKETS: list[dict[str, Any]] = [
    {"customer_id": c.id, "subject": c.example_subject, "body": c.example_body} for c in DEMO_CUSTOMERS
] + _ANONYMOUS
"""Tickets across every route, in the order the demo runs them."""

DEMO_FOLDER = "demo"
"""The demo's own home, inside the app's home: `<home>/demo`."""

_MARKER = ".triage-demo"

DEMO_BILLING_DATE = SEED_EPOCH.date()
"""The day the demo's billing arithmetic takes as today (`Settings.billing_date`): the day the seeded helpdesk's
history ends. A plan change's prorated amount depends on the days left in the period, and the demo's table must
not change with the calendar."""


class DemoHomeError(TriageError):
    """The demo's folder exists but was not made by the demo, so it is not emptied."""


def demo_settings(settings: Settings) -> Settings:
    """Settings for the demo's own home, `<home>/demo`; the trained classifier stays in the app's cache.

    Billing is done as of `DEMO_BILLING_DATE`, the seeded helpdesk's last day.
    """
    update = {"home": settings.home / DEMO_FOLDER, "cache_home": settings.cache_dir, "billing_date": DEMO_BILLING_DATE}
    return settings.model_copy(update=update)


def reset_demo_home(home: Path) -> None:
    """Empty the demo's home so that every demo starts from the freshly seeded helpdesk and prints the same table.

    Raises:
        DemoHomeError: `home` holds files the demo did not create.
    """
    if home.exists():
        if not (home / _MARKER).is_file():
            if any(home.iterdir()):
                raise DemoHomeError(
                    f"{home} exists and was not made by `triage demo`; move it away or pick another --home"
                )
        else:
            shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / _MARKER).write_text("Made by `triage demo`, which empties this folder on every run.\n")
