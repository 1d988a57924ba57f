"""Strict parsers for setting values.

Each parser accepts either the string form (from the environment or the command
line) or an already-typed Python value (from ``install(**settings)``), and raises
:class:`Invalid` with the accepted form when it cannot use it. The caller turns
that into a :class:`~monitor_agent.errors.ConfigError` naming the variable.
"""
from __future__ import annotations

import math
import os
import re
import sys
from typing import Callable, Iterable, Optional, Tuple

__all__ = [
    "Invalid",
    "choice",
    "duration",
    "fraction",
    "integer",
    "name_list",
    "parse_bool",
    "physical_memory",
    "rate",
    "size",
    "text",
    "url_list",
]


class Invalid(ValueError):
    """The value is not of the accepted form; ``str(self)`` describes that form."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
BOOL_FORM = "expected a boolean: 1, true, yes, on or 0, false, no, off"


def parse_bool(value: object) -> bool:
    """Parse ``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise Invalid(BOOL_FORM)


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_DURATION = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>us|µs|ms|s|sec|m|min|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {None: 1.0, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0,
                   "m": 60.0, "min": 60.0, "h": 3600.0}
_MAX_DURATION = 7 * 24 * 3600.0


def duration(*, allow_zero: bool = False, example: str = "0.1, 100ms or 2s") -> Callable[[object], float]:
    """Return a parser for a duration in seconds: ``0.25``, ``250ms``, ``2s``, ``1.5min``.

    Args:
        allow_zero: Whether ``0`` is accepted (a grace period may be zero; a
            threshold may not).
        example: Examples used in the error message.
    """
    kind = "non-negative" if allow_zero else "positive"
    form = f"expected a {kind} duration such as {example}"

    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise Invalid(form)
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str):
            m = _DURATION.match(value)
            if not m:
                raise Invalid(form)
            unit = m.group("unit")
            seconds = float(m.group("num")) * _DURATION_UNITS[unit.lower() if unit else None]
        else:
            raise Invalid(form)
        if math.isnan(seconds) or math.isinf(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
            raise Invalid(form)
        if seconds > _MAX_DURATION:
            raise Invalid(f"{form}, at most 7 days")
        return seconds

    return parse


_SIZE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.IGNORECASE)
_PERCENT = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*%\s*$")
# kb/mb/gb are binary multiples, as in gevent's GEVENT_MONITOR_MEMORY_MAX, so the
# same string means the same number under either variable.
_SIZE_UNITS = {None: 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
               "tib": 1 << 40}
_MAX_SIZE = 1 << 50


