"""Which processes descend from which: read from /proc (Linux).

Not in conftest.py: spawned children re-import test modules by name, and with two
conftest.py files in the tree "conftest" would be the wrong one there.
"""

from __future__ import annotations

import os


def descendants(pid: int | None = None) -> set[int]:
    """Pids of every living descendant of ``pid`` (default: this process), from /proc."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, parent = fields[0], int(fields[1])
        if state != "Z":
            children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
