"""JSON as the service reads it from clients: an object that gives a member twice is refused. json.loads would keep
the last value and drop the first without a word (a second "spacing", a repeated "i" in a centre)."""

from __future__ import annotations

import json
from typing import Any


class DuplicateMember(ValueError):
    """An object gives the same member twice."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateMember(f"the member {key[:40]!r} is given twice in one object")
        out[key] = value
    return out


def loads(text: str | bytes | bytearray) -> Any:
    """json.loads, refusing duplicate members (DuplicateMember, a ValueError)."""
    return json.loads(text, object_pairs_hook=_unique)
