"""Turn what the reliability tests observed into the table of docs/reliability.md.

The tests in ``tests/reliability/`` (and the broker plugins' fault tests) call
``tests.reliability._record.observed(...)`` with the fault, how it was
injected, what the agent did and what was lost, measured in that run. After a
test run (``make test``), this script rewrites the part of
``docs/reliability.md`` between the ``observed`` markers; the prose around it
is kept. A fault seen by several runs or parametrisations keeps its last
record.

    python scripts/reliability_table.py [--check]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBSERVED = os.path.join(ROOT, "tests", "reliability", "observed.jsonl")
DOC = os.path.join(ROOT, "docs", "reliability.md")
BEGIN, END = "<!-- observed:begin -->", "<!-- observed:end -->"


def load() -> List[Dict[str, str]]:
    """The last record of each (fault, injected) pair, in first-seen order."""
    records: Dict[tuple, Dict[str, str]] = {}
    with open(OBSERVED, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                records[(rec["fault"], rec["injected"])] = rec
    return list(records.values())


# The numbered fault families, recognised from the fault's wording.
FAMILIES = [
    ("1 broker", ("redis", "rabbitmq", "amqp", "rediss")),
    ("2 load", ("load:",)),
    ("3 plugin", ("plugin", "transport whose", "subscriber", "monitoring function")),
    ("4 environment", ("settrace", "switchinterval", "hubs", "install()", "exit", "patch_all")),
    ("5 processes", ("fork", "multiprocessing", "gunicorn")),
    ("6 bad input", ("bad", "hostile", "inbound", "jsonl")),
    ("7 security", ("password", "stack", "private", "tls")),
]


def family(record: Dict[str, str]) -> str:
    text = record["fault"].lower()
    for name, words in FAMILIES:
        if any(word in text for word in words):
            return name
    return "8 other"


def render(records: List[Dict[str, str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| # | fault | how it was injected | what the agent did | events lost |", "| --- | --- | --- | --- | --- |"]
    for r in sorted(records, key=family):  # stable: first-seen order within a family
        rows.append(f"| {family(r).split()[0]} | {cell(r['fault'])} | {cell(r['injected'])} | "
                    f"{cell(r['behaviour'])} | {cell(r['lost'])} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is out of date")
    args = parser.parse_args()
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render(load())}\n{END}{tail}"
    if args.check:
        return int(new != doc)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
