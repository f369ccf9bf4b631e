"""Logging for a server on the internet: one set-up, no secret in any line, no flood.

- `Redactor`, on every handler, rewrites any line (message and traceback) that carries a
  configured token or anything shaped like an `Authorization` value, whichever library wrote it
  (aiohttp echoes raw header lines in its parser errors, for instance).
- `Tally` turns refusals (unauthenticated, malformed, over a limit) into at most one line per
  interval with counts by reason, so that traffic from the internet cannot amplify into log volume.
- `JsonFormatter` (`--log-format json`) writes one JSON object per line: `time`, `level`,
  `logger`, `message`, and the record's structured fields (`extra=`, the worker, an exception).
- `quiet_exception_handler` keeps the event loop's own reports of running out of file
  descriptors (accept() failing) to one line per interval, without tracebacks.
Must not decide what is refused; only how it is told.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import logging
import re
import sys
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

REDACTED = "<redacted>"
# `Bearer <value>` / `Basic <value>`, and whatever follows `Authorization:` up to the end of the
# line or a closing quote (a repr'd header line such as b'Authorization: Bearer t\x01k').
_AUTHORIZATION = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\"]+|(authorization['\"]?\s*[:=,]\s*['\"]?)[^\r\n'\"]+")
MIN_SECRET_LENGTH = 4


def _redact_text(text: str, secrets: Iterable[str]) -> str:
    text = _AUTHORIZATION.sub(lambda m: (m.group(1) + m.group(2) + REDACTED) if m.group(1)
                              else m.group(3) + REDACTED, text)
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class Redactor(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in someone's log call: show it raw
            message = str(record.msg)
        record.msg, record.args = _redact_text(message, self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact_text(record.exc_text, self.secrets)
        return True


# Attributes every LogRecord has: anything else on a record came from `extra=` and is a field.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Runs after `Redactor`, which has already redacted the message and
    the traceback; field values from `extra=` are redacted here."""

    def __init__(self, fields: dict[str, Any] | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._fields = fields or {}
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self._fields,
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value if isinstance(value, (int, float, bool)) or value is None \
                    else _redact_text(str(value), self._secrets)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def setup(level: str, prefix: str = "", secrets: Iterable[str] = (), log_format: str = "text",
          fields: dict[str, Any] | None = None) -> None:
    """Log to stderr, every line redacted: text lines starting with time, level and `prefix`, or
    JSON objects with `fields` in each."""
    if hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(errors="backslashreplace")  # an undecodable byte must not break a line
    handler = logging.StreamHandler(sys.stderr)
    secrets = tuple(secrets)
    handler.setFormatter(JsonFormatter(fields, secrets) if log_format == "json"
                         else logging.Formatter(f"%(asctime)s %(levelname)s{prefix} %(name)s: %(message)s"))
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore's debug output includes request headers; keep it quiet whatever the level.
    for noisy in ("botocore", "aiobotocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_TALLIES: weakref.WeakSet[Tally] = weakref.WeakSet()


def flush_due() -> None:
    """Log what every tally counted since its last line, where its interval has passed (called
    periodically, so that the last events of a burst are told too)."""
    for tally in list(_TALLIES):
        tally.flush_if_due()


class Tally:
    """Counts events by reason and logs them at most once per `interval_seconds`."""

    def __init__(self, logger: logging.Logger, what: str, *, level: int = logging.INFO,
                 interval_seconds: float = 60.0, clock=time.monotonic) -> None:
        self._logger = logger
        self._what = what
        self._level = level
        self._interval = interval_seconds
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._last: float | None = None
        _TALLIES.add(self)

    def add(self, reason: str) -> None:
        self._counts[reason[:120]] += 1
        now = self._clock()
        if self._last is None or now - self._last >= self._interval:
            self.flush(now)

    def flush_if_due(self) -> None:
        if self._counts and (self._last is None or self._clock() - self._last >= self._interval):
            self.flush()

    def flush(self, now: float | None = None) -> None:
        if self._counts:
            total = sum(self._counts.values())
            reasons = "; ".join(f"{reason}: {count}" for reason, count in self._counts.most_common(5))
            window = "" if self._last is None else f" in the last {self._interval:.0f} s"
            self._logger.log(self._level, "%s %d time(s)%s (%s)", self._what, total, window, reasons)
            self._counts.clear()
        self._last = self._clock() if now is None else now


_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def quiet_exception_handler(interval_seconds: float = 60.0):
    """An event-loop exception handler: out-of-descriptor reports once per interval, others as usual."""
    tally = Tally(logging.getLogger("otel_s3_bridge"), "could not accept connections (out of file descriptors; "
                  "lower --max-connections or raise the limit)", level=logging.WARNING,
                  interval_seconds=interval_seconds)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        if isinstance(exception, OSError) and exception.errno in _RESOURCE_ERRNOS:
            tally.add(exception.strerror or str(exception))
            return
        loop.default_exception_handler(context)

    return handle
