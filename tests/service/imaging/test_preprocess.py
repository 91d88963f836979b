import numpy as np
import pytest

from service.imaging.preprocess import grid_positions, patch_axes_mm, preprocess, resample_at, resample_patch, window
from service.runtime.manifest import Preprocessing

SPEC = Preprocessing(patch_size=8, spacing_mm=2.0, hu_window=(-1000.0, 400.0), fill_hu=-1000.0)


def test_resample_reproduces_a_linear_ramp_at_the_output_grid_positions():
    spacing = (1.0, 0.5, 0.5)
    z, y, x = np.meshgrid(np.arange(40) * 1.0, np.arange(80) * 0.5, np.arange(80) * 0.5, indexing="ij")
    volume = (3 * z + 2 * y - x).astype(np.float32)  # linear in mm: blur and linear interpolation keep it
    center_vox = (19.5, 39.5, 39.5)
    cube, inside = resample_patch(volume, spacing, center_vox, SPEC)
    axes = patch_axes_mm(np.array(center_vox) * spacing, SPEC)
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    assert inside == 1.0
    np.testing.assert_allclose(cube, 3 * zz + 2 * yy - xx, atol=1e-3)


def test_per_slice_shifts_read_each_slice_at_its_own_in_plane_offset():
    """A sheared stack: slice m read `shifts[m]` rows and columns further. On a volume linear in the indices the
    cube is the unshifted one plus the shift interpolated at each output plane's slice position."""
    spacing = (2.0, 2.0, 2.0)  # the model's spacing: no low-pass, so the ramp comes back exactly
    zi, yi, xi = np.meshgrid(np.arange(20.0), np.arange(30.0), np.arange(30.0), indexing="ij")
    volume = (5 * zi + 2 * yi - xi).astype(np.float32)
    shifts = np.stack([0.3 * np.arange(20) - 2.0, -0.2 * np.arange(20) + 1.0], axis=1)
    pos = grid_positions(spacing, (9.7, 14.5, 14.5), SPEC)
    sigmas = [0.0, 0.0, 0.0]
    plain, _ = resample_at(volume, pos, sigmas, SPEC)
    sheared, inside = resample_at(volume, pos, sigmas, SPEC, shifts)
    dy, dx = (np.interp(pos[0], np.arange(20), shifts[:, n]) for n in (0, 1))
    assert inside == 1.0
    np.testing.assert_allclose(sheared, plain + (2 * dy - dx)[:, None, None], atol=1e-3)
    zero, _ = resample_at(volume, pos, sigmas, SPEC, np.zeros((20, 2)))
    np.testing.assert_array_equal(zero, plain)


def test_patch_already_on_the_model_grid_is_only_windowed():
    rng = np.random.default_rng(1)
    volume = rng.uniform(-1000, 400, (8, 8, 8)).astype(np.float32)
    out, inside = preprocess(volume, (2.0, 2.0, 2.0), (3.5, 3.5, 3.5), SPEC)
    np.testing.assert_allclose(out, window(volume, SPEC), atol=1e-6)
    assert inside == 1.0


def test_outside_the_volume_is_filled_and_reported():
    volume = np.zeros((4, 8, 8), dtype=np.float32)  # 8 mm in z at 2 mm: half the 16 mm field of view
    cube, inside = resample_patch(volume, (2.0, 2.0, 2.0), (1.5, 3.5, 3.5), SPEC)
    assert inside == pytest.approx(0.5)
    assert (cube[:2] == -1000).all() and (cube[3:5] == 0).all()


def test_window_clips_and_scales_to_unit_range():
    out = window(np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0]), SPEC)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_downsampling_suppresses_noise_instead_of_aliasing_it():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 100, (64, 64, 64)).astype(np.float32)
    cube, _ = resample_patch(noise, (0.5, 0.5, 0.5), (31.5, 31.5, 31.5), SPEC)
    assert cube.std() < 40  # 4x coarser: averaging must cut the noise well below the input's 100
