"""The ``jsonl:`` transport: one envelope per line, appended to a file.

``jsonl:///abs/path.jsonl`` or ``jsonl:relative/path.jsonl`` (relative to the
working directory at install time). The file is created with mode 0600 and
opened with ``O_APPEND``, so several processes (gunicorn workers, forked
children) can share one file: each line is a single ``write()``.

It can also receive: :meth:`JsonlTransport.start_accepting_events` follows the
file like ``tail -f`` (from its current end) in a native thread, so
``monitor-agent listen jsonl:events.jsonl`` shows what every process appending
to it reports.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from .. import _native, wire
from .base import BaseEventTransport

log = logging.getLogger("monitor_agent.transports")

__all__ = ["JsonlTransport", "jsonl_path"]


def jsonl_path(url: str) -> str:
    """The absolute file path named by a ``jsonl:`` URL.

    Raises:
        ValueError: The URL names no usable path.
    """
    if url.startswith("jsonl://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"jsonl URLs name a local file: jsonl:///abs/path.jsonl, not host {parts.netloc!r}")
        path = unquote(parts.path)
    elif url.startswith("jsonl:"):
        path = unquote(url[len("jsonl:"):])
    else:
        raise ValueError("expected jsonl:///abs/path.jsonl or jsonl:relative.jsonl")
    if not path or path.endswith("/") or "\x00" in path:
        raise ValueError("expected jsonl:///abs/path.jsonl or jsonl:relative.jsonl (a file name is missing)")
    return os.path.abspath(path)


class JsonlTransport(BaseEventTransport):
    """Appends each envelope as one JSON line to a file created with mode 0600; can follow it too."""

    scheme = "jsonl"
    can_receive = True
    poll_interval = 0.1

    def __init__(self, url: str, *, for_reading: bool = False) -> None:
        super().__init__(url)
        self.path = jsonl_path(url)
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise ValueError(f"directory {directory!r} does not exist")
        self._fd = -1 if for_reading else self._open()
        self._following = False
        self._follow_done = _native.allocate_lock()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ValueError(f"cannot open {self.path!r} for appending: {exc.strerror}") from None

    def emit_event(self, event_name: str, event_body: Mapping[str, Any]) -> None:
        line = wire.encode(event_body) + b"\n"
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def after_fork_in_child(self) -> None:
        # The inherited descriptor would work (O_APPEND), but the child gets
        # its own so that closing one never affects the other.
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = self._open()


    # -- receiving -------------------------------------------------------------

    def start_accepting_events(self) -> None:
        """Follow the file from its current end in a native thread, dispatching each new envelope."""
        if self._following:
            return
        self._following = True
        self._follow_done.acquire()
        # Take the starting offset now, not in the thread: lines appended as
        # soon as this returns must be seen.
        try:
            start = os.stat(self.path).st_size
        except FileNotFoundError:
            start = 0
        _native.spawn("ma:follow", self._follow, start)

    def stop_accepting_events(self) -> None:
        """Stop following; returns when the thread has finished (or after a second)."""
        if self._following:
            self._following = False
            if self._follow_done.acquire(True, 1.0):
                self._follow_done.release()

    def _follow(self, position: int) -> None:
        pending = b""
        try:
            while self._following:
                try:
                    size = os.stat(self.path).st_size
                except FileNotFoundError:
                    size = 0
                if size < position:  # truncated or replaced: start over
                    position, pending = 0, b""
                if size > position:
                    with open(self.path, "rb") as f:
                        f.seek(position)
                        chunk = f.read(size - position)
                    position += len(chunk)
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        self._receive(line)
                else:
                    _native.sleep(self.poll_interval)
        finally:
            self._follow_done.release()

    def _receive(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            envelope = wire.decode(line)
        except wire.InvalidEnvelope as exc:
            self.skip_malformed(self.path, exc)
            return
        self.on_event_received(envelope["event"], envelope)


def factory(url: str, **options: Any) -> JsonlTransport:
    """Entry point for the ``jsonl`` scheme."""
    return JsonlTransport(url, **options)
