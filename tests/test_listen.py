"""monitor-agent listen: the fleet view, over the jsonl transport (the broker plugins test their own)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from .helpers import clean_environ, run_cli, run_python

PRODUCER = """
import gevent, monitor_agent
from gevent.monkey import get_original
monitor_agent.install(transports="jsonl:{path}", service="{service}")
gevent.sleep(0.05)
get_original("time", "sleep")(0.2)
gevent.sleep(0.1)
"""


def _listen(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "monitor_agent.cli", "listen", *args], env=clean_environ(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "listening on" in proc.stderr.readline()
    return proc


def test_lines_from_several_processes_and_malformed_skipped(tmp_path) -> None:
    """Two processes append to one file; listen prints both, one line each, and skips garbage."""
    path = tmp_path / "fleet.jsonl"
    path.touch()
    proc = _listen(f"jsonl:{path}", "--count", "4", "--timeout", "30")
    with open(path, "a") as f:
        f.write("this is not json\n{\"event\": \"x\"}\n")
    for service in ("api", "worker"):
        assert run_python(PRODUCER.format(path=path, service=service)).returncode == 0
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    assert sum(line.startswith("api[") for line in lines) == 2
    assert sum(line.startswith("worker[") for line in lines) == 2
    for service in ("api", "worker"):
        mine = [line for line in lines if line.startswith(service + "[")]
        assert "event loop blocked" in mine[0] and "event loop unblocked after" in mine[1]
    assert "skipped 2 malformed message(s)" in err


def test_json_and_event_filter(tmp_path) -> None:
    """--json prints envelopes; --event keeps only the named events."""
    path = tmp_path / "e.jsonl"
    path.touch()
    proc = _listen(f"jsonl:{path}", "--json", "--event", "gevent.event_loop_unblocked", "--count", "1",
                   "--timeout", "30")
    assert run_python(PRODUCER.format(path=path, service="svc")).returncode == 0
    out, _ = proc.communicate(timeout=30)
    envelope = json.loads(out)
    assert envelope["event"] == "gevent.event_loop_unblocked" and envelope["source"]["service"] == "svc"


def test_timeout_without_events_is_status_1(tmp_path) -> None:
    """--count not reached before --timeout: status 1."""
    path = tmp_path / "quiet.jsonl"
    path.touch()
    started = time.monotonic()
    result = run_cli("listen", f"jsonl:{path}", "--count", "1", "--timeout", "0.5")
    assert result.returncode == 1 and time.monotonic() - started < 5


def test_publish_only_transport_is_refused() -> None:
    """log cannot receive: a one-line error, status 2."""
    result = run_cli("listen", "log")
    assert result.returncode == 2
    assert result.stderr == "monitor-agent: URL='log': the 'log' transport can only publish, not receive\n"
