"""Load: many blocked episodes and 100,000 events in bursts through a queue of 1,000."""
from __future__ import annotations

import json
from pathlib import Path

from ..helpers import read_jsonl, run_python
from ._record import observed

LOAD_APP = """
    import json, time, gevent, monitor_agent
    from monitor_agent import _native
    from monitor_agent.events import MemoryUsageThresholdExceeded

    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

    agent = monitor_agent.install(transports="down://broker,jsonl:{out}", queue_size=1000,
                                  max_blocking_time="10ms", blocking_rate_limit="50/min", flush_timeout=5)
    gevent.sleep(0.05)
    beats = []
    def heartbeat():
        while True:
            beats.append(time.perf_counter()); gevent.sleep(0.01)

    def burst(n):
        done = []
        def emit():  # like the monitor thread, it lets the hub have the GIL now and then
            for i in range(n):
                agent.emit(MemoryUsageThresholdExceeded(i, 1, None))
                if i % 20 == 0:
                    _native.sleep(0)
            done.append(1)
        _native.spawn("burst", emit)
        while not done:
            gevent.sleep(0.005)

    def drained(url):               # wait in the hub (agent.flush() would block the loop while it waits)
        while True:
            s = agent.stats()["transports"][url]
            if not s["queued"] and not s["in_flight"]:
                return
            gevent.sleep(0.01)

    started = time.perf_counter()
    # 1,000 blocked episodes: a greenlet calls the unpatched time.sleep for 20 ms.
    for i in range(1000):
        gevent.spawn(time.sleep, 0.02).join()
        gevent.sleep(0.002)
    gevent.sleep(0.1)
    burst(10_000)                        # warm up: queues full, file open, allocator settled
    drained("jsonl:{out}")
    before = rss()
    hb = gevent.spawn(heartbeat)
    for _ in range(9):
        burst(10_000)
        gevent.sleep(0.05)
    gevent.sleep(0.3)
    max_gap = max(b - a for a, b in zip(beats, beats[1:]))
    hb.kill()
    drained("jsonl:{out}")
    after = rss()
    stats = agent.stats()
    print(json.dumps({{"rss_before": before, "rss_after": after, "max_gap": max_gap,
                      "elapsed": time.perf_counter() - started,
                      "transports": stats["transports"], "blocking": stats["blocking"],
                      "by_name": stats["events"]["by_name"]}}))
"""


def test_thousand_episodes_and_100k_events_in_bursts(tmp_path: Path, faulty_env) -> None:
    """Memory stays bounded, every event is accounted for, the rate limit keeps the log quiet.

    down:// refuses every event (a broker that is down), so its queue of 1,000
    overflows; the jsonl file beside it takes what its writer keeps up with.
    """
    out = tmp_path / "events.jsonl"
    result = run_python(LOAD_APP.format(out=out), env=faulty_env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.splitlines()[-1])
    blocking = data["blocking"]
    assert blocking["episodes"] >= 900, blocking  # 20 ms blocks at T = 10 ms; a loaded machine may merge some
    assert blocking["reported"] + blocking["suppressed"] + blocking["ignored"] + blocking["in_grace"] \
        == blocking["episodes"], blocking
    # 50 per site per minute (the run takes under a minute). Besides the
    # sleeping greenlet's site, a loop starved during a burst on a loaded
    # machine may show up as a second one.
    assert blocking["reported"] <= 100, "rate-limited per site: the rest are suppressed and counted"
    assert blocking["suppressed"] >= blocking["episodes"] - 100

    emitted = sum(data["by_name"].values())
    assert data["by_name"]["gevent.memory_threshold_exceeded"] == 100_000
    down = data["transports"]["down://broker"]
    jsonl = data["transports"][f"jsonl:{out}"]
    for t in (down, jsonl):
        assert t["submitted"] == emitted
        assert t["submitted"] == t["sent"] + t["failed"] + sum(t["dropped"].values()) + t["queued"] + t["in_flight"]
    assert down["sent"] == 0 and down["dropped"]["queue_full"] >= emitted - 1001
    assert jsonl["queued"] == jsonl["in_flight"] == 0
    lines = read_jsonl(str(out))
    assert len(lines) == jsonl["sent"]
    assert sum(e.get("dropped_before", 0) for e in lines) == jsonl["dropped"]["queue_full"]

    growth = data["rss_after"] - data["rss_before"]
    assert growth < 32 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 90,000 events"
    assert data["max_gap"] < 0.5, "the app's heartbeat greenlet kept running during the bursts"
    observed("load: 1,000 blocked episodes", "a greenlet calling time.sleep(0.02) 1,000 times, T = 10 ms, "
             "rate limit 50/min", f"{blocking['episodes']} episodes: {blocking['reported']} reported, the rest "
             "suppressed and counted (one site)", "0 (suppressed episodes are counted, not lost)")
    observed("load: 100,000 events in bursts of 10,000", "queue of 1,000 per transport; one transport refusing "
             "every event, one JSONL file", f"RSS grew {growth / 2**20:.1f} MiB over the last 90,000 events; "
             f"app heartbeat max gap {data['max_gap'] * 1000:.0f} ms; every event accounted for",
             f"down: {down['dropped']['queue_full']} dropped (queue_full); jsonl: "
             f"{jsonl['dropped']['queue_full']} dropped, {jsonl['sent']} written, dropped_before on the next "
             "line says how many")
