"""What install() adds to start-up: wall time of the call and resident memory.

Each measurement is a fresh interpreter that imports gevent and starts its hub;
the "agent" runs also import monitor_agent and call install() (default
settings: the log transport, blocking detection, no memory threshold; and a
second variant with a memory threshold, which imports psutil; both with plugins
disabled, and a third with every installed plugin enabled, e.g. the Prometheus
exporter, which imports prometheus_client and opens its port). The time counts
the import of monitor_agent and the install() call; memory is RSS after the hub
has run (the agent's threads and heartbeat started). Runs alternate between
variants; medians are reported. Bytecode caches are compiled first and used,
as after ``pip install`` (the children run without PYTHONDONTWRITEBYTECODE).

    python bench/startup.py [--rounds 15]
"""
from __future__ import annotations

import argparse
import statistics
import sys

from _common import alternate, clean_env, machine, run_json, save, table

PROGRAM = """
import json, os, time, resource
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
t0 = time.perf_counter()
import gevent
hub = gevent.get_hub()
t1 = time.perf_counter()
before = rss()
mode = {mode!r}
if mode != "none":
    import monitor_agent
    kwargs = {{"max_memory_usage": "90%"}} if mode == "agent+memory" else {{}}
    if mode != "agent+plugins":
        kwargs["disabled_plugins"] = "*"
    monitor_agent.install(**kwargs)
t2 = time.perf_counter()
gevent.sleep(0.05)   # the hub runs: the agent's threads and heartbeat start
after = rss()
print(json.dumps({{"install_ms": (t2 - t1) * 1000, "rss_delta_mb": (after - before) / 2**20,
                  "gevent_import_ms": (t1 - t0) * 1000}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    modes = ["none", "agent", "agent+memory", "agent+plugins"]
    raw: dict = {}
    import compileall
    import os

    import monitor_agent

    compileall.compile_dir(os.path.dirname(monitor_agent.__file__), quiet=1)
    compileall.compile_dir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins"), quiet=1)
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def measure(mode: str) -> float:
        out = run_json(PROGRAM.format(mode=mode), env)
        raw.setdefault(mode, []).append(out)
        return out["install_ms"]

    alternate(modes, args.rounds, measure)
    rows = []
    for mode in modes[1:]:
        install_ms = statistics.median(r["install_ms"] for r in raw[mode])
        pairs = zip(raw[mode], raw["none"], strict=True)
        delta = statistics.median(a["rss_delta_mb"] - b["rss_delta_mb"] for a, b in pairs)
        if mode == "agent+plugins":  # what the installed plugins add; no target of the core's
            rows.append([mode, f"{install_ms:.1f} ms", f"{delta:.2f} MiB", "", ""])
            continue
        rows.append([mode, f"{install_ms:.1f} ms", f"{delta:.2f} MiB", "< 50 ms, < 5 MiB",
                     "met" if install_ms < 50 and delta < 5 else "MISSED"])
    text = table(["variant", "install() wall time (median)", "RSS added (median of paired runs)", "target",
                  "result"], rows)
    print(f"\nstartup, {args.rounds} alternating rounds, {machine()}\n\n{text}")
    save("startup", {"rounds": args.rounds, "raw": raw, "table": text})


if __name__ == "__main__":
    sys.exit(main())
