"""Settings: declared once, parsed strictly, errors that name the variable."""
from __future__ import annotations

import math

import pytest

from monitor_agent import ConfigError, install
from monitor_agent._parsers import physical_memory
from monitor_agent.settings import PREFIX, Settings

# (variable suffix, bad value) — at least 30 across all settings.
BAD_VALUES = [
    ("ENABLED", ""), ("ENABLED", "maybe"), ("ENABLED", "2"),
    ("MAX_BLOCKING_TIME", "abc"), ("MAX_BLOCKING_TIME", ""), ("MAX_BLOCKING_TIME", "-0.1"),
    ("MAX_BLOCKING_TIME", "0"), ("MAX_BLOCKING_TIME", "nan"), ("MAX_BLOCKING_TIME", "inf"),
    ("MAX_BLOCKING_TIME", "ms100"), ("MAX_BLOCKING_TIME", "100 parsecs"), ("MAX_BLOCKING_TIME", "1e400"),
    ("MAX_BLOCKING_TIME", "30days"),
    ("MAX_MEMORY_USAGE", ""), ("MAX_MEMORY_USAGE", "-5MB"), ("MAX_MEMORY_USAGE", "MB512"),
    ("MAX_MEMORY_USAGE", "0"), ("MAX_MEMORY_USAGE", "150%"), ("MAX_MEMORY_USAGE", "0%"),
    ("MAX_MEMORY_USAGE", "nan"), ("MAX_MEMORY_USAGE", "12 furlongs"), ("MAX_MEMORY_USAGE", "1.5.2GB"),
    ("MEMORY_MONITOR_PERIOD", "-1"), ("MEMORY_MONITOR_PERIOD", "inf"), ("MEMORY_MONITOR_PERIOD", ""),
    ("MEMORY_LOW_WATER", "100%"), ("MEMORY_LOW_WATER", "1.5"), ("MEMORY_LOW_WATER", "-10%"),
    ("MEMORY_MEASURE", "pss"),
    ("TRANSPORTS", "log,,jsonl:x.jsonl"), ("TRANSPORTS", "://nohost"), ("TRANSPORTS", "log jsonl"),
    ("QUEUE_SIZE", "0"), ("QUEUE_SIZE", "-3"), ("QUEUE_SIZE", "ten"), ("QUEUE_SIZE", "1e3"),
    ("QUEUE_SIZE", "99999999999"), ("QUEUE_SIZE", ""),
    ("SERVICE", ""), ("SERVICE", "   "), ("SERVICE", "bad\nname"),
    ("DISABLED_PLUGINS", "redis;amqp"), ("DISABLED_PLUGINS", "a b"),
    ("FLUSH_TIMEOUT", "0"), ("FLUSH_TIMEOUT", "soon"),
    ("MAX_EVENT_SIZE", "10"), ("MAX_EVENT_SIZE", "50%"),
    ("BLOCKING_RATE_LIMIT", "10"), ("BLOCKING_RATE_LIMIT", "0/min"), ("BLOCKING_RATE_LIMIT", "10/fortnight"),
    ("STARTUP_GRACE", "-1s"), ("STARTUP_GRACE", "later"),
    ("BLOCKING_DETECTION", "psychic"),
    ("SAMPLE_INTERVAL", "0"), ("HEARTBEAT_INTERVAL", "-5ms"),
    ("GIL_STACKS", "sometimes"), ("GREENLET_DUMP", "yes please"),
]


