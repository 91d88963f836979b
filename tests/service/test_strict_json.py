import pytest

from service import strict_json


def test_a_member_given_twice_is_refused_at_any_depth():
    with pytest.raises(strict_json.DuplicateMember, match="'b' is given twice"):
        strict_json.loads('{"a": [{"b": 1, "b": 2}]}')
    with pytest.raises(ValueError):  # callers that catch JSON's errors catch this one too
        strict_json.loads('{"a": 1, "a": 1}')


def test_json_without_repeats_reads_as_json_loads_reads_it():
    text = '{"a": [1, 2.5, {"b": null}], "c": "d"}'
    assert strict_json.loads(text) == {"a": [1, 2.5, {"b": None}], "c": "d"}
