"""Traces carry no personal data: when LangSmith tracing is on, inputs and outputs are redacted before upload."""

from __future__ import annotations

from triage.policies.pii import redact_tree

_installed = False


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
