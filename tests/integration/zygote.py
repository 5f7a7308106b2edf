"""A zygote: a process that imports triage once and forks a fresh child for each run a test asks for.

Tests that start many short processes (and SIGKILL them) then pay Python's and triage's start-up (1.5-2 s of CPU
each) once per module instead of once per process. A child is still a process of its own with nothing opened: the
zygote only imports (no thread runs in it, so forking is safe), and what a child does (stores opened, methods
patched, a SIGKILL) never reaches the zygote or the next child.

Protocol on the zygote's stdin/stdout, one line each: `fork OUT ERR ARG...` forks a child that runs `run(ARGS)`
with its stdout in OUT and its stderr in ERR, and answers the child's pid; `reap PID SECONDS` waits for it and
answers its exit code (negative for a signal, as `subprocess` gives it), or `timeout` for a child still running
after SECONDS (which is then SIGKILLed).
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

READY = "zygote ready"


ROOT = Path(__file__).resolve().parents[2]


def serve(run: Callable[[list[str]], None]) -> None:
    """The zygote's side: answer `fork` and `reap` lines from stdin until it closes (see the module docstring)."""
    from triage.startup import defer_module_classes, defer_package_inits

    defer_package_inits()  # as the CLI's `main` does
    defer_module_classes()
    import triage.graphs.support
    import triage.services  # noqa: F401  (what every run opens, imported once here)

    print(READY, flush=True)
    for line in sys.stdin:
        command, *args = shlex.split(line)
        if command == "fork":
            out, err, *argv = args
            pid = os.fork()
            if pid == 0:
                _child(run, out, err, argv)
            print(pid, flush=True)
        elif command == "reap":
            print(_reap(int(args[0]), float(args[1])), flush=True)


def _child(run: Callable[[list[str]], None], out: str, err: str, argv: list[str]) -> None:
    """Run in the forked child: stdout and stderr (the file descriptors too) to their files, then `run(argv)`."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin.close()
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        run(argv)
        code = 0
    except SystemExit as exc:  # what the interpreter makes of `sys.exit(...)`
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()  # what an interpreter's exit runs (logging's flush among them)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(pid: int, seconds: float) -> str:
    """The child's exit code; `timeout` if it was still running after `seconds` (it is then SIGKILLed and reaped)."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return str(os.waitstatus_to_exitcode(status))
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.005)


class Zygote:
    """The tests' side: start `python -m MODULE zygote ARG...` (a module whose `zygote` mode calls `serve`) from the
    project's folder, and ask it for children."""

    def __init__(self, module: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "zygote", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        ready = self._ask(None)
        assert ready == READY, f"the zygote did not start: {ready!r}"

    def _ask(self, line: str | None) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        if line is not None:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def fork(self, out: Path, err: Path, args: Sequence[str]) -> int:
        """Start a child running the script's `run(args)`; its pid."""
        return int(self._ask(shlex.join(["fork", str(out), str(err), *args])))

    def reap(self, pid: int, timeout: float = 120) -> int:
        """Wait for a child; its exit code, -9 for a SIGKILL.

        Raises:
            subprocess.TimeoutExpired: the child still ran after `timeout` seconds (it was SIGKILLed), as
                `subprocess.run` raises it: a hang is never taken for a planned kill.
        """
        answer = self._ask(f"reap {pid} {timeout}")
        if answer == "timeout":
            raise subprocess.TimeoutExpired(f"zygote child {pid}", timeout)
        return int(answer)

    def run(self, folder: Path, args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Fork a child for `args`, wait for it and return what `subprocess.run` would: exit code, stdout, stderr."""
        folder.mkdir(parents=True, exist_ok=True)
        number = len(list(folder.glob("*.out")))
        out, err = folder / f"{number}.out", folder / f"{number}.err"
        code = self.reap(self.fork(out, err, args), timeout)
        return subprocess.CompletedProcess(list(args), code, out.read_text(), err.read_text())

    def close(self) -> None:
        """Stop the zygote (its children have all been reaped)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()


_cli: Zygote | None = None


def triage_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    input: str | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m triage ARGS` as `subprocess.run(..., env=env, input=input, capture_output=True, text=True)` runs
    it, in a process forked from a zygote that imported the CLI once: the command's own environment, folder and
    stdin, its exit code, stdout and stderr."""
    global _cli
    if _cli is None:
        _cli = Zygote("tests.integration.zygote")
        atexit.register(_cli.close)
    folder = Path(tempfile.mkdtemp(prefix="triage-cli-"))
    try:
        (folder / "env.json").write_text(json.dumps(dict(env)))
        (folder / "stdin").write_text(input or "")
        setup = [str(folder / "env.json"), str(cwd or Path.cwd()), str(folder / "stdin")]
        done = _cli.run(folder, [*setup, *args], timeout=timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return subprocess.CompletedProcess(
        [sys.executable, "-m", "triage", *args], done.returncode, done.stdout, done.stderr
    )


def _triage_command(argv: list[str]) -> None:
    """In a forked child: take the command's environment, folder and stdin, then run the CLI as `python -m triage`."""
    env_file, cwd, stdin_file, *args = argv
    os.environ.clear()
    os.environ.update(json.loads(Path(env_file).read_text()))
    os.chdir(cwd)
    stdin = os.open(stdin_file, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    import triage

    sys.argv = [str(Path(triage.__file__).with_name("__main__.py")), *args]
    sys.modules["__main__"].__package__ = "triage"  # so the CLI names itself `python -m triage`, as it would
    from triage.cli import main

    main()


if __name__ == "__main__" and sys.argv[1:] == ["zygote"]:
    import triage.cli  # noqa: F401  (the CLI and what its commands import, once)

    serve(_triage_command)
