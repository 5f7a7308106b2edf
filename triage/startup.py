"""Process start-up: package initialisers a triage process skips until a name from them is used.

Two packages that every run imports only for a submodule run a heavy `__init__` first:

- `langgraph.runtime` imports `langgraph_sdk.auth.types` (a protocol for a type hint). That runs
  `langgraph_sdk/__init__.py`, which imports the SDK's HTTP clients (httpx and every API module).
- `langsmith.run_trees` (which LangChain's tracers, and so LangGraph, import) imports
  `langsmith.types.run_select_field`, a `Literal`. That runs `langsmith/types/__init__.py`, which builds the
  pydantic models of about 180 API modules.

A run uses neither initialiser: together they were about 0.3 s of the 1.5-1.75 s that `triage run` took
(BENCHMARKS.md, seventh round). `defer_package_inits` registers each package as a module whose submodules import
as usual and whose `__init__` runs, once and under a lock, the first time anything reads a name the submodules
did not bind (`from langgraph_sdk import get_client`, `langsmith.types.Run`, `dir()` does not count). Whoever
uses them gets what they would have got; only when the package's `__init__` runs moves.

The CLI and the eval's worker processes call it before they import LangGraph. A library does not rearrange
another's imports behind its users' backs, so importing `triage` does not; a program embedding triage may call
it first thing.

The CLI also defers two modules that Typer's help renderer imports for one class each (`defer_module_classes`):
`rich.markdown` (with `markdown_it`) for help written in Markdown, which triage's is not, and `rich.traceback` (with
`rich.syntax` and pygments) for pretty tracebacks, which triage turns off. They were about 70 ms of the 0.2-0.3 s
that `triage --help` took (BENCHMARKS.md, eleventh round).

And a command that does one thing and exits (`triage run`, `approve`, `show`, help...) runs without Python's cyclic
garbage collector (`pause_collector`). Start-up makes about 160,000 objects that live until the process ends
(modules, classes, pydantic schemas, the graph, the classifier), and the collector went through them again and
again as they came: 0.16 s of the imports, and 0.3-0.4 s of the 2.4-2.7 s that `triage run` took on a slow
machine (BENCHMARKS.md, twenty-third round). Such a command leaves few cycles, and they go when it exits.
Commands that last (the worker, the servers, the eval, training) keep the collector. The worker freezes what its
set-up made (`set_up_frozen`): a full collection then goes through what each run leaves, not the whole process.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import threading
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

DEFERRED_PACKAGES = ("langgraph_sdk", "langsmith.types")
"""Packages whose `__init__` a triage process runs only when a name from it is read."""
DEFERRED_CLASSES: dict[str, tuple[str, ...]] = {"rich.markdown": ("Markdown",), "rich.traceback": ("Traceback",)}
"""Modules the CLI imports only when one of these classes is used (called, or an attribute of it read)."""
ONE_SHOT_COMMANDS = frozenset(
    [
        "run",
        "show",
        "customers",
        "approvals",
        "approve",
        "reject",
        "recover",
        "relabel",
        "doctor",
        "policy",
    ]
)
"""CLI commands that do one thing and exit: they run without the cyclic garbage collector (`pause_collector`).

