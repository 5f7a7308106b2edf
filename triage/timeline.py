"""Read a thread's node-by-node timeline back from its checkpoints, subgraph namespaces included.

A checkpoint records which channels its step updated. The node that produced checkpoint N is the one that the
step before scheduled (its `branch:to:<node>` channel); its duration is the time between the two checkpoints.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import pairwise
from typing import Any

from langgraph.checkpoint.base import CheckpointTuple

from triage.schemas import TimelineEntry

_BRANCH = "branch:to:"
ASK_NODE = "ask"
"""The coordinator node that runs one ask of a ticket with several through its specialist (`nodes/ask.py`)."""


def build_timeline(tuples: Iterable[CheckpointTuple]) -> list[TimelineEntry]:
    """Turn every checkpoint of a thread (all namespaces) into timeline entries, in the order they ran."""
    by_namespace: dict[str, list[CheckpointTuple]] = defaultdict(list)
    for item in tuples:
        by_namespace[item.config["configurable"].get("checkpoint_ns", "")].append(item)

    entries: list[TimelineEntry] = []
    for namespace, items in by_namespace.items():
        items.sort(key=lambda t: t.checkpoint["id"])
        found: list[TimelineEntry] = []
        for previous, current in pairwise(items):
            found.extend(_entries_for_step(namespace, previous, current))
        last = items[-1]
        found.extend(_failed_entries(namespace, last))
        branch = _ask_branch(namespace, items)
        if branch is not None:
            found = [entry.model_copy(update={"branch": branch}) for entry in found]
        entries.extend(found)
    entries.sort(key=lambda e: (e.started_at, e.namespace != ""))
    return entries


def _ask_branch(namespace: str, items: Iterable[CheckpointTuple]) -> str | None:
    """The specialist that ran an ask's branch (the route its checkpoints were given), or None elsewhere."""
    if not namespace.startswith(f"{ASK_NODE}:"):
        return None
    for item in items:
        classification = item.checkpoint.get("channel_values", {}).get("classification")
        if isinstance(classification, Mapping) and classification.get("route"):
            return str(classification["route"])
    return None


def _scheduled(item: CheckpointTuple) -> list[str]:
    updated = item.checkpoint.get("updated_channels") or []
    return [channel[len(_BRANCH) :] for channel in updated if channel.startswith(_BRANCH)]


def _entries_for_step(namespace: str, previous: CheckpointTuple, current: CheckpointTuple) -> list[TimelineEntry]:
    started = _ts(previous)
    duration_ms = (_ts(current) - started).total_seconds() * 1000
    before = previous.checkpoint["channel_versions"]
    updated = [
        channel
        for channel, version in current.checkpoint["channel_versions"].items()
        if before.get(channel) != version and not channel.startswith(_BRANCH)
    ]
    values = current.checkpoint.get("channel_values", {})
    if current.metadata.get("source") == "update":
        # The app ends a run that raised by writing a failed status as `finish`: show the failing node, then that.
        finish = TimelineEntry(
            node="finish",
            namespace=namespace,
            checkpoint_id=current.checkpoint["id"],
            started_at=_ts(current),
            duration_ms=0.0,
            outcome=describe_update(updated, values),
        )
        return [*_failed_entries(namespace, previous), finish]
    return [
        TimelineEntry(
            node=node,
            namespace=namespace,
            checkpoint_id=current.checkpoint["id"],
            started_at=started,
            duration_ms=round(duration_ms, 2),
            outcome=describe_update(_shown(node, updated), values),
        )
        for node in _scheduled(previous)
    ]


def _shown(node: str, updated: list[str]) -> list[str]:
    """The channels a node's entry describes: what it updated, and for `validate` the customer it checked too.

    The app looks the customer up before the run and passes the profile in, so `validate` often writes nothing.
    """
    if node == "validate" and "customer" not in updated and "status" not in updated:
        return ["customer", *updated]
    return updated


def _failed_entries(namespace: str, last: CheckpointTuple) -> list[TimelineEntry]:
    errors = [str(value) for _, channel, value in last.pending_writes or [] if channel == "__error__"]
    if not errors:
        return []
    return [
        TimelineEntry(
            node=node,
            namespace=namespace,
            checkpoint_id="",
            started_at=_ts(last),
            duration_ms=0.0,
            outcome=f"error: {errors[0]}",
        )
        for node in _scheduled(last)
    ]


def describe_update(updated: Iterable[str], values: Mapping[str, Any]) -> str:
    """A one-line account of what a node wrote, from the channels it updated."""
    parts: list[str] = []
    for channel in updated:
        value = values.get(channel)
        if channel == "classification" and isinstance(value, Mapping):
            parts.append(
                f"{value['route']}/{value['intent']} ({value['confidence']:.2f}), urgency {value['urgency']}, "
                f"sentiment {value['sentiment']}"
            )
        elif channel == "route":
            parts.append(f"-> {value} ({values.get('route_reason', '')})")
        elif channel == "status":
            reason = values.get("status_reason")
            parts.append(f"status {value}" + (f": {reason}" if reason else ""))
        elif channel == "reply" and isinstance(value, Mapping):
            parts.append(f"reply {value['template']}")
        elif channel == "draft" and isinstance(value, Mapping):
            parts.append(f"draft {value['template']}")
        elif channel == "actions" and isinstance(value, list) and value:
            parts.append("; ".join(f"{a['kind']} {a['receipt_id']}" for a in value))
        elif channel == "violations" and isinstance(value, list) and value:
            parts.append("refused " + ", ".join(f"{v['tool']} ({v['scope']})" for v in value))
        elif channel == "agent" and isinstance(value, Mapping):
            steps = value.get("steps") or []
            last = steps[-1] if steps else {}
            made = ", ".join(f"{c['tool']} {c['outcome']}" for c in last.get("calls", [])) or "no tool call"
            parts.append(
                f"agent turn {len(steps)}: {made}; {value['status']}"
                + (f" ({value['reason']})" if value.get("reason") else "")
            )
        elif channel == "outcome":
            parts.append(f"outcome {value}")
        elif channel == "customer":
            parts.append(f"customer {value['id']}" if isinstance(value, Mapping) else "anonymous")
        elif channel == "findings" and isinstance(value, Mapping):
            parts.append(
                "found " + ", ".join(f"{k}={_size(v)}" for k, v in value.items()) if value else "found nothing"
            )
    return "; ".join(parts) or "ok"


def _size(value: Any) -> str:
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, str | int | float | bool):
        return str(value)
    return "…"


def _ts(item: CheckpointTuple) -> datetime:
    return datetime.fromisoformat(item.checkpoint["ts"])
