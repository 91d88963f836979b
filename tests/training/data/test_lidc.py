"""The real LIDC-IDRI sets: loading, patient split, the model-grid conversion, and the filler never mattering."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import DEFAULT_STORE
from training.data.datasets import LidcSource
from training.data.lidc import (
    axial_over_equivalent,
    load_maxslice,
    load_voi,
    split_by_patient,
    type_from_texture,
)
from training.defaults import PREPROCESSING, VAL_FRACTION
from training.evaluate import lidc_orientation
from training.model import ATTRIBUTE_LABELS


@pytest.fixture(scope="module")
def voi(shared_data):
    return load_voi(shared_data)


def test_voi_set_loads_with_its_labels(voi):
    assert len(voi) == 777 and voi.images_hu.shape[1:] == (64, 64, 64)
    assert voi.attributes.shape == (777, len(ATTRIBUTE_LABELS))
    assert 1 <= voi.attributes.min() and voi.attributes.max() <= 5
    assert voi.malignant.sum() == 260
    assert (voi.images_hu[~voi.valid] == -1024).all()  # the filler, exactly as the README says


def test_maxslice_set_loads_with_reader_ratings(shared_data):
    ms = load_maxslice(shared_data)
    assert ms.images_hu.shape == (2061, 71, 71)
    malignancy = ms.mean_rating("malignancy")
    assert np.nanmin(malignancy) >= 1 and np.nanmax(malignancy) <= 5


def test_split_is_by_patient(voi):
    train, val = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)
    assert not set(voi.patient_id[train]) & set(voi.patient_id[val])
    assert 0.15 < val.mean() < 0.25
    again = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)[1]
    assert (again == val).all()


def test_types_follow_the_texture_score():
    assert list(type_from_texture(np.array([1, 2, 3, 4, 5]))) == [2, 2, 1, 0, 0]


def test_filler_is_replaced_by_lung_outside_the_voi_only(voi):
    source = LidcSource(voi.subset(np.arange(4)), PREPROCESSING, seed=0, bank_size=2)
    stored = source.batch("filler")
    filled = source.batch("lung")
    assert stored.image.shape == (4, 1, 32, 32, 32)
    # with the stored filler, many voxels sit at the window floor; lung fill lifts them towards -850 HU
    assert (stored.image == 0).float().mean() > (filled.image == 0).float().mean()
    coarse_voxel = (PREPROCESSING.spacing_mm * 2) ** 3
    volumes = stored.occupancy[:, 0].sum(dim=(1, 2, 3)).numpy() * coarse_voxel
    np.testing.assert_allclose(volumes, voi.volume_mm3[:4], rtol=0.25)


def committed_session() -> ort.InferenceSession:
    models = sorted(DEFAULT_STORE.glob("res_mtnet/*/model.onnx"))
    if not models:
        pytest.skip("no committed default model yet")
    return ort.InferenceSession(str(models[-1]), providers=["CPUExecutionProvider"])


def test_answers_do_not_change_when_filler_becomes_lung(voi):
    """Held-out nodules with the stored filler, and with lung-like tissue outside their VOI: the same answer."""
    session = committed_session()
    _, val = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)
    source = LidcSource(voi.subset(np.nonzero(val)[0][:40]), PREPROCESSING, seed=5, bank_size=8)
    runs = [session.run(None, {"patch": source.batch(fill).image.numpy()}) for fill in ("filler", "lung")]
    malignant = [r[0][:, 1] for r in runs]
    diameter = [r[2][:, 0] for r in runs]
    assert np.mean(np.abs(malignant[0] - malignant[1])) < 0.05
    assert np.mean(np.abs(diameter[0] - diameter[1])) < 0.5


def ellipsoid_mask(semi_axes_mm: tuple[float, float, float], size: int = 40) -> np.ndarray:
    """A solid axis-aligned ellipsoid (semi-axes along z, y, x) at the centre of a 1 mm grid, as a boolean mask."""
    c = np.arange(size) + 0.5 - size / 2
    z, y, x = c[:, None, None], c[None, :, None], c[None, None, :]
    a, b, d = semi_axes_mm
    return (z / a) ** 2 + (y / b) ** 2 + (x / d) ** 2 <= 1.0


def test_axial_over_equivalent_tells_a_nodule_in_the_axial_plane_from_one_along_z():
    masks = np.stack([ellipsoid_mask((4, 4, 10)), ellipsoid_mask((10, 4, 4)), ellipsoid_mask((6, 6, 6))])
    ratios = axial_over_equivalent(masks, 1.0)
    # Axial sections' mean diameters 14, 8 and 12 mm; volume-equivalent diameters 2 (160)^(1/3) twice, and 12 mm.
    expected = np.array([14.0, 8.0, 12.0]) / np.array([2 * 160 ** (1 / 3), 2 * 160 ** (1 / 3), 12.0])
    np.testing.assert_allclose(ratios, expected, rtol=0.05)


def test_axial_over_equivalent_reads_the_largest_part_of_a_mask_and_nan_for_an_empty_one():
    lying = ellipsoid_mask((4, 4, 10))
    with_speck = lying.copy()
    with_speck[1:3, 1:3, 1:3] = True  # a stray piece in a corner, not touching the nodule
    empty = np.zeros_like(lying)
    ratios = axial_over_equivalent(np.stack([lying, with_speck, empty]), 1.0)
    assert ratios[1] == ratios[0] and np.isnan(ratios[2])


def test_the_readers_diameter_label_reads_size_as_volume_whatever_the_orientation(voi):
    """What the README and model card say of the label: against each consensus mask, it follows the mask's
    volume-equivalent diameter, not its axial section, though the masks lie every way."""
    _, val = split_by_patient(voi.patient_id, VAL_FRACTION, seed=0)
    held_out = voi.subset(np.nonzero(val)[0])
    ratio = axial_over_equivalent(held_out.masks, held_out.spacing_mm)
    assert ratio.min() < 0.9 and ratio.max() > 1.3
    assert abs(lidc_orientation(held_out.diameter_mm, held_out)["slope_reader_label"]) < 0.2
