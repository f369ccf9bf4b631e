"""A key's identity policy applied to one record: who the end user is and which conversation.

`hmac` replaces `customer_id`, `session_id` and every attribute they may come from (each
convention's keys for them, OpenTelemetry's `user.*` / `enduser.*`: `Places`), in the call, its observations,
its events and its resource, by `<key id>:<first 32 hex of HMAC-SHA256(secret, value)>`: the same
value gives the same pseudonym under one secret, so reports still group by customer; the key id
(from the secret, not the secret) says which secret made it, so a rotated one shows. `drop` removes
them. Also reads the secret's file (`--pseudonym-key-file`, re-read on change). Pure but for that read; the secret
is never put into a message, a log line or a record.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from .. import memo
from ..watched_file import WatchedFile
from .places import Places, rewritten
from .policy import KEEP, PseudonymKey

HMAC, DROP = "hmac", "drop"
MIN_SECRET_BYTES = 16
PSEUDONYM_HEX = 32
PSEUDONYMS_KEPT = 4096
_PSEUDONYMS: dict[tuple[str, str], str] = {}
# Custom metadata entries that name the end user or the session, whatever convention sent them.
METADATA_IDENTITY_NAMES = frozenset({"userid", "user", "username", "useremail", "email", "customerid", "enduserid",
                                     "sessionid", "conversationid"})


def read_pseudonym_key(path: str) -> PseudonymKey:
    """The secret in `path` (its bytes, surrounding whitespace removed). Raises ValueError that
    never quotes the file."""
    try:
        with open(path, "rb") as handle:
            secret = handle.read(1024 * 1024).strip()
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes long")
    return PseudonymKey("k" + hashlib.sha256(b"otel-s3-bridge pseudonym key id\0" + secret).hexdigest()[:8], secret)


def watch_pseudonym_key(path: str | None) -> WatchedFile[PseudonymKey | None] | None:
    """The secret's file, read now and again whenever it changes (a rotated Secret)."""
    if path is None:
        return None
    watched: WatchedFile[PseudonymKey | None] = WatchedFile(
        path, read_pseudonym_key, what="pseudonym key file", initial=None,
        describe=lambda key: f"pseudonym key {key.key_id}" if key is not None else "no key")
    watched.reload_if_changed()
    return watched


def pseudonym(key: PseudonymKey, value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    # The same customers and sessions come again and again; an HMAC costs ~3 us. Kept in memory only.
    found = _PSEUDONYMS.get((key.key_id, text))
    if found is not None:
        return found
    digest = hmac.new(key.secret, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return memo.remember(_PSEUDONYMS, (key.key_id, text), f"{key.key_id}:{digest[:PSEUDONYM_HEX]}", PSEUDONYMS_KEPT)


def _rewrite(value: Any, mode: str, key: PseudonymKey | None) -> Any:
    if value is None or mode == DROP or key is None:  # no secret (never read): nothing rather than the value
        return None
    return pseudonym(key, value)


def _attributes(attributes: Any, mode: str, key: PseudonymKey | None, is_identity: Callable[[str], bool]) -> Any:
    return rewritten(attributes, is_identity, None if mode == DROP else lambda value: _rewrite(value, mode, key))


def _is_metadata_identity(name: str) -> bool:
    return name.lower().replace("_", "").replace("-", "").replace(".", "") in METADATA_IDENTITY_NAMES


def govern_event_identities(events: Any, mode: str, key: PseudonymKey | None, places: Places) -> Any:
    if mode == KEEP or not isinstance(events, list):
        return events
    return [{**event, "attributes": _attributes(event.get("attributes"), mode, key, places.is_identity)}
            if isinstance(event, dict) else event for event in events]


def govern_identities(record: dict[str, Any], mode: str, key: PseudonymKey | None, places: Places) -> None:
    """Apply `mode` (keep, hmac or drop) to every place `record` names its end user or session."""
    if mode == KEEP:
        return
    record["customer_id"] = _rewrite(record["customer_id"], mode, key)
    record["session_id"] = _rewrite(record["session_id"], mode, key)
    record["attributes"] = _attributes(record["attributes"], mode, key, places.is_identity)
    record["resource"] = _attributes(record["resource"], mode, key, places.is_identity)
    record["metadata"] = _attributes(record["metadata"], mode, key, _is_metadata_identity)
    record["events"] = govern_event_identities(record["events"], mode, key, places)
    for observation in record["observations"] or ():
        if isinstance(observation, dict):
            observation["attributes"] = _attributes(observation.get("attributes"), mode, key, places.is_identity)
            observation["events"] = govern_event_identities(observation.get("events"), mode, key, places)
