"""The ``monitor-agent`` command.

Subcommands live in one module each: ``run``, ``config``, ``plugins``,
``listen`` and ``report``. Every subcommand exits with status 2 and a one-line
message (no traceback) on bad input.
"""
from __future__ import annotations

import argparse
import sys
from typing import List

from .._version import __version__

__all__ = ["main"]

_COMMANDS = ("run", "config", "plugins", "listen", "report")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor-agent",
        description="Runtime monitoring for gevent programs: blocked event loops and memory.")
    parser.add_argument("--version", action="version", version=f"monitor-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        module = __import__(f"{__name__}.{name}", fromlist=["add_parser"])
        module.add_parser(sub)
    return parser


def main(argv: List[str] | None = None) -> int:
    """Entry point of the ``monitor-agent`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv and argv[0] == "run":
        # Everything after "--" belongs to the program; argparse must not see it.
        from . import run

        return run.main(argv[1:])
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `monitor-agent listen | head`: the reader went away; not an error.
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
