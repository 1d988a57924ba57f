"""``monitor-agent report EVENTS.jsonl [...]``: what blocked, for how long, and memory, from JSONL logs.

Reads logs written by the ``jsonl:`` transport (one process or many, one file
or several) in one streaming pass and prints the top blocking sites, memory
episodes, per-process totals and how many lines were skipped (and why).
``--html OUT.html`` also writes one self-contained page with timelines.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, TextIO

from ..report import LogReader, build_report, check_paths, render_text
from ..report._fmt import format_bytes
from ._common import fail

__all__ = ["Progress", "add_parser", "handle"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("report", help="summarise JSONL event logs (text, or one HTML page)",
                            description="Summarise JSONL event logs: top blocking sites, memory episodes, "
                                        "per-process totals and skipped lines; --html also writes one page.")
    parser.add_argument("files", nargs="+", metavar="EVENTS.jsonl", help="event logs to read ('-': standard input)")
    parser.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML report here")
    parser.add_argument("--top", type=_positive, default=10, metavar="N", help="rows per section (default 10)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None,
                          help="show progress on stderr (default: only when stderr is a terminal)")
    progress.add_argument("--no-progress", action="store_false", dest="progress", help="never show progress")
    parser.set_defaults(handler=handle)


class Progress:
    """A throttled ``NN% (read of total)`` line on a stream, rewritten in place.

    Args:
        stream: Where to write (stderr).
        interval: Seconds between updates.
        clock: Monotonic clock (tests pass a fake one).
    """

    def __init__(self, stream: TextIO, interval: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.next_update = clock() + interval
        self.calls = 0
        self.shown = False

    def __call__(self, done: int, total: int, path: str) -> None:
        self.calls += 1
        if self.calls & 255:  # look at the clock only every 256 lines
            return
        now = self.clock()
        if now < self.next_update:
            return
        self.next_update = now + self.interval
        if total:
            text = f"{min(100.0, 100.0 * done / total):5.1f}% ({format_bytes(done)} of {format_bytes(total)})"
        else:
            text = f"{format_bytes(done)} read"
        name = os.path.basename(path)[-40:].encode("ascii", "replace").decode()
        self.stream.write(f"\rmonitor-agent report: {text} {name}\x1b[K")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        """Erase the progress line, if one was shown."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _want_progress(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def handle(args: argparse.Namespace) -> int:
    problem = check_paths(args.files)
    if problem:
        fail(f"report: {problem}")
    progress = Progress(sys.stderr) if _want_progress(args.progress) else None
    reader = LogReader(args.files, progress=progress)
    try:
        report = build_report(reader)
    finally:
        if progress is not None:
            progress.finish()
    if args.html:
        from ..report.html import render_html

        page = render_html(report, reader.skipped, files=len(args.files), lines=reader.lines, top=args.top)
        try:
            with open(args.html, "w", encoding="utf-8") as out:
                out.write(page)
        except OSError as exc:
            fail(f"report: cannot write {args.html}: {exc.strerror or exc}")
    sys.stdout.write(render_text(report, reader.skipped, files=len(args.files), lines=reader.lines, top=args.top,
                                 errors=reader.read_errors))
    if args.html:
        sys.stdout.write(f"HTML report written to {args.html}\n")
    sys.stdout.flush()
    return 1 if reader.read_errors else 0
