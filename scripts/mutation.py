"""Mutation testing of the code that moves money: `make mutation` (slow; not part of the default test run).

mutmut names each mutant after the module its file path implies and activates it by the function's runtime module
name, so it needs the package laid out as installed (`triage/nodes/approve.py`, not `nodes/approve.py`). Like
scripts/typecheck.py, this lays that tree out as symlinks (from `[tool.setuptools] package-dir`) under
build/mutation/src/, with the tests, README and pyproject.toml beside it, runs `mutmut run` there (mutmut copies
the tree into build/mutation/mutants/ and mutates the copies), then prints the score and every surviving mutant.
Survivors listed in tests/mutation/equivalent.md are reported as equivalent; the score counts them as survivors
all the same, and a second figure leaves them out. Mutants that mypy --strict rejects (`type_check_command` in
pyproject.toml) count as caught, and the score says how many. Mutants a run did not check (a run limited to some
names, or stopped early) are left out of the figures, and their number is printed.

A long run can be done in parts: `--keep` goes on from the results in build/mutation/ (a run cut short, or one
limited to some mutant globs, keeps every verdict it reached), `--recheck` runs the survivors again once tests were
added (a mutant that timed out stays caught: it is not run again), and `--report` prints the figures of everything
checked so far. Mutant globs make mutmut run every mutant they match again, checked or not: `--keep` without globs
is the way to finish a run.

Usage: python scripts/mutation.py [--keep] [--report] [--max-children N] [--min-score PERCENT] [mutant globs]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutation"
TESTS = ROOT / "tests"
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.md"
MUTMUT = [sys.executable, "-m", "mutmut"]
KILLED = frozenset({"killed", "timeout", "caught by type check"})
"""mutmut's verdicts that count as caught: a failing test, a timeout (the mutant loops), or a mypy error."""


def build_stage() -> None:
    """Lay the installed package tree out under STAGE/src as file symlinks, with tests and configuration beside it.

    Folders are real (mutmut walks them without following folder symlinks); files are symlinks it copies.
    """
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in config["packages"]:
        parent, _, leaf = package.rpartition(".")
        source = config["package-dir"].get(package)
        folder = ROOT / source if source else ROOT / config["package-dir"][parent] / leaf
        _mirror(folder, STAGE / "src" / package.replace(".", "/"), skip=set(config["packages"]), package=package)
    for name in ("README.md", "pyproject.toml", ".ci"):
        (STAGE / name).symlink_to(ROOT / name)
    (STAGE / "tests").symlink_to(TESTS)


