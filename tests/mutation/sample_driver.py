"""Run by test_mutation_sample in a subprocess: apply each fixed mutant in turn and run the tests meant to kill it.

A mutant is applied by executing the module's source with one snippet replaced, then binding the mutated function
(or method) wherever the original is bound: the module, every module that imported it by name, the class. The tests
then run in this process with `pytest.main`, so they see the mutant exactly as the code under test would.
Prints one JSON object: the control run's exit code and each mutant's.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.mutation.sample import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
# Plugins imported by the first run cannot be assertion-rewritten by the next ones; that is expected here.
QUIET = ("-W", "ignore::pytest.PytestAssertRewriteWarning")


@contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    """Bind the mutated version of `mutant.target` wherever the original is bound, for the duration."""
    module = importlib.import_module(mutant.module)
    source = Path(module.__file__ or "").read_text()
    assert source.count(mutant.old) == 1, f"{mutant.name}: {mutant.old!r} must occur once in {mutant.module}"
    namespace: dict[str, Any] = {"__name__": mutant.module, "__file__": module.__file__}
    exec(compile(source.replace(mutant.old, mutant.new), str(module.__file__), "exec"), namespace)
    owner_name, _, attribute = mutant.target.rpartition(".")
    rebound: list[tuple[Any, str, Any]] = []
    if owner_name:  # a method: rebind it on the class
        owner = getattr(module, owner_name)
        rebound.append((owner, attribute, owner.__dict__[attribute]))
        setattr(owner, attribute, namespace[owner_name].__dict__[attribute])
    else:  # a function: rebind it in its module and wherever it was imported by name
        original, mutated = getattr(module, attribute), namespace[attribute]
        for other in list(sys.modules.values()):
            for name, value in list(getattr(other, "__dict__", {}).items()):
                if value is original:
                    rebound.append((other, name, original))
                    setattr(other, name, mutated)
    try:
        yield
    finally:
        for holder, name, original in rebound:
            setattr(holder, name, original)


def run_tests(tests: tuple[str, ...]) -> int:
    """Run the named tests (paths relative to the project) in this process; pytest's exit code."""
    return int(
        pytest.main([*(str(ROOT / t) for t in tests), "-x", "-q", "-p", "no:cacheprovider", "--no-header", *QUIET])
    )


def main() -> None:
    everything = tuple(dict.fromkeys(t for m in MUTANTS for t in m.tests))
    # Import the code and the test modules first, so every later rebinding finds every name bound to a target.
    pytest.main([*(str(ROOT / t) for t in everything), "--collect-only", "-q", "-p", "no:cacheprovider", *QUIET])
    # The control rebinds every target to a re-executed but unchanged copy: the mechanism alone breaks nothing.
    with ExitStack() as stack:
        for mutant in MUTANTS:
            stack.enter_context(applied(replace(mutant, new=mutant.old)))
        control = run_tests(everything)
    outcome: dict[str, Any] = {"control": control, "mutants": {}}
    for mutant in MUTANTS:
        with applied(mutant):
            outcome["mutants"][mutant.name] = run_tests(mutant.tests)
    print("MUTATION-SAMPLE " + json.dumps(outcome))


if __name__ == "__main__":
    main()
