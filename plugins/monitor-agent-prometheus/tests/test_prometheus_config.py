"""MONITOR_AGENT_PROMETHEUS_* settings (no agent, no sockets)."""
from __future__ import annotations

import socket

import pytest
from monitor_agent_prometheus._config import ExporterConfig, parse_addr, parse_max_sites

from monitor_agent import ConfigError


def test_default_is_loopback_9464() -> None:
    config = ExporterConfig.from_environ({})
    assert (config.addr, config.sockaddr_host, config.ports, config.family) == (
        "127.0.0.1:9464", "127.0.0.1", [9464], socket.AF_INET)
    assert config.max_sites == 20


@pytest.mark.parametrize(("addr", "host", "ports"), [
    ("127.0.0.1:9464", "127.0.0.1", [9464]),
    (":9464", "", [9464]),
    ("[::1]:9464", "::1", [9464]),
    ("localhost:9470-9472", "localhost", [9470, 9471, 9472]),
    ("0.0.0.0:0", "0.0.0.0", [0]),
])
def test_accepted_forms(addr: str, host: str, ports: list) -> None:
    assert parse_addr(addr) == (host, ports)


def test_port_only_form_binds_every_ipv4_interface() -> None:
    config = ExporterConfig.from_environ({"MONITOR_AGENT_PROMETHEUS_ADDR": ":9464"})
    assert config.sockaddr(9464) == ("0.0.0.0", 9464)


def test_ipv6() -> None:
    config = ExporterConfig.from_environ({"MONITOR_AGENT_PROMETHEUS_ADDR": "[::1]:9464-9465"})
    assert config.family == socket.AF_INET6 and config.sockaddr(9465) == ("::1", 9465, 0, 0)


@pytest.mark.parametrize("addr", ["9464", "host", "1.2.3.4:", "1.2.3.4:x", "[::1]9464", "::1:9464",
                                  "1.2.3.4:65536", "1.2.3.4:0-5", "1.2.3.4:20-10", "a b:1"])
def test_rejected_forms_name_variable_value_and_form(addr: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExporterConfig.from_environ({"MONITOR_AGENT_PROMETHEUS_ADDR": addr})
    message = str(info.value)
    assert message.startswith(f"MONITOR_AGENT_PROMETHEUS_ADDR={addr!r}: ")
    assert "host:port, :port or [ipv6]:port" in message


@pytest.mark.parametrize("text", ["0", "-1", "x", "1001"])
def test_bad_max_sites(text: str) -> None:
    with pytest.raises(ConfigError, match="MONITOR_AGENT_PROMETHEUS_MAX_SITES"):
        parse_max_sites(text)
