"""A bounded queue in front of a transport, drained by a native thread.

``submit()`` is what the monitor thread calls: O(1), never blocks, never
raises. When the queue is full the *oldest* queued event is dropped (the newest
say most about the present) and counted as ``queue_full``; the next event that
gets through carries ``dropped_before`` so consumers know what they missed.

Every submitted event ends up in exactly one counter: ``sent``, ``failed``
(the transport refused that event) or ``dropped[reason]``; until then it is
``queued`` or ``in_flight``. So ``submitted == sent + failed + sum(dropped) +
queued + in_flight`` at all times.
"""
from __future__ import annotations

import collections
import logging
import os
from typing import Any, Deque, Dict, List, Mapping, Tuple

from .. import _native
from .._logonce import LogOnce
from .._redact import redact_text
from .base import BaseEventTransport, TransportUnavailable

__all__ = ["Publisher", "backoff_delay"]

log = logging.getLogger("monitor_agent.transports")

Item = Tuple[str, Mapping[str, Any]]

#: A publisher thread busy encoding and sending releases the GIL at least this
#: often (seconds). Without it, the hub's thread waits up to the interpreter's
#: switch interval (5 ms) for the GIL each time it wakes during a burst.
YIELD_EVERY = 0.0005
#: ...for this long: time.sleep(0) releases the GIL but usually takes it right
#: back before a waiting thread wakes.
YIELD_FOR = 0.00005


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """The pause before retry number *attempt* (0, 1, …): base·2^attempt, capped, times a jitter in [0.5, 1].

    The jitter comes from ``os.urandom``, not the random module: nothing may
    be imported in a background thread (see ``BaseEventTransport.prepare``).
    """
    jitter = 0.5 + int.from_bytes(os.urandom(2), "big") / 131070
    return float(min(cap, base * 2.0 ** min(attempt, 16)) * jitter)


