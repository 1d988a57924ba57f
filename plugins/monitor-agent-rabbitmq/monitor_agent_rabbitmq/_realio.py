"""Make pika use real (unpatched) sockets, ``select``, locks and threads in the agent's native threads.

pika looks up ``socket.socket``, ``socket.getaddrinfo``, ``select.epoll``,
``threading.Lock``, ``threading.Timer``, ``time.sleep`` and ``ssl.SSLContext``
on its module globals *at call time*. After ``gevent.monkey.patch_all()`` those
are gevent's cooperative versions, and using them from a native thread would
start a second hub in that thread (the gevent API from a non-hub thread).

:func:`install` replaces those module globals in pika's modules by
:class:`ThreadAwareModule` proxies. A proxy answers with gevent's *original*
object (``gevent.monkey.saved``) when the calling thread is one of the agent's
native threads (registered with :func:`register_current_thread`), and with the
live (possibly patched) module attribute otherwise, so an application that uses
pika cooperatively from greenlets sees no change at all.

pika runs its ``getaddrinfo`` in a ``threading.Timer`` thread; in a registered
thread the proxy hands it :class:`NativeTimer`, a real thread that is
registered too.
"""
from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Any, Callable, Dict, Set

from gevent import monkey

from monitor_agent import _native

__all__ = ["NativeTimer", "ThreadAwareModule", "install", "is_registered", "register_current_thread",
           "unregister_current_thread"]

_registered: Set[int] = set()

# The pika modules that reference each standard module at call time.
_PIKA_MODULES = (
    "pika.compat",
    "pika.connection",
    "pika.tcp_socket_opts",
    "pika.adapters.base_connection",
    "pika.adapters.blocking_connection",
    "pika.adapters.select_connection",
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.utils.selector_ioloop_adapter",
)
_PROXIED = ("socket", "select", "threading", "time", "ssl")


def register_current_thread() -> None:
    """Mark the calling native thread as one whose pika calls use the real modules."""
    _registered.add(_native.get_ident())


def unregister_current_thread() -> None:
    """Undo :func:`register_current_thread` (the thread is about to end)."""
    _registered.discard(_native.get_ident())


def is_registered() -> bool:
    """Whether the calling thread is registered."""
    return _native.get_ident() in _registered


class NativeTimer:
    """The part of ``threading.Timer`` pika uses, run on a registered native thread."""

    def __init__(self, interval: float, function: Callable[..., Any], args: Any = None,
                 kwargs: Any = None) -> None:
        self.interval = interval
        self.function = function
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.cancelled = False
        self.daemon = True

    def start(self) -> None:
        _native.spawn("ma:amqp-dns", self._run)

    def cancel(self) -> None:
        self.cancelled = True

    def _run(self) -> None:
        register_current_thread()
        try:
            if self.interval > 0:
                _native.sleep(self.interval)
            if not self.cancelled:
                self.function(*self.args, **self.kwargs)
        finally:
            unregister_current_thread()


_real_socket_class: Any = None


def real_socket_class() -> Any:
    """The original ``socket.socket``, with an ``accept()`` that returns the same class.

    The stdlib's ``socket.accept()`` builds its result from the *module's*
    ``socket`` name, which is gevent's class after patching (pika's wake-up
    socket pair is made with ``accept()``).
    """
    global _real_socket_class
    if _real_socket_class is None:
        original = monkey.get_original("socket", "socket")
        getdefaulttimeout = monkey.get_original("socket", "getdefaulttimeout")

        class RealSocket(original):  # type: ignore[misc, valid-type]
            """A plain blocking-capable socket, never gevent's."""

            __slots__ = ()

            def accept(self) -> Any:
                fd, address = self._accept()
                sock = RealSocket(self.family, self.type, self.proto, fileno=fd)
                if getdefaulttimeout() is None and self.gettimeout():
                    sock.setblocking(True)
                return sock, address

        _real_socket_class = RealSocket
    return _real_socket_class


class ThreadAwareModule(ModuleType):
    """Stands for a standard module: originals for registered threads, live attributes otherwise."""

    def __init__(self, module: ModuleType) -> None:
        super().__init__(module.__name__)
        object.__setattr__(self, "_ma_module", module)
        object.__setattr__(self, "_ma_cache", {})

    def __getattr__(self, name: str) -> Any:
        module: ModuleType = object.__getattribute__(self, "_ma_module")
        if _native.get_ident() not in _registered:
            return getattr(module, name)
        cache: Dict[str, Any] = object.__getattribute__(self, "_ma_cache")
        try:
            return cache[name]
        except KeyError:
            pass
        if module.__name__ == "threading" and name == "Timer":
            value: Any = NativeTimer
        elif module.__name__ == "socket" and name == "socket":
            value = real_socket_class()
        else:
            saved = monkey.saved.get(module.__name__, {})
            value = saved[name] if name in saved else getattr(module, name)
        cache[name] = value
        return value


def _not_from_our_threads(record: logging.LogRecord) -> bool:
    """A logging filter: drop pika's records made in the agent's threads.

    pika logs every lost connection at ERROR with a traceback; the transport
    reports outages itself, once, without them (and never floods the app's log).
    """
    return _native.get_ident() not in _registered


def _quiet_pika_loggers() -> None:
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        is_pika = name == "pika" or name.startswith("pika.")
        if is_pika and isinstance(logger, logging.Logger) and _not_from_our_threads not in logger.filters:
            logger.addFilter(_not_from_our_threads)


def install() -> None:
    """Put the proxies into pika's modules and quiet pika's logging in our threads (idempotent).

    Call after importing pika, in the hub thread.
    """
    _quiet_pika_loggers()
    for module_name in _PIKA_MODULES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for std_name in _PROXIED:
            current = module.__dict__.get(std_name)
            if isinstance(current, ModuleType) and not isinstance(current, ThreadAwareModule):
                module.__dict__[std_name] = ThreadAwareModule(current)
