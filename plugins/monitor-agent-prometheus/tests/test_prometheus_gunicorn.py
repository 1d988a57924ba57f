"""Real gunicorn, gevent workers: each worker serves its own /metrics on the next free port of a range."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List

import pytest
from prometheus_apps import samples, scrape

from tests.brokers import free_port, require_program, wait_for_port
from tests.helpers import CAPTURED, REPO, clean_environ

BIN = os.path.dirname(sys.executable)
SITE = "gunicorn/app.py:slow_report"


def _free_range(size: int) -> int:
    """The first port of *size* consecutive ports that were free a moment ago."""
    for _ in range(50):
        base = free_port()
        if base + size > 65535:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no free port range")


def _scrape_range(base: int, size: int) -> Dict[int, Dict[str, list]]:
    """Parsed metrics of every port of the range that answers, by the serving process's pid."""
    by_pid = {}
    for port in range(base, base + size):
        try:
            text, _ = scrape(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except (urllib.error.URLError, ConnectionError, OSError):
            continue
        found = samples(text)
        (info,) = found["monitor_agent_info"]
        by_pid[int(info.labels["pid"])] = found
    return by_pid


@pytest.mark.parametrize("launch", ["post_fork", "monitor-agent run"])
def test_each_gunicorn_worker_serves_its_own_metrics(launch: str) -> None:
    gunicorn = require_program(os.path.join(BIN, "gunicorn"))
    base, size = _free_range(4), 4
    http_port = free_port()
    env = clean_environ(MONITOR_AGENT_TRANSPORTS="",
                        MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{base}-{base + size - 1}")
    argv: List[str] = [gunicorn, "-k", "gevent", "-w", "2", "--bind", f"127.0.0.1:{http_port}"]
    if launch == "post_fork":
        argv[1:1] = ["-c", "examples/gunicorn/gunicorn.conf.py"]
    else:
        argv = [os.path.join(BIN, "monitor-agent"), "run", "--", *argv]
    proc = subprocess.Popen([*argv, "examples.gunicorn.app:app"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port("127.0.0.1", http_port, timeout=30)
        requests = 6
        for _ in range(requests):
            # 0.5 s blocks, five times the 0.1 s threshold: the monitor has time to sample the culprit's
            # stack even on a loaded machine (a missed sample would count the episode under site="unknown").
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/report?0.5", timeout=30) as response:
                assert response.read().startswith(b"report:")
        deadline = time.monotonic() + 30
        while True:
            by_pid = _scrape_range(base, size)
            episodes = sum(s.value for found in by_pid.values()
                           for s in found.get("monitor_agent_blocked_episodes_total", []) if s.labels["site"] == SITE)
            if len(by_pid) == 2 and episodes >= requests:
                break
            if time.monotonic() > deadline:
                sites = {pid: {s.labels["site"]: s.value for s in found.get("monitor_agent_blocked_episodes_total", [])}
                         for pid, found in by_pid.items()}
                raise AssertionError(f"scraped {sorted(by_pid)}, {episodes} episodes at {SITE}; all sites: {sites}")
            time.sleep(0.2)
        assert proc.pid not in by_pid, "the master runs no hub and serves no metrics"
        for pid in by_pid:
            with open(f"/proc/{pid}/stat") as f:
                assert int(f.read().rsplit(")", 1)[1].split()[1]) == proc.pid, "a worker of this master"
        assert episodes == requests
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        CAPTURED.append(out)
    assert "Traceback" not in out, out
    assert "cannot serve" not in out, out
