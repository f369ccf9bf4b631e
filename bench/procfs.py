"""A process and its descendants, read from /proc: who they are and how much memory they hold.
Shared by the benchmarks and the tests (which measure the bridge the same way)."""

from __future__ import annotations

from pathlib import Path


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (decode processes, workers, ...), `root` first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
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
