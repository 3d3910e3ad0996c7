"""End to end through the engine: plan from metadata, streaming apply, coverage and template checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mapspec
from mapspec import cli
from mapspec.errors import ConversionError, CoverageError, ErrorList, SpecError
from mapspec.formats import module

from densenet_util import caffe_blobs, expected_torchvision

SPEC = "densenet/caffe-to-torchvision"


def write_spec(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_densenet_caffe_names_to_torchvision_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    from mapspec.models.densenet import densenet121

    blobs = caffe_blobs("121", seed=3)
    src = tmp_path / "densenet121_caffe.npz"
    module("npz").save(src, blobs)
    out = tmp_path / "densenet121.pth"
    result = mapspec.apply(SPEC, str(src), str(out), source_format="npz")
    assert result.tensors == 727
    sd = torch.load(out, weights_only=True)
    model = densenet121()
    model.load_state_dict(sd, strict=True)
    expected = expected_torchvision(blobs)
    assert set(sd) == set(expected)
    for k, v in expected.items():
        got = sd[k].numpy()
        assert got.dtype == v.dtype, k
        np.testing.assert_allclose(got, v, rtol=1e-6, atol=0, err_msg=k)


def test_zero_factor_follows_caffe(tmp_path):
    torch = pytest.importorskip("torch")
    blobs = caffe_blobs("121", seed=4, zero_factor=True)
    src = tmp_path / "z.npz"
    module("npz").save(src, blobs)
    out = tmp_path / "z.pth"
    mapspec.apply(SPEC, str(src), str(out), source_format="npz")
    sd = torch.load(out, weights_only=True)
    assert not sd["features.denseblock1.denselayer1.norm1.running_var"].any()


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


SMALL = """\
mapspec: 1
source: {format: npz}
target: {format: npz}
vars:
  widths: {1: 2, 2: 3}
rules:
  - from: "w<i>"
    to: "layer{i}.weight"
    apply: [{reshape: [-1, "{widths[i]}"]}]
  - from: "b<i>"
    each: {part: [0, 1]}
    to: "layer{i}.half{part}"
    apply: [{split: {parts: 2, take: "{part}"}}]
  - to: "steps"
    value: [[1, 2], [3, 4]]
    dtype: int32
"""


def _small_source(tmp_path):
    src = tmp_path / "s.npz"
    module("npz").save(src, {"w1": np.arange(4, dtype=np.float32), "w2": np.arange(6, dtype=np.float32),
                             "b1": np.arange(4, dtype=np.float64)})
    return src


def test_each_vars_and_constants(tmp_path):
    spec = write_spec(tmp_path, SMALL)
    src = _small_source(tmp_path)
    out = tmp_path / "o.npz"
    mapspec.apply(spec, str(src), str(out))
    with np.load(out) as d:
        assert d["layer1.weight"].shape == (2, 2)
        assert d["layer2.weight"].shape == (2, 3)
        np.testing.assert_array_equal(d["layer1.half0"], [0, 1])
        np.testing.assert_array_equal(d["layer1.half1"], [2, 3])
        np.testing.assert_array_equal(d["steps"], [[1, 2], [3, 4]])
        assert d["steps"].dtype == np.int32


def test_existing_output_needs_force_and_is_untouched_on_error(tmp_path):
    spec = write_spec(tmp_path, SMALL)
    src = _small_source(tmp_path)
    out = tmp_path / "o.npz"
    out.write_bytes(b"precious")
    with pytest.raises(mapspec.MapspecError, match="output exists; pass --force"):
        mapspec.apply(spec, str(src), str(out))
    bad = write_spec(tmp_path, SMALL.replace('"{widths[i]}"', "5"), "bad.yaml")
    with pytest.raises(ErrorList):
        mapspec.apply(bad, str(src), str(out), force=True)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "o.npz", "s.npz", "spec.yaml"]


def test_failure_during_apply_removes_the_temporary_file(tmp_path):
    spec = write_spec(tmp_path, """\
mapspec: 1
rules:
  - from: "x"
    to: "y"
    apply: [{div: "z"}]
  - from: "z"
    to: "z"
""")
    src = tmp_path / "s.npz"
    module("npz").save(src, {"x": np.ones(3, np.float32), "z": np.zeros(1, np.float32)})
    with pytest.raises(ConversionError, match="division by zero"):
        mapspec.apply(spec, str(src), str(tmp_path / "o.npz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "spec.yaml"]


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


def test_require_and_optional_refs_for_bn_folding(tmp_path):
    spec = write_spec(tmp_path, """\
mapspec: 1
rules:
  - from: "<c:word>[0]"
    require: ["{c}/bn[0]"]
    to: "{c}[0]"
    apply: [{fold_bn: {var: "{c}/bn[1]", factor: "{c}/bn[2]", gamma: "{c}/scale[0]", eps: 1.0e-5}}]
  - from: "<c:word>/bn[0]"
    to: "{c}[1]"
    apply:
      - fold_bn_bias: {var: "{c}/bn[1]", factor: "{c}/bn[2]", gamma: "{c}/scale[0]", beta: "{c}/scale[1]",
                       eps: 1.0e-5, bias: {ref: "{c}[1]", optional: true}}
  - from: "<l:word>[<k>]"
    to: "{l}[{k}]"
