"""Shared helpers for the benchmarks: alternating runs in fresh interpreters, medians, tables."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

PYTHON = sys.executable


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment without MONITOR_AGENT_*/GEVENT_* variables, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_AGENT_", "GEVENT_"))}
    env.update(extra)
    return env


def run_json(code: str, env: Mapping[str, str], timeout: float = 300, prefix: Sequence[str] = (),
             args: Sequence[str] = ()) -> Any:
    """Run *code* in a fresh interpreter; it must print one JSON document as its last line."""
    result = subprocess.run([*prefix, PYTHON, "-c", textwrap.dedent(code), *args], env=dict(env),
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def alternate(modes: Sequence[str], rounds: int, measure: Callable[[str], float],
              progress: bool = True) -> Dict[str, List[float]]:
    """Measure each mode once per round, in turn, so drift affects all modes alike."""
    results: Dict[str, List[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes:
            results[mode].append(measure(mode))
        if progress:
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{m}={results[m][-1]:.4g}" for m in modes),
                  file=sys.stderr, flush=True)
    return results


def median_ratios(results: Dict[str, List[float]], baseline: str) -> Dict[str, float]:
    """Median over rounds of (mode / baseline) measured in the same round."""
    base = results[baseline]
    return {m: statistics.median(v / b for v, b in zip(vals, base, strict=True)) for m, vals in results.items()}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine() -> str:
    """A one-line description of where the numbers came from."""
    import platform

    import gevent

    cpus = os.cpu_count()
    return (f"{platform.python_implementation()} {platform.python_version()}, gevent {gevent.__version__}, "
            f"{cpus} CPUs, {platform.machine()}")


def save(name: str, payload: Dict[str, Any], results_dir: Optional[str] = None) -> str:
    """Write raw results to bench/results/NAME.json and return the path."""
    directory = results_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    return path
