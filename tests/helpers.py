"""Helpers for tests that run real programs and read what the agent wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence

import gevent

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRE_BROKERS = os.environ.get("MONITOR_AGENT_REQUIRE_BROKERS") == "1"

# The password every test puts in URLs. No output of the whole suite may contain
# it: the root conftest scans what pytest captured (logs, stdout, stderr) and
# everything recorded in CAPTURED (subprocess output, files read back).
SECRET = "s3cr3t-Pa55w0rd-9f3e"
CAPTURED: List[str] = []


#: Set for every test: with the Prometheus plugin installed, every agent would
#: otherwise try 127.0.0.1:9464, and concurrent test processes would compete
#: for it (port 0 = a free port each). Its own tests choose their addresses.
TEST_DEFAULTS = {"MONITOR_AGENT_PROMETHEUS_ADDR": "127.0.0.1:0"}


def clean_environ(**overrides: str) -> Dict[str, str]:
    """os.environ without any MONITOR_AGENT_* or GEVENT_* variable, plus *overrides*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_AGENT_", "GEVENT_"))}
    env["MONITOR_AGENT_REQUIRE_BROKERS"] = os.environ.get("MONITOR_AGENT_REQUIRE_BROKERS", "")
    env.update(TEST_DEFAULTS)
    env.update(overrides)
    return env


def run_python(code: str, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
               timeout: float = 60, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run *code* (dedented) in a fresh interpreter; return the completed process (text output)."""
    result = subprocess.run([PYTHON, "-c", textwrap.dedent(code), *args], env=dict(env or clean_environ()),
                            capture_output=True, text=True, timeout=timeout, cwd=cwd)
    CAPTURED.extend([result.stdout, result.stderr])
    return result


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``monitor-agent ARGS`` (as ``python -m monitor_agent.cli``)."""
    result = subprocess.run([PYTHON, "-m", "monitor_agent.cli", *args], env=dict(env or clean_environ()),
                            capture_output=True, text=True, timeout=timeout, input=input)
    CAPTURED.extend([result.stdout, result.stderr])
    return result


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    """Every envelope in a JSONL file written by the agent."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    CAPTURED.append(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def names(envelopes: Sequence[Mapping[str, Any]]) -> List[str]:
    """The event names, in order."""
    return [e["event"] for e in envelopes]


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, step: float = 0.01) -> Any:
    """Yield to the hub until *condition()* is truthy; return its value, or fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        gevent.sleep(step)


class Collector:
    """A zope.event subscriber that keeps the events it receives."""

    def __init__(self) -> None:
        self.events: List[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def of(self, cls: type) -> List[Any]:
        """The received events that are instances of *cls*."""
        return [e for e in self.events if isinstance(e, cls)]

    def wait_for(self, cls: type, count: int = 1, timeout: float = 5.0) -> List[Any]:
        """Yield to the hub until *count* events of *cls* arrived; return them."""
        wait_until(lambda: len(self.of(cls)) >= count, timeout)
        return self.of(cls)
