"""Forked children are monitored afresh: new threads, new pid on events, no inherited queue."""
from __future__ import annotations

import json

import pytest

from .helpers import read_jsonl, run_python
from .reliability._record import observed

FORK_PROGRAM = """
import gevent.monkey
if {patch}:
    gevent.monkey.patch_all()
import os, json, gevent, gevent.os, monitor_agent
from gevent.monkey import get_original


def child_report(agent):
    deadline = 50
    while not agent.monitor.running and deadline:
        gevent.sleep(0.02); deadline -= 1
    gevent.sleep(0.02)
    get_original("time", "sleep")(0.3)   # a block in the child
    gevent.sleep(0.1)
    agent.flush(2)
    return {{"pid": os.getpid(), "running": agent.monitor.running, "monitor_pid": agent.monitor.pid,
             "agent_pid": agent.pid, "process_pid": agent.memory._get_process().pid}}


agent = monitor_agent.install(transports="jsonl:{out}", max_memory_usage="10GB", memory_monitor_period=0.05)
gevent.sleep(0.1)
pid = {call}
if pid == 0:
    with open("{report}", "w") as f:
        json.dump(child_report(agent), f)
    os._exit(0)
os.waitpid(pid, 0)
print(pid)
"""


@pytest.mark.parametrize("fork", ["os.fork", "gevent.os.fork", "monkey-patched os.fork"])
def test_child_of_fork_is_monitored(fork: str, tmp_path) -> None:
    """The child runs its own monitor, measures its own memory, and its events carry its pid."""
    out, report = tmp_path / "events.jsonl", tmp_path / "child.json"
    code = FORK_PROGRAM.format(patch=fork == "monkey-patched os.fork", out=out, report=report,
                               call="gevent.os.fork()" if fork == "gevent.os.fork" else "os.fork()")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    child = int(result.stdout)
    status = json.loads(report.read_text())
    assert status["running"] is True
    assert status["pid"] == status["monitor_pid"] == status["agent_pid"] == status["process_pid"] == child
    envelopes = read_jsonl(str(out))
    in_child = [e for e in envelopes if e["source"]["pid"] == child]
    assert [e["event"] for e in in_child] == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]
    assert [e["seq"] for e in in_child] == [1, 2]
    in_parent = [e for e in envelopes if e["source"]["pid"] != child]
    if fork == "monkey-patched os.fork":
        assert in_parent == [], "the patched os.waitpid() is cooperative: the parent never blocked"
    else:
        # The unpatched os.waitpid() blocked the parent's loop until it exited: reported by the
        # parent, under its own pid, and closed when the agent stopped at exit.
        assert [e["event"] for e in in_parent] == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]
        assert in_parent[1]["data"]["detected_by"] == "agent stopped"
    observed(f"a child of {fork}", "the child blocks its loop 0.3 s and reports its agent's state",
             "the child's monitor thread runs with its own pid, psutil process and sequence numbers; its events carry "
             "its pid; the parent's stay the parent's", 0)


def test_multiprocessing_fork_child_is_monitored(tmp_path) -> None:
    """A multiprocessing child (fork start method) reports its own blocks."""
    out = tmp_path / "events.jsonl"
    code = f"""
        import multiprocessing, os, gevent, monitor_agent
        from gevent.monkey import get_original

        def work():
            agent = monitor_agent.get_agent()
            gevent.sleep(0.05)
            get_original("time", "sleep")(0.3)
            gevent.sleep(0.1)
            agent.flush(2)

        if __name__ == "__main__":
            monitor_agent.install(transports="jsonl:{out}")
            gevent.sleep(0.05)
            p = multiprocessing.get_context("fork").Process(target=work)
            p.start(); p.join()
            print(p.pid, p.exitcode)
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    pid, exitcode = map(int, result.stdout.split())
    assert exitcode == 0
    envelopes = read_jsonl(str(out))
    # The parent's p.join() blocks its own loop too (an unpatched waitpid): that is reported, by the parent.
    child_events = [e["event"] for e in envelopes if e["source"]["pid"] == pid]
    assert child_events == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]


def test_fork_with_faulthandler_armed_does_not_hang_the_child(tmp_path) -> None:
    """Regression: a child forked while the GIL-stack dump is armed can still re-arm it.

    faulthandler's timer thread does not survive fork(); re-arming in the child
    used to wait for it forever with the GIL held.
    """
    code = """
        import os, gevent, monitor_agent
        agent = monitor_agent.install(transports="", gil_stacks=True)
        gevent.sleep(0.3)       # the watchdog has armed faulthandler by now
        assert agent.detector.gilwatch._armed
        pid = os.fork()
        if pid == 0:
            gevent.sleep(0.5)   # the child's watchdog re-arms several times
            os._exit(0 if agent.detector.gilwatch._armed else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """
    result = run_python(code, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_agent_threads_import_nothing(tmp_path) -> None:
    """Regression: nothing is imported in the agent's own threads.

    A fork that lands while a background thread is importing leaves the child
    a half-initialized module (or an import lock that is never released): the
    memory monitor used to import psutil on its first run, and a forked child
    hung. An audit hook records the thread of every import while blocks,
    memory events and both built-in transports are exercised.
    """
    code = f"""
        import sys, threading, gevent, monitor_agent
        from gevent.monkey import get_original
        main = threading.get_ident()
        late_imports = []
        def audit(event, args):
            if event == "import" and get_original("_thread", "get_ident")() != main:
                late_imports.append(args[0])
        agent = monitor_agent.install(transports="log,jsonl:{tmp_path / 'e.jsonl'}", max_memory_usage="1KB",
                                      memory_monitor_period=0.05, greenlet_dump=True)
        sys.addaudithook(audit)
        gevent.sleep(0.2)
        get_original("time", "sleep")(0.25)
        gevent.sleep(0.2)
        agent.flush(2)
        print(sorted(set(late_imports)) or "none")
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


def test_forks_right_after_install_never_hang(tmp_path) -> None:
    """Twenty children forked while the agent is starting up all finish promptly."""
    code = """
        import os, gevent, monitor_agent
        agent = monitor_agent.install(transports="", max_memory_usage="1GB", memory_monitor_period=0.01)
        for i in range(20):
            gevent.sleep(0.005 * (i % 4))
            pid = os.fork()
            if pid == 0:
                agent.memory._get_process()   # psutil is usable in the child
                gevent.sleep(0.05)
                os._exit(0)
            os.waitpid(pid, 0)
        print("ok")
    """
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
