"""Gantry tilt: slices whose origins drift sideways along a line are read at their true positions, so a tilted
series gives the cube its untilted twin gives; drift off a line, or steeper than a gantry tilts, is refused."""

from __future__ import annotations

import numpy as np
import pytest

from service.dicom.headers import read_headers
from service.dicom.series import SeriesChoice, assemble
from service.errors import UnusableInput
from tests.service.dicom.builders import rewrite, shear, small_chest, tilt, write
from tests.service.dicom.conftest import run

SHAPE, SPACING = (20, 100, 64), (2.5, 0.8, 0.8)
CROP_ROWS = 80  # a 1-row drift per slice over 20 slices stays inside the 100 rows


@pytest.fixture(scope="module")
def chest():
    return small_chest(4, shape=SHAPE, spacing=SPACING, n_nodules=0)


def _centers(chest) -> list[dict[str, float]]:
    """World points where every row a 40 mm cube reads lies inside each sheared slice's crop."""
    x0, y0, z0 = chest.origin_xyz_mm
    out = []
    for dy, dz in ((0.0, 0.0), (2.0, -3.0), (-1.5, 4.0)):
        out.append({"x": x0 + 31.5 * SPACING[2], "y": y0 + (49.5 + dy) * SPACING[1], "z": z0 + 9.5 * SPACING[0] + dz})
    return out


def test_a_sheared_series_gives_the_cubes_of_its_untilted_twin(chest, tmp_path):
    straight = write(chest, tmp_path / "straight")
    sheared = shear(write(chest, tmp_path / "sheared"), rows=CROP_ROWS, rows_per_slice=1)
    centers = _centers(chest)
    want, got = run(straight, centers), run(sheared, centers)
    assert got.series["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan(0.8 / 2.5)), abs=0.01)
    assert want.series["gantry_tilt_deg"] == 0.0
    assert any("gantry tilt of 17.7 degrees" in w for w in got.nodules[0].warnings)
    for a, b, center in zip(want.nodules, got.nodules, centers, strict=True):
        assert (b.center["x"], b.center["y"]) == pytest.approx((center["x"], center["y"]), abs=1e-3)
        assert np.abs(a.cube - b.cube).max() < 1e-4
        assert b.cube.std() > 0.01  # lung texture, not fill


def test_a_sheared_series_without_the_correction_would_differ(chest, tmp_path):
    """The check above has teeth: reading the sheared slices as if stacked straight moves the content."""
    straight = run(write(chest, tmp_path / "straight"), _centers(chest)[:1]).nodules[0].cube
    paths = shear(write(chest, tmp_path / "sheared"), rows=CROP_ROWS, rows_per_slice=1)
    unsheared = rewrite(paths, lambda ds, k: setattr(ds, "ImagePositionPatient", _straight_origin(ds, k)))
    moved = run(unsheared, _centers(chest)[:1]).nodules[0].cube
    assert np.abs(straight - moved).max() > 0.1


def _straight_origin(ds, k: int) -> list[float]:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    return [x, round(y - k * float(ds.PixelSpacing[0]), 4), z]


def test_scanner_style_tilt_maps_world_and_voxel_as_dicom_defines(tmp_path):
    """Tilted image planes stacked along the table: IOP (1,0,0, 0,cos t,sin t), origins 2.5 mm apart in z. A pixel
    (i, j) of slice k lies at IPP_k + i * column spacing * row + j * row spacing * column (DICOM C.7.6.2.1.1)."""
    phantom = small_chest(3, shape=(24, 64, 64), spacing=(2.5, 0.7, 0.7), n_nodules=0)
    t = np.radians(15.0)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), np.sin(t)])

    def tilt_plane(ds, k: int) -> None:
        ds.ImageOrientationPatient = [*row, *(round(v, 6) for v in col)]
        ds.ImagePositionPatient = [-20.0, -30.0, -100.0 + 2.5 * k]

    paths = rewrite(write(phantom, tmp_path), tilt_plane)
    geo = assemble(read_headers([p.read_bytes() for p in paths]), SeriesChoice(), 40.0).geometry
    assert geo.tilt_degrees == pytest.approx(15.0, abs=1e-3)
    rng = np.random.default_rng(1)
    for _ in range(20):
        i, j, k = rng.uniform([0, 0, 0], [63, 63, 23])
        k0 = int(k)
        ipp = np.array([-20.0, -30.0, -100.0 + 2.5 * (k0 + (k - k0))])
        world = ipp + i * 0.7 * row + j * 0.7 * col
        np.testing.assert_allclose(geo.world_to_voxel(world), [i, j, k], atol=1e-4)
        np.testing.assert_allclose(geo.voxel_to_world(np.array([i, j, k])), world, atol=1e-4)


def test_origins_off_one_line_are_refused_as_several_stacks(tmp_path):
    phantom = small_chest(3, shape=(40, 64, 64), spacing=(1.25, 0.8, 0.8), n_nodules=0)
    paths = tilt(write(phantom, tmp_path), mm_per_slice=0.2)
    rewrite(paths[25:26], lambda ds, k: setattr(ds, "ImagePositionPatient", _moved(ds, 3.0)))
    with pytest.raises(UnusableInput, match="slice origins do not follow one line: slice 26"):
        run(paths, [{"i": 32, "j": 32, "k": 20}])


def _moved(ds, mm: float) -> list[float]:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    return [x + mm, y, z]


def test_a_tilt_steeper_than_a_gantry_tilts_is_refused(tmp_path):
    phantom = small_chest(3, shape=(40, 64, 64), spacing=(1.25, 0.8, 0.8), n_nodules=0)
    paths = tilt(write(phantom, tmp_path), mm_per_slice=1.0)  # 1 mm sideways per 1.25 mm: 38.7 degrees
    with pytest.raises(UnusableInput, match="a gantry tilt of 38.7 degrees; at most 30 degrees"):
        run(paths, [{"i": 32, "j": 32, "k": 20}])


def test_a_drift_under_half_a_pixel_counts_as_none(tmp_path):
    phantom = small_chest(3, shape=(40, 64, 64), spacing=(1.25, 0.8, 0.8), n_nodules=0)
    paths = tilt(write(phantom, tmp_path), mm_per_slice=0.009)  # 0.35 mm over the series
    assert run(paths, [{"i": 32, "j": 32, "k": 20}]).series["gantry_tilt_deg"] == 0.0
