"""Slice order and the series' voxel grid: positions along the slice normal, spacing, world <-> voxel.

Voxel indices are (i, j, k) = (column, row, slice), slices sorted by their position along the normal
n = row direction x column direction (ImageOrientationPatient), never by file name or InstanceNumber. World
coordinates are patient LPS millimetres (DICOM, LUNA16). This is the grid SimpleITK's ImageSeriesReader builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import UnusableInput
from service.imaging.preprocess import fractional_indices

ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ less are the same orientation
DUPLICATE_MM = 0.01  # slices closer than this along the normal share a position
UNIFORM_TOLERANCE = 0.01  # relative step deviation still counted as uniform spacing
OBLIQUE_COSINE = 0.97  # a normal further than about 14 degrees from every axis is called oblique
MAX_SHEAR_PIXELS = 0.5  # in-plane drift of the slice origins (gantry tilt) tolerated over the whole series


@dataclass(frozen=True)
class SeriesGeometry:
    """The grid of a sorted series; slice_mm are the slices' positions along the normal, ascending, from slice 0."""

    origin: np.ndarray  # LPS position of voxel (0, 0, 0)
    row_dir: np.ndarray  # unit vector of increasing column index i
    col_dir: np.ndarray  # unit vector of increasing row index j
    normal: np.ndarray  # unit vector of increasing slice index k
    row_spacing: float  # mm between rows (along col_dir)
    column_spacing: float  # mm between columns (along row_dir)
    slice_mm: np.ndarray
    rows: int
    columns: int

    @property
    def slices(self) -> int:
        return len(self.slice_mm)

    @property
    def steps(self) -> np.ndarray:
        return np.diff(self.slice_mm)

    @property
    def slice_step(self) -> float:
        """The median distance between neighbouring slices, mm."""
        return float(np.median(self.steps))

    @property
    def uniform(self) -> bool:
        steps = self.steps
        return bool(np.all(np.abs(steps - self.slice_step) <= UNIFORM_TOLERANCE * self.slice_step + 1e-4))

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.slice_step, self.row_spacing, self.column_spacing

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Fractional (i, j, k) of an LPS point; k interpolates between the true slice positions."""
        d = np.asarray(xyz, dtype=np.float64) - self.origin
        i = float(d @ self.row_dir) / self.column_spacing
        j = float(d @ self.col_dir) / self.row_spacing
        k = float(fractional_indices(np.array([d @ self.normal]), self.slice_mm)[0])
        return np.array([i, j, k])

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """LPS point of fractional (i, j, k)."""
        i, j, k = (float(v) for v in ijk)
        return (
            self.origin
            + i * self.column_spacing * self.row_dir
            + j * self.row_spacing * self.col_dir
            + self.slice_position(k) * self.normal
        )

    def slice_position(self, k: float) -> float:
        """Position along the normal (mm from slice 0) of fractional slice index k, extrapolated past the ends."""
        n = self.slices
        if k <= 0:
            return float(k * (self.slice_mm[1] - self.slice_mm[0]))
        if k >= n - 1:
            return float(self.slice_mm[-1] + (k - n + 1) * (self.slice_mm[-1] - self.slice_mm[-2]))
        return float(np.interp(k, np.arange(n), self.slice_mm))

    def orientation_label(self) -> str:
        return label(self.normal)


def label(normal: np.ndarray) -> str:
    """axial, coronal or sagittal when the normal is within about 14 degrees of that axis, else oblique."""
    axis = int(np.argmax(np.abs(normal)))
    return ("sagittal", "coronal", "axial")[axis] if abs(normal[axis]) >= OBLIQUE_COSINE else "oblique"


def directions(orientation: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and normal from ImageOrientationPatient; 422 unless orthonormal."""
    row, col = np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:], dtype=np.float64)
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
        raise UnusableInput("ImageOrientationPatient is not two orthogonal unit vectors")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def sort_positions(positions: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, distances along the normal in that order), a stable sort by the projection of each slice origin."""
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    return order, along[order]


def check_shear(positions: np.ndarray, normal: np.ndarray, spacing: tuple[float, float]) -> None:
    """Refuse slices whose origins drift sideways (gantry tilt, or slices of different stacks): the grid would
    be sheared, and a nodule's position wrong by more than half a pixel somewhere."""
    d = positions - positions[0]
    along = d @ normal
    sideways = d - np.outer(along, normal)
    drift = np.linalg.norm(sideways, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > MAX_SHEAR_PIXELS * min(spacing):
        angle = float(np.degrees(np.arctan2(drift[worst], abs(along[worst])))) if along[worst] else 90.0
        raise UnusableInput(
            f"the slices are sheared: their origins drift {drift[worst]:.2f} mm sideways over "
            f"{abs(along[worst]):.1f} mm along the slice normal (a gantry tilt of about {angle:.1f} degrees, or "
            "slices of different stacks); resample the series to an untilted grid before sending it"
        )


def build(
    origin: np.ndarray,
    orientation: tuple[float, ...],
    pixel_spacing: tuple[float, float],
    slice_mm: np.ndarray,
    rows: int,
    columns: int,
) -> SeriesGeometry:
    row, col, normal = directions(orientation)
    return SeriesGeometry(
        origin=np.asarray(origin, dtype=np.float64),
        row_dir=row,
        col_dir=col,
        normal=normal,
        row_spacing=float(pixel_spacing[0]),
        column_spacing=float(pixel_spacing[1]),
        slice_mm=np.asarray(slice_mm, dtype=np.float64) - float(slice_mm[0]),
        rows=rows,
        columns=columns,
    )
