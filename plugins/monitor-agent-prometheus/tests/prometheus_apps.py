"""Small gevent programs the tests run under the agent and the exporter, and scraping helpers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from typing import Dict, List, Mapping, Tuple

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.helpers import CAPTURED, PYTHON, clean_environ

# The app prints "URL <url> PID <pid>" when its exporter serves, then does what
# the steps file tells it, waiting for "<dir>/go-N" files between steps.
APP_HEADER = '''
import os, sys, time
{patch}
import gevent, monitor_agent
STATE = sys.argv[1]

def wait_for(name, timeout=60):
    deadline = time.perf_counter() + timeout
    while not os.path.exists(os.path.join(STATE, name)):
        if time.perf_counter() > deadline:
            sys.exit("timed out waiting for " + name)
        gevent.sleep(0.02)

def spin(seconds):
    """Hold the hub: a busy loop (time.sleep would be cooperative after patch_all)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

def announce():
    from monitor_agent_prometheus import get_exporter
    for _ in range(500):
        exporter = get_exporter()
        if exporter is not None and (exporter.url or exporter.error):
            break
        gevent.sleep(0.01)
    print("URL", exporter.url, "PID", os.getpid(), flush=True)

agent = monitor_agent.install()
gevent.sleep(0.05)
'''


def app_source(body: str, *, patch_all: bool = True) -> str:
    """A complete program: the header above, then *body* (dedented)."""
    patch = "from gevent import monkey; monkey.patch_all()" if patch_all else ""
    return APP_HEADER.format(patch=patch) + textwrap.dedent(body)


class App:
    """A running app (``python -c SOURCE STATE_DIR``) with line-by-line stdout."""

    def __init__(self, source: str, state_dir: str, env: Mapping[str, str]) -> None:
        self.state_dir = state_dir
        self.proc = subprocess.Popen([PYTHON, "-c", source, state_dir], env=dict(env), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: List[str] = []

    def read_line(self, prefix: str) -> str:
        """The next stdout line that starts with *prefix* (fails when the app exits first)."""
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                _, err = self.finish(timeout=10)
                raise AssertionError(f"app exited before printing {prefix!r}; stderr:\n{err}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line.strip()

    def urls(self, count: int = 1) -> List[Tuple[str, int]]:
        """``count`` announcements: ``(url, pid)`` pairs."""
        found = []
        for _ in range(count):
            parts = self.read_line("URL ").split()
            found.append((parts[1], int(parts[3])))
        return found

    def go(self, step: str) -> None:
        """Let the app pass ``wait_for(step)``."""
        with open(os.path.join(self.state_dir, step), "w"):
            pass

    def finish(self, timeout: float = 60) -> Tuple[str, str]:
        """Wait for the exit; return the rest of stdout and stderr."""
        out, err = self.proc.communicate(timeout=timeout)
        CAPTURED.extend([out, err])
        return out, err

    def kill(self) -> None:
        """Make sure it is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def app_env(**overrides: str) -> Dict[str, str]:
    """A clean environment with quick, deterministic agent settings."""
    settings = {"MONITOR_AGENT_MAX_BLOCKING_TIME": "50ms", "MONITOR_AGENT_TRANSPORTS": "",
                "MONITOR_AGENT_STARTUP_GRACE": "0", "PYTHONUNBUFFERED": "1"}
    settings.update(overrides)
    return clean_environ(**settings)


def scrape(url: str, accept: str | None = None, timeout: float = 10) -> Tuple[str, str]:
    """``GET url``: the body and its content type."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read().decode("utf-8")
        content_type = response.headers["Content-Type"]
    CAPTURED.append(body)
    return body, content_type


def samples(text: str) -> Dict[str, List[Sample]]:
    """Every sample of a text exposition, by sample name (parsed by prometheus_client's parser)."""
    found: Dict[str, List[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found: Mapping[str, List[Sample]], name: str, **labels: str) -> float:
    """The one sample *name* whose labels include *labels*."""
    matches = [s for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {matches}"
    return float(matches[0].value)


def wait_scrape_until(url: str, name: str, minimum: float, timeout: float = 30,
                      **labels: str) -> Dict[str, List[Sample]]:
    """Scrape until sample *name* (with *labels*) reaches *minimum*; the last parse."""
    deadline = time.monotonic() + timeout
    while True:
        found = samples(scrape(url)[0])
        matches = [s for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
        if matches and sum(s.value for s in matches) >= minimum:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} never reached {minimum}: {matches}")
        time.sleep(0.05)


def in_venv() -> str:
    """The interpreter's bin directory (for monitor-agent and gunicorn)."""
    return os.path.dirname(sys.executable)
