"""Command-line values as typed (mapspec/options.py) and the one option vocabulary of every command."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mapspec import cli
from mapspec.errors import UsageError
from mapspec.formats import module
from mapspec.options import parse_pair, parse_pairs, parse_shape, parse_value


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("text", ["1,3,112,112", "[1,3,112,112]", "(1, 3, 112, 112)", " [1, 3, 112, 112] ",
                                  "(1,3,112,112)"])
def test_shapes_as_people_type_them(text):
    assert parse_value(text) == [1, 3, 112, 112]
    assert parse_pair(f"input_shape={text}", "--option") == ("input_shape", [1, 3, 112, 112])


def test_scalars_mappings_and_words():
    assert parse_value("6") == 6 and parse_value("1e-5") == 1e-5 and parse_value("true") is True
    assert parse_value("keras3") == "keras3" and parse_value("") == ""
    assert parse_value("{data: [1, 3, 8, 8]}") == {"data": [1, 3, 8, 8]}
    assert parse_value("'a,b'") == "a,b"
    assert parse_pairs(["a=1", "b=x=y"], "--var") == {"a": 1, "b": "x=y"}


def test_value_errors_speak_cli():
    with pytest.raises(UsageError) as e:
        parse_pair("input_shape=[1,3", "--template-option")
    assert str(e.value).startswith("--template-option input_shape: cannot read '[1,3' (")
    with pytest.raises(UsageError, match=r"^--option 'input_shape': expected KEY=VALUE"):
        parse_pair("input_shape", "--option")
    with pytest.raises(UsageError, match="^--var a: given twice$"):
        parse_pairs(["a=1", "a=2"], "--var")


@pytest.mark.parametrize("text", ["1,3,224,224", "1x3x224x224", "[1, 3, 224, 224]", "(1, 3, 224, 224)"])
def test_shape_spellings(text):
    assert parse_shape(text) == [1, 3, 224, 224]


@pytest.mark.parametrize("text", ["1,a,3", "1.5,2", "-1,3", "{a: 1}"])
def test_bad_shapes(text):
    with pytest.raises(UsageError, match=r"^--input-shape: .* is not a shape|^--input-shape: cannot read"):
        parse_shape(text)


PROTOTXT = """name: "t"
input: "data"
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""


@pytest.mark.parametrize("spelling", ["1,3,8,8", "[1,3,8,8]", "(1, 3, 8, 8)", "1x3x8x8"])
def test_inspect_template_option(tmp_path, spelling):
    proto = tmp_path / "t.prototxt"
    proto.write_text(PROTOTXT)
    code, out, err = run("inspect", proto, "--option", f"input_shape={spelling}")
    assert code == 0, err
    assert "conv1[0]  4x3x3x3" in out


def test_old_spellings_still_work_with_a_note(tmp_path):
    proto = tmp_path / "t.prototxt"
    proto.write_text(PROTOTXT)
    code, out, err = run("inspect", proto, "-o", "input_shape=1,3,8,8")
    assert code == 0 and "conv1[0]  4x3x3x3" in out
    assert err == "mapspec: note: mapspec inspect -o is deprecated; use --option\n"
    src = tmp_path / "a.npz"
    module("npz").save(src, {"w": np.arange(6, dtype=np.float32)})
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - {from: w, to: v}\n")
    code, out, err = run("apply", spec, "-s", src, "-O", tmp_path / "o.npz", "-q")
    assert code == 0, err
    assert err == "mapspec: note: mapspec apply -O is deprecated; use -o/--output\n"
    np.testing.assert_array_equal(module("npz").open(str(tmp_path / "o.npz")).read("v"), np.arange(6))


def test_unknown_option_names_the_flag(tmp_path):
    src = tmp_path / "a.npz"
    module("npz").save(src, {"w": np.arange(6, dtype=np.float32)})
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - {from: w, to: v}\n")
    code, _, err = run("apply", spec, "-s", src, "-o", tmp_path / "o.safetensors", "--target-option", "metdata={}")
    assert code == 2
    assert err.startswith("mapspec: error: --target-option: format 'safetensors' has no write option 'metdata' "
                          "(its write options: metadata)")
    code, _, err = run("plan", spec, "-s", src, "--source-option", "x=1")
    assert code == 2 and err.startswith("mapspec: error: --source-option: format 'npz' has no read option 'x'")
    code, _, err = run("plan", spec, "-s", src, "--template-option", "input_shape=1,3,8,8")
    assert code == 2 and "--template-option: there is no template" in err
    code, _, err = run("inspect", src, "--option", "input_shape=1,2")
    assert code == 2 and err.startswith("mapspec: error: --option: format 'npz' has no read option 'input_shape'")


def test_template_option_reaches_the_template(tmp_path):
    proto = tmp_path / "t.prototxt"
    proto.write_text(PROTOTXT)
    src = tmp_path / "a.npz"
    module("npz").save(src, {"w": np.arange(108, dtype=np.float32).reshape(4, 3, 3, 3),
                             "b": np.arange(4, dtype=np.float32)})
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\ntarget: {format: caffe}\nrules:\n  - {from: w, to: 'conv1[0]'}\n"
                    "  - {from: b, to: 'conv1[1]'}\n")
    code, out, err = run("plan", spec, "-s", src, "-t", proto, "--template-option", "input_shape=(1, 3, 8, 8)")
    assert code == 0, err
    assert out.rstrip().endswith("coverage: OK")
    code, out, err = run("plan", spec, "-s", src, "-t", proto)
    assert code == 1  # no input shape: the template cannot say the blob shapes


def test_input_shapes_must_be_a_mapping(tmp_path):
    proto = tmp_path / "t.prototxt"
    proto.write_text(PROTOTXT)
    code, out, err = run("inspect", proto, "--option", "input_shapes={data: [1,3,8,8]}")
    assert code == 0 and "conv1[0]  4x3x3x3" in out
    code, _, err = run("inspect", proto, "--option", "input_shapes=[1,2]")
    assert code == 1
    assert err == (f"mapspec: error: {proto}: option input_shapes must map input names to shapes, e.g. "
                   "{data: [1, 3, 224, 224]}, not [1, 2] (for the single input use input_shape)\n")
