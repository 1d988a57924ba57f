"""Settings of the Prometheus exporter, read from the environment at ``install()``.

``MONITOR_AGENT_PROMETHEUS_ADDR``
    Where ``/metrics`` is served: ``host:port``, ``:port`` (every IPv4
    interface), ``[ipv6]:port``; the port may be a range ``9464-9479``: each
    process (a forked worker, say) serves on the first free port of the range.
    Default ``127.0.0.1:9464`` (loopback only).
``MONITOR_AGENT_PROMETHEUS_MAX_SITES``
    How many distinct blocking sites get their own ``site`` label value; later
    ones are counted under ``site="other"``. Default 20.
"""
from __future__ import annotations

import _socket
import os
from typing import Any, List, Mapping, Tuple

from monitor_agent import ConfigError

__all__ = ["ADDR_VAR", "DEFAULT_ADDR", "MAX_SITES_VAR", "ExporterConfig", "parse_addr", "parse_max_sites"]

ADDR_VAR = "MONITOR_AGENT_PROMETHEUS_ADDR"
MAX_SITES_VAR = "MONITOR_AGENT_PROMETHEUS_MAX_SITES"
DEFAULT_ADDR = "127.0.0.1:9464"
DEFAULT_MAX_SITES = 20
ADDR_FORM = ("expected host:port, :port or [ipv6]:port, where port is 0-65535 or a range such as 9464-9479 "
             "(e.g. 127.0.0.1:9464, :9464, [::1]:9464-9479)")


class ExporterConfig:
    """The resolved settings.

    Attributes:
        addr: The address as written (for messages).
        ports: Ports to try, in order (one, or a range).
        family: ``AF_INET`` or ``AF_INET6``.
        sockaddr_host: The numeric host address to bind.
        max_sites: Bound of the ``site`` label values (plus ``other``).
    """

    def __init__(self, addr: str, ports: List[int], family: int, sockaddr_host: str, max_sites: int) -> None:
        self.addr = addr
        self.ports = ports
        self.family = family
        self.sockaddr_host = sockaddr_host
        self.max_sites = max_sites

    def sockaddr(self, port: int) -> Tuple[Any, ...]:
        """The address tuple for ``bind`` on *port*."""
        if self.family == _socket.AF_INET6:
            return (self.sockaddr_host, port, 0, 0)
        return (self.sockaddr_host, port)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "ExporterConfig":
        """Read and validate the settings.

        Raises:
            ConfigError: A variable has a value the exporter cannot use.
        """
        env = os.environ if environ is None else environ
        addr = env.get(ADDR_VAR, "").strip() or DEFAULT_ADDR
        host, ports = parse_addr(addr)
        family, numeric = _resolve(addr, host)
        return cls(addr, ports, family, numeric, parse_max_sites(env.get(MAX_SITES_VAR, "")))


def _parse_ports(addr: str, text: str) -> List[int]:
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise ConfigError(ADDR_VAR, addr, ADDR_FORM)
    low, high = int(first), int(last) if sep else int(first)
    if high > 65535 or low > high or (sep and low == 0):
        raise ConfigError(ADDR_VAR, addr, f"port {text!r} out of range; {ADDR_FORM}")
    return list(range(low, high + 1))


def parse_addr(addr: str) -> Tuple[str, List[int]]:
    """Split ``host:port`` / ``:port`` / ``[ipv6]:port`` (port may be ``low-high``).

    Returns:
        ``(host, ports)``; host is ``""`` for ``:port``.

    Raises:
        ConfigError: Naming ``MONITOR_AGENT_PROMETHEUS_ADDR``, the value and the accepted form.
    """
    if addr.startswith("["):
        host, bracket, rest = addr[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host:
            raise ConfigError(ADDR_VAR, addr, ADDR_FORM)
        port_text = rest[1:]
    else:
        host, colon, port_text = addr.rpartition(":")
        if not colon or ":" in host or "[" in host or "]" in host or " " in host:
            raise ConfigError(ADDR_VAR, addr, ADDR_FORM)
    return host, _parse_ports(addr, port_text)


def _resolve(addr: str, host: str) -> Tuple[int, str]:
    """The address family and numeric host; names are resolved once, here, in the hub thread.

    The unpatched ``_socket.getaddrinfo`` is used on purpose: gevent's resolver
    would need the hub, and this runs before the hub is known to be running.
    """
    if not host:
        return _socket.AF_INET, "0.0.0.0"
    try:
        infos = _socket.getaddrinfo(host, None, _socket.AF_UNSPEC, _socket.SOCK_STREAM, 0,
                                    _socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(ADDR_VAR, addr, f"cannot resolve host {host!r} ({exc}); {ADDR_FORM}") from None
    for family in (_socket.AF_INET, _socket.AF_INET6):  # prefer IPv4 for names like localhost
        for info in infos:
            if info[0] == family:
                return family, str(info[4][0])
    raise ConfigError(ADDR_VAR, addr, f"host {host!r} has no IPv4 or IPv6 address; {ADDR_FORM}")


def parse_max_sites(text: str) -> int:
    """``MONITOR_AGENT_PROMETHEUS_MAX_SITES``: an integer 1-1000 (default 20).

    Raises:
        ConfigError: Not an integer in range.
    """
    text = text.strip()
    if not text:
        return DEFAULT_MAX_SITES
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ConfigError(MAX_SITES_VAR, text, "expected an integer from 1 to 1000")
    return int(text)
