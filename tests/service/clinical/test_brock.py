import pytest

from service.clinical.brock import PatientFactors, brock_logit, brock_probability

# Worked examples computed independently of service/clinical/brock.py, with `bc -l` from the coefficients of
# McWilliams et al. (N Engl J Med 2013;369:910, full model with spiculation), size term -5.3854 (sqrt(10/size) -
# 1.58113883):
#   age sex    family emphysema size type        upper count spiculated -> logit,              probability
#   62  male   no     no        4    solid       no    4     no         -> -6.7892,            0.0011246030
#   70  female yes    yes       15   part-solid  yes   1     yes        ->  0.8060043682,      0.6912574064
#   55  male   no     no        8    non-solid   no    6     no         -> -4.7884951879,      0.0082562425
#   65  female no     yes       25   solid       yes   2     yes        ->  0.8981390329,      0.7105669232
#   50  male   yes    no        6.5  part-solid  no    3     no         -> -4.5428015415,      0.0105314544
EXAMPLES = [
    (PatientFactors(62, False, False, False, 4, False), 4.0, "solid", False, -6.7892, 0.0011246030),
    (PatientFactors(70, True, True, True, 1, True), 15.0, "part_solid", True, 0.8060043682, 0.6912574064),
    (PatientFactors(55, False, False, False, 6, False), 8.0, "ground_glass", False, -4.7884951879, 0.0082562425),
    (PatientFactors(65, True, False, True, 2, True), 25.0, "solid", True, 0.8981390329, 0.7105669232),
    (PatientFactors(50, False, True, False, 3, False), 6.5, "part_solid", False, -4.5428015415, 0.0105314544),
]


@pytest.mark.parametrize(("patient", "size", "kind", "spiculated", "logit", "probability"), EXAMPLES)
def test_brock_matches_worked_examples(patient, size, kind, spiculated, logit, probability):
    assert brock_logit(patient, size, kind, spiculated) == pytest.approx(logit, abs=1e-6)
    assert brock_probability(patient, size, kind, spiculated) == pytest.approx(probability, rel=1e-6)


def test_brock_risk_rises_with_size_and_spiculation_and_falls_with_nodule_count():
    base = PatientFactors(62, False, False, False, 1, False)
    sizes = [brock_probability(base, s, "solid", False) for s in (3, 6, 10, 20, 30)]
    assert sizes == sorted(sizes)
    assert brock_probability(base, 10, "solid", True) > sizes[2]
    more = PatientFactors(62, False, False, False, 10, False)
    assert brock_probability(more, 10, "solid", False) < sizes[2]


def test_brock_clamps_sizes_below_one_millimetre():
    p = PatientFactors(62, False, False, False, 4, False)
    assert brock_probability(p, 0.0, "solid", False) == brock_probability(p, 1.0, "solid", False) > 0
