"""The single copy of preprocessing: resample a CT region to the model's grid, then window.

Training renders its ground truth on the same grid (patch_axes_mm), so serving and training cannot drift.
All arrays use axes (z, y, x); spacings are millimetres per voxel along those axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

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
    positions: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, float]:
    """HU cube of spec.patch_size^3 at spec.spacing_mm centred on center_vox (fractional z, y, x indices).

    Returns the cube and the fraction of it that lies inside the supplied volume; outside, spec.fill_hu.
    Downsampled axes are low-pass filtered first so that noise does not alias. `positions` may give, per axis,
    explicit fractional input indices of the output samples (None: the even grid), for an axis whose input samples
    are not evenly spaced (slices at their true positions, see fractional_indices); `spacing` along it is then its
    typical step, which sets the low-pass filter.
    """
    pos = grid_positions(spacing, center_vox, spec)
    if positions is not None:
        pos = [given if given is not None else even for given, even in zip(positions, pos, strict=True)]
    return resample_at(volume, pos, lowpass_sigmas(spacing, spec), spec)


def grid_positions(spacing: Sequence[float], center_vox: Sequence[float], spec: Preprocessing) -> list[np.ndarray]:
    """Fractional input indices, per axis, of the output cube's voxel centres on an evenly spaced input."""
    offsets = (np.arange(spec.patch_size) - (spec.patch_size - 1) / 2.0) * spec.spacing_mm
    return [float(c) + offsets / float(s) for c, s in zip(center_vox, spacing, strict=True)]


def lowpass_sigmas(spacing: Sequence[float], spec: Preprocessing) -> list[float]:
    """Gaussian sigma (input voxels) per axis that keeps downsampling to spec.spacing_mm from aliasing."""
    return [0.5 * float(np.sqrt(max((spec.spacing_mm / float(s)) ** 2 - 1.0, 0.0))) for s in spacing]


def axis_support(pos: np.ndarray, sigma: float, n_in: int) -> tuple[int, int]:
    """The input indices [first, last) that resampling at ascending positions pos reads along an axis of n_in
    samples, the low-pass filter's reach included (first >= last: none)."""
    margin = int(np.ceil(3.0 * sigma)) + 2  # the low-pass filter must not see the crop's edge
    first = int(np.floor(pos[0])) - margin
    last = int(np.ceil(pos[-1])) + margin + 1
    return max(first, 0), min(last, n_in)


def fractional_indices(sample_mm: np.ndarray, axis_mm: np.ndarray) -> np.ndarray:
    """Fractional indices of the positions sample_mm along an axis whose samples lie at the ascending axis_mm (slices
    at their true positions): linear between samples, extrapolated with the first and last steps."""
    axis_mm = np.asarray(axis_mm, dtype=np.float64)
    sample_mm = np.asarray(sample_mm, dtype=np.float64)
    index = np.arange(len(axis_mm), dtype=np.float64)
    if len(axis_mm) == 1:
        return np.where(sample_mm == axis_mm[0], 0.0, np.where(sample_mm < axis_mm[0], -np.inf, np.inf))
    out = np.interp(sample_mm, axis_mm, index)
    below, above = sample_mm < axis_mm[0], sample_mm > axis_mm[-1]
    out[below] = (sample_mm[below] - axis_mm[0]) / (axis_mm[1] - axis_mm[0])
    out[above] = len(axis_mm) - 1 + (sample_mm[above] - axis_mm[-1]) / (axis_mm[-1] - axis_mm[-2])
    return out


