"""The built-in transports and the publisher queue in front of every transport."""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from typing import Any, List, Mapping

import gevent
import pytest

import monitor_agent
from monitor_agent import TransportUnavailable
from monitor_agent.events import MemoryUsageThresholdExceeded
from monitor_agent.transports.base import BaseEventTransport
from monitor_agent.transports.jsonl import JsonlTransport
from monitor_agent.transports.log import LogTransport
from monitor_agent.transports.publisher import Publisher

from .helpers import read_jsonl, run_python, wait_until


class Recorder(BaseEventTransport):
    """Records what it is given; can be made to fail or stall on demand.

    A stand-in transport: a real broker cannot be made to refuse exactly the
    Nth event; the broker plugins' own tests cover real outages.
    """

    scheme = "recorder"

    def __init__(self) -> None:
        super().__init__("recorder://")
        self.bodies: List[Mapping[str, Any]] = []
        self.unavailable = False
        self.gate = threading.Event()
        self.gate.set()
        self.fail_names: set = set()

    def emit_event(self, event_name: str, event_body: Mapping[str, Any]) -> None:
        self.gate.wait()
        if self.unavailable:
            raise TransportUnavailable("down")
        if event_name in self.fail_names:
            raise ValueError("refused")
        self.bodies.append(event_body)


def _envelope(i: int) -> dict:
    return {"event": "e", "n": i}


class TestPublisher:
    """The bounded queue and its accounting."""

    def test_full_queue_drops_oldest_and_counts(self) -> None:
        """With the transport stalled, the queue keeps the newest; drops are counted; the next sent carries them."""
        transport = Recorder()
        transport.gate.clear()
        publisher = Publisher(transport, queue_size=5)
        publisher.start()
        for i in range(20):
            assert publisher.submit("e", _envelope(i)) is True
        stats = publisher.stats()
        assert stats["dropped"]["queue_full"] >= 14  # one may already be in flight
        transport.gate.set()
        assert publisher.flush(2)
        sent = [b["n"] for b in transport.bodies]
        assert sent[-5:] == [15, 16, 17, 18, 19]
        assert sum(b.get("dropped_before", 0) for b in transport.bodies) == publisher.dropped["queue_full"]
        s = publisher.stats()
        assert s["submitted"] == s["sent"] + s["failed"] + sum(s["dropped"].values()) == 20

    def test_unavailable_is_retried_until_it_works(self) -> None:
        """TransportUnavailable keeps the event and retries with backoff; nothing is lost."""
        transport = Recorder()
        transport.unavailable = True
        publisher = Publisher(transport, queue_size=100, backoff_base=0.005, backoff_cap=0.02)
        publisher.start()
        for i in range(3):
            publisher.submit("e", _envelope(i))
        time.sleep(0.2)
        assert publisher.stats()["retries"] >= 3 and not transport.bodies
        transport.unavailable = False
        assert publisher.flush(2)
        assert [b["n"] for b in transport.bodies] == [0, 1, 2]

    def test_other_errors_fail_that_event_only(self, caplog) -> None:
        """A transport that refuses one event counts it as failed, logs once, and carries on."""
        transport = Recorder()
        transport.fail_names = {"bad"}
        publisher = Publisher(transport, queue_size=100)
        publisher.start()
        with caplog.at_level(logging.WARNING, logger="monitor_agent.transports"):
            for name in ["good", "bad", "good", "bad", "good"]:
                publisher.submit(name, {"event": name})
            assert publisher.flush(2)
        assert publisher.stats()["failed"] == 2 and publisher.stats()["sent"] == 3
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1

    def test_close_gives_up_at_the_deadline(self) -> None:
        """A stalled transport costs at most the flush timeout; what is left counts as dropped at shutdown."""
        transport = Recorder()
        transport.gate.clear()
        publisher = Publisher(transport, queue_size=100)
        publisher.start()
        for i in range(10):
            publisher.submit("e", _envelope(i))
        started = time.monotonic()
        assert publisher.close(0.3) is False
        assert time.monotonic() - started < 1.0
        s = publisher.stats()
        assert s["dropped"]["shutdown"] == 10 and s["sent"] == 0
        assert publisher.submit("e", _envelope(99)) is False
        transport.gate.set()


