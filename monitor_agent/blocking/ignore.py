"""``ignore_blocking()``: declare a block as expected.

The context manager (or decorator) registers the caller's frame; the watchdog
ignores a block whose stack contains a registered frame. That is exact per
greenlet: a greenlet that yields inside the ``with`` block does not hide a
block by another greenlet, because the other greenlet's stack does not contain
the frame. It costs two dict operations and works whether or not an agent is
installed.
"""
from __future__ import annotations

import sys
from contextlib import ContextDecorator
from types import FrameType, TracebackType
from typing import Dict, List, Type

__all__ = ["frame_is_ignored", "ignore_blocking", "ignored_frames"]

# id(frame) -> frame. Frames cannot be weakly referenced; entries are removed on exit.
ignored_frames: Dict[int, FrameType] = {}


class ignore_blocking(ContextDecorator):  # noqa: N801 - reads like contextlib's helpers
    """Context manager and decorator: a block inside is expected and not reported.

    ::

        with monitor_agent.ignore_blocking():
            legacy_client.call()          # an unpatched call we know about

        @monitor_agent.ignore_blocking()
        def warm_cache(): ...

    Blocks inside are counted as ``ignored`` in ``Agent.stats()``.
    """

    def __init__(self) -> None:
        self._frames: List[FrameType] = []

    def __enter__(self) -> "ignore_blocking":
        frame = sys._getframe(1)
        self._frames.append(frame)
        ignored_frames[id(frame)] = frame
        return self

    def __exit__(self, exc_type: Type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        frame = self._frames.pop()
        if not any(f is frame for f in self._frames):
            ignored_frames.pop(id(frame), None)


def frame_is_ignored(frame: FrameType | None, extra: Dict[int, FrameType] | None = None) -> bool:
    """Whether *frame* or any frame below it is inside an ``ignore_blocking()`` (or in *extra*)."""
    if not ignored_frames and not extra:
        return False
    while frame is not None:
        key = id(frame)
        if ignored_frames.get(key) is frame or (extra and extra.get(key) is frame):
            return True
        frame = frame.f_back
    return False
