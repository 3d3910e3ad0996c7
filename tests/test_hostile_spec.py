"""Hostile input, round 3: a spec runs no code, and no input makes a traceback or unbounded work.

* A downloaded spec names only registered model factories (mapspec.models.registry) with their
  declared, typed parameters: it cannot call a function that writes or reads files, pass it paths
  through its vars, or reach the user's own code (the command line can).
* Integer literals are bounded in specs, spec expressions and command-line values: a 5000-digit
  number is one error naming its place, never Python's digit-limit traceback.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli

SECRET = "root:$6$do-not-print-me$:19000:0:99999:7:::"


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


def _one_error(result, expected: str) -> None:
    rc, out, err = result
    assert rc == 1, out + err
    assert "Traceback" not in err
    assert err == f"mapspec: error: {expected}\n", err


NPZ_SPEC = """mapspec: 1
source: {{format: npz}}
target: {{format: npz}}
vars: {vars}
rules:
  - {{from: a, to: a}}
verify:
  source: {{run: torch, model: {source}}}
  target: {{run: torch, model: {target}}}
"""


@pytest.fixture()
def victim(tmp_path):
    """A spec folder, a prototxt and a file the attacker wants overwritten, and a source checkpoint."""
    from mapspec.models.caffenet import TINY, caffe_prototxt

    (tmp_path / "spec").mkdir()
    (tmp_path / "net.prototxt").write_text(caffe_prototxt(TINY))
    (tmp_path / "victim").write_text("precious\n")
    (tmp_path / "creds.txt").write_text(SECRET + "\n")
    np.savez(tmp_path / "a.npz", a=np.arange(3.0))
    return tmp_path


def test_a_spec_cannot_call_a_file_writer_with_paths_from_its_vars(victim):
    spec = victim / "spec" / "evil.yaml"
    spec.write_text(NPZ_SPEC.format(vars=f"{{prototxt: {victim / 'net.prototxt'}, path: {victim / 'victim'}}}",
                                    source='"mapspec.models.seeded:write_caffemodel"', target="densenet121"))
    for argv in (["validate", spec], ["verify", spec, "-s", victim / "a.npz", "-c", victim / "a.npz"]):
        rc, out, err = _run(*argv)
        assert rc == 1 and "Traceback" not in err
        assert (f"{spec}:8:32: verify.source.model: 'mapspec.models.seeded:write_caffemodel' names code, not a "
                f"registered model factory (a spec names only factories registered in mapspec.models.registry; "
                f"pass your own with --source-model on the command line)\n") in err, err
    assert (victim / "victim").read_text() == "precious\n"
    assert sorted(p.name for p in victim.iterdir()) == ["a.npz", "creds.txt", "net.prototxt", "spec", "victim"]


def test_a_spec_cannot_make_a_factory_read_a_file_outside_its_folder(victim, monkeypatch):
    spec = victim / "spec" / "read.yaml"
    spec.write_text(NPZ_SPEC.format(vars="{prototxt: ../creds.txt}", source="densenet121",
                                    target='"mapspec.models.seeded:caffe_weights"'))
    monkeypatch.chdir(victim / "spec")
    rc, out, err = _run("verify", spec, "-s", victim / "a.npz", "-c", victim / "a.npz")
    assert rc == 1 and SECRET not in err and "Traceback" not in err
    assert (f"{spec}:9:32: verify.target.model: 'mapspec.models.seeded:caffe_weights' names code, not a "
            f"registered model factory") in err, err


def test_a_spec_passes_a_factory_only_its_declared_params(victim):
    """params reach a registered factory (a 10-class DenseNet loads); the spec's vars never do."""
    torch = pytest.importorskip("torch")
    from mapspec.models.densenet import densenet121

    torch.manual_seed(0)
    torch.save(densenet121(num_classes=10).state_dict(), victim / "d.pt")
    base = ("mapspec: 1\nsource: {format: torch}\ntarget: {format: torch}\nvars: {num_classes: 10}\n"
            "rules:\n  - {from: '<n:path>', to: '{n}'}\nverify:\n  input: {shape: [1, 3, 32, 32]}\n")
    spec = victim / "spec" / "d.yaml"
    spec.write_text(base + "  source: {run: torch, model: densenet121, params: {num_classes: 10}}\n"
                           "  target: {run: torch, model: densenet121, params: {num_classes: 10}}\n")
    rc, out, err = _run("verify", spec, "-s", victim / "d.pt", "-c", victim / "d.pt")
    assert rc == 0 and "PASS" in out, out + err
    spec.write_text(base + "  source: {run: torch, model: densenet121}\n  target: {run: torch, model: densenet121}\n")
    rc, out, err = _run("verify", spec, "-s", victim / "d.pt", "-c", victim / "d.pt")
    assert rc == 1 and "classifier.weight" in err and "Traceback" not in err, err


