"""Blocked-loop detection against a real hub: one episode, two events, the right culprit."""
from __future__ import annotations

import sys
import time

import gevent
import greenlet
import pytest
from gevent.monkey import get_original

import monitor_agent
from monitor_agent.blocking.histogram import LagHistogram
from monitor_agent.blocking.ratelimit import SiteRateLimiter
from monitor_agent.events import EventLoopBlocked, EventLoopUnblocked

from .helpers import Collector, run_python, wait_until

unpatched_sleep = get_original("time", "sleep")
T = 0.1


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _calibrated_sum_size(seconds: float) -> int:
    """How many integers sum(range(n)) must add to hold the GIL for about *seconds*.

    Calibrating blocks the loop briefly itself; the loop is given time to tick
    afterwards, so that this does not merge with the block under test.
    """
    n = 1_000_000
    started = time.perf_counter()
    sum(range(n))
    size = int(n * seconds / max(time.perf_counter() - started, 1e-6))
    gevent.sleep(0.05)
    return size


@pytest.fixture
def agent(events: Collector):
    a = monitor_agent.install(transports="", max_blocking_time=T, blocking_rate_limit="off")
    wait_until(lambda: a.monitor.running)
    gevent.sleep(0.02)
    return a


@pytest.fixture
def gil_agent(events: Collector):
    """The agent with MONITOR_AGENT_GIL_STACKS on (faulthandler names GIL-holding calls)."""
    a = monitor_agent.install(transports="", max_blocking_time=T, blocking_rate_limit="off", gil_stacks=True)
    wait_until(lambda: a.monitor.running)
    gevent.sleep(0.02)
    return a


def one_episode(events: Collector, timeout: float = 5.0):
    """Wait for the episode to end; exactly one blocked and one unblocked event with the same number."""
    events.wait_for(EventLoopUnblocked, timeout=timeout)
    gevent.sleep(0.05)
    blocked, unblocked = events.of(EventLoopBlocked), events.of(EventLoopUnblocked)
    blocked = [e for e in blocked if not isinstance(e, EventLoopUnblocked)]
    assert len(blocked) == 1 and len(unblocked) == 1, (blocked, unblocked)
    assert blocked[0].episode == unblocked[0].episode
    return blocked[0], unblocked[0]


def functions(event) -> list:
    return [f["function"] for f in event.stack]


