"""Deferred package initialisers (`triage.startup`): the same names as a plain import, the `__init__` run once."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import collectable
from triage.startup import defer_package_inits

INIT = """
import sys, time
from {name}.log import runs
runs.append("{name}")
time.sleep({pause})
try:
    sys.modules[__name__].LATER  # a name this `__init__` binds only below
except AttributeError:
    runs.append("unbound while running")
from {name}.sub import VALUE as COPIED
NAME = "from the init"
LATER = "bound"
"""


@pytest.fixture
def make_package(tmp_path: Path) -> Iterator[object]:
    """A factory of fresh packages `deferprobe_<hex>` (package, `sub` and `log` submodules) on `sys.path`."""
    made: list[str] = []
    sys.path.insert(0, str(tmp_path))

    def make(init: str = INIT, pause: float = 0.0) -> str:
        name = f"deferprobe_{uuid.uuid4().hex[:10]}"
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text(init.format(name=name, pause=pause))
        (folder / "sub.py").write_text("VALUE = 2\n")
        (folder / "log.py").write_text("runs = []\n")
        made.append(name)
        return name

    yield make
    sys.path.remove(str(tmp_path))
    for name in made:
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def runs(name: str) -> list[str]:
    return list(importlib.import_module(f"{name}.log").runs)


def test_submodules_import_without_the_init_and_a_name_runs_it_once(make_package) -> None:
    name = make_package()
    assert defer_package_inits((name,)) == [name]

    sub = importlib.import_module(f"{name}.sub")
    assert sub.VALUE == 2
    assert runs(name) == [], "importing a submodule must not run the package's __init__"

    package = sys.modules[name]
    assert package.NAME == "from the init"
    assert package.COPIED == 2 and package.LATER == "bound"
    assert runs(name) == [name, "unbound while running"], "the init runs once and sees its own unbound names unbound"
    exec(f"from {name} import NAME as again", {})  # the `from package import name` form
    assert runs(name) == [name, "unbound while running"]
    assert "__getattr__" not in vars(package), "once run, the package answers as an ordinary module"
    with pytest.raises(AttributeError, match="MISSING"):
        package.MISSING  # noqa: B018


def test_threads_that_read_a_name_at_once_run_the_init_once(make_package) -> None:
    name = make_package(pause=0.05)  # a slow __init__, so the others arrive while it runs
    defer_package_inits((name,))
    package = sys.modules[name]
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def read() -> None:
        barrier.wait()
        seen.append(package.LATER)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == ["bound"] * 8, "no thread may see the package half initialised"
    assert runs(name) == [name, "unbound while running"]


def test_a_failing_init_fails_like_an_import_and_runs_again_next_time(make_package, tmp_path: Path) -> None:
    flag = tmp_path / "fail-once"
    flag.write_text("")
    name = make_package(
        f"import pathlib\nflag = pathlib.Path({str(flag)!r})\n"
        "if flag.exists():\n    flag.unlink()\n    raise RuntimeError('first import fails')\nNAME = 1\n"
    )
    defer_package_inits((name,))
    with pytest.raises(RuntimeError, match="first import fails"):
        sys.modules[name].NAME  # noqa: B018
    assert name not in sys.modules, "a failed __init__ leaves sys.modules, as a failed import does"
    assert importlib.import_module(name).NAME == 1


def test_an_init_with_a_getattr_of_its_own_keeps_it(make_package) -> None:
    name = make_package("def __getattr__(attr):\n    return 'lazy ' + attr\n")
    defer_package_inits((name,))
    package = sys.modules[name]
    assert package.anything == "lazy anything"
    assert package.other == "lazy other"


def test_imported_missing_and_plain_modules_are_left_alone(make_package, tmp_path: Path) -> None:
    imported = make_package()
    importlib.import_module(imported)
    (tmp_path / f"plain_{imported}.py").write_text("X = 1\n")
    assert defer_package_inits((imported, f"plain_{imported}", "no_such_package_here", "no_such.child")) == []
    assert importlib.import_module(f"plain_{imported}").X == 1
    assert runs(imported) == [imported, "unbound while running"]


CLASS_PROBE = """
import sys, threading
from triage.startup import defer_module_classes
assert defer_module_classes() == ["rich.markdown", "rich.traceback"]
assert defer_module_classes() == []  # already stood in for
from rich.markdown import Markdown
from rich.traceback import Traceback
hint = Markdown | int  # as in an annotation Typer evaluates: not a use
import typing
stood_in = sys.modules['rich.markdown']
import rich, importlib.util
assert rich.markdown is stood_in and rich.traceback is sys.modules['rich.traceback']  # bound on the package
assert importlib.util.find_spec('rich.markdown').name == 'rich.markdown'
hints = (typing.Optional[Markdown], getattr(Markdown, '__origin__', None), getattr(stood_in, '__path__', None))
import typer.rich_utils  # what `triage --help` renders with
loaded = [name for name in ("rich.markdown", "markdown_it", "rich.traceback", "rich.syntax") if name in sys.modules
          and getattr(sys.modules[name], "__file__", None)]
