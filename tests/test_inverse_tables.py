"""invert reads a lookup table in a target name backwards ({block[b]} -> <_b:0|1|...> and {block_inverse[_b]})
when the table is one-to-one, and refuses naming the table when it is not; proved by the round trip of
resnet/caffe-to-torchvision on Kaiming's ResNet-50 (tests/resnet_kaiming.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import yaml

from mapspec import cli
from mapspec.formats import open_checkpoint
from mapspec.inverse_tables import TableError, inverse

RESNET50_BLOCKS = "block={a: 0, b: 1, c: 2, d: 3, e: 4, f: 5}"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_inverse_of_a_one_to_one_table_and_refusals():
    assert inverse("top", {0: "conv1", 1: "conv2"}, {}) == {"conv1": 0, "conv2": 1}
    assert inverse("letter", {"a": 0, "b": 1}, {}) == {0: "a", 1: "b"}
    for table, says in (({"b": 1, "b1": 1}, "table 'block' is not one-to-one: 'b' and 'b1' both give '1'"),
                        ({"a": [1]}, "which a name cannot hold"), ({"a": "x|y"}, "which a pattern cannot match"),
                        ({}, "is empty")):
        with pytest.raises(TableError, match=says):
            inverse("block", table, {})
    with pytest.raises(TableError, match="'block_inverse', a var the spec already has"):
        inverse("block", {"a": 0}, {"block_inverse": {}})


def test_shipped_resnet_spec_is_refused_naming_its_table(tmp_path):
    """ResNet-50's block b and ResNet-101's b1 are both block 1: the reverse could not tell which to write."""
    code, _, err = run("invert", "resnet/caffe-to-torchvision", "-o", tmp_path / "r.yaml", "--lossy")
    assert code == 1 and not (tmp_path / "r.yaml").exists()
    assert ("rule 7 (from 'res<s><b:word>_branch2<c:a|b|c>[0]'): cannot be reversed: the target name's {block[b]} "
            "cannot be solved for b: table 'block' is not one-to-one: 'b' and 'b1' both give '1'") in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_resnet50_round_trip_through_the_inverse_table(tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    import resnet_kaiming as rk

    proto, model = rk.caffe_files(tmp_path, width=4, hw=32)
    tv, rev, back = tmp_path / "tv.pth", tmp_path / "r.yaml", tmp_path / "back.caffemodel"
    assert run("apply", "resnet/caffe-to-torchvision", "-s", model, "-o", tv, "-q")[0] == 0
    code, _, err = run("invert", "resnet/caffe-to-torchvision", "-s", model, "--var", RESNET50_BLOCKS, "--lossy",
                       "-o", rev)
    assert code == 0, err
    doc = yaml.safe_load(rev.read_text())
    assert doc["vars"]["block_inverse"] == {0: "a", 1: "b", 2: "c", 3: "d", 4: "e", 5: "f"}
    assert {"from": "layer<_s>.<_b:0|1|2|3|4|5>.conv<_c:1|2|3>.weight",
            "to": "res{_s+1}{block_inverse[_b]}_branch2{conv_inverse[_c]}[0]"} in doc["rules"]
    code, _, err = run("apply", rev, "-s", tv, "-t", proto, "-o", back, "-q", "--relax", "missing-target")
    assert code == 0, err
    with open_checkpoint(str(model)) as a, open_checkpoint(str(back)) as b:
        names = b.names()
        # every convolution, Scale and fc blob comes back bit for bit; the BatchNorm statistics (divided by their
        # factor, which became num_batches_tracked = 0) and conv1's bias (folded into bn1's mean) are what --lossy
        # said the reverse misses
        want = [n for n in a.names() if not n.startswith("bn") and n != "conv1[1]"]
        assert sorted(names) == sorted(want) and len(want) == 161
        for n in names:
            np.testing.assert_array_equal(np.array(b.read(n)), np.array(a.read(n)), err_msg=n)
