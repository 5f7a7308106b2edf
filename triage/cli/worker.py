"""`triage worker`: a resident process that answers `triage run`, `approve` and `reject` with the app open.

A `triage run` in a process of its own spends most of its second importing LangGraph, LangChain and LangSmith and
opening the home (BENCHMARKS.md, "`triage run` and the resident worker"). `triage worker start` leaves one process
per home with all of that done. A later `triage run`, `triage approve` or `triage reject` for that home hands the
worker its request over a Unix socket and prints the answer: the same output, errors and exit codes as in a process
of its own.

The worker answers only a command that would have run exactly as it runs: the same installed code and Python, the
same working directory, and the same settings environment (`TRIAGE_*`, `OPENAI_*`, LangSmith/LangChain variables,
proxies and CA bundles; `TRIAGE_HOME` aside: the socket already names the home). When anything differs, or no
worker answers, the command runs in its own process as before; `triage worker status` says what differs. A change
to the policy folder or to the active model (`triage train`) makes the worker open the app afresh before its next
run. The socket is the home's `worker.sock` (a private folder in the temporary directory when that path is too long
for a socket), created mode 0600, and the worker answers only its own user.

A request changes hands in three steps: the worker accepts it, the command confirms, and the worker says it runs
it; it answers the request only once that last line has reached the command, which waits for it without a timer. A
command that got no acceptance in time, or whose confirmation the worker no longer waited for, sees no such line and
answers the request itself; the worker never does. After it, the request is the worker's: an interrupted command
leaves it to finish (`triage worker status` shows it in flight), and a worker that dies mid-run makes the command say
so (`triage threads` or `triage show` tells whether the run started or the decision was applied).
The command also checks that the process listening is its own user's (`SO_PEERCRED`), so another user who took the
socket's name is handed nothing.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triage.cli.common import HomeOption, JsonOption, TriageTyper, cli, err, guard, out, print_json

if TYPE_CHECKING:
    import socket
    import socketserver

    from triage.app import TriageApp

worker_cli = TriageTyper(
    help="A resident process per home that answers `triage run`, `approve` and `reject` without start-up cost.",
    no_args_is_help=True,
)
cli.add_typer(worker_cli, name="worker")

SOCKET_NAME = "worker.sock"
LOCK_NAME = "worker.lock"
LOG_NAME = "worker.log"
ACCEPT_TIMEOUT_S = 5.0
"""How long a command waits for the worker to accept a request before it runs the ticket itself."""
MAX_REQUEST_BYTES = 16 * 1024 * 1024
ENV_PREFIXES = ("TRIAGE_", "OPENAI_", "AZURE_OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_")
ENV_NAMES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "TZ",
    "PYTHONHASHSEED",
)
ENV_IGNORED = ("TRIAGE_HOME",)
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


# -- what a command and a worker must share ------------------------------------------------------------------------


def home_path(home: Path | None) -> Path:
    """The home a command opens, absolute: `--home`, else `$TRIAGE_HOME` as the settings read it, else `./.triage`.

    The settings read an empty `TRIAGE_HOME` as the working directory, where the option takes it for unset.
    """
    if home is None:
        home = Path(os.environ["TRIAGE_HOME"]) if "TRIAGE_HOME" in os.environ else Path(".triage")
    return home.expanduser().resolve()


def worker_socket(home: Path) -> Path:
    """The socket of `home`'s worker: `<home>/worker.sock`, or a private temporary folder's when that is too long."""
    path = home / SOCKET_NAME
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(os.fsencode(home)).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"triage-worker-{os.getuid()}" / f"{digest}.sock"


def fingerprint() -> dict[str, str]:
    """What a worker and a command must share for the worker to answer it: code, Python, directory, settings.

    Each part is a digest, so the settings environment (API keys among it) never crosses the socket.
    """
    env = sorted(
        (name, value)
        for name, value in os.environ.items()
        if (name.startswith(ENV_PREFIXES) or name in ENV_NAMES) and name not in ENV_IGNORED
    )
    return {
        "install": _digest(_install_stamp()),
        "python": _digest([sys.prefix, os.path.realpath(sys.executable), sys.version]),
        "directory": _digest([os.getcwd()]),
        "environment": _digest(env),
    }


def _install_stamp() -> list[Any]:
    """Every file of the installed triage packages, and the site-packages folders, by size and modification time."""
    import importlib.util

    roots: list[str] = []
    for name in ("triage", "triage.graphs", "triage.nodes", "triage.tools", "triage.policies", "triage.evals"):
        spec = importlib.util.find_spec(name)
        roots.extend(spec.submodule_search_locations or [] if spec is not None else [])
    stamp = _files_stamp(roots)
    import sysconfig

    for entry in sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}):
        try:
            stamp.append((entry, os.stat(entry).st_mtime_ns))  # a package installed, removed or upgraded
        except OSError:
            stamp.append((entry, None))
    return stamp


def _files_stamp(roots: list[Any]) -> list[Any]:
    """Each file under `roots` (bytecode caches aside) by folder, name, size and modification time."""
    stamp: list[Any] = []
    for root in roots:
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for file in sorted(files):
                if file.endswith((".pyc", ".pyo")):
                    continue
                try:
                    info = os.stat(os.path.join(folder, file))
                except OSError:  # removed while we looked
                    continue
                stamp.append((folder, file, info.st_size, info.st_mtime_ns))
    return stamp


def _digest(value: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()


def differences(ours: dict[str, str], theirs: dict[str, Any]) -> list[str]:
    """The parts of two fingerprints that differ, in words."""
    words = {
        "install": "installed code",
        "python": "Python environment",
        "directory": "working directory",
        "environment": "settings environment (TRIAGE_*, OPENAI_*, LangSmith, proxies)",
    }
    return [words[part] for part in words if ours.get(part) != theirs.get(part)]


# -- the command's side ----------------------------------------------------------------------------------------------


def ask_worker(home: Path | None, request: dict[str, Any]) -> dict[str, Any] | None:
    """Have `home`'s worker answer a request of `triage run`, `approve` or `reject`; the result as JSON, or None.

    None means the worker did not take it and never will: the command answers it itself. A `TriageError` the worker
    raised comes back as a `ReportedError`; a worker lost after it took the request is a `WorkerError`.
    """
    from triage.errors import ReportedError, WorkerError

    if request["command"] == "decide":
        doing, then = "applying the decision", f"`triage show {request['thread_id']}` shows whether it was applied"
    else:
        doing, then = "running the ticket", "`triage threads` shows whether the run started"
    running = "`triage worker status` shows it in flight; once it is not, " + then.replace("shows", "says", 1)

    try:
        conn = _connect(home_path(home), ACCEPT_TIMEOUT_S)
    except OSError:
        return None
    with conn:
        reader = conn.makefile("rb")
        try:
            _send(conn, {"op": "run", "fingerprint": fingerprint(), "request": request})
            if not _receive(reader).get("accepted"):
                return None
        except (OSError, ValueError):  # no answer in time, refused, or gone: the worker will not run it
            return None
        conn.settimeout(None)  # from here on the worker decides, so the command never gives up on a timer
        try:
            try:
                _send(conn, {"go": True})
                if not _receive(reader).get("running"):
                    return None
            except (OSError, ValueError):  # the worker closed before saying it runs the ticket: it never will
                return None
            try:
                answer = _receive(reader)
            except (OSError, ValueError):
                answer = {}
        except KeyboardInterrupt:
            err.print(f"[bold]interrupted:[/] the worker may go on {doing}; {running}", highlight=False)
            raise typer.Exit(130) from None
    if "result" in answer:
        return dict(answer["result"])
    if "error" in answer:
        raise ReportedError(str(answer["error"]["type"]), str(answer["error"]["message"]))
    log = home_path(home) / LOG_NAME
    if "crash" in answer:
        raise WorkerError(f"the worker failed {doing} ({answer['crash']}); its log is {log}")
    raise WorkerError(
        f"the worker stopped while {doing}; {then} (recover it only then), and {log} may say why it stopped"
    )


def ping(home: Path, timeout: float = ACCEPT_TIMEOUT_S) -> dict[str, Any] | None:
    """What `home`'s worker says of itself, or None when no worker answers."""
    return _ask_once(home, {"op": "ping", "fingerprint": fingerprint()}, timeout)


