"""How well blocks are detected and measured: gevent's monitor against monitor_agent, side by side.

A matrix of block kinds (unpatched ``time.sleep`` in a greenlet, a pure-Python
busy loop, one C call holding the GIL, a hub callback) × durations from 0.5 T
to 5 T (T = 0.1 s), each repeated with a random phase (a random pause before
it, so it starts anywhere in the monitors' periods), in random order. Every
episode's true start and end are recorded by the program itself; every event
the monitor publishes is time-stamped by a subscriber in the monitor thread.
An event belongs to an episode when it arrives between the episode's start and
0.3 s after its end.

Reported per monitor, kind and duration: share detected; events per episode
(monitor_agent: exactly one blocked + one unblocked is the target); reported
duration within max(5 ms, 5 %) of the truth; first event no later than T + 20 ms
after the block began (for the GIL kind: after the call returned). Blocks of
0.8 T or less must produce no report at all. Targets are judged on each
episode's measured true duration (a C call's duration depends on the CPU, so
a "0.8 T" sum may really take 0.9 T on a busy machine): every block that truly
lasted ≥ 1.2 T must be detected, none that lasted ≤ 0.8 T reported. monitor_agent runs with the rate
limit off (every episode here is the same site) and default settings otherwise.

    python bench/detection.py [--repeats 20] [--monitors gevent,agent]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any, Dict, List

from _common import clean_env, machine, run_json, save, table

T = 0.1
KINDS = ["sleep", "busy", "gil", "callback"]
FACTORS = [0.5, 0.8, 1.2, 1.5, 2.0, 5.0]

PROGRAM = """
import json, os, random, sys, time
import gevent, gevent.events
from gevent.monkey import get_original

monitor = os.environ["BENCH_MONITOR"]
T = float(os.environ["BENCH_T"])
if monitor == "agent":
    import monitor_agent
    monitor_agent.install(transports="", max_blocking_time=T, blocking_rate_limit="off")

seen = []
def subscriber(event):
    name = type(event).__name__
    if name in ("EventLoopBlocked", "EventLoopUnblocked"):
        seen.append((name, time.perf_counter(), float(event.blocking_time)))
gevent.events.subscribers.append(subscriber)

sleep = get_original("time", "sleep")
clock = time.perf_counter

def busy(d):
    end = clock() + d
    while clock() < end:
        pass

# Calibrate sum(range(n)): integers per second while holding the GIL.
n = 2_000_000; t = clock(); sum(range(n)); RATE = n / (clock() - t)

episodes = json.loads(sys.argv[1])
random.seed(int(sys.argv[2]))
results = []
gevent.sleep(0.5)
for kind, d in episodes:
    gevent.sleep(0.2 + random.uniform(0, T))
    box = {}
    def block():
        box["start"] = clock()
        if kind in ("sleep", "callback"):
            sleep(d)
        elif kind == "busy":
            busy(d)
        else:
            sum(range(int(RATE * d)))
        box["end"] = clock()
    if kind == "callback":
        gevent.get_hub().loop.run_callback(block)
        while "end" not in box:
            gevent.sleep(0.01)
    else:
        gevent.spawn(block).join()
    gevent.sleep(0.35)
    results.append({"kind": kind, "target": d, "start": box["start"], "end": box["end"]})
