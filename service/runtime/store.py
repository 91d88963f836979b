"""Model store discovery: model_store/<name>/<version>/{model.onnx, manifest.json}, verified before use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from service.runtime.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, sha256_of
from service.runtime.versions import VERSION_FORM, is_version, sort_key

log = logging.getLogger("resmtnet")


class ModelStoreError(Exception):
    """The store holds no usable model, or the chosen one fails verification."""


@dataclass(frozen=True)
class ModelEntry:
    directory: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.directory / MODEL_FILE


def _scan(store: Path, name: str) -> tuple[list[str], list[str]]:
    """The version folders holding a manifest and a model, oldest first; and the other visible folders."""
    root = store / name
    if not root.is_dir():
        return [], []
    versions, ignored = [], []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):  # hidden: e.g. an export in progress
            continue
        if is_version(d.name) and (d / MANIFEST_FILE).is_file() and (d / MODEL_FILE).is_file():
            versions.append(d.name)
        else:
            ignored.append(d.name)
    return sorted(versions, key=sort_key), ignored


def list_versions(store: Path, name: str) -> list[str]:
    """Folder names that are versions (see VERSION_FORM) and hold both files, oldest first: a pre-release sorts
    before its release."""
    return _scan(store, name)[0]


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
    """The pinned version, or the newest one; its model.onnx must match the manifest's sha256.

    Folders that are not versions are logged and skipped. A chosen version that fails verification is refused,
    with no fallback to an older one."""
    versions, ignored = _scan(store, name)
    for folder in ignored:
        why = f"lacks {MANIFEST_FILE} or {MODEL_FILE}" if is_version(folder) else f"is not a version ({VERSION_FORM})"
        log.warning("model store: %s %s: ignored", store / name / folder, why)
    if not versions:
        raise ModelStoreError(f"no versions of model {name!r} under {store}")
    if version is not None and version not in versions:
        hint = "" if is_version(version) else f" ({version!r} is not a version: {VERSION_FORM})"
        raise ModelStoreError(f"model {name!r} has no version {version!r}; available: {', '.join(versions)}{hint}")
    entry = read_entry(store, name, version or versions[-1])
    actual = sha256_of(entry.onnx_path)
    if actual != entry.manifest.sha256:
        raise ModelStoreError(
            f"{entry.onnx_path} has sha256 {actual[:12]}..., manifest says {entry.manifest.sha256[:12]}...: refused"
        )
    return entry
