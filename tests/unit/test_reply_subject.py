"""The reply's subject fits the outbox's limit whatever the ticket's subject was."""

from __future__ import annotations

import pytest

from triage.models.templates import reply_subject
from triage.schemas import MAX_SUBJECT_CHARS


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("", "Your Northwind support request"),
        ("  \n ", "Your Northwind support request"),
        ("Charged twice", "Re: Charged twice"),
        ("RE: Charged twice", "RE: Charged twice"),
        ("line one\nline two", "Re: line one line two"),
    ],
)
def test_reply_subject(subject: str, reply: str) -> None:
    assert reply_subject(subject) == reply


@pytest.mark.parametrize("length", range(MAX_SUBJECT_CHARS - 5, MAX_SUBJECT_CHARS + 1))
def test_long_subjects_are_cut_at_a_word(length: int) -> None:
    subject = ("refund please " * 40)[: length - 1] + "!"
    reply = reply_subject(subject)
    assert len(reply) <= MAX_SUBJECT_CHARS
    if len(subject) + 4 > MAX_SUBJECT_CHARS:
        assert reply.endswith("please…") or reply.endswith("refund…")
    assert reply_subject("x" * MAX_SUBJECT_CHARS) == "Re: " + "x" * (MAX_SUBJECT_CHARS - 5) + "…"
