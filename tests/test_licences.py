"""What the service installs (and so what its image redistributes) is under permissive licences: no GPL."""

import re
from importlib import metadata

from packaging.requirements import Requirement


def _licence_text(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    fields = [meta.get("License-Expression") or "", (meta.get("License") or "")[:200]]
    fields += [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return " | ".join(fields)


def _runtime_closure(*roots: str) -> dict[str, metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency for another platform
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_no_gpl_licence_among_the_service_dependencies():
    closure = _runtime_closure("resmtnet-serve", "onnxruntime")  # onnxruntime: the cpu or gpu extra
    assert {"pydicom", "python-gdcm", "pyjpegls", "pylibjpeg-openjpeg", "onnxruntime"} <= set(closure)
    offenders = {
        name: text
        for name, dist in closure.items()
        if re.search(r"\bA?GPL|GNU (Affero )?General Public", text := _licence_text(dist))
        and not re.search(r"LGPL|Lesser", text)
    }
    assert not offenders, offenders
