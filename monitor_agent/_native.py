"""Native (never monkey-patched) threading and time primitives.

The agent's threads must keep running while a greenlet blocks the hub, so they
are real OS threads built from the original ``_thread`` and ``time`` functions,
exactly as gevent's own monitor thread is. They are bound once, at import, so
that a later ``gevent.monkey.patch_all()`` cannot change them underneath us.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from gevent.monkey import get_original

start_new_thread: Callable[..., int] = get_original("_thread", "start_new_thread")
_get_native_id: Callable[[], int] = get_original("_thread", "get_native_id")
allocate_lock: Callable[[], Any] = get_original("_thread", "allocate_lock")
get_ident: Callable[[], int] = get_original("_thread", "get_ident")
sleep: Callable[[float], None] = get_original("time", "sleep")

# Monotonic clocks are never patched by gevent; named here so every module
# uses the same one.
monotonic = time.perf_counter


def name_thread(name: str) -> None:
    """Give the calling native thread an OS-level name (``ps -T``, ``top -H``), best effort.

    Names start with ``ma:`` so operators can tell the agent's threads apart;
    Linux keeps 15 characters. Elsewhere this does nothing.
    """
    try:
        with open(f"/proc/self/task/{_get_native_id()}/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def spawn(name: str, function: Callable[..., Any], *args: Any) -> int:
    """Start *function(*args)* in a new native thread named *name*; return its ident."""

    def run() -> None:
        name_thread(name)
        function(*args)

    return start_new_thread(run, ())


class Wakeup:
    """An interruptible sleep for a native thread.

    ``wait(timeout)`` sleeps up to *timeout* seconds and returns early, with
    ``True``, when another thread calls :meth:`set`. It is built on a raw
    ``_thread`` lock, so it works the same before and after monkey-patching.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()

    def wait(self, timeout: float) -> bool:
        """Sleep up to *timeout* seconds; return True if woken by :meth:`set`."""
        return bool(self._lock.acquire(True, max(timeout, 0.0)))

    def set(self) -> None:
        """Wake the waiting thread (harmless if nobody waits or it is already set)."""
        try:
            self._lock.release()
        except RuntimeError:
            pass


class ThreadRun:
    """One run of a background thread: its stop flag, wake-up and completion lock.

    Each start gets a fresh run, handed to the thread. A thread that outlived
    a stop that timed out (still connecting, say) only ever sees its own,
    stopped, run and exits; a new start never waits for it.
    """

    __slots__ = ("done", "stopped", "wakeup")

    def __init__(self) -> None:
        self.stopped = False
        self.wakeup = Wakeup()
        self.done = allocate_lock()
        self.done.acquire()  # released by the thread as it exits (finished())

    def stop(self, timeout: float = 0.0) -> bool:
        """Ask the thread to exit, wake it from its sleep, and wait up to *timeout*; True if it ended."""
        self.stopped = True
        self.wakeup.set()
        if self.done.acquire(True, max(timeout, 0.0)):
            self.done.release()
            return True
        return False

    def finished(self) -> None:
        """Called by the thread as it exits."""
        self.done.release()
