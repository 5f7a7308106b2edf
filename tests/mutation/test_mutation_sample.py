"""A fixed sample of mutants, the four planted bugs of issue 17 among them, must each be killed by their tests.

This keeps the mutation score from rotting between `make mutation` runs: weaken a test that guards a boundary or
a safeguard and this fails, naming the mutant that got through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutation.sample import MUTANTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_sampled_mutant_is_killed(model_cache: Path) -> None:
    # The session's trained classifier: no mutant touches training, so the driver need not train it again.
    env = {**os.environ, "TRIAGE_TEST_MODEL_CACHE": str(model_cache)}
    env.pop("TRIAGE_POLICY_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.mutation.sample_driver"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    [line] = [line for line in done.stdout.splitlines() if line.startswith("MUTATION-SAMPLE ")] or [done.stderr[-3000:]]
    outcome = json.loads(line.removeprefix("MUTATION-SAMPLE "))
    assert outcome["control"] == 0, "the sampled tests must pass on the unmutated code:\n" + done.stdout[-3000:]
    assert len(outcome["mutants"]) == len(MUTANTS) >= 14
    survivors = [name for name, code in outcome["mutants"].items() if code != pytest.ExitCode.TESTS_FAILED]
    assert survivors == [], f"mutants not killed by their tests: {survivors}\n{done.stdout[-3000:]}"