def physical_memory() -> int:
    """Bytes of memory this process may use: physical RAM, or the cgroup limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            total = int(raw)
        break
    return total


def size(*, allow_percent: bool = True, allow_off: bool = False, minimum: int = 1) -> Callable[[object], int | None]:
    """Return a parser for a byte count: ``1048576``, ``512MB``, ``1.5GiB`` or ``80%``.

    ``kb``/``mb``/``gb`` are multiples of 1024 (gevent's meaning). ``N%`` is a
    share of physical memory (or of the cgroup limit, when lower).

    Args:
        allow_percent: Accept ``N%`` of physical memory.
        allow_off: Accept ``off`` (returns ``None``).
        minimum: The smallest byte count accepted.
    """
    form = "expected a size such as 1048576, 512MB or 1.5GiB"
    if allow_percent:
        form += ", or a share of physical memory such as 80%"
    if allow_off:
        form += ", or off"

    def parse(value: object) -> int | None:
        if isinstance(value, bool):
            raise Invalid(form)
        if value is None and allow_off:
            return None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            if allow_off and value.strip().lower() in ("off", "none"):
                return None
            p = _PERCENT.match(value) if allow_percent else None
            if p:
                pct = float(p.group("num"))
                if not 0 < pct <= 100:
                    raise Invalid(form)
                return int(physical_memory() * pct / 100)
            m = _SIZE.match(value)
            if not m:
                raise Invalid(form)
            unit = m.group("unit")
            number = float(m.group("num")) * _SIZE_UNITS[unit.lower() if unit else None]
        else:
            raise Invalid(form)
        if math.isnan(number) or math.isinf(number) or number < minimum or number > _MAX_SIZE:
            raise Invalid(form if number >= minimum else f"{form} (at least {minimum} bytes)")
        return int(number)

    return parse


def integer(*, minimum: int, maximum: int) -> Callable[[object], int]:
    """Return a parser for a whole number between *minimum* and *maximum*."""
    form = f"expected a whole number from {minimum} to {maximum}"

    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise Invalid(form)
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
            number = int(value)
        else:
            raise Invalid(form)
        if not minimum <= number <= maximum:
            raise Invalid(form)
        return number

    return parse


def fraction(value: object) -> float:
    """Parse a share strictly between 0 and 1: ``95%`` or ``0.95``."""
    form = "expected a share below 100% such as 95% or 0.95"
    if isinstance(value, bool):
        raise Invalid(form)
    if isinstance(value, (int, float)):
        share = float(value)
    elif isinstance(value, str):
        p = _PERCENT.match(value)
        if p:
            share = float(p.group("num")) / 100
        elif re.fullmatch(rf"\s*{_NUMBER}\s*", value):
            share = float(value)
        else:
            raise Invalid(form)
    else:
        raise Invalid(form)
    if not 0 < share < 1:
        raise Invalid(form)
    return share


_RATE = re.compile(r"^\s*(?P<n>\d+)\s*/\s*(?P<per>s|sec|second|m|min|minute|h|hour)\s*$", re.IGNORECASE)
_RATE_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
                 "h": 3600.0, "hour": 3600.0}
Rate = Optional[Tuple[int, float]]


def rate(value: object) -> Rate:
    """Parse ``N/sec``, ``N/min`` or ``N/hour`` into ``(N, seconds)``; ``off`` means unlimited."""
    form = "expected a rate such as 10/min, 1/s or 100/hour, or off"
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        n, per = value
        if isinstance(n, int) and not isinstance(n, bool) and n > 0 and isinstance(per, (int, float)) and per > 0:
            return (n, float(per))
        raise Invalid(form)
    if not isinstance(value, str):
        raise Invalid(form)
    if value.strip().lower() == "off":
        return None
    m = _RATE.match(value)
    if not m or int(m.group("n")) == 0 or int(m.group("n")) > 1_000_000:
        raise Invalid(form)
    return (int(m.group("n")), _RATE_PERIODS[m.group("per").lower()])


def choice(*options: str) -> Callable[[object], str]:
    """Return a parser accepting exactly one of *options* (any case)."""
    form = "expected one of " + ", ".join(options)

    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise Invalid(form)

    return parse


_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _split(value: object, form: str) -> Iterable[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")] if value.strip() else []
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    raise Invalid(form)


def name_list(value: object) -> Tuple[str, ...]:
    """Parse a comma-separated list of entry-point names, or ``*`` for all."""
    form = "expected comma-separated plugin names such as redis,prometheus, or * for all"
    names = tuple(_split(value, form))
    if any(n != "*" and not _NAME.match(n) for n in names):
        raise Invalid(form)
    return names


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
URL_FORM = ("expected comma-separated transport URLs such as log, jsonl:events.jsonl or "
            "redis://localhost:6379/0, or an empty string for none")


def url_list(value: object) -> Tuple[str, ...]:
    """Parse comma-separated transport URLs; each must start with a scheme (or be ``log``).

    Whether the scheme is installed, and whether the rest of the URL suits it,
    is checked when the transports are built.
    """
    urls = tuple(_split(value, URL_FORM))
    for url in urls:
        scheme = url.split(":", 1)[0]
        if not url or not _SCHEME.match(scheme) or any(c.isspace() for c in url):
            raise Invalid(URL_FORM)
    return urls


def text(*, max_length: int = 200) -> Callable[[object], str]:
    """Return a parser for a short, printable, non-empty string."""
    form = f"expected a non-empty printable name of at most {max_length} characters"

    def parse(value: object) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > max_length or not value.isprintable():
            raise Invalid(form)
        return value.strip()

    return parse


def program_name() -> str:
    """The running program's name: the script's base name, or ``python`` for ``-c``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if not argv0 or argv0 in ("-c", "-m"):
        return os.path.basename(sys.executable) or "python"
    name = os.path.basename(argv0)
    if name == "__main__.py":
        name = os.path.basename(os.path.dirname(os.path.abspath(argv0)))
    return name[:-3] if name.endswith(".py") else name
