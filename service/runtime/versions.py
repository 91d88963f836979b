"""Version folder names: MAJOR.MINOR.PATCH with an optional pre-release (1.3.0-rc1), ordered as SemVer 2.0 does."""

from __future__ import annotations

import re

_IDENT = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_VERSION = re.compile(rf"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-({_IDENT}(?:\.{_IDENT})*))?", re.ASCII)
VERSION_FORM = "MAJOR.MINOR.PATCH[-pre-release], e.g. 1.3.0 or 1.3.0-rc1"

# A sort key: the release numbers, then 1 for a release or (0, identifiers) for a pre-release of it.
VersionKey = tuple[int, int, int, tuple]


def version_key(name: str) -> VersionKey | None:
    """The sort key of a version name, or None when the name is not a version.

    Pre-releases sort before their release (1.3.0-rc1 < 1.3.0); their identifiers compare numerically when numeric,
    as text otherwise, and numeric ones before text ones (SemVer 2.0 section 11). Build metadata (+...) is refused:
    two folders differing only by it would have no order."""
    match = _VERSION.fullmatch(name)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), (1,)
    idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), (0, idents)


def is_version(name: str) -> bool:
    return version_key(name) is not None


def sort_key(name: str) -> VersionKey:
    """version_key for names known to be versions (sorted())."""
    key = version_key(name)
    if key is None:
        raise ValueError(f"{name!r} is not a version ({VERSION_FORM})")
    return key
