"""install() / uninstall(): idempotent, attached to the hub, configurable, removable."""
from __future__ import annotations

import json

import gevent
import pytest
from gevent.events import IPeriodicMonitorThread
from zope.interface.verify import verifyObject

import monitor_agent

from .helpers import clean_environ, run_python, wait_until
from .reliability._record import observed


class TestInstall:
    """The contract of install()."""

    def test_returns_agent_attached_to_the_hub(self) -> None:
        """The monitor is the hub's periodic_monitoring_thread and implements gevent's interface."""
        agent = monitor_agent.install(transports="")
        assert agent is not None
        hub = gevent.get_hub()
        assert hub.periodic_monitoring_thread is agent.monitor
        assert verifyObject(IPeriodicMonitorThread, agent.monitor)
        assert agent.transports == []
        gevent.sleep(0.05)
        assert agent.monitor.running

    def test_idempotent(self) -> None:
        """A second install() returns the same Agent."""
        first = monitor_agent.install(transports="")
        assert monitor_agent.install(transports="") is first
        assert monitor_agent.install() is first

    def test_disabled_is_a_no_op(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """MONITOR_AGENT_ENABLED=0: install() returns None and touches nothing."""
        monkeypatch.setenv("MONITOR_AGENT_ENABLED", "0")
        before = gevent.get_hub().periodic_monitoring_thread
        assert monitor_agent.install() is None
        assert gevent.get_hub().periodic_monitoring_thread is before
        assert monitor_agent.get_agent() is None

    def test_keyword_overrides_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """install(max_blocking_time=…) wins over MONITOR_AGENT_MAX_BLOCKING_TIME."""
        monkeypatch.setenv("MONITOR_AGENT_MAX_BLOCKING_TIME", "2s")
        agent = monitor_agent.install(transports="", max_blocking_time="0.3")
        assert agent.settings.max_blocking_time == 0.3
        assert agent.settings.sources["max_blocking_time"] == "max_blocking_time"

    def test_uninstall_detaches_and_stops(self) -> None:
        """uninstall() stops the threads and leaves the hub without a monitor."""
        agent = monitor_agent.install(transports="")
        gevent.sleep(0.05)
        assert monitor_agent.uninstall() is True
        assert gevent.get_hub().periodic_monitoring_thread is None
        assert agent.monitor.join(2.0)
        assert not agent.monitor.running
        assert monitor_agent.get_agent() is None

    def test_install_again_after_uninstall(self) -> None:
        """uninstall() then install() gives a new, working agent."""
        first = monitor_agent.install(transports="")
        monitor_agent.uninstall()
        second = monitor_agent.install(transports="")
        assert second is not first
        gevent.sleep(0.05)
        assert second.monitor.running and gevent.get_hub().periodic_monitoring_thread is second.monitor

    def test_stats_shape(self) -> None:
        """stats() reports events, transports, blocking, memory and plugins."""
        agent = monitor_agent.install(transports="", max_memory_usage="10GB")
        stats = agent.stats()
        assert {"pid", "events", "transports", "monitor", "blocking", "memory", "plugins"} <= set(stats)
        assert stats["events"]["emitted"] == 0


class TestInSubprocess:
    """Behaviour that needs a fresh interpreter."""

    @pytest.mark.parametrize("order", ["before", "after"])
    def test_works_before_or_after_patch_all(self, order: str, tmp_path) -> None:
        """install() before or after patch_all(): a blocked loop is reported either way."""
        out = tmp_path / "events.jsonl"
        code = f"""
            import gevent.monkey, monitor_agent, time
            if {order!r} == "after":
                gevent.monkey.patch_all()
            monitor_agent.install(transports="jsonl:{out}")
            if {order!r} == "before":
                gevent.monkey.patch_all()
            import gevent
            gevent.sleep(0.05)
            gevent.monkey.get_original("time", "sleep")(0.3)
            gevent.sleep(0.1)
        """
        result = run_python(code)
        assert result.returncode == 0, result.stderr
        names = [json.loads(line)["event"] for line in out.read_text().splitlines()]
        assert names == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]
        if order == "before":
            observed("gevent.monkey.patch_all() after install()", "install(), then patch_all(), then a 0.3 s block",
                     "the agent's threads stayed native (gevent's originals); the block was reported once, ended once",
                     0)

    def test_replaces_gevents_own_monitor(self) -> None:
        """With GEVENT_MONITOR_THREAD_ENABLE=1, gevent's monitor is replaced, not doubled."""
        code = """
            import gevent, monitor_agent
            gevent.sleep(0.01)
            hub = gevent.get_hub()
            theirs = hub.periodic_monitoring_thread
            agent = monitor_agent.install(transports="")
            gevent.sleep(0.05)
            import greenlet
            print(type(theirs).__name__, hub.periodic_monitoring_thread is agent.monitor,
                  theirs.should_run, greenlet.gettrace())
        """
        result = run_python(code, env=clean_environ(GEVENT_MONITOR_THREAD_ENABLE="1"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["PeriodicMonitoringThread", "True", "False", "None"]

    def test_exit_flushes_queued_events(self, tmp_path) -> None:
        """Events queued at interpreter exit reach the file (flushed by atexit)."""
        out = tmp_path / "events.jsonl"
        code = f"""
            import gevent, monitor_agent
            from monitor_agent.events import MemoryUsageThresholdExceeded
            agent = monitor_agent.install(transports="jsonl:{out}")
            gevent.sleep(0.01)
            for i in range(500):
                agent.emit(MemoryUsageThresholdExceeded(i, 1, None))
        """
        result = run_python(code)
        assert result.returncode == 0, result.stderr
        assert len(out.read_text().splitlines()) == 500

    def test_install_from_non_main_thread(self, tmp_path) -> None:
        """install() in a thread monitors that thread's hub."""
        out = tmp_path / "events.jsonl"
        code = f"""
            import threading, gevent, monitor_agent
            from gevent.monkey import get_original
            def worker():
                agent = monitor_agent.install(transports="jsonl:{out}")
                gevent.sleep(0.05)
                get_original("time", "sleep")(0.3)
                gevent.sleep(0.1)
                print(agent.monitor.hub_thread_ident == threading.get_ident())
                monitor_agent.uninstall()
            t = threading.Thread(target=worker); t.start(); t.join()
        """
        result = run_python(code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "True"
        assert len(out.read_text().splitlines()) == 2
        observed("install() from a non-main thread", "a threading.Thread runs its own hub and calls install()",
                 "that thread's hub is the one watched; its 0.3 s block reported once and ended once", 0)


def test_monitor_starts_only_when_the_hub_runs() -> None:
    """Like gevent's, the threads start on the hub's first loop iteration (a gunicorn master stays quiet)."""
    agent = monitor_agent.install(transports="")
    assert not agent.monitor.running
    wait_until(lambda: agent.monitor.running, 2)


def test_startup_work_before_the_hub_runs_is_not_a_block(tmp_path) -> None:
    """Regression: work between install() and the hub's first run (imports, patch_all) is not reported,
    and no agent thread exists before the hub runs."""
    out = tmp_path / "e.jsonl"
    code = f"""
        import os, time, monitor_agent
        agent = monitor_agent.install(transports="jsonl:{out}")
        threads_before = len(os.listdir("/proc/self/task"))
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:   # start-up work: the loop has never run
            pass
        import gevent
        gevent.sleep(0.2)
        threads_after = len(os.listdir("/proc/self/task"))
        print(threads_before, threads_after > threads_before, agent.stats()["blocking"]["episodes"])
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1:] == ["True", "0"]
    assert int(result.stdout.split()[0]) == 1, "no agent thread before the hub first runs"
    assert not out.read_text()


def test_stop_callbacks_run_in_order_and_are_isolated(caplog) -> None:
    """Agent.on_stop: every callback runs at uninstall(), in order, even after one that raises."""
    agent = monitor_agent.install(transports="")
    assert agent is not None
    calls = []

    def bad() -> None:
        calls.append("bad")
        raise RuntimeError("plugin bug")

    agent.on_stop(lambda: calls.append("first"))
    agent.on_stop(bad)
    agent.on_stop(lambda: calls.append("last"))
    assert monitor_agent.uninstall(timeout=1)
    assert calls == ["first", "bad", "last"]
    assert "plugin bug" in caplog.text
