"""Events per second through a transport to a real broker and back to a subscriber, with loop lag.

Each round starts, for every transport URL in turn (and once with no
transport as the baseline):

* a **subscriber** process: the transport's own consumer side
  (``monitor_agent.cli.listen.open_receiver``, the code ``monitor-agent listen``
  runs) counting what arrives, in its own interpreter so it takes no CPU
  time from the publishing process's GIL;
* a **publisher** process: a gevent program with ``monitor_agent.install()``.
  A native thread (standing in for the monitor thread, which is where real
  events come from) calls ``agent.emit()`` N times as fast as it can, while a
  greenlet on the hub measures its own lateness every millisecond (an
  independent loop-lag probe, the same one the reliability tests use). Like
  the real monitor thread, the emitting thread releases the GIL at least
  every 0.5 ms; a thread that never does would delay the hub by up to the
  interpreter's switch interval (5 ms) whatever the transport.

Reported per transport: events/s end to end (first emit to the last event
received by the subscriber), events/s accepted by the broker (first emit to
``agent.flush()``), and the hub's loop lag p50/p99/max during the burst,
next to the baseline's. Queues are sized so nothing is dropped; a round that
loses events is reported as such, not averaged in.

    python bench/throughput.py [--events 20000] [--rounds 3] [--rate EVENTS_PER_S] \
        [--urls redis://127.0.0.1:6379/0,amqp://guest:guest@127.0.0.1:5672/%2F]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict, List

from _common import PYTHON, clean_env, machine, run_json, save, table

from monitor_agent._redact import redact_url

SUBSCRIBER = """
import json, sys, time
from monitor_agent.cli.listen import open_receiver
from monitor_agent.wire import EVENT_NAMES
url, expected, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
transport = open_receiver(url)
state = {"n": 0, "first": None, "last": None}
def count(envelope):
    now = time.time()
    if state["first"] is None:
        state["first"] = now
    state["n"] += 1
    state["last"] = now
for name in EVENT_NAMES:
    transport.register_event_handler(count, name)
transport.start_accepting_events()
time.sleep(1.0)             # let the subscription reach the broker
print("ready", flush=True)
deadline = time.monotonic() + timeout
while state["n"] < expected and time.monotonic() < deadline:
    time.sleep(0.01)
transport.stop_accepting_events()
transport.close()
print(json.dumps({"received": state["n"], "first": state["first"], "last": state["last"],
                  "malformed": transport.malformed}), flush=True)
"""

PUBLISHER = """
import json, sys, time
import gevent
import monitor_agent
from monitor_agent import _native
from monitor_agent.events import MemoryUsageThresholdExceeded

url, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
agent = monitor_agent.install(transports=url, queue_size=n + 100)
gevent.sleep(0.3)                                   # threads up, connections made lazily
lags = []
done = {"emitting": True}

def probe():
    while done["emitting"]:
        t = time.perf_counter()
        gevent.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)

def emit_all():
    # Like the monitor thread, hand the GIL back now and then (every 0.5 ms).
    yielded = began = time.perf_counter()
    for i in range(n):
        agent.emit(MemoryUsageThresholdExceeded(100_000_000 + i, 90_000_000, None))
        now = time.perf_counter()
        if rate:                                    # paced: event i is due at i / rate
            ahead = (i + 1) / rate - (now - began)
            if ahead > 0:
                _native.sleep(ahead)
                yielded = time.perf_counter()
        if now - yielded >= 0.0005:
            _native.sleep(0.00005)
            yielded = time.perf_counter()
    done["emitted"] = time.time()

prober = gevent.spawn(probe)
gevent.sleep(0.05)
lags.clear()
start = time.time()
_native.spawn("bench-emit", emit_all)
while "emitted" not in done:
    gevent.sleep(0.01)
while not agent.flush(0):                           # poll from the hub: flush(0) never waits
    gevent.sleep(0.005)
