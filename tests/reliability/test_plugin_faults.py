"""Faulty plugins, monitoring functions, subscribers and transports: the rest keeps working."""
from __future__ import annotations

import json
from pathlib import Path

from ..helpers import read_jsonl, run_python
from ._record import observed


def test_transport_that_blocks_forever_or_raises(tmp_path: Path, faulty_env) -> None:
    """A transport stuck forever and one that always raises cost their own events only.

    The app's loop keeps its pace, the jsonl transport beside them gets every
    event, the stuck one drops what overflows its queue (counted), the raising
    one counts failures, and the process still exits within the flush deadline.
    """
    out = tmp_path / "events.jsonl"
    code = f"""
        import json, time, gevent, monitor_agent
        from monitor_agent.events import MemoryUsageThresholdExceeded
        agent = monitor_agent.install(transports="blackhole://x,raises://x,jsonl:{out}", queue_size=50,
                                      flush_timeout=1)
        gevent.sleep(0.05)
        beats = []
        def heartbeat():
            while True:
                beats.append(time.perf_counter()); gevent.sleep(0.01)
        gevent.spawn(heartbeat)
        for i in range(500):
            agent.emit(MemoryUsageThresholdExceeded(i, 1, None))
            gevent.sleep(0.001)
        gevent.sleep(0.3)
        gaps = max(b - a for a, b in zip(beats, beats[1:]))
        stats = agent.stats()["transports"]
        started = time.perf_counter()
        monitor_agent.uninstall()
        print(json.dumps({{"max_gap": gaps, "stats": stats, "uninstall_s": time.perf_counter() - started}}))
    """
    result = run_python(code, env=faulty_env, timeout=60)
    assert result.returncode == 0, result.stderr
    out_json = json.loads(result.stdout.splitlines()[-1])
    stats = out_json["stats"]
    stuck, raising, jsonl = stats["blackhole://x"], stats["raises://x"], stats[f"jsonl:{out}"]
    assert jsonl["sent"] == 500 and len(read_jsonl(str(out))) == 500
    assert raising["failed"] == 500 and raising["sent"] == 0
    assert stuck["sent"] == 0 and stuck["in_flight"] == 1 and stuck["queued"] == 50
    assert stuck["dropped"]["queue_full"] == 500 - 51
    assert out_json["max_gap"] < 0.1, "the app's own heartbeat greenlet never stalled"
    assert out_json["uninstall_s"] < 1.5, "flush gives up at the deadline"
    assert "transport bug" in result.stderr and result.stderr.count("transport bug") <= 3, "logged once"
    observed("transport whose emit_event blocks forever", "a plugin transport waiting on an Event",
             "queue bounded at 50, oldest dropped and counted, app loop unaffected, exit at the flush deadline",
             f"{stuck['dropped']['queue_full']} of 500 dropped (queue_full) + 51 at shutdown, on that transport only")
    observed("transport whose emit_event raises", "a plugin transport raising RuntimeError",
             "each event counted as failed, logged once, other transports unaffected",
             "500 of 500 failed on that transport, 0 elsewhere")


def test_slow_monitoring_function_does_not_delay_detection(tmp_path: Path) -> None:
    """A plugin's monitoring function that sleeps for seconds does not delay the blocking watchdog."""
    out = tmp_path / "events.jsonl"
    code = f"""
        import time, gevent, monitor_agent
        from gevent.monkey import get_original
        agent = monitor_agent.install(transports="jsonl:{out}")
        agent.monitor.add_monitoring_function(lambda hub: get_original("time", "sleep")(3), 0.1)
        gevent.sleep(0.3)
        t0 = time.time()
        get_original("time", "sleep")(0.3)
        gevent.sleep(0.1)
        print(t0)
    """
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    t0 = float(result.stdout)
    events = read_jsonl(str(out))
    assert [e["event"] for e in events] == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]
    assert events[0]["ts"] - t0 < 0.25, "reported while still blocked, not after the slow function returned"
    observed("monitoring function that sleeps for seconds", "add_monitoring_function(sleep 3 s, 0.1)",
             "blocking detection runs in its own watchdog thread and reports on time", 0)
