"""Whole chest-like CT volumes with several phantom nodules at known positions, deterministic by seed.

Anatomy scales with the field of view: air around an elliptic body (subcutaneous fat over soft tissue), two
lungs whose elliptic sections narrow towards the head, textured parenchyma with vessels fanning out from each
hilum, and a vertebral body posterior between the lungs. Nodules come from `phantoms.sample_nodule` and sit,
spicules included, inside a lung with a margin. Arrays have axes (z, y, x) = (slice, row, column); the slice index
grows from feet to head, rows run anterior to posterior and columns right to left of the patient, so voxel
(i=column, j=row, k=slice) lies at LPS origin + (i, j, k) * (x, y, z spacing). `Nodule.center_mm` is in voxel
space: index * spacing along (z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from training.data.phantoms import Nodule, fibonacci_sphere, paint_nodule, sample_nodule, scanner

SLICE_SPACINGS_MM = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
HU_RANGE = (-1024, 3071)  # what a 12-bit CT stores; the DICOM writer relies on it for unsigned pixels
_SHAPE_TRIES, _CENTRE_TRIES = 30, 60
_SPHERE = fibonacci_sphere(256)

Lung = tuple[float, float, float, float]  # centre y, centre x, semi-axis y, semi-axis x (mm) at the feet end


@dataclass
class ChestPhantom:
    """A rendered chest: HU volume (z, y, x), geometry and the nodules' ground truth."""

    hu: np.ndarray  # int16 (slices, rows, cols)
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin_xyz_mm: tuple[float, float, float]  # LPS position of voxel (0, 0, 0)
    nodules: list[Nodule]  # center_mm in voxel space (z, y, x) mm
    lung_mask: np.ndarray  # bool (slices, rows, cols): the analytic lungs at voxel centres
    seed: int

    def voxel_to_world(self, ijk) -> np.ndarray:
        """LPS (x, y, z) mm of voxel index (i=column, j=row, k=slice); fractional indices allowed."""
        return np.asarray(self.origin_xyz_mm) + np.asarray(ijk, dtype=float) * np.asarray(self.spacing[::-1])

    def world_to_voxel(self, xyz) -> np.ndarray:
        """Fractional voxel index (i, j, k) of an LPS (x, y, z) position in mm."""
        return (np.asarray(xyz, dtype=float) - np.asarray(self.origin_xyz_mm)) / np.asarray(self.spacing[::-1])

    @property
    def nodule_world_xyz(self) -> list[tuple[float, float, float]]:
        """Each nodule's centre in LPS (x, y, z) mm."""
        origin = np.asarray(self.origin_xyz_mm)
        return [_triple(origin + np.asarray(n.center_mm[::-1])) for n in self.nodules]

    @property
    def nodule_voxel_ijk(self) -> list[tuple[int, int, int]]:
        """Each nodule's nearest voxel as (i=column, j=row, k=slice)."""
        scale = np.asarray(self.spacing[::-1])
        indices = [np.rint(np.asarray(n.center_mm[::-1]) / scale).astype(int) for n in self.nodules]
        return [(int(i), int(j), int(k)) for i, j, k in indices]


