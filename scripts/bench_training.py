"""How long `triage train` takes on a labelled file of N examples (default 10,000): `make bench-training`.

The file is built from the packaged examples (our own sentences), each round wrapped in a different greeting,
sign-off and reference number so that every text is distinct, and trained on with `--replace` in a temporary home,
exactly as a team would run it. Prints the examples, the seconds `triage train` reports (check, held-out model,
measurement, final model, write), the wall and CPU time of the whole command and the machine's load, its last line
`training time for N examples: S s`. The held-out figures are printed only to show the run worked: the variants of
one sentence fall on both sides of the split, so they say nothing about quality (`make routes` does).

Run as `python scripts/bench_training.py [--examples N]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_GREETINGS = ("", "Hi,", "Hello team,", "Good morning.", "hey", "Dear support,", "Hi there!", "Quick one:")
_SIGN_OFFS = ("", "Thanks.", "Cheers", "Regards, Sam", "thx", "Many thanks in advance.", "Best, Priya", "ty!")


def labelled_rows(count: int) -> list[dict[str, str]]:
    """`count` distinct labelled rows made from the packaged examples."""
    from triage.models.local import load_examples

    examples = load_examples()
    rows: list[dict[str, str]] = []
    for number in range(count):
        example = examples[number % len(examples)]
        round_ = number // len(examples)
        text = example.text
        if round_:
            greeting = _GREETINGS[round_ % len(_GREETINGS)]
            sign_off = _SIGN_OFFS[(round_ // len(_GREETINGS) + number) % len(_SIGN_OFFS)]
            text = f"{greeting} {text} (ref {round_}-{number % 997}) {sign_off}".strip()
        rows.append({"text": text, "route": example.route, "intent": example.intent or ""})
    return rows


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Build the file, run `triage train` on it in a temporary home, print the time."""
    parser = argparse.ArgumentParser(prog="python scripts/bench_training.py", description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000, help="rows in the labelled file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="triage-bench-training-") as folder:
        data = Path(folder) / "tickets.csv"
        with data.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "route", "intent"])
            writer.writeheader()
            writer.writerows(labelled_rows(args.examples))
        env = {**os.environ, "TRIAGE_HOME": str(Path(folder) / "home"), "TRIAGE_CACHE_HOME": str(Path(folder) / "c")}
        started, cpu_before = time.perf_counter(), _children_cpu()
        done = subprocess.run(
            [sys.executable, "-m", "triage", "train", str(data), "--replace", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        wall, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    report = json.loads(done.stdout)
    held_out = report["held_out"]
    print(f"examples {report['examples']} (held out {held_out['examples']})")
    print(
        f"held-out accuracy {held_out['accuracy']:.3f}, automatic share {held_out['automatic_share']:.3f}, "
        f"precision of automatic routes {held_out['automatic_precision']}"
    )
    print(
        f"triage train reports {report['seconds']:.1f} s; the whole command took {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"training time for {report['examples']} examples: {report['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
