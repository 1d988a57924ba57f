"""Run every benchmark with its default settings, one after the other (``make bench``).

Each script prints its Markdown table and writes raw results to
``bench/results/<name>.json``; bench/README.md quotes the tables with the
command that produced them. Run it on a quiet machine: the scripts alternate
their variants so that drift hits all of them alike, but a busy neighbour
still adds noise.

    python bench/run_all.py [--only overhead,detection,...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {
    "startup": [],
    "overhead": [],
    "detection": [],
    "report_cost": [],
    "throughput": [],
    "throughput-paced": ["--rate", "2000", "--events", "10000"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset of: " + ", ".join(SCRIPTS))
    args = parser.parse_args()
    failed = []
    for name in args.only.split(","):
        script = name.split("-")[0] + ".py"
        command = [sys.executable, os.path.join(HERE, script), *SCRIPTS[name]]
        print(f"\n## {name}: {' '.join(command[1:])}\n", flush=True)
        if subprocess.run(command, cwd=HERE).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