def render_chest(
    seed: int,
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing: tuple[float, float, float] | None = None,
    n_nodules: int = 3,
    diameter_range: tuple[float, float] = (4.0, 30.0),
    origin_xyz_mm: tuple[float, float, float] | None = None,
    margin_mm: float = 3.0,
) -> ChestPhantom:
    """Render a chest of `shape` (slices, rows, cols); spacing (z, y, x) mm and origin are drawn when None.

    A drawn spacing has a 320-400 mm field of view in-plane (0.62-0.78 mm at 512 columns) and a slice spacing
    from SLICE_SPACINGS_MM. Raises ValueError when a nodule cannot be placed (volume too small for the sizes).
    """
    rng = np.random.default_rng(seed)
    if spacing is None:
        inplane = round(float(rng.uniform(320.0, 400.0)) / shape[2], 4)
        spacing = (float(rng.choice(SLICE_SPACINGS_MM)), inplane, inplane)
    spacing = _triple(spacing)
    if origin_xyz_mm is None:
        origin_xyz_mm = (
            round(-(shape[2] - 1) * spacing[2] / 2.0, 4),
            round(-(shape[1] - 1) * spacing[1] / 2.0 + float(rng.uniform(-30.0, 30.0)), 4),
            round(float(rng.uniform(-400.0, -100.0)), 4),
        )
    extent = np.array([(n - 1) * s for n, s in zip(shape, spacing, strict=True)])
    section = _body_section(shape[1:], spacing[1:], rng)
    vol = np.broadcast_to(section, shape).astype(np.float32)
    lungs = _lungs(extent)
    mask = _lung_mask(shape, spacing, lungs)
    rows, cols = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    if rows.size:  # tiny volumes may have no lung voxel at all
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        offset = np.array([0.0, rows[0] * spacing[1], cols[0] * spacing[2]])
        parenchyma = _parenchyma(vol[box].shape, spacing, offset, lungs, extent, rng)
        vol[box][mask[box]] = parenchyma[mask[box]]
    placed: list[tuple[np.ndarray, float]] = []
    nodules = [_place_nodule(rng, lungs, extent, diameter_range, margin_mm, placed) for _ in range(n_nodules)]
    for nodule in nodules:
        paint_nodule(vol, spacing, nodule)
    hu = np.clip(np.rint(scanner(vol, spacing, rng)), *HU_RANGE).astype(np.int16)
    return ChestPhantom(hu, spacing, _triple(origin_xyz_mm), nodules, mask, seed)


def _triple(values) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _body_section(shape: tuple[int, ...], spacing: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """One axial section in HU: air, body ellipse with a fat layer over soft tissue, vertebral body."""
    height, width = (shape[0] - 1) * spacing[0], (shape[1] - 1) * spacing[1]
    y, x = np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1]
    by, bx = 0.36 * height, 0.46 * width
    fat = float(rng.uniform(0.02, 0.05)) * width

    def inside(cy: float, cx: float, ay: float, ax: float) -> np.ndarray:
        return ((y[:, None] - cy) / ay) ** 2 + ((x[None, :] - cx) / ax) ** 2 <= 1.0

    section = np.full(shape, -1000.0, dtype=np.float32)
    section[inside(height / 2, width / 2, by, bx)] = rng.uniform(-120.0, -80.0)
    section[inside(height / 2, width / 2, by - fat, bx - fat)] = rng.uniform(30.0, 50.0)
    radius = 0.055 * min(height, width)
    cy = 0.75 * height
    section[inside(cy, width / 2, radius, radius)] = rng.uniform(800.0, 1000.0)  # cortex
    inner = max(radius - max(2.0, 1.5 * spacing[1]), 0.5 * radius)
    section[inside(cy, width / 2, inner, inner)] = rng.uniform(300.0, 450.0)  # cancellous bone
    return section


def _lungs(extent: np.ndarray) -> list[Lung]:
    height, width = extent[1], extent[2]
    return [(0.48 * height, (0.5 + side * 0.21) * width, 0.24 * height, 0.14 * width) for side in (-1, 1)]


def _taper(z_mm: np.ndarray, extent_z: float) -> np.ndarray:
    """Lung section scale along z: 1 at the feet end, 0.75 at the head end (a convex lung)."""
    return 1.0 - 0.25 * (np.asarray(z_mm) / max(extent_z, 1e-6)) ** 2


def _lung_mask(shape: tuple[int, ...], spacing: tuple[float, ...], lungs: list[Lung]) -> np.ndarray:
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing, strict=True))
    limit = (_taper(z, (shape[0] - 1) * spacing[0]) ** 2)[:, None, None]
    mask = np.zeros(shape, dtype=bool)
    for cy, cx, ay, ax in lungs:
        mask |= (((y[:, None] - cy) / ay) ** 2 + ((x[None, :] - cx) / ax) ** 2)[None] <= limit
    return mask


