"""A nodule's size in the plane where it is largest, from the model's occupancy map.

Lung-RADS v2022 measures the long and short axis "in any plane to reflect the true size of the nodule". The model's
diameter head measures the central axial section, so a nodule elongated along z (a 6 x 6 x 16 mm one) reads as
small as its axial cut. Here the occupancy map's second moments give the ellipsoid with the same moments; the mean
diameters ((long + short axis) / 2) of its central axial, coronal and sagittal sections follow from it.

The size Lung-RADS reads is the model's axial diameter times (largest section / axial section): a ratio of two
estimates from the same map, so the errors they share (blur, the coarse grid) cancel, and a vessel the map takes in
within the axial plane widens the axial section as well as the others (one running along z widens only the vertical
ones, and inflates the size). A section counts as larger only by more than the grid alone makes a sphere's sections
differ (SAME_SIZE, GRID_NOISE), so a round nodule keeps its axial size. The diameter head reads part of a nodule's
size from its extent in every direction, so it under-measures one elongated within the axial plane, where the ratio
cannot help: a map more than ELONGATED times longer than wide earns the answer a note with the map's own size, to
check by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

PLANES = ("axial", "coronal", "sagittal")  # the sections normal to z, y and x
BACKGROUND = 0.1  # occupancy at or below this counts as background: the map is never exactly 0 away from the nodule
MIN_VOXELS = 1.0  # less occupied mass than one voxel: too little to tell a shape; the axial size stands
ELONGATED = 1.8  # a map this many times longer than wide is noted (on held-out phantoms 97% stay under it)
# A section counts as larger than the axial one only by more than the grid alone can make a sphere's sections differ:
# 5%, or GRID_NOISE x (voxel / axial diameter)^2 for small ones (a 4 mm sphere's reach 35% on the 2.5 mm grid).
SAME_SIZE = 0.05
GRID_NOISE = 1.3
# No section is read as more than twice the axial one: true shapes in the elongated evaluation set reach 1.9 and
# held-out LIDC nodules 1.44; beyond it, a vessel along z is likelier than a nodule.
MAX_FACTOR = 2.0


# PanCan (Brock) measured a nodule's longest diameter. In the largest axial section of LIDC's 777 consensus masks,
# the longest (caliper) diameter is 1.1 times the mean diameter, its mean with the width across it (median 1.106;
# 10th-90th percentile 1.03-1.22; training/data/lidc.py longest_over_mean_diameter, checked by a test when the data
# is there). The map's own ratio is used where it is larger.
TYPICAL_LONG_OVER_MEAN = 1.1


@dataclass(frozen=True)
class Sections:
    """Mean diameters (mm) of the central sections of the ellipsoid with the map's moments, and its elongation
    (longest / shortest principal axis)."""

    mean_diameters_mm: dict[str, float]
    elongation: float
    voxel_mm: float
    long_over_mean: dict[str, float] = field(default_factory=dict)  # per section: long axis / mean diameter

    def long_ratio(self, plane: str) -> float:
        """A section's long axis over its mean diameter (1 for a circle, towards 2 for a needle; 1 when unknown)."""
        return self.long_over_mean.get(plane, 1.0)

    @property
    def widest(self) -> str:
        """The section with the largest mean diameter, however little larger than the others."""
        return max(PLANES, key=lambda p: self.mean_diameters_mm[p])

    @property
    def largest_mm(self) -> float:
        """The map's own mean diameter in its widest section."""
        return self.mean_diameters_mm[self.widest]

    def ratio(self, plane: str) -> float:
        """A section's mean diameter over the axial one's."""
        return self.mean_diameters_mm[plane] / self.mean_diameters_mm["axial"]

    @property
    def largest(self) -> str:
        """The section the size is read in: the widest, unless the grid alone could make it as much larger than
        the axial one."""
        margin = max(SAME_SIZE, GRID_NOISE * (self.voxel_mm / self.mean_diameters_mm["axial"]) ** 2)
        return self.widest if self.ratio(self.widest) > 1.0 + margin else "axial"

    def capped_ratio(self, plane: str) -> float:
        """A section's ratio as a size may use it: at most MAX_FACTOR."""
        return min(self.ratio(plane), MAX_FACTOR)

    @property
    def factor(self) -> float:
        """What the axial size is multiplied by: the capped ratio of the section it is read in (1 for the axial)."""
        return self.capped_ratio(self.largest)


