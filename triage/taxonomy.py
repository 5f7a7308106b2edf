"""The routes and intents every part of triage agrees on.

A route names the specialist subgraph that handles a ticket; an intent is the finer-grained request within that
route. Intent names are unique across routes, so an intent always implies its route.
"""

from __future__ import annotations

from typing import Literal, get_args

Route = Literal["billing", "technical", "account", "general", "escalation"]
Urgency = Literal["low", "normal", "high", "critical"]
Sentiment = Literal["positive", "neutral", "negative", "angry"]
Status = Literal["completed", "escalated", "awaiting_approval", "failed"]

ROUTES: tuple[Route, ...] = get_args(Route)
URGENCIES: tuple[Urgency, ...] = get_args(Urgency)
SENTIMENTS: tuple[Sentiment, ...] = get_args(Sentiment)
STATUSES: tuple[Status, ...] = get_args(Status)

INTENTS: dict[Route, tuple[str, ...]] = {
    "billing": (
        "duplicate_charge",  # charged twice / double billed for one thing
        "failed_payment",  # card declined, payment did not go through, past-due notices
        "refund_request",  # wants money back, or asks where a refund is
        "invoice_request",  # needs an invoice / receipt / VAT document, or an invoice looks wrong
        "billing_question",  # payment methods, pricing, fees, refund policy, billing dates
    ),
    "technical": (
        "troubleshooting",  # an error message or something that stopped working for them
        "bug_report",  # the product behaves wrongly in a reproducible way
        "outage",  # the service is down / unreachable for many users
        "integration_help",  # API, webhooks, SDKs, SSO and third-party integrations
    ),
    "account": (
        "password_reset",  # forgot password, cannot log in, reset link
        "account_locked",  # locked out after attempts, account suspended/disabled
        "email_change",  # change login or contact email address
        "profile_update",  # name, address, phone, notification and newsletter preferences
        "plan_change",  # upgrade, downgrade, cancel or switch subscription plan
        "account_deletion",  # close the account and erase the data
        "data_export",  # copy of personal data / GDPR access request / export everything
        "signup_help",  # trouble creating or verifying a new account
    ),
    "general": (
        "product_question",  # what the product does, features, availability
        "order_question",  # placing, tracking, changing or cancelling an order or delivery
        "feedback",  # praise, suggestions, reviews
        "contact_info",  # opening hours, phone number, how to reach a person in general
        "other",  # anything else that is not a support request
    ),
    "escalation": (
        "complaint",  # formal complaint about service or staff
        "legal_threat",  # lawyers, lawsuits, regulators, chargebacks
        "security_report",  # hacked account, data breach, fraud, unauthorised access
        "human_agent_request",  # explicitly asks for a human / a manager
    ),
}

ROUTE_OF_INTENT: dict[str, Route] = {intent: route for route, intents in INTENTS.items() for intent in intents}
ALL_INTENTS: tuple[str, ...] = tuple(ROUTE_OF_INTENT)