class BatchRecorder(Recorder):
    """A Recorder that takes batches, as the Redis and RabbitMQ transports do."""

    max_batch = 8

    def __init__(self) -> None:
        super().__init__()
        self.batches: List[int] = []

    def emit_events(self, events: Any) -> None:
        self.gate.wait()
        if self.unavailable:
            raise TransportUnavailable("down")
        if any(name in self.fail_names for name, _ in events):
            raise ValueError("refused")
        self.batches.append(len(events))
        self.bodies.extend(body for _, body in events)


class TestBatches:
    """Transports with max_batch > 1 get several queued events per call, accounted as a whole."""

    def test_batches_are_bounded_and_ordered(self) -> None:
        """Queued events go out in order, at most max_batch per call."""
        transport = BatchRecorder()
        transport.gate.clear()
        publisher = Publisher(transport, queue_size=100)
        publisher.start()
        for i in range(30):
            publisher.submit("e", _envelope(i))
        transport.gate.set()
        assert publisher.flush(2)
        assert [b["n"] for b in transport.bodies] == list(range(30))
        assert max(transport.batches) == 8 and len(transport.batches) >= 4
        assert publisher.stats()["sent"] == 30

    def test_unavailable_retries_the_whole_batch_and_failures_count_each_event(self) -> None:
        """An outage keeps the whole batch; a refused batch counts every event in it as failed."""
        transport = BatchRecorder()
        transport.unavailable = True
        transport.gate.clear()
        publisher = Publisher(transport, queue_size=100, backoff_base=0.005, backoff_cap=0.02)
        publisher.start()
        for i in range(5):
            publisher.submit("e", _envelope(i))
        transport.gate.set()
        wait_until(lambda: publisher.stats()["retries"] >= 2)
        transport.unavailable = False
        assert publisher.flush(2)
        assert [b["n"] for b in transport.bodies] == [0, 1, 2, 3, 4]
        transport.gate.clear()
        transport.fail_names = {"bad"}
        publisher.submit("bad", {"event": "bad"})
        publisher.submit("good", {"event": "good"})
        transport.gate.set()
        assert publisher.flush(2)
        s = publisher.stats()
        assert s["submitted"] == s["sent"] + s["failed"] + sum(s["dropped"].values()) == 7
        assert s["failed"] in (1, 2)  # 'good' may have been queued behind 'bad' in the same batch

    def test_dropped_before_rides_on_the_first_event_of_a_batch(self) -> None:
        """After an overflow, the first event of the next batch says how many were dropped."""
        transport = BatchRecorder()
        transport.gate.clear()
        publisher = Publisher(transport, queue_size=4)
        publisher.start()
        for i in range(20):
            publisher.submit("e", _envelope(i))
        transport.gate.set()
        assert publisher.flush(2)
        carried = [i for i, b in enumerate(transport.bodies) if b.get("dropped_before")]
        assert sum(transport.bodies[i]["dropped_before"] for i in carried) == publisher.dropped["queue_full"] > 0
        batch_starts = {sum(transport.batches[:k]) for k in range(len(transport.batches))}
        assert carried and set(carried) <= batch_starts


class TestJsonl:
    """jsonl: one envelope per line, file mode 0600."""

    def test_file_created_0600_and_appended(self, tmp_path) -> None:
        """The file is private and each event is one line."""
        path = tmp_path / "events.jsonl"
        agent = monitor_agent.install(transports=f"jsonl:{path}")
        for i in range(3):
            agent.emit(MemoryUsageThresholdExceeded(100 + i, 50, None))
        wait_until(lambda: agent.monitor.running)
        assert agent.flush(2)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        lines = read_jsonl(str(path))
        assert [e["data"]["mem_usage"] for e in lines] == [100, 101, 102]

    @pytest.mark.parametrize("url,message", [
        ("jsonl:", "a file name is missing"),
        ("jsonl://otherhost/x.jsonl", "not host 'otherhost'"),
        ("jsonl:/no/such/dir/x.jsonl", "does not exist"),
    ])
    def test_bad_urls(self, url: str, message: str) -> None:
        """Unusable jsonl URLs fail at install() with the reason."""
        with pytest.raises(monitor_agent.ConfigError, match=message):
            monitor_agent.install(transports=url)

    def test_relative_and_percent_encoded_paths(self, tmp_path, monkeypatch) -> None:
        """jsonl:relative.jsonl is relative to the working directory; %20 decodes."""
        monkeypatch.chdir(tmp_path)
        assert JsonlTransport("jsonl:rel.jsonl").path == str(tmp_path / "rel.jsonl")
        assert JsonlTransport(f"jsonl://{tmp_path}/a%20b.jsonl").path == str(tmp_path / "a b.jsonl")


