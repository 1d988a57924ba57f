"""The transport contract: gemstone's ``BaseEventTransport`` API.

A transport moves envelopes to one destination. The agent never calls
:meth:`BaseEventTransport.emit_event` from the monitor thread: each transport
sits behind a :class:`~monitor_agent.transports.publisher.Publisher` (a bounded
queue drained by a native thread), so ``emit_event`` may block on I/O, and
should make one attempt with its own timeouts. It signals a passing outage by
raising :class:`TransportUnavailable`; the publisher keeps the event and retries
with capped, jittered backoff. Any other exception fails that one event.

Consumers (``monitor-agent listen``, gemstone-style services) use the other half
of the API: :meth:`register_event_handler`, :meth:`start_accepting_events` and
:meth:`on_event_received`.
"""
from __future__ import annotations

import abc
import functools
import logging
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Sequence, Tuple

from gevent._hub_local import get_hub_if_exists

from .._logonce import LogOnce
from .._redact import redact_url

__all__ = ["BaseEventTransport", "EventHandler", "TransportUnavailable"]

log = logging.getLogger("monitor_agent.transports")

EventHandler = Callable[[Dict[str, Any]], Any]
ALL_EVENTS = "*"


class TransportUnavailable(ConnectionError):
    """The destination cannot take events right now (down, unreachable, timing out).

    Raised by ``emit_event``; the event is kept and retried after a backoff.
    """


class BaseEventTransport(abc.ABC):
    """Base class of every transport (gemstone's ``BaseEventTransport`` API).

    Subclasses implement :meth:`emit_event`; the rest have working defaults.

    Attributes:
        scheme: The URL scheme this transport serves (``log``, ``jsonl``, ``redis`` …).
        url: The URL it was made from, as given (may contain a password; show
            :meth:`describe` instead).
        can_receive: Whether :meth:`start_accepting_events` does anything.
    """

    scheme: ClassVar[str] = ""
    can_receive: ClassVar[bool] = False
    #: How many queued events the publisher hands to :meth:`emit_events` at once.
    max_batch: ClassVar[int] = 1

    def __init__(self, url: str) -> None:
        self.url = url
        self._handlers: Dict[str, List[EventHandler]] = {}
        self._hub: Any = None
        self.received = 0
        self.malformed = 0
        self._malformed_log = LogOnce(log)

    # -- publishing -------------------------------------------------------

    @abc.abstractmethod
    def emit_event(self, event_name: str, event_body: Mapping[str, Any]) -> None:
        """Deliver one event; called only from the transport's publisher thread.

        Args:
            event_name: The wire name, e.g. ``gevent.event_loop_blocked``.
            event_body: The envelope (a JSON-ready dict).

        Raises:
            TransportUnavailable: The destination is unreachable; retry later.
        """

    def emit_events(self, events: Sequence[Tuple[str, Mapping[str, Any]]]) -> None:
        """Deliver several events at once (up to :attr:`max_batch`); publisher thread only.

        This is what the publisher calls; by default it hands each event to
        :meth:`emit_event` in turn. A transport that can pipeline (one Redis round trip, one wait for
        RabbitMQ's confirms) overrides this and raises :attr:`max_batch`. The
        batch succeeds or fails as a whole: :class:`TransportUnavailable` keeps
        every event of it for a retry (so a consumer may see an event twice
        after an outage: delivery is at-least-once), any other exception fails
        them all.
        """
        for event_name, event_body in events:
            self.emit_event(event_name, event_body)

    def prepare(self) -> None:
        """Import client libraries and build what the publisher thread needs (optional).

        Called once in the hub's thread, on the hub's first loop iteration (and
        in a forked child before its new publisher thread starts), before
        :meth:`emit_event` is ever called. Import heavy modules here, not in
        ``emit_event``: an import running in a background thread when the
        process forks leaves the child a half-initialized module, or an import
        lock held forever. By then the application has usually called
        ``gevent.monkey.patch_all()``, so importing ``ssl`` here does not
        trigger gevent's "ssl imported before patching" warning.
        """

    def flush(self, timeout: float) -> None:
        """Push out anything buffered by the transport itself (optional)."""

    def close(self) -> None:
        """Release connections and files (optional). Called once, from the agent."""

    def after_fork_in_child(self) -> None:
        """Forget connections inherited from the parent; reconnect lazily (optional).

        Called in a forked child before any event is emitted there. Do not close
        or use the inherited sockets: they are still the parent's.
        """

    # -- consuming (gemstone API) ------------------------------------------

    def register_event_handler(self, handler_func: EventHandler, handled_event_name: str) -> None:
        """Call *handler_func(event_body)* for every received event named *handled_event_name*.

        ``"*"`` registers for every event the transport subscribes to.
        """
        self._handlers.setdefault(handled_event_name, []).append(handler_func)

    def handled_event_names(self) -> Sequence[str]:
        """The event names that have handlers (what a consumer must subscribe to)."""
        return [name for name in self._handlers if name != ALL_EVENTS]

    def on_event_received(self, event_name: str, event_body: Dict[str, Any]) -> None:
        """Dispatch one received event to its handlers; a raising handler is logged, not fatal."""
        self.received += 1
        for handler in self._handlers.get(event_name, []) + self._handlers.get(ALL_EVENTS, []):
            try:
                handler(event_body)
            except Exception:  # one bad handler must not stop the consumer
                log.exception("event handler %r failed for %s", handler, event_name)

    def skip_malformed(self, where: str, reason: object) -> None:
        """Count a received message that cannot be used, and log the first one; never fatal."""
        self.malformed += 1
        self._malformed_log.warn("malformed", "skipping a malformed message from %s (%s); such messages are "
                                 "counted, not fatal", where, reason)

    def start_accepting_events(self) -> None:
        """Start receiving events for the registered handlers (optional; no-op by default)."""

    def stop_accepting_events(self) -> None:
        """Stop receiving events (optional)."""

    def set_hub(self, hub: Any) -> None:
        """Tell the transport which hub :meth:`run_on_main_thread` hands calls to (gemstone's
        ``set_microservice``). The agent calls this; do not override."""
        self._hub = hub

    def run_on_main_thread(self, func: Callable[..., Any], args: Sequence[Any] | None = None,
                           kwargs: Mapping[str, Any] | None = None) -> None:
        """Run ``func(*args, **kwargs)`` in the hub's thread, from any thread.

        Uses ``loop.run_callback_threadsafe``, so it is safe to call from the
        consumer's native thread; it returns at once. The hub is the one given
        to :meth:`set_hub` (the agent does this for its transports; a consumer
        outside an agent calls it from the hub's thread, or its
        ``start_accepting_events`` does), else the calling thread's own hub.

        Raises:
            RuntimeError: No hub is known: :meth:`set_hub` was never called, and
                this thread has no hub (a consumer thread must never create one).
        """
        hub = self._hub
        if hub is None:
            hub = self._hub = get_hub_if_exists()
        if hub is None:
            raise RuntimeError(f"{self!r} has no hub to run {func!r} on: call set_hub(gevent.get_hub()) "
                               "or start_accepting_events() from the hub's thread first")
        call = functools.partial(func, *(args or ()), **dict(kwargs or {}))
        hub.loop.run_callback_threadsafe(call)

    # -- presentation --------------------------------------------------------

    def describe(self) -> str:
        """The URL with any password redacted."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
