"""Whole-chest phantoms: determinism, anatomy, nodules inside the lungs, world and voxel positions agree."""

import itertools

import numpy as np
import pytest

from training.data.chest import HU_RANGE, SLICE_SPACINGS_MM, render_chest

SHAPE = (24, 96, 96)
SPACING = (2.5, 2.0, 2.0)


def small_chest(seed: int, n_nodules: int = 3):
    return render_chest(seed, shape=SHAPE, spacing=SPACING, n_nodules=n_nodules, diameter_range=(6.0, 15.0))


def test_chest_is_deterministic_by_seed():
    a, b, c = small_chest(3), small_chest(3), small_chest(4)
    np.testing.assert_array_equal(a.hu, b.hu)
    assert a.origin_xyz_mm == b.origin_xyz_mm
    assert [n.center_mm for n in a.nodules] == [n.center_mm for n in b.nodules]
    assert [n.diameter_mm for n in a.nodules] == [n.diameter_mm for n in b.nodules]
    assert not np.array_equal(a.hu, c.hu)


def test_chest_has_air_body_lungs_and_bone():
    p = small_chest(0)
    assert p.hu.dtype == np.int16 and p.hu.shape == SHAPE and p.spacing == SPACING
    assert HU_RANGE[0] <= p.hu.min() and p.hu.max() <= HU_RANGE[1]
    assert p.hu[:, :4, :4].mean() < -950  # air in the corners
    assert np.median(p.hu[p.lung_mask]) < -700
    assert 0.05 < p.lung_mask.mean() < 0.5
    body = p.hu[:, SHAPE[1] // 2, :]  # a row through the middle crosses fat, soft tissue and both lungs
    assert (np.abs(body - 40) < 60).any() and (body < -700).sum() > 20
    assert p.hu.max() > 400  # the vertebra


@pytest.mark.parametrize("seed", [0, 1])
def test_nodules_lie_inside_the_lungs_and_the_volume(seed):
    p = small_chest(seed)
    assert len(p.nodules) == 3
    extent = np.array([(n - 1) * s for n, s in zip(SHAPE, SPACING, strict=True)])
    axes = [np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)]
    for n in p.nodules:
        reach = max(n.semi_axes_mm) * (1.0 + n.lobe_amp)
        assert np.all(np.asarray(n.center_mm) - reach >= 0) and np.all(np.asarray(n.center_mm) + reach <= extent)
        occupied = n.occupancy(axes, min(SPACING)) > 0
        assert occupied.sum() > 0
        assert p.lung_mask[occupied].all()
    for a, b in itertools.combinations(p.nodules, 2):  # apart, not touching
        reach = sum(max(n.semi_axes_mm) * (1.0 + n.lobe_amp) for n in (a, b))
        assert np.linalg.norm(np.subtract(a.center_mm, b.center_mm)) > reach


def test_nodule_world_position_maps_to_its_voxel():
    solid = 0
    for seed in range(3):
        p = small_chest(seed)
        for n, xyz, ijk in zip(p.nodules, p.nodule_world_xyz, p.nodule_voxel_ijk, strict=True):
            expected = np.asarray(p.origin_xyz_mm) + np.asarray(n.center_mm[::-1])
            np.testing.assert_allclose(xyz, expected)
            index = p.world_to_voxel(xyz)
            assert tuple(int(v) for v in np.rint(index)) == ijk
            np.testing.assert_allclose(p.voxel_to_world(index), xyz)
            i, j, k = ijk
            assert p.lung_mask[k, j, i]
            if n.kind == "solid":
                solid += 1
                assert p.hu[k, j, i] > -600, (seed, n.diameter_mm)
    assert solid >= 2


def test_drawn_spacing_is_anisotropic_and_realistic():
    p = render_chest(5, shape=(8, 512, 512), n_nodules=0)
    sz, sy, sx = p.spacing
    assert sy == sx and 0.6 <= sx <= 0.8
    assert sz in SLICE_SPACINGS_MM
    assert p.hu.shape == (8, 512, 512)


def test_a_volume_too_small_for_the_nodules_is_refused():
    with pytest.raises(ValueError, match="cannot place"):
        render_chest(0, shape=(4, 32, 32), spacing=(1.0, 1.0, 1.0), n_nodules=1, diameter_range=(20.0, 30.0))