def _ask_once(home: Path, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    try:
        with _connect(home, timeout) as conn:
            _send(conn, message)
            return _receive(conn.makefile("rb"))
    except (OSError, ValueError):
        return None


def _connect(home: Path, timeout: float) -> socket.socket:
    """A connection to `home`'s worker; OSError when there is none, or the one listening is not this user's."""
    import socket

    path = worker_socket(home)
    if path.parent != home:
        _check_private_folder(path.parent)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(str(path))
        if not _peer_is_us(conn):  # another user's process took the socket's name: hand it nothing
            raise PermissionError(f"{path} is served by another user")
    except OSError:
        conn.close()
        raise
    return conn


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _receive(reader: Any) -> dict[str, Any]:
    line = reader.readline(MAX_REQUEST_BYTES + 1)
    if not line.endswith(b"\n"):
        raise ValueError("no complete message")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message


# -- the worker's side -----------------------------------------------------------------------------------------------


class _Worker:
    """One home's open app, swapped for a fresh one when the policy folder or the active model changes."""

    def __init__(self, home: Path, idle_timeout: float) -> None:
        import threading

        self.home = home
        self.idle_timeout = idle_timeout
        self.fingerprint = fingerprint()
        self.lock = threading.Lock()
        self.app: TriageApp | None = None
        self.stamp: list[Any] = []
        self.users: dict[int, int] = {}
        """Runs in flight on each app (by `id`): an app no longer current closes when its count reaches 0."""
        self.runs = 0
        self.started = time.time()
        self.last_active = time.monotonic()
        self.stopping = threading.Event()

    def open(self) -> None:
        """Open the app and load the classifier (first start in a home trains it); what that made is frozen.

        It lives as long as the worker, and full collections skip it from then on (`set_up_frozen`).
        """
        from triage.startup import set_up_frozen

        self.app, self.stamp = set_up_frozen(self._fresh_app)
        self.last_active = time.monotonic()  # the idle clock starts once the worker can serve

    def _fresh_app(self) -> tuple[TriageApp, list[Any]]:
        from triage.app import TriageApp

        app = TriageApp.open(self.home)
        try:
            stamp = _home_stamp(app)
            app.warm_up()
        except BaseException:
            app.close()
            raise
        return app, stamp

    def checkout(self) -> TriageApp:
        """The app to run the next request on, opened afresh when needed.

        Afresh when the home's policy or model changed, and for every run while faults are injected (a seeded fault
        plan then repeats run by run, as in a process per run).

        Raises:
            TriageError: the fresh app cannot be opened (a policy file that no longer loads); the current app stays.
        """
        with self.lock:
            assert self.app is not None
            settings = self.app.settings
            changed = _home_stamp(self.app) != self.stamp
            if changed or settings.faults or settings.checkpoint_faults:
                old = self.app
                self.app, self.stamp = self._fresh_app()
                gc.unfreeze()  # the app opened first was frozen (`open`): its cycles are freed once it is dropped
                if changed:
                    print(f"triage worker: policy or model changed; opened the home afresh ({_now()})", file=sys.stderr)
                if not self.users.get(id(old)):
                    old.close()
            app = self.app
            self.users[id(app)] = self.users.get(id(app), 0) + 1
            return app

    def checkin(self, app: TriageApp) -> None:
        """Give back an app from `checkout`; an app no longer current closes with its last run."""
        with self.lock:
            self.users[id(app)] -= 1
            self.runs += 1
            self.last_active = time.monotonic()
            retired = app is not self.app and not self.users[id(app)]
            if not self.users[id(app)]:
                del self.users[id(app)]
        if retired:
            app.close()

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (`triage run`, `approve`, `reject`): a result, a user error, or a crash."""
        from triage.cli import answer_request
        from triage.errors import TriageError

        app = None
        try:
            app = self.checkout()
            result = answer_request(app, request)
        except TriageError as exc:
            return {"error": {"type": type(exc).__name__, "message": str(exc)}}
        except Exception as exc:  # a bug: logged in full, reported in a line
            import traceback

            traceback.print_exc(file=sys.stderr)
            return {"crash": f"{type(exc).__name__}: {exc}"}
        finally:
            if app is not None:
                self.checkin(app)
        return {"result": result.model_dump(mode="json")}

    @property
    def in_flight(self) -> int:
        """Runs in flight, on every app."""
        with self.lock:
            return sum(self.users.values())

    def idle_for(self) -> float:
        """Seconds since the last run finished (or the worker started)."""
        return time.monotonic() - self.last_active

    def describe(self, theirs: dict[str, Any]) -> dict[str, Any]:
        """What `triage worker status` shows, and how the asking command's fingerprint differs from ours."""
        return {
            "pid": os.getpid(),
            "home": str(self.home),
            "socket": str(worker_socket(self.home)),
            "started_at": self.started,
            "runs": self.runs,
            "in_flight": self.in_flight,
            "idle_timeout_s": self.idle_timeout,
            "differs": differences(self.fingerprint, theirs),
        }

    def close(self) -> None:
        if self.app is not None:
            self.app.close()


def _home_stamp(app: TriageApp) -> list[Any]:
    """The policy folder (when the settings name one) and the models folder's files, by size and time."""
    settings = app.settings
    return _files_stamp([root for root in (settings.policy_dir, settings.models_dir) if root is not None])


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _peer_is_us(conn: socket.socket) -> bool:
    """Whether the process at the other end runs as this user (Linux `SO_PEERCRED`; elsewhere the 0600 socket)."""
    import socket

    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    import struct

    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return bool(uid == os.geteuid())


def _handler_class() -> type[socketserver.StreamRequestHandler]:
    import socketserver

    class Handler(socketserver.StreamRequestHandler):
        server: Any

        def handle(self) -> None:
            worker: _Worker = self.server.worker
            if not _peer_is_us(self.connection):
                return
            self.connection.settimeout(ACCEPT_TIMEOUT_S)
            try:
                message = _receive(self.rfile)
            except (OSError, ValueError):
                return
            op = message.get("op")
            theirs = message.get("fingerprint") or {}
            if op == "ping":
                self._reply(worker.describe(theirs))
            elif op == "stop":
                self._reply({"stopping": True, "pid": os.getpid()})
                self.server.stop("asked to stop")
            elif op == "run":
                self._run(worker, message, theirs)

        def _run(self, worker: _Worker, message: dict[str, Any], theirs: dict[str, Any]) -> None:
            differs = differences(worker.fingerprint, theirs)
            if differs or worker.stopping.is_set() or not isinstance(message.get("request"), dict):
                self._reply({"accepted": False, "differs": differs})
                return
            try:
                _send(self.connection, {"accepted": True})
                if not _receive(self.rfile).get("go"):
                    return
                # Run only once the command surely knows it is ours: it waits for this line without a timer, and a
                # command that went away makes the send fail (a Unix socket refuses a write to a closed peer).
                _send(self.connection, {"running": True})
            except (OSError, ValueError):  # the command gave up first and runs the ticket itself
                return
            self.connection.settimeout(None)
            self._reply(worker.run(message["request"]))

        def _reply(self, message: dict[str, Any]) -> None:
            with contextlib.suppress(OSError):  # the command went away; a run it committed to has finished regardless
                _send(self.connection, message)

    return Handler


def serve_worker(home: Path, idle_timeout: float) -> None:
    """Serve `home` in this process until stopped, idle for `idle_timeout` seconds (0: never), or the socket goes."""
    import fcntl
    import signal
    import socketserver
    import threading

    from triage.errors import WorkerError

    home.mkdir(parents=True, exist_ok=True)
    path = worker_socket(home)
    if path.parent != home:
        _private_folder(path.parent)
    lock = os.fdopen(os.open(home / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")  # held for life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise WorkerError(f"a worker already serves {home}: `triage worker stop --home {home}` stops it") from None
    worker = _Worker(home, idle_timeout)
    try:
        worker.open()
        path.unlink(missing_ok=True)  # a socket left by a worker that was killed: we hold the lock now

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = False
            block_on_close = True  # closing waits for the runs in flight

            def stop(self, why: str) -> None:
                if not worker.stopping.is_set():
                    worker.stopping.set()
                    print(f"triage worker: stopping: {why} ({_now()})", file=sys.stderr)
                    threading.Thread(target=self.shutdown, daemon=True).start()

        umask = os.umask(0o177)  # the socket file is born 0600
        try:
            server = Server(str(path), _handler_class())
        finally:
            os.umask(umask)
        server.worker = worker  # type: ignore[attr-defined]
        inode = path.stat().st_ino
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: server.stop("signalled"))
        held = os.fstat(lock.fileno()).st_ino
        threading.Thread(target=_watch, args=(server, worker, path, inode, held), daemon=True).start()
        print(f"triage worker: pid {os.getpid()} serves {home} on {path} ({_now()})", file=sys.stderr, flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
            try:
                if path.stat().st_ino == inode:
                    path.unlink()
            except OSError:
                pass
    finally:
        worker.close()
        lock.close()
    print(f"triage worker: stopped after {worker.runs} runs ({_now()})", file=sys.stderr, flush=True)


def _watch(server: Any, worker: _Worker, path: Path, inode: int, lock_inode: int) -> None:
    """Stop the worker once it has been idle too long, or once its socket or its home's lock file is gone.

    A gone lock file means the home was removed or replaced: runs would go to stores no one else sees.
    """
    while not worker.stopping.wait(0.5):
        try:
            gone = path.stat().st_ino != inode or (worker.home / LOCK_NAME).stat().st_ino != lock_inode
        except OSError:
            gone = True
        if gone:
            server.stop("its socket or its home was removed")
        elif worker.idle_timeout and not worker.in_flight and worker.idle_for() > worker.idle_timeout:
            server.stop(f"idle for {worker.idle_timeout:g} s")


def _private_folder(folder: Path) -> None:
    """Create `folder` for this user only, or refuse one another user could reach into."""
    from triage.errors import WorkerError

    folder.mkdir(mode=0o700, exist_ok=True)
    try:
        _check_private_folder(folder)
    except PermissionError:
        raise WorkerError(
            f"{folder} is not a private folder of this user; remove it or use a shorter --home path"
        ) from None


def _check_private_folder(folder: Path) -> None:
    """PermissionError unless `folder` is a real folder (not a link) of this user that no one else can enter."""
    import stat

    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} is not a private folder of this user")


# -- commands ----------------------------------------------------------------------------------------------------


IdleOption = Annotated[float, typer.Option(min=0, help="Stop after this many seconds without a request (0: never).")]


@worker_cli.command("start")
def start(home: HomeOption = None, idle_timeout: IdleOption = 1800.0, as_json: JsonOption = False) -> None:
    """Start a worker for the home in the background; `triage run`, `approve`, `reject` from this shell use it."""
    import subprocess

    from triage.errors import WorkerError

    where = home_path(home)
    running = ping(where)
    if running is not None:
        _report(running, as_json, lead="already running")
        return

    def launch() -> dict[str, Any]:
        where.mkdir(parents=True, exist_ok=True)
        log_path = where / LOG_NAME
        command = [sys.executable, "-P", "-m", "triage", "worker", "serve", "--home", str(where)]
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            process = subprocess.Popen(
                [*command, "--idle-timeout", str(idle_timeout)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # not stopped by the shell's Ctrl-C or hang-up
                # -P: the working directory is not put on sys.path, so a `triage` folder there is not imported
            )
        began = time.monotonic()
        told = began
        while True:
            answer = ping(where, timeout=1.0)
            if answer is not None:
                return answer
            if process.poll() is not None and not _holds_lock(where):  # (held: it lost to another start's worker)
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise WorkerError(f"the worker exited ({process.returncode}) before serving: {' | '.join(tail)}")
            if time.monotonic() - told >= 5:
                told = time.monotonic()
                err.print(f"starting the worker: opening the home and loading the classifier ({told - began:.0f} s)")
            time.sleep(0.1)

    _report(guard(launch, as_json=as_json), as_json, lead="started")


@worker_cli.command("serve")
def serve(home: HomeOption = None, idle_timeout: IdleOption = 1800.0) -> None:
    """Serve the home in the foreground (for a supervisor); `start` runs this in the background."""
    where = home_path(home)
    guard(lambda: serve_worker(where, idle_timeout))


@worker_cli.command("status")
def status(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Whether a worker serves the home, and whether it answers this shell's commands (exit 1 if none)."""
    answer = ping(home_path(home))
    if answer is None:
        if as_json:
            print_json({"running": False, "home": str(home_path(home))})
        else:
            out.print(f"no worker serves {home_path(home)}", highlight=False)
        raise typer.Exit(1)
    _report(answer, as_json, lead="running")


@worker_cli.command("stop")
def stop(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Stop the home's worker once its runs in flight finish."""
    where = home_path(home)
    answer = _ask_once(where, {"op": "stop"}, ACCEPT_TIMEOUT_S)
    if answer is None:
        if as_json:
            print_json({"stopped": False, "home": str(where)})
        else:
            out.print(f"no worker serves {where}", highlight=False)
        return
    waited = time.monotonic()
    while _holds_lock(where):
        if time.monotonic() - waited > 5:
            err.print("waiting for the worker's runs in flight to finish")
            waited = time.monotonic()
        time.sleep(0.05)
    if as_json:
        print_json({"stopped": True, "pid": answer.get("pid"), "home": str(where)})
    else:
        out.print(f"stopped the worker (pid {answer.get('pid')}) of {where}", highlight=False)


def _holds_lock(home: Path) -> bool:
    """Whether a worker process still holds `home`'s worker lock (it releases it as it exits, however it exits)."""
    import fcntl

    try:
        fd = os.open(home / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _report(answer: dict[str, Any], as_json: bool, *, lead: str) -> None:
    if as_json:
        print_json({"running": True, **answer})
        return
    since = time.strftime("%H:%M:%S", time.localtime(answer["started_at"]))
    idle = f"stops after {answer['idle_timeout_s']:g} s idle" if answer["idle_timeout_s"] else "never stops when idle"
    out.print(
        f"{lead}: worker pid {answer['pid']} serves {answer['home']} since {since} "
        f"({answer['runs']} runs, {answer['in_flight']} running; {idle})",
        highlight=False,
    )
    if answer["differs"]:
        out.print(
            "it does not answer `triage run`, `approve` or `reject` from this shell: it has another "
            f"{' and '.join(answer['differs'])}; "
            "`triage worker stop` and start it from here",
            highlight=False,
        )
    else:
        out.print("`triage run`, `approve` and `reject` from this shell use it", highlight=False)
