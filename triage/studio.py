"""What `langgraph dev` (LangGraph Studio) and the LangGraph server load: graphs, and the checkpoint store.

The server's threads are kept in the app's own checkpoint store (`$TRIAGE_HOME/checkpoints.sqlite`), through the
same saver the nodes' services use, so `triage threads`, `triage show` and `triage approvals` see Studio's threads
and the effects ledger and audit trail sit beside their checkpoints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from triage.graphs.account_change import build_account_change_graph
from triage.graphs.release_followup import build_release_graph
from triage.graphs.specialists import SPECIALISTS, build_specialist
from triage.graphs.support import build_support_graph
from triage.policies import load_policy_bundle

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph


@asynccontextmanager
async def checkpointer() -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The server's persistence: the saver of the shared services for `$TRIAGE_HOME` (or `TRIAGE_DATABASE_URL`)."""
    from triage.services import close_shared_services, shared_services

    services = await shared_services()
    try:
        yield services.saver
    finally:
        await close_shared_services()


def _compile_all() -> dict[str, CompiledStateGraph[Any, Any, Any, Any]]:
    # Built when the server imports this module (off its event loop), never by the CLI or the Python API.
    # Checkpointer-free: the server refuses a graph compiled with its own and supplies `checkpointer` above.
    policy = load_policy_bundle()
    graphs: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = {
        "support": build_support_graph(policy=policy).compile(name="support")
    }
    graphs.update({name: build_specialist(name, policy) for name in SPECIALISTS})
    graphs["account_change"] = build_account_change_graph(policy=policy).compile(name="account_change")
    graphs["release_followup"] = build_release_graph(policy=policy).compile(name="release_followup")
    return graphs


_GRAPHS = _compile_all()
support = _GRAPHS["support"]
"""The coordinator graph: validate, classify, route, specialist, approve, execute, compose, reply."""
billing = _GRAPHS["billing"]
"""The billing specialist on its own, for inspection (its input is the coordinator's state after `route`)."""
technical = _GRAPHS["technical"]
"""The technical specialist on its own, for inspection."""
account = _GRAPHS["account"]
"""The account specialist on its own, for inspection."""
general = _GRAPHS["general"]
"""The general specialist on its own, for inspection."""
escalation = _GRAPHS["escalation"]
"""The escalation specialist on its own, for inspection."""
account_change = _GRAPHS["account_change"]
"""A plan change or account closure carried out step by step, rolled back on a failure (the support graph runs it
after the change is approved; on its own it runs only a change whose approvals are in its input)."""
release_followup = _GRAPHS["release_followup"]
"""The release follow-up: close the engineering tickets a release fixes and tell their reporters, once per release.

Input: `{"release": {"version": "2.4.1", "fixes": ["ENG-42"], "notes": "..."}}`. Its effects are keyed by the
release version, so a Studio thread and a `triage release` run of one release still tell nobody twice.
"""
