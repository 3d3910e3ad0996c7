"""Drafted rules folded into placeholders: repeated blocks read like a spec a person writes, and plan to exactly
the same (source, target, transforms) as the draft's explicit pairs."""

from __future__ import annotations

import pytest
import yaml

from mapspec.draft import draft
from mapspec.draft.generalize import cut


def test_a_letter_after_a_number_is_cut_as_a_number_only_when_asked():
    from mapspec.draft.generalize import _letters_on

    assert cut("res2a_branch2b[0]") == (("res", "a_branch", "b[", "]"), (2, 2, 0))
    token = _letters_on.set(True)
    try:
        texts, nums = cut("res2a_branch2b[0]")
        keras = cut("conv2d_1/kernel")  # a letter after a number, before no letter or digit: 'd' is 3
        word = cut("conv2dw_1")  # a letter before a letter stays text
    finally:
        _letters_on.reset(token)
    assert texts == ("res", "", "_branch", "", "[", "]") and nums == (2, 0, 2, 1, 0)
    assert [str(n) for n in nums] == ["2", "a", "2", "b", "0"]
    assert keras == (("conv", "", "_", "/kernel"), (2, 3, 1)) and str(keras[1][1]) == "d"  # written back as itself
    assert word == (("conv", "dw_", ""), (2, 1))


def plan_pairs(path, source) -> set:
    """(source, target, transforms with bound arguments) of every step the spec plans, and what it drops."""
    from mapspec.engine import plan
    from mapspec.language.load import load_spec

    p = plan(load_spec(str(path), allow_paths=[str(path.parent)]), str(source))
    try:
        assert p.ok, p.errors
        return {(s.source, s.target, repr([(c.call.name, c.args) for c in s.calls])) for s in p.steps} \
            | {("dropped", n, "") for n in p.dropped}
    finally:
        p.source.close()
        if p.template is not None:
            p.template.close()


@pytest.mark.slow
def test_kaiming_resnet50_blocks_fold_into_letter_placeholders(tmp_path):
    """res<s><block letter>_branch2<a|b|c> -> layer{s-1}.{letter[block]}.conv{letter[c]+1}: the draft is as short
    as the hand-written spec (20 rules), and plans to the same pairs as the unfolded draft (121 rules)."""
    import resnet_kaiming as rk

    proto, model = rk.caffe_files(tmp_path, width=8, classes=10, hw=32)
    template = rk.torch_template(tmp_path / "tv.pth", width=8, classes=10)
    drafts = {}
    for fold in (True, False):
        d = draft(str(model), str(template), output=str(tmp_path / f"{fold}.yaml"), fold_letters=fold)
        (tmp_path / f"{fold}.yaml").write_text(d.check_text)  # the drafted rules, the TODO left out
        drafts[fold] = d
    folded = yaml.safe_load(drafts[True].check_text)
    unfolded = yaml.safe_load(drafts[False].check_text)
    assert len(folded["rules"]) == 19 and len(unfolded["rules"]) == 121
    assert folded["vars"] == {"letter": {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5}} and folded["mapspec"] == 1.1
    assert {"from": "res<a><b:a|b|c|d|e|f>_branch2<c:a|b|c>[0]",
            "to": "layer{a-1}.{letter[b]}.conv{letter[c]+1}.weight"} in folded["rules"]
    assert {"from": "bn<a><b:a|b|c|d|e|f>_branch2<c:a|b|c>[1]",
            "to": "layer{a-1}.{letter[b]}.bn{letter[c]+1}.running_var",
            "apply": [{"div": {"by": "bn{a}{b}_branch2{c}[2]", "zero": 0}}]} in folded["rules"]
    want = plan_pairs(tmp_path / "False.yaml", model)
    assert len(want) == 319 and plan_pairs(tmp_path / "True.yaml", model) == want
