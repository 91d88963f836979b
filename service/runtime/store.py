"""Model store discovery: model_store/<name>/<version>/{model.onnx, manifest.json}, verified before use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from service.runtime.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, sha256_of


class ModelStoreError(Exception):
    """The store holds no usable model, or the chosen one fails verification."""


@dataclass(frozen=True)
class ModelEntry:
    directory: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.directory / MODEL_FILE


def _version_key(version: str) -> tuple:
    """Numeric-aware ordering: 1.10.0 after 1.9.2; plain text sorts by its digits and letters."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-_+]", version))


def list_versions(store: Path, name: str) -> list[str]:
    root = store / name
    if not root.is_dir():
        return []
    found = [d.name for d in root.iterdir() if (d / MANIFEST_FILE).is_file() and (d / MODEL_FILE).is_file()]
    return sorted(found, key=_version_key)


def read_entry(store: Path, name: str, version: str) -> ModelEntry:
    directory = store / name / version
    try:
        manifest = Manifest.read(directory)
    except FileNotFoundError as exc:
        raise ModelStoreError(f"{directory} has no {MANIFEST_FILE}") from exc
    except ValidationError as exc:
        raise ModelStoreError(f"{directory / MANIFEST_FILE} is invalid: {exc.errors()[0]['msg']}") from exc
    if manifest.name != name or manifest.version != version:
        raise ModelStoreError(
            f"{directory}: manifest names {manifest.name}/{manifest.version}, folder says {name}/{version}"
        )
    return ModelEntry(directory, manifest)


def resolve(store: Path, name: str, version: str | None = None) -> ModelEntry:
    """The pinned version, or the newest one; its model.onnx must match the manifest's sha256."""
    versions = list_versions(store, name)
    if not versions:
        raise ModelStoreError(f"no versions of model {name!r} under {store}")
    if version is not None and version not in versions:
        raise ModelStoreError(f"model {name!r} has no version {version!r}; available: {', '.join(versions)}")
    entry = read_entry(store, name, version or versions[-1])
    actual = sha256_of(entry.onnx_path)
    if actual != entry.manifest.sha256:
        raise ModelStoreError(
            f"{entry.onnx_path} has sha256 {actual[:12]}..., manifest says {entry.manifest.sha256[:12]}...: refused"
        )
    return entry
