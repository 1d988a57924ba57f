"""Streaming, fault-tolerant reading of JSONL event logs.

Every line is either handed on as a valid envelope or counted as skipped under
a short reason (``not JSON``, ``wrong schema``…), with the first place it
happened. Nothing in a log can raise out of :class:`LogReader`: bad files are
reported by :func:`check_paths` before reading starts, and bad lines are
counted. Lines are read with a size cap, so a huge line costs no more memory
than the cap.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..wire import EVENT_NAMES, MAX_INBOUND_BYTES, SCHEMA, finite_number

__all__ = ["MAX_LINE_BYTES", "LogReader", "SkipCounter", "check_paths"]

# The largest envelope the agent accepts from the wire, plus its newline.
MAX_LINE_BYTES = MAX_INBOUND_BYTES + 1
_CHUNK = 1 << 20
STDIN = "-"

ProgressCallback = Callable[[int, int, str], None]


@dataclass
class SkipCounter:
    """Counts of skipped lines by reason, with where each reason was first seen.

    Attributes:
        counts: Reason -> number of lines.
        first_seen: Reason -> ``path:line`` of its first occurrence.
    """

    counts: Dict[str, int] = field(default_factory=dict)
    first_seen: Dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        """Count one skipped line."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.first_seen.setdefault(reason, where)

    @property
    def total(self) -> int:
        """All skipped lines."""
        return sum(self.counts.values())


def check_paths(paths: Sequence[str]) -> Optional[str]:
    """Return a one-line problem with the first unreadable path, or None when all can be read."""
    if not paths:
        return "no event log given"
    for path in paths:
        if path == STDIN:
            continue
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return f"{path}: no such file"
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        if stat.S_ISDIR(mode):
            return f"{path}: is a directory, not an event log"
        if not os.access(path, os.R_OK):
            return f"{path}: permission denied"
    return None


def _size(path: str) -> int:
    """Size of a regular file, 0 when unknown (pipes, stdin)."""
    if path == STDIN:
        return 0
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _envelope_problem(obj: Any) -> Optional[str]:
    """The skip reason for a parsed line, or None for a usable envelope.

    Checks what the report relies on; ``data`` fields are checked (leniently)
    by the aggregator.
    """
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("schema") != SCHEMA:
        return "wrong or missing schema"
    event = obj.get("event")
    if not isinstance(event, str) or not event:
        return "missing event name"
    if event not in EVENT_NAMES:
        return "unknown event name"
    if finite_number(obj.get("ts")) is None:
        return "missing or bad ts"
    source = obj.get("source")
    if not isinstance(source, dict):
        return "missing source"
    pid = source.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return "missing or bad source.pid"
    if not isinstance(obj.get("data"), dict):
        return "missing data"
    return None


class LogReader:
    """Reads envelopes from JSONL files one line at a time.

    Args:
        paths: Files to read, in order (``-`` is standard input).
        progress: Called as ``progress(bytes_read, total_bytes, path)`` after
            each line; the caller throttles. ``total_bytes`` is 0 when unknown.
        max_line: Longer lines are skipped without being held in memory.

    Attributes:
        skipped: What was skipped and why.
        lines: Lines read (blank ones included).
        events: Valid envelopes handed on.
        bytes_read: Bytes consumed so far, over all files.
        total_bytes: Sum of the regular files' sizes.
    """

    def __init__(self, paths: Sequence[str], progress: ProgressCallback | None = None,
                 max_line: int = MAX_LINE_BYTES) -> None:
        self.paths = list(paths)
        self.progress = progress
        self.max_line = max_line
        self.skipped = SkipCounter()
        self.lines = 0
        self.events = 0
        self.bytes_read = 0
        self.total_bytes = sum(_size(p) for p in self.paths)
        self.read_errors: List[str] = []

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for path in self.paths:
            yield from self._read_path(path)

    def _read_path(self, path: str) -> Iterator[Dict[str, Any]]:
        try:
            stream: IO[bytes] = sys.stdin.buffer if path == STDIN else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            self.read_errors.append(f"{path}: {exc.strerror or exc}")
            return
        try:
            yield from self._read_stream(stream, path)
        except OSError as exc:  # e.g. EIO, or the file turned out to be unreadable
            self.read_errors.append(f"{path}: {exc.strerror or exc}")
        finally:
            if path != STDIN:
                stream.close()

    def _read_stream(self, stream: IO[bytes], path: str) -> Iterator[Dict[str, Any]]:
        number = 0
        for raw, complete in self._lines(stream):
            number += 1
            self.lines += 1
            if self.progress is not None:
                self.progress(self.bytes_read, self.total_bytes, path)
            if raw is None:
                self.skipped.add("line too long", f"{path}:{number}")
                continue
            envelope, reason = self._parse(raw, complete)
            if envelope is None:
                if reason:
                    self.skipped.add(reason, f"{path}:{number}")
                continue
            self.events += 1
            yield envelope

    def _lines(self, stream: IO[bytes]) -> Iterator[Tuple[Optional[bytes], bool]]:
        """Yield ``(line, ends_with_newline)``; ``(None, …)`` for a line over the cap."""
        while True:
            line = stream.readline(self.max_line)
            if not line:
                return
            self.bytes_read += len(line)
            if line.endswith(b"\n"):
                yield line, True
            elif len(line) < self.max_line:
                yield line, False  # the last line, without a newline
            else:
                # Too long: drop the rest of it in bounded chunks.
                while True:
                    rest = stream.readline(_CHUNK)
                    self.bytes_read += len(rest)
                    if not rest or rest.endswith(b"\n"):
                        break
                yield None, True

    @staticmethod
    def _parse(raw: bytes, complete: bool) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """Parse one line: ``(envelope, None)``, ``(None, reason)``, or ``(None, None)`` for a blank line."""
        if not raw.strip():
            return None, None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not UTF-8"
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            return None, "nested too deeply"
        except ValueError:
            return None, "not JSON" if complete else "truncated last line"
        problem = _envelope_problem(obj)
        if problem is not None:
            return None, problem
        return obj, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