class TestBlockKinds:
    """Every kind of block yields exactly one blocked and one unblocked event naming the culprit."""

    def test_unpatched_sleep_in_spawned_greenlet(self, agent, events) -> None:
        """A greenlet calling the unpatched time.sleep: measured duration, culprit frame, greenlet identity."""
        def sleepy_culprit():
            unpatched_sleep(0.4)

        g = gevent.spawn(sleepy_culprit)
        g.name = "sleepy"
        g.join()
        blocked, unblocked = one_episode(events)
        assert functions(blocked)[-1] == "sleepy_culprit"
        assert blocked.greenlet is g and blocked.culprit.name == "sleepy" and blocked.culprit.kind == "greenlet"
        assert T <= blocked.blocking_time < 0.2, "reported as soon as it passes T, while still blocked"
        assert 0.37 < unblocked.blocking_time < 0.45
        assert unblocked.profile[0]["function"] == "sleepy_culprit" and unblocked.profile[0]["share"] > 0.9
        assert any(f["function"] == "test_unpatched_sleep_in_spawned_greenlet" for f in blocked.culprit.spawned_at)
        assert blocked.stack[-1]["app"] is True

    def test_busy_loop(self, agent, events) -> None:
        """A pure-Python busy loop (the watchdog competes for the GIL and still sees it)."""
        def spin_culprit():
            busy(0.35)

        gevent.spawn(spin_culprit).join()
        blocked, unblocked = one_episode(events)
        assert "spin_culprit" in functions(blocked)
        assert 0.3 < unblocked.blocking_time < 0.42
        assert not blocked.held_gil

    def test_main_greenlet(self, agent, events) -> None:
        """The main greenlet itself blocking."""
        unpatched_sleep(0.3)
        gevent.sleep(0.05)
        blocked, _ = one_episode(events)
        assert blocked.culprit.kind == "main" and blocked.greenlet is gevent.get_hub().parent
        assert functions(blocked)[-1] == "test_main_greenlet"

    @pytest.mark.parametrize("how", ["timer", "run_callback", "rawlink"])
    def test_hub_callbacks(self, how, agent, events) -> None:
        """Blocks inside hub callbacks (which gevent's tracer never sees) are found and attributed to the hub."""
        hub = gevent.get_hub()

        def callback_culprit(*_args):
            unpatched_sleep(0.3)

        if how == "timer":
            timer = hub.loop.timer(0.01)
            timer.start(callback_culprit)
        elif how == "run_callback":
            hub.loop.run_callback(callback_culprit)
        else:
            gevent.spawn(lambda: None).rawlink(callback_culprit)
        blocked, unblocked = one_episode(events)
        assert blocked.culprit.kind == "callback" and blocked.greenlet is hub
        assert functions(blocked)[-1] == "callback_culprit"
        assert "run" not in functions(blocked), "the hub's own frames are trimmed"
        assert 0.27 < unblocked.blocking_time < 0.36

    def test_link_callback(self, agent, events) -> None:
        """Greenlet.link runs its callback in a fresh raw greenlet (gevent's SpawnedLink): found and named."""
        def link_culprit(_source):
            unpatched_sleep(0.3)

        gevent.spawn(lambda: None).link(link_culprit)
        blocked, unblocked = one_episode(events)
        assert blocked.culprit.kind == "greenlet" and blocked.culprit.name == "greenlet running link_culprit"
        assert functions(blocked)[-1] == "link_culprit"
        assert 0.27 < unblocked.blocking_time < 0.36

    def test_c_call_holding_the_gil_is_measured_by_default(self, agent, events) -> None:
        """Without faulthandler (the default), a GIL-holding C call is still reported, flagged and measured."""
        n = _calibrated_sum_size(0.5)
        started = time.perf_counter()
        gevent.get_hub().loop.run_callback(lambda: sum(range(n)))
        gevent.sleep(0)
        true_duration = time.perf_counter() - started
        blocked, unblocked = one_episode(events)
        assert blocked.held_gil and unblocked.held_gil
        assert abs(unblocked.blocking_time - true_duration) < max(0.03, 0.1 * true_duration)
        assert agent.detector.gilwatch is None

    def test_c_call_holding_the_gil(self, gil_agent, events) -> None:
        """One C call holding the GIL: reported when it returns, with the measured duration and the caller's frame."""
        n = _calibrated_sum_size(0.5)

        def gil_culprit():
            started = time.perf_counter()
            sum(range(n))
            return time.perf_counter() - started

        g = gevent.spawn(gil_culprit)
        true_duration = g.get()
        blocked, unblocked = one_episode(events)
        assert blocked.held_gil
        assert "gil_culprit" in functions(blocked)
        assert abs(unblocked.blocking_time - true_duration) < max(0.03, 0.1 * true_duration)

    def test_c_call_holding_the_gil_in_a_callback(self, gil_agent, events) -> None:
        """The same in a hub callback: only faulthandler's dump can name it, and it does."""
        n = _calibrated_sum_size(0.6)  # faulthandler fires after 2 T; leave margin for a faster CPU
        took = []

        def gil_callback_culprit():
            started = time.perf_counter()
            sum(range(n))
            took.append(time.perf_counter() - started)

        gevent.get_hub().loop.run_callback(gil_callback_culprit)
        blocked, unblocked = one_episode(events)
        assert blocked.held_gil
        assert "gil_callback_culprit" in functions(blocked)
        assert abs(unblocked.blocking_time - took[0]) < max(0.03, 0.1 * took[0])

    def test_short_blocks_are_not_reported(self, agent, events) -> None:
        """Blocks of 0.5 T are below the threshold: nothing is emitted."""
        for _ in range(5):
            gevent.spawn(unpatched_sleep, 0.5 * T).join()
            gevent.sleep(0.02)
        gevent.sleep(0.1)
        assert events.of(EventLoopBlocked) == []
        assert agent.stats()["blocking"]["episodes"] == 0

    def test_long_block_has_no_repeats(self, agent, events) -> None:
        """A 1 s block is one episode: no events between blocked and unblocked."""
        def long_culprit():
            unpatched_sleep(1.0)

        gevent.spawn(long_culprit).join()
        _, unblocked = one_episode(events)
        assert 0.97 < unblocked.blocking_time < 1.06
        assert unblocked.samples > 50

    def test_greenlet_running_a_c_function(self, agent, events) -> None:
        """gevent.spawn(time.sleep, …) has no Python frame at all: still one measured episode."""
        gevent.spawn(unpatched_sleep, 0.3).join()
        blocked, unblocked = one_episode(events)
        assert blocked.stack == [] and blocked.culprit.kind == "unknown"
        assert 0.27 < unblocked.blocking_time < 0.36
        assert unblocked.profile[0]["function"] == "<no Python frame>"


