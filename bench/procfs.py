"""A process and its descendants, read from /proc: who they are and how much memory they hold.
Shared by the benchmarks and the tests (which measure the bridge the same way)."""

from __future__ import annotations

from pathlib import Path


def stat_fields(path: str | Path) -> list[str]:
    """The fields of a /proc `stat` file after the command name (which may hold spaces and
    parentheses): index 1 is the parent, 7 the minor faults, 11 and 12 user and system ticks.
    Raises OSError when the process (or thread) is gone."""
    return Path(path).read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (decode processes, workers, ...), `root` first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_fields(stat)
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def memory_mb(pids: list[int], field: str = "VmHWM") -> dict[int, float]:
    """`VmHWM` (the peak resident set) or `VmRSS` (now) of each process, in MB."""
    found = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    found[pid] = round(int(line.split()[1]) / 1024, 1)
        except OSError:
            continue
    return found