Each works on one ticket or thread, or reads a bounded list. `threads --status` and `sweep` go through every
thread or overdue approval of a home, however many: they keep the collector."""


def pause_collector(args: list[str]) -> bool:
    """Turn Python's cyclic garbage collector off for a one-shot command's process; whether it was turned off.

    `args` are the CLI's arguments (`sys.argv[1:]`). One-shot means a command of `ONE_SHOT_COMMANDS`, or help (no
    arguments, or `--help` among them). Anything else, a command that lasts above all, keeps the collector.
    """
    one_shot = not args or "--help" in args or args[0] in ONE_SHOT_COMMANDS
    if one_shot:
        gc.disable()
    return one_shot


def set_up_frozen(set_up: Callable[[], T], *, collect: bool = True) -> T:
    """`set_up()` with the cyclic collector off, then what exists frozen (`gc.freeze`) and the collector as it was.

    For a process that sets up once and then serves for long (the worker, the eval's worker processes). What the
    set-up makes lives as long as the process; once frozen, full collections skip it. A full collection in a worker
    that had run 200 tickets took 68-95 ms, every run in flight waiting; 2.5-3.6 ms with the set-up frozen
    (BENCHMARKS.md, twenty-fifth round). With `collect`, one full collection comes first (about 0.1 s, once), so
    that the cycles the set-up left behind (about 1,000 after an app's warm-up) are freed rather than frozen for the
    life of the process; an eval's worker process, gone when the eval ends, skips it. Nothing is frozen when
    `set_up` raises (what it made is garbage then), nor when something is frozen already: a caller's own freeze is
    left as it is. Call `gc.unfreeze()` before dropping what was set up (a worker's app replaced by a fresh one), or
    its cycles are never freed.
    """
    enabled, freezing = gc.isenabled(), gc.get_freeze_count() == 0
    gc.disable()
    try:
        made = set_up()
    except BaseException:
        if enabled:
            gc.enable()
        raise
    if freezing:
        if collect:
            gc.collect()
        gc.freeze()
    if enabled:
        gc.enable()
    return made


def defer_package_inits(packages: tuple[str, ...] = DEFERRED_PACKAGES) -> list[str]:
    """Defer the `__init__` of each package not imported yet; returns the names deferred.

    A package already imported, not installed, or not a package (a plain module has no submodules to import
    without it) is left as it is.
    """
    deferred = []
    for name in packages:
        spec = _not_imported_yet(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__getattr__"] = _DeferredInit(module, spec)
        _install(name, module)
        deferred.append(name)
    return deferred


def _not_imported_yet(name: str) -> ModuleSpec | None:
    """The spec of module `name` when it is installed and not imported yet, else None (its package is imported)."""
    if name in sys.modules:
        return None
    try:
        return importlib.util.find_spec(name)
    except ImportError:  # its parent package is missing
        return None


def _install(name: str, module: ModuleType) -> None:
    """Put `module` in `sys.modules` as `name`, bound on its package as an import binds it."""
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:  # imported by `find_spec`; the real import binds the real module over this
        setattr(sys.modules[parent], child, module)


class _DeferredInit:
    """A deferred package's module `__getattr__` (PEP 562): runs the package's `__init__`, then answers."""

    def __init__(self, module: ModuleType, spec: ModuleSpec) -> None:
        self.module = module
        self.spec = spec
        self.lock = threading.RLock()
        self.running = False
        self.done = False

    def __call__(self, attr: str) -> Any:
        with self.lock:
            if self.running:  # the `__init__`, running in this thread, reads a name it has not bound yet
                raise AttributeError(f"partially initialized module {self.spec.name!r} has no attribute {attr!r}")
            if not self.done:
                self._run_init()
        return getattr(self.module, attr)

    def _run_init(self) -> None:
        assert self.spec.loader is not None
        self.running = True
        try:
            self.spec.loader.exec_module(self.module)
        except BaseException:
            # As a failed import: the module leaves `sys.modules`, and the next import starts again.
            sys.modules.pop(self.spec.name, None)
            raise
        finally:
            self.running = False
        self.done = True
        if self.module.__dict__.get("__getattr__") is self:  # the `__init__` did not define one of its own
            del self.module.__dict__["__getattr__"]


def defer_module_classes(deferred: dict[str, tuple[str, ...]] = DEFERRED_CLASSES) -> list[str]:
    """Stand in for each module not imported yet until one of its `classes` is used; returns the modules deferred.

    `from module import Class` (or `import module`, bound on its package as usual) then gets a stand-in. Calling a
    stand-in class, reading an attribute of it, or checking an instance or a class against it imports the real
    module (once, under a lock) and does that on the real class; so does reading any other name of the module,
    and importing the module by name afterwards gives the real one. Stand-in classes are not for subclassing. A
    module already imported or not installed is left as it is.
    """
    done = []
    for name, classes in deferred.items():
        spec = _not_imported_yet(name)
        if spec is None:
            continue
        stand_in = ModuleType(name, f"Stands in for {name} until one of its classes is used (triage.startup).")
        stand_in.__spec__ = spec  # `find_spec` and friends answer as for the real module
        real = _RealModule(name, stand_in)
        for class_name in classes:
            namespace = {"_real_module": real, "__module__": name, "__qualname__": class_name}
            setattr(stand_in, class_name, _Forwarded(class_name, (), namespace))
        stand_in.__dict__["__getattr__"] = real.getattr
        _install(name, stand_in)
        done.append(name)
    return done


class _RealModule:
    """Imports a deferred module for real, the first time it is needed."""

    def __init__(self, name: str, stand_in: ModuleType) -> None:
        self.name = name
        self.stand_in = stand_in
        self.module: ModuleType | None = None
        self.lock = threading.RLock()
        self.loading = False

    def getattr(self, attr: str) -> Any:
        """The stand-in module's `__getattr__`: another name of the module is read from the real one."""
        if _dunder(attr):  # the import system and `typing` probe these: not a use of the module
            raise AttributeError(attr)
        return getattr(self.load(), attr)

    def load(self) -> ModuleType:
        """The real module, imported now if it was not; a failed import leaves the next use to try again."""
        with self.lock:
            if self.module is None:
                if self.loading:  # its own import, in this thread, used a stand-in: an error, not a hang
                    raise ImportError(f"{self.name} used while it is being imported (a stand-in of triage.startup)")
                if sys.modules.get(self.name) is self.stand_in:
                    del sys.modules[self.name]
                self.loading = True
                try:
                    self.module = importlib.import_module(self.name)
                finally:
                    self.loading = False
            return self.module


class _Forwarded(type):
    """The metaclass of a stand-in class: calls, attributes, instance and subclass checks go to the real class."""

    _real_module: _RealModule

    def _real(cls) -> Any:
        return getattr(cls._real_module.load(), cls.__name__)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        if _dunder(attr):  # probed by `typing` when the class is in an annotation: not a use of the class
            raise AttributeError(attr)
        return getattr(cls._real(), attr)

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, cls._real())

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls._real())


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")