class TestIdentity:
    """The culprit greenlet is found cheaply even among many."""

    def test_among_ten_thousand_greenlets(self, agent, events) -> None:
        """With 10,000 live greenlets, the running one is named, and building the event is cheap."""
        crowd = [gevent.spawn(gevent.sleep, 30) for _ in range(10_000)]
        gevent.sleep(0.3)  # starting 10,000 greenlets blocks the loop by itself; not what we test
        events.events.clear()

        def needle():
            unpatched_sleep(0.3)

        g = gevent.spawn(needle)
        g.name = "needle"
        g.join()
        blocked, _ = one_episode(events)
        assert blocked.greenlet is g and blocked.culprit.name == "needle"
        gevent.killall(crowd)

    def test_tracer_mode_names_raw_greenlets(self, events) -> None:
        """tracer mode identifies a raw greenlet.greenlet, which the spawn index cannot see."""
        agent = monitor_agent.install(transports="", blocking_detection="tracer", blocking_rate_limit="off")
        wait_until(lambda: agent.monitor.running)

        def raw_culprit():
            unpatched_sleep(0.3)

        raw = greenlet.greenlet(raw_culprit, parent=gevent.get_hub())
        gevent.get_hub().loop.run_callback(raw.switch)
        blocked, _ = one_episode(events)
        assert blocked.greenlet is raw


class TestQuiet:
    """De-duplication, rate limits, ignore_blocking, grace."""

    def test_rate_limit_per_site_with_counts(self, events) -> None:
        """The same site is reported twice per window; the rest are counted; another site is unaffected."""
        agent = monitor_agent.install(transports="", blocking_rate_limit="2/min")
        wait_until(lambda: agent.monitor.running)

        def same_site():
            unpatched_sleep(0.15)

        def other_site():
            unpatched_sleep(0.15)

        for _ in range(5):
            gevent.spawn(same_site).join()
            gevent.sleep(0.03)
        gevent.spawn(other_site).join()
        gevent.sleep(0.1)
        stats = agent.stats()["blocking"]
        assert stats["episodes"] == 6 and stats["reported"] == 3 and stats["suppressed"] == 3
        assert list(stats["suppressed_pending"].values()) == [3]
        reported = [functions(e)[-1] for e in events.of(EventLoopBlocked) if not isinstance(e, EventLoopUnblocked)]
        assert reported == ["same_site", "same_site", "other_site"]

    def test_suppressed_count_rides_on_next_report(self) -> None:
        """After the window, the site's next report says how many were suppressed."""
        limiter = SiteRateLimiter((1, 10.0))
        assert limiter.allow("a", 0.0) == (True, 0)
        assert limiter.allow("a", 1.0) == (False, 0)
        assert limiter.allow("a", 2.0) == (False, 0)
        assert limiter.allow("b", 3.0) == (True, 0)
        assert limiter.pending() == {"a": 2}
        assert limiter.allow("a", 10.5) == (True, 2)
        assert limiter.pending() == {} and limiter.suppressed_total == 2

    def test_ignore_blocking_context_manager_and_decorator(self, agent, events) -> None:
        """Blocks inside ignore_blocking() are counted as ignored, not reported."""
        with monitor_agent.ignore_blocking():
            unpatched_sleep(0.25)
        gevent.sleep(0.05)

        @monitor_agent.ignore_blocking()
        def expected_to_block():
            unpatched_sleep(0.25)

        gevent.spawn(expected_to_block).join()
        gevent.sleep(0.05)
        assert events.of(EventLoopBlocked) == []
        assert agent.stats()["blocking"]["ignored"] == 2

    def test_ignore_blocking_is_per_greenlet(self, agent, events) -> None:
        """A greenlet that yields inside ignore_blocking() does not hide another greenlet's block."""
        def tolerant():
            with monitor_agent.ignore_blocking():
                gevent.sleep(0.5)  # yields; others run meanwhile

        def offender():
            unpatched_sleep(0.25)

        t = gevent.spawn(tolerant)
        gevent.sleep(0.05)
        gevent.spawn(offender).join()
        blocked, _ = one_episode(events)
        assert functions(blocked)[-1] == "offender"
        t.join()

    def test_startup_grace(self, events) -> None:
        """Blocks during the grace period are counted, not reported; later ones are reported."""
        agent = monitor_agent.install(transports="", startup_grace="0.6s")
        wait_until(lambda: agent.monitor.running)
        unpatched_sleep(0.2)
        gevent.sleep(0.6)
        unpatched_sleep(0.2)
        gevent.sleep(0.05)
        one_episode(events)
        assert agent.stats()["blocking"]["in_grace"] == 1


