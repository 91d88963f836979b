"""Phantom ground truth against independent computations."""

import math

import numpy as np
import pytest

from training.data.phantoms import (
    axial_mean_diameter,
    integrated_volume,
    render_patch,
    sample_nodule,
)
from training.defaults import PREPROCESSING


def test_patch_rendering_is_deterministic_by_seed():
    a, b, c = render_patch(5, PREPROCESSING), render_patch(5, PREPROCESSING), render_patch(6, PREPROCESSING)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.nodule.diameter_mm == b.nodule.diameter_mm
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", range(8))
def test_rendered_voxel_volume_matches_the_analytic_volume(seed):
    rng = np.random.default_rng(seed)
    n = sample_nodule(rng, (0.0, 0.0, 0.0), (6.0, 30.0))
    step = 0.25
    reach = max(n.semi_axes_mm) * (1 + n.lobe_amp) + 1
    axis = np.arange(-reach, reach + step, step)
    occ = n.occupancy([axis, axis, axis], step)
    voxels = float(occ.sum()) * step**3
    assert voxels == pytest.approx(n.volume_mm3, rel=0.05)
    if n.lobe_amp == 0:  # a plain ellipsoid: the textbook formula, independent of the integration
        a, b, c = n.semi_axes_mm
        assert n.volume_mm3 == pytest.approx(4 / 3 * math.pi * a * b * c, rel=0.01)


def test_sphere_diameter_and_volume():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = sample_nodule(rng, (0.0, 0.0, 0.0), (10.0, 10.0001))
        if n.lobe_amp == 0:
            a, b, c = n.semi_axes_mm
            # For an ellipsoid the central axial section's mean diameter lies between its smallest and largest axis
            assert 2 * min(a, b, c) - 1e-6 <= axial_mean_diameter(n) <= 2 * max(a, b, c) + 1e-6
            assert integrated_volume(n) == pytest.approx(4 / 3 * math.pi * a * b * c, rel=0.01)


def test_types_and_solid_components():
    kinds = {}
    for seed in range(60):
        n = sample_nodule(np.random.default_rng(seed), (0.0, 0.0, 0.0))
        kinds.setdefault(n.kind, []).append(n)
    assert set(kinds) == {"solid", "part_solid", "ground_glass"}
    assert all(n.solid_diameter_mm == pytest.approx(n.diameter_mm) for n in kinds["solid"])
    assert all(n.solid_diameter_mm == 0 for n in kinds["ground_glass"])
    assert all(0 < n.solid_diameter_mm < n.diameter_mm for n in kinds["part_solid"])
    assert all(-700 <= n.hu_body <= -300 for n in kinds["ground_glass"])


def test_patch_occupancy_target_sums_to_the_nodule_volume():
    for seed in range(4):
        p = render_patch(seed, PREPROCESSING, diameter_range=(6.0, 25.0))
        coarse_voxel = (PREPROCESSING.spacing_mm * 2) ** 3
        assert p.occupancy[0].sum() * coarse_voxel == pytest.approx(p.nodule.volume_mm3, rel=0.1)
        assert p.image.shape == (32, 32, 32) and 0 <= p.image.min() and p.image.max() <= 1
