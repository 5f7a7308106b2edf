"""`triage worker`: a resident process answers `triage run` exactly as the command would have run it itself.

The worker is a real background process started by `triage worker start`; commands reach it from processes of their
own (forked from the CLI zygote, or plain subprocesses) and, for the protocol and the races, from this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import collectable, policy_copy
from tests.integration.zygote import ROOT, triage_cli
from triage.cli import worker as worker_module
from triage.settings import Settings

TICKET = ["--customer-id", "cus_small_dup", "--subject", "Charged twice", "--body", "I was charged twice, refund one."]


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TRIAGE_HOME": str(settings.home), "TRIAGE_CACHE_HOME": str(settings.cache_dir)}
    if settings.policy_dir is not None:
        env["TRIAGE_POLICY_DIR"] = str(settings.policy_dir)
    return {**env, **extra}


def triage(settings: Settings, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    return triage_cli(args, env=env or cli_env(settings), input=stdin, timeout=180)


def start_worker(settings: Settings, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    if "--idle-timeout" not in args:  # a worker a failed test leaves behind goes by itself
        args = (*args, "--idle-timeout", "300")
    started = triage(settings, "worker", "start", "--json", *args, env=env)
    assert started.returncode == 0, started.stderr
    info: dict[str, Any] = json.loads(started.stdout)
    return info


def status(settings: Settings, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    shown = triage(settings, "worker", "status", "--json", env=env)
    assert shown.returncode in (0, 1), shown.stderr
    answer: dict[str, Any] = json.loads(shown.stdout)
    return answer if answer["running"] else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (the worker's parent, the zygote child, is gone, so init reaps it soon) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for line {condition.__code__.co_firstlineno}"
        time.sleep(0.05)


@pytest.fixture
def worker(settings: Settings) -> Iterator[dict[str, Any]]:
    info = start_worker(settings)
    yield info
    triage(settings, "worker", "stop")
    if alive(info["pid"]):
        os.kill(info["pid"], signal.SIGKILL)


def run_request(ticket: dict[str, Any]) -> dict[str, Any]:
    """What `triage run` hands a worker for `ticket` given as options."""
    return {
        "command": "run",
        "ticket": ticket,
        "conversation_id": None,
        "in_reply_to": None,
        "references": None,
        "budget": {},
    }


def normalised(text: str) -> str:
    """Output with what differs between two runs of one ticket (ids, keys, times, durations) masked."""
    text = re.sub(r"\b[a-z]{2,4}_[0-9a-f]{12,}\b", "<id>", text)
    text = re.sub(r"\b[0-9a-f]{64}\b", "<key>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[T ][\d:.]+(\+00:00|Z)?", "<time>", text)
    return re.sub(r'("(wall_seconds|duration_ms|latency_ms|seconds)": )[\d.]+', r"\1<n>", text)


def test_a_run_through_the_worker_prints_what_a_run_of_its_own_prints(
    settings: Settings, worker: dict[str, Any], tmp_path: Path, model_cache: Path
) -> None:
    alone = Settings(home=tmp_path / "alone", cache_home=model_cache)
    for args in (["--json"], []):
        served = triage(settings, "run", *TICKET, *args)
        own = triage(alone, "run", *TICKET, *args)
        assert (served.returncode, own.returncode) == (0, 0), served.stderr + own.stderr
        assert normalised(served.stdout) == normalised(own.stdout)
        assert served.stderr == own.stderr == ""
    answer = status(settings)
    assert answer is not None and (answer["runs"], answer["pid"]) == (2, worker["pid"])
    assert status(alone) is None
    threads = json.loads(triage(settings, "threads", "--json").stdout)
    assert [t["status"] for t in threads] == ["completed", "completed"], "the worker's runs are in the home"


def test_approvals_through_the_worker_print_what_a_process_of_their_own_prints(
    settings: Settings, worker: dict[str, Any], tmp_path: Path, model_cache: Path
) -> None:
    alone = Settings(home=tmp_path / "alone", cache_home=model_cache)
    paused = ["--customer-id", "cus_mid_dup", "--subject", "Charged twice", "--body", "You charged me twice."]
    decisions = [
        ["approve", "THREAD", "--as", "alice", "--amount", "300"],  # refused: above the refund awaiting approval
        ["approve", "THREAD", "--as", "nobody"],  # refused: not an approver
        ["approve", "THREAD", "--as", "mallory", "--amount", "999"],  # refused for who, not for the amount
        ["approve", "THREAD", "--as", "alice", "--amount", "inf"],  # refused by the option, no traceback
        ["approve", "THREAD", "--as", "alice", "--amount", "200", "--reason", "partial"],
        ["approve", "THREAD", "--as", "alice"],  # refused: nothing awaits approval any more
        ["reject", "thr_nonexistent", "--as", "alice", "--reason", "no"],
    ]
    threads = {}
    for home in (settings, alone):
        ran = json.loads(triage(home, "run", *paused, "--json").stdout)
        assert ran["status"] == "awaiting_approval", ran["status_reason"]
        threads[home.home] = ran["thread_id"]
    for decision in decisions:
        for as_json in (["--json"], []):
            outputs, done = [], None
            for home in (settings, alone):
                args = [threads[home.home] if a == "THREAD" else a for a in decision]
                done = triage(home, *args, *as_json)
                outputs.append((done.returncode, normalised(done.stdout), normalised(done.stderr)))
            assert outputs[0] == outputs[1], decision
            assert "Traceback" not in outputs[0][2]
            if "mallory" in decision:
                assert "'mallory' is not an approver" in outputs[0][2] and "above the refund" not in outputs[0][2]
            if decision[-1] == "partial" and as_json:
                assert done is not None and json.loads(done.stdout)["status"] == "completed"
    answer = status(settings)
    # Every decision but the one the option refuses before the command runs went through the worker.
    assert answer is not None and answer["runs"] == 1 + 2 * (len(decisions) - 1)
    ledger = json.loads(triage(settings, "show", threads[settings.home], "--json").stdout)
    refunds = [a for a in ledger["actions"] if a["kind"] == "refund"]
    assert [r["amount_cents"] for r in refunds] == [20000], "the edited refund, once"


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["--customer-id", "cus_nobody", "--body", "hello there"], None),
        ([], '{"body": "unterminated'),
        ([*TICKET, "--budget", "max_bananas=3"], None),
    ],
    ids=["unknown-customer", "bad-json", "bad-budget"],
)
def test_user_errors_come_back_as_the_command_would_have_raised_them(
    settings: Settings, worker: dict[str, Any], tmp_path: Path, model_cache: Path, args: list[str], stdin: str | None
) -> None:
    alone = Settings(home=tmp_path / "alone", cache_home=model_cache)
    for as_json in (["--json"], []):
        served = triage(settings, "run", *args, *as_json, stdin=stdin)
        own = triage(alone, "run", *args, *as_json, stdin=stdin)
        assert (served.returncode, served.stdout, served.stderr) == (2, own.stdout, own.stderr)
        assert own.returncode == 2 and "error:" in own.stderr
    answer = status(settings)
    assert answer is not None and answer["runs"] == 2, "both went through the worker"


def test_a_shell_that_differs_runs_the_ticket_itself_and_status_says_why(
    settings: Settings, worker: dict[str, Any], tmp_path: Path
) -> None:
    other_env = cli_env(settings, TRIAGE_INTAKE_RETRY_SECONDS="31")
    ran = triage(settings, "run", *TICKET, "--json", env=other_env)
    assert ran.returncode == 0 and json.loads(ran.stdout)["status"] == "completed"
    seen = status(settings, env=other_env)
    assert seen is not None and seen["runs"] == 0, "the worker did not run it"
    assert seen["differs"] == ["settings environment (TRIAGE_*, OPENAI_*, LangSmith, proxies)"]
    human = triage(settings, "worker", "status", env=other_env)
    assert "does not answer `triage run`, `approve` or `reject` from this shell" in " ".join(human.stdout.split())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = triage_cli(["worker", "status", "--json"], env=cli_env(settings), cwd=elsewhere)
    assert json.loads(moved.stdout)["differs"] == ["working directory"]
    assert triage_cli(["run", *TICKET], env=cli_env(settings), cwd=elsewhere).returncode == 0
    same = status(settings)
    assert same is not None and (same["runs"], same["differs"]) == (0, [])


def test_a_killed_worker_leaves_nothing_that_stops_the_next_run_or_worker(settings: Settings) -> None:
    first = start_worker(settings)
    socket_path = worker_module.worker_socket(worker_module.home_path(settings.home))
    os.kill(first["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(first["pid"]))
    assert socket_path.exists(), "a SIGKILL leaves the socket file behind"
    ran = triage(settings, "run", *TICKET, "--json")
    assert ran.returncode == 0 and json.loads(ran.stdout)["status"] == "completed"
    assert status(settings) is None
    second = start_worker(settings)
    try:
        assert second["pid"] != first["pid"]
        assert triage(settings, "run", *TICKET, "--json").returncode == 0
        answer = status(settings)
        assert answer is not None and answer["runs"] == 1
        again = start_worker(settings)
        assert again["pid"] == second["pid"], "a second start finds the running worker"
        triage(settings, "worker", "stop")
        racing = [  # two starts at once: one worker, both report it
            subprocess.Popen(
                [sys.executable, "-m", "triage", "worker", "start", "--json"],
                env=cli_env(settings),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outcomes = [process.communicate(timeout=120) for process in racing]
        assert [process.returncode for process in racing] == [0, 0], outcomes
        pids = {json.loads(stdout)["pid"] for stdout, _ in outcomes}
        assert len(pids) == 1
        second = {"pid": pids.pop()}
    finally:
        triage(settings, "worker", "stop")
    assert not socket_path.exists(), "a stopped worker removes its socket"
    wait_until(lambda: not alive(second["pid"]))


def _request(settings: Settings) -> tuple[socket.socket, Any]:
    path = worker_module.worker_socket(worker_module.home_path(settings.home))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(path))
    ticket = {"customer_id": "cus_small_dup", "subject": "Copy", "body": "Please send my last invoice again."}
    request = run_request(ticket)
    message = {"op": "run", "fingerprint": worker_module.fingerprint(), "request": request}
    conn.sendall(json.dumps(message).encode() + b"\n")
    reader = conn.makefile("rb")
    assert json.loads(reader.readline()) == {"accepted": True}
    return conn, reader


def test_the_worker_runs_a_request_only_once_the_command_confirms_it(
    settings: Settings, worker: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cli_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)  # where the zygote's commands (the worker among them) run

    conn, _ = _request(settings)
    conn.close()  # gave up before confirming: the command runs the ticket itself
    time.sleep(0.5)
    answer = status(settings)
    assert answer is not None and (answer["runs"], answer["in_flight"]) == (0, 0)
    assert json.loads(triage(settings, "threads", "--json").stdout) == []

    conn, reader = _request(settings)
    time.sleep(worker_module.ACCEPT_TIMEOUT_S + 0.5)
    with conn:  # confirmed too late: the worker stopped waiting and says nothing, so the command runs it itself
        with contextlib.suppress(BrokenPipeError):  # the worker may have closed before the line arrived
            conn.sendall(b'{"go": true}\n')
        assert reader.readline() == b""
    answer = status(settings)
    assert answer is not None and answer["runs"] == 0

    conn, reader = _request(settings)
    conn.sendall(b'{"go": true}\n')
    assert json.loads(reader.readline()) == {"running": True}
    conn.close()  # confirmed, told it runs, then interrupted: the worker finishes the run
    wait_until(lambda: (status(settings) or {}).get("runs") == 1)
    assert [t["status"] for t in json.loads(triage(settings, "threads", "--json").stdout)] == ["completed"]


def test_a_socket_served_by_another_user_or_in_a_shared_folder_is_never_handed_a_ticket(
    settings: Settings, worker: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in cli_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    ticket = {"customer_id": "cus_small_dup", "subject": "Copy", "body": "Card 4111 1111 1111 1111, send my invoice."}
    request = run_request(ticket)
    monkeypatch.setattr(worker_module.os, "geteuid", lambda: os.getuid() + 1)  # the listener now looks foreign
    assert worker_module.ask_worker(settings.home, request) is None
    monkeypatch.undo()
    answer = status(settings)
    assert answer is not None and answer["runs"] == 0, "the worker was handed nothing"

    shared = tmp_path / "shared"  # a socket folder outside the home that others may enter is not used
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setattr(worker_module, "worker_socket", lambda home: shared / "x.sock")
    with pytest.raises(PermissionError):
        worker_module._connect(tmp_path / "long-home", 1.0)


def test_the_home_a_command_opens_is_the_home_whose_worker_it_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "elsewhere", "~/x"):
        monkeypatch.setenv("TRIAGE_HOME", value)
        assert worker_module.home_path(None) == Settings().home.expanduser().resolve()
    monkeypatch.delenv("TRIAGE_HOME")
    assert worker_module.home_path(None) == Settings().home.resolve()


def test_commands_racing_into_one_worker_each_get_their_own_run(
    settings: Settings, worker: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cli_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    count = 6
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def command(i: int) -> None:
        ticket = {"customer_id": "cus_small_dup", "subject": f"Invoice {i}", "body": "Please send my last invoice."}
        request = run_request(ticket)
        barrier.wait()
        results[i] = worker_module.ask_worker(settings.home, request)

    threads = [threading.Thread(target=command, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(result is not None and result["status"] == "completed" for result in results), results
    assert len({result["thread_id"] for result in results}) == count
    answer = status(settings)
    assert answer is not None and answer["runs"] == count


def test_the_socket_is_private_and_only_this_user_is_answered(
    settings: Settings, worker: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = worker_module.worker_socket(worker_module.home_path(settings.home))
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert worker_module._peer_is_us(left)
        monkeypatch.setattr(worker_module.os, "geteuid", lambda: os.getuid() + 1)
        assert not worker_module._peer_is_us(left), "a peer of another user is refused"


def test_a_changed_policy_folder_is_read_afresh_before_the_next_run(tmp_path: Path, model_cache: Path) -> None:
    policies = policy_copy(tmp_path)
    settings = Settings(home=tmp_path / "home", cache_home=model_cache, policy_dir=policies)
    info = start_worker(settings)
    try:
        first = json.loads(triage(settings, "run", *TICKET, "--json").stdout)
        support = policies / "support.toml"
        support.write_text(support.read_text().replace("min_confidence = 0.8", "min_confidence = 0.9999"))
        second = json.loads(triage(settings, "run", *TICKET, "--json").stdout)
        answer = status(settings)
        assert answer is not None and (answer["runs"], answer["pid"]) == (2, info["pid"])
    finally:
        triage(settings, "worker", "stop")
    assert first["status"] == "completed" and second["status"] == "escalated"
    assert first["policy_version"] != second["policy_version"]
    own = json.loads(triage(settings, "run", *TICKET, "--json").stdout)
    assert (own["status"], own["policy_version"]) == ("escalated", second["policy_version"])
    assert "opened the home afresh" in (settings.home / "worker.log").read_text()


def test_the_worker_freezes_what_it_set_up_and_thaws_it_when_it_opens_the_home_afresh(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full collections skip the app the worker opened first; once a fresh app replaces it, it can be freed."""
    import gc

    policies = policy_copy(tmp_path)
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(model_cache))
    monkeypatch.setenv("TRIAGE_POLICY_DIR", str(policies))
    assert gc.get_freeze_count() == 0
    worker = worker_module._Worker(tmp_path / "home", 0)
    enabled = gc.isenabled()
    try:
        worker.open()
        first = worker.app
        assert gc.isenabled() == enabled and gc.get_freeze_count() > 0
        assert first is not None and gc.is_tracked(first) and not collectable(first), "the first app is frozen"
        worker.checkin(app := worker.checkout())
        assert app is first and not collectable(first), "the same policy: the same app, still frozen"
        support = policies / "support.toml"
        support.write_text(support.read_text().replace("min_confidence = 0.8", "min_confidence = 0.9999"))
        worker.checkin(fresh := worker.checkout())
        assert fresh is not first and gc.get_freeze_count() == 0 and collectable(first)
    finally:
        worker.close()
        gc.unfreeze()