class TestTracer:
    """The opt-in tracer chains, survives a non-chaining newcomer, and removes only itself."""

    def test_chains_to_previous_and_uninstalls_cleanly(self) -> None:
        """A tracer installed before us keeps being called, and is restored on uninstall."""
        seen = []

        def earlier(event, args):
            seen.append(event)

        greenlet.settrace(earlier)
        try:
            monitor_agent.install(transports="", blocking_detection="tracer")
            wait_until(lambda: monitor_agent.get_agent().monitor.running)
            assert greenlet.gettrace() is not earlier
            n = len(seen)
            gevent.sleep(0.01)
            assert len(seen) > n
            monitor_agent.uninstall()
            assert greenlet.gettrace() is earlier
        finally:
            greenlet.settrace(None)

    def test_survives_non_chaining_tracer(self, events) -> None:
        """A later settrace that does not chain is detected, counted, and we re-install on top."""
        agent = monitor_agent.install(transports="", blocking_detection="tracer", blocking_rate_limit="off")
        wait_until(lambda: agent.monitor.running)
        rude_calls = []

        def rude(event, args):
            rude_calls.append(event)

        greenlet.settrace(rude)
        wait_until(lambda: agent.stats()["blocking"]["tracer"]["reinstalled"] == 1)
        gevent.sleep(0.02)
        assert rude_calls, "the newcomer is chained to, not dropped"

        def culprit_after_rude():
            unpatched_sleep(0.25)

        raw = greenlet.greenlet(culprit_after_rude, parent=gevent.get_hub())
        gevent.get_hub().loop.run_callback(raw.switch)
        blocked, _ = one_episode(events)
        assert blocked.greenlet is raw
        monitor_agent.uninstall()
        assert greenlet.gettrace() is rude
        greenlet.settrace(None)


class TestLagHistogram:
    """Loop-lag telemetry."""

    def test_exposed_in_stats(self, agent) -> None:
        """stats() carries min, max, mean, p50, p90, p99, p99.9 and count of the heartbeat lag."""
        gevent.sleep(0.2)
        unpatched_sleep(0.05)
        gevent.sleep(0.05)
        lag = agent.stats()["blocking"]["loop_lag"]
        assert set(lag) == {"count", "min", "max", "mean", "p50", "p90", "p99", "p99.9"}
        assert lag["count"] > 20 and 0.04 < lag["max"] < 0.1 and lag["p50"] < 0.005

    def test_quantiles_within_bucket_width(self) -> None:
        """Quantiles are accurate to the ~2 % bucket width; memory is fixed."""
        h = LagHistogram()
        size = len(h.counts)
        for i in range(1, 10001):
            h.record(i / 10000)  # uniform on (0, 1]
        snap = h.snapshot()
        assert snap["count"] == 10000 and len(h.counts) == size
        for q, key in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")]:
            assert abs(snap[key] - q) / q < 0.025
        assert h.count_at_or_below(0.25) == pytest.approx(2500, rel=0.03)


def test_greenlet_dump_is_opt_in(events) -> None:
    """The full greenlet tree is attached only when asked for."""
    agent = monitor_agent.install(transports="", greenlet_dump=True)
    wait_until(lambda: agent.monitor.running)
    gevent.spawn(unpatched_sleep, 0.25).join()
    blocked, _ = one_episode(events)
    assert any("Greenlets" in line or "Greenlet" in line for line in blocked.info[2:])


def test_shutdown_while_blocked_closes_the_episode(tmp_path) -> None:
    """A process exiting mid-block still emits the unblocked half (ended by the agent stopping)."""
    out = tmp_path / "e.jsonl"
    code = f"""
        import gevent, monitor_agent
        from gevent.monkey import get_original
        monitor_agent.install(transports="jsonl:{out}")
        gevent.sleep(0.05)
        get_original("time", "sleep")(0.3)
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    import json
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["event"] for e in events] == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]
    assert events[1]["data"]["detected_by"] == "agent stopped"
    assert sys.version_info >= (3, 10)


def test_process_stopped_while_idle_is_the_loop_not_a_callback(tmp_path) -> None:
    """A process stopped (SIGSTOP) while its hub idles: reported, but not blamed on any code."""
    out = tmp_path / "e.jsonl"
    code = f"""
        import os, subprocess, gevent, monitor_agent
        monitor_agent.install(transports="jsonl:{out}")
        gevent.sleep(0.2)
        subprocess.Popen(["sh", "-c", f"sleep 0.2; kill -STOP {{os.getpid()}}; sleep 0.4; kill -CONT {{os.getpid()}}"])
        gevent.sleep(1.5)
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    import json
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["event"] for e in events] == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]
    data = events[0]["data"]
    assert data["culprit"] in ("loop", "unknown") and data["stack"] == []
    assert 0.35 < events[1]["data"]["blocking_time"] < 0.6
