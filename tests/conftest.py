"""Shared fixtures: every test starts and ends with no agent installed and a clean environment."""
from __future__ import annotations

import os
from typing import Iterator

import gevent.events
import pytest

import monitor_agent

from .helpers import TEST_DEFAULTS, Collector


@pytest.fixture(autouse=True)
def _fresh_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MONITOR_AGENT_*/GEVENT_* variables leak in, and no agent outlives its test."""
    for key in list(os.environ):
        if key.startswith(("MONITOR_AGENT_", "GEVENT_")) and key != "MONITOR_AGENT_REQUIRE_BROKERS":
            monkeypatch.delenv(key)
    for key, value in TEST_DEFAULTS.items():
        monkeypatch.setenv(key, value)
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
