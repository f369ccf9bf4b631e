"""Bearer-token authentication against named keys, shared by the HTTP and gRPC receivers.

Runs on headers only, before any body is read. Compares in constant time against every key and
never puts a presented token into an error, a log line or a response.
"""

from __future__ import annotations

import hmac

from .config import NamedToken
from .errors import Unauthenticated


class Authenticator:
    """Maps an `Authorization` header value to the name of the key it carries."""

    def __init__(self, tokens: tuple[NamedToken, ...]) -> None:
        self._keys = [(token.name, token.token.encode()) for token in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str | None:
        """The matching key's name; None when no keys are configured (loopback-only mode)."""
        if not self._keys:
            return None
        if not authorization:
            raise Unauthenticated("missing Authorization header; send 'Authorization: Bearer <token>'")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthenticated("unsupported authorization scheme; send 'Authorization: Bearer <token>'")
        candidate = presented.strip().encode()
        if not candidate:
            raise Unauthenticated("empty Bearer token")
        matched = None
        for name, token in self._keys:
            # Compare against every key so the time taken does not tell which one matched.
            if hmac.compare_digest(candidate, token) and matched is None:
                matched = name
        if matched is None:
            raise Unauthenticated("the Bearer token does not match any configured key")
        return matched
