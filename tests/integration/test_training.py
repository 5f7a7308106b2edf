"""`triage train`, `model info|reset`, `export-labels` and `relabel` as a team uses them: real files and homes."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.integration.zygote import triage_cli
from triage import TriageApp
from triage.models import local
from triage.models.local import load_examples
from triage.models.registry import ModelRegistry
from triage.models.training import TrainingDataError, read_labelled_file, train_and_activate
from triage.settings import Settings


def triage(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)}
    return triage_cli(args, env=env, timeout=timeout)


def team_rows(per_intent: int = 4) -> list[dict[str, str]]:
    """A small labelled set in a team's own column names, taken from the project's own examples."""
    by_intent: dict[str, list[dict[str, str]]] = defaultdict(list)
    for example in load_examples():
        assert example.intent is not None
        if len(by_intent[example.intent]) < per_intent:
            by_intent[example.intent].append(
                {"message": example.text, "queue": example.route, "intent": example.intent}
            )
    return [row for rows in by_intent.values() for row in rows]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def active_fingerprint(settings: Settings) -> str:
    return ModelRegistry(settings.models_dir, settings.cache_dir).describe().fingerprint


@pytest.fixture(scope="module")
def team_models(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> tuple[Path, str]:
    """A models folder whose active model was trained on the small team set, packaged examples replaced."""
    folder = tmp_path_factory.mktemp("team-models")
    data = write_csv(folder / "team.csv", team_rows())
    report = train_and_activate(
        data,
        models_dir=folder / "models",
        cache_dir=model_cache,
        threshold=0.8,
        text_col="message",
        route_col="queue",
        replace=True,
    )
    return folder / "models", report.fingerprint


@pytest.fixture
def trained(settings: Settings, team_models: tuple[Path, str]) -> str:
    """This test's home, with the team model active (a copy of the module's models folder)."""
    import shutil

    shutil.copytree(team_models[0], settings.models_dir)
    return team_models[1]


@pytest.mark.slow
def test_train_cli_reports_held_out_figures_and_runs_use_the_new_model(settings: Settings, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "team.csv", team_rows())
    ticket = {"subject": "", "body": "I was charged twice for my plan"}
    with TriageApp(settings) as app:
        packaged = app.run(ticket).model_version
    assert packaged is not None and packaged.startswith("local-")

    done = triage(settings, "train", str(data), "--text-col", "message", "--route-col", "queue", "--replace")
    assert done.returncode == 0, done.stderr
    assert "held-out split" in done.stdout
    for route in ("billing", "technical", "account", "general", "escalation"):
        assert route in done.stdout
    assert "accuracy" in done.stdout and "intent accuracy" in done.stdout

    info = json.loads(triage(settings, "model", "info", "--json").stdout)["local"]
    assert info["source"] == "trained" and info["fingerprint"] != packaged
    assert info["examples"] == len(team_rows()) and info["replace"] is True
    assert info["held_out"]["examples"] > 0 and 0.0 <= info["held_out"]["accuracy"] <= 1.0
    after = json.loads(triage(settings, "run", "--body", "I was charged twice for my plan", "--json").stdout)
    assert after["model_version"] == info["fingerprint"]

    reset = triage(settings, "model", "reset")
    assert reset.returncode == 0 and "packaged model is active again" in reset.stdout
    with TriageApp(settings) as app:
        assert app.run(ticket).model_version == packaged


@pytest.mark.slow
def test_train_then_eval_its_test_split_prints_the_figures(settings: Settings, tmp_path: Path) -> None:
    """The issue's closing loop in a clean home: `triage train` on a team's CSV, `triage eval --dataset` on the
    rows held back, printing accuracy, the automatic share and the precision of automatic routes, and intents."""
    from triage.models.local import split_examples

    train, test = split_examples(load_examples())
    train_rows = [{"message": e.text, "queue": e.route, "intent": e.intent or ""} for e in train]
    first_per_intent = {e.intent: e for e in reversed(test)}
    test_rows = [{"message": e.text, "queue": e.route, "intent": e.intent or ""} for e in first_per_intent.values()]
    train_csv = write_csv(tmp_path / "train.csv", train_rows)
    test_csv = write_csv(tmp_path / "test.csv", test_rows)
    mapping = ("--text-col", "message", "--route-col", "queue", "--intent-col", "intent")

    trained = triage(settings, "train", str(train_csv), *mapping, "--replace")
    assert trained.returncode == 0, trained.stderr
    evaluated = triage(settings, "eval", "--dataset", str(test_csv), *mapping, "--out", str(tmp_path / "out"))
    assert evaluated.returncode == 0, evaluated.stderr
    printed = " ".join(evaluated.stdout.split())
    figures = re.search(
        r"route accuracy (\d+\.\d)%, intent accuracy (\d+\.\d)%; automatic \(not handed on\) (\d+\.\d)% of "
        r"tickets, precision of automatic routes (\d+\.\d)%",
        printed,
    )
    assert figures is not None, evaluated.stdout

    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    run = report["run"]
    markdown = (tmp_path / "out" / "eval.md").read_text()
    assert f"| precision of automatic routes | {run['automatic_precision'] * 100:.1f}% |" in markdown
    assert report["dataset"]["cases"] == len(test_rows) == 26
    assert [float(f) for f in figures.groups()] == [
        round(run["route_accuracy"] * 100, 1),
        round(run["intent_accuracy"] * 100, 1),
        round(run["automatic_share"] * 100, 1),
        round(run["automatic_precision"] * 100, 1),
    ]
    assert run["automatic_share"] >= 0.5, "a model trained on the team's own tickets handles most of them"
    # Precision counts only the tickets no person was handed: at least as many right as that share implies.
    right = sum(case["route"] == case["expected_route"] for case in report["cases"])
    automatic_right = run["automatic_precision"] * run["automatic_share"] * len(test_rows)
    assert round(automatic_right) <= right


def test_python_api_and_eval_use_the_active_model(settings: Settings, trained: str) -> None:
    with TriageApp(settings) as app:
        result = app.run({"subject": "Refund", "body": "Please refund my last payment, I cancelled in time."})
    assert result.model_version == trained

    import asyncio

    from triage.evals.dataset import load_cases
    from triage.evals.runner import run_cases

    run = asyncio.run(run_cases(load_cases(limit=2), settings=settings, concurrency=2))
    assert run.model_version == trained


def test_extending_the_packaged_examples_is_the_default(settings: Settings, tmp_path: Path) -> None:
    rows = [
        {"text": f"Our {thing} invoice total is wrong", "route": "billing", "intent": "invoice_request"}
        for thing in ("freight", "pallet", "warehouse", "customs", "container")
    ]
    data = tmp_path / "extra.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    report = train_and_activate(data, models_dir=settings.models_dir, cache_dir=settings.cache_dir, threshold=0.8)
    assert report.examples == len(load_examples()) + 5 and report.added == 5
    assert active_fingerprint(settings) == report.fingerprint


BAD_FILES = {
    "unknown route": ("text,route\nwhere is my parcel,shipping\n", "line 2 ('shipping')"),
    "empty text": ("text,route\n  ,billing\n", "empty 'text' on line 2"),
    "missing column": ("body,route\nhello,general\n", "no column 'text'"),
    "json named csv": ('{"text": "hi", "route": "general"}\n', "looks like JSON, not CSV"),
    "too few examples": ("text,route\ncharged twice,billing\nlocked out,account\n", "too few examples"),
    "wrong intent": (
        "text,route,intent\ncharged twice,billing,password_reset\n",
        "'password_reset' belongs to account",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_data_is_refused_and_the_active_model_stays(
    kind: str, settings: Settings, trained: str, tmp_path: Path
) -> None:
    content, message = BAD_FILES[kind]
    data = tmp_path / "bad.csv"
    data.write_text(content, encoding="utf-8")
    pointer = settings.models_dir / "active.json"
    before = pointer.read_bytes()
    with pytest.raises(TrainingDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_and_activate(
            data, models_dir=settings.models_dir, cache_dir=settings.cache_dir, threshold=0.8, replace=True
        )
    assert pointer.read_bytes() == before
    assert active_fingerprint(settings) == trained


def test_bad_data_exits_2_with_one_line(settings: Settings, tmp_path: Path) -> None:
    data = tmp_path / "tickets.jsonl"
    data.write_text("text,route\nhello,general\n", encoding="utf-8")
    done = triage(settings, "train", str(data))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    assert "not JSON" in done.stderr and "name it .csv" in done.stderr
    binary = tmp_path / "tickets.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    assert "binary file" in read_error(binary)
    assert not (settings.models_dir / "active.json").exists()


def read_error(path: Path) -> str:
    with pytest.raises(TrainingDataError) as caught:
        read_labelled_file(path)
    return str(caught.value)


def test_a_failed_write_leaves_the_previous_model(
    settings: Settings, trained: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib

    def broken_dump(value: object, handle: object) -> None:
        handle.write(b"half a model")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(joblib, "dump", broken_dump)
    data = write_csv(tmp_path / "again.csv", team_rows(per_intent=5))
    with pytest.raises(OSError, match="disk full"):
        train_and_activate(
            data,
            models_dir=settings.models_dir,
            cache_dir=settings.cache_dir,
            threshold=0.8,
            text_col="message",
            route_col="queue",
            replace=True,
        )
    assert active_fingerprint(settings) == trained
    assert not [p for p in settings.models_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_training_killed_midway_leaves_the_previous_model(settings: Settings, trained: str, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "big.csv", team_rows(per_intent=40))
    pointer = (settings.models_dir / "active.json").read_bytes()
    artifacts = sorted(p.name for p in settings.models_dir.iterdir())
    env = {**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "triage", "train", str(data), "--text-col", "message", "--route-col", "queue"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(4.0)  # well into training: reading, checking and the first folds take longer than the start-up
    assert process.poll() is None, "training finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert (settings.models_dir / "active.json").read_bytes() == pointer
    assert sorted(p.name for p in settings.models_dir.iterdir() if not p.name.endswith(".tmp")) == artifacts
    local._loaded.clear()
    assert active_fingerprint(settings) == trained


def test_export_labels_prefers_a_persons_correction(settings: Settings, tmp_path: Path) -> None:
    with TriageApp(settings) as app:
        sure = app.run({"subject": "Charged twice", "body": "You charged my card twice for the same invoice."})
        unsure = app.run({"subject": "hm", "body": "blorp zzkt qwfp"})
        corrected = app.run({"subject": "Where is my order", "body": "My parcel has not arrived yet."})
        assert sure.confidence is not None and sure.confidence >= 0.8
        assert unsure.route == "escalation" and (unsure.confidence or 0) < 0.8
        app.relabel(corrected.thread_id, route="billing", intent="refund_request", actor="sam")
        app.relabel(unsure.thread_id, route="general", actor="sam")
        labels, skipped = app.labels()
        trail = app.thread(corrected.thread_id).audit
    by_thread = {label["thread_id"]: label for label in labels}
    assert by_thread[corrected.thread_id] | {"text": ""} == {
        "text": "",
        "route": "billing",
        "intent": "refund_request",
        "source": "person",
        "thread_id": corrected.thread_id,
    }
    assert by_thread[unsure.thread_id]["source"] == "person" and by_thread[unsure.thread_id]["intent"] is None
    assert by_thread[sure.thread_id]["source"] == "model" and by_thread[sure.thread_id]["route"] == "billing"
    assert skipped == 0
    assert [line["event"] for line in trail] == ["relabelled"] and trail[0]["actor"] == "sam"

    out = tmp_path / "labels.csv"
    exported = triage(settings, "export-labels", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    examples = read_labelled_file(out)
    assert {(e.route, e.intent) for e in examples} >= {("billing", "refund_request"), ("billing", "duplicate_charge")}


def test_relabel_refuses_unknown_routes_threads_and_intents(settings: Settings) -> None:
    done = triage(settings, "relabel", "thr_nope", "--route", "billing")
    assert done.returncode == 2 and "no thread 'thr_nope'" in done.stderr
    with TriageApp(settings) as app:
        thread = app.run({"subject": "Hello", "body": "What are your opening hours?"}).thread_id
    wrong_route = triage(settings, "relabel", thread, "--route", "sales")
    assert wrong_route.returncode == 2 and "unknown route 'sales'" in wrong_route.stderr
    wrong_intent = triage(settings, "relabel", thread, "--route", "billing", "--intent", "outage")
    assert wrong_intent.returncode == 2 and "not an intent of route 'billing'" in wrong_intent.stderr
