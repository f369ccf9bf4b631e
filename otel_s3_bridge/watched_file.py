"""A configuration file the bridge reads at start and again whenever it changes (the token file,
the prices file): a Kubernetes Secret or ConfigMap mounted as a volume is swapped this way, without
a restart.

Changes are seen by polling (`reload_if_changed`, called every few seconds): the file's inode,
modification time and size. A version that cannot be read or parsed keeps the value read before,
with one warning per distinct problem; the parser's messages name lines, never values (the token
file holds secrets). Must not know what the file means.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("otel_s3_bridge")

Value = TypeVar("Value")


class WatchedFile(Generic[Value]):
    def __init__(self, path: str, read: Callable[[str], Value], *, what: str, initial: Value,
                 describe: Callable[[Value], str]) -> None:
        self.path = path
        self.value = initial
        self._read = read  # raises ValueError (naming lines) for a file that cannot be used
        self._what = what
        self._describe = describe
        self._state: tuple[int, int, int] | None = None
        self._problem: str | None = None

    def reload_if_changed(self) -> bool:
        """Read the file again if it changed since it was last read; True when the value changed."""
        try:
            stat = os.stat(self.path)
        except OSError as error:
            self._warn(f"cannot read the {self._what} {self.path}: {error.strerror}; keeping what was read before")
            return False
        state = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if state == self._state:
            return False
        try:
            value = self._read(self.path)
        except ValueError as error:
            self._warn(f"the {self._what} {self.path} cannot be used ({error}); keeping what was read before")
            return False
        first = self._state is None
        self.value, self._state, self._problem = value, state, None
        if not first:
            log.info("%s %s re-read: %s", self._what, self.path, self._describe(value))
        return True

    def _warn(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("%s", problem)
            self._problem = problem
