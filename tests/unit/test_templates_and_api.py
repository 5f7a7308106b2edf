"""Reply templates render from their facts; the public API exports what it documents; the README's graph is current."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import triage
from triage.graphs.draw import support_mermaid
from triage.models.templates import TEMPLATES, render
from triage.models.tier import extractive_summary
from triage.state import Draft
from triage.tools.kb import fts_query, matched_terms, query_terms

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_renders_from_named_facts(template: str) -> None:
    text = TEMPLATES[template]
    fields = sorted({name for _, name, _, _ in string.Formatter().parse(text) if name})
    facts = {name: f"<{name}>" for name in fields}
    body = render(Draft(template=template, facts=facts))["body"]
    # The whole template is in the reply, each field filled from the fact of its name (templates without fields
    # included: their text must come through whole).
    assert text.format_map(facts) in body
    assert all(f"<{name}>" in body for name in fields)
    assert "{" not in body and "}" not in body
    assert text.split("{", 1)[0] in body and text.rsplit("}", 1)[-1] in body
    for missing in fields:
        with pytest.raises(KeyError, match=missing):
            render(Draft(template=template, facts={k: v for k, v in facts.items() if k != missing}))


def test_tone_and_greeting() -> None:
    reply = render(
        Draft(
            template="general.fallback",
            facts={"customer_name": "Ada Lovelace", "sentiment": "angry", "ticket_subject": "Help"},
        )
    )
    assert reply["body"].startswith("Hi Ada,\n\nI am sorry")
    assert reply["subject"] == "Re: Help"
    assert render(Draft(template="general.fallback", facts={}))["body"].startswith("Hello,\n\nThank you")


def test_extractive_summary_keeps_whole_sentences() -> None:
    text = "The app crashes on start. It started after the update. I use Windows 11 and version 4.2 of the app."
    assert extractive_summary(text, max_chars=60) == "The app crashes on start. It started after the update."
    assert extractive_summary("x" * 500, max_chars=20).endswith("…")


def test_fts_query_is_injection_safe() -> None:
    terms = query_terms('Error 502 "sync" NEAR(x) OR password* -- DROP TABLE; the and')
    assert terms == ["error", "502", "sync", "near", "password", "drop", "table"]
    assert fts_query(terms).count('"') == 2 * len(terms)
    assert matched_terms(["syncing", "errors", "zebra"], "Sync error while uploading") == 2


_KB_WORDS = [
    "sync",
    "syncing",
    "synced",
    "syncs",
    "error",
    "errors",
    "upload",
    "uploading",
    "uploaded",
    "box",
    "boxes",
    "red",
    "bed",
    "ping",
    "pinged",
    "2fa",
    "502",
    "login",
    "logins",
    "as",
    "is",
]


@settings(max_examples=300, deadline=None)
@given(
    terms=st.lists(st.sampled_from(_KB_WORDS), max_size=8),
    article=st.lists(st.sampled_from([*_KB_WORDS, "Sync", "ERRORS", "-", "2.0", "é"]), max_size=30),
)
def test_matched_terms_counts_each_term_found_as_a_word_or_a_stem(terms: list[str], article: list[str]) -> None:
    text = " ".join(article)
    words = set(re.findall(r"[a-z0-9]+", text.lower()))
    stems = {_crude_stem(word) for word in words}
    expected = sum(1 for term in terms if term in words or _crude_stem(term) in stems)
    for _ in range(2):  # the second call reads the article's words from the cache
        assert matched_terms(terms, text) == expected


def _crude_stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def test_public_api_is_pinned() -> None:
    assert set(triage.__all__) == {
        "Action",
        "InvalidTicketError",
        "PermanentToolError",
        "PolicyFileError",
        "Reply",
        "RunResult",
        "ScopeDeniedError",
        "ThreadNotFoundError",
        "ThreadSummary",
        "ThreadView",
        "Ticket",
        "TimelineEntry",
        "ToolError",
        "TransientToolError",
        "TriageApp",
        "TriageError",
        "UnknownCustomerError",
    }


def test_readme_diagram_matches_the_graph() -> None:
    mermaid = support_mermaid()
    blocks = re.findall(r"```mermaid\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no mermaid diagram"
    assert blocks[0].strip() == mermaid, "regenerate it: python -m triage.graphs.draw"


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)
    assert len(commands) >= 2 and "triage demo" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == commands[1]