def test_the_command_line_may_name_a_registered_factory(victim):
    pytest.importorskip("torch")
    spec = victim / "spec" / "plain.yaml"
    spec.write_text("mapspec: 1\nsource: {format: torch}\ntarget: {format: torch}\n"
                    "rules:\n  - {from: '<n:path>', to: '{n}'}\n")
    rc, out, err = _run("verify", spec, "-s", victim / "nope.pt", "-c", victim / "nope.pt",
                        "--source-model", "mobilefacenet", "--target-model", "mobilefacenet")
    assert rc == 1 and "nope.pt" in err and "registered" not in err and "Traceback" not in err, err


HUGE = "9" * 5000


@pytest.mark.parametrize("text,expected", [
    (f"mapspec: 1\nvars: {{n: {HUGE}}}\nrules:\n  - {{from: a, to: a}}\n",
     "2:11: an integer of 5000 digits; mapspec reads integers of at most 100 digits"),
    (f"mapspec: 1\nrules:\n  - {{from: a, to: a}}\n  - {{to: b, value: [-{HUGE}], dtype: int64, shape: [1]}}\n",
     "4:21: an integer of 5000 digits; mapspec reads integers of at most 100 digits"),
    (f"mapspec: 1\nrules:\n  - {{from: \"conv<i>\", to: \"c{{i + {HUGE}}}\"}}\n",
     "3:34: rule 1 (from 'conv<i>'): 'to': integer 999999999999...999999 (5000 digits) is too large (at most "
     "2**62 = 4611686018427387904)"),
    ("mapspec: 1\nrules:\n  - {from: \"conv<i>\", to: \"c{i + 4611686018427387905}\"}\n",
     "3:34: rule 1 (from 'conv<i>'): 'to': integer 4611686018427387905 is too large (at most 2**62 = "
     "4611686018427387904)"),
])
def test_a_huge_integer_literal_in_a_spec_is_one_error_at_its_place(tmp_path, text, expected):
    spec = tmp_path / "big.yaml"
    spec.write_text(text)
    rc, out, err = _run("validate", spec)
    assert rc == 1 and "Traceback" not in err and "4300" not in err, err
    assert err.splitlines()[0] == f"{spec}:{expected}", err


@pytest.mark.parametrize("flag", ["--var", "--source-option"])
def test_a_huge_integer_on_the_command_line_names_the_flag(tmp_path, flag):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nvars: {n: 3}\nrules:\n  - {from: a, to: a}\n")
    np.savez(tmp_path / "a.npz", a=np.arange(3.0))
    rc, out, err = _run("plan", spec, "-s", tmp_path / "a.npz", flag, f"n={HUGE}")
    assert rc == 2 and "Traceback" not in err, err
    assert err == f"mapspec: error: {flag} n: an integer of 5000 digits; mapspec reads integers of at most 100 " \
                  f"digits\n", err


def test_a_huge_integer_in_an_mxnet_symbol_is_one_error(tmp_path):
    """JSON numbers and attribute strings of a symbol file: the same digit limit, one message."""
    import json

    heads = tmp_path / "h-symbol.json"
    heads.write_text(f'{{"nodes": [{{"op": "null", "name": "data", "inputs": []}}], "arg_nodes": [0], '
                     f'"heads": [[0, 0, {HUGE}]]}}')
    _one_error(_run("inspect", heads), f"{heads}: an integer of 5000 digits; a symbol file's are far shorter")
    conv = tmp_path / "c-symbol.json"
    conv.write_text(json.dumps({"nodes": [
        {"op": "null", "name": "data", "inputs": []}, {"op": "null", "name": "c_weight", "inputs": []},
        {"op": "Convolution", "name": "c", "attrs": {"kernel": f"({HUGE}, 3)", "num_filter": "4", "no_bias": "True"},
         "inputs": [[0, 0, 0], [1, 0, 0]]}], "arg_nodes": [0, 1], "heads": [[2, 0, 0]]}))
    _one_error(_run("inspect", conv, "--option", "input_shape=(1,3,8,8)"),
               f"{conv}: node #2 'c' (Convolution): attribute 'kernel'='({'9' * 39}...{'9' * 16}, 3) (5005 "
               f"characters)' is not a tuple of integers such as (3, 3)")
