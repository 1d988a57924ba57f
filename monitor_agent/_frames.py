"""Turning live frames into small, JSON-ready stack records.

Stacks are read from another thread (``sys._current_frames()``), so this module
only reads frame attributes and ``linecache``; it never walks objects.
"""
from __future__ import annotations

import linecache
import os
import sys
import zlib
from types import FrameType
from typing import Dict, Iterable, List, Sequence, Tuple

import gevent

if sys.version_info >= (3, 11):  # pragma: no cover - depends on interpreter
    from typing import TypedDict
else:  # pragma: no cover
    from typing_extensions import TypedDict

__all__ = ["FrameInfo", "culprit_frame", "extract_stack", "fingerprint", "format_stack", "is_app_file", "is_idle_hub",
           "trim_stack"]


class FrameInfo(TypedDict):
    """One stack frame as it appears on the wire."""

    file: str
    line: int
    function: str
    code: str
    app: bool


_AGENT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
GEVENT_DIR = os.path.dirname(os.path.abspath(str(gevent.__file__)))
# gevent's Hub.run: the outermost frame of every hub callback.
HUB_FILE = os.path.join(GEVENT_DIR, "hub.py")


def _library_dirs() -> Tuple[str, ...]:
    """The standard library, every site-packages on sys.path, and gevent itself."""
    stdlib = os.path.dirname(os.path.abspath(os.__file__))
    dirs = {stdlib, os.path.realpath(stdlib), GEVENT_DIR}
    dirs.update(os.path.abspath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(sorted(d + os.sep for d in dirs))


_library_dirs_cache: Tuple[str, ...] = ()
_app_cache: Dict[str, bool] = {}


def is_app_file(filename: str) -> bool:
    """True for application code: not the standard library, not an installed package, not the agent."""
    cached = _app_cache.get(filename)
    if cached is None:
        if filename.startswith("<"):
            cached = False
        else:
            global _library_dirs_cache
            if not _library_dirs_cache:  # computed on first use, off the start-up path
                _library_dirs_cache = _library_dirs()
            path = os.path.abspath(filename)
            cached = not path.startswith(_library_dirs_cache) and not path.startswith(_AGENT_DIR)
        _app_cache[filename] = cached
    return cached


def _is_agent(filename: str) -> bool:
    return filename.startswith(_AGENT_DIR)




def extract_stack(frame: FrameType | None, limit: int = 64) -> List[FrameInfo]:
    """Return the stack ending at *frame*, outermost first, trimmed for people.

    The agent's own frames are dropped, and so are the outermost frames of
    gevent's hub (``Hub.run``), which are the same for every hub callback.
    At most *limit* innermost frames are kept.
    """
    raw: List[Tuple[str, int, str]] = []
    while frame is not None and len(raw) < limit:
        code = frame.f_code
        filename = code.co_filename
        if not _is_agent(filename):
            raw.append((filename, frame.f_lineno or 0, code.co_name))
        frame = frame.f_back
    raw.reverse()
    return trim_stack([FrameInfo(file=f, line=n, function=fn, code=linecache.getline(f, n).strip(),
                                 app=is_app_file(f)) for f, n, fn in raw])


def trim_stack(stack: List[FrameInfo]) -> List[FrameInfo]:
    """Drop the agent's frames and the leading frames of gevent's hub (the same for every callback)."""
    stack = [f for f in stack if not _is_agent(f["file"])]
    while stack and stack[0]["file"] == HUB_FILE:
        del stack[0]
    return stack


def is_idle_hub(frame: FrameType | None) -> bool:
    """True when *frame* is ``Hub.run`` itself: the hub is inside libev with no Python code running."""
    return frame is not None and frame.f_code.co_filename == HUB_FILE and frame.f_code.co_name == "run"


def bottom_frame(frame: FrameType | None) -> FrameType | None:
    """The outermost frame of the stack containing *frame* (a greenlet's entry point)."""
    while frame is not None and frame.f_back is not None:
        frame = frame.f_back
    return frame


def culprit_frame(stack: Sequence[FrameInfo]) -> FrameInfo | None:
    """The innermost application frame, or the innermost frame when none is application code."""
    for info in reversed(stack):
        if info["app"]:
            return info
    return stack[-1] if stack else None


def fingerprint(stack: Sequence[FrameInfo]) -> str:
    """A stable id for a blocking site.

    Built from the application frames: the call sites leading to the innermost
    one (file, function, line) and the innermost one's function (not its line, which
    moves while a busy loop runs). Library frames below it do not count.
    """
    app = [f for f in stack if f["app"]] or list(stack[-1:])
    parts: List[str] = [f"{f['file']}:{f['function']}:{f['line']}" for f in app[:-1]]
    if app:
        parts.append(f"{app[-1]['file']}:{app[-1]['function']}")
    data = "|".join(parts).encode("utf-8", "replace")
    # Two 32-bit checksums: stable across processes (unlike hash()), and zlib is
    # already loaded where hashlib would cost milliseconds of start-up.
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def format_stack(stack: Iterable[FrameInfo]) -> List[str]:
    """Traceback-style lines for *stack* (outermost first)."""
    lines: List[str] = []
    for f in stack:
        lines.append(f'  File "{f["file"]}", line {f["line"]}, in {f["function"]}')
        if f["code"]:
            lines.append(f"    {f['code']}")
    return lines


def frame_label(info: FrameInfo | None) -> str:
    """``function (file:line)`` with the file shortened to its base name."""
    if info is None:
        return "?"
    return f"{info['function']} ({os.path.basename(info['file'])}:{info['line']})"
