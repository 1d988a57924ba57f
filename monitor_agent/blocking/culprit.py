"""Who is running on the hub thread: identify the culprit of a block from its frames.

Without a per-switch tracer nothing records which greenlet is current, so the
culprit is found from the hub thread's stack, read by the watchdog:

* the outermost frame is ``Hub.run``: a hub callback (timer, ``run_callback``,
  ``link``) is running, the hub itself is the greenlet;
* the main greenlet has no saved frame (it is the one running): the main greenlet;
* otherwise a spawned greenlet, whose entry function is that frame's code.
  gevent ``Greenlet`` objects are indexed by entry code as they start (one
  ``Greenlet.add_spawn_callback``: a dict lookup and a weak-set insert per
  spawn); the running one among them is the one that is started, not dead and
  not suspended (``gr_frame is None``). Looking it up costs a few microseconds
  however many greenlets exist.

In ``tracer`` mode the switch tracer says exactly which greenlet is current and
that answer wins.
"""
from __future__ import annotations

import functools
import linecache
import weakref
from types import CodeType, FrameType
from typing import Any, Dict, List

import greenlet as greenlet_module
from gevent import Greenlet

from .._frames import HUB_FILE, FrameInfo, bottom_frame, is_app_file, is_idle_hub
from ..events import Culprit

__all__ = ["CulpritFinder"]

_active = greenlet_module.greenlet.__bool__  # started and not dead, ignoring gevent's override


def _entry_code(run: Any) -> CodeType | None:
    """The code object of the first Python frame a greenlet running *run* will have."""
    for _ in range(4):
        code = getattr(run, "__code__", None)
        if code is not None:
            return code  # type: ignore[no-any-return]
        if hasattr(run, "__func__"):
            run = run.__func__
        elif isinstance(run, functools.partial):
            run = run.func
        elif callable(run):
            run = type(run).__call__  # an instance with __call__: its method's code runs
        else:
            return None
    return None


def _spawned_at(g: Any, limit: int = 10) -> List[FrameInfo] | None:
    frame = getattr(g, "spawning_stack", None)
    frames: List[FrameInfo] = []
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        if code is not None:
            frames.append(FrameInfo(file=code.co_filename, line=frame.f_lineno, function=code.co_name,
                                    code=linecache.getline(code.co_filename, frame.f_lineno).strip(),
                                    app=is_app_file(code.co_filename)))
        frame = frame.f_back
    frames.reverse()
    return frames or None


def greenlet_name(g: Any) -> str | None:
    """A name for *g* that is safe to compute from another thread.

    An assigned ``Greenlet.name`` is used as is; gevent's generated
    ``Greenlet-N`` is not computed here (its registry is not thread-safe), so
    the entry function's name is used instead.
    """
    if g is None:
        return None
    assigned = getattr(g, "__dict__", {}).get("name")
    if isinstance(assigned, str):
        return assigned
    run = getattr(g, "__dict__", {}).get("_run") or getattr(g, "run", None)
    code = _entry_code(run)
    label = code.co_name if code is not None else type(g).__name__
    return f"{type(g).__name__} running {label}"


class CulpritFinder:
    """Maps the hub thread's current frame to a :class:`~monitor_agent.events.Culprit`.

    Args:
        hub: The monitored hub.
    """

    def __init__(self, hub: Any) -> None:
        self._hub_ref = weakref.ref(hub)
        self.main = hub.parent
        self._by_code: Dict[CodeType | None, "weakref.WeakSet[Any]"] = {}
        self._tracking = False
        self.current_from_tracer: Any = None  # set by the tracer mode, if on

    # -- spawn index ------------------------------------------------------------

    def start_tracking(self) -> None:
        """Index gevent Greenlets by entry code as they start."""
        if not self._tracking:
            Greenlet.add_spawn_callback(self._on_spawn)
            self._tracking = True

    def stop_tracking(self) -> None:
        """Stop indexing (uninstall)."""
        if self._tracking:
            Greenlet.remove_spawn_callback(self._on_spawn)
            self._tracking = False

    def _on_spawn(self, g: Any) -> None:
        code = _entry_code(g.__dict__.get("_run") or getattr(g, "_run", None))
        bucket = self._by_code.get(code)
        if bucket is None:
            bucket = self._by_code[code] = weakref.WeakSet()
        bucket.add(g)

    def _running_in(self, bucket: "weakref.WeakSet[Any]" | None, hub: Any) -> Any:
        if not bucket:
            return None
        for g in list(bucket):
            if g.parent is hub and g.gr_frame is None and _active(g):
                return g
        return None

    # -- identification --------------------------------------------------------

    def identify(self, top: FrameType | None) -> Culprit:
        """Describe what runs with *top* as the hub thread's current frame.

        A greenlet that is started and not dead but has no saved frame
        (``gr_frame is None``) is the one running in its thread: that settles
        the hub (a callback) and the main greenlet without any index.
        """
        hub = self._hub_ref()
        bottom = bottom_frame(top)
        if bottom is None:
            return Culprit("unknown")
        if is_idle_hub(top):
            return Culprit("loop", hub, "event loop")
        code = bottom.f_code
        if (code.co_filename == HUB_FILE and code.co_name == "run") or (
                hub is not None and hub.gr_frame is None and _active(hub)):
            return Culprit("callback", hub, "hub callback")
        main = self.main
        if main is not None and main.gr_frame is None and _active(main):
            return Culprit("main", main, "main greenlet")
        g = self.current_from_tracer
        if g is None or g is hub or g is main:
            g = self._running_in(self._by_code.get(code), hub)
        name = greenlet_name(g) if g is not None else f"greenlet running {code.co_name}"
        return Culprit("greenlet", g, name, _spawned_at(g) if g is not None else None)
