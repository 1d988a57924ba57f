"""A hostile environment: foreign tracers, a huge switch interval, several hubs, repeated (un)installs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..helpers import read_jsonl, run_python
from ._record import observed

BLOCK = 'get_original("time", "sleep")'


def _pairs(path: Path) -> list:
    return [e["event"][13:] for e in read_jsonl(str(path))]


def test_foreign_non_chaining_tracer(tmp_path: Path) -> None:
    """A greenlet.settrace that chains to nothing cannot blind the default (heartbeat) detector."""
    out = tmp_path / "e.jsonl"
    code = f"""
        import greenlet, gevent, monitor_agent
        from gevent.monkey import get_original
        monitor_agent.install(transports="jsonl:{out}")
        greenlet.settrace(lambda event, args: None)
        gevent.sleep(0.1)
        {BLOCK}(0.3)
        gevent.sleep(0.1)
    """
    assert run_python(code).returncode == 0
    assert _pairs(out) == ["loop_blocked", "loop_unblocked"]
    observed("a later greenlet.settrace that does not chain", "greenlet.settrace(no-op) after install()",
             "heartbeat mode needs no tracer: detection unchanged (tracer mode re-installs itself, see "
             "tests/test_blocking.py)", 0)


@pytest.mark.parametrize("gil_stacks", [False, True])
def test_huge_switch_interval(tmp_path: Path, gil_stacks: bool) -> None:
    """sys.setswitchinterval(1): the watchdog waits for the GIL, the block is still measured exactly.

    With MONITOR_AGENT_GIL_STACKS on, faulthandler also names the busy function.
    """
    out = tmp_path / "e.jsonl"
    code = f"""
        import sys, time, gevent, monitor_agent
        monitor_agent.install(transports="jsonl:{out}", gil_stacks={gil_stacks})
        sys.setswitchinterval(1.0)
        gevent.sleep(0.1)
        def busy():
            end = time.perf_counter() + 0.5
            while time.perf_counter() < end:
                pass
        gevent.spawn(busy).join()
        gevent.sleep(0.2)
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    events = read_jsonl(str(out))
    assert [e["event"][13:] for e in events] == ["loop_blocked", "loop_unblocked"]
    assert abs(events[1]["data"]["blocking_time"] - 0.5) < 0.03
    assert events[1]["data"]["held_gil"]
    if gil_stacks:
        assert "busy" in [f["function"] for f in events[1]["data"]["stack"]]
        observed("sys.setswitchinterval(1.0)", "set after install(); a 0.5 s pure-Python block; GIL stacks on",
                 "the starved watchdog reports the block when it gets the GIL, with its exact duration; "
                 "faulthandler's dump names the busy function", 0)
    else:
        observed("sys.setswitchinterval(1.0)", "set after install(); a 0.5 s pure-Python block; default settings",
                 "the starved watchdog reports the block when it gets the GIL, flagged held_gil, with its exact "
                 "duration (no stack: MONITOR_AGENT_GIL_STACKS is off by default)", 0)


def test_two_hubs_in_two_threads(tmp_path: Path) -> None:
    """The agent watches the hub of the thread that installed it; a second hub in another thread is its own."""
    out = tmp_path / "e.jsonl"
    code = f"""
        import threading, gevent, monitor_agent
        from gevent.monkey import get_original
        agent = monitor_agent.install(transports="jsonl:{out}")
        gevent.sleep(0.1)
        def other():
            again = monitor_agent.install()
            gevent.sleep(0.01)               # this thread's own hub
            {BLOCK}(0.3)                     # blocks only this thread's hub
            gevent.sleep(0.01)
            print(again is agent, gevent.get_hub() is not agent.hub)
        t = threading.Thread(target=other); t.start()
        while t.is_alive():
            gevent.sleep(0.01)               # the main hub keeps running meanwhile
        {BLOCK}(0.3)                         # a block of the monitored hub
        gevent.sleep(0.1)
        print(agent.stats()["blocking"]["episodes"])
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "1"]
    assert _pairs(out) == ["loop_blocked", "loop_unblocked"]
    observed("two hubs in two threads", "install() in the main thread, a second hub blocking in another thread",
             "the installed hub is monitored; install() elsewhere returns the same agent; the other hub is not "
             "watched (documented)", 0)


def test_uninstall_install_ten_times(tmp_path: Path) -> None:
    """Ten uninstall/install cycles leave no thread, timer or spawn callback behind, and the last agent works."""
    out = tmp_path / "e.jsonl"
    code = f"""
        import json, os, gevent, monitor_agent
        from gevent.monkey import get_original
        def threads():
            names = []
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{{tid}}/comm") as f:
                    names.append(f.read().strip())
            return sorted(n for n in names if n.startswith("ma:"))
        counts = []
        for i in range(10):
            agent = monitor_agent.install(transports="jsonl:{out}")
            gevent.sleep(0.05)
            counts.append(len(threads()))
            monitor_agent.uninstall()
            gevent.sleep(0.05)
        left = threads()
        agent = monitor_agent.install(transports="jsonl:{out}")
        gevent.sleep(0.05)
        {BLOCK}(0.3)
        gevent.sleep(0.1)
        print(json.dumps({{"counts": counts, "left": left, "active": gevent.get_hub().loop.activecnt}}))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    out_json = json.loads(result.stdout)
    assert len(set(out_json["counts"])) == 1, out_json["counts"]
    assert out_json["left"] == [], "no agent thread survives uninstall()"
    assert _pairs(out) == ["loop_blocked", "loop_unblocked"]
    observed("uninstall() then install() ten times", "a loop of install/uninstall in one process",
             "the same threads each time, none left after uninstall, the eleventh agent reports normally", 0)


def test_exit_while_the_destination_is_down(faulty_env) -> None:
    """Interpreter exit with undeliverable events waits MONITOR_AGENT_FLUSH_TIMEOUT, no longer."""
    code = """
        import json, time, gevent, monitor_agent
        from monitor_agent.events import MemoryUsageThresholdExceeded
        agent = monitor_agent.install(transports="down://broker", flush_timeout="0.7s")
        gevent.sleep(0.05)
        for i in range(20):
            agent.emit(MemoryUsageThresholdExceeded(i, 1, None))
        started = time.perf_counter()
        monitor_agent.uninstall()       # what interpreter exit does (atexit)
        print(json.dumps({"took": time.perf_counter() - started, "stats": agent.stats()["transports"]}))
    """
    result = run_python(code, env=faulty_env, timeout=30)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    down = out["stats"]["down://broker"]
    assert out["took"] < 0.7 + 0.3
    assert down["sent"] == 0 and down["dropped"]["shutdown"] == 20 and down["retries"] >= 2
    implicit = run_python(code.replace("monitor_agent.uninstall()       # what interpreter exit does (atexit)",
                                       "pass"), env=faulty_env, timeout=30)
    assert implicit.returncode == 0 and "Traceback" not in implicit.stderr
    observed("interpreter exit while the destination is down", "a transport refusing every attempt "
             "(0.2 s each); flush_timeout 0.7 s", f"uninstall/exit waited {out['took']:.2f} s, then counted the rest "
             "as dropped (shutdown); no exception", "20 of 20 (dropped: shutdown)")
