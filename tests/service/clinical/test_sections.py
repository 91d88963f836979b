import numpy as np
import pytest

from service.clinical.sections import (
    BACKGROUND,
    TYPICAL_LONG_OVER_MEAN,
    in_largest_section,
    longest_diameter,
    sections,
)
from training.data.phantoms import Nodule, _voxel_average, random_rotation, section_mean_diameter

VOXEL_MM = 1.0


def ellipsoid(semi_axes_mm, rotation=None) -> Nodule:
    """A smooth ellipsoid at the centre of a 48 mm cube; its rotation's columns are its axes in (z, y, x)."""
    return Nodule(
        center_mm=(24.0, 24.0, 24.0),
        semi_axes_mm=tuple(float(a) for a in semi_axes_mm),
        rotation=np.eye(3) if rotation is None else rotation,
        kind="solid",
        solid_scale=1.0,
        lobe_dirs=np.zeros((0, 3)),
        lobe_amp=0.0,
        lobe_freq=2.0,
        spicules=np.zeros((0, 4)),
        hu_body=40.0,
        hu_core=40.0,
    )


def occupancy_of(nodule: Nodule, voxel_mm: float = VOXEL_MM, n: int = 48) -> np.ndarray:
    axes = [(np.arange(n) + 0.5) * voxel_mm] * 3
    return _voxel_average(nodule, axes, voxel_mm, 1.0)


@pytest.mark.parametrize(
    "semi_axes, expected",
    [
        ((8.0, 3.0, 3.0), {"axial": 6.0, "coronal": 11.0, "sagittal": 11.0}),  # a cigar along z: 6 x 6 x 16 mm
        ((3.0, 5.5, 3.5), {"axial": 9.0, "coronal": 6.5, "sagittal": 8.5}),
        ((4.0, 4.0, 4.0), {"axial": 8.0, "coronal": 8.0, "sagittal": 8.0}),
    ],
)
def test_sections_of_an_ellipsoid_are_its_exact_central_sections(semi_axes, expected):
    nodule = ellipsoid(semi_axes)
    found = sections(occupancy_of(nodule), VOXEL_MM)
    assert found is not None
    for plane, diameter in expected.items():
        assert section_mean_diameter(nodule, plane) == pytest.approx(diameter, abs=1e-6)  # the phantoms' own truth
        assert found.mean_diameters_mm[plane] == pytest.approx(diameter, rel=0.05), plane
    assert found.elongation == pytest.approx(max(semi_axes) / min(semi_axes), rel=0.05)


def test_a_cigar_along_z_is_sized_in_a_vertical_section_and_a_round_nodule_keeps_its_axial_size():
    cigar = sections(occupancy_of(ellipsoid((8.0, 3.0, 3.0))), VOXEL_MM)
    assert cigar.largest in ("coronal", "sagittal") and cigar.factor == pytest.approx(11.0 / 6.0, rel=0.05)
    assert in_largest_section(5.4, cigar) == pytest.approx(5.4 * 11.0 / 6.0, rel=0.05)  # 2 -> 4A, solid
    assert cigar.largest_mm == pytest.approx(11.0, rel=0.05)
    round_ = sections(occupancy_of(ellipsoid((4.0, 4.0, 4.0))), VOXEL_MM)
    assert round_.factor == pytest.approx(1.0, abs=0.02)
    flat = sections(occupancy_of(ellipsoid((3.0, 5.5, 3.5))), VOXEL_MM)
    assert flat.largest == "axial" and flat.factor == 1.0
    assert in_largest_section(7.3, flat) == in_largest_section(7.3, None) == 7.3


def test_a_tilted_cigar_is_larger_in_its_largest_section_than_in_its_axial_one():
    rotation = random_rotation(np.random.default_rng(3))
    nodule = ellipsoid((8.0, 3.0, 3.0), rotation)
    found = sections(occupancy_of(nodule), VOXEL_MM)
    truth = {plane: section_mean_diameter(nodule, plane) for plane in ("axial", "coronal", "sagittal")}
    assert found.largest == max(truth, key=truth.get)
    assert found.factor == pytest.approx(max(truth.values()) / truth["axial"], rel=0.08)


def test_the_coarse_grid_of_the_model_keeps_the_ratio():
    """On the model's 2.5 mm grid the small axes are blurred, yet the ratio still lifts a 6 x 6 x 16 mm cigar."""
    found = sections(occupancy_of(ellipsoid((8.0, 3.0, 3.0)), voxel_mm=2.5, n=16), 2.5)
    assert 1.6 < found.factor < 2.0


@pytest.mark.parametrize("diameter", [3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 14.0, 20.0])
def test_a_sphere_anywhere_on_the_models_grid_keeps_its_axial_size(diameter):
    """On the 2.5 mm grid a small sphere's sections differ by up to a third with its position: not a shape."""
    rng = np.random.default_rng(int(diameter * 10))
    for _ in range(25):
        nodule = Nodule(**{**ellipsoid((diameter / 2,) * 3).__dict__, "center_mm": tuple(20 + rng.uniform(0, 2.5, 3))})
        found = sections(_voxel_average(nodule, [np.arange(16) * 2.5 + 1.25] * 3, 2.5, 1.0), 2.5)
        assert (found is None and diameter < 4) or (found.largest == "axial" and found.factor == 1.0)


