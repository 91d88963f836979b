"""API keys: stored as SHA-256 hashes, sent as `Authorization: Bearer <key>`, identified by a key id.

Entries, from RESMTNET_API_KEYS (comma-separated) or RESMTNET_API_KEYS_FILE (one per line, # comments):

    <key id>:sha256:<64 hex digits>[:revoked]

Keys are random 256-bit tokens (`python -m service.auth new <key id>` makes one), so a plain SHA-256 is a safe
way to store them: there is nothing to guess from. The presented key is hashed and compared with every stored
hash in constant time, so neither which entry matches nor how much of a key is right shows in the timing.
No key, and no hash of one, is ever logged; the key id identifies the client in logs and metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

_ENTRY = re.compile(r"(?P<id>[A-Za-z0-9][A-Za-z0-9._-]{0,63}):sha256:(?P<hash>[0-9a-fA-F]{64})(?P<revoked>:revoked)?")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    digest: bytes
    revoked: bool = False


@dataclass(frozen=True)
class Verdict:
    """The outcome for one request: the key id when the key is known, and whether it may pass."""

    key_id: str | None
    allowed: bool
    reason: str


class KeyConfigError(ValueError):
    """The configured keys cannot be used: the service must not start (rather than start open or half-configured)."""


class KeyStore:
    def __init__(self, keys: list[ApiKey]) -> None:
        ids = [k.key_id for k in keys]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise KeyConfigError(f"API key ids must be unique; repeated: {', '.join(duplicates)}")
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @classmethod
    def from_settings(cls, entries: str, file: Path | None) -> KeyStore:
        """The keys of RESMTNET_API_KEYS and RESMTNET_API_KEYS_FILE. A key file that cannot be read, or holds no
        entry (an empty placeholder, a Secret made from the wrong file), stops the start: whoever configured one
        meant the service to ask for keys, and must not find it open to every client."""
        keys = _entries(entries.split(","))
        if file is not None:
            try:
                text = file.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise KeyConfigError(
                    f"cannot read the API key file {file} ({reason}); the service runs as uid {os.getuid()}, "
                    "which must be able to read it"
                ) from None
            from_file = _entries(text.splitlines())
            if not from_file:
                raise KeyConfigError(
                    f"the API key file {file} holds no key entry; add '<key id>:sha256:<hex>' lines "
                    "(python -m service.auth new <key id>), or unset RESMTNET_API_KEYS_FILE to serve without keys"
                )
            keys += from_file
        return cls(keys)

    def check(self, authorization: str | None) -> Verdict:
        """Verdict for an Authorization header value."""
        if not authorization:
            return Verdict(None, False, "this endpoint needs an API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Verdict(None, False, "the Authorization header must be 'Bearer <key>'")
        digest = hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()
        match: ApiKey | None = None
        for key in self.keys:  # every entry is compared: no early exit, constant time per comparison
            if hmac.compare_digest(digest, key.digest):
                match = key
        if match is None:
            return Verdict(None, False, "the API key is not valid")
        if match.revoked:
            return Verdict(match.key_id, False, f"the API key '{match.key_id}' has been revoked")
        return Verdict(match.key_id, True, "ok")


def _entries(lines: list[str]) -> list[ApiKey]:
    """The entries of these lines; blank lines and # comments are skipped."""
    return [parse_entry(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def parse_entry(line: str) -> ApiKey:
    found = _ENTRY.fullmatch(line.strip())
    if found is None:
        raise KeyConfigError("an API key entry must read '<key id>:sha256:<64 hex digits>[:revoked]'")
    return ApiKey(found["id"], bytes.fromhex(found["hash"]), bool(found["revoked"]))


def new_key(key_id: str) -> tuple[str, str]:
    """(the key to give the client, the entry to store)."""
    key = "rmt_" + secrets.token_urlsafe(32)
    entry = f"{key_id}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    parse_entry(entry)  # refuses an invalid key id
    return key, entry


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "new":
        raise SystemExit("usage: python -m service.auth new <key id>")
    key, entry = new_key(argv[1])
    print(f"key (give it to the client, once; it is not stored): {key}")
    print(f"entry (for RESMTNET_API_KEYS or RESMTNET_API_KEYS_FILE): {entry}")


if __name__ == "__main__":
    main(sys.argv[1:])
