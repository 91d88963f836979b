import numpy as np
import pytest

from service.imaging.preprocess import patch_axes_mm, preprocess, resample_patch, window
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