""")
    rng = np.random.default_rng(0)
    t = {"a[0]": rng.standard_normal((2, 3)).astype(np.float32),
         "a/bn[0]": rng.standard_normal(2).astype(np.float32), "a/bn[1]": np.ones(2, np.float32),
         "a/bn[2]": np.ones(1, np.float32), "a/scale[0]": np.full(2, 2, np.float32),
         "a/scale[1]": np.zeros(2, np.float32),
         "fc[0]": np.ones((2, 2), np.float32), "fc[1]": np.ones(2, np.float32)}
    src = tmp_path / "s.npz"
    module("npz").save(src, t)
    out = tmp_path / "o.npz"
    mapspec.apply(spec, str(src), str(out))
    with np.load(out) as d:
        assert sorted(d) == ["a[0]", "a[1]", "fc[0]", "fc[1]"]
        alpha = 2 / np.sqrt(1 + 1e-5)
        np.testing.assert_allclose(d["a[0]"], t["a[0]"] * alpha, rtol=1e-6)
        np.testing.assert_allclose(d["a[1]"], -t["a/bn[0]"] * alpha, rtol=1e-6)


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


def test_include_appends_rules_after_own(tmp_path):
    write_spec(tmp_path, """\
mapspec: 1
vars: {n: 7}
rules:
  - from: "<x:word>"
    to: "inc.{x}"
""", "base.yaml")
    spec = write_spec(tmp_path, """\
mapspec: 1
include: [base.yaml]
rules:
  - from: "a"
    to: "own.a{n}"
""")
    src = tmp_path / "s.npz"
    module("npz").save(src, {"a": np.ones(1, np.float32), "b": np.ones(1, np.float32)})
    p = mapspec.plan(spec, str(src))
    assert p.ok, p.errors
    assert [s.target for s in p.steps] == ["own.a7", "inc.b"]
    assert [s.rule.index for s in p.steps] == [1, 2]


def test_include_cycle_is_an_error(tmp_path):
    write_spec(tmp_path, "mapspec: 1\ninclude: [b.yaml]\nrules: []\n", "a.yaml")
    write_spec(tmp_path, "mapspec: 1\ninclude: [a.yaml]\nrules: []\n", "b.yaml")
    with pytest.raises(SpecError, match="includes itself"):
        mapspec.load_spec(str(tmp_path / "a.yaml"))


def test_shipped_specs_validate():
    from mapspec.resources import shipped_specs

    specs = shipped_specs()
    assert SPEC in specs
    for name, path in specs.items():
        mapspec.load_spec(str(path))


def test_report_and_cli_apply(tmp_path):
    spec = write_spec(tmp_path, SMALL)
    src = _small_source(tmp_path)
    out = tmp_path / "o.npz"
    import io
    o, e = io.StringIO(), io.StringIO()
    code = cli.run(["apply", spec, "--source", str(src), "--output", str(out), "--report", str(tmp_path / "r.json")],
                   stdout=o, stderr=e)
    assert code == 0, e.getvalue()
    assert o.getvalue().startswith(f"wrote {out}: 5 tensors")
    report = json.loads((tmp_path / "r.json").read_text())
    assert [t["target"] for t in report["tensors"]][:2] == ["layer1.weight", "layer2.weight"]


def test_also_gives_more_outputs_from_one_match(tmp_path):
    spec = write_spec(tmp_path, """\
mapspec: 1
rules:
  - from: "<l:word>_moving_var"
    to: "{l}.running_var"
    also:
      - to: "{l}.num_batches_tracked"
        value: 0
        dtype: int64
        shape: []
      - to: "{l}.std"
        apply: [{add: 1.0e-3}]
""")
    src = tmp_path / "s.npz"
    module("npz").save(src, {"bn1_moving_var": np.array([1.0, 3.0], np.float32)})
    out = tmp_path / "o.npz"
    mapspec.apply(spec, str(src), str(out))
    with np.load(out) as d:
        assert sorted(d) == ["bn1.num_batches_tracked", "bn1.running_var", "bn1.std"]
        assert d["bn1.num_batches_tracked"].dtype == np.int64 and d["bn1.num_batches_tracked"].shape == ()
        np.testing.assert_allclose(d["bn1.std"], [1.001, 3.001], rtol=1e-6)
    p = mapspec.plan(spec, str(src))
    assert [s.rule.label for s in p.steps] == ["rule 1 (from '<l:word>_moving_var')",
                                              "rule 1 (from '<l:word>_moving_var') also[1]",
                                              "rule 1 (from '<l:word>_moving_var') also[2]"]


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