flushed = time.time()
gevent.sleep(0.2)
done["emitting"] = False
prober.join()
stats = list(agent.stats()["transports"].values())
lags.sort()
pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000
print(json.dumps({"start": start, "flushed": flushed, "emitted": done["emitted"],
                  "lag_ms": {"p50": pick(0.5), "p99": pick(0.99), "max": lags[-1] * 1000, "n": len(lags)},
                  "transport": stats[0] if stats else None}))
"""


def one_run(url: str, n: int, rate: float, env: Dict[str, str]) -> Dict[str, Any]:
    """One publisher run against *url* ('' = no transport), with a subscriber when there is a URL."""
    subscriber = None
    if url:
        subscriber = subprocess.Popen([PYTHON, "-c", textwrap.dedent(SUBSCRIBER), url, str(n), "120"],
                                      env=env, stdout=subprocess.PIPE, text=True)
        assert subscriber.stdout is not None
        if subscriber.stdout.readline().strip() != "ready":
            raise RuntimeError(f"subscriber for {redact_url(url)} did not start")
    pub = run_json(PUBLISHER, env, args=[url, str(n), str(rate)])
    result: Dict[str, Any] = {"lag_ms": pub["lag_ms"], "transport": pub["transport"]}
    elapsed_accept = pub["flushed"] - pub["start"]
    result["accepted_per_s"] = n / elapsed_accept
    if subscriber is not None:
        out, _ = subscriber.communicate(timeout=180)
        sub = json.loads(out.strip().splitlines()[-1])
        result["received"] = sub["received"]
        if sub["received"]:
            result["end_to_end_per_s"] = sub["received"] / (sub["last"] - pub["start"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=0,
                        help="emit at this many events/s (default 0: as fast as possible)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--urls", default="redis://127.0.0.1:6379/0,amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    urls = [""] + [u for u in args.urls.split(",") if u]
    env = clean_env(MONITOR_AGENT_TRANSPORTS="")
    raw: Dict[str, List[Dict[str, Any]]] = {u: [] for u in urls}
    for r in range(args.rounds):
        for url in urls:
            run = one_run(url, args.events, args.rate, env)
            raw[url].append(run)
            shown = redact_url(url) or "none"
            print(f"  round {r + 1}/{args.rounds} {shown}: " + json.dumps(
                {k: v for k, v in run.items() if k != "transport"}), file=sys.stderr, flush=True)
            time.sleep(0.5)

    def med(runs: List[Dict[str, Any]], *path: str) -> float:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                values.append(float(value))
        return statistics.median(values) if values else float("nan")

    base_p99 = med(raw[""], "lag_ms", "p99")
    rows = []
    for url in urls:
        runs = raw[url]
        complete = sum(1 for run in runs if not url or run.get("received") == args.events)
        p99 = med(runs, "lag_ms", "p99")
        rows.append([
            redact_url(url) if url else "none (baseline)",
            f"{med(runs, 'end_to_end_per_s'):,.0f}" if url else "",
            f"{med(runs, 'accepted_per_s'):,.0f}",
            f"{med(runs, 'lag_ms', 'p50'):.2f}",
            f"{p99:.2f}" + ("" if not url else f" ({p99 - base_p99:+.2f})"),
            f"{med(runs, 'lag_ms', 'max'):.1f}",
            f"{complete}/{len(runs)}" if url else "",
        ])
    headers = ["transport", "events/s end to end (median)", "events/s accepted", "loop lag p50 ms",
               "loop lag p99 ms (vs baseline)", "loop lag max ms", "rounds with every event received"]
    text = table(headers, rows)
    pace = f"paced at {args.rate:,.0f}/s" if args.rate else "as fast as possible"
    print(f"{args.events} events per run, {pace}, {args.rounds} rounds; {machine()}\n")
    print(text)
    name = "throughput" + (f"-paced-{args.rate:.0f}" if args.rate else "")
    save(name, {"args": vars(args), "raw": {redact_url(u) or "none": v for u, v in raw.items()},
                "table": text})


if __name__ == "__main__":
    main()
