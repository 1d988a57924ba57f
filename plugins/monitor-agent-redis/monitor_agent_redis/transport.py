"""The Redis pub/sub transport: ``PUBLISH <event name> <json body>``, and a resubscribing consumer.

Publishing runs in the agent's publisher thread (one connection, one attempt
with short timeouts per call, a pipelined round trip per batch); a passing
outage raises :class:`monitor_agent.TransportUnavailable` and the Publisher
retries with capped, jittered backoff. Receiving runs in a native thread of its
own that reconnects and resubscribes after any connection loss.

This module imports no client library: redis-py and ``ssl`` are imported by
:meth:`RedisEventTransport.prepare`, in the hub's thread.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import gevent

from monitor_agent import ConfigError, TransportUnavailable, _native, wire
from monitor_agent._logonce import LogOnce
from monitor_agent._redact import REDACTED, redact_text
from monitor_agent.transports.base import ALL_EVENTS, BaseEventTransport
from monitor_agent.transports.publisher import backoff_delay

from ._url import VARIABLE, RedisSettings

__all__ = ["RedisEventTransport"]

log = logging.getLogger("monitor_agent.transports.redis")

# Everything on the wire is a gevent.* name; a "*" handler subscribes to this pattern.
ALL_PATTERN = "gevent.*"
POLL_INTERVAL = 0.25  # how often the consumer thread checks for stop_accepting_events()
RECONNECT_BASE, RECONNECT_CAP = 0.1, 5.0
AUTH_ERROR_MARKERS = ("WRONGPASS", "NOAUTH", "AUTH", "invalid password", "invalid username")


class RedisEventTransport(BaseEventTransport):
    """Publishes envelopes to Redis channels named after the events; can subscribe to them too.

    Args:
        url: The ``redis://``, ``rediss://`` or ``unix://`` URL as given.
        settings: Its validated form (see :func:`monitor_agent_redis.parse_url`).

    Attributes:
        connects: Successful publisher connections (1 + reconnections).
        consumer_connects: Successful consumer (re)subscriptions.
    """

    scheme = "redis"
    can_receive = True

    def __init__(self, url: str, settings: RedisSettings) -> None:
        super().__init__(url)
        self.settings = settings
        self.scheme = settings.scheme  # type: ignore[misc]  # per instance: redis, rediss or unix
        self.max_batch = settings.max_batch  # type: ignore[misc]
        self._redis: Any = None  # the redis-py pieces, bound by prepare()
        self._tls_context: Any = None
        self._conn: Any = None
        self._prepare_error: str | None = None
        self._closed = False
        self._faults = LogOnce(log)
        self.connects = 0
        self.consumer_connects = 0
        self._consumer: _native.ThreadRun | None = None  # the running consumer, if any
        self._consumer_failing = False

    # -- setup -------------------------------------------------------------------

    def prepare(self) -> None:
        """Import redis-py and ssl and build the TLS context (rediss); hub thread only."""
        if self._redis is None:
            from redis import exceptions

            from . import _connection

            _connection.warm_up()
            try:
                self._tls_context = _connection.make_tls_context(self.settings)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                self._prepare_error = f"cannot load the TLS certificates or key: {exc}"
                raise ConfigError(VARIABLE, self.describe(), self._prepare_error) from None
            self._redis = (_connection, exceptions)
        if self._conn is None:
            # Made here, not in the publisher thread: redis-py reads its package
            # metadata (importing email.*) when a connection object is created.
            self._conn = self._new_connection(self.settings)

    def _new_connection(self, settings: RedisSettings) -> Any:
        """A not-yet-connected redis-py connection with real sockets (call in the hub thread)."""
        return self._redis[0].new_connection(settings, self._tls_context)

    def _connection(self) -> Any:
        if self._conn is None:
            raise RuntimeError(self._prepare_error or "RedisEventTransport.prepare() was not called (it imports "
                               "redis-py and makes the connection in the hub thread)")
        return self._conn

    # -- publishing (publisher thread) ---------------------------------------------

    def emit_event(self, event_name: str, event_body: Mapping[str, Any]) -> None:
        """Publish one event (``PUBLISH name body``)."""
        self.emit_events([(event_name, event_body)])

    def emit_events(self, events: Sequence[Tuple[str, Mapping[str, Any]]]) -> None:
        """Publish a batch in one round trip (a non-transactional pipeline of PUBLISH commands).

        Raises:
            TransportUnavailable: Redis is down, slow, refusing or rejecting the
                password; the connection is dropped so the next call reconnects.
        """
        if self._closed:
            raise TransportUnavailable(f"redis transport {self.describe()} is closed")
        conn = self._connection()
        commands = [("PUBLISH", name, wire.encode(body)) for name, body in events]
        exceptions = self._redis[1]
        try:
            if getattr(conn, "_sock", None) is None:  # redis-py 5 has no is_connected
                conn.connect()
                self.connects += 1
            conn.send_packed_command(conn.pack_commands(commands))
            for _ in commands:
                conn.read_response()
        except (exceptions.ConnectionError, exceptions.TimeoutError, OSError) as exc:
            self._drop(conn)
            raise TransportUnavailable(self._explain(exc)) from None
        except exceptions.ResponseError as exc:
            self._drop(conn)
            if _is_auth_error(exc):
                raise TransportUnavailable(self._explain(exc)) from None
            reason = redact_text(f"redis at {self.settings.address} refused the connection or PUBLISH: {exc}")
            raise RuntimeError(reason) from None
        except BaseException:
            self._drop(conn)
            raise

    def _explain(self, exc: BaseException) -> str:
        """A one-line, password-free reason for an outage."""
        text = redact_text(str(exc) or type(exc).__name__)
        if self.settings.password:  # even a short one: a mangled message beats a shown password
            text = text.replace(self.settings.password, REDACTED)
        if _is_auth_error(exc):
            return (f"authentication failed at redis {self.settings.address} (check the user/password in "
                    f"{self.describe()}): {text}")
        return f"redis {self.settings.address} unreachable ({type(exc).__name__}: {text})"

    @staticmethod
    def _drop(conn: Any) -> None:
        try:
            conn.disconnect()
        except Exception:  # noqa: BLE001 - a broken socket may fail to close
            pass

    def close(self) -> None:
        """Stop consuming and disconnect (only this process's own connection)."""
        self._closed = True
        self.stop_accepting_events()
        conn = self._conn
        if conn is not None:
            self._drop(conn)  # redis-py skips shutdown() when the connection is a parent's

    def after_fork_in_child(self) -> None:
        """Forget the parent's connection: never write on its socket; reconnect lazily.

        redis-py's ``disconnect`` checks the pid and does not ``shutdown()`` a
        socket created by another process; it only closes the child's copy of
        the descriptor, which leaves the parent's connection intact.
        """
        conn, self._conn = self._conn, None
        if conn is not None:
            self._drop(conn)
        self._closed = False
        self.connects = 0
        self._faults.clear()
        # A consumer thread does not survive fork(); the child starts afresh.
        self._consumer = None
        self._consumer_failing = False

    # -- consuming (gemstone API) -----------------------------------------------------

    def subscriptions(self) -> Tuple[List[str], List[str]]:
        """The channels and patterns the consumer subscribes to.

        Returns:
            ``(channels, patterns)``: the handled event names, and ``gevent.*``
            when a ``"*"`` handler is registered (or no handler at all).
        """
        names = list(self.handled_event_names())
        if ALL_EVENTS in self._handlers or not names:
            return [n for n in names if not n.startswith("gevent.")], [ALL_PATTERN]
        return names, []

    def start_accepting_events(self) -> None:
        """Subscribe in a native thread and dispatch each received event to its handlers.

        The thread reconnects with capped, jittered backoff and resubscribes after
        a connection loss. Handlers run in that thread (``?dispatch=thread``, the
        default, as the jsonl transport does) or in the hub's thread through
        :meth:`run_on_main_thread` (``?dispatch=hub``, as gemstone does); with
        ``dispatch=hub`` and no :meth:`set_hub` call yet, the hub is the calling
        thread's, so call this from the thread whose hub should run the handlers.
        """
        if self._consumer is not None:
            return
        self.prepare()
        if self.settings.dispatch == "hub" and self._hub is None:
            # Here, in the caller's (normally the hub's) thread: run_on_main_thread
            # must never look the hub up from the consumer's native thread.
            self.set_hub(gevent.get_hub())
        # redis-py's own health check would read a pub/sub message as its PONG: the loop pings itself.
        conn = self._new_connection(dataclasses.replace(self.settings, health_check_interval=0))
        run = self._consumer = _native.ThreadRun()
        _native.spawn("ma:redis-sub", self._consume, conn, run)

    def stop_accepting_events(self) -> None:
        """Stop the consumer thread; returns when it has finished (or after a few seconds).

        A thread still busy after that (a connect that has not timed out yet)
        exits on its own as soon as it checks its stop flag; a later
        :meth:`start_accepting_events` starts a new thread without waiting for it.
        """
        run, self._consumer = self._consumer, None
        if run is None:
            return
        run.stop(timeout=POLL_INTERVAL * 4 + self.settings.socket_timeout)

    def _consume(self, conn: Any, run: _native.ThreadRun) -> None:
        attempt = 0
        try:
            while not run.stopped:
                try:
                    self._subscribe(conn, run)
                    attempt = 0
                    self._receive(conn, run)
                except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
                    if not run.stopped:
                        self._consumer_failing = True
                        self._faults.warn(("consume", type(exc)), "redis consumer on %s lost its subscription "
                                          "(%s); reconnecting with backoff", self.describe(), self._explain(exc))
                finally:
                    self._drop(conn)
                delay = backoff_delay(attempt, RECONNECT_BASE, RECONNECT_CAP)
                attempt += 1
                run.wakeup.wait(delay)
        except BaseException:  # noqa: BLE001 - interpreter shutdown
            pass
        finally:
            run.finished()

    def _subscribe(self, conn: Any, run: _native.ThreadRun) -> None:
        channels, patterns = self.subscriptions()
        conn.connect()
        if run.stopped:  # stopped (or superseded) while connecting
            return
        if channels:
            conn.send_command("SUBSCRIBE", *channels)
        if patterns:
            conn.send_command("PSUBSCRIBE", *patterns)
        self.consumer_connects += 1
        if self._consumer_failing:
            self._consumer_failing = False
            self._faults.clear()
            log.info("redis consumer on %s resubscribed", self.describe())
        log.debug("redis consumer subscribed to %s %s on %s", channels, patterns, self.describe())

    def _receive(self, conn: Any, run: _native.ThreadRun) -> None:
        interval = self.settings.health_check_interval
        last_seen = _native.monotonic()
        ping_sent: float | None = None
        while not run.stopped:
            if conn.can_read(timeout=POLL_INTERVAL):
                reply = conn.read_response()
                last_seen, ping_sent = _native.monotonic(), None
                self._handle_reply(reply)
                continue
            now = _native.monotonic()
            if ping_sent is not None and now - ping_sent > self.settings.socket_timeout:
                raise TimeoutError(f"no reply to PING within {self.settings.socket_timeout}s")
            if ping_sent is None and interval and now - last_seen >= interval:
                conn.send_command("PING")
                ping_sent = now

    def _handle_reply(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == b"message" and len(reply) == 3:
            self._deliver(reply[1], reply[2])
        elif kind == b"pmessage" and len(reply) == 4:
            self._deliver(reply[2], reply[3])
        # subscribe/psubscribe confirmations and pongs need nothing

    def _deliver(self, channel: bytes, payload: Any) -> None:
        name = channel.decode("utf-8", "replace") if isinstance(channel, bytes) else str(channel)
        try:
            body = decode_body(payload)
        except ValueError as exc:
            self.skip_malformed(f"redis channel {name[:100]!r}", exc)
            return
        if self.settings.dispatch == "hub":
            self.run_on_main_thread(self.on_event_received, (name, body))
        else:
            self.on_event_received(name, body)


def decode_body(payload: Any) -> Dict[str, Any]:
    """Parse a received message body: UTF-8 JSON holding one object, within the inbound caps.

    Any JSON object is accepted (gemstone's consumers take any object), not
    only our envelopes.

    Raises:
        ValueError: With the reason (too large, not UTF-8, too deeply nested, not JSON, not an object).
    """
    if not isinstance(payload, (bytes, bytearray)):
        raise ValueError(f"expected bytes, got {type(payload).__name__}")
    body = wire.loads(payload)
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _is_auth_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    if "Authentication" in name:
        return True
    text = str(exc)
    return any(marker in text for marker in AUTH_ERROR_MARKERS)
