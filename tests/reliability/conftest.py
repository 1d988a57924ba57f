"""Fixtures for the fault-injection suite."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from ..helpers import clean_environ

FAULTY_TRANSPORTS = """
    import threading, time
    from monitor_agent import BaseEventTransport, TransportUnavailable

    class Blackhole(BaseEventTransport):
        '''emit_event never returns (a client stuck on a dead socket without a timeout).'''
        scheme = "blackhole"
        def emit_event(self, name, body):
            threading.Event().wait()

    class Raises(BaseEventTransport):
        '''emit_event always raises (a bug in the transport).'''
        scheme = "raises"
        def emit_event(self, name, body):
            raise RuntimeError("transport bug")

    class Down(BaseEventTransport):
        '''Every attempt takes 0.2 s and is refused (a broker that is down).'''
        scheme = "down"
        def emit_event(self, name, body):
            time.sleep(0.2)
            raise TransportUnavailable("connection refused")

    def blackhole(url, **options):
        return Blackhole(url)

    def raises(url, **options):
        return Raises(url)

    def down(url, **options):
        return Down(url)
"""


@pytest.fixture
def faulty_env(tmp_path: Path) -> Dict[str, str]:
    """An environment whose sys.path holds a real distribution providing blackhole://, raises:// and down://.

    These stand in for broken broker clients, which cannot be made to hang or
    refuse on demand; the broker plugins' own suites break real brokers.
    """
    root = tmp_path / "faulty"
    root.mkdir()
    (root / "faultytransports.py").write_text(textwrap.dedent(FAULTY_TRANSPORTS))
    info = root / "faultytransports-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: faultytransports\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[monitor_agent.transports]\nblackhole = faultytransports:blackhole\nraises = faultytransports:raises\n"
        "down = faultytransports:down\n")
    return clean_environ(PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
