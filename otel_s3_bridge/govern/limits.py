"""Per-key rate limits: a token bucket each on spans per second and request bytes per second.

An export is admitted while its key's buckets are not in debt, and then charged in full, into
debt if it is larger than what is left: so an export is never taken in part, an export larger
than one second's allowance still gets through (once), and over time a key stores no more than
its rates. A key in debt is refused with the time until it is out of it (429 + Retry-After,
RESOURCE_EXHAUSTED + RetryInfo). Each key has its own buckets: one key at its limit never slows
another. The clock is an argument; holds no locks (one event loop).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..errors import RateLimited

BURST_SECONDS = 1.0  # a bucket holds this many seconds of its rate


class TokenBucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = rate * BURST_SECONDS
        self.tokens = self.capacity
        self._at = now

    def refill(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate)
        self._at = now
        return self.tokens

    def seconds_until_admitted(self, now: float) -> float:
        tokens = self.refill(now)
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def charge(self, amount: float, now: float) -> None:
        self.refill(now)
        self.tokens -= amount


class KeyRates:
    """The buckets of every limited key, made as keys first send."""

    def __init__(self, limits_of: Callable[[str | None], tuple[float, float]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limits_of = limits_of  # key name -> (spans per second, bytes per second); 0: unlimited
        self._clock = clock
        self._buckets: dict[str | None, tuple[TokenBucket | None, TokenBucket | None]] = {}

    def _of(self, key: str | None) -> tuple[TokenBucket | None, TokenBucket | None]:
        buckets = self._buckets.get(key)
        if buckets is None:
            now = self._clock()
            spans, size = self._limits_of(key)
            buckets = self._buckets[key] = (TokenBucket(spans, now) if spans else None,
                                            TokenBucket(size, now) if size else None)
        return buckets

    def admit(self, key: str | None) -> None:
        """Raise `RateLimited` while `key` is over its rates."""
        spans, size = self._of(key)
        if spans is None and size is None:
            return
        now = self._clock()
        wait = max(bucket.seconds_until_admitted(now) for bucket in (spans, size) if bucket is not None)
        if wait > 0:
            raise RateLimited(f"the key {key!r} sends more than its limit (max_spans_per_second, "
                              "max_bytes_per_second); retry later", retry_after_seconds=max(1, math.ceil(wait)))

    def charge(self, key: str | None, spans: int, size: int) -> None:
        span_bucket, byte_bucket = self._of(key)
        now = self._clock()
        if span_bucket is not None:
            span_bucket.charge(spans, now)
        if byte_bucket is not None:
            byte_bucket.charge(size, now)
