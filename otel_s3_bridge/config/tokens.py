"""Key material: the `--token NAME=TOKEN` entries and the `--token-file` (one `name=token` or
`name=sha256:<hex>` per line), parsed into names and SHA-256 digests.

Problems name lines and entries, never a value. Must not keep a token that is not asked for
(`NamedToken` hides it from `repr`), log, or know how a token is presented (that is `receive.auth`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

SHA256_PREFIX = "sha256:"
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class NamedToken:
    """An accepted Bearer token and the name records carry for it (`ingest.key_name`)."""

    name: str
    token: str = field(repr=False)


class TokenFileError(ValueError):
    """A token file that cannot be used; the message names lines, never values."""


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def parse_token_file(text: str) -> list[tuple[str, bytes]]:
    """`name=token` or `name=sha256:<64 hex digits>` per line (blank lines and `#` comments
    ignored) -> (name, digest). Raises TokenFileError naming every bad line."""
    keys: list[tuple[str, bytes]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = (part.strip() for part in line.partition("="))
        if sep and secret.startswith("="):  # `TOKEN==`: a bare base64 token, not a key named TOKEN
            problems.append(f"line {number} has no name: a token ending in '=' needs one (NAME=TOKEN)")
        elif not sep or not name or not secret:
            problems.append(f"line {number} is not NAME=TOKEN")
        elif any(ch.isspace() for ch in secret):
            problems.append(f"line {number} ({name}) has whitespace in its token")
        elif any(existing == name for existing, _ in keys):
            problems.append(f"line {number} repeats the name {name!r}")
        elif secret.startswith(SHA256_PREFIX):
            if not _DIGEST.fullmatch(secret[len(SHA256_PREFIX):]):
                problems.append(f"line {number} ({name}): sha256: must be followed by 64 hex digits")
            else:
                keys.append((name, bytes.fromhex(secret[len(SHA256_PREFIX):])))
        else:
            keys.append((name, digest_of(secret)))
    if problems:
        raise TokenFileError("; ".join(problems))
    return keys


def read_token_file(path: str) -> list[tuple[str, bytes]]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            return parse_token_file(file.read())
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror}") from None