class TestBadValues:
    """Every bad value fails install() with a ConfigError naming the variable, the value and the form."""

    @pytest.mark.parametrize("suffix,value", BAD_VALUES)
    def test_config_error_names_variable_value_and_form(self, suffix: str, value: str) -> None:
        """The message reads VARIABLE='value': expected …"""
        variable = PREFIX + suffix
        with pytest.raises(ConfigError) as info:
            Settings.load(environ={variable: value})
        message = str(info.value)
        assert message.startswith(f"{variable}={value!r}: expected"), message
        assert info.value.variable == variable

    def test_table_covers_every_setting_and_is_large(self) -> None:
        """The bad-value table exercises every declared setting and has at least 30 rows."""
        covered = {PREFIX + s for s, _ in BAD_VALUES}
        assert {s.env for s in Settings.declarations()} <= covered
        assert len(BAD_VALUES) >= 30

    def test_install_raises_before_starting_anything(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """install() itself raises, and no agent is left installed."""
        import monitor_agent

        monkeypatch.setenv("MONITOR_AGENT_MAX_BLOCKING_TIME", "abc")
        with pytest.raises(ConfigError, match=r"^MONITOR_AGENT_MAX_BLOCKING_TIME='abc': expected a positive "
                                              r"duration such as 0.1, 100ms or 2s$"):
            install()
        assert monitor_agent.get_agent() is None

    def test_config_error_is_a_value_error(self) -> None:
        """Callers that catch ValueError catch ConfigError too."""
        assert issubclass(ConfigError, ValueError)

    def test_keyword_errors_name_the_keyword(self) -> None:
        """A bad keyword value names the keyword."""
        with pytest.raises(ConfigError, match=r"^max_blocking_time=-1: expected a positive duration"):
            install(max_blocking_time=-1)

    def test_unknown_keyword_is_a_type_error(self) -> None:
        """A misspelt keyword is a TypeError, like any Python call."""
        with pytest.raises(TypeError, match="max_blocking_tme"):
            install(max_blocking_tme=1)

    def test_gevent_fallback_errors_name_gevent_variable(self) -> None:
        """A bad GEVENT_* value (used as fallback) is reported under its own name."""
        with pytest.raises(ConfigError, match=r"^GEVENT_MAX_BLOCKING_TIME='x'"):
            Settings.load(environ={"GEVENT_MAX_BLOCKING_TIME": "x"})

    def test_unknown_transport_scheme(self) -> None:
        """An unknown scheme fails install() and lists the installed ones."""
        with pytest.raises(ConfigError) as info:
            install(transports="carrier-pigeon://coop")
        assert str(info.value).startswith("transports='carrier-pigeon://coop': unknown transport scheme")
        assert "log, jsonl" in str(info.value)

    def test_transport_error_redacts_password(self) -> None:
        """A rejected URL never shows its password."""
        with pytest.raises(ConfigError) as info:
            Settings.load(environ={"MONITOR_AGENT_TRANSPORTS": "redis://:hunter2@host:6379/0,,"})
        assert "hunter2" not in str(info.value)


class TestGoodValues:
    """Accepted forms parse to the documented numbers."""

    @pytest.mark.parametrize("text,seconds", [("0.25", 0.25), ("250ms", 0.25), ("2s", 2.0), ("1.5min", 90.0),
                                              (" 100 ms ", 0.1), ("500us", 0.0005), ("1e-1", 0.1)])
    def test_durations(self, text: str, seconds: float) -> None:
        """Durations accept plain seconds and units."""
        s = Settings.load(environ={"MONITOR_AGENT_MAX_BLOCKING_TIME": text})
        assert math.isclose(s.max_blocking_time, seconds)

    @pytest.mark.parametrize("text,size", [("1048576", 1 << 20), ("512MB", 512 << 20), ("512mb", 512 << 20),
                                           ("1.5GB", int(1.5 * (1 << 30))), ("1.5GiB", int(1.5 * (1 << 30))),
                                           ("64KiB", 64 << 10), ("2kb", 2048), ("off", None)])
    def test_sizes(self, text: str, size: int) -> None:
        """Sizes accept bytes, kb/mb/gb (binary, as gevent), KiB/MiB/GiB and decimals."""
        s = Settings.load(environ={"MONITOR_AGENT_MAX_MEMORY_USAGE": text})
        assert s.max_memory_usage == size

    def test_percent_of_physical_memory(self) -> None:
        """N% is a share of physical memory (or the cgroup limit)."""
        s = Settings.load(environ={"MONITOR_AGENT_MAX_MEMORY_USAGE": "50%"})
        assert s.max_memory_usage == int(physical_memory() * 0.5)

    def test_precedence_keyword_then_ours_then_gevent_then_default(self) -> None:
        """Keywords beat MONITOR_AGENT_*, which beats GEVENT_*, which beats the default."""
        env = {"MONITOR_AGENT_MAX_BLOCKING_TIME": "0.2", "GEVENT_MAX_BLOCKING_TIME": "0.3"}
        assert Settings.load({"max_blocking_time": "50ms"}, env).max_blocking_time == 0.05
        assert Settings.load({}, env).max_blocking_time == 0.2
        assert Settings.load({}, {"GEVENT_MAX_BLOCKING_TIME": "0.3"}).max_blocking_time == 0.3
        assert Settings.load({}, {}).max_blocking_time == 0.1
        assert Settings.load({}, {"GEVENT_MONITOR_MEMORY_MAX": "200mb"}).max_memory_usage == 200 << 20

    def test_empty_transports_means_none(self) -> None:
        """MONITOR_AGENT_TRANSPORTS='' disables publishing."""
        assert Settings.load(environ={"MONITOR_AGENT_TRANSPORTS": ""}).transports == ()

    def test_repr_redacts(self) -> None:
        """The settings' repr hides passwords."""
        s = Settings.load(environ={"MONITOR_AGENT_TRANSPORTS": "amqp://guest:s3cr3t@localhost/"})
        assert "s3cr3t" not in repr(s)
        assert "amqp://guest:***@localhost/" in repr(s)

    def test_heartbeat_must_be_finer_than_threshold(self) -> None:
        """The heartbeat interval must be at most half the threshold."""
        with pytest.raises(ConfigError, match="MONITOR_AGENT_HEARTBEAT_INTERVAL='60ms': expected at most half"):
            Settings.load(environ={"MONITOR_AGENT_HEARTBEAT_INTERVAL": "60ms"})
