"""``when:`` conditions over vars (mapspec/language/conditions.py): is, in, set; a list means all."""

from __future__ import annotations

import pytest

from mapspec.language.conditions import holds

VARS = {"rope_type": "llama3", "rope_factor": 8.0, "heads": 4}


@pytest.mark.parametrize("when,want", [
    ({"var": "rope_type", "is": "llama3"}, True),
    ({"var": "rope_type", "is": "linear"}, False),
    ({"var": "rope_type", "in": ["linear", "llama3"]}, True),
    ({"var": "rope_type", "in": ["linear", "yarn"]}, False),
    ({"var": "rope_factor", "set": True}, False),   # the config lacks it: unset
    ({"var": "rope_factor", "set": False}, True),
    ({"var": "heads", "set": True}, True),
    ({"var": "missing", "is": 1}, False),
    ([{"var": "heads", "is": 4}, {"var": "rope_type", "is": "llama3"}], True),
    ([{"var": "heads", "is": 4}, {"var": "rope_type", "is": "yarn"}], False),
    ([], True),
])
def test_holds(when, want):
    assert holds(when, VARS, unset={"rope_factor": None}) is want
