"""Slice order and the series' voxel grid: positions along the slice normal, spacing, world <-> voxel.

Voxel indices are (i, j, k) = (column, row, slice), slices sorted by their position along the normal
n = row direction x column direction (ImageOrientationPatient), never by file name or InstanceNumber. World
coordinates are patient LPS millimetres (DICOM, LUNA16). This is the grid SimpleITK's ImageSeriesReader builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.errors import UnusableInput
from service.imaging.preprocess import fractional_indices

ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ less are the same orientation
DUPLICATE_MM = 0.01  # slices closer than this along the normal share a position
UNIFORM_TOLERANCE = 0.01  # relative step deviation still counted as uniform spacing
OBLIQUE_COSINE = 0.97  # a normal further than about 14 degrees from every axis is called oblique
MAX_SHEAR_PIXELS = 0.5  # sideways drift of the slice origins below this over the whole series counts as none,
# and a drift that departs from a straight line by more is refused (slices of different stacks)
MAX_TILT_DEGREES = 30.0  # CT gantries tilt at most about 30 degrees


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
    drift: np.ndarray = field(default_factory=lambda: np.zeros(3))  # sideways mm of a slice origin per mm along n

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

    @property
    def tilt_degrees(self) -> float:
        """The gantry tilt: the angle between the slice normal and the line the slice origins follow."""
        return float(np.degrees(np.arctan(np.linalg.norm(self.drift))))

    @property
    def drift_pixels(self) -> tuple[float, float]:
        """The drift of a slice's origin per mm along the normal, in (rows, columns)."""
        columns, rows, _ = np.linalg.solve(self._axes(), self.drift)
        return float(rows), float(columns)

    def _axes(self) -> np.ndarray:
        """Columns: the world step of one column (i), of one row (j), and the unit normal. Solving with it inverts
        DICOM's P = origin + i * column spacing * row + j * row spacing * column exactly, also for the slightly
        non-orthogonal direction cosines `directions` accepts (dot products would not)."""
        return np.column_stack((self.column_spacing * self.row_dir, self.row_spacing * self.col_dir, self.normal))

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Fractional (i, j, k) of an LPS point; k interpolates between the true slice positions, (i, j) are in the
        frame of a slice at the point's own position along the normal."""
        d = np.asarray(xyz, dtype=np.float64) - self.origin
        along = float(d @ self.normal)  # the normal is orthogonal to both directions: exact
        i, j, _ = np.linalg.solve(self._axes(), d - along * self.drift)
        k = float(fractional_indices(np.array([along]), self.slice_mm)[0])
        return np.array([float(i), float(j), k])

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """LPS point of fractional (i, j, k)."""
        i, j, k = (float(v) for v in ijk)
        return (
            self.origin
            + i * self.column_spacing * self.row_dir
            + j * self.row_spacing * self.col_dir
            + self.slice_position(k) * (self.normal + self.drift)
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


def fit_drift(positions: np.ndarray, normal: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The sideways drift of the slice origins per mm along the normal (a gantry tilt; zero when it stays under
    half a pixel over the series). Refused when the origins do not follow one straight line (slices of different
    stacks) or the tilt is steeper than a gantry tilts."""
    d = positions - positions[0]
    along = d @ normal
    sideways = d - np.outer(along, normal)
    if float(np.max(np.linalg.norm(sideways, axis=1))) <= MAX_SHEAR_PIXELS * min(spacing):
        return np.zeros(3)
    drift = (along @ sideways) / float(along @ along)
    off_line = np.linalg.norm(sideways - np.outer(along, drift), axis=1)
    worst = int(np.argmax(off_line))
    if off_line[worst] > MAX_SHEAR_PIXELS * min(spacing):
        raise UnusableInput(
            f"the slice origins do not follow one line: slice {worst + 1} (in order along the normal) lies "
            f"{off_line[worst]:.2f} mm off the line the others follow; the series mixes slices of different "
            "stacks. Send one stack"
        )
    angle = float(np.degrees(np.arctan(np.linalg.norm(drift))))
    if angle > MAX_TILT_DEGREES:
        raise UnusableInput(
            f"the slice origins drift {np.linalg.norm(drift):.2f} mm sideways per mm along the slice normal, a "
            f"gantry tilt of {angle:.1f} degrees; at most {MAX_TILT_DEGREES:g} degrees are taken. Check "
            "ImagePositionPatient and ImageOrientationPatient"
        )
    return drift


def build(
    origin: np.ndarray,
    orientation: tuple[float, ...],
    pixel_spacing: tuple[float, float],
    slice_mm: np.ndarray,
    rows: int,
    columns: int,
    drift: np.ndarray | None = None,
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
        drift=np.zeros(3) if drift is None else np.asarray(drift, dtype=np.float64),
    )
