"""Names as algebra (mapspec/invert/names.py): target templates solved back into source patterns."""

from __future__ import annotations

import pytest

from mapspec.invert import template_pattern, pattern_template
from mapspec.language.expr import Template
from mapspec.language.pattern import Pattern
from mapspec.transforms.inverse import NotInvertible


def test_index_arithmetic_is_solved():
    text, solved = template_pattern(Template("features.denseblock{b-1}.denselayer{l}.norm{k}"),
                                    {"b": "int", "l": "int", "k": "int"}, {})
    assert text == "features.denseblock<_b>.denselayer<l>.norm<k>"
    back = pattern_template(Pattern("conv<b>_<l>/x<k>/bn[0]"), solved)
    assert back == "conv{_b+1}_{l}/x{k}/bn[0]"
    assert Template(back).render({"_b": 3, "l": 5, "k": 2}) == "conv4_5/x2/bn[0]"


def test_multiples_and_vars():
    vars_ = {"blocks": {2: 6, 3: 12}}
    text, solved = template_pattern(Template("denseblock{b-1}[{2 * blocks[b] + l - 1}]"),
                                    {"b": "int", "l": "int"}, vars_)
    assert text == "denseblock<_b>[<_l>]"
    tmpl = Template(pattern_template(Pattern("conv<b>_<l>"), solved))
    # denseblock2[2*12 + 7 - 1 = 30] came from conv3_7
    assert tmpl.render({**vars_, "_b": 2, "_l": 30}) == "conv3_7"
    text, solved = template_pattern(Template("w{2*i+1}"), {"i": "int"}, {})
    assert Template(pattern_template(Pattern("v<i>"), solved)).render({"_i": 9}) == "v4"


@pytest.mark.parametrize("to,why", [("w{i*i}", "cannot be solved for i"), ("w{i//2}", "cannot be solved"),
                                    ("w", "does not contain <i>")])
def test_unsolvable_names_say_why(to, why):
    with pytest.raises(NotInvertible, match=why):
        template_pattern(Template(to), {"i": "int"}, {})
