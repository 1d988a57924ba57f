"""Shared fixtures: every test starts and ends with no agent installed and a clean environment."""
from __future__ import annotations

import os
from typing import Iterator

import gevent.events
import pytest

import monitor_agent

from .helpers import CAPTURED, SECRET, Collector

_leaks: list = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Look for the test password in everything pytest captured from each test (logs, stdout, stderr)."""
    for name, content in report.sections:
        if SECRET in content:
            _leaks.append(f"{report.nodeid} ({name})")
    while CAPTURED:
        if SECRET in CAPTURED.pop():
            _leaks.append(f"{report.nodeid} (subprocess output or file read back)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any output of the whole suite showed the test password."""
    if _leaks:
        session.exitstatus = 1
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"SECRET LEAKED: the test password appeared in the output of {len(_leaks)} "
                                f"place(s):", red=True)
            for where in sorted(set(_leaks)):
                reporter.write_line(f"  {where}", red=True)


@pytest.fixture(autouse=True)
def _fresh_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MONITOR_AGENT_*/GEVENT_* variables leak in, and no agent outlives its test."""
    for key in list(os.environ):
        if key.startswith(("MONITOR_AGENT_", "GEVENT_")) and key != "MONITOR_AGENT_REQUIRE_BROKERS":
            monkeypatch.delenv(key)
    monitor_agent.uninstall(timeout=1)
    yield
    monitor_agent.uninstall(timeout=1)


@pytest.fixture
def events() -> Iterator[Collector]:
    """Events delivered to a plain gevent.events (zope.event) subscriber."""
    collector = Collector()
    gevent.events.subscribers.append(collector)
    yield collector
    gevent.events.subscribers.remove(collector)
