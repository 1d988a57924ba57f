"""The wire envelope: shape, size cap, strict decoding."""
from __future__ import annotations

import json
import math

import pytest

from monitor_agent import wire
from monitor_agent.events import Culprit, EventLoopUnblocked

FRAME = {"file": "/srv/app/views.py", "line": 10, "function": "handler", "code": "time.sleep(1)", "app": True}


def _unblocked(frames: int) -> EventLoopUnblocked:
    stack = [dict(FRAME, line=i) for i in range(frames)]
    profile = [dict(FRAME, line=i, seconds=0.1, share=0.1) for i in range(10)]
    return EventLoopUnblocked(None, 0.5, ["x"], hub=None, threshold=0.1, episode=1, culprit=Culprit("main", name="m"),
                              stack=stack, started_at=1.0, detected_by="watchdog", profile=profile, samples=99)


class TestBuild:
    """build_envelope()."""

    def test_shape(self) -> None:
        """Every contract field is present, and it validates."""
        env = wire.build_envelope("gevent.event_loop_unblocked", _unblocked(3).wire_data(), service="api")
        assert set(env) == {"event", "schema", "id", "seq", "ts", "source", "data"}
        assert env["schema"] == 1 and env["source"]["service"] == "api"
        assert set(env["source"]) == {"host", "pid", "service", "agent"}
        assert env["data"]["stack"][0] == dict(FRAME, line=0)
        wire.validate_envelope(env)
        assert wire.decode(wire.encode(env)) == env

    def test_sequence_increases(self) -> None:
        """seq numbers events of this process in order."""
        a = wire.build_envelope("x", {}, service="s")
        b = wire.build_envelope("x", {}, service="s")
        assert b["seq"] == a["seq"] + 1

    def test_no_nan_on_the_wire(self) -> None:
        """NaN and infinities become null, so the body is strict JSON."""
        env = wire.build_envelope("x", {"a": math.nan, "b": [math.inf, 1.0]}, service="s")
        body = wire.encode(env).decode()
        assert json.loads(body, parse_constant=lambda c: pytest.fail(c))["data"] == {"a": None, "b": [None, 1.0]}

    def test_size_cap_truncates_stacks_not_events(self) -> None:
        """A huge stack is cut (innermost frames kept, marked) until the body fits."""
        env = wire.build_envelope("gevent.event_loop_unblocked", _unblocked(2000).wire_data(), service="s",
                                  max_size=4096)
        assert len(wire.encode(env)) <= 4096
        stack = env["data"]["stack"]
        assert 0 < len(stack) < 2000 and stack[-1]["line"] == 1999
        assert "stack" in env["data"]["truncated"]
        assert env["data"]["blocking_time"] == 0.5


class TestDecode:
    """decode() refuses anything that is not an envelope, with a reason."""

    @pytest.mark.parametrize("payload,reason", [
        (b"\xff\xfe", "not UTF-8"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"event": "x"}', "'schema' must be 1"),
        (b"[" * 100 + b"]" * 100, "nested deeper"),
        (b'{"a": NaN}', "not JSON"),
        (b" " * (wire.MAX_INBOUND_BYTES + 1), "exceeds"),
    ])
    def test_rejects(self, payload: bytes, reason: str) -> None:
        """Bad inbound bytes raise InvalidEnvelope naming the problem."""
        with pytest.raises(wire.InvalidEnvelope, match=reason):
            wire.decode(payload)
