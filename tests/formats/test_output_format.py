"""The output's format: one rule (formats.output_format) for every command that writes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mapspec import cli
from mapspec.errors import MapspecError
from mapspec.formats import module, output_format


@pytest.mark.parametrize("path,spec_format,expected", [
    ("w.pth", "torch", "torch"), ("w.pth", "pytorch", "torch"), ("w.bin", None, "torch"),
    ("w.safetensors", None, "safetensors"), ("m.weights.h5", "keras", "keras"), ("w.npz", None, "npz"),
    ("w.weights", "npz", "npz"),  # a suffix that names no format: the spec's format
    ("net.caffemodel", None, "caffe"), ("net.params", "mxnet", "mxnet"),
    ("m.keras", "keras", "keras-archive"), ("m.keras", "h5", "keras-archive"),  # the keras family
    ("m.keras", None, "keras-archive"),
])
def test_format_from_spec_or_suffix(path, spec_format, expected):
    assert output_format(path, spec_format) == expected


def test_suffix_naming_another_format_is_an_error():
    with pytest.raises(MapspecError) as e:
        output_format("x.npz", "torch")
    assert str(e.value) == ("x.npz: the suffix names format 'npz' but the target format is 'torch'; name the output "
                            "*.pt or *.pth or *.bin or *.ckpt or *.tar, or change the target format (target.format "
                            "in the spec, or --target-format)")
    with pytest.raises(MapspecError, match="suffix names format 'prototxt' but the target format is 'caffe'"):
        output_format("net.prototxt", "caffe")
    # the keras family goes one way: a spec asking for the archive gets no bare weights file
    with pytest.raises(MapspecError, match="suffix names format 'keras' but the target format is 'keras-archive'"):
        output_format("m.weights.h5", "keras-archive")


def test_no_format_at_all():
    with pytest.raises(MapspecError, match=r"^w\.weights: cannot tell the output format from the file name; "
                                           r"use a known suffix \(\.safetensors safetensors, \.npz npz"):
        output_format("w.weights", None)


def test_sharded_outputs_give_their_shards_format(tmp_path):
    assert output_format("model.safetensors.index.json", "safetensors") == "safetensors"
    assert output_format("out/pytorch_model.bin.index.json", None) == "torch"
    assert output_format("out/", None) == "safetensors"
    assert output_format(tmp_path, "torch") == "torch"
    with pytest.raises(MapspecError, match="a sharded output holds safetensors or torch shards, not npz"):
        output_format(tmp_path, "npz")
    with pytest.raises(MapspecError, match="the index's name says safetensors shards but the target format is torch"):
        output_format("model.safetensors.index.json", "torch")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def npz_source(tmp_path):
    src = tmp_path / "a.npz"
    module("npz").save(src, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    return src


def test_apply_refuses_a_lying_suffix(tmp_path, npz_source):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\ntarget: {format: torch}\nrules:\n  - {from: w, to: v}\n")
    code, _, err = run("apply", spec, "-s", npz_source, "-o", tmp_path / "x.npz")
    assert code == 1
    assert err.startswith(f"mapspec: error: {tmp_path / 'x.npz'}: the suffix names format 'npz' but the target "
                          f"format is 'torch'")
    assert not (tmp_path / "x.npz").exists()
    code, _, err = run("apply", spec, "-s", npz_source, "-o", tmp_path / "x.safetensors", "--target-format",
                       "safetensors", "-q")
    assert code == 0, err


def test_open_target_format_follows_the_suffix(tmp_path, npz_source):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - {from: w, to: v}\n")
    for name, fmt in (("o.safetensors", "safetensors"), ("o.pth", "torch"), ("o.npz", "npz")):
        code, _, err = run("apply", spec, "-s", npz_source, "-o", tmp_path / name, "-q")
        assert code == 0, err
        with module(fmt).open(str(tmp_path / name)) as r:  # read back by the suffix's own reader
            np.testing.assert_array_equal(r.read("v"), np.arange(6, dtype=np.float32).reshape(2, 3))
    code, _, err = run("apply", spec, "-s", npz_source, "-o", tmp_path / "o.safetensors.index.json", "-q")
    assert code == 0, err  # a sharded checkpoint of safetensors shards (tests/formats/test_sharded.py)
    with module("safetensors").open(str(tmp_path / "o-00001-of-00001.safetensors")) as r:
        np.testing.assert_array_equal(r.read("v"), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_writer_errors_name_the_output_not_the_temporary_file(tmp_path, npz_source):
    # a Keras 3 output whose names carry no model path: the writer refuses; the message names o.weights.h5
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - {from: w, to: conv1/kernel}\n")
    out = tmp_path / "o.weights.h5"
    code, _, err = run("apply", spec, "-s", npz_source, "-o", out)
    assert code == 1
    assert err.startswith(f"mapspec: error: {out}: ") and ".tmp" not in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