class TestLog:
    """log: one readable line, stack at debug."""

    def test_line_and_debug_stack(self, caplog) -> None:
        """Blocked events log at WARNING with the culprit frame; the stack goes to DEBUG."""
        transport = LogTransport("log")
        body = {"event": "gevent.event_loop_blocked", "data": {
            "blocking_time": 0.2, "threshold": 0.1, "episode": 3, "greenlet": "fetch-7",
            "stack": [{"file": "/srv/app.py", "line": 12, "function": "fetch", "code": "x()", "app": True}]}}
        with caplog.at_level(logging.DEBUG, logger="monitor_agent.events"):
            transport.emit_event("gevent.event_loop_blocked", body)
        warning, debug = caplog.records
        assert warning.levelno == logging.WARNING
        assert warning.getMessage() == ("event loop blocked 0.200s (T=0.100s) by fetch-7 at fetch (app.py:12) "
                                        "[episode 3]")
        assert debug.levelno == logging.DEBUG and 'File "/srv/app.py", line 12, in fetch' in debug.getMessage()

    def test_stderr_when_logging_is_unconfigured(self) -> None:
        """With no logging configuration at all, lines still reach stderr."""
        code = """
            import gevent, monitor_agent
            from gevent.monkey import get_original
            monitor_agent.install()
            gevent.sleep(0.05)
            get_original("time", "sleep")(0.25)
            gevent.sleep(0.1)
        """
        result = run_python(code)
        assert result.returncode == 0
        lines = result.stderr.splitlines()
        assert any(" WARNING monitor_agent.events: event loop blocked" in line for line in lines), result.stderr
        assert any(" INFO monitor_agent.events: event loop unblocked" in line for line in lines), result.stderr


def test_agent_accounting_adds_up(tmp_path) -> None:
    """Per transport, submitted == sent + failed + dropped after a flush."""
    agent = monitor_agent.install(transports=f"log,jsonl:{tmp_path / 'e.jsonl'}", queue_size=10)
    wait_until(lambda: agent.monitor.running)
    for i in range(200):
        agent.emit(MemoryUsageThresholdExceeded(i, 1, None))
    agent.flush(5)
    gevent.sleep(0)
    for name, s in agent.stats()["transports"].items():
        assert s["submitted"] == 200
        assert s["sent"] + s["failed"] + sum(s["dropped"].values()) == 200, (name, s)


class TestRunOnMainThread:
    """gemstone's run_on_main_thread: hand a call to the hub, from any thread, without making a hub there."""

    def test_hands_the_call_to_the_hub_thread(self) -> None:
        """From a native thread, the call runs later in the hub's thread."""
        transport = Recorder()
        transport.set_hub(gevent.get_hub())
        ran_in: List[int] = []
        caller = threading.Thread(target=transport.run_on_main_thread,
                                  args=(lambda: ran_in.append(threading.get_ident()),))
        caller.start()
        caller.join()
        assert not ran_in, "it is queued for the hub, not run in the caller's thread"
        wait_until(lambda: ran_in)
        assert ran_in == [gevent.get_hub().thread_ident] != [caller.ident]

    def test_refuses_instead_of_making_a_hub_in_a_foreign_thread(self) -> None:
        """Without set_hub(), a native thread gets a RuntimeError, and no hub is created in it."""
        from gevent._hub_local import get_hub_if_exists

        transport = Recorder()
        seen: List[Any] = []

        def consumer() -> None:
            try:
                transport.run_on_main_thread(print)
            except RuntimeError as exc:
                seen.append(exc)
            seen.append(get_hub_if_exists())

        thread = threading.Thread(target=consumer)
        thread.start()
        thread.join()
        assert isinstance(seen[0], RuntimeError) and "set_hub" in str(seen[0])
        assert seen[1] is None
