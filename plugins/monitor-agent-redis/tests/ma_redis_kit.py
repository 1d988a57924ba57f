"""Fixtures and helpers shared by the monitor-agent-redis tests.

(A module, not a ``conftest.py``: each plugin's tests folder has no
``__init__.py``, and several plugins' ``conftest.py`` files would collide.)
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import monitor_agent
from tests.brokers import REDIS_HOST, REDIS_PORT, require_broker, require_program
from tests.helpers import CAPTURED, SECRET

SHARED_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(autouse=True)
def fresh_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MONITOR_AGENT_*/GEVENT_* variable leaks in, and no agent outlives its test."""
    for key in list(os.environ):
        if key.startswith(("MONITOR_AGENT_", "GEVENT_")) and key != "MONITOR_AGENT_REQUIRE_BROKERS":
            monkeypatch.delenv(key)
    monitor_agent.uninstall(timeout=1)
    yield
    monitor_agent.uninstall(timeout=1)


@pytest.fixture(autouse=True)
def no_secret_leak(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """The test password appears in no log record, output or subprocess output of the test.

    (The root conftest's session-wide check only sees tests under ``tests/``.)
    """
    CAPTURED.clear()
    yield
    out, err = capfd.readouterr()
    places = {"logs": caplog.text, "stdout": out, "stderr": err}
    places.update({f"subprocess/file #{i}": text for i, text in enumerate(CAPTURED)})
    CAPTURED.clear()
    leaked = [where for where, text in places.items() if SECRET in text]
    assert not leaked, f"the test password leaked into: {leaked}"


def shared_redis() -> str:
    """The URL of the shared Redis at 127.0.0.1:6379 (skip, or fail under CI, when it is down)."""
    require_broker("Redis", REDIS_HOST, REDIS_PORT)
    return SHARED_URL


def raw_client(url: str = SHARED_URL) -> Any:
    """A plain redis-py client (not our transport)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


def subscribe(channels: List[str], url: str = SHARED_URL, pattern: bool = False) -> Any:
    """A plain redis-py PubSub subscribed to *channels* (or patterns), confirmed before returning."""
    pubsub = raw_client(url).pubsub()
    (pubsub.psubscribe if pattern else pubsub.subscribe)(*channels)
    confirmed = 0
    deadline = time.monotonic() + 5
    while confirmed < len(channels):
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] in ("subscribe", "psubscribe"):
            confirmed += 1
        if time.monotonic() > deadline:
            raise AssertionError("subscription not confirmed")
    return pubsub


def collect(pubsub: Any, count: int, timeout: float = 10.0) -> List[Tuple[str, Dict[str, Any]]]:
    """Up to *count* (channel, decoded body) pairs read within *timeout* seconds."""
    got: List[Tuple[str, Dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] in ("message", "pmessage"):
            got.append((message["channel"].decode(), json.loads(message["data"])))
    return got


def tls_material(directory: str) -> Tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it.

    Returns:
        ``(cert, key, ca)`` paths.
    """
    openssl = require_program("openssl")
    ca_key, ca = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    key, csr, cert = (os.path.join(directory, name) for name in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(directory, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=monitor-agent test CA"],
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ]
    for argv in steps:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return cert, key, ca
