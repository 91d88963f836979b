"""The single copy of preprocessing: resample a CT region to the model's grid, then window.

Training renders its ground truth on the same grid (patch_axes_mm), so serving and training cannot drift.
All arrays use axes (z, y, x); spacings are millimetres per voxel along those axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from service.runtime.manifest import Preprocessing

Triple = tuple[float, float, float]


def patch_axes_mm(center_mm: Sequence[float], spec: Preprocessing) -> list[np.ndarray]:
    """Millimetre positions of the output cube's voxel centres along z, y and x."""
    offsets = (np.arange(spec.patch_size) - (spec.patch_size - 1) / 2.0) * spec.spacing_mm
    return [float(c) + offsets for c in center_mm]


def resample_patch(
    volume: np.ndarray,
    spacing: Sequence[float],
    center_vox: Sequence[float],
    spec: Preprocessing,
) -> tuple[np.ndarray, float]:
    """HU cube of spec.patch_size^3 at spec.spacing_mm centred on center_vox (fractional z, y, x indices).

    Returns the cube and the fraction of it that lies inside the supplied volume; outside, spec.fill_hu.
    Downsampled axes are low-pass filtered first so that noise does not alias.
    """
    size, step = spec.patch_size, spec.spacing_mm
    half_extent = (size - 1) / 2.0 * step
    sigmas = [0.5 * np.sqrt(max((step / float(s)) ** 2 - 1.0, 0.0)) for s in spacing]
    lo, hi, coords, inside = [], [], [], 1.0
    for axis in range(3):
        s = float(spacing[axis])
        margin = int(np.ceil(3.0 * sigmas[axis])) + 2  # the low-pass filter must not see the crop's edge
        pos = center_vox[axis] + (np.arange(size) - (size - 1) / 2.0) * step / s
        first = int(np.floor(center_vox[axis] - half_extent / s)) - margin
        last = int(np.ceil(center_vox[axis] + half_extent / s)) + margin + 1
        first, last = max(first, 0), min(last, volume.shape[axis])
        lo.append(first)
        hi.append(last)
        coords.append(pos - first)
        inside *= float(np.mean((pos >= -0.5) & (pos <= volume.shape[axis] - 0.5)))
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return np.full((size,) * 3, spec.fill_hu, dtype=np.float32), 0.0
    region = np.asarray(volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    if any(sig > 0.1 for sig in sigmas):
        region = ndimage.gaussian_filter(region, sigmas, mode="nearest", truncate=3.0)
    cube = _separable_linear(region, coords, spec.fill_hu)
    return cube, inside


def _separable_linear(region: np.ndarray, coords: list[np.ndarray], fill: float) -> np.ndarray:
    """Trilinear resampling on an axis-aligned grid as three 1-D interpolations (cheaper than 3-D)."""
    out = region
    for axis, pos in enumerate(coords):
        n = out.shape[axis]
        base = np.floor(pos).astype(np.int64)
        frac = (pos - base).astype(np.float32)
        valid = (pos >= -0.5) & (pos <= n - 0.5)
        i0 = np.clip(base, 0, n - 1)
        i1 = np.clip(base + 1, 0, n - 1)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i1, axis=axis)
        shape = [1, 1, 1]
        shape[axis] = len(pos)
        f = frac.reshape(shape)
        out = a + (b - a) * f
        out = np.where(valid.reshape(shape), out, np.float32(fill))
    return np.ascontiguousarray(out, dtype=np.float32)


def window(hu: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Clip HU to the window and scale it to [0, 1] as float32."""
    low, high = spec.hu_window
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(low)) * np.float32(1.0 / (high - low))
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def preprocess(
    volume: np.ndarray,
    spacing: Sequence[float],
    center_vox: Sequence[float],
    spec: Preprocessing,
) -> tuple[np.ndarray, float]:
    """Model input (D, D, D) float32 and the fraction of the field of view covered by data."""
    cube, inside = resample_patch(volume, spacing, center_vox, spec)
    return window(cube, spec), inside


def volume_center_vox(shape: Sequence[int]) -> Triple:
    """The geometric centre of an array, in fractional voxel indices."""
    return ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0, (shape[2] - 1) / 2.0)
