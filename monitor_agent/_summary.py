"""One readable line per event, shared by the log transport and ``monitor-agent listen``."""
from __future__ import annotations

from typing import Any, Mapping

from ._frames import FrameInfo, culprit_frame, frame_label

__all__ = ["format_bytes", "summarize"]


def format_bytes(n: float | None) -> str:
    """``1536`` -> ``1.5KiB``."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"  # pragma: no cover


def _culprit(data: Mapping[str, Any]) -> str:
    stack = data.get("stack") or []
    frame: FrameInfo | None = culprit_frame(stack) if isinstance(stack, list) and stack else None
    who = data.get("greenlet") or data.get("culprit") or "?"
    return f"{who} at {frame_label(frame)}" if frame else str(who)


def summarize(envelope: Mapping[str, Any], *, with_source: bool = False) -> str:
    """A one-line description of an envelope, e.g.

    ``event loop blocked 0.152s (T=0.100s) by 'fetch-3' at fetch (app.py:12) [episode 4]``.

    Args:
        envelope: A (valid) envelope.
        with_source: Prefix the service, host and pid (for the fleet view).
    """
    data = envelope.get("data") or {}
    name = envelope.get("event", "?")
    if name == "gevent.event_loop_blocked":
        text = (f"event loop blocked {data.get('blocking_time', 0):.3f}s (T={data.get('threshold', 0):.3f}s) "
                f"by {_culprit(data)} [episode {data.get('episode', '?')}]")
        if data.get("suppressed_before"):
            text += f" ({data['suppressed_before']} similar reports suppressed)"
    elif name == "gevent.event_loop_unblocked":
        text = f"event loop unblocked after {data.get('blocking_time', 0):.3f}s; {_culprit(data)}"
        profile = data.get("profile") or []
        if profile and isinstance(profile[0], dict):
            top = profile[0]
            text += f"; most time in {frame_label(top)} ({100 * float(top.get('share', 0)):.0f}%)"  # type: ignore[arg-type]
        text += f" [episode {data.get('episode', '?')}]"
    elif name == "gevent.memory_threshold_exceeded":
        text = (f"memory usage {format_bytes(data.get('mem_usage'))} exceeds "
                f"{format_bytes(data.get('max_allowed'))}")
    elif name == "gevent.memory_under_threshold":
        text = (f"memory usage back to {format_bytes(data.get('mem_usage'))}, under "
                f"{format_bytes(data.get('max_allowed'))} (peak {format_bytes(data.get('max_memory_usage'))})")
    else:
        text = f"{name}"
    if envelope.get("dropped_before"):
        text += f" ({envelope['dropped_before']} earlier events dropped)"
    if with_source:
        src = envelope.get("source") or {}
        text = f"{src.get('service', '?')}[{src.get('pid', '?')}]@{src.get('host', '?')}: {text}"
    return text

