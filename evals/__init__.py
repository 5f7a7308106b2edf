"""triage.evals."""
