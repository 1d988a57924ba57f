"""The wire envelope: one JSON object per event, gemstone-compatible.

::

    {"event": NAME, "schema": 1, "id": UUID, "seq": N, "ts": EPOCH_SECONDS,
     "source": {"host", "pid", "service", "agent"}, "data": {...}}

:func:`build_envelope` makes one (capping its encoded size by truncating
stacks, never splitting), :func:`encode` turns it into UTF-8 bytes,
:func:`decode` parses and validates bytes from the wire, and
:func:`validate_envelope` checks an already-parsed object.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from typing import Any, Dict, Iterator, List, Mapping

from ._version import __version__

__all__ = [
    "EVENT_NAMES",
    "SCHEMA",
    "InvalidEnvelope",
    "build_envelope",
    "decode",
    "encode",
    "reset_after_fork",
    "validate_envelope",
]

SCHEMA = 1
EVENT_NAMES = frozenset({
    "gevent.event_loop_blocked",
    "gevent.event_loop_unblocked",
    "gevent.memory_threshold_exceeded",
    "gevent.memory_under_threshold",
})
AGENT = f"monitor_agent/{__version__}"
# Deeper nesting than this in an inbound message is refused before json.loads recurses.
MAX_NESTING = 32
MAX_INBOUND_BYTES = 4 * 1024 * 1024

_host = os.uname().nodename  # socket.gethostname(), without importing socket at start-up
_seq: Iterator[int] = itertools.count(1)


def _uuid4() -> str:
    """A random (version 4) UUID string, without importing ``uuid`` at start-up."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def reset_after_fork() -> None:
    """Restart the sequence in a forked child, whose events carry a new pid."""
    global _seq
    _seq = itertools.count(1)


class InvalidEnvelope(ValueError):
    """Bytes or an object that are not a valid envelope; the message says why."""


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) with None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def encode(envelope: Mapping[str, Any]) -> bytes:
    """The envelope as compact UTF-8 JSON (no NaN)."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=repr).encode("utf-8", "replace")


# Lists in ``data`` that may be shortened to fit the size cap, least useful first.
_TRUNCATABLE = ("spawned_at", "profile", "stack")


def _shrink(data: Dict[str, Any]) -> bool:
    """Shorten the data by one step; return False when nothing is left to shorten."""
    for key in _TRUNCATABLE:
        frames = data.get(key)
        if isinstance(frames, list) and len(frames) > 1:
            # Keep the innermost frames of stacks (where the time is spent) and
            # the top entries of the profile (most samples first).
            keep = len(frames) // 2
            data[key] = frames[-keep:] if key != "profile" else frames[:keep]
            truncated = data.setdefault("truncated", [])
            if key not in truncated:
                truncated.append(key)
            return True
    for key, value in list(data.items()):
        if isinstance(value, str) and len(value) > 256:
            data[key] = value[:256] + "…"
            return True
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and isinstance(item.get("code"), str) and len(item["code"]) > 120:
                    item["code"] = item["code"][:120] + "…"
                    return True
    for key in ("memory_info", "spawned_at", "profile"):
        if key in data:
            del data[key]
            return True
    return False


def build_envelope(event_name: str, data: Mapping[str, Any], *, service: str,
                   max_size: int | None = None) -> Dict[str, Any]:
    """Build the envelope for one event.

    Args:
        event_name: The wire name, e.g. ``gevent.event_loop_blocked``.
        data: The event's fields (``wire_data()``); copied, not modified.
        service: The service name for ``source``.
        max_size: Cap on the encoded size in bytes; stacks are truncated (innermost
            frames kept) and marked ``"truncated"`` until it fits.
    """
    envelope: Dict[str, Any] = {
        "event": event_name,
        "schema": SCHEMA,
        "id": _uuid4(),
        "seq": next(_seq),
        "ts": time.time(),
        "source": {"host": _host, "pid": os.getpid(), "service": service, "agent": AGENT},
        "data": _finite(dict(data)),
    }
    if max_size is not None:
        while len(encode(envelope)) > max_size and _shrink(envelope["data"]):
            pass
    return envelope


def finite_number(value: Any) -> float | None:
    """*value* as a float if it is a finite JSON number (not a bool, not 10**400), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def _depth_ok(raw: str) -> bool:
    if raw.count("[") + raw.count("{") <= MAX_NESTING:
        return True  # cannot nest deeper than it has brackets (the common case, in C speed)
    depth = 0
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def decode(payload: bytes | str) -> Dict[str, Any]:
    """Parse and validate an envelope received from a broker or read from a file.

    Raises:
        InvalidEnvelope: Not UTF-8, not JSON, too large, too deeply nested, or not
            of the envelope's shape.
    """
    obj = loads(payload)
    validate_envelope(obj)
    return obj  # type: ignore[no-any-return]


def loads(payload: bytes | str) -> Any:
    """Parse inbound JSON safely: size-capped, UTF-8, nesting-capped, no NaN (any JSON value).

    Raises:
        InvalidEnvelope: Why it cannot be parsed.
    """
    if isinstance(payload, (bytes, bytearray, memoryview)):
        if len(payload) > MAX_INBOUND_BYTES:
            raise InvalidEnvelope(f"message of {len(payload)} bytes exceeds {MAX_INBOUND_BYTES}")
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEnvelope(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    elif isinstance(payload, str):
        text = payload
        if len(text) > MAX_INBOUND_BYTES:
            raise InvalidEnvelope(f"message of {len(text)} characters exceeds {MAX_INBOUND_BYTES}")
    else:
        raise InvalidEnvelope(f"expected bytes or str, got {type(payload).__name__}")
    if not _depth_ok(text):
        raise InvalidEnvelope(f"nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidEnvelope(f"not JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def validate_envelope(obj: object) -> None:
    """Check that *obj* has the envelope's shape.

    Raises:
        InvalidEnvelope: With the first problem found.
    """
    if not isinstance(obj, dict):
        raise InvalidEnvelope(f"expected a JSON object, got {type(obj).__name__}")
    problems: List[str] = []
    if not isinstance(obj.get("event"), str) or not obj["event"]:
        problems.append("'event' must be a non-empty string")
    if obj.get("schema") != SCHEMA:
        problems.append(f"'schema' must be {SCHEMA}")
    if not isinstance(obj.get("id"), str):
        problems.append("'id' must be a string")
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        problems.append("'seq' must be a non-negative integer")
    if finite_number(obj.get("ts")) is None:
        problems.append("'ts' must be a number")
    source = obj.get("source")
    if not isinstance(source, dict):
        problems.append("'source' must be an object")
    else:
        pid = source.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            problems.append("'source.pid' must be an integer")
        for key in ("host", "service"):
            if not isinstance(source.get(key), str):
                problems.append(f"'source.{key}' must be a string")
    if not isinstance(obj.get("data"), dict):
        problems.append("'data' must be an object")
    if problems:
        raise InvalidEnvelope("; ".join(problems))
