"""``monitor-agent plugins``: which entry points were found and whether they load."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..errors import ConfigError
from ..plugins import BUILTIN_SCHEMES, PluginRegistry
from ..settings import Settings
from ._common import fail

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("plugins", help="list transport and plugin entry points and their state",
                            description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        disabled = Settings.disabled_plugins.resolve({}, os.environ)[0]
    except ConfigError as exc:
        fail(str(exc))
    registry = PluginRegistry(disabled)
    registry.load_all()
    records = [r.as_dict() for r in registry.records]
    if args.json:
        print(json.dumps({"builtin_transports": list(BUILTIN_SCHEMES), "entry_points": records}, indent=2))
        return 0
    print(f"built-in transports: {', '.join(BUILTIN_SCHEMES)}")
    if not records:
        print("no entry points found in monitor_agent.transports or monitor_agent.plugins")
        return 0
    for r in records:
        kind = "transport" if r["group"].endswith("transports") else "plugin"
        line = f"{kind:<9}  {r['name']:<12} {r['state']:<20} {r['value']}  [{r['distribution'] or '?'}]"
        if r["error"]:
            line += f"\n{'':<11}{r['error']}"
        print(line)
    return 0
