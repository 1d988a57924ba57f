"""A small, fast reader of installed entry points.

``importlib.metadata`` costs ~30 ms and 4 MiB to import (it pulls in ``email``,
``zipfile``, ``csv`` …), more than the agent's whole start-up budget. Entry points
are plain INI files beside each installed distribution, so this module reads
them directly: ``*.dist-info/entry_points.txt`` (pip, including editable
installs) and ``*.egg-info/entry_points.txt`` (``setup.py develop``) in every
``sys.path`` directory, first occurrence of a distribution winning, as
``importlib.metadata`` does.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Iterable, List, Optional, Sequence, Tuple

__all__ = ["EntryPoint", "entry_points"]


class EntryPoint:
    """One entry point: ``name = module:attr`` in *group*, declared by *dist* (``name version``)."""

    __slots__ = ("dist", "group", "name", "value")

    def __init__(self, group: str, name: str, value: str, dist: Optional[str]) -> None:
        self.group = group
        self.name = name
        self.value = value
        self.dist = dist

    def load(self) -> Any:
        """Import the module and return the attribute (like ``importlib.metadata.EntryPoint.load``)."""
        module_name, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.split("[", 1)[0].strip().split(".")):
            obj = getattr(obj, attr)
        return obj

    def __repr__(self) -> str:
        return f"EntryPoint({self.group!r}, {self.name!r}, {self.value!r})"


def _parse(text: str) -> Iterable[Tuple[str, str, str]]:
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group and "=" in line:
            name, _, value = line.partition("=")
            yield group, name.strip(), value.strip()


def _distribution(meta_dir: str) -> Tuple[str, Optional[str]]:
    """(normalized name, "name version") from a ``name-version.dist-info`` folder."""
    stem = os.path.basename(meta_dir).rsplit(".", 1)[0]
    name, _, version = stem.partition("-")
    label = name.replace("_", "-")
    return label.lower(), (f"{label} {version}" if version else label)


def entry_points(groups: Sequence[str], path: Optional[Sequence[str]] = None) -> List[EntryPoint]:
    """Every entry point in *groups* from the distributions on *path* (``sys.path`` by default)."""
    wanted = set(groups)
    seen_dists = set()
    found: List[EntryPoint] = []
    for directory in path if path is not None else sys.path:
        try:
            names = os.listdir(directory or ".")
        except OSError:
            continue
        for entry in sorted(names):
            if not entry.endswith((".dist-info", ".egg-info")):
                continue
            meta_dir = os.path.join(directory or ".", entry)
            key, label = _distribution(meta_dir)
            if key in seen_dists:
                continue
            seen_dists.add(key)
            try:
                with open(os.path.join(meta_dir, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            found.extend(EntryPoint(g, n, v, label) for g, n, v in _parse(text) if g in wanted)
    return found


def group_has_entries(group: str) -> bool:
    """Whether any installed distribution declares an entry point in *group*."""
    return bool(entry_points([group]))

