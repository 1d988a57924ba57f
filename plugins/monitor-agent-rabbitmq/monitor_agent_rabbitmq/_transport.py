"""The RabbitMQ transport: gemstone's fanout exchanges, publisher confirms, one connection per native thread.

Publishing (:meth:`RabbitMqTransport.emit_events`) runs only in the
transport's publisher thread, which owns a ``pika.BlockingConnection`` made
there. Receiving (:meth:`RabbitMqTransport.start_accepting_events`) runs in
its own native thread with its own connection. pika is imported in
:meth:`RabbitMqTransport.prepare` (hub thread), never at module import.

Heartbeats: a ``BlockingConnection`` only services heartbeats while pika code
runs, and the publisher thread sleeps while there is nothing to send. So
before reusing a connection that has been idle for more than
:attr:`RabbitMqTransport.idle_check` seconds, the publisher processes pending
I/O (which reads a close or EOF the broker sent, and answers heartbeats), and
if the connection turns out to be dead (the broker dropped it for missed
heartbeats, or the network did), it reconnects at once and publishes on the
new connection. Only a failed reconnect raises ``TransportUnavailable``.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence, Set, Tuple

from monitor_agent import _native, wire
from monitor_agent._logonce import LogOnce
from monitor_agent._redact import REDACTED, redact_text
from monitor_agent.transports.base import ALL_EVENTS, BaseEventTransport, TransportUnavailable
from monitor_agent.transports.publisher import backoff_delay

from . import _realio
from ._config import AmqpSettings

__all__ = ["EXCHANGE_PREFIX", "RabbitMqTransport", "exchange_name"]

log = logging.getLogger("monitor_agent.transports.amqp")

#: gemstone's exchange naming: ``gemstone.broadcast.<event name>``.
EXCHANGE_PREFIX = "gemstone.broadcast."
#: How gemstone declares its exchanges (keep exactly: a different declaration fails with 406).
EXCHANGE_ARGUMENTS: Dict[str, Any] = {"exchange_type": "fanout", "durable": False, "auto_delete": False}
CONTENT_TYPE = "application/json"


def exchange_name(event_name: str) -> str:
    """The fanout exchange gemstone uses for *event_name*."""
    return EXCHANGE_PREFIX + event_name


class RabbitMqTransport(BaseEventTransport):
    """Publishes envelopes to gemstone's fanout exchanges with publisher confirms; can consume too.

    Args:
        url: The URL as given (``None`` for the keyword form).
        settings: The validated connection settings.
    """

    scheme = "amqp"
    can_receive = True
    max_batch = 32
    #: Process pending I/O before reusing a connection idle for longer than this (seconds).
    idle_check = 0.5

    def __init__(self, url: str | None, settings: AmqpSettings) -> None:
        super().__init__(url if url is not None else settings.url())
        self.settings = settings
        self._pika: Any = None
        self._ssl: Any = None
        self._faults = LogOnce(log)
        self._forget_connection()
        self._consumer: _native.ThreadRun | None = None  # the running consumer, if any
        self.reconnects = 0
        self.consumer_connects = 0

    # -- set-up ------------------------------------------------------------

    def prepare(self) -> None:
        """Import pika and ssl (hub thread) and make pika use real I/O in the agent's threads."""
        self._load()

    def _load(self) -> None:
        if self._pika is None:
            import ssl

            import pika
            import pika.adapters.blocking_connection

            _realio.install()
            self._ssl = _realio.ThreadAwareModule(ssl)
            self._pika = pika

    def _forget_connection(self) -> None:
        self._connection: Any = None
        self._channel: Any = None
        self._declared: Set[str] = set()
        self._unconfirmed: Set[int] = set()
        self._nacked = 0
        self._next_tag = 0
        self._last_io = 0.0
        self._owner: int | None = None  # the thread that made (and alone may drive) the connection

    def after_fork_in_child(self) -> None:
        """Forget the parent's connections without touching their sockets (they are the parent's)."""
        self._forget_connection()
        self._consumer = None

    # -- connections (called only in the thread that owns them) -----------

    def _connect(self) -> Tuple[Any, Any]:
        """A new connection and channel with confirms on, made in the calling native thread."""
        pika = self._pika
        if pika is None:  # prepare() failed (and logged why); never import here, in a background thread
            raise RuntimeError("the amqp transport could not load pika in prepare()")
        try:
            params = self.settings.connection_parameters(pika, self._ssl)
            connection = pika.BlockingConnection(params)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is an outage
            raise TransportUnavailable(_explain(exc, self.settings)) from None
        try:
            channel = connection.channel()
        except Exception as exc:  # noqa: BLE001
            _abort(connection)
            raise TransportUnavailable(_explain(exc, self.settings)) from None
        return connection, channel

    def _ensure_publisher(self) -> bool:
        """Make sure there is a live publishing connection; return whether it is a reused one."""
        if self._connection is not None:
            idle = _native.monotonic() - self._last_io
            if idle > self.idle_check:
                try:
                    self._connection.process_data_events(0)
                except Exception as exc:  # noqa: BLE001 - a dead idle connection: reconnect
                    log.debug("idle AMQP connection is gone (%s); reconnecting", _explain(exc, self.settings))
                    self._drop_publisher()
            if self._connection is not None and self._connection.is_open and self._channel.is_open:
                return True
            self._drop_publisher()
        connection, channel = self._connect()
        self._connection, self._channel = connection, channel
        self._owner = _native.get_ident()
        self.reconnects += 1
        with self._dropping_connection_on_failure():
            self._enable_confirms()
        return False

    @contextlib.contextmanager
    def _dropping_connection_on_failure(self) -> Iterator[None]:
        """Any failure inside drops the publishing connection and surfaces as TransportUnavailable."""
        try:
            yield
        except TransportUnavailable:
            self._drop_publisher()
            raise
        except Exception as exc:  # noqa: BLE001 - pika/socket errors are outages
            self._drop_publisher()
            raise TransportUnavailable(_explain(exc, self.settings)) from None

    def _enable_confirms(self) -> None:
        """Turn publisher confirms on, with our own ack callback (one wait per batch, not per message)."""
        selected: List[bool] = []
        # The BlockingChannel's confirm_delivery() waits for every message's ack;
        # registering on the underlying channel lets a whole batch share one wait.
        self._channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm,
                                             callback=lambda _frame: selected.append(True))
        self._wait_for(lambda: bool(selected), self.settings.socket_timeout + 5, "Confirm.Select")

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        done = {t for t in self._unconfirmed if t <= tag} if method.multiple else {tag}
        self._unconfirmed -= done
        if type(method).__name__ == "Nack":
            self._nacked += len(done)

    def _wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Drive the connection's I/O until *condition()* holds; TransportUnavailable after *timeout*.

        Uses the channel's own wait loop (``_flush_output``, what every
        BlockingChannel call uses) with an ioloop timer, so it returns as soon
        as the last confirm arrives; falls back to short polls if a pika
        release lacks those internals.
        """
        if not condition():
            timer_context = getattr(self._pika.adapters.blocking_connection, "_IoloopTimerContext", None)
            flush = getattr(self._channel, "_flush_output", None)
            if timer_context is not None and flush is not None:
                with timer_context(timeout, self._connection._impl) as timer:
                    flush(timer.is_ready, condition)
            else:
                deadline = _native.monotonic() + timeout
                while not condition() and _native.monotonic() < deadline:
                    self._connection.process_data_events(time_limit=0.001)
        if not condition():
            raise TransportUnavailable(f"no answer from the broker to {what} within {timeout:g}s")

    def _drop_publisher(self) -> None:
        connection, owner = self._connection, self._owner
        self._forget_connection()
        if connection is not None:
            _abort(connection, drive=owner == _native.get_ident())

    # -- publishing (publisher thread only) --------------------------------

    def emit_event(self, event_name: str, event_body: Mapping[str, Any]) -> None:
        """Publish one event and wait for the broker's confirm."""
        self.emit_events([(event_name, event_body)])

    def emit_events(self, events: Sequence[Tuple[str, Mapping[str, Any]]]) -> None:
        """Publish a batch, then wait once for the broker to confirm all of it.

        Raises:
            TransportUnavailable: The broker is unreachable, refused us, nacked or
                did not confirm in time (the connection is dropped; the next
                attempt reconnects).
        """
        bodies = [(exchange_name(name), wire.encode(body)) for name, body in events]
        with _realio.real_io():
            self._emit(bodies)

    def _emit(self, bodies: List[Tuple[str, bytes]]) -> None:
        reused = self._ensure_publisher()
        try:
            with self._dropping_connection_on_failure():
                self._publish(bodies)
            return
        except TransportUnavailable:
            if not reused:
                raise
        # The reused connection died under us (idle, broker restart): one transparent retry.
        self._ensure_publisher()
        with self._dropping_connection_on_failure():
            self._publish(bodies)

    def _publish(self, bodies: List[Tuple[str, bytes]]) -> None:
        channel = self._channel
        for exchange in dict.fromkeys(name for name, _ in bodies):
            if exchange not in self._declared:
                channel.exchange_declare(exchange=exchange, **EXCHANGE_ARGUMENTS)
                self._declared.add(exchange)
        properties = self._pika.BasicProperties(content_type=CONTENT_TYPE)
        self._nacked = 0
        publish = channel._impl.basic_publish  # no per-message flush: one write and one wait per batch
        for exchange, body in bodies:
            publish(exchange=exchange, routing_key="", body=body, properties=properties)
            self._next_tag += 1
            self._unconfirmed.add(self._next_tag)
        self._wait_for(lambda: not self._unconfirmed, self.settings.socket_timeout + 5, "the published events")
        self._last_io = _native.monotonic()
        if self._nacked:
            raise TransportUnavailable(f"the broker refused (nacked) {self._nacked} event(s)")

    def close(self) -> None:
        """Drop the publishing connection (abruptly: pika may not be driven from the calling thread)."""
        self.stop_accepting_events()
        with _realio.real_io():
            self._drop_publisher()

    # -- consuming -----------------------------------------------------------

    def subscribed_event_names(self) -> List[str]:
        """The event names to consume: the handled names, and the four gevent ones for ``"*"``."""
        names = list(self.handled_event_names())
        if ALL_EVENTS in self._handlers:
            names += [n for n in sorted(wire.EVENT_NAMES) if n not in names]
        return names

    def start_accepting_events(self, timeout: float = 5.0) -> None:
        """Consume in a native thread with its own connection.

        Returns once the queues are bound (so events published right after are
        seen), or after *timeout* seconds while the thread keeps trying; pass
        ``timeout=0`` to return at once (e.g. from a greenlet: the wait blocks
        the calling thread). Handlers run in the consumer thread; hand work to
        the hub with :meth:`run_on_main_thread`.
        """
        if self._consumer is not None:
            return
        self._load()
        run = self._consumer = _native.ThreadRun()
        ready = _native.Wakeup()
        _native.spawn("ma:amqp-recv", self._consume_forever, self.subscribed_event_names(), run, ready)
        ready.wait(timeout)

    def stop_accepting_events(self) -> None:
        """Stop consuming; returns when the thread has finished (or after two seconds).

        A thread still busy after that (a connect that has not timed out yet)
        exits on its own when it next checks its run; a later
        :meth:`start_accepting_events` starts a new thread without waiting for it.
        """
        run, self._consumer = self._consumer, None
        if run is not None:
            run.stop(timeout=2.0)

    def _consume_forever(self, names: List[str], run: _native.ThreadRun, ready: _native.Wakeup) -> None:
        _realio.register_current_thread()
        attempt = 0
        try:
            while not run.stopped:
                connects = self.consumer_connects
                try:
                    self._consume_once(names, run, ready)
                except Exception as exc:  # noqa: BLE001 - every fault means: reconnect after a pause
                    if run.stopped:
                        break
                    self._faults.warn("consume", "AMQP consumer on %s lost its connection (%s); reconnecting",
                                      self.describe(), _explain(exc, self.settings))
                    attempt = 1 if self.consumer_connects > connects else attempt + 1  # reset after a good run
                    run.wakeup.wait(backoff_delay(attempt, 0.1, 2.0))
        finally:
            _realio.unregister_current_thread()
            run.finished()

    def _consume_once(self, names: List[str], run: _native.ThreadRun, ready: _native.Wakeup) -> None:
        connection, channel = self._connect()
        try:
            for name in names:
                exchange = exchange_name(name)
                channel.exchange_declare(exchange=exchange, **EXCHANGE_ARGUMENTS)
                queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
                channel.queue_bind(queue=queue, exchange=exchange, routing_key="")
                channel.basic_consume(queue=queue, on_message_callback=self._on_message, auto_ack=True)
            self.consumer_connects += 1
            if self._faults.forget("consume"):
                log.info("AMQP consumer on %s reconnected", self.describe())
            ready.set()
            while not run.stopped:
                connection.process_data_events(time_limit=0.2)
        finally:
            if not run.stopped or not connection.is_open:
                _abort(connection)
            else:
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    _abort(connection)

    def _on_message(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        exchange = str(method.exchange)
        name = exchange[len(EXCHANGE_PREFIX):] if exchange.startswith(EXCHANGE_PREFIX) else exchange
        try:
            envelope = wire.decode(body)
        except wire.InvalidEnvelope as exc:
            self.skip_malformed(f"exchange {exchange}", exc)
            return
        self.on_event_received(name, envelope)


def _abort(connection: Any, drive: bool = True) -> None:
    """Close a connection's socket at once, with no AMQP handshake that could hang.

    With *drive* (only in the thread that owns the connection), pika then
    notices and releases its ioloop; another thread must not run pika's I/O.
    """
    try:
        transport = connection._impl._transport
        if transport is not None:
            transport.abort()
    except Exception:  # noqa: BLE001 - best effort
        pass
    if not drive:
        return
    try:
        connection.process_data_events(0)  # lets pika notice and release its ioloop
    except Exception:  # noqa: BLE001 - expected: the stream is gone
        pass


def _explain(exc: BaseException, settings: AmqpSettings) -> str:
    """A one-line, password-free description of a connection fault."""
    name = type(exc).__name__
    if name in ("ProbableAuthenticationError", "AuthenticationError", "ProbableAccessDeniedError"):
        detail = f"the broker refused the credentials of user {settings.username!r} or vhost access"
    else:
        detail = str(exc) or repr(exc)
    text = redact_text(f"{name}: {detail}")
    if settings.password:  # even a short one: a mangled message beats a shown password
        text = text.replace(settings.password, REDACTED)
    return f"{text} ({settings.url()})"
