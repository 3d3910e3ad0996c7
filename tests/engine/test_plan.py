"""Planning from metadata (mapspec/engine/plan.py): shapes, coverage, templates, relaxations, attributes, drops."""

from __future__ import annotations

import numpy as np
import pytest

import mapspec
from mapspec.errors import SpecError
from mapspec.formats import module

from densenet_util import caffe_blobs
from engine_util import SPEC, write_spec


def test_plan_is_metadata_only_and_reports_shapes(tmp_path):
    blobs = caffe_blobs("121", seed=5)
    src = tmp_path / "d.npz"
    module("npz").save(src, blobs)
    p = mapspec.plan(SPEC, str(src), source_format="npz")
    assert p.ok, p.errors
    step = next(s for s in p.steps if s.target == "classifier.weight")
    assert step.source == "fc6[0]" and step.out_meta.shape == (1000, 1024)
    assert p.summary()["unused"] == 0
    assert len(p.referenced) == 121  # the factor blobs, read once each


def test_missing_source_tensor_is_reported_by_rule(tmp_path):
    blobs = caffe_blobs("121", seed=6)
    del blobs["conv3_2/x2/bn[2]"]
    src = tmp_path / "d.npz"
    module("npz").save(src, blobs)
    p = mapspec.plan(SPEC, str(src), source_format="npz")
    msgs = [str(e) for e in p.errors]
    assert any("tensor 'conv3_2/x2/bn[0]': div by refers to 'conv3_2/x2/bn[2]', which is not in the source" in m
               for m in msgs), msgs


def test_template_check_against_a_torch_template(tmp_path):
    torch = pytest.importorskip("torch")
    from mapspec.models.densenet import densenet121

    template = tmp_path / "template.pth"
    torch.save(densenet121(num_classes=10).state_dict(), template)
    blobs = caffe_blobs("121", seed=7)  # 1000 classes: the template wants 10
    src = tmp_path / "d.npz"
    module("npz").save(src, blobs)
    p = mapspec.plan(SPEC, str(src), template=str(template), source_format="npz")
    msgs = [str(e) for e in p.errors]
    assert len(msgs) == 2
    assert "tensor 'fc6[0]': produces shape 1000x1024 but the template" in msgs[0]
    assert "expects 10x1024 for 'classifier.weight'" in msgs[0]


def test_relaxations_turn_errors_into_warnings(tmp_path):
    spec = write_spec(tmp_path, """\
mapspec: 1
rules:
  - from: "x"
    to: "y"
  - from: "nothing<i>"
    to: "n{i}"
""")
    src = tmp_path / "s.npz"
    module("npz").save(src, {"x": np.ones(3, np.float32), "extra": np.zeros(1, np.float32)})
    p = mapspec.plan(spec, str(src))
    assert len(p.errors) == 2
    p = mapspec.plan(spec, str(src), relax=("unused-source", "unmatched-rule"))
    assert p.ok and len(p.warnings) == 2
    assert p.warnings[0].startswith("[relaxed unmatched-rule]")


def test_attribute_reference_needs_attributes(tmp_path):
    spec = write_spec(tmp_path, """\
mapspec: 1
rules:
  - from: "v"
    to: "v"
    apply: [{add: {attr: eps, of: bn}}]
""")
    src = tmp_path / "s.npz"
    module("npz").save(src, {"v": np.ones(2, np.float32)})
    p = mapspec.plan(spec, str(src))
    assert "the source has no attributes for layer/op 'bn'" in str(p.errors[0])
    spec2 = write_spec(tmp_path, """\
mapspec: 1
rules:
  - from: "v"
    to: "v"
    apply: [{add: {attr: eps, of: bn, default: 0.5}}]
""", "s2.yaml")
    out = tmp_path / "o.npz"
    mapspec.apply(spec2, str(src), str(out))
    with np.load(out) as d:
        np.testing.assert_array_equal(d["v"], [1.5, 1.5])


def test_drop_rules_discard_what_they_match(tmp_path):
    spec = write_spec(tmp_path, """\
mapspec: 1
rules:
  - from: "<l:word>/bn[<k>]"
    drop: true
  - from: "<l:path>[<k>]"
    to: "{l}[{k}]"
""")
    src = tmp_path / "s.npz"
    module("npz").save(src, {"a[0]": np.ones(2, np.float32), "a/bn[0]": np.ones(2, np.float32),
                             "a/bn[1]": np.ones(2, np.float32)})
    p = mapspec.plan(spec, str(src))
    assert p.ok and [s.target for s in p.steps] == ["a[0]"] and p.dropped == ["a/bn[0]", "a/bn[1]"]
    bad = write_spec(tmp_path, 'mapspec: 1\nrules:\n  - from: "x"\n    drop: true\n    to: "y"\n', "bad.yaml")
    with pytest.raises(SpecError, match="a drop rule discards what 'from' matches"):
        mapspec.load_spec(bad)
