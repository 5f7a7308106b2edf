"""Run in spawned processes by test_races: open the app and warm it, wait at a barrier, then decide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.errors import TriageError
from triage.settings import Settings


def decide(home: str, cache: str, thread_id: str, decision: dict[str, Any], barrier: Any, results: Any) -> None:
    """Answer `thread_id`'s approval with `decision` the moment every racer is ready; report what happened."""
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache)))
    try:
        app.warm_up()
        assert app.pending_approvals(), "the approval should be pending before the race"
        barrier.wait(timeout=120)
        try:
            result = app.resume(thread_id, decision)
        except TriageError as exc:
            results.put({"decision": decision, "error": type(exc).__name__, "message": str(exc)})
        else:
            results.put({"decision": decision, "status": result.status})
    finally:
        app.close()