def _in_lungs(points: np.ndarray, lungs: list[Lung], extent: np.ndarray) -> np.ndarray:
    """Whether points (N, 3) in voxel-space mm (z, y, x) lie inside a lung and the volume."""
    limit = _taper(points[:, 0], extent[0]) ** 2
    hit = np.zeros(len(points), dtype=bool)
    for cy, cx, ay, ax in lungs:
        hit |= ((points[:, 1] - cy) / ay) ** 2 + ((points[:, 2] - cx) / ax) ** 2 <= limit
    return hit & np.all((points >= 0.0) & (points <= extent), axis=1)


def _parenchyma(shape, spacing, offset, lungs, extent, rng: np.random.Generator) -> np.ndarray:
    """Lung tissue in HU on a box at `offset` mm: texture as `lung_background`, vessels fanning from each hilum."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    vol = np.float32(rng.uniform(-900.0, -800.0)) + ndimage.gaussian_filter(noise, [1.5 / s for s in spacing]) * 60
    for cy, cx, ay, ax in lungs:
        lateral = np.sign(cx - extent[2] / 2.0)
        hilum = np.array([0.55 * extent[0], cy, cx - lateral * 0.6 * ax])
        for _ in range(int(rng.integers(6, 13))):
            d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), lateral * rng.uniform(0.2, 1.0)])
            length = float(rng.uniform(0.5, 1.2)) * max(ay, ax)
            _paint_vessel(vol, spacing, offset, hilum, d / np.linalg.norm(d), length, rng)
    return vol


def _paint_vessel(vol, spacing, offset, start, d, length, rng: np.random.Generator) -> None:
    """A tapering tube from `start` along unit d, blended in place within its bounding box."""
    r0, hu = float(rng.uniform(1.0, 3.0)), float(rng.uniform(-20.0, 60.0))
    voxel = float(min(spacing))
    ends = np.stack([start, start + length * d]) - offset
    lo = np.maximum(np.floor((ends.min(axis=0) - r0 - voxel) / spacing), 0).astype(int)
    hi = np.minimum(np.ceil((ends.max(axis=0) + r0 + voxel) / spacing) + 1, vol.shape).astype(int)
    if np.any(hi <= lo):
        return
    rz, ry, rx = (
        (offset[a] + np.arange(lo[a], hi[a]) * spacing[a] - start[a]).astype(np.float32).reshape(shape)
        for a, shape in enumerate([(-1, 1, 1), (1, -1, 1), (1, 1, -1)])
    )
    t = np.clip(rz * d[0] + ry * d[1] + rx * d[2], 0.0, length)
    gap = np.sqrt((rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2)
    occ = np.clip(0.5 - (gap - r0 * (1.0 - 0.7 * t / length)) / voxel, 0.0, 1.0)
    region = vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    region += occ * (hu - region)


def _place_nodule(rng, lungs, extent, diameter_range, margin_mm, placed) -> Nodule:
    """Draw a nodule and a centre where it (spicules included) stays inside a lung and apart from the others."""
    for _ in range(_SHAPE_TRIES):
        nodule = sample_nodule(rng, (0.0, 0.0, 0.0), diameter_range)
        spike = float(nodule.spicules[:, 3].max(initial=0.0)) + 1.0 if nodule.spicules.size else 0.0
        reach = max(nodule.semi_axes_mm) * (1.0 + nodule.lobe_amp) + max(margin_mm, spike)
        for _ in range(_CENTRE_TRIES):
            cy, cx, ay, ax = lungs[int(rng.integers(len(lungs)))]
            centre = np.array([rng.uniform(0, extent[0]), cy + ay * rng.uniform(-1, 1), cx + ax * rng.uniform(-1, 1)])
            if not _in_lungs(centre + reach * _SPHERE, lungs, extent).all():
                continue
            if any(np.linalg.norm(centre - c) < reach + r for c, r in placed):
                continue
            placed.append((centre, reach))
            return replace(nodule, center_mm=_triple(centre))
    raise ValueError(f"cannot place a {diameter_range} mm nodule: the volume's lungs are too small")
