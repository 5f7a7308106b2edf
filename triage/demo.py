"""The sample tickets `triage demo` runs: one per documented scenario customer, plus anonymous ones."""

from __future__ import annotations

from typing import Any

from triage.helpdesk.seed import DEMO_CUSTOMERS

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
