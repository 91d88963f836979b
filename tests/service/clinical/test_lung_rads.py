import numpy as np
import pytest

from service.clinical.lung_rads import (
    CATEGORIES,
    NOT_ASSESSED,
    VERSION,
    assess,
    categorize,
    round_mean_diameter,
    weighs_solid_component,
)
from service.clinical.sections import Sections

SOLID = {"solid": 0.9, "part_solid": 0.05, "ground_glass": 0.05}
PART_SOLID = {"solid": 0.05, "part_solid": 0.9, "ground_glass": 0.05}
NON_SOLID = {"solid": 0.05, "part_solid": 0.05, "ground_glass": 0.9}


@pytest.mark.parametrize(
    ("nodule_type", "diameter", "solid", "category"),
    [
        # solid: 6, 8 and 15 mm
        ("solid", 0.5, 0.5, "2"),
        ("solid", 5.9, 5.9, "2"),
        ("solid", 6.0, 6.0, "3"),
        ("solid", 7.9, 7.9, "3"),
        ("solid", 8.0, 8.0, "4A"),
        ("solid", 14.9, 14.9, "4A"),
        ("solid", 15.0, 15.0, "4B"),
        ("solid", 35.0, 35.0, "4B"),
        # part-solid: total 6 mm, then the solid component at 6 and 8 mm
        ("part_solid", 5.9, 0.0, "2"),
        ("part_solid", 5.9, 5.9, "2"),
        ("part_solid", 6.0, 0.0, "3"),
        ("part_solid", 6.0, 5.9, "3"),
        ("part_solid", 20.0, 5.9, "3"),
        ("part_solid", 6.0, 6.0, "4A"),
        ("part_solid", 20.0, 6.0, "4A"),
        ("part_solid", 20.0, 7.9, "4A"),
        ("part_solid", 8.0, 8.0, "4B"),
        ("part_solid", 20.0, 8.0, "4B"),
        # non-solid: 30 mm
        ("ground_glass", 5.0, 0.0, "2"),
        ("ground_glass", 29.9, 0.0, "2"),
        ("ground_glass", 30.0, 0.0, "3"),
        ("ground_glass", 45.0, 0.0, "3"),
    ],
)
def test_categorize_follows_the_acr_v2022_baseline_table_at_every_boundary(nodule_type, diameter, solid, category):
    code, rule = categorize(nodule_type, diameter, solid)
    assert code == category, rule
    assert "baseline" in rule


@pytest.mark.parametrize(
    ("raw", "rounded"),
    [(5.94, 5.9), (5.95, 6.0), (5.9499, 5.9), (7.95, 8.0), (14.95, 15.0), (29.95, 30.0), (8.0, 8.0)],
)
def test_mean_diameter_is_rounded_to_one_decimal_halves_up(raw, rounded):
    assert round_mean_diameter(raw) == rounded


@pytest.mark.parametrize("shown", [5.95, 7.95, 14.95])
def test_a_float32_diameter_is_rounded_as_the_answer_shows_it(shown):
    """The model's float32 for 5.95 is 5.949999809...; the answer shows 5.95, so the category must follow 6.0."""
    as_float32 = float(np.float32(shown))
    assert round(as_float32, 6) == shown  # 5.95, 7.95 and 14.95 lie just below in float32
    assert round_mean_diameter(as_float32) == round(shown + 0.05, 1)


@pytest.mark.parametrize(
    ("probs", "diameter", "solid", "category"),
    [
        (SOLID, 5.94, 5.94, "2"),
        (SOLID, 5.95, 5.95, "3"),
        (SOLID, 7.96, 7.96, "4A"),
        (SOLID, 14.96, 14.96, "4B"),
        (PART_SOLID, 12.0, 7.96, "4B"),
        (NON_SOLID, 29.96, 0.0, "3"),
    ],
)
def test_assess_rounds_before_it_categorizes(probs, diameter, solid, category):
    assert assess(probs, diameter, solid, 1.0).category.code == category


def test_assessment_carries_version_management_risk_and_what_was_not_assessed():
    out = assess(SOLID, 10.2, 10.0, 1.1).as_dict()
    assert out["version"] == VERSION and "v2022" in out["version"]
    assert out["category"] == "4A"
    assert out["risk"] == CATEGORIES["4A"].risk == "5-15%"
    assert "3 months" in out["management"]
    assert out["basis"] == {
        "nodule_type": "solid",
        "diameter_mm": 10.2,
        "solid_diameter_mm": None,
        "plane": "axial",
        "solid_plane": None,
        "axial_diameter_mm": 10.2,
        "elongation": None,
        "spiculation_score": 1.1,
    }
    assert out["suggest_4x_review"] is False
    assert out["not_assessed"] == list(NOT_ASSESSED)
    joined = " ".join(out["not_assessed"])
    for need in ("prior CT", "calcification", "juxtapleural", "perifissural"):
        assert need in joined


