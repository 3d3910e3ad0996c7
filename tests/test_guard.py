"""The output guard (mapspec/guard.py): no output, report, shard or external-data file is an input file.

Inputs: the source and its shards, the template and its external data, the spec and its includes,
the vars file.  Compared by identity (device, inode), so symlinks and hard links are caught too;
the library (``mapspec.apply``) refuses exactly as the command line does.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

import mapspec
from mapspec import cli
from mapspec.errors import MapspecError
from mapspec.formats import module

SPEC = 'mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n'


def _ar(shape, start=0) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) + start).astype(np.float32).reshape(shape)


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


def _snapshot(*dirs: Path) -> dict:
    return {p: p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture()
def sharded_source(tmp_path):
    """A/: a sharded safetensors checkpoint (3 shards) made from l0..l5.weight."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {f"l{i}.weight": _ar((3, 4), 100 * i) for i in range(6)})
    rc, _, err = _run("apply", spec, "-s", src, "-o", str(tmp_path / "A") + "/", "--max-shard-size", "100")
    assert rc == 0, err
    back = tmp_path / "back.yaml"  # A/ -> a copy of the same checkpoint
    back.write_text('mapspec: 1\nrules:\n  - from: "layer<i>.w"\n    to: "layer{i}.w"\n')
    return tmp_path, back, tmp_path / "A"


def _refused(argv, *dirs, words=("would replace",)):
    before = _snapshot(*dirs)
    rc, _, err = _run(*argv)
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mapspec: error: "), err
    for w in words:
        assert w in err, err
    assert _snapshot(*dirs) == before


def test_output_is_a_shard_of_the_source(sharded_source):
    tmp, spec, a = sharded_source
    _refused(("apply", spec, "-s", str(a) + "/", "-o", a / "model-00001-of-00003.safetensors", "--force"), a,
             words=("would replace the source file",))


def test_sharded_output_over_its_single_file_source(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    c = tmp_path / "C"
    c.mkdir()
    module("safetensors").save(str(c / "model-00001-of-00001.safetensors"), {"l0.weight": _ar((3, 4))})
    _refused(("apply", spec, "-s", c / "model-00001-of-00001.safetensors", "-o", str(c) + "/", "--force"), c,
             words=("would replace the source file",))


def test_report_over_a_source_shard(sharded_source):
    tmp, spec, a = sharded_source
    _refused(("apply", spec, "-s", str(a) + "/", "-o", tmp / "out.npz", "--report",
              a / "model-00002-of-00003.safetensors", "--force"), a, words=("--report would replace the source",))
    assert not (tmp / "out.npz").exists()


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_links_to_inputs_are_the_inputs(sharded_source, how):
    tmp, spec, a = sharded_source
    alias = tmp / "alias.safetensors"
    make = os.symlink if how == "symlink" else os.link
    make(a / "model-00003-of-00003.safetensors", alias)
    _refused(("apply", spec, "-s", str(a) + "/", "-o", alias, "--force"), a, words=("source file",))
    report = tmp / "alias.yaml"
    make(spec, report)
    _refused(("apply", spec, "-s", str(a) + "/", "-o", tmp / "o.npz", "--report", report, "--force"), tmp,
             words=("spec file",))


def test_template_include_and_vars_file(tmp_path):
    inc = tmp_path / "inc.yaml"
    inc.write_text('mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n')
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nvars: {k: 1}\ninclude: [inc.yaml]\nrules: []\n")
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {"l0.weight": _ar((3, 4))})
    tmpl = tmp_path / "t.safetensors"
    module("safetensors").save(str(tmpl), {"layer0.w": np.zeros((3, 4), np.float32)})
    vars_file = tmp_path / "v.json"
    vars_file.write_text('{"k": 2}')
    base = ("apply", spec, "-s", src, "-t", tmpl, "--vars-file", vars_file)
    for out, kind in [(tmpl, "template"), (inc, "spec"), (vars_file, "vars")]:
        _refused(base + ("-o", tmp_path / "o.safetensors", "--report", out, "--force"), tmp_path,
                 words=(f"would replace the {kind} file",))
    _refused(base + ("-o", tmpl, "--force"), tmp_path, words=("template file",))
    rc, _, err = _run(*base, "-o", tmp_path / "o.safetensors", "--report", tmp_path / "r.json")
    assert rc == 0, err


def test_library_refuses_the_same_way(sharded_source):
    tmp, spec, a = sharded_source
    alias = tmp / "hard.safetensors"
    os.link(a / "model-00001-of-00003.safetensors", alias)
    before = _snapshot(a)
    with pytest.raises(MapspecError, match="would replace the source file"):
        mapspec.apply(str(spec), str(a), str(alias), force=True)
    with pytest.raises(MapspecError, match="would replace the source file"):
        mapspec.apply(str(spec), str(a), str(a) + "/", force=True)
    assert _snapshot(a) == before


