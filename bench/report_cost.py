"""What building one blocked-loop report costs, with 10, 1,000 and 10,000 live greenlets.

In a fresh interpreter, N greenlets sleep while a culprit greenlet blocks the
loop. monitor_agent: the time and peak Python memory (tracemalloc) of the
watchdog's whole "open episode" step: reading the hub thread's stack, naming the
culprit greenlet, building the EventLoopBlocked event, notifying subscribers and
building the wire envelope for a transport. gevent: the same for the report its
monitor builds for every event (``GreenletTracer.did_block_hub_report``, which
formats the run info of every greenlet by walking all objects), called from a
native thread while the loop is blocked, as gevent's monitor thread does.
Medians over 5 blocks per size; time and memory come from separate runs
(tracemalloc slows everything it traces).

    python bench/report_cost.py
"""
from __future__ import annotations

import argparse
import statistics

from _common import clean_env, machine, run_json, save, table

PROGRAM = """
import json, os, sys, time, tracemalloc, threading
import gevent
from gevent.monkey import get_original
N = int(sys.argv[1]); which = sys.argv[2]; traced = sys.argv[3] == "memory"
sleep = get_original("time", "sleep")
start_thread = get_original("_thread", "start_new_thread")
crowd = [gevent.spawn(gevent.sleep, 600) for _ in range(N)]
gevent.sleep(0.2)
samples = []
if traced:   # a separate pass: tracing every allocation slows everything down
    tracemalloc.start()
else:
    tracemalloc.reset_peak = lambda: None
    tracemalloc.get_traced_memory = lambda: (0, 0)

if which == "agent":
    import monitor_agent
    from monitor_agent.blocking.detector import BlockingDetector
    agent = monitor_agent.install(transports="jsonl:/dev/null", blocking_rate_limit="off")
    original = BlockingDetector._open
    def timed_open(self, *args):
        tracemalloc.reset_peak(); base = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        original(self, *args)
        samples.append((time.perf_counter() - t, tracemalloc.get_traced_memory()[1] - base))
    BlockingDetector._open = timed_open
    gevent.sleep(0.1)
else:
    from gevent._tracer import GreenletTracer
    tracer = GreenletTracer()
    hub = gevent.get_hub()
    def gevent_report(culprit):
        sleep(0.15)   # the loop is blocked by now
        tracemalloc.reset_peak(); base = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        tracer.did_block_hub_report(hub, culprit, {"greenlet_stacks": False,
                                                  "current_thread_ident": threading.get_ident()})
        samples.append((time.perf_counter() - t, tracemalloc.get_traced_memory()[1] - base))

def culprit():
    sleep(0.4 if which == "gevent" and N >= 10000 else 0.25)

for _ in range(5):
    g = gevent.spawn(culprit)
    if which == "gevent":
        gevent.get_hub().loop.run_callback(lambda g=g: start_thread(gevent_report, (g,)))
    g.join()
    if which == "gevent":
        while len(samples) < _ + 1:
            sleep(0.05)
    gevent.sleep(0.3)
print(json.dumps({"seconds": [s for s, _ in samples], "bytes": [b for _, b in samples]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    args = parser.parse_args()
    rows = []
    raw = {}
    for n in map(int, args.sizes.split(",")):
        for which in ("gevent", "agent"):
            timed = run_json(PROGRAM, clean_env(), args=[str(n), which, "time"], timeout=600)
            traced = run_json(PROGRAM, clean_env(), args=[str(n), which, "memory"], timeout=600)
            raw[f"{which}-{n}"] = {"time": timed, "memory": traced}
            ms = 1000 * statistics.median(timed["seconds"])
            kib = statistics.median(traced["bytes"]) / 1024
            target = ""
            if which == "agent":
                target = "met (< 1 ms)" if ms < 1 else "MISSED"
            rows.append([f"{n:,}", which, f"{ms:.3f} ms", f"{kib:,.1f} KiB", target])
    text = table(["live greenlets", "report built by", "time (median of 5)", "peak memory (tracemalloc)",
                  "target: well under 1 ms"], rows)
    print(f"\nreport cost, {machine()}\n\n{text}")
    save("report_cost", {"raw": raw, "table": text})


if __name__ == "__main__":
    main()