def test_checkouts_racing_a_policy_change_open_the_home_afresh_once_and_the_frozen_app_finishes_its_run(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run in flight on the worker's first (frozen) app while the policy changes and eight requests check out at
    once behind a barrier: one fresh app for all eight, the collector thawed once, the run in flight finishes on
    the app it began on, and that app is closed with its last run, not before."""
    import gc

    policies = policy_copy(tmp_path)
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(model_cache))
    monkeypatch.setenv("TRIAGE_POLICY_DIR", str(policies))
    worker = worker_module._Worker(tmp_path / "home", 0)
    try:
        worker.open()
        first = worker.checkout()  # a run in flight on the frozen app
        support = policies / "support.toml"
        support.write_text(support.read_text().replace("min_confidence = 0.8", "min_confidence = 0.9999"))
        barrier = threading.Barrier(8)
        got: list[Any] = []

        def request() -> None:
            barrier.wait()
            got.append(worker.checkout())

        threads = [threading.Thread(target=request) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(got) == 8 and len({id(app) for app in got}) == 1 and got[0] is not first
        assert gc.get_freeze_count() == 0 and collectable(first)
        ran = first.run({"subject": "Opening hours", "body": "What are your opening hours?"})
        assert ran.status == "completed", "the run in flight finishes on the app it began on"
        for app in got:
            worker.checkin(app)
        assert first._engine is not None, "not closed while its run is in flight"
        worker.checkin(first)
        assert first._engine is None, "closed with its last run"
    finally:
        worker.close()
        gc.unfreeze()


def test_a_policy_that_no_longer_loads_is_reported_as_in_a_process_of_its_own_and_leaks_nothing(
    tmp_path: Path, model_cache: Path
) -> None:
    policies = policy_copy(tmp_path)
    settings = Settings(home=tmp_path / "home", cache_home=model_cache, policy_dir=policies)
    info = start_worker(settings)
    try:
        approvals = policies / "approvals.toml"
        good = approvals.read_text()
        approvals.write_text(good + "\nthis is not toml [\n")
        fds = []
        for _ in range(4):
            served = triage(settings, "run", *TICKET, "--json")
            fds.append(len(os.listdir(f"/proc/{info['pid']}/fd")))
        assert served.returncode == 2 and json.loads(served.stdout)["error"]["type"] == "PolicyFileError"
        assert fds[-1] <= fds[0], f"file descriptors grew with each failed reopen: {fds}"
        approvals.write_text(good)
        assert json.loads(triage(settings, "run", *TICKET, "--json").stdout)["status"] == "completed"
        answer = status(settings)
        assert answer is not None and answer["pid"] == info["pid"]
    finally:
        triage(settings, "worker", "stop")
    approvals.write_text(good + "\nthis is not toml [\n")
    own = triage(settings, "run", *TICKET, "--json")
    assert (own.returncode, json.loads(own.stdout)) == (2, json.loads(served.stdout))


def test_seeded_faults_repeat_run_by_run_through_the_worker(tmp_path: Path, model_cache: Path) -> None:
    served_home = Settings(home=tmp_path / "served", cache_home=model_cache)
    own_home = Settings(home=tmp_path / "own", cache_home=model_cache)
    faults = {"TRIAGE_FAULTS": "transient=0.4,seed=7"}
    start_worker(served_home, env=cli_env(served_home, **faults))
    try:
        for _ in range(3):
            served = triage(served_home, "run", *TICKET, "--json", env=cli_env(served_home, **faults))
            own = triage(own_home, "run", *TICKET, "--json", env=cli_env(own_home, **faults))
            assert normalised(served.stdout) == normalised(own.stdout)
        answer = status(served_home, env=cli_env(served_home, **faults))
        assert answer is not None and answer["runs"] == 3
    finally:
        triage(served_home, "worker", "stop", env=cli_env(served_home, **faults))


def test_a_worker_stops_when_idle_and_when_its_home_is_removed(
    settings: Settings, tmp_path: Path, model_cache: Path
) -> None:
    idle = start_worker(settings, "--idle-timeout", "1")
    wait_until(lambda: not alive(idle["pid"]))
    assert status(settings) is None
    assert "idle for 1 s" in (settings.home / "worker.log").read_text()

    doomed = Settings(home=tmp_path / "doomed", cache_home=model_cache)
    info = start_worker(doomed)
    subprocess.run(["rm", "-rf", str(doomed.home)], check=True)
    wait_until(lambda: not alive(info["pid"]))


def test_a_home_whose_socket_path_is_too_long_uses_a_private_temporary_folder(
    tmp_path: Path, model_cache: Path
) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 5) / "home"
    settings = Settings(home=deep, cache_home=model_cache)
    info = start_worker(settings)
    try:
        path = worker_module.worker_socket(worker_module.home_path(deep))
        assert path.parent != deep and path.exists()
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert triage(settings, "run", *TICKET, "--json").returncode == 0
        answer = status(settings)
        assert answer is not None and (answer["runs"], answer["pid"]) == (1, info["pid"])
    finally:
        triage(settings, "worker", "stop")
    assert not path.exists()

    again = start_worker(settings)  # removing the home stops it, though its socket lives elsewhere
    subprocess.run(["rm", "-rf", str(deep)], check=True)
    wait_until(lambda: not alive(again["pid"]))


def test_a_worker_that_dies_mid_run_is_reported_not_retried(settings: Settings) -> None:
    env = cli_env(settings, TRIAGE_FAULTS="slow=1.0,slow_seconds=3")
    info = start_worker(settings, env=env)
    command = subprocess.Popen(
        [sys.executable, "-m", "triage", "run", *TICKET, "--json"],
        cwd=Path.cwd(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (status(settings, env=env) or {}).get("in_flight") == 1, seconds=60)
        wait_until(lambda: started_threads(settings) == 1, seconds=60)
        os.kill(info["pid"], signal.SIGKILL)
        stdout, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 2
    assert json.loads(stdout)["error"]["type"] == "WorkerError"
    assert "the worker stopped while running the ticket" in stderr
    assert started_threads(settings) == 1, "the ticket ran once, in the worker, and was not run again"


def started_threads(settings: Settings) -> int:
    """Threads with a checkpoint, read straight from the store (opening the app would take its locks)."""
    path = settings.checkpoints_path
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(DISTINCT thread_id) FROM checkpoints").fetchone()[0])
