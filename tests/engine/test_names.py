"""Closest-name hints of a plan (mapspec/engine/names.py): difflib's ranking, with bounded work."""

from __future__ import annotations

import difflib
import time

from mapspec.engine.names import MAX_LISTED, _closest, _listing

NAMES = [f"features.denseblock{b}.denselayer{l}.norm{k}.weight" for b in range(1, 5) for l in range(1, 7)
         for k in (1, 2)] + ["classifier.weight", "classifier.bias", "features.conv0.weight"]


def test_closest_ranks_like_difflib():
    for text in ("features.denseblock2.denselayer3.norm1.wieght", "clasifier.weight", "features.conv0.weigh"):
        want = difflib.get_close_matches(text, NAMES, n=3, cutoff=0.5)
        assert _closest(text, NAMES)[0] == want[0]
        assert set(_closest(text, NAMES)) <= set(difflib.get_close_matches(text, NAMES, n=len(NAMES), cutoff=0.5))
    assert _closest("zzzzzzzz", NAMES) == []


def test_work_is_bounded_and_the_likely_names_are_still_compared():
    many = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(200_000)] + ["lm_head.weight"]
    t0 = time.perf_counter()
    assert _closest("lm_head.wieght", many) == ["lm_head.weight"]
    assert _closest("x" * 10_000, many) == []
    assert time.perf_counter() - t0 < 5


def test_listing_is_capped_and_escaped():
    text = _listing([f"t{i}\x1b" for i in range(MAX_LISTED + 5)], lambda n: n)
    assert text.count("\n") == MAX_LISTED and text.endswith("... and 5 more") and "\x1b" not in text
