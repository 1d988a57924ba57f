"""Stacks from inside a C call that holds the GIL, via ``faulthandler``.

While one C call holds the GIL (``sum(range(10**9))``, a regex on a huge
string), no Python thread runs, the watchdog included. ``faulthandler``'s
``dump_traceback_later`` timer runs in C without the GIL: the watchdog keeps
pushing it into the future on every wake, so it fires only when the watchdog
itself has been starved, and then writes every thread's stack to a temporary
file. When the watchdog runs again it reads the file; the thread marked
``Current thread`` is the one that held the GIL.

Forks need care: faulthandler's timer thread does not survive ``fork()`` but
its "running" state does, so the child's next re-arm would wait forever, with
the GIL held, for a thread that is not there. The pending dump is therefore
cancelled just before every fork (under a lock the re-arm also takes) and
re-armed afterwards.
"""
from __future__ import annotations

import faulthandler
import os
import re
from typing import Dict, List, Tuple

from .. import _native
from .._frames import FrameInfo, is_app_file

__all__ = ["GilWatch", "parse_dump"]

_THREAD = re.compile(r"^(?P<current>Current thread|Thread) (?P<ident>0x[0-9a-fA-F]+) \(most recent call first\):")
_FRAME = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+) in (?P<function>.*)$')

ThreadStacks = Dict[int, Tuple[bool, List[FrameInfo]]]


def parse_dump(text: str) -> ThreadStacks:
    """Parse faulthandler output into ``{thread ident: (held_gil, frames outermost first)}``."""
    stacks: ThreadStacks = {}
    frames: List[FrameInfo] = []
    for line in text.splitlines():
        header = _THREAD.match(line)
        if header:
            frames = []
            stacks[int(header.group("ident"), 16)] = (header.group("current") == "Current thread", frames)
            continue
        m = _FRAME.match(line)
        if m and stacks:
            filename = m.group("file")
            frames.insert(0, FrameInfo(file=filename, line=int(m.group("line")), function=m.group("function"),
                                       code="", app=is_app_file(filename)))
    return stacks


class GilWatch:
    """Keeps a faulthandler dump armed *timeout* seconds ahead of the watchdog.

    Args:
        timeout: How long the watchdog may be starved before the dump fires.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.dumps = 0
        self._armed_at = -1e9
        self._armed = False
        self._lock = _native.allocate_lock()
        self._fd = -1
        self._read = 0  # bytes of the file already parsed
        self._open()

    def _open(self) -> None:
        # An anonymous in-memory file: no disk, nothing to clean up, and no
        # tempfile import at start-up. faulthandler writes at its offset;
        # collect() reads what is new since the last time.
        self._fd = os.memfd_create("monitor-agent-dump", os.MFD_CLOEXEC)
        self._read = 0

    def keepalive(self, now: float) -> None:
        """Push the dump deadline forward; called on every watchdog wake (cheap when recent)."""
        if now - self._armed_at < self.timeout / 2 or self._fd < 0:
            return
        with self._lock:
            if self._fd >= 0:
                faulthandler.dump_traceback_later(self.timeout, repeat=False, file=self._fd, exit=False)
                self._armed, self._armed_at = True, now

    def collect(self) -> ThreadStacks | None:
        """The stacks of a dump written since the last call, or None."""
        if self._fd < 0:
            return None
        size = os.fstat(self._fd).st_size
        if size <= self._read:
            return None
        raw = os.pread(self._fd, min(size - self._read, 1 << 20), self._read)
        self._read = size
        self.dumps += 1
        return parse_dump(raw.decode("utf-8", "replace"))

    def stop(self) -> None:
        """Cancel the pending dump and release the file."""
        with self._lock:
            if self._armed:
                faulthandler.cancel_dump_traceback_later()
                self._armed = False
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def before_fork(self) -> None:
        """Cancel the pending dump so the child does not inherit a timer thread it cannot join."""
        self._lock.acquire()
        if self._armed:
            faulthandler.cancel_dump_traceback_later()
            self._armed, self._armed_at = False, -1e9

    def after_fork_in_parent(self) -> None:
        """Let the watchdog re-arm on its next wake."""
        self._lock.release()

    def after_fork_in_child(self) -> None:
        """New lock, and a new file (the inherited one is shared with the parent)."""
        self._lock = _native.allocate_lock()
        if self._fd >= 0:
            os.close(self._fd)
            self._open()
        self._armed_at = -1e9