def test_degenerate_maps_do_not_raise():
    one = np.zeros((16, 16, 16), dtype=np.float32)
    one[8, 8, 8] = 1.0
    single = sections(one, 2.5)
    assert single.elongation == pytest.approx(1.0) and single.largest == "axial"
    sheet = np.zeros((16, 16, 16), dtype=np.float32)
    sheet[8] = 1.0  # one axial slice: flat in z
    flat = sections(sheet, 2.5)
    assert np.isfinite(flat.elongation) and flat.elongation > 10 and flat.largest == "axial"
    assert sections(np.ones((16, 16, 16), dtype=np.float32), 2.5).factor == pytest.approx(1.0)
    assert sections(np.full((16, 16, 16), np.nan, dtype=np.float32), 2.5) is None
    stray = one.copy()
    stray[0, 0, 0] = np.nan  # far from what is occupied: still not a map to measure
    assert sections(stray, 2.5) is None
    assert sections(np.where(one > 0, np.inf, 0).astype(np.float32), 2.5) == single  # clipped to a full voxel


def test_only_the_part_of_the_map_nearest_its_centre_is_measured():
    """A second nodule (or a loose vessel) in the 40 mm field is not part of this nodule's shape."""
    centre = occupancy_of(ellipsoid((4.0, 4.0, 4.0)))
    alone = sections(centre, VOXEL_MM)
    other = np.roll(occupancy_of(ellipsoid((3.0, 3.0, 3.0))), 15, axis=0)  # 15 mm further along z, not touching
    both = sections(np.maximum(centre, other), VOXEL_MM)
    assert both.elongation == pytest.approx(alone.elongation) and both.largest == "axial"
    assert both.mean_diameters_mm == pytest.approx(alone.mean_diameters_mm)


def test_background_and_an_empty_map_are_not_measured():
    haze = np.full((16, 16, 16), BACKGROUND, dtype=np.float32)  # what the map shows away from any nodule
    assert sections(haze, 2.5) is None
    nodule = occupancy_of(ellipsoid((4.0, 4.0, 4.0)), voxel_mm=2.5, n=16)
    with_haze = sections(np.maximum(nodule, haze), 2.5)
    alone = sections(nodule, 2.5)
    for plane in ("axial", "coronal", "sagittal"):
        assert with_haze.mean_diameters_mm[plane] == pytest.approx(alone.mean_diameters_mm[plane], rel=1e-4)


def test_the_map_is_read_in_z_y_x_order():
    nodule = ellipsoid((3.0, 3.0, 8.0))  # long along x: the axial and coronal sections show it, the sagittal not
    found = sections(occupancy_of(nodule), VOXEL_MM)
    assert found.mean_diameters_mm["sagittal"] < found.mean_diameters_mm["axial"]
    assert found.mean_diameters_mm["axial"] == pytest.approx(found.mean_diameters_mm["coronal"], rel=0.02)


@pytest.mark.parametrize("shift", [(0, -15, 0), (0, 0, -15), (-12, 12, 0)])
def test_the_part_nearest_the_centre_is_found_whichever_side_the_other_part_lies(shift):
    """The labelling reads only the box around what is occupied: positions inside it are offset back to the map's."""
    centre = occupancy_of(ellipsoid((4.0, 4.0, 4.0)))
    alone = sections(centre, VOXEL_MM)
    other = np.roll(occupancy_of(ellipsoid((3.0, 3.0, 3.0))), shift, axis=(0, 1, 2))  # before the nodule, not touching
    both = sections(np.maximum(centre, other), VOXEL_MM)
    assert both.mean_diameters_mm == pytest.approx(alone.mean_diameters_mm)


@pytest.mark.parametrize(
    ("semi_axes", "plane", "ratio"),
    [((4.0, 8.0, 4.0), "axial", 2 * 8 / 12), ((8.0, 3.0, 3.0), "coronal", 2 * 8 / 11), ((4.0, 4.0, 4.0), "axial", 1.0)],
)
def test_each_section_knows_its_long_axis_over_its_mean_diameter(semi_axes, plane, ratio):
    found = sections(occupancy_of(ellipsoid(semi_axes)), VOXEL_MM)
    assert found.long_ratio(plane) == pytest.approx(ratio, rel=0.03)


def test_the_longest_diameter_is_the_maps_where_elongated_and_typical_where_round():
    in_plane = sections(occupancy_of(ellipsoid((4.0, 8.0, 4.0))), VOXEL_MM)  # 16 x 8 mm in its axial section
    assert longest_diameter(12.0, in_plane, "axial") == pytest.approx(16.0, rel=0.03)
    round_ = sections(occupancy_of(ellipsoid((4.0, 4.0, 4.0))), VOXEL_MM)
    assert longest_diameter(8.0, round_, "axial") == pytest.approx(8.0 * TYPICAL_LONG_OVER_MEAN)
    assert longest_diameter(8.0, None, "axial") == pytest.approx(8.0 * TYPICAL_LONG_OVER_MEAN)


def test_the_typical_ratio_is_lidcs(shared_data):
    from training.data.lidc import load_voi, longest_over_mean_diameter

    ratios = longest_over_mean_diameter(load_voi(shared_data).masks)
    assert float(np.median(ratios)) == pytest.approx(TYPICAL_LONG_OVER_MEAN, abs=0.01)
    assert ratios.min() > 1.0 - 1e-9 and ratios.max() < 2.0
