"""Uninstall in this process: the exporter lets go of gevent.events and of the stopped agent."""
from __future__ import annotations

from typing import Iterator

import gevent
import gevent.events
import pytest
from monitor_agent_prometheus import get_exporter

import monitor_agent
from tests.helpers import TEST_DEFAULTS


@pytest.fixture
def clean_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No agent before or after the test; the test defaults (exporter on a free loopback port)."""
    for key, value in TEST_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MONITOR_AGENT_TRANSPORTS", "")
    monitor_agent.uninstall(timeout=1)
    yield
    monitor_agent.uninstall(timeout=1)


@pytest.mark.usefixtures("clean_agent")
def test_uninstall_removes_the_subscriber_and_forgets_the_exporter() -> None:
    monitor_agent.install()
    exporter = get_exporter()
    assert exporter is not None
    for _ in range(200):  # the port is bound on the hub's first loop iteration
        if exporter.url:
            break
        gevent.sleep(0.01)
    assert exporter.url and exporter.subscriber in gevent.events.subscribers
    monitor_agent.uninstall(timeout=1)
    assert exporter.subscriber not in gevent.events.subscribers
    assert exporter.server is None and get_exporter() is None
    exporter.stop()  # a second stop is harmless
    monitor_agent.install()  # a new agent gets a new exporter, subscribed once
    again = get_exporter()
    assert again is not None and again is not exporter
    assert gevent.events.subscribers.count(again.subscriber) == 1
