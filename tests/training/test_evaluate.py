import numpy as np

from service.runtime.manifest import Manifest
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION
from tests.training.data.test_lidc import ellipsoid_mask
from training.data.lidc import LidcVoi, axial_over_equivalent
from training.evaluate import lidc_orientation
from training.model_card import render_model_card

SHAPES = [(4, 4, 10), (4, 10, 4), (6, 6, 6), (7, 5, 5), (10, 4, 4), (3, 5, 8), (8, 3, 3), (5, 5, 5)]


def voi_of(masks: np.ndarray, diameter_mm: np.ndarray) -> LidcVoi:
    n = len(masks)
    return LidcVoi(
        images_hu=np.zeros(masks.shape, np.int16),
        valid=np.ones(masks.shape, bool),
        masks=masks,
        spacing_mm=1.0,
        malignant=np.zeros(n, np.int64),
        diameter_mm=diameter_mm.astype(np.float32),
        volume_mm3=masks.sum(axis=(1, 2, 3)).astype(np.float32),
        attributes=np.ones((n, 6), np.float32),
        texture=np.full(n, 5),
        patient_id=np.array([f"p{i}" for i in range(n)]),
        native_spacing=np.ones((n, 3), np.float32),
    )


def test_orientation_slope_is_1_for_the_axial_section_and_0_for_the_equivalent_sphere():
    masks = np.stack([ellipsoid_mask(s) for s in SHAPES])
    equivalent = (masks.sum(axis=(1, 2, 3)) * 6.0 / np.pi) ** (1.0 / 3.0)
    axial = axial_over_equivalent(masks, 1.0) * equivalent
    result = lidc_orientation(axial, voi_of(masks, equivalent))
    assert abs(result["slope_diameter_head"] - 1.0) < 0.02
    assert abs(result["slope_reader_label"]) < 0.02
    groups = result["by_mask_shape"]
    assert sum(g["nodules"] for g in groups.values()) == len(SHAPES)
    assert [groups[k]["nodules"] for k in ("within_axial_plane", "in_between", "towards_z")] == [3, 2, 3]
    assert groups["within_axial_plane"]["head_over_mask_axial_section"] == 1.0
    assert groups["within_axial_plane"]["head_over_label"] > 1.2  # the section is wider than the sphere


def test_the_model_card_reports_the_orientation_figures():
    masks = np.stack([ellipsoid_mask(s) for s in SHAPES])
    equivalent = (masks.sum(axis=(1, 2, 3)) * 6.0 / np.pi) ** (1.0 / 3.0)
    orientation = lidc_orientation(equivalent * 0.9, voi_of(masks, equivalent))
    committed = Manifest.read(DEFAULT_STORE / "res_mtnet" / DEFAULT_VERSION)
    evaluation = {**committed.evaluation, "diameter_orientation_lidc": orientation}
    card = render_model_card(committed.model_copy(update={"evaluation": evaluation}))
    assert "### Orientation on real nodules" in card
    assert f"The readers' diameter label has {orientation['slope_reader_label']}" in card
    plane = orientation["by_mask_shape"]["within_axial_plane"]
    assert f"{plane['head_over_mask_axial_section']} for nodules lying within the axial plane (n=3)" in card


def test_empty_masks_are_counted_and_left_out_and_an_empty_group_has_no_mean():
    masks = np.stack([ellipsoid_mask(s) for s in SHAPES[:3]] + [np.zeros((40, 40, 40), bool)])
    equivalent = np.append((masks[:3].sum(axis=(1, 2, 3)) * 6.0 / np.pi) ** (1.0 / 3.0), 5.0)
    result = lidc_orientation(equivalent, voi_of(masks, equivalent))
    assert result["nodules"] == 3 and result["masks_empty"] == 1
    assert result["by_mask_shape"]["towards_z"] == {
        "nodules": 0,
        "axial_section_over_equivalent": None,
        "head_over_label": None,
        "head_over_mask_axial_section": None,
    }
