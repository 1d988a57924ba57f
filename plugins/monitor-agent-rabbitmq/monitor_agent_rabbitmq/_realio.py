"""Make pika use real (unpatched) sockets, ``select``, locks and threads in the agent's native threads.

pika looks up ``socket.socket``, ``socket.getaddrinfo``, ``select.epoll``,
``threading.Lock``, ``threading.Timer``, ``time.sleep`` and ``ssl.SSLContext``
on its module globals *at call time*. After ``gevent.monkey.patch_all()`` those
are gevent's cooperative versions, and using them from a native thread would
start a second hub in that thread (the gevent API from a non-hub thread).

:func:`install` replaces those module globals in pika's modules by
:class:`ThreadAwareModule` proxies. A proxy answers with a *real* object when
the calling thread is one of the agent's native threads (private, never-patched
copies of ``socket`` and ``ssl``, see :func:`_private_copy`; gevent's saved
originals for ``select``, ``threading`` and ``time``) (registered with :func:`register_current_thread`), and with the
live (possibly patched) module attribute otherwise, so an application that uses
pika cooperatively from greenlets sees no change at all.

pika runs its ``getaddrinfo`` in a ``threading.Timer`` thread; in a registered
thread the proxy hands it :class:`NativeTimer`, a real thread that is
registered too.
"""
from __future__ import annotations

import builtins
import contextlib
import importlib.util
import logging
import sys
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, Set

from gevent import monkey

from monitor_agent import _native

__all__ = ["NativeTimer", "ThreadAwareModule", "install", "real_io", "register_current_thread",
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


@contextlib.contextmanager
def real_io() -> Iterator[None]:
    """Register the calling thread for the duration of a ``with`` block (re-entrant)."""
    ident = _native.get_ident()
    added = ident not in _registered
    _registered.add(ident)
    try:
        yield
    finally:
        if added:
            _registered.discard(ident)


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


_private: Dict[str, ModuleType] = {}


def _redirecting_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                        level: int = 0) -> Any:
    """``__import__`` for the private copies: ``socket`` resolves to the private socket module."""
    if level == 0 and name in _private:
        return _private[name]
    return builtins.__import__(name, globals, locals, fromlist, level)


def _private_copy(name: str) -> ModuleType:
    """A fresh, never-patched instance of the stdlib module *name*, not registered in ``sys.modules``.

    gevent patches ``socket`` and ``ssl`` in place, and the stdlib code of
    those modules finds its own classes through its module globals
    (``socket.accept()`` builds a ``socket``, ``SSLContext`` properties call
    ``super(SSLContext, …)``, ``SSLSocket._create`` calls ``super(SSLSocket, …)``),
    so even gevent's saved "original" classes end up calling gevent's. A copy
    executed from the stdlib source, whose ``socket`` import is this copy's,
    has none of that.
    """
    found = importlib.util.find_spec(name)
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise ImportError(f"cannot make a private copy of {name!r}")
    # A name of its own: the enum helpers (IntEnum._convert_) of socket.py and
    # ssl.py write into sys.modules[__name__], which must be the copy, never
    # the application's module.
    private_name = f"{__name__}.real_{name}"
    if private_name in sys.modules:
        return sys.modules[private_name]
    spec = importlib.util.spec_from_file_location(private_name, found.origin)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot make a private copy of {name!r}")
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__builtins__"] = dict(vars(builtins), __import__=_redirecting_import)
    sys.modules[private_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[private_name]
        raise
    return module


def make_private_modules() -> None:
    """Build the private ``socket`` and ``ssl`` (idempotent; hub thread: it imports)."""
    for name in ("socket", "ssl"):
        if name not in _private:
            _private[name] = _private_copy(name)


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
        elif module.__name__ in _private:
            value = getattr(_private[module.__name__], name)
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
    make_private_modules()
    _quiet_pika_loggers()
    for module_name in _PIKA_MODULES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for std_name in _PROXIED:
            current = module.__dict__.get(std_name)
            if isinstance(current, ModuleType) and not isinstance(current, ThreadAwareModule):
                module.__dict__[std_name] = ThreadAwareModule(current)