def sections(occupancy: np.ndarray, voxel_mm: float) -> Sections | None:
    """The sections of one channel of the occupancy map (z, y, x); None when it holds too little to measure or a
    value that is not a number."""
    if np.isnan(occupancy).any():
        return None
    kept = _nodule_at_centre(np.clip((occupancy - BACKGROUND) * (1.0 / (1.0 - BACKGROUND)), 0.0, 1.0, dtype=np.float64))
    if kept is None:  # nothing above the background
        return None
    weights, box = kept
    # Mass, first and second moments at once: the 4 x 4 matrix sum_v w_v [1, z, y, x]^T [1, z, y, x] over the box.
    grid = _positions_mm(occupancy.shape, float(voxel_mm))[box].reshape(-1, 4)
    moments = (grid.T * weights.ravel()) @ grid
    mass = float(moments[0, 0])
    if mass < MIN_VOXELS:  # too little to measure (no NaN gets here, and the clip makes an infinity a full voxel)
        return None
    mean = moments[0, 1:] / mass
    # Each voxel's fraction is spread over its cube, which adds voxel^2 / 12 to the variance along each axis.
    covariance = moments[1:, 1:] / mass - np.outer(mean, mean) + np.eye(3) * voxel_mm**2 / 12.0
    # A solid ellipsoid with semi-axes a, b, c has variances a^2 / 5, b^2 / 5, c^2 / 5 along its axes:
    # it is {x : x^T A x <= 1} with A = (5 covariance)^-1, and its central section normal to axis k is the
    # ellipse given by A without row and column k, whose semi-axes are 1 / sqrt(eigenvalues).
    shape = np.linalg.inv(5.0 * covariance)
    diameters, long_over_mean = {}, {}
    for k, plane in enumerate(PLANES):
        i, j = (a for a in range(3) if a != k)
        long, short = _semi_axes(shape[i, i], shape[i, j], shape[j, j])
        diameters[plane] = long + short
        long_over_mean[plane] = 2.0 * long / (long + short)
    variances = np.linalg.eigvalsh(covariance)
    return Sections(diameters, float(np.sqrt(variances[-1] / variances[0])), float(voxel_mm), long_over_mean)


@lru_cache(maxsize=8)
def _positions_mm(shape: tuple[int, ...], voxel_mm: float) -> np.ndarray:
    """[1, z, y, x] for every voxel of a map of this shape (shape + (4,)), its centre in mm."""
    axes = np.meshgrid(*(np.arange(n, dtype=np.float64) * voxel_mm for n in shape), indexing="ij")
    grid = np.stack([np.ones(shape), *axes], axis=-1)
    grid.flags.writeable = False  # shared by every later call
    return grid


_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)  # voxels touching by a face, an edge or a corner are connected


def _nodule_at_centre(weights: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]] | None:
    """The connected part of the map nearest its centre (where the request put the nodule), cut to the box around
    what is occupied, and that box (None: nothing is occupied). A second nodule or a loose vessel in the field of
    view is not part of this one's shape."""
    occupied = weights > 0
    box = _bounding_box(occupied)
    if box is None:
        return None
    # Labelling costs per voxel: only the box (a fraction of the map for most nodules).
    labels, count = ndimage.label(occupied[box], structure=_NEIGHBOURS)
    if count <= 1:
        return weights[box], box
    corner = np.array([s.start for s in box])
    voxels = np.argwhere(labels)
    nearest = voxels[np.argmin(((voxels + corner - (np.array(weights.shape) - 1) / 2.0) ** 2).sum(axis=1))]
    return np.where(labels == labels[tuple(nearest)], weights[box], 0.0), box


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true voxel of a 3-D mask (None: none is true)."""
    indices = np.nonzero(mask)
    if indices[0].size == 0:
        return None
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)


def _semi_axes(a: float, b: float, c: float) -> tuple[float, float]:
    """(long, short) semi-axes of the ellipse {(u, v) : a u^2 + 2 b u v + c v^2 <= 1}: 1 / sqrt of each eigenvalue."""
    half_trace, gap = (a + c) / 2.0, math.hypot((a - c) / 2.0, b)
    return 1.0 / math.sqrt(half_trace - gap), 1.0 / math.sqrt(half_trace + gap)


def in_largest_section(axial_diameter_mm: float, shape: Sections | None) -> float:
    """The model's axial mean diameter scaled to the section where the nodule is largest (unchanged without a shape)."""
    return axial_diameter_mm * (shape.factor if shape is not None else 1.0)


def part_in_largest_section(
    axial_diameter_mm: float, part: Sections | None, whole: Sections | None
) -> tuple[float, str]:
    """(size, section) of a part of the nodule (its solid component), scaled like in_largest_section but never by
    more than the whole nodule is in that section, since the part lies inside it. Without the whole's shape, the
    axial size."""
    if part is None or whole is None:
        return axial_diameter_mm, "axial"
    factor = min(part.factor, max(whole.ratio(part.largest), 1.0))
    return axial_diameter_mm * factor, part.largest if factor > 1.0 else "axial"


def longest_diameter(mean_diameter_mm: float, shape: Sections | None, plane: str) -> float:
    """An estimate of the longest diameter in the section `plane` whose mean diameter is given: the map's own long
    axis over mean diameter there, but at least what is typical of real nodules (the map's coarse grid rounds
    shapes off)."""
    ratio = shape.long_ratio(plane) if shape is not None else 1.0
    return mean_diameter_mm * max(TYPICAL_LONG_OVER_MEAN, ratio)