def _mirror(folder: Path, target: Path, *, skip: set[str], package: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for file in folder.iterdir():
        if file.is_file() and file.suffix != ".pyc":
            (target / file.name).symlink_to(file)
        elif file.is_dir() and file.name != "__pycache__" and f"{package}.{file.name}" not in skip:
            _mirror(file, target / file.name, skip=skip, package=f"{package}.{file.name}")


def configure(stage: Path, tests: Path) -> None:
    """Point the run at another stage folder and tests folder."""
    global STAGE, TESTS
    STAGE, TESTS = stage, tests


def equivalent_mutants() -> dict[str, str]:
    """Mutant name -> reason, from the list kept beside the tests (`- name: reason` lines)."""
    if not EQUIVALENT.exists():
        return {}
    found = re.findall(r"^- `([^`]+)`: (.+)$", EQUIVALENT.read_text(), flags=re.M)
    return dict(found)


def main() -> int:
    """Build the tree, run mutmut in it, print the score and the survivors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="reuse build/mutation/mutants and its cached results")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--min-score", type=float, default=None, help="exit 1 below this percentage")
    parser.add_argument("--stage", type=Path, default=STAGE, help="where to lay the tree out and run")
    parser.add_argument("--tests", type=Path, default=TESTS, help="another tests folder (to measure an older suite)")
    parser.add_argument("--report", action="store_true", help="only print the results of the last run")
    parser.add_argument("--recheck", action="store_true", help="run the last run's survivors again (implies --keep)")
    parser.add_argument("mutants", nargs="*", help="only these mutant names (mutmut globs)")
    options = parser.parse_args()
    configure(options.stage.resolve(), options.tests.resolve())
    if options.report:
        return report(options.min_score)
    if options.recheck:
        options.keep, options.mutants = True, [*options.mutants, *forget_survivors()]
        if len(options.mutants) == 0:
            return report(options.min_score)
    if not options.keep:
        shutil.rmtree(STAGE, ignore_errors=True)
    if not (STAGE / "src").exists():
        build_stage()
    env = {**os.environ, "TRIAGE_TEST_MODEL_CACHE": str(STAGE / "model-cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # mypy, for the type check
    env.pop("TRIAGE_POLICY_DIR", None)
    run = [*MUTMUT, "run", "--max-children", str(options.max_children), *options.mutants]
    status = subprocess.run(run, cwd=STAGE, env=env, check=False).returncode
    if status != 0:
        print(f"mutmut run exited {status}", file=sys.stderr)
        return status
    return report(options.min_score)


def results() -> dict[str, dict[str, str]]:
    """Each mutated file's mutants and their status, read from mutmut's result files."""
    from mutmut.stats import status_by_exit_code

    found: dict[str, dict[str, str]] = {}
    for meta in sorted((STAGE / "mutants" / "src").rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        name = str(meta.relative_to(STAGE / "mutants" / "src")).removesuffix(".meta")
        found[name] = {key: status_by_exit_code[code] for key, code in codes.items()}
    return found


def forget_survivors() -> list[str]:
    """Clear the last run's verdict on every survivor (so mutmut checks them again); their names.

    Killed mutants stay killed, and so do those that timed out (an endless loop: checking one again costs its whole
    time limit and ends the same way) and those mypy rejected; listed equivalents and unchecked mutants are left too.
    """
    from mutmut.stats import status_by_exit_code

    forgotten, equivalent = [], equivalent_mutants()
    for meta in (STAGE / "mutants" / "src").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        for key, code in codes.items():
            if code is not None and status_by_exit_code[code] not in {*KILLED, "skipped"} and key not in equivalent:
                codes[key] = None
                forgotten.append(key)
        meta.write_text(json.dumps(data))
    return forgotten


def report(min_score: float | None) -> int:
    """Print the score per file and overall, and every survivor; 1 when below `min_score`."""
    equivalent = equivalent_mutants()
    total = killed = typed = unchecked = 0
    survivors: list[tuple[str, str]] = []
    print()
    for file, statuses in results().items():
        unchecked += sum(v == "not checked" for v in statuses.values())
        counted = {k: v for k, v in statuses.items() if v not in ("skipped", "not checked")}
        if not counted:
            continue
        dead = sum(v in KILLED for v in counted.values())
        total, killed = total + len(counted), killed + dead
        typed += sum(v == "caught by type check" for v in counted.values())
        print(f"{file:40} {dead:4} of {len(counted):4} killed ({100 * dead / len(counted):5.1f}%)")
        survivors += sorted((k, v) for k, v in counted.items() if v not in KILLED)
    for name, status in survivors:
        why = equivalent.get(name)
        print(f"  {status:9} {name}" + (f"  (equivalent: {why})" if why else ""))
    unexplained = [name for name, _ in survivors if name not in equivalent]
    score = 100.0 * killed / total if total else 0.0
    listed = len(survivors) - len(unexplained)
    print(f"mutation score: {score:.1f}% ({killed} of {total} mutants killed; {typed} of them by mypy --strict)")
    if total > typed:
        alone = 100.0 * (killed - typed) / (total - typed)
        print(f"by the tests alone (the {typed} mutants mypy rejects left out): {alone:.1f}%")
    if unchecked:
        print(f"not checked yet: {unchecked} mutants (`python scripts/mutation.py --keep` goes on)")
    if total > listed:
        print(f"without the {listed} listed equivalent mutants: {100.0 * killed / (total - listed):.1f}%")
    print(f"survivors not listed as equivalent: {len(unexplained)}")
    if min_score is not None and score < min_score:
        print(f"below the required {min_score:.1f}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
