"""triage.graphs."""

from __future__ import annotations


def all_node_tools() -> dict[str, tuple[str, ...]]:
    """Every node of every graph the permissions policy grants to (support, release follow-up) and its tools."""
    from triage.graphs import release_followup, support

    return {**support.node_tools(), **release_followup.node_tools()}
