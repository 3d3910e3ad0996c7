"""Applying a plan (mapspec/engine/execute.py): streaming apply end to end; outputs untouched on error."""

from __future__ import annotations

import numpy as np
import pytest

import mapspec
from mapspec.errors import ConversionError, ErrorList
from mapspec.formats import module

from densenet_util import caffe_blobs, expected_torchvision
from engine_util import SMALL, SPEC, _small_source, write_spec


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
