"""Policies: pure, deterministic decisions and their data. No model calls, no I/O beyond reading policy files."""

from triage.policies.bundle import PolicyBundle, load_policy_bundle

__all__ = ["PolicyBundle", "load_policy_bundle"]
