"""What each reliability test saw, for docs/reliability.md.

Tests call :func:`observed` with the fault, how it was injected, what the agent
did and how many events were lost; the records go to
``tests/reliability/observed.jsonl`` (not committed) and
``python scripts/reliability_table.py`` turns them into the table of
docs/reliability.md.
"""
from __future__ import annotations

import json
import os
from typing import Union

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "observed.jsonl")


def observed(fault: str, injected: str, behaviour: str, lost: Union[str, int]) -> None:
    """Append one observation (the test's own numbers) for the reliability record."""
    with open(PATH, "a", encoding="utf-8") as f:
        f.write(json.dumps({"fault": fault, "injected": injected, "behaviour": behaviour, "lost": str(lost)}) + "\n")
