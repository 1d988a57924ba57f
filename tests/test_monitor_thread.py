"""The monitor thread: gevent's IPeriodicMonitorThread, isolated functions, drift-free schedule."""
from __future__ import annotations

import logging
import threading
import time

import gevent
import pytest

import monitor_agent

from .helpers import run_python, wait_until
from .reliability._record import observed


@pytest.fixture
def agent():
    a = monitor_agent.install(transports="")
    wait_until(lambda: a.monitor.running, 2)
    return a


class TestAddMonitoringFunction:
    """add_monitoring_function follows gevent's contract."""

    def test_called_with_the_hub_in_another_thread(self, agent) -> None:
        """The function gets the hub and runs in a native thread, not the hub's."""
        calls = []
        agent.monitor.add_monitoring_function(lambda hub: calls.append((hub, threading.get_ident())), 0.02)
        wait_until(lambda: len(calls) >= 3)
        hub, ident = calls[0]
        assert hub is gevent.get_hub()
        assert ident != agent.monitor.hub_thread_ident

    def test_none_removes(self, agent) -> None:
        """period=None removes the function."""
        calls = []
        fn = calls.append
        agent.monitor.add_monitoring_function(fn, 0.01)
        wait_until(lambda: calls)
        agent.monitor.add_monitoring_function(fn, None)
        gevent.sleep(0.05)
        n = len(calls)
        gevent.sleep(0.1)
        assert len(calls) == n
        assert fn not in [f for f, _ in agent.monitor.monitoring_functions()]

    @pytest.mark.parametrize("period", [0, -1, float("nan"), float("inf")])
    def test_bad_period_raises(self, agent, period) -> None:
        """A period <= 0 (or not a finite number) raises ValueError."""
        with pytest.raises(ValueError):
            agent.monitor.add_monitoring_function(lambda hub: None, period)

    def test_not_callable_raises(self, agent) -> None:
        """A non-callable raises ValueError."""
        with pytest.raises(ValueError):
            agent.monitor.add_monitoring_function("not a function", 1)

    def test_updating_period(self, agent) -> None:
        """Adding the same function again changes its period."""
        fn = lambda hub: None
        agent.monitor.add_monitoring_function(fn, 5)
        agent.monitor.add_monitoring_function(fn, 2)
        assert [p for f, p in agent.monitor.monitoring_functions() if f is fn] == [2]


class TestIsolation:
    """One failing monitoring function does not stop the others."""

    def test_raising_function_is_logged_once_counted_and_others_run(self, agent, caplog) -> None:
        """It keeps being called, is logged once with its name, and its errors are counted."""
        good = []

        def broken_monitor(hub):
            raise RuntimeError("boom")

        agent.monitor.add_monitoring_function(broken_monitor, 0.01)
        agent.monitor.add_monitoring_function(good.append, 0.01)
        with caplog.at_level(logging.WARNING, logger="monitor_agent.monitor"):
            wait_until(lambda: len(good) >= 10)
        stats = agent.stats()["monitor"]["functions"]
        broken = next(v for k, v in stats.items() if k.endswith("broken_monitor"))
        assert broken["errors"] >= 5 and broken["errors"] == broken["runs"]
        logged = [r for r in caplog.records if "broken_monitor" in r.getMessage()]
        assert len(logged) == 1
        observed("a monitoring function that raises every time", "add_monitoring_function(raising, 0.01)",
                 f"called on schedule anyway ({broken['runs']} runs, {broken['errors']} errors counted), logged once "
                 "with its name; the other function kept running", "n/a")


class TestSchedule:
    """The schedule does not drift."""

    def test_no_drift(self, agent) -> None:
        """Calls stay on a grid of the period even when each call takes time."""
        stamps = []

        def slowish(hub):
            stamps.append(time.perf_counter())
            time.sleep(0.004)  # the agent's own thread may block

        agent.monitor.add_monitoring_function(slowish, 0.02)
        wait_until(lambda: len(stamps) >= 26, timeout=5)
        elapsed = stamps[25] - stamps[0]
        # 25 periods of 20 ms: a drifting scheduler (sleep(period) after each
        # 4 ms call) would take 600 ms; allow generous jitter, not drift.
        assert 0.45 < elapsed < 0.56, elapsed


class TestLifecycle:
    """Stops with the hub; gevent's threadpool opt-out calls work."""

    def test_stops_when_hub_destroyed(self) -> None:
        """hub.destroy() kills the monitor threads."""
        code = """
            import gevent, monitor_agent
            agent = monitor_agent.install(transports="")
            gevent.sleep(0.05)
            assert agent.monitor.running
            gevent.get_hub().destroy(destroy_loop=True)
            print(agent.monitor.join(2.0), agent.monitor.running)
        """
        result = run_python(code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["True", "False"]

    def test_threadpool_blocking_is_not_reported(self, agent, events) -> None:
        """Blocking work in gevent's threadpool does not block the loop and is not reported."""
        pool = gevent.get_hub().threadpool
        pool.spawn(time.sleep, 0.3).get()
        gevent.sleep(0.05)
        assert agent.stats()["blocking"]["episodes"] == 0

    def test_ignore_current_greenlet_blocking(self, agent, events) -> None:
        """gevent's opt-out called in the hub thread silences that greenlet's blocks."""
        from gevent.monkey import get_original

        def tolerated():
            agent.monitor.ignore_current_greenlet_blocking()
            get_original("time", "sleep")(0.3)
            agent.monitor.monitor_current_greenlet_blocking()

        gevent.spawn(tolerated).join()
        gevent.sleep(0.05)
        assert agent.stats()["blocking"]["ignored"] == 1
        assert agent.stats()["blocking"]["reported"] == 0
