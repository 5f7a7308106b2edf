"""What every `triage` command shares: the root Typer app, consoles, common options and error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    from triage.app import TriageApp


def _flags_without_type(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class TriageCommand(TyperCommand):
    """A command whose usage line and help read plainly: `triage show THREAD`, no type after a flag."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] THREAD` rather than `[OPTIONS] {thread}`."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = (param.metavar or param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, with flags shown without a value type (`--json`, not `--json <bool>`)."""
        return _flags_without_type(super().get_params(ctx))


class TriageGroup(TyperGroup):
    """A command group whose flags are shown without a value type, like `TriageCommand`'s."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, with flags shown without a value type."""
        return _flags_without_type(super().get_params(ctx))


class TriageTyper(typer.Typer):
    """A Typer app whose commands are `TriageCommand`s (and groups `TriageGroup`s) unless told otherwise."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", TriageGroup)
        super().__init__(**kwargs)

    def command(  # type: ignore[override]
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a command (see `typer.Typer.command`)."""
        return super().command(name, cls=cls or TriageCommand, **kwargs)


cli = TriageTyper(
    name="triage",
    help="Support-ticket triage on LangGraph: classify, route to a specialist, act, reply; checkpointed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)
T = TypeVar("T")

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", envvar="TRIAGE_HOME", help="Folder for the helpdesk and checkpoints \\[default: ./.triage]."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@contextmanager
def open_app(home: Path | None) -> Iterator[TriageApp]:
    """Open the app in `home` for one command and close it afterwards."""
    from triage.app import TriageApp

    app = TriageApp.open(home)
    try:
        yield app
    finally:
        app.close()


def guard(action: Callable[[], T], *, as_json: bool = False) -> T:
    """Run a command body; a user error exits 2 with one clear line and no traceback.

    With `as_json` (the command's `--json`) the error is also a JSON object
    on stdout, `{"error": {"type": ..., "message": ...}}`, so scripts parse every outcome the same way; the line on
    stderr stays for whoever reads the log.
    """
    from triage.errors import ReportedError, TriageError

    try:
        return action()
    except TriageError as exc:
        if as_json:
            name = exc.type_name if isinstance(exc, ReportedError) else type(exc).__name__
            print_json({"error": {"type": name, "message": str(exc)}})
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def with_app(home: Path | None, action: Callable[[TriageApp], T], *, as_json: bool = False) -> T:
    """Open the app, run `action` on it, close it; user errors exit 2 with their message (see `guard`)."""

    def go() -> T:
        with open_app(home) as app:
            return action(app)

    return guard(go, as_json=as_json)


def print_json(data: Any) -> None:
    """Write `data` to stdout as indented JSON."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
