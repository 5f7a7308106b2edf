"""`triage train`, `triage model info|reset`, `triage export-labels` and `triage relabel`: the local tier's loop.

People's decisions become training data (`export-labels`, corrected with `relabel`), training data becomes the
active model (`train`), and every run records which model decided (`model info` shows it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triage.cli.common import HomeOption, JsonOption, TriageTyper, cli, err, guard, out, print_json, with_app

if TYPE_CHECKING:
    from triage.settings import Settings

model_cli = TriageTyper(
    help="The models that classify tickets: the active local model, the configured model tiers, going back.",
    no_args_is_help=True,
)
cli.add_typer(model_cli, name="model")


def _settings(home: Path | None) -> Settings:
    from triage.settings import Settings

    return Settings() if home is None else Settings(home=home)


def _threshold(settings: Settings) -> float:
    from triage.policies import load_policy_bundle

    return load_policy_bundle(settings.policy_dir).support.routing.min_confidence


@cli.command()
def train(
    data: Annotated[Path, typer.Argument(help="Labelled tickets: a .csv with a header row, or .jsonl.")],
    text_col: Annotated[str, typer.Option(help="Column with the ticket text.")] = "text",
    route_col: Annotated[str, typer.Option(help="Column with the route.")] = "route",
    intent_col: Annotated[
        str | None, typer.Option(help="Column with the intent \\[default: 'intent' when the file has it].")
    ] = None,
    replace: Annotated[
        bool, typer.Option(help="Train on this file alone instead of the packaged examples plus this file.")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the local tier on labelled tickets, measure it on a held-out split, and make it the active model."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from triage.models.training import train_and_activate

    settings = _settings(home)
    threshold = guard(lambda: _threshold(settings))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("training", total=1.0)

        def tell(step: str, done: float) -> None:
            progress.update(task, description=f"training: {step}", completed=done)

        report = guard(
            lambda: train_and_activate(
                data,
                models_dir=settings.models_dir,
                cache_dir=settings.cache_dir,
                threshold=threshold,
                text_col=text_col,
                route_col=route_col,
                intent_col=intent_col,
                replace=replace,
                progress=tell,
            )
        )
    if as_json:
        print_json(
            {
                "fingerprint": report.fingerprint,
                "data_fingerprint": report.data_fingerprint,
                "examples": report.examples,
                "added": report.added,
                "held_out": report.held_out,
                "seconds": report.seconds,
                "artifact": report.artifact,
            }
        )
        return
    out.print(
        f"trained [bold]{report.fingerprint}[/] on {report.examples} examples ({report.added} from {data}"
        + (", packaged examples replaced" if replace else ", plus the packaged ones")
        + f") in {report.seconds:.1f} s"
    )
    _print_figures(report.held_out)
    out.print(f"active model: {report.fingerprint} ({report.artifact}); `triage model reset` goes back")


def _print_figures(figures: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"held-out split: {figures['examples']} examples")
    for column in ("route", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for route, scores in figures["per_route"].items():
        table.add_row(
            route,
            f"{scores['precision']:.3f}",
            f"{scores['recall']:.3f}",
            f"{scores['f1']:.3f}",
            str(scores["support"]),
        )
    out.print(table)
    precision = figures["automatic_precision"]
    intent = figures.get("intent_accuracy")
    out.print(
        f"accuracy {figures['accuracy']:.3f} (macro F1 {figures['macro_f1']:.3f})"
        + (f", intent accuracy {intent:.3f}" if intent is not None else "")
        + f"; automatic at confidence >= {figures['threshold']:.2f}: {figures['automatic_share']:.1%} of tickets, "
        + ("none" if precision is None else f"{precision:.1%} of them right")
        + f"; calibration error {figures['expected_calibration_error']:.3f}"
    )


def local_model_info(settings: Settings) -> dict[str, Any]:
    """What `triage model info` says about the local model: the active one, its data and held-out figures."""
    from triage.models.registry import ModelRegistry
    from triage.models.training import packaged_held_out

    registry = ModelRegistry(settings.models_dir, settings.cache_dir)
    described = registry.describe().as_dict()
    if described["source"] == "packaged" and "held_out" not in described:
        described["held_out"] = packaged_held_out(settings.cache_dir, _threshold(settings))
    return described


def print_local_model_info(info: dict[str, Any]) -> None:
    """Print the local model section of `triage model info`."""
    out.print(f"[bold]local model[/] {info['fingerprint']} ({info['source']})")
    out.print(f"  training data {info['data_fingerprint']}: {info['examples']} examples")
    if info.get("source_file"):
        added = info.get("added_examples")
        out.print(
            f"  trained from {info['source_file']} ({added} examples"
            + (", packaged examples replaced" if info.get("replace") else ", plus the packaged ones")
            + f") at {info.get('trained_at')} in {info.get('training_seconds')} s"
        )
    out.print(f"  languages {', '.join(info['languages'])}; artifact {info['artifact']}")
    if info.get("held_out"):
        _print_figures(info["held_out"])


@model_cli.command("info")
def model_info(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show the active local model (fingerprint, training data, held-out figures) and the configured model tiers.

    The tiers' endpoint, models, prices and thresholds are shown, never the key.
    """
    from triage.cli.llm import model_tiers_info, print_model_tiers

    settings = _settings(home)
    tiers = model_tiers_info()
    with err.status("loading the model (the packaged one trains on first use)…"):
        info = guard(lambda: local_model_info(settings))
    if as_json:
        print_json({"local": info, "model_tiers": tiers})
        return
    print_local_model_info(info)
    print_model_tiers(tiers)


