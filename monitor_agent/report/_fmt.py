"""Formatting shared by the text and HTML renderings."""
from __future__ import annotations

import datetime
import math
import re
from typing import List, Optional, Sequence

from .._summary import format_bytes
from .model import ProcessKey

__all__ = ["clean", "format_bytes", "format_duration", "format_span", "format_time", "process_label", "table"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """*text* safe for a terminal: control characters (ANSI escapes, newlines, bidi overrides) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                        text)


def format_duration(seconds: Optional[float]) -> str:
    """``0.2681`` -> ``0.268s``; ``75`` -> ``1m15s``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def format_time(ts: Optional[float], with_date: bool = True) -> str:
    """Epoch seconds as UTC ``2024-05-01 12:00:01.234`` (or only the time of day)."""
    if ts is None:
        return "?"
    try:
        moment = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{ts:.3f}"
    text = moment.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}"


def format_span(first: Optional[float], last: Optional[float]) -> str:
    """``2024-05-01 12:00:01.234 – 12:05:00.000 UTC (4m59s)``."""
    if first is None or last is None:
        return "no events"
    same_day = format_time(first)[:10] == format_time(last)[:10]
    return (f"{format_time(first)} – {format_time(last, with_date=not same_day)} UTC "
            f"({format_duration(last - first)})")


def process_label(key: ProcessKey) -> str:
    """``service[pid]@host``."""
    host, pid, service = key
    return f"{service}[{pid}]@{host}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = (),
          indent: str = "  ") -> List[str]:
    """Rows as aligned columns; column numbers in *right* are right-aligned. Cells must be clean already."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        parts = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in pairs]
        return (indent + "  ".join(parts)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


