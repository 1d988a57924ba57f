"""URL and keyword validation of the amqp/amqps transport (no broker needed)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from monitor_agent_rabbitmq import RabbitMqTransport, factory

import monitor_agent
from monitor_agent import ConfigError
from tests.helpers import SECRET

GOOD = [
    ("amqp://guest:guest@127.0.0.1:5672/%2F", dict(host="127.0.0.1", port=5672, username="guest",
                                                  virtual_host="/", tls=False)),
    ("amqp://u:p@rabbit.example:5673/prod", dict(host="rabbit.example", port=5673, virtual_host="prod")),
    ("amqp://u:p@rabbit.example/", dict(port=5672, virtual_host="/")),
    ("amqp://rabbit.example", dict(port=5672, username="guest", password="guest", virtual_host="/")),
    ("amqps://u:p@rabbit.example/v%2Fx", dict(port=5671, tls=True, virtual_host="v/x", verify=True)),
    ("amqp://u:p%40ss@h:1/%2F?heartbeat=2&socket_timeout=1.5", dict(password="p@ss", heartbeat=2,
                                                                      socket_timeout=1.5)),
    ("amqp://u:p@h/%2F?connection_attempts=3&retry_delay=0&blocked_connection_timeout=30&stack_timeout=4",
     dict(connection_attempts=3, retry_delay=0.0, blocked_connection_timeout=30.0, stack_timeout=4.0)),
    ("amqps://u:p@h/%2F?verify=false&server_hostname=rabbit.internal", dict(verify=False,
                                                                          server_hostname="rabbit.internal")),
    ("amqp://u:p@[::1]:5672/%2F", dict(host="::1")),
]

BAD = [
    (f"amqp://u:{SECRET}@h:notaport/%2F", "port"),
    (f"amqp://u:{SECRET}@h:70000/%2F", "port"),
    (f"amqp://u:{SECRET}@h:0/%2F", "port"),
    (f"amqp://u:{SECRET}@h:/%2F", "port"),
    (f"amqp://u:{SECRET}@h:5672/a/b", "vhost"),
    (f"amqp://u:{SECRET}@:5672/%2F", "host"),
    (f"amqp://u:{SECRET}@h/%2F?heartbeat=soon", "heartbeat"),
    (f"amqp://u:{SECRET}@h/%2F?heartbeat=-1", "heartbeat"),
    (f"amqp://u:{SECRET}@h/%2F?socket_timeout=0", "socket_timeout"),
    (f"amqp://u:{SECRET}@h/%2F?socket_timeout=nan", "socket_timeout"),
    (f"amqp://u:{SECRET}@h/%2F?connection_attempts=0", "connection_attempts"),
    (f"amqp://u:{SECRET}@h/%2F?frobnicate=1", "frobnicate"),
    (f"amqp://u:{SECRET}@h/%2F?heartbeat=1&heartbeat=2", "twice"),
    (f"amqp://u:{SECRET}@h/%2F?cafile=/etc/hosts", "amqps"),
    (f"amqps://u:{SECRET}@h/%2F?cafile=/nonexistent/ca.pem", "cafile"),
    (f"amqps://u:{SECRET}@h/%2F?verify=maybe", "verify"),
    (f"amqp://u:{SECRET}@h/%2F#frag", "fragment"),
    (f"http://u:{SECRET}@h/%2F", "scheme"),
]


@pytest.mark.parametrize("url, expected", GOOD)
def test_good_urls(url: str, expected: dict) -> None:
    transport = factory(url)
    assert isinstance(transport, RabbitMqTransport)
    for key, value in expected.items():
        assert getattr(transport.settings, key) == value, key


@pytest.mark.parametrize("url, part", BAD)
def test_bad_urls_name_the_part_and_never_the_password(url: str, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(url)
    message = str(info.value)
    assert part in message
    assert SECRET not in message and SECRET not in repr(info.value)
    assert "amqp://user:pass@host:port/vhost" in message  # the accepted form


KEYWORDS_GOOD = [
    (dict(host="10.0.0.5", port=5673, username="svc", password=SECRET),
     dict(host="10.0.0.5", port=5673, username="svc", password=SECRET, tls=False)),
    (dict(host="", port=5672, username="", password=""), dict(host="127.0.0.1", username="guest",
                                                                password="guest")),
    (dict(host="h", virtual_host="prod", heartbeat=10, socket_timeout=2), dict(virtual_host="prod", heartbeat=10,
                                                                               socket_timeout=2.0)),
    (dict(host="h", port=5671, ssl=True, verify=False), dict(tls=True, verify=False)),
    (dict(host="h", port="5673"), dict(port=5673)),
]

KEYWORDS_BAD = [
    (dict(host="h", password=SECRET, username="u", bogus=1), "bogus"),
    (dict(host="h", port="x", password=SECRET, username="u"), "port"),
    (dict(host="h", port=0, password=SECRET, username="u"), "port"),
    (dict(host="h", heartbeat="often", password=SECRET, username="u"), "heartbeat"),
    (dict(host="h", virtual_host="", password=SECRET, username="u"), "virtual_host"),
    (dict(host="h", cafile="/etc/hosts", password=SECRET, username="u"), "amqps"),
    (dict(host="h", ssl="perhaps", password=SECRET, username="u"), "ssl"),
]


@pytest.mark.parametrize("keywords, expected", KEYWORDS_GOOD)
def test_gemstone_keyword_form(keywords: dict, expected: dict) -> None:
    transport = factory(None, **keywords)
    for key, value in expected.items():
        assert getattr(transport.settings, key) == value, key
    assert SECRET not in repr(transport) and SECRET not in transport.describe()
    assert SECRET not in repr(transport.settings)


@pytest.mark.parametrize("keywords, part", KEYWORDS_BAD)
def test_gemstone_keyword_form_refuses_bad_keywords(keywords: dict, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(None, **keywords)
    assert part in str(info.value)
    assert SECRET not in str(info.value)


def test_url_plus_keywords_is_refused() -> None:
    with pytest.raises(ConfigError, match="query string"):
        factory(f"amqp://u:{SECRET}@h/%2F", heartbeat=3)


def test_repr_and_describe_redact_the_password() -> None:
    transport = factory(f"amqp://svc:{SECRET}@h:5672/%2F")
    assert SECRET not in repr(transport)
    assert transport.describe() == "amqp://svc:***@h:5672/%2F"


def test_entry_module_does_not_import_pika() -> None:
    code = ("import sys, monitor_agent_rabbitmq as m; m.factory('amqp://guest:guest@h/%2F'); "
            "print('pika' in sys.modules, 'ssl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_entry_points_serve_amqp_and_amqps() -> None:
    from monitor_agent.plugins import PluginRegistry

    registry = PluginRegistry()
    for scheme in ("amqp", "amqps"):
        assert registry.transport_factory(scheme, variable="URL", url=scheme) is factory


def test_install_reports_a_bad_url_as_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        monitor_agent.install(transports=f"amqp://u:{SECRET}@h:99999/%2F")
    assert "port" in str(info.value) and SECRET not in str(info.value)