@model_cli.command("reset")
def model_reset(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Go back to the packaged local model (trained models stay on disk)."""
    from triage.models.registry import ModelRegistry

    settings = _settings(home)
    was_trained = guard(lambda: ModelRegistry(settings.models_dir, settings.cache_dir).reset())
    if as_json:
        print_json({"reset": was_trained, "active": "packaged"})
        return
    out.print("the packaged model is active again" if was_trained else "the packaged model was already active")


@cli.command("export-labels")
def export_labels(
    output: Annotated[
        Path | None, typer.Option("--out", help="Write to this .csv or .jsonl file \\[default: JSONL on stdout].")
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the decided labels of past threads (a person's correction first) in the format `triage train` reads."""
    import csv
    import io
    import json
    import sys

    from triage.errors import TriageError

    labels, skipped = with_app(home, lambda app: app.labels())
    fields = ("text", "route", "intent", "source", "thread_id")
    if output is not None and output.suffix.lower() not in (".csv", ".jsonl"):
        err.print(f"[bold red]error:[/] {output}: name the file .csv or .jsonl")
        raise typer.Exit(2)
    if output is not None and output.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows([{f: row.get(f) or "" for f in fields} for row in labels])
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps({f: row.get(f) for f in fields}) + "\n" for row in labels)
    if output is None:
        sys.stdout.write(text)
    else:

        def write() -> None:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise TriageError(f"cannot write {output}: {exc.strerror}") from None

        guard(write)
    summary = f"exported {len(labels)} labels" + (
        f"; {skipped} threads were handed on without a confident label: correct them with "
        "`triage relabel THREAD --route R`"
        if skipped
        else ""
    )
    if as_json and output is not None:
        print_json({"exported": len(labels), "skipped": skipped, "file": str(output)})
    elif not as_json:
        err.print(summary, highlight=False)


@cli.command()
def relabel(
    thread_id: Annotated[str, typer.Argument(help="The thread whose ticket was routed wrongly (or not at all).")],
    route: Annotated[str, typer.Option(help="The route it should have had.")],
    intent: Annotated[str | None, typer.Option(help="The intent within that route.")] = None,
    actor: Annotated[str, typer.Option("--as", help="Who corrects it (kept in the audit trail).")] = "operator",
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record a person's correction of a thread's route (and intent); `export-labels` prefers it."""
    label = with_app(home, lambda app: app.relabel(thread_id, route=route, intent=intent, actor=actor))
    if as_json:
        print_json(label)
        return
    out.print(
        f"{thread_id} relabelled {label['route']}"
        + (f" / {label['intent']}" if label["intent"] else "")
        + f" by {actor}"
    )
