"""The client's nodule centres: a JSON array of {"x", "y", "z"} (world mm, patient LPS) or {"i", "j", "k"} (voxel:
column, row, slice index in the sorted series), each mapped to both and checked to lie inside the series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service import strict_json
from service.dicom.geometry import SeriesGeometry
from service.errors import PayloadTooLarge, UnusableInput
from service.imaging.formats import finite_number

EXAMPLE = '[{"x": -60.5, "y": 12.0, "z": -130.25}] or [{"i": 200, "j": 310, "k": 41}]'
WORLD, VOXEL = ("x", "y", "z"), ("i", "j", "k")


@dataclass(frozen=True)
class Center:
    """One nodule centre in both systems."""

    world: np.ndarray  # LPS (x, y, z) mm
    voxel: np.ndarray  # fractional (i, j, k)

    def as_dict(self) -> dict[str, float]:
        i, j, k = (round(float(v), 3) for v in self.voxel)
        x, y, z = (round(float(v), 3) for v in self.world)
        return {"i": i, "j": j, "k": k, "x": x, "y": y, "z": z}


def parse_centers(text: str | None, max_nodules: int) -> list[tuple[str, tuple[float, float, float]]]:
    """[(system, values)] in the order given; system is "world" or "voxel"."""
    if text is None or not text.strip():
        raise UnusableInput(f"'centers' is required with a series: a JSON array such as {EXAMPLE}")
    try:
        doc = strict_json.loads(text)
    except strict_json.DuplicateMember as exc:
        raise UnusableInput(f"'centers': {exc}") from None
    except (ValueError, RecursionError):
        raise UnusableInput(f"'centers' is not valid JSON; expected an array such as {EXAMPLE}") from None
    if not isinstance(doc, list) or not doc:
        raise UnusableInput(f"'centers' must be a non-empty JSON array such as {EXAMPLE}")
    if len(doc) > max_nodules:
        raise PayloadTooLarge(f"'centers' lists {len(doc)} nodules; at most {max_nodules} per request")
    return [_one(n, item) for n, item in enumerate(doc)]


def _one(n: int, item: Any) -> tuple[str, tuple[float, float, float]]:
    keys = set(item) if isinstance(item, dict) else None
    if keys == set(WORLD):
        system, names = "world", WORLD
    elif keys == set(VOXEL):
        system, names = "voxel", VOXEL
    else:
        raise UnusableInput(
            f'centers[{n}] must be an object with exactly "x", "y", "z" (world mm, LPS) or "i", "j", "k" '
            "(voxel: column, row, slice)"
        )
    values = []
    for name in names:
        v = finite_number(item[name])
        if v is None:
            raise UnusableInput(f"centers[{n}].{name} must be a finite number")
        values.append(v)
    return system, (values[0], values[1], values[2])


def locate(n: int, system: str, values: tuple[float, float, float], geo: SeriesGeometry) -> Center:
    """Both coordinates of centre n; 422 naming it when it lies outside the series."""
    if system == "world":
        world = np.asarray(values, dtype=np.float64)
        voxel = geo.world_to_voxel(world)
    else:
        voxel = np.asarray(values, dtype=np.float64)
        world = geo.voxel_to_world(voxel)
    bounds = (geo.columns, geo.rows, geo.slices)
    if not all(-0.5 <= v <= size - 0.5 for v, size in zip(voxel, bounds, strict=True)):
        given = ", ".join(f"{k}={v:g}" for k, v in zip(WORLD if system == "world" else VOXEL, values, strict=True))
        i, j, k = (f"{v:.1f}" for v in voxel)
        raise UnusableInput(
            f"centers[{n}] ({given}) is outside the series: it falls at voxel i={i}, j={j}, k={k}, and the series "
            f"spans i 0..{geo.columns - 1}, j 0..{geo.rows - 1}, k 0..{geo.slices - 1}"
        )
    return Center(world, voxel)
