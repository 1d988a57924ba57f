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
from typing import Any, Dict, List

from ..errors import ConfigError
from ..settings import Settings
from ._common import fail

__all__ = ["BOOTSTRAP_DIR", "PATCH_ALL_ENV", "add_parser", "main"]

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bootstrap")
PATCH_ALL_ENV = "MONITOR_AGENT_PATCH_ALL"


def _options_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: List[str]) -> int:
    """Validate the options and settings, then exec the program. Returns only on error."""
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
    try:
        args = parser.parse_args(own)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not command:
        parser.print_usage(sys.stderr)
        fail("no command given after --")
    options = {s.name: getattr(args, s.name) for s in Settings.declarations() if getattr(args, s.name) is not None}
    env = child_environment(options, args.patch_all)
    try:
        Settings.load(environ=env)
    except ConfigError as exc:
        fail(str(exc))
    if args.patch_all and env.get(PATCH_ALL_ENV) != "1":  # pragma: no cover - defensive
        fail(f"{PATCH_ALL_ENV} could not be set")
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        fail(f"command not found: {command[0]}", status=127)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(executable, command, env)
    except OSError as exc:
        fail(f"cannot run {command[0]}: {exc.strerror}", status=126)
    return 0  # pragma: no cover - execve does not return
