import pytest

from service.clinical.brock import PatientFactors
from service.clinical.inputs import parse_clinical
from service.errors import UnusableInput

GOOD = {
    "age": 63,
    "sex": "female",
    "family_history": False,
    "emphysema": True,
    "nodule_count": 2,
    "upper_lobe": [True, False],
}


def test_no_clinical_member_means_no_brock():
    assert parse_clinical(None, 1) is None


def test_one_patient_factors_per_nodule_from_an_object_or_json_text():
    factors, warnings = parse_clinical(GOOD, 2)
    assert factors == [
        PatientFactors(63.0, True, False, True, 2, True),
        PatientFactors(63.0, True, False, True, 2, False),
    ]
    assert warnings == []
    import json

    assert parse_clinical(json.dumps(GOOD), 2) == (factors, [])


def test_a_readers_spiculation_is_taken_per_centre_and_absent_means_the_models():
    factors, _ = parse_clinical({**GOOD, "spiculated": [False, True]}, 2)
    assert [f.spiculated for f in factors] == [False, True]
    factors, _ = parse_clinical(GOOD, 2)
    assert [f.spiculated for f in factors] == [None, None]
    factors, _ = parse_clinical({**GOOD, "nodule_count": 1, "upper_lobe": True, "spiculated": True}, 1)
    assert [f.spiculated for f in factors] == [True]


def test_a_bare_upper_lobe_flag_is_accepted_for_one_nodule():
    factors, _ = parse_clinical({**GOOD, "nodule_count": 1, "upper_lobe": True}, 1)
    assert [f.upper_lobe for f in factors] == [True]


def test_an_age_outside_the_pancan_cohort_warns():
    _, warnings = parse_clinical({**GOOD, "age": 45}, 2)
    assert "50-75" in warnings[0]


@pytest.mark.parametrize(("age", "screening_warning"), [(18, True), (49.9, True), (50, False), (80, False), (81, True)])
def test_an_age_outside_screening_says_lung_rads_is_for_screening(age, screening_warning):
    _, warnings = parse_clinical({**GOOD, "age": age}, 2)
    assert any("Fleischner" in w and "50-80" in w for w in warnings) is screening_warning


@pytest.mark.parametrize(
    ("change", "nodules", "message"),
    [
        ({"age": "63"}, 2, 'clinical: age must be a number of years; got "63"'),
        ({"age": True}, 2, "clinical: age must be a number of years; got true"),
        ({"age": 130}, 2, "clinical: age 130 is outside 18-110 years"),
        ({"sex": "F"}, 2, 'clinical: sex must be "female" or "male"; got "F"'),
        ({"family_history": "yes"}, 2, "clinical: family_history must be true or false"),
        ({"emphysema": 1}, 2, "clinical: emphysema must be true or false"),
        ({"nodule_count": 2.5}, 2, "clinical: nodule_count must be a whole number"),
        ({"nodule_count": 0}, 2, "clinical: nodule_count 0 is outside 1-200"),
        ({"nodule_count": 1}, 2, "clinical: nodule_count 1 is fewer than the 2 nodule centres"),
        ({"upper_lobe": [True]}, 2, "clinical: upper_lobe has 1 value(s) for 2 nodule centre(s)"),
        ({"upper_lobe": True}, 2, "clinical: upper_lobe must be a list of 2 true/false values"),
        ({"upper_lobe": [True, "no"]}, 2, 'clinical: upper_lobe[1] must be true or false; got "no"'),
        ({"smoker": True}, 2, 'clinical: unknown field(s) "smoker"; expected age'),
        ({"": True}, 2, 'clinical: unknown field(s) ""; expected age'),
        ({"nodule_count": 10**30}, 2, "clinical: nodule_count 1000000000000000000000000000000 is outside 1-200"),
        ({"nodule_count": 10**50}, 2, "clinical: nodule_count with 51 digits is outside 1-200"),
        (
            {"upper_lobe": "true"},
            1,
            'clinical: upper_lobe must be true or false (or a list of one), one per nodule centre in order; got "true"',
        ),
        ({"spiculated": [True]}, 2, "clinical: spiculated has 1 value(s) for 2 nodule centre(s)"),
        ({"spiculated": [True, 1]}, 2, "clinical: spiculated[1] must be true or false; got 1"),
        ({"spiculated": "yes"}, 2, "clinical: spiculated must be a list of 2 true/false values"),
    ],
)
def test_each_bad_value_gets_a_precise_422(change, nodules, message):
    with pytest.raises(UnusableInput) as err:
        parse_clinical({**GOOD, **change}, nodules)
    assert err.value.status == 422
    assert err.value.detail.startswith(message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "clinical: not valid JSON"),
        ("[1, 2]", "clinical: must be a JSON object"),
        ({"age": 63}, "clinical: missing sex, family_history, emphysema, nodule_count, upper_lobe"),
    ],
)
def test_malformed_or_incomplete_clinical_members_are_refused(value, message):
    with pytest.raises(UnusableInput, match="^" + message.replace("(", r"\(")):
        parse_clinical(value, 1)
