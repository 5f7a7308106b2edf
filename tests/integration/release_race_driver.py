"""Run in spawned processes by test_release: open the app and warm it, wait at a barrier, then run one release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.settings import Settings


def follow_up(home: str, cache: str, fixes: list[str], notes: str, barrier: Any, results: Any) -> None:
    """Run the release the moment every racer is ready; report its status and the effects this run performed."""
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache)))
    try:
        app.warm_up()
        barrier.wait(timeout=120)
        result = app.release("2.4.1", fixes, notes)
        results.put({"status": result.status, "notified": result.notified, "closed": result.closed})
    finally:
        app.close()