print(json.dumps({"episodes": results, "events": seen}))
"""


def analyse(monitor: str, data: Dict[str, Any]) -> Dict[tuple, Dict[str, Any]]:
    events = data["events"]
    cells: Dict[tuple, Dict[str, Any]] = {}
    for ep in data["episodes"]:
        key = (ep["kind"], round(ep["target"] / T, 2))
        cell = cells.setdefault(key, {"n": 0, "detected": 0, "exact_pair": 0, "events": 0, "dur_ok": 0,
                                      "dur_err": [], "latency": [], "latency_ok": 0, "true": [],
                                      "must": 0, "must_hit": 0, "must_not": 0, "false_reports": 0})
        start, end = ep["start"], ep["end"]
        mine = [e for e in events if start <= e[1] <= end + 0.3]
        blocked = [e for e in mine if e[0] == "EventLoopBlocked"]
        unblocked = [e for e in mine if e[0] == "EventLoopUnblocked"]
        true = end - start
        cell["n"] += 1
        cell["true"].append(true)
        cell["events"] += len(mine)
        if true >= 1.2 * T:
            cell["must"] += 1
            cell["must_hit"] += bool(blocked)
        elif true <= 0.8 * T:
            cell["must_not"] += 1
            cell["false_reports"] += len(mine)
        if blocked:
            cell["detected"] += 1
            origin = end if ep["kind"] == "gil" else start
            latency = blocked[0][1] - origin
            cell["latency"].append(latency)
            cell["latency_ok"] += latency <= T + 0.020
        if len(blocked) == 1 and len(unblocked) == 1:
            cell["exact_pair"] += 1
        measured = unblocked[0][2] if unblocked else (blocked[-1][2] if blocked else None)
        if measured is not None:
            err = abs(measured - true)
            cell["dur_err"].append(err)
            cell["dur_ok"] += err <= max(0.005, 0.05 * true)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--monitors", default="gevent,agent")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import json
    import random

    rng = random.Random(args.seed)
    episodes = [(k, f * T) for k in KINDS for f in FACTORS for _ in range(args.repeats)]
    rng.shuffle(episodes)
    rows: List[List[Any]] = []
    summary: Dict[str, Dict[str, Any]] = {}
    raw: Dict[str, Any] = {}
    for monitor in args.monitors.split(","):
        print(f"{monitor}: {len(episodes)} episodes …", file=sys.stderr, flush=True)
        env = clean_env(BENCH_MONITOR=monitor, BENCH_T=str(T))
        if monitor == "gevent":
            env.update(GEVENT_MONITOR_THREAD_ENABLE="1", GEVENT_MAX_BLOCKING_TIME=str(T),
                       GEVENT_MONITOR_PRINT_BLOCKING_REPORTS="0")
        data = run_json(PROGRAM, env, timeout=3600, args=[json.dumps(episodes), str(args.seed)])
        raw[monitor] = data
        cells = analyse(monitor, data)
        s = summary[monitor] = {"must": 0, "must_hit": 0, "must_not": 0, "false_reports": 0, "exact_pair": [],
                                "dur_ok": [], "latency_ok": []}
        for (kind, factor), c in sorted(cells.items()):
            n = c["n"]

            def pct(x: float, n: int = n) -> str:
                return f"{100 * x / n:.0f}%"

            med_err = f"{1000 * statistics.median(c['dur_err']):.1f} ms" if c["dur_err"] else "–"
            lat = f"{1000 * statistics.median(c['latency']):.0f} ms" if c["latency"] else "–"
            true = f"{1000 * statistics.median(c['true']):.0f} ms"
            rows.append([monitor, kind, f"{factor:g} T", true, pct(c["detected"]), f"{c['events'] / n:.2f}",
                         pct(c["exact_pair"]), pct(c["dur_ok"]) if c["detected"] else "–", med_err,
                         pct(c["latency_ok"]) if c["detected"] else "–", lat])
            for k in ("must", "must_hit", "must_not", "false_reports"):
                s[k] += c[k]
            if factor >= 1.2:
                s["exact_pair"].append(c["exact_pair"] / n)
                s["dur_ok"].append(c["dur_ok"] / n)
                s["latency_ok"].append(c["latency_ok"] / n)
    headers = ["monitor", "kind", "target", "true duration (median)", "detected", "events/episode", "exactly 1+1",
               "duration within max(5ms,5%)", "median duration error", "first event ≤ T+20ms",
               "median first-event latency"]
    text = table(headers, rows)
    lines = []
    for monitor, s in summary.items():
        lines.append(f"- **{monitor}**: blocks that lasted ≥ 1.2 T detected: {s['must_hit']}/{s['must']} "
                     f"({100 * s['must_hit'] / max(1, s['must']):.0f}%); reports for the {s['must_not']} blocks "
                     f"that lasted ≤ 0.8 T: {s['false_reports']}; exactly one blocked + one unblocked: "
                     f"worst cell {100 * min(s['exact_pair']):.0f}%; duration within tolerance: worst cell "
                     f"{100 * min(s['dur_ok']):.0f}%; first event ≤ T + 20 ms: worst cell "
                     f"{100 * min(s['latency_ok']):.0f}%")
    print(f"\ndetection, T = {T:g}s, {args.repeats} episodes per cell, {machine()}\n\n{text}\n\n" + "\n".join(lines))
    save("detection", {"args": vars(args), "raw": raw, "table": text, "summary": lines})


if __name__ == "__main__":
    main()
