"""Knowledge-base search: SQLite FTS5 with bm25 ranking."""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.tools.base import ToolContext, fetch_all, helpdesk_tool

_STOPWORDS = frozenset(
    [
        "a",
        "about",
        "after",
        "again",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "cant",
        "could",
        "did",
        "do",
        "does",
        "doesnt",
        "dont",
        "for",
        "from",
        "get",
        "got",
        "had",
        "has",
        "have",
        "having",
        "hello",
        "hey",
        "hi",
        "how",
        "i",
        "im",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "just",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "some",
        "still",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "this",
        "to",
        "too",
        "tried",
        "trying",
        "up",
        "us",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "thanks",
        "thank",
        "help",
        "need",
        "want",
        "know",
        "since",
        "ive",
        "keep",
        "keeps",
    ]
)
_TOKEN = re.compile(r"[a-z0-9]+")


def query_terms(text: str, *, max_terms: int = 24) -> list[str]:
    """The distinct content words of a text, in order: what a search matches on."""
    terms: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        if (len(token) >= 3 or token.isdigit()) and token not in _STOPWORDS and token not in terms:
            terms.append(token)
    return terms[:max_terms]


def fts_query(terms: list[str]) -> str:
    """A safe FTS5 query: every term quoted (no operator injection), joined with OR."""
    return " OR ".join(f'"{term}"' for term in terms)


def _stem(term: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if term.endswith(suffix) and len(term) - len(suffix) >= 3:
            return term[: -len(suffix)]
    return term


def matched_terms(terms: list[str], article_text: str) -> int:
    """How many distinct query terms (crudely stemmed) an article's text contains."""
    words, stems = _vocabulary(article_text)
    return sum(1 for term in terms if term in words or _stem(term) in stems)


@functools.lru_cache(maxsize=512)
def _vocabulary(article_text: str) -> tuple[frozenset[str], frozenset[str]]:
    """An article text's distinct words and their crude stems, worked out once per text.

    The same articles come back search after search, and tokenising and stemming their steps was most of a
    search's CPU time.
    """
    words = frozenset(_TOKEN.findall(article_text.lower()))
    return words, frozenset(_stem(word) for word in words)


class SearchArgs(BaseModel):
    """Arguments of `search_kb`."""

    query: str = Field(min_length=1, max_length=20_000, description="Free text: the customer's words work.")
    category: str | None = Field(default=None, description="technical, account, billing or general.")
    limit: int = Field(default=3, ge=1, le=20)


@helpdesk_tool(scope="kb:read", args_schema=SearchArgs)
async def search_kb(
    query: str, ctx: Annotated[ToolContext, InjectedToolArg], category: str | None = None, limit: int = 3
) -> list[dict[str, Any]]:
    """Return the best-matching articles with their steps.

    `score` is -bm25 (higher is better); `matched_terms` counts the distinct query words the article contains and
    `key_terms` those in its title and tags (out of `query_terms`), so callers can tell a few common words from a
    real match.
    """
    terms = query_terms(query)
    if not terms:
        return []
    match = fts_query(terms)
    sql = """
        SELECT a.slug, a.title, a.category, a.summary, a.steps, a.tags, -bm25(kb_fts, 4.0, 2.0, 3.0, 1.0) AS score
        FROM kb_fts JOIN kb_articles a ON a.id = kb_fts.rowid
        WHERE kb_fts MATCH ? {category_filter}
        ORDER BY score DESC LIMIT ?
    """
    params: tuple[Any, ...] = (match, limit)
    if category:
        sql = sql.format(category_filter="AND a.category = ?")
        params = (match, category, limit)
    else:
        sql = sql.format(category_filter="")
    async with ctx.helpdesk.read() as conn:
        rows = await fetch_all(conn, sql, params)
    for row in rows:
        row["steps"] = json.loads(row["steps"])
        row["score"] = round(float(row["score"]), 3)
        tags = row.pop("tags")
        row["matched_terms"] = matched_terms(terms, " ".join([row["title"], row["summary"], tags, *row["steps"]]))
        row["key_terms"] = matched_terms(terms, f"{row['title']} {tags}")
        row["query_terms"] = len(terms)
    return rows