@pytest.mark.parametrize(
    ("diameter", "spiculation", "flag"), [(10.0, 2.6, True), (10.0, 2.4, False), (6.5, 3.0, True), (4.0, 4.5, False)]
)
def test_4x_review_is_suggested_for_spiculated_category_3_or_4_only(diameter, spiculation, flag):
    out = assess(SOLID, diameter, diameter, spiculation)
    assert out.suggest_4x_review is flag
    assert any("4X" in n for n in out.notes) is flag


def test_a_size_near_a_threshold_is_noted():
    near = assess(SOLID, 7.6, 7.6, 1.0)
    assert near.category.code == "3"
    assert any("8 mm threshold" in n for n in near.notes)
    assert not assess(SOLID, 11.0, 11.0, 1.0).notes


def test_a_plausible_other_type_with_another_category_is_reported():
    probs = {"solid": 0.55, "part_solid": 0.05, "ground_glass": 0.4}
    out = assess(probs, 10.0, 9.0, 1.0)
    assert out.category.code == "4A"
    assert out.alternatives == [{"nodule_type": "ground_glass", "probability": 0.4, "category": "2"}]


def test_a_solid_component_larger_than_the_nodule_is_capped_and_noted():
    out = assess(PART_SOLID, 7.0, 9.0, 1.0)
    assert out.solid_diameter_mm == 7.0 and out.category.code == "4A"
    assert any("capped" in n for n in out.notes)


def test_a_solid_nodules_solid_component_needs_no_note():
    out = assess(SOLID, 12.0, 12.1, 1.0)
    assert out.category.code == "4A" and not out.notes


def _shape(axial: float, coronal: float, sagittal: float, elongation: float = 2.0) -> Sections:
    return Sections({"axial": axial, "coronal": coronal, "sagittal": sagittal}, elongation, voxel_mm=2.5)


def test_an_elongated_nodule_is_categorized_by_its_largest_section():
    """A solid nodule read at 5.4 mm on its axial cut (category 2) and 9.9 mm in its coronal section (4A)."""
    cigar = _shape(6.0, 11.0, 10.5, elongation=2.6)
    out = assess(SOLID, 5.4, 5.4, 1.1, cigar).as_dict()
    assert out["category"] == "4A"
    assert out["basis"]["diameter_mm"] == 9.9 and out["basis"]["axial_diameter_mm"] == 5.4
    assert out["basis"]["plane"] == "coronal" and out["basis"]["elongation"] == 2.6
    note = "9.9 mm in the coronal section; the axial section alone (5.4 mm) would give category 2"
    assert any(note in n and "confirm on coronal and sagittal reformats" in n for n in out["notes"])
    assert any("2.6 times longer than wide" in n and "11.0 mm in its coronal section" in n for n in out["notes"])
    oval = assess(SOLID, 10.0, 10.0, 1.1, _shape(10.0, 15.5, 12.0, elongation=1.4)).as_dict()
    assert oval["basis"]["diameter_mm"] == 15.5
    assert oval["category"] == "4B" and any("category 4A" in n for n in oval["notes"])
    assert not any("longer than wide" in n for n in oval["notes"])  # under ELONGATED: no such note
    vertical = assess(SOLID, 10.0, 10.0, 1.1, _shape(10.0, 13.8, 12.0, elongation=1.4)).as_dict()
    assert any("13.8 mm is within 1.5 mm of the 15 mm threshold" in n for n in vertical["notes"])  # outside axial
    assert not any("threshold" in n for n in assess(SOLID, 13.8, 13.8, 1.1).as_dict()["notes"])  # axial: 1 mm
    within_noise = assess(SOLID, 10.0, 10.0, 1.1, _shape(10.0, 10.3, 10.1, 1.1)).as_dict()
    assert within_noise["basis"]["plane"] == "axial" and within_noise["basis"]["diameter_mm"] == 10.0
    small = assess(SOLID, 5.8, 5.8, 1.1, _shape(5.8, 6.9, 6.0, 1.2)).as_dict()  # +19%: the grid's noise at 6 mm
    assert small["basis"]["plane"] == "axial" and small["category"] == "2"


def test_a_nodule_largest_in_its_axial_section_keeps_its_axial_size():
    out = assess(SOLID, 7.9, 7.9, 1.1, _shape(9.0, 6.5, 8.5, elongation=1.3)).as_dict()
    assert out["category"] == "3" and out["basis"]["plane"] == "axial" and out["basis"]["diameter_mm"] == 7.9
    assert not any("section" in note for note in out["notes"])


