"""Finding and loading plugins through setuptools entry points.

Two groups are read, once, at ``install()``:

* ``monitor_agent.transports`` — name = URL scheme, object = factory
  ``(url, **options) -> BaseEventTransport``. Loaded only when a configured URL
  uses the scheme.
* ``monitor_agent.plugins`` — name = plugin id, object = ``(agent) -> None``,
  called by ``install()``.

``MONITOR_AGENT_DISABLED_PLUGINS`` (names, or ``*``) skips entry points. A
plugin whose dependency is missing is skipped quietly, one that fails to import
or run is logged with its name and skipped, but a transport the user asked for
by URL that cannot load fails ``install()`` with a :class:`ConfigError`.
The built-in ``log`` and ``jsonl`` transports are part of the core, not plugins.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Tuple

from ._entrypoints import EntryPoint, entry_points
from .errors import ConfigError

__all__ = ["BUILTIN_SCHEMES", "PLUGINS_GROUP", "TRANSPORTS_GROUP", "PluginRecord", "PluginRegistry"]

log = logging.getLogger("monitor_agent.plugins")

TRANSPORTS_GROUP = "monitor_agent.transports"
PLUGINS_GROUP = "monitor_agent.plugins"
BUILTIN_SCHEMES = ("log", "jsonl")

# States a plugin can be in, as shown by ``monitor-agent plugins``.
FOUND, LOADED, DISABLED, MISSING_DEPENDENCY, FAILED, SHADOWED = (
    "found", "loaded", "disabled", "missing dependency", "failed", "shadowed by built-in")


class PluginRecord:
    """What is known about one entry point.

    Attributes:
        group: The entry-point group.
        name: The entry-point name (a URL scheme for transports).
        value: ``module:attribute``.
        distribution: ``name version`` of the distribution that declares it.
        state: One of found, loaded, disabled, missing dependency, failed.
        error: Why it did not load, if it did not.
    """

    def __init__(self, entry_point: EntryPoint) -> None:
        self.entry_point = entry_point
        self.group: str = entry_point.group
        self.name: str = entry_point.name
        self.value: str = entry_point.value
        self.distribution: str | None = entry_point.dist
        self.state = FOUND
        self.error: str | None = None
        self.obj: Any = None

    def load(self) -> Any:
        """Import the object once; record the outcome. Raises what the import raised."""
        if self.state == LOADED:
            return self.obj
        try:
            obj = self.entry_point.load()
        except ModuleNotFoundError as exc:
            own_module = self.value.split(":", 1)[0]
            missing = exc.name or ""
            own = own_module == missing or own_module.startswith(missing + ".")
            self.state = FAILED if own else MISSING_DEPENDENCY
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        except Exception as exc:  # recorded and re-raised
            self.state, self.error = FAILED, f"{type(exc).__name__}: {exc}"
            raise
        if not callable(obj):
            self.state, self.error = FAILED, f"{self.value} is not callable"
            raise TypeError(self.error)
        self.state, self.obj = LOADED, obj
        return obj

    def as_dict(self) -> Dict[str, Any]:
        """A JSON-ready summary."""
        return {"group": self.group, "name": self.name, "value": self.value,
                "distribution": self.distribution, "state": self.state, "error": self.error}

    def label(self) -> str:
        """``'redis' (monitor-agent-redis 0.1.0)``."""
        return f"{self.name!r} ({self.distribution})" if self.distribution else repr(self.name)


def _builtin_factory(scheme: str) -> Callable[..., Any]:
    from .transports import jsonl, log

    return log.factory if scheme == "log" else jsonl.factory


class PluginRegistry:
    """The entry points of both groups, read once.

    Args:
        disabled: Entry-point names not to load; ``"*"`` disables all.
    """

    def __init__(self, disabled: Tuple[str, ...] = ()) -> None:
        self.disabled = frozenset(disabled)
        self.records: List[PluginRecord] = []
        try:
            found = entry_points([TRANSPORTS_GROUP, PLUGINS_GROUP])
        except Exception:  # broken metadata must not stop the agent
            log.warning("could not read entry points", exc_info=True)
            found = []
        seen = set()
        for ep in found:
            if (ep.group, ep.name) in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add((ep.group, ep.name))
            record = PluginRecord(ep)
            if self.is_disabled(ep.name):
                record.state = DISABLED
            elif ep.group == TRANSPORTS_GROUP and ep.name in BUILTIN_SCHEMES:
                record.state = SHADOWED
            self.records.append(record)

    def is_disabled(self, name: str) -> bool:
        """Whether *name* is disabled by ``MONITOR_AGENT_DISABLED_PLUGINS``."""
        return "*" in self.disabled or name in self.disabled

    def schemes(self) -> List[str]:
        """Every transport scheme available: built-in ones, then plugins'."""
        return list(BUILTIN_SCHEMES) + [r.name for r in self.records
                                        if r.group == TRANSPORTS_GROUP and r.state not in (DISABLED, SHADOWED)]

    def _transport_record(self, scheme: str) -> PluginRecord | None:
        for record in self.records:
            if record.group == TRANSPORTS_GROUP and record.name == scheme:
                return record
        return None

    def transport_factory(self, scheme: str, *, variable: str, url: str) -> Callable[..., Any]:
        """The factory for *scheme*; the user asked for it, so failures are errors.

        Args:
            scheme: The URL scheme.
            variable: The setting's variable or keyword, for the error message.
            url: The URL (already redacted), for the error message.

        Raises:
            ConfigError: Unknown, disabled or unloadable scheme.
        """
        if scheme in BUILTIN_SCHEMES:
            return _builtin_factory(scheme)
        record = self._transport_record(scheme)
        if record is None:
            raise ConfigError(variable, url, f"unknown transport scheme {scheme!r}; installed schemes: "
                              f"{', '.join(self.schemes())} (plugins such as monitor-agent-redis add more)")
        if record.state == DISABLED:
            raise ConfigError(variable, url, f"the transport plugin {record.label()} is disabled by "
                              "MONITOR_AGENT_DISABLED_PLUGINS")
        try:
            return record.load()  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - becomes a ConfigError naming the plugin
            raise ConfigError(variable, url, f"the transport plugin {record.label()} cannot be loaded: "
                              f"{record.error}") from None

    def run_plugins(self, agent: Any) -> None:
        """Load and call every enabled ``monitor_agent.plugins`` entry point with *agent*.

        Each is isolated: a missing dependency is logged at debug level, any
        other failure at warning level with the plugin's name; none stops install().
        A plugin may raise :class:`ConfigError` for its own bad settings: that
        propagates, because the user configured it.
        """
        for record in self.records:
            if record.group != PLUGINS_GROUP or record.state == DISABLED:
                continue
            try:
                setup = record.load()
            except Exception:  # noqa: BLE001
                level = logging.DEBUG if record.state == MISSING_DEPENDENCY else logging.WARNING
                log.log(level, "plugin %s skipped: %s", record.label(), record.error)
                continue
            try:
                setup(agent)
            except ConfigError:
                raise
            except Exception as exc:
                record.state, record.error = FAILED, f"{type(exc).__name__}: {exc}"
                log.warning("plugin %s failed during setup and is skipped: %s", record.label(), record.error,
                            exc_info=True)

    def load_all(self) -> None:
        """Try to import every enabled entry point (for ``monitor-agent plugins``)."""
        for record in self.records:
            if record.state == FOUND:
                try:
                    record.load()
                except Exception:  # noqa: BLE001 - recorded on the record
                    pass
