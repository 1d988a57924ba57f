"""The ``jsonl:`` transport: one envelope per line, appended to a file.

``jsonl:///abs/path.jsonl`` or ``jsonl:relative/path.jsonl`` (relative to the
working directory at install time). The file is created with mode 0600 and
opened with ``O_APPEND``, so several processes (gunicorn workers, forked
children) can share one file: each line is a single ``write()``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from .. import wire
from .base import BaseEventTransport

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
    """Appends each envelope as one JSON line to a file created with mode 0600."""

    scheme = "jsonl"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = jsonl_path(url)
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise ValueError(f"directory {directory!r} does not exist")
        self._fd = self._open()

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


def factory(url: str, **options: Any) -> JsonlTransport:
    """Entry point for the ``jsonl`` scheme."""
    return JsonlTransport(url, **options)