def test_the_solid_component_is_scaled_by_its_own_section_never_more_than_the_nodule():
    part_solid = {"solid": 0.05, "part_solid": 0.9, "ground_glass": 0.05}
    body, core = _shape(8.0, 12.0, 12.0, 1.5), _shape(4.0, 7.0, 7.0)
    out = assess(part_solid, 12.0, 4.0, 1.1, body, core).as_dict()
    assert out["basis"]["diameter_mm"] == 18.0 and out["basis"]["solid_diameter_mm"] == 6.0  # x 1.5, not 1.75
    assert out["basis"]["plane"] == "coronal" and out["basis"]["solid_plane"] == "coronal"
    assert out["category"] == "4A"  # solid component 6 to < 8 mm; 3 on its axial 4.0 mm
    note = "18.0 mm in the coronal section, solid component 6.0 mm in its coronal section; the axial section alone"
    assert any(note in n and "solid component 4.0 mm) would give category 3" in n for n in out["notes"])
    # A round nodule cannot hold a core longer than itself: the maps disagree, and the axial core stands.
    round_body = assess(part_solid, 8.0, 5.0, 1.1, _shape(8.0, 8.0, 8.0, 1.0), _shape(5.0, 10.0, 6.0)).as_dict()
    assert round_body["basis"]["solid_diameter_mm"] == 5.0 and round_body["basis"]["solid_plane"] == "axial"
    assert round_body["category"] == "3"


def test_without_the_nodules_shape_its_solid_part_is_not_scaled_alone():
    part_solid = {"solid": 0.05, "part_solid": 0.9, "ground_glass": 0.05}
    out = assess(part_solid, 12.0, 5.0, 1.1, None, _shape(4.0, 8.8, 7.0)).as_dict()
    assert out["basis"]["solid_diameter_mm"] == 5.0 and out["basis"]["solid_plane"] == "axial"
    assert out["category"] == "3"
    solid = assess(SOLID, 9.0, 9.0, 1.1).as_dict()
    assert solid["basis"]["solid_plane"] is None and solid["basis"]["elongation"] is None


def test_a_section_within_the_grids_noise_that_would_change_the_category_is_noted_not_used():
    out = assess(SOLID, 4.8, 4.8, 1.1, _shape(5.0, 6.5, 6.0, 1.6)).as_dict()  # margin at 5 mm: 1.3 x 0.25 = 33%
    assert out["category"] == "2" and out["basis"]["plane"] == "axial" and out["basis"]["diameter_mm"] == 4.8
    assert any("coronal section reads 6.2 mm (category 3)" in n and "axial size stands" in n for n in out["notes"])
    quiet = assess(SOLID, 10.0, 10.0, 1.1, _shape(10.0, 10.4, 10.0, 1.1)).as_dict()  # 10.4 mm: still 4A
    assert not any("section" in n for n in quiet["notes"])


def test_the_grid_margin_shrinks_with_size():
    margin_at_6 = 1.3 * (2.5 / 6.0) ** 2  # 22.6%
    assert _shape(6.0, 6.0 * (1 + margin_at_6) + 0.01, 6.0).largest == "coronal"
    assert _shape(6.0, 6.0 * (1 + margin_at_6) - 0.01, 6.0).largest == "axial"
    assert _shape(20.0, 21.01, 20.0).largest == "coronal" and _shape(20.0, 20.99, 20.0).largest == "axial"  # 5%


def test_a_section_over_twice_the_axial_one_is_capped_and_noted():
    vessel = _shape(4.0, 26.0, 5.0, elongation=6.0)  # a 4 mm nodule on a vessel along z
    out = assess(SOLID, 4.0, 4.0, 1.1, vessel).as_dict()
    assert out["basis"]["diameter_mm"] == 8.0 and out["category"] == "4A"
    assert any("6.5 times its axial one" in n and "taken as 2 times" in n for n in out["notes"])
    assert any("map's own estimate is 26.0 mm in its coronal section" in n for n in out["notes"])


def test_the_elongation_note_names_the_maps_widest_section_even_when_the_axial_size_stands():
    out = assess(SOLID, 7.5, 7.5, 1.1, _shape(9.5, 6.0, 8.0, elongation=1.95)).as_dict()  # long within the axial plane
    assert out["basis"]["plane"] == "axial" and out["category"] == "3"
    assert any("1.9 times longer than wide" in n and "9.5 mm in its axial section" in n for n in out["notes"])


@pytest.mark.parametrize(
    ("probs", "weighs"),
    [(SOLID, False), ({"solid": 0.7, "part_solid": 0.25, "ground_glass": 0.05}, True), ({"part_solid": 1.0}, True)],
)
def test_the_solid_component_is_measured_only_where_it_can_matter(probs, weighs):
    assert weighs_solid_component(probs) is weighs
