"""Traces carry no personal data: when LangSmith tracing is on, inputs and outputs are redacted before upload."""

from __future__ import annotations

from typing import Any

from triage.policies.pii import redact

_installed = False


def redact_tree(value: Any) -> Any:
    """A copy of `value` (dicts, lists, strings) with personal data in every string swapped for placeholders."""
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value


def install_trace_redaction() -> bool:
    """If tracing is enabled, make the process's LangSmith client redact every run's inputs and outputs.

    Returns whether tracing is on (and now redacted). With tracing off this does nothing and opens no connection.
    """
    global _installed
    from langsmith import utils

    if not utils.tracing_is_enabled():
        return False
    if not _installed:
        import langsmith

        langsmith.configure(client=langsmith.Client(hide_inputs=redact_tree, hide_outputs=redact_tree))
        _installed = True
    return True
