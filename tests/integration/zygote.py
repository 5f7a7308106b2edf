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

import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

READY = "zygote ready"


ROOT = Path(__file__).resolve().parents[2]


def serve(run: Callable[[list[str]], None]) -> None:
    """The zygote's side: answer `fork` and `reap` lines from stdin until it closes (see the module docstring)."""
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
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
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
