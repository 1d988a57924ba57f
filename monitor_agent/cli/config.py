"""``monitor-agent config``: every setting, its variable, default and effective value.

The README's settings table is ``monitor-agent config --markdown``, so the docs
and the code cannot drift apart. Passwords in URLs are redacted.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, List

from ..errors import ConfigError
from ..settings import Setting, Settings
from ._common import fail

__all__ = ["add_parser", "markdown_table"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("config", help="show every setting with its variable, default and effective value",
                            description=__doc__.splitlines()[0])
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON")
    form.add_argument("--markdown", action="store_true", help="print the README's settings table")
    parser.set_defaults(handler=handle)


def _default(setting: Setting[Any]) -> str:
    return setting.default_text or setting.show(setting.default_value())


def markdown_table() -> str:
    """The settings table for the README (defaults, not the current environment)."""
    rows = ["| variable | meaning | default | falls back to |", "| --- | --- | --- | --- |"]
    for s in Settings.declarations():
        fallback = f"`{s.gevent_env}`" if s.gevent_env else ""
        rows.append(f"| `{s.env}` | {s.help} | `{_default(s)}` | {fallback} |")
    return "\n".join(rows) + "\n"


def handle(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table(), end="")
        return 0
    try:
        settings = Settings.load()
    except ConfigError as exc:
        fail(str(exc))
    if args.json:
        print(json.dumps([{"name": s.name, "variable": s.env, "gevent_variable": s.gevent_env,
                           "default": _default(s), "value": s.show(v), "source": settings.sources[s.name],
                           "help": s.help} for s, v in settings.items()], indent=2))
        return 0
    width = max(len(s.env) for s in Settings.declarations())
    lines: List[str] = []
    for setting, value in settings.items():
        source = settings.sources[setting.name]
        origin = "" if source == "default" else f"   (from {source})"
        lines.append(f"{setting.env:<{width}}  = {setting.show(value)}{origin}")
        lines.append(f"{'':<{width}}    default {_default(setting)}; {setting.help}")
    print("\n".join(lines))
    return 0
