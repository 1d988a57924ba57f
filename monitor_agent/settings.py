"""Every setting of the agent, declared once.

Each :class:`Setting` names its environment variable, the gevent variable it
falls back to, its default, its parser and its help text. ``install()``,
``monitor-agent config``, ``monitor-agent run``'s options and the README's
settings table are all generated from these declarations.

Precedence, highest first: keyword argument to ``install()``, the
``MONITOR_AGENT_*`` variable, gevent's own variable, the default.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Tuple, TypeVar, Union, overload

from . import _parsers as p
from ._redact import redact_url
from .errors import ConfigError

__all__ = ["PREFIX", "Setting", "Settings"]

PREFIX = "MONITOR_AGENT_"
T = TypeVar("T")


class Setting(Generic[T]):
    """One declared setting: its variable, default, parser and help.

    Used as a descriptor on :class:`Settings`: on the class it is the declaration,
    on an instance it is the effective value.

    Args:
        parse: Converts a string or Python value; raises ``Invalid`` with the accepted form.
        default: The value (or a zero-argument factory of it) used when nothing is set.
        help: One sentence for the config listing and the README.
        gevent_env: gevent's variable for the same thing, consulted when ours is unset.
        default_text: How the default is shown, when ``repr(default)`` would not do.
        secret: The value holds URLs whose passwords must be redacted when shown.
    """

    name: str
    env: str

    def __init__(self, parse: Callable[[object], T], default: Union[T, Callable[[], T]], help: str, *,
                 gevent_env: str | None = None, default_text: str | None = None,
                 secret: bool = False) -> None:
        self.parse = parse
        self.default = default
        self.help = help
        self.gevent_env = gevent_env
        self.default_text = default_text
        self.secret = secret

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.env = PREFIX + name.upper()

    @overload
    def __get__(self, obj: None, owner: type) -> "Setting[T]": ...
    @overload
    def __get__(self, obj: "Settings", owner: type) -> T: ...

    def __get__(self, obj: "Settings" | None, owner: type) -> Union["Setting[T]", T]:
        if obj is None:
            return self
        return obj._values[self.name]  # type: ignore[no-any-return]

    @property
    def option(self) -> str:
        """The ``monitor-agent run`` option for this setting, e.g. ``--max-blocking-time``."""
        return "--" + self.name.replace("_", "-")

    def default_value(self) -> T:
        """The default, computed if it is a factory."""
        return self.default() if callable(self.default) else self.default  # type: ignore[return-value]

    def show(self, value: object) -> str:
        """Render a value for people, redacting secrets."""
        if value is None:
            return "off"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple) and self.name.endswith("rate_limit"):
            n, per = value
            return f"{n}/{ {1.0: 's', 60.0: 'min', 3600.0: 'hour'}.get(per, f'{per:g}s') }"
        if isinstance(value, (tuple, list)):
            return ",".join(redact_url(str(v)) if self.secret else str(v) for v in value)
        if isinstance(value, float):
            return f"{value:g}"
        return redact_url(str(value)) if self.secret else str(value)

    def resolve(self, overrides: Mapping[str, object], environ: Mapping[str, str]) -> Tuple[T, str, object]:
        """Return ``(value, source, raw)``: source is the keyword, the variable or ``default``.

        Raises:
            ConfigError: The chosen value does not parse.
        """
        if self.name in overrides:
            raw, source = overrides[self.name], self.name
        elif self.env in environ:
            raw, source = environ[self.env], self.env
        elif self.gevent_env and self.gevent_env in environ:
            raw, source = environ[self.gevent_env], self.gevent_env
        else:
            return self.default_value(), "default", None
        try:
            return self.parse(raw), source, raw
        except p.Invalid as exc:
            raise ConfigError(source, self.shown_raw(raw), str(exc)) from None

    def shown_raw(self, raw: object) -> object:
        """A raw value as it may appear in a message (passwords redacted)."""
        return redact_url(raw) if self.secret and isinstance(raw, str) else raw

    def __repr__(self) -> str:
        return f"<Setting {self.name} ({self.env})>"


class Settings:
    """The agent's effective settings: read with attribute access, e.g. ``settings.max_blocking_time``.

    Build one with :meth:`load`. ``sources[name]`` says where each value came from.
    """

    enabled = Setting(p.parse_bool, True, "Set to false to make install() do nothing.")
    max_blocking_time = Setting(
        p.duration(), 0.1, "Threshold T: the event loop blocked longer than this is reported.",
        gevent_env="GEVENT_MAX_BLOCKING_TIME")
    blocking_detection = Setting(
        p.choice("heartbeat", "tracer", "off"), "heartbeat",
        "How blocks are found: heartbeat (no per-switch cost), tracer (greenlet.settrace, exact "
        "culprit switches, ~20% slower switching) or off.")
    blocking_rate_limit: Setting[p.Rate] = Setting(
        p.rate, (10, 60.0), "At most this many reports per blocking site (same culprit stack); "
        "the rest are counted as suppressed.", default_text="10/min")
    startup_grace = Setting(
        p.duration(allow_zero=True, example="0, 5s or 1min"), 0.0,
        "Blocks that start this soon after install() are not reported (imports, warm-up).")
    sample_interval = Setting(
        p.duration(example="5ms or 0.01"), 0.005,
        "How often the stack is sampled while the loop is blocked, for the profile on the unblocked event.")
    heartbeat_interval: Setting[float | None] = Setting(
        p.duration(example="5ms or 0.002"), None,
        "Period of the loop heartbeat timer; measured durations are exact to ±half of it. "
        "Must be at most half the threshold.", default_text="5ms (T/4 when T < 20ms)")
    gil_stacks = Setting(
        p.parse_bool, False,
        "Arm faulthandler.dump_traceback_later so a C call holding the GIL still yields a stack "
        "(GIL-holding calls are always measured; this adds where they were). faulthandler reads "
        "every thread's frames without the GIL, which can crash a process whose threads are busy "
        "running Python when it fires: for debugging sessions, not for busy multi-threaded production.")
    greenlet_dump = Setting(
        p.parse_bool, False, "Attach gevent's full greenlet tree to blocked events (walks every object: slow).")
    max_memory_usage: Setting[int | None] = Setting(
        p.size(allow_off=True), None, "Memory threshold: bytes, 512MB, 1.5GiB or 80% of physical memory.",
        gevent_env="GEVENT_MONITOR_MEMORY_MAX")
    memory_low_water = Setting(
        p.fraction, 0.95, "After exceeding the threshold, usage must fall below this share of it "
        "before MemoryUsageUnderThreshold is sent.", default_text="95%")
    memory_monitor_period = Setting(
        p.duration(example="5, 500ms or 1min"), 5.0, "Seconds between memory checks.",
        gevent_env="GEVENT_MONITOR_MEMORY_PERIOD")
    memory_measure = Setting(
        p.choice("rss", "uss"), "rss",
        "rss (cheap, memory_info) or uss (memory_full_info: reads smaps, costs milliseconds).")
    transports: Setting[Tuple[str, ...]] = Setting(
        p.url_list, ("log",), "Comma-separated transport URLs; empty for none.", secret=True,
        default_text="log")
    queue_size = Setting(
        p.integer(minimum=1, maximum=10_000_000), 10_000,
        "Bound of each transport's queue; when full the oldest event is dropped and counted.")
    flush_timeout = Setting(
        p.duration(example="2s or 500ms"), 2.0, "How long uninstall() and interpreter exit wait for queued events.")
    max_event_size: Setting[int | None] = Setting(
        p.size(allow_percent=False, minimum=1024), 64 * 1024,
        "Cap on one event body; stacks are truncated to fit.", default_text="64KiB")
    service = Setting(p.text(), p.program_name, "Service name put on every event.",
                      default_text="program name")
    disabled_plugins: Setting[Tuple[str, ...]] = Setting(
        p.name_list, (), "Comma-separated entry-point names not to load; * disables all.", default_text="none")

    def __init__(self, values: Dict[str, Any], sources: Dict[str, str],
                 raw: Dict[str, object] | None = None) -> None:
        self._values = values
        self.sources = sources
        self._raw = raw or {}

    @classmethod
    def declarations(cls) -> List[Setting[Any]]:
        """All declared settings, in declaration order."""
        return [v for v in vars(cls).values() if isinstance(v, Setting)]

    @classmethod
    def load(cls, overrides: Mapping[str, object] | None = None,
             environ: Mapping[str, str] | None = None) -> "Settings":
        """Resolve every setting from keywords, the environment and defaults.

        Args:
            overrides: Keyword settings (as passed to ``install()``).
            environ: The environment to read (``os.environ`` by default).

        Raises:
            TypeError: An override names no setting.
            ConfigError: A value does not parse; the message names its variable.
        """
        overrides = dict(overrides or {})
        environ = os.environ if environ is None else environ
        known = {s.name for s in cls.declarations()}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"install() got an unexpected keyword argument {unknown[0]!r}")
        values: Dict[str, Any] = {}
        sources: Dict[str, str] = {}
        raw: Dict[str, object] = {}
        for setting in cls.declarations():
            values[setting.name], sources[setting.name], raw[setting.name] = setting.resolve(overrides, environ)
        settings = cls(values, sources, raw)
        settings._check_together()
        return settings

    def _check_together(self) -> None:
        """Checks that involve two settings."""
        if self.heartbeat_interval is not None and self.heartbeat_interval > self.max_blocking_time / 2:
            raise ConfigError(self.sources["heartbeat_interval"], self._raw["heartbeat_interval"],
                              f"expected at most half of max_blocking_time ({self.max_blocking_time:g}s)")

    @property
    def effective_heartbeat_interval(self) -> float:
        """The heartbeat period in use: the setting, or 5 ms (a quarter of T when T is tiny)."""
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return min(0.005, self.max_blocking_time / 4)

    def items(self) -> Iterator[Tuple[Setting[Any], Any]]:
        """Pairs of (declaration, effective value)."""
        for setting in self.declarations():
            yield setting, self._values[setting.name]

    def __repr__(self) -> str:
        body = ", ".join(f"{s.name}={s.show(v)}" for s, v in self.items())
        return f"<Settings {body}>"
