"""Bearer-token authentication against named keys, shared by the HTTP and gRPC receivers.

`Authorization: Basic base64(name:token)` is accepted too, where `name` is the key's name and
`token` its token: Langfuse's exporter sends its public and secret key that way, so a Langfuse
user switches to the bridge by changing one URL.

Keys come from `--token NAME=TOKEN` and from `--token-file` (parsed by `config.tokens`, re-read
when the file changes, as a rotated Kubernetes Secret does).
Only SHA-256 digests are held: a presented token is hashed and compared in constant time against
every key, so the time taken says nothing about which key (or how much of one) matched. A key may
be routed to its own prefix and bucket, and governed by its own policy (`Principal`), so that
tenants never share a namespace.
Runs on headers only, before any body is read; never puts a presented or configured token into
an error, a log line or a response. Must not know transports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..config.tokens import digest_of, read_token_file
from ..errors import Unauthenticated
from ..govern.policy import KeyPolicy
from ..watched_file import WatchedFile


@dataclass(frozen=True)
class Principal:
    """Who sent an export, where its records go and what they may hold."""

    name: str | None  # the key's name; None when no keys are configured (loopback only)
    prefix: str
    bucket: str | None  # the key's own bucket; None: the configured one
    policy: KeyPolicy = KeyPolicy("")  # the key's whole policy (`govern.policy`)


class Authenticator:
    """Maps an `Authorization` header value to the `Principal` of the key it carries."""

    def __init__(self, tokens: Mapping[str, str], *, token_file: str | None = None,
                 policy_of: Callable[[str | None], KeyPolicy]) -> None:
        self._static = [(name, digest_of(token)) for name, token in tokens.items()]
        self._file = (WatchedFile(token_file, read_token_file, what="token file", initial=[],
                                  describe=lambda keys: f"{len(keys)} key(s) ({', '.join(name for name, _ in keys)})")
                      if token_file else None)
        self._policy_of = policy_of
        self._principals: dict[str | None, Principal] = {}
        self._keys = list(self._static)
        if token_file:
            self.reload_if_changed()

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or self._file is not None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._keys]

    def reload_if_changed(self) -> bool:
        """Re-read the token file when it changed (called at start and then periodically).
        A file that cannot be used keeps the keys read before, with one warning per problem."""
        if self._file is None or not self._file.reload_if_changed():
            return False
        names = {name for name, _ in self._static}
        self._keys = self._static + [(name, digest) for name, digest in self._file.value if name not in names]
        return True

    def principal(self, name: str | None) -> Principal:
        principal = self._principals.get(name)
        if principal is None:
            policy = self._policy_of(name)
            principal = self._principals[name] = Principal(name, policy.prefix or "", policy.bucket, policy)
        return principal

    def authenticate(self, authorization: str | None) -> Principal:
        """The matching key's principal; an anonymous one when no keys are configured."""
        if not self.enabled:
            return self.principal(None)
        if not authorization:
            raise Unauthenticated("missing Authorization header; send 'Authorization: Bearer <token>'")
        scheme, _, presented = authorization.strip().partition(" ")
        scheme, presented = scheme.lower(), presented.strip()
        if scheme == "basic":
            user, presented = _basic_credentials(presented)
        elif scheme == "bearer":
            user = None
        else:
            raise Unauthenticated("unsupported authorization scheme; send 'Authorization: Bearer <token>'")
        if not presented:
            raise Unauthenticated("empty Bearer token" if user is None else "empty Basic password")
        try:
            candidate = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        except UnicodeError:
            raise Unauthenticated("the Bearer token does not match any configured key") from None
        matched = None
        for name, digest in self._keys:
            # Compare against every key so the time taken does not tell which one matched.
            if hmac.compare_digest(candidate, digest) and matched is None:
                matched = name
        if matched is None or (user is not None and user != matched):
            raise Unauthenticated("the Bearer token does not match any configured key" if user is None else
                                  "the Basic credentials (key name : token) do not match a configured key")
        return self.principal(matched)


def _basic_credentials(encoded: str) -> tuple[str, str]:
    """`base64(user:password)` -> (user, password)."""
    try:
        user, colon, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthenticated("the Basic credentials are not base64 of 'key name:token'") from None
    if not colon:
        raise Unauthenticated("the Basic credentials are not base64 of 'key name:token'")
    return user, password
