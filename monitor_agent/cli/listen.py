"""``monitor-agent listen URL``: subscribe through a transport and print events from every process.

This is the fleet view: point it at the broker (or JSONL file) that many
processes publish to, and each event arrives as one line with its service,
pid and host, the duration and the culprit frame (``--json``: the envelopes).
Malformed messages are counted and skipped, never fatal.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List

from .. import _native
from .._redact import redact_url
from .._summary import summarize
from ..errors import ConfigError
from ..plugins import PluginRegistry
from ..transports.base import BaseEventTransport
from ..wire import EVENT_NAMES
from ._common import fail

__all__ = ["add_parser", "open_receiver"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("listen", help="subscribe to a transport and print events from every process",
                            description=__doc__.splitlines()[0])
    parser.add_argument("url", help="a transport URL that can receive: redis://…, amqp://…, jsonl:FILE")
    parser.add_argument("--event", action="append", dest="events", metavar="NAME", choices=sorted(EVENT_NAMES),
                        help="only this event name (repeatable; default: all four)")
    parser.add_argument("--json", action="store_true", help="print each envelope as one JSON line")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N events")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="exit after this long (status 1 if --count was not reached)")
    parser.set_defaults(handler=handle)


def open_receiver(url: str) -> BaseEventTransport:
    """A transport for *url* that can receive, or a ConfigError saying why not."""
    scheme = url.split(":", 1)[0].lower()
    shown = redact_url(url)
    factory = PluginRegistry().transport_factory(scheme, variable="URL", url=shown)
    try:
        transport = factory(url, for_reading=True) if scheme == "jsonl" else factory(url)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad URL is a usage error
        raise ConfigError("URL", shown, str(exc)) from None
    if not isinstance(transport, BaseEventTransport) or not transport.can_receive:
        raise ConfigError("URL", shown, f"the {scheme!r} transport can only publish, not receive")
    return transport


def handle(args: argparse.Namespace) -> int:
    try:
        transport = open_receiver(args.url)
    except ConfigError as exc:
        fail(str(exc))
    received: List[Dict[str, Any]] = []
    done = _native.allocate_lock()
    done.acquire()

    def show(envelope: Dict[str, Any]) -> None:
        line = json.dumps(envelope, separators=(",", ":")) if args.json else summarize(envelope, with_source=True)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        received.append(envelope)
        if args.count and len(received) >= args.count and done.locked():
            done.release()

    for name in args.events or sorted(EVENT_NAMES):
        transport.register_event_handler(show, name)
    transport.start_accepting_events()
    sys.stderr.write(f"monitor-agent: listening on {transport.describe()} (Ctrl-C to stop)\n")
    sys.stderr.flush()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while not done.acquire(True, 0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        transport.stop_accepting_events()
        transport.close()
    if transport.malformed:
        sys.stderr.write(f"monitor-agent: skipped {transport.malformed} malformed message(s)\n")
    return 1 if args.count and len(received) < args.count else 0
