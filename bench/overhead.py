"""What monitoring costs the application: throughput with no monitor, gevent's, and monitor_agent's.

Two workloads, each run in fresh interpreters, modes alternating round by round
so that machine drift hits all modes alike; medians and the median of per-round
ratios to "no monitor" are reported:

* ``switch``: 100 greenlets doing ``gevent.sleep(0)`` in a loop for a fixed time
  (the switch-heavy case where gevent's per-switch tracer hurts most);
* ``pywsgi``: a ``gevent.pywsgi`` server answering a small WSGI app, loaded by
  ``wrk`` (``apt-get install wrk``) on the other CPU (``taskset``).

Modes: ``none``; ``gevent`` (``GEVENT_MONITOR_THREAD_ENABLE=1``, gevent's own
monitor thread and tracer); ``agent`` (``monitor_agent.install()`` with default
settings, i.e. the heartbeat detector and the log transport); and, for
reference, ``agent-tracer`` (the opt-in tracer mode).

    python bench/overhead.py [--rounds 7] [--seconds 3] [--workloads switch,pywsgi]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List

from _common import PYTHON, alternate, clean_env, machine, median_ratios, run_json, save, table

MODES = ["none", "gevent", "agent", "agent-tracer"]

SETUP = """
import os, monitor_agent
mode = os.environ["BENCH_MODE"]
if mode == "agent":
    monitor_agent.install()
elif mode == "agent-tracer":
    monitor_agent.install(blocking_detection="tracer")
"""

SWITCH = SETUP + """
import json, time, gevent
N, SECONDS = 100, float(os.environ["BENCH_SECONDS"])
counts = [0] * N
stop = False

def worker(i):
    sleep = gevent.sleep
    while not stop:
        sleep(0)
        counts[i] += 1

greenlets = [gevent.spawn(worker, i) for i in range(N)]
gevent.sleep(0.3)                     # warm-up; the monitors are running by now
before = sum(counts); t0 = time.perf_counter()
gevent.sleep(SECONDS)   # the hub runs the workers; the timer wakes us after SECONDS
elapsed = time.perf_counter() - t0; done = sum(counts) - before
stop = True
gevent.joinall(greenlets)
print(json.dumps({"switches_per_s": done / elapsed}))
"""

SERVER = SETUP + """
import sys, socket, gevent, gevent.pywsgi
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world\\n"]
# pywsgi writes headers and body separately: without TCP_NODELAY (inherited by
# accepted sockets on Linux) every response waits 40 ms for a delayed ACK.
listener = gevent.socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(1024)
server = gevent.pywsgi.WSGIServer(listener, app, log=None, error_log=None)
server.serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def _taskset(cpu: int) -> List[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def measure_switch(mode: str, seconds: float) -> float:
    env = clean_env(BENCH_MODE=mode, BENCH_SECONDS=str(seconds))
    if mode == "gevent":
        env["GEVENT_MONITOR_THREAD_ENABLE"] = "1"
    return float(run_json(SWITCH, env, prefix=_taskset(0))["switches_per_s"])


def measure_pywsgi(mode: str, seconds: float) -> float:
    env = clean_env(BENCH_MODE=mode)
    if mode == "gevent":
        env["GEVENT_MONITOR_THREAD_ENABLE"] = "1"
    port = _free_port()
    server = subprocess.Popen([*_taskset(0), PYTHON, "-c", SERVER, str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_port(port)
        subprocess.run([*_taskset(1), "wrk", "-t1", "-c16", "-d1s", f"http://127.0.0.1:{port}/"],
                       capture_output=True, check=True)  # warm-up
        out = subprocess.run([*_taskset(1), "wrk", "-t1", "-c16", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True, check=True).stdout
    finally:
        server.kill()
        server.wait()
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workloads", default="switch,pywsgi")
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    if "pywsgi" in workloads and not shutil.which("wrk"):
        sys.exit("wrk is needed for the pywsgi workload: apt-get install wrk")
    measures = {"switch": measure_switch, "pywsgi": measure_pywsgi}
    units = {"switch": "switches/s", "pywsgi": "requests/s"}
    out: Dict[str, Dict[str, object]] = {}
    rows = []
    for workload in workloads:
        print(f"{workload}:", file=sys.stderr)
        results = alternate(MODES, args.rounds, lambda m, w=workload: measures[w](m, args.seconds))
        ratios = median_ratios(results, "none")
        out[workload] = {"results": results, "ratios": ratios}
        for mode in MODES:
            target = ""
            if mode == "agent":
                target = "met (≥ 0.98)" if ratios[mode] >= 0.98 else "MISSED (< 0.98)"
            rows.append([workload, mode, f"{statistics.median(results[mode]):,.0f} {units[workload]}",
                         f"{ratios[mode]:.3f}", target])
    text = table(["workload", "monitor", "median throughput", "median ratio to none", "target ≥ 0.98"], rows)
    print(f"\noverhead, {args.rounds} alternating rounds of {args.seconds:g}s, {machine()}\n\n{text}")
    save("overhead", {"args": vars(args), "data": out, "table": text})


if __name__ == "__main__":
    main()
