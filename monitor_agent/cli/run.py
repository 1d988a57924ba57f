"""``monitor-agent run [OPTIONS] -- CMD [ARGS…]``: start any Python program with the agent installed.

Works like ``opentelemetry-instrument`` and ``ddtrace-run``: the options become
``MONITOR_AGENT_*`` variables, a directory holding a ``sitecustomize`` module
goes in front of ``PYTHONPATH``, and the command replaces this process
(``execvp``), so its exit status, signals and pid are the program's own. At
interpreter start-up that ``sitecustomize`` optionally runs
``gevent.monkey.patch_all()``, chains to any ``sitecustomize`` that was already
on the path, and calls ``monitor_agent.install()``.

Python children of the program (``multiprocessing`` spawn, ``subprocess``)
inherit the environment and are monitored too; forked children (gunicorn
workers) inherit the installed agent. ``python -S`` and ``python -I`` skip
``sitecustomize`` and therefore the agent.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any, Dict, List, NoReturn, Tuple

from ..agent import build_transports
from ..errors import ConfigError
from ..plugins import PluginRegistry
from ..settings import Settings
from ._common import fail

__all__ = ["BOOTSTRAP_DIR", "PATCH_ALL_ENV", "add_parser", "main"]

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bootstrap")
PATCH_ALL_ENV = "MONITOR_AGENT_PATCH_ALL"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but usage errors are one ``monitor-agent: …`` line and exit 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        fail(message)


def _options_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="monitor-agent run", usage="monitor-agent run [OPTIONS] -- CMD [ARGS...]",
        description="Run a Python program with monitor_agent installed at interpreter start-up. "
                    "Each option sets the MONITOR_AGENT_* variable of the same name.")
    parser.add_argument("--patch-all", action="store_true",
                        help=f"call gevent.monkey.patch_all() first (sets {PATCH_ALL_ENV}=1)")
    for setting in Settings.declarations():
        parser.add_argument(setting.option, dest=setting.name, metavar="VALUE",
                            help=f"{setting.help} [{setting.env}]".replace("%", "%%"))
    return parser


def add_parser(sub: Any) -> None:
    # Parsed by main() directly (argv after "--" must not reach argparse); this
    # entry only makes `monitor-agent --help` list the subcommand.
    sub.add_parser("run", help="run a Python program with the agent installed at start-up", add_help=False)


def child_environment(options: Dict[str, str], patch_all: bool,
                      environ: Dict[str, str] | None = None) -> Dict[str, str]:
    """The environment for the program: settings as variables, the bootstrap first on PYTHONPATH."""
    env = dict(os.environ if environ is None else environ)
    for name, value in options.items():
        env[getattr(Settings, name).env] = value
    if patch_all:
        env[PATCH_ALL_ENV] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *paths])
    return env


def prepare(argv: List[str]) -> Tuple[str, List[str], Dict[str, str]]:
    """Parse ``run``'s arguments and validate every setting, without running anything.

    Returns:
        ``(executable, command, environment)`` ready for ``execve``.

    Raises:
        SystemExit: With status 2 (bad option or setting, one-line message on
            stderr), 127 (command not found), or 0 after ``--help``.
    """
    parser = _options_parser()
    if "--" in argv:
        split = argv.index("--")
        own, command = argv[:split], argv[split + 1:]
    elif argv[:1] in (["-h"], ["--help"]):
        own, command = argv, []
    elif argv[:1] and argv[0].startswith("-"):
        fail("put -- between monitor-agent run's options and the command: "
             "monitor-agent run [OPTIONS] -- CMD [ARGS...]")
    else:
        own, command = [], argv
    # "--startup-grace -1" must reach our validation, not look like an option to argparse.
    options_with_values = {s.option for s in Settings.declarations()}
    joined: List[str] = []
    for arg in own:
        if joined and joined[-1] in options_with_values:
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    args = parser.parse_args(joined)
    if not command:
        parser.print_usage(sys.stderr)
        fail("no command given after --")
    options = {s.name: getattr(args, s.name) for s in Settings.declarations() if getattr(args, s.name) is not None}
    env = child_environment(options, args.patch_all)
    try:
        settings = Settings.load(environ=env)
        # The transports too: an unknown scheme or a bad URL must stop us here,
        # not in the child's start-up (and not at all for a non-Python child).
        for transport in build_transports(settings, PluginRegistry(settings.disabled_plugins)):
            transport.close()
    except ConfigError as exc:
        fail(str(exc))
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        fail(f"command not found: {command[0]}", status=127)
    return executable, command, env


def main(argv: List[str]) -> int:
    """Validate the options and settings, then exec the program. Returns only on error."""
    try:
        executable, command, env = prepare(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(executable, command, env)
    except OSError as exc:
        fail(f"cannot run {command[0]}: {exc.strerror}", status=126)
    return 0  # pragma: no cover - execve does not return