assert loaded == [], loaded
made, barrier = [], threading.Barrier(4)
def use():
    barrier.wait()
    made.append(Markdown("# Title\\n\\nSome *text*."))
threads = [threading.Thread(target=use) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
import rich.markdown
assert all(type(m) is rich.markdown.Markdown for m in made) and all(isinstance(m, Markdown) for m in made)
assert rich.markdown.__file__ and sys.modules["rich.markdown"] is rich.markdown
assert issubclass(rich.markdown.Markdown, Markdown) and not issubclass(int, Markdown)
from rich.console import Console
import io
console = Console(record=True, width=40, file=io.StringIO())
console.print(made[0])
shown = console.export_text()
assert "Title" in shown and "text" in shown, shown
try:
    raise ValueError("boom")
except ValueError as exc:
    trace = Traceback.from_exception(type(exc), exc, exc.__traceback__)  # an attribute of the class: the real one
assert type(trace).__module__ == "rich.traceback" and "rich.syntax" in sys.modules
print("ok")
"""


def test_deferred_classes_load_their_module_on_first_use_and_behave_as_the_real_ones() -> None:
    """`triage --help` imports neither rich.markdown nor rich.traceback; using either class gets the real one."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", CLASS_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_module_missing_or_imported_is_not_stood_in_for() -> None:
    from triage.startup import defer_module_classes

    assert "json" in sys.modules
    assert (
        defer_module_classes({"json": ("JSONDecoder",), "no_such_module_here": ("X",), "no_such.child": ("Y",)}) == []
    )
    assert not hasattr(sys.modules["json"], "__getattr__")


def test_the_cli_defers_them_before_typer_renders_its_help() -> None:
    """`triage --help` as the console script runs it: the real modules are never imported."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "triage", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "Usage" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert "typer.rich_utils" in imported
    assert imported.isdisjoint({"rich.markdown", "markdown_it", "rich.traceback", "rich.syntax"})


def test_a_failed_import_is_tried_again_and_a_use_during_its_own_import_is_an_error(tmp_path: Path) -> None:
    """A stand-in whose real import fails stays usable (the next use imports again); one its own module's import
    uses, in the same thread, raises ImportError instead of waiting on itself."""
    import subprocess

    package = tmp_path / "standinprobe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flaky.py").write_text(
        "import os\n"
        "if not os.path.exists(os.environ['FLAG']):\n"
        "    open(os.environ['FLAG'], 'w').close()\n"
        "    raise ImportError('the first import fails')\n"
        "class Thing:\n"
        "    made = 'real'\n"
    )
    (package / "helper.py").write_text("from standinprobe.selfish import Thing\ndef use():\n    return Thing()\n")
    (package / "selfish.py").write_text(
        "from standinprobe import helper\nhelper.use()  # its own stand-in, during its import\nclass Thing: ...\n"
    )
    probe = """
import sys
from triage.startup import defer_module_classes
assert defer_module_classes({"standinprobe.flaky": ("Thing",), "standinprobe.selfish": ("Thing",)}) == [
    "standinprobe.flaky", "standinprobe.selfish"]
from standinprobe.flaky import Thing
try:
    Thing.made
except ImportError as exc:
    assert "first import fails" in str(exc)
else:
    raise AssertionError("the first import should fail")
assert Thing.made == "real" and type(Thing()).__module__ == "standinprobe.flaky"
from standinprobe import helper
try:
    helper.use()
except ImportError as exc:
    assert "being imported" in str(exc), exc
else:
    raise AssertionError("a use during its own import should fail")
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["FLAG"] = str(tmp_path / "flag")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


COLLECTOR_PROBE = """
import gc, sys
sys.argv = ["triage", *sys.argv[1:]]
from triage.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write(f"collector enabled: {gc.isenabled()}\\n")
"""


@pytest.mark.parametrize(
    ("args", "enabled"),
    [
        ((), False),  # help
        (("--help",), False),
        (("eval", "--help"), False),
        (("show", "--no-such-option"), False),
        (("eval", "--no-such-option"), True),  # a command that lasts
        (("worker", "serve", "--no-such-option"), True),
        (("serve", "--no-such-option"), True),
        (("train", "--no-such-option"), True),
    ],
)
def test_one_shot_commands_run_without_the_cyclic_collector_and_lasting_ones_keep_it(
    args: tuple[str, ...], enabled: bool
) -> None:
    """The CLI turns the collector off for a command that does one thing and exits (or help), and only then."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", COLLECTOR_PROBE, *args], capture_output=True, text=True, timeout=120)
    assert f"collector enabled: {enabled}" in done.stderr, done.stderr


def test_the_one_shot_commands_are_commands_of_the_cli() -> None:
    """A command renamed or removed cannot linger in the list (and a new one-shot command is added on purpose)."""
    import typer

    from triage.cli import cli
    from triage.startup import ONE_SHOT_COMMANDS

    names = set(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]
    assert names >= ONE_SHOT_COMMANDS
    lasting = {"eval", "serve", "worker", "train", "dev-model-server", "demo", "release", "threads", "sweep", "prune"}
    assert ONE_SHOT_COMMANDS.isdisjoint(lasting)


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector's state as the test found it, whatever the test froze or turned off."""
    import gc

    enabled = gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        (gc.enable if enabled else gc.disable)()


def test_a_set_up_runs_without_the_collector_and_what_it_made_is_frozen(collector: None) -> None:
    import gc

    from triage.startup import set_up_frozen

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    gc.enable()
    seen: list[bool] = []
    dropped: list[weakref.ref[Cycle]] = []

    def set_up() -> list[object]:
        seen.append(gc.isenabled())
        dropped.append(weakref.ref(Cycle()))  # garbage the set-up leaves behind: freed, not frozen
        return [[] for _ in range(100)]

    made = set_up_frozen(set_up)
    assert dropped[0]() is None, "the set-up's own cycles were collected before the freeze"
    assert seen == [False], "the collector is off while the set-up runs"
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.is_tracked(made[0]) and not collectable(made[0]), "frozen: full collections skip it"
    gc.unfreeze()
    assert collectable(made[0]), "unfrozen, what the set-up made is collectable again"


def test_a_failed_set_up_freezes_nothing_and_a_freeze_of_the_callers_own_is_left_alone(collector: None) -> None:
    import gc

    from triage.startup import set_up_frozen

    gc.disable()

    def failing() -> None:
        raise RuntimeError("no policy")

    with pytest.raises(RuntimeError, match="no policy"):
        set_up_frozen(failing)
    assert gc.get_freeze_count() == 0 and not gc.isenabled(), "nothing frozen, the collector left off as it was"
    gc.freeze()
    frozen = gc.get_freeze_count()
    extra = set_up_frozen(lambda: [[] for _ in range(100)])
    assert gc.get_freeze_count() == frozen, "the caller froze first: its freeze stays as it was, nothing added"
    assert collectable(extra[0])