def resample_at(
    volume: np.ndarray,
    positions: Sequence[np.ndarray],
    sigmas: Sequence[float],
    spec: Preprocessing,
    shifts: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """The cube sampled at the given per-axis fractional input indices (ascending), low-pass filtered with sigmas
    (input voxels), and the fraction of it inside the volume; outside, spec.fill_hu.

    `shifts` (n_z, 2), when given, moves the in-plane positions of each input slice by its own (rows, columns):
    slice m is read at positions[1] + shifts[m, 0] and positions[2] + shifts[m, 1] (a sheared, gantry-tilted
    stack of slices)."""
    if shifts is not None and np.any(shifts):
        return _resample_sheared(volume, positions, sigmas, spec, np.asarray(shifts, dtype=np.float64))
    size = spec.patch_size
    lo, hi, coords, inside = [], [], [], 1.0
    for axis, (pos, sigma) in enumerate(zip(positions, sigmas, strict=True)):
        n_in = volume.shape[axis]
        first, last = axis_support(pos, sigma, n_in)
        lo.append(first)
        hi.append(last)
        coords.append(np.asarray(pos, dtype=np.float64) - first)
        inside *= float(np.mean((pos >= -0.5) & (pos <= n_in - 0.5)))
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return np.full((size,) * 3, spec.fill_hu, dtype=np.float32), 0.0
    region = np.asarray(volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    weights = [
        _cached_axis_weights(n, pos.tobytes(), float(sig))
        for n, pos, sig in zip(region.shape, coords, sigmas, strict=True)
    ]
    cube = _apply_separable(region, [w for w, _ in weights])
    if not all(inside_axis.all() for _, inside_axis in weights):
        valid = weights[0][1][:, None, None] & weights[1][1][None, :, None] & weights[2][1][None, None, :]
        cube = np.where(valid, cube, np.float32(spec.fill_hu))
    return np.ascontiguousarray(cube, dtype=np.float32), inside


def sheared_support(
    positions: Sequence[np.ndarray], sigmas: Sequence[float], shape: Sequence[int], shifts: np.ndarray | None
) -> list[tuple[int, int]]:
    """axis_support of each axis when slice m is read at its own in-plane shifts[m] (None: no shifts)."""
    z = axis_support(positions[0], sigmas[0], shape[0])
    out = [z]
    for axis in (1, 2):
        pos = np.asarray(positions[axis], dtype=np.float64)
        if shifts is not None and z[1] > z[0]:
            moved = shifts[z[0] : z[1], axis - 1]
            pos = np.array([pos[0] + moved.min(), pos[-1] + moved.max()])
        out.append(axis_support(pos, sigmas[axis], shape[axis]))
    return out


def _resample_sheared(
    volume: np.ndarray,
    positions: Sequence[np.ndarray],
    sigmas: Sequence[float],
    spec: Preprocessing,
    shifts: np.ndarray,
) -> tuple[np.ndarray, float]:
    """resample_at with per-slice in-plane shifts: each input slice is resampled in-plane at its own positions,
    then the slices are combined along z."""
    size = spec.patch_size
    pos_z, pos_y, pos_x = (np.asarray(p, dtype=np.float64) for p in positions)
    support = sheared_support(positions, sigmas, volume.shape, shifts)
    if any(b <= a for a, b in support):
        return np.full((size,) * 3, spec.fill_hu, dtype=np.float32), 0.0
    (z0, z1), (y0, y1), (x0, x1) = support
    region = np.asarray(volume[z0:z1, y0:y1, x0:x1], dtype=np.float32)
    wz, _ = _cached_axis_weights(z1 - z0, (pos_z - z0).tobytes(), float(sigmas[0]))
    wy = np.zeros((z1 - z0, size, y1 - y0), dtype=np.float32)
    wx = np.zeros((z1 - z0, size, x1 - x0), dtype=np.float32)
    for m in np.flatnonzero(np.any(wz != 0, axis=0)):  # only the slices the z weights read
        dy, dx = shifts[z0 + m]
        wy[m] = axis_weights(y1 - y0, pos_y + dy - y0, float(sigmas[1]))[0]  # each slice its own: not cached
        wx[m] = axis_weights(x1 - x0, pos_x + dx - x0, float(sigmas[2]))[0]
    planes = np.matmul(wy, np.matmul(region, wx.transpose(0, 2, 1)))  # (slices, b, c)
    cube = (wz @ planes.reshape(z1 - z0, -1)).reshape(size, size, size)
    # Inside the volume: each output plane at the shifts of its own (fractional) slice position.
    n_z, n_y, n_x = volume.shape
    index = np.arange(n_z)
    plane_dy = np.interp(pos_z, index, shifts[:, 0])
    plane_dx = np.interp(pos_z, index, shifts[:, 1])
    in_z = (pos_z >= -0.5) & (pos_z <= n_z - 0.5)
    y = pos_y[None, :] + plane_dy[:, None]
    x = pos_x[None, :] + plane_dx[:, None]
    in_y, in_x = (y >= -0.5) & (y <= n_y - 0.5), (x >= -0.5) & (x <= n_x - 0.5)
    valid = in_z[:, None, None] & in_y[:, :, None] & in_x[:, None, :]
    cube = np.where(valid, cube, np.float32(spec.fill_hu))
    return np.ascontiguousarray(cube, dtype=np.float32), float(valid.mean())


@lru_cache(maxsize=512)
def _cached_axis_weights(n_in: int, pos_bytes: bytes, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """axis_weights for repeated geometries (the same scanner protocol and patch size): built once."""
    weights, valid = axis_weights(n_in, np.frombuffer(pos_bytes, dtype=np.float64), sigma)
    weights.flags.writeable = False  # shared by every later request with the same geometry
    valid.flags.writeable = False
    return weights, valid


def axis_weights(n_in: int, pos: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(n_out, n_in) matrix that low-pass filters (Gaussian, edges repeated) then interpolates linearly at pos,
    and the mask of positions inside [-0.5, n_in - 0.5]. One matrix product per axis does the whole resampling."""
    n_out = len(pos)
    base = np.floor(pos).astype(np.int64)
    frac = pos - base
    rows = np.arange(n_out)
    interp = np.zeros((n_out, n_in))
    np.add.at(interp, (rows, np.clip(base, 0, n_in - 1)), 1.0 - frac)
    np.add.at(interp, (rows, np.clip(base + 1, 0, n_in - 1)), frac)
    if sigma > 0.1:
        radius = int(3.0 * sigma + 0.5)
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
        kernel /= kernel.sum()
        blur = np.zeros((n_in, n_in))
        src = np.arange(n_in)
        for offset, weight in zip(offsets, kernel, strict=True):
            np.add.at(blur, (src, np.clip(src + offset, 0, n_in - 1)), weight)
        interp = interp @ blur
    return interp.astype(np.float32), (pos >= -0.5) & (pos <= n_in - 0.5)


def _apply_separable(region: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """out[a, b, c] = sum Wz[a, i] Wy[b, j] Wx[c, k] region[i, j, k], as three BLAS products on contiguous
    arrays (no transposed copies)."""
    wz, wy, wx = weights
    n_z, n_y, n_x = region.shape
    out = (region.reshape(n_z * n_y, n_x) @ wx.T).reshape(n_z, n_y, -1)  # (Z, Y, c)
    out = np.matmul(wy, out)  # (Z, b, c): one product per input slice
    return (wz @ out.reshape(n_z, -1)).reshape(len(wz), len(wy), -1)  # (a, b, c)


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
