"""Real gunicorn with the gevent worker class: every worker monitored, the master quiet."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Set

import pytest

from .brokers import free_port, require_program, wait_for_port
from .helpers import REPO, clean_environ, read_jsonl
from .reliability._record import observed

BIN = os.path.dirname(sys.executable)


class Gunicorn:
    """A gunicorn master started for one test; stopped with SIGTERM."""

    def __init__(self, argv: List[str], env: Dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([*argv[:-1], "--bind", f"127.0.0.1:{self.port}", argv[-1]], env=env, cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_port("127.0.0.1", self.port, timeout=20)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=20) as response:
            return bytes(response.read())

    def workers(self, want: int, timeout: float = 20) -> Set[int]:
        """The master's child processes, once *want* of them run an agent (named ma:… threads)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = _children(self.proc.pid)
            if len(pids) >= want and all(_agent_threads(p) == AGENT_THREADS for p in pids):
                return pids
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {pids} of {self.proc.pid} did not all start an agent")
            time.sleep(0.1)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out


@pytest.fixture
def gunicorn_cmd() -> List[str]:
    require_program(os.path.join(BIN, "gunicorn"))
    return [os.path.join(BIN, "gunicorn"), "-k", "gevent", "-w", "2"]


def _children(pid: int) -> Set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return children


def _agent_threads(pid: int) -> Set[str]:
    """The names of the agent's native threads in process *pid* (they are named ma:…; faulthandler's
    timer thread inherits the name of the watchdog that arms it)."""
    names = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.add(f.read().strip())
        except OSError:
            pass
    return {n for n in names if n.startswith("ma:")}


AGENT_THREADS = {"ma:jsonl", "ma:periodic", "ma:watchdog"}


def _check_episodes(events: List[dict], worker_pids: Set[int], requests: int, seconds: float) -> None:
    """One blocked + one unblocked event naming the view for each slow request.

    Only the slow view's episodes are counted exactly: on a loaded machine a worker
    that gets no CPU for 100 ms really is stalled, and reporting that is right.
    """
    assert {e["event"] for e in events} <= {"gevent.event_loop_blocked", "gevent.event_loop_unblocked"}
    events = [e for e in events if any(f["function"] == "slow_report" for f in e["data"]["stack"])]
    blocked = [e for e in events if e["event"] == "gevent.event_loop_blocked"]
    unblocked = [e for e in events if e["event"] == "gevent.event_loop_unblocked"]
    summary = [(e["event"][13:], e["source"]["pid"], e["data"]["episode"], e["data"]["blocking_time"]) for e in events]
    assert len(blocked) == len(unblocked) == requests, "\n".join(map(str, summary))
    for b in blocked:
        pair = [u for u in unblocked if (u["source"]["pid"], u["data"]["episode"]) ==
                (b["source"]["pid"], b["data"]["episode"])]
        assert len(pair) == 1, "each blocked event has exactly one unblocked partner"
        assert b["data"]["stack"][-1]["function"] == "slow_report"
        assert pair[0]["data"]["blocking_time"] >= 0.9 * seconds  # measured to ±half a heartbeat
    assert {e["source"]["pid"] for e in events} <= worker_pids


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
@pytest.mark.parametrize("how", ["post_fork", "monitor-agent run"])
def test_every_worker_monitored_master_quiet(how: str, preload: bool, gunicorn_cmd, tmp_path: Path) -> None:
    """Two workers, each with its own running monitor and pid; one blocked + one unblocked per slow request."""
    out = tmp_path / "events.jsonl"
    env = clean_environ(MONITOR_AGENT_TRANSPORTS=f"jsonl:{out}")
    argv = list(gunicorn_cmd) + (["--preload"] if preload else [])
    if how == "post_fork":
        argv = [*argv, "-c", "examples/gunicorn/gunicorn.conf.py"]
    else:
        argv = [os.path.join(BIN, "monitor-agent"), "run", "--", *argv]
    server = Gunicorn([*argv, "examples.gunicorn.app:app"], env)
    try:
        workers = server.workers(want=2)
        assert len(workers) == 2
        assert _agent_threads(server.proc.pid) == set(), "the master runs no hub, so it has no agent thread"
        status = json.loads(server.get("/agent"))
        assert status["pid"] in workers and status["running"] and status["monitor_pid"] == status["pid"]
        for _ in range(4):
            assert server.get("/report?0.3").startswith(b"report:")
        time.sleep(0.5)
    finally:
        log = server.stop()
    events = read_jsonl(str(out))
    _check_episodes(events, set(workers), requests=4, seconds=0.3)
    assert "Traceback" not in log, log


def test_restarted_workers_come_back_monitored(gunicorn_cmd, tmp_path: Path) -> None:
    """With --max-requests, gunicorn replaces workers; the new ones report under their own pids."""
    out = tmp_path / "events.jsonl"
    env = clean_environ(MONITOR_AGENT_TRANSPORTS=f"jsonl:{out}")
    server = Gunicorn([*gunicorn_cmd, "--max-requests", "3", "-c", "examples/gunicorn/gunicorn.conf.py",
                       "examples.gunicorn.app:app"], env)
    try:
        first = server.workers(want=2)
        for _ in range(12):
            server.get("/report?0.25")
        time.sleep(0.5)
        after = server.workers(want=2)
    finally:
        server.stop()
    events = read_jsonl(str(out))
    pids = {e["source"]["pid"] for e in events}
    assert len(pids) >= 3, f"workers were replaced and the new ones reported too: {pids}"
    assert after != first, "gunicorn replaced workers, and the replacements run an agent"
    _check_episodes(events, pids, requests=12, seconds=0.25)
    observed("gunicorn worker restarts", "gunicorn -k gevent -w 2 --max-requests 3, 12 requests to a blocking view",
             f"every replacement worker ran its own agent: {len(pids)} pids reported, one blocked + one unblocked "
             "per request naming the view", 0)
