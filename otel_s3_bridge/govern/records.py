"""A key's `RecordPolicy` applied where decoding hands over what it found, before anything is
spooled, kept for a join or quarantined: sampling, then content, then identities.

Sampling is decided by the trace id alone (its low 56 bits against the share, as OpenTelemetry's
consistent probability sampling reads them), so every span and GenAI event of one trace is kept or
left out together, in any export, process or restart; an errored call is always kept. Pure.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .content import govern_content, govern_events
from .identities import govern_event_identities, govern_identities
from .places import Places
from .policy import RecordPolicy

RANDOM_BITS = 56


def sampled_in(trace_id: str, share: float) -> bool:
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    try:
        randomness = int(trace_id[-RANDOM_BITS // 4:], 16)
    except ValueError:  # not hex: its digest stands in, as stable
        randomness = int.from_bytes(hashlib.sha256(trace_id.encode("utf-8", "surrogatepass")).digest()[:7], "big")
    return randomness < share * (1 << RANDOM_BITS)


def govern_record(record: dict[str, Any], policy: RecordPolicy, places: Places) -> bool:
    """Apply `policy` to `record` in place; False when the call is sampled out (not to be stored)."""
    if record["status"] != "error" and not sampled_in(record["otel_trace_id"], policy.sample):
        return False
    govern_content(record, policy, places)
    govern_identities(record, policy.identities, policy.pseudonym, places)
    return True


def govern_call_events(trace_id: str, events: list[dict[str, Any]], policy: RecordPolicy,
                       places: Places) -> list[dict[str, Any]] | None:
    """A call's GenAI event records (as span events) under `policy`; None when its trace is sampled
    out (they are then not kept for the join either)."""
    if not sampled_in(trace_id, policy.sample):
        return None
    return govern_event_identities(govern_events(events, policy, places), policy.identities,
                                   policy.pseudonym, places)