def test_onnx_external_data_over_an_input(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "layer0.w"], ["out"])], "g", [inp], [out],
                                            initializer=[numpy_helper.from_array(_ar((3, 4)), "layer0.w")]),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "t.onnx"))
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {"l0.weight": _ar((3, 4), 7)})
    os.link(src, tmp_path / "OUT.onnx.data")  # the output's external data file is the source
    _refused(("apply", spec, "-s", src, "-t", tmp_path / "t.onnx", "-o", tmp_path / "OUT.onnx", "--force",
              "--target-option", "external_data=true"), tmp_path, words=("OUT.onnx.data", "source file"))


def test_fold_bn_never_replaces_its_inputs(tmp_path):
    """fold-bn -o PREFIX: PREFIX.prototxt and PREFIX.caffemodel are outputs; the net it reads is not one."""
    net = ('name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
           'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
           'convolution_param { num_output: 2 kernel_size: 1 } }\n'
           'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }\n')
    proto = tmp_path / "net.prototxt"
    proto.write_text(net)
    w = {"c[0]": _ar((2, 3, 1, 1)), "c[1]": _ar((2,)), "bn[0]": _ar((2,)), "bn[1]": _ar((2,), 1), "bn[2]": [1.0]}
    module("caffe").save(tmp_path / "net.caffemodel", {k: np.asarray(v, np.float32) for k, v in w.items()},
                         template=str(proto))
    _refused(("fold-bn", proto, tmp_path / "net.caffemodel", "-o", tmp_path / "net", "--force"), tmp_path,
             words=("would replace the prototxt file",))


# -- property: random output paths that alias inputs ---------------------------------------------

def _inputs(d: Path) -> dict:
    """A sharded source (3 shards), a template, a spec with an include and a vars file, in ``d``."""
    (d / "inc.yaml").write_text('mapspec: 1\nrules:\n  - from: "layer<i>.w"\n    to: "layer{i}.w"\n')
    (d / "s.yaml").write_text("mapspec: 1\nvars: {k: 1}\ninclude: [inc.yaml]\nrules: []\n")
    (d / "v.json").write_text('{"k": 2}')
    src = d / "A"
    src.mkdir()
    module("sharded").save(str(src / "model.safetensors.index.json"),
                           {f"layer{i}.w": _ar((3, 4), 100 * i) for i in range(6)}, max_shard_size=100)
    module("safetensors").save(str(d / "t.safetensors"), {f"layer{i}.w": np.zeros((3, 4), np.float32)
                                                          for i in range(6)})
    files = {"index": src / "model.safetensors.index.json", "template": d / "t.safetensors",
             "spec": d / "s.yaml", "include": d / "inc.yaml", "vars": d / "v.json"}
    files.update({f"shard{k}": src / f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)})
    return files


def test_property_outputs_aliasing_inputs_are_refused():
    """Any input file, reached by its name, a ./-path, a symlink, a symlink to a symlink or a hard link,
    given as -o or --report, with or without --force: refused in one line, no input changed, nothing
    left behind."""
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    names = ["index", "template", "spec", "include", "vars", "shard1", "shard2", "shard3"]

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(names), st.sampled_from(["name", "dot", "symlink", "symlink2", "hardlink"]),
           st.sampled_from(["-o", "--report"]), st.booleans(), st.booleans())
    def prop(which, how, role, force, sharded_out):
        with tempfile.TemporaryDirectory() as t:
            d = Path(t)
            files = _inputs(d)
            target = files[which]
            if how == "name":
                alias = target
            elif how == "dot":
                alias = Path(os.path.relpath(target.parent, d)) / "." / target.name
            else:
                alias = d / ("alias" + "".join(target.suffixes))  # the same format as the input
                if how == "hardlink":
                    os.link(target, alias)
                elif how == "symlink":
                    alias.symlink_to(target)
                else:
                    (d / "hop").symlink_to(target)
                    alias.symlink_to(d / "hop")
            before = _snapshot(d)
            other = str(d / "fresh") + "/" if sharded_out else d / "fresh.safetensors"
            out, report = (alias, d / "r.json") if role == "-o" else (other, alias)
            cwd = os.getcwd()
            os.chdir(d)
            try:
                rc, _, err = _run("apply", files["spec"], "-s", d / "A", "-t", files["template"], "--vars-file",
                                  files["vars"], "-o", out, "--report", report, *(["--force"] if force else []))
            finally:
                os.chdir(cwd)
            assert rc == 1, err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
            if force and role == "--report":
                assert "would replace the" in err, err
            assert _snapshot(d) == before
            assert not (d / "fresh").exists() and not (d / "fresh.safetensors").exists()
            assert not [p for p in d.rglob(".*")], list(d.rglob(".*"))

    prop()


def test_report_over_the_template_external_data(tmp_path):
    """An ONNX template's external data file is an input too."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "layer0.w"], ["out"])], "g", [inp], [out],
                                            initializer=[numpy_helper.from_array(_ar((3, 4)), "layer0.w")]),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(m, str(tmp_path / "t.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {"l0.weight": _ar((3, 4), 7)})
    _refused(("apply", spec, "-s", src, "-t", tmp_path / "t.onnx", "-o", tmp_path / "OUT.onnx", "--force",
              "--report", tmp_path / "weights.bin"), tmp_path, words=("would replace the template file",))