class Publisher:
    """Owns one transport's queue, publisher thread and delivery counters.

    Args:
        transport: The transport to feed.
        queue_size: Bound of the queue.
        backoff_base: First retry delay after :class:`TransportUnavailable`, in seconds.
        backoff_cap: Longest retry delay.
    """

    def __init__(self, transport: BaseEventTransport, queue_size: int, *,
                 backoff_base: float = 0.05, backoff_cap: float = 2.0) -> None:
        self.transport = transport
        self.queue_size = queue_size
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._log = LogOnce(log)
        self._reset_state()

    def _reset_state(self) -> None:
        self._lock = _native.allocate_lock()
        self._wakeup = _native.Wakeup()
        self._done = _native.allocate_lock()
        self._queue: Deque[Item] = collections.deque()
        self._in_flight: List[Item] = []
        self._dropped_since_send = 0
        self._stopping = False  # drain the queue, then exit
        self._abort = False  # give up now; count what is left as dropped
        self._running = False
        self.submitted = 0
        self.sent = 0
        self.failed = 0
        self.retries = 0
        self.dropped: Dict[str, int] = {"queue_full": 0, "shutdown": 0}
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        """The transport's URL, password redacted."""
        return self.transport.describe()

    # -- producer side (monitor thread) -----------------------------------

    def start(self) -> None:
        """Let the transport prepare (in the calling, hub thread), then start the publisher thread."""
        if self._running:
            return
        try:
            self.transport.prepare()
        except Exception as exc:  # noqa: BLE001 - a transport that cannot prepare fails its events, not the app
            self.last_error = redact_text(f"{type(exc).__name__}: {exc}")
            self._log.warn("prepare", "transport %s could not prepare: %s", self.name, self.last_error,
                           exc_info=True)
        self._running = True
        self._done.acquire()
        _native.spawn(f"ma:{self.transport.scheme or 'publish'}"[:15], self._run)

    def submit(self, event_name: str, envelope: Mapping[str, Any]) -> bool:
        """Queue one event; O(1), never blocks. Returns False only after :meth:`close`."""
        with self._lock:
            self.submitted += 1
            if self._stopping:
                self.dropped["shutdown"] += 1
                return False
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped["queue_full"] += 1
                self._dropped_since_send += 1
            self._queue.append((event_name, envelope))
        self._wakeup.set()
        return True

    # -- consumer side (publisher thread) ---------------------------------

    def _run(self) -> None:
        try:
            yielded = _native.monotonic()
            while True:
                batch = self._take()
                if not batch:
                    break
                self._deliver(batch)
                now = _native.monotonic()
                if now - yielded >= YIELD_EVERY:
                    _native.sleep(YIELD_FOR)  # hand the GIL to the hub's thread, which may be waiting for it
                    yielded = now
        except BaseException:  # noqa: BLE001 - interpreter shutdown; nothing to report to
            pass
        finally:
            self._running = False
            self._done.release()

    def _take(self) -> List[Item]:
        """The next batch (up to the transport's ``max_batch`` events); empty when it is time to stop."""
        limit = max(1, self.transport.max_batch)
        while True:
            with self._lock:
                if self._abort:
                    return []
                if self._queue:
                    queue = self._queue
                    batch = [queue.popleft() for _ in range(min(limit, len(queue)))]
                    self._in_flight = batch
                    return batch
                if self._stopping:
                    return []
            self._wakeup.wait(5.0)

    def _finish(self, batch: List[Item], counter: str) -> bool:
        """Account for the in-flight *batch* once; False if close() already counted it."""
        with self._lock:
            if self._in_flight is not batch:
                return False
            self._in_flight = []
            if counter == "sent":
                self.sent += len(batch)
            elif counter == "failed":
                self.failed += len(batch)
            else:
                self.dropped[counter] += len(batch)
            return True

    def _deliver(self, batch: List[Item]) -> None:
        attempt = 0
        while True:
            dropped = self._dropped_since_send
            if dropped:  # the first event of the batch tells consumers what they missed
                (first_name, first), rest = batch[0], batch[1:]
                items = [(first_name, dict(first, dropped_before=dropped)), *rest]
            else:
                items = batch
            try:
                self.transport.emit_events(items)
            except TransportUnavailable as exc:
                self.retries += 1
                self.last_error = redact_text(f"{type(exc).__name__}: {exc}")
                self._log.warn("unavailable", "transport %s is unavailable (%s); events are queued "
                               "and retried", self.name, self.last_error)
                if self._abort:
                    self._finish(batch, "shutdown")
                    return
                self._wakeup.wait(backoff_delay(attempt, self.backoff_base, self.backoff_cap))
                attempt += 1
                continue
            except Exception as exc:  # noqa: BLE001 - a transport fault costs this event only
                self.last_error = redact_text(f"{type(exc).__name__}: {exc}")
                self._log.warn(("failed", type(exc)), "transport %s failed to send %d event(s): %s",
                               self.name, len(batch), self.last_error, exc_info=True)
                self._finish(batch, "failed")
                return
            if self._finish(batch, "sent"):
                with self._lock:
                    self._dropped_since_send -= dropped
            if attempt and self._log.forget("unavailable"):
                log.info("transport %s recovered after %d retries", self.name, attempt)
            return

    # -- lifecycle ----------------------------------------------------------

    def pending(self) -> int:
        """Events queued or in flight."""
        with self._lock:
            return len(self._queue) + len(self._in_flight)

    def flush(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the queue to drain; return whether it did."""
        deadline = _native.monotonic() + timeout
        while self.pending():
            if not self._running or _native.monotonic() >= deadline:
                return False
            self._wakeup.set()
            _native.sleep(0.005)
        try:
            self.transport.flush(max(0.0, deadline - _native.monotonic()))
        except Exception:
            log.debug("flush of %s failed", self.name, exc_info=True)
        return True

    def close(self, timeout: float) -> bool:
        """Deliver what is queued within *timeout*, then stop; what is left is dropped as ``shutdown``.

        Returns:
            Whether everything queued was delivered (or failed) in time.
        """
        with self._lock:
            self._stopping = True
        self._wakeup.set()
        drained = not self._running or bool(self._done.acquire(True, max(timeout, 0.0)))
        with self._lock:
            self._abort = True
            left = len(self._queue) + len(self._in_flight)
            self.dropped["shutdown"] += left
            self._queue.clear()
            self._in_flight = []
        self._wakeup.set()
        try:
            self.transport.close()
        except Exception:
            log.debug("closing %s failed", self.name, exc_info=True)
        return drained and not left

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: new locks, empty queue, zero counters, new thread."""
        self._reset_state()
        self._log.clear()
        self.transport.after_fork_in_child()
        self.start()

    def stats(self) -> Dict[str, Any]:
        """Counters of this transport (see the module docstring for how they add up)."""
        with self._lock:
            queued = len(self._queue)
            in_flight = len(self._in_flight)
        return {"submitted": self.submitted, "sent": self.sent, "failed": self.failed,
                "dropped": dict(self.dropped), "queued": queued, "in_flight": in_flight,
                "retries": self.retries, "last_error": self.last_error}
