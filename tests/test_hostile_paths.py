"""Hostile input, round 2: paths, options and output hygiene.

* A spec reaches only files under its own folder (a shipped spec: the shipped specs' folder):
  include, template, verify graph and ``source.options.symbol``; ``--allow-path DIR`` on the
  command line allows more; errors never echo the content of a file that is not a spec.
* ``source.options.symbol`` resolves against the spec's folder, not the working directory.
* Reader safety options (Keras ``isolate``/``timeout``) come only from the command line and
  are type-checked.
* Control characters in tensor names are escaped wherever a name is printed (JSON exact).
* safetensors headers with a lone surrogate or a 5,001-digit integer: one FormatError; a
  target name no format can store: one error from every writer.
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.errors import SpecError
from mapspec.formats import module
from mapspec.language.load import load_spec

SECRET = "root:$6$do-not-print-me$:19000:0:99999:7:::"


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


@pytest.fixture()
def outside(tmp_path):
    """A spec folder and, beside it, a folder with a 'secret' file."""
    home, other = tmp_path / "home", tmp_path / "other"
    home.mkdir()
    other.mkdir()
    (other / "shadow").write_text(SECRET + "\n")
    (other / "net.prototxt").write_text('name: "n"\n')
    (other / "inc.yaml").write_text('mapspec: 1\nrules:\n  - {from: "b", to: "b"}\n')
    return home, other


@pytest.mark.parametrize("key,value", [
    ("include", "[{path}]"),
    ("target", "{{format: caffe, template: {path}}}"),
    ("source", "{{format: mxnet, options: {{symbol: {path}}}}}"),
    ("verify", "{{source: {{run: caffe, graph: {path}}}, target: {{run: torch}}}}"),
])
@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_spec_paths_are_confined(outside, key, value, how):
    home, other = outside
    name = {"include": "shadow", "target": "net.prototxt", "source": "shadow", "verify": "net.prototxt"}[key]
    if how == "absolute":
        path = str(other / name)
    elif how == "dotdot":
        path = f"../other/{name}"
    else:
        (home / "link").symlink_to(other / name)
        path = "link"
    spec = home / "s.yaml"
    spec.write_text(f"mapspec: 1\n{key}: {value.format(path=path)}\nrules:\n  - {{from: a, to: a}}\n")
    with pytest.raises(SpecError) as e:
        load_spec(str(spec))
    msg = str(e.value)
    assert "outside the spec's folder" in msg and "--allow-path" in msg, msg
    assert "do-not-print-me" not in msg


def test_allow_path_lets_the_user_allow_more(outside):
    home, other = outside
    spec = home / "s.yaml"
    spec.write_text(f"mapspec: 1\ninclude: [{other / 'inc.yaml'}]\nrules:\n  - {{from: a, to: a}}\n")
    rc, _, err = _run("validate", spec)
    assert rc == 1 and "outside the spec's folder" in err
    rc, out, err = _run("validate", spec, "--allow-path", other)
    assert rc == 0, err
    assert "OK (2 rules" in out
    assert [r.to_text for r in load_spec(str(spec), allow_paths=[str(other)]).rules] == ["a", "b"]


def test_non_spec_include_is_never_echoed(outside):
    home, _ = outside
    (home / "shadow").write_text(SECRET + "\nkey: value\nkey: again\n")
    spec = home / "s.yaml"
    spec.write_text("mapspec: 1\ninclude: [shadow]\nrules: []\n")
    rc, out, err = _run("validate", spec)
    assert rc == 1
    assert "included file 'shadow' is not a mapspec spec" in err
    assert "do-not-print-me" not in err + out and "key" not in err


def test_shipped_specs_reach_their_own_folder():
    spec = load_spec("mobilefacenet/mxnet-to-caffe")  # its template lives beside it
    assert spec.target.template and spec.target.template.endswith("mobilefacenet.prototxt")


def test_symbol_option_is_relative_to_the_spec(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "net-symbol.json").write_text("{}")
    spec = home / "s.yaml"
    spec.write_text("mapspec: 1\nsource: {format: mxnet, options: {symbol: net-symbol.json}}\n"
                    "rules:\n  - {from: a, to: a}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_spec(str(spec)).source.options["symbol"] == str(home / "net-symbol.json")


@pytest.mark.parametrize("opts", ["options: {isolate: false}", "options: {timeout: 1000000}",
                                  "template_options: {isolate: false}"])
def test_safety_options_only_from_the_command_line(tmp_path, opts):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"mapspec: 1\nsource: {{format: keras, {opts}}}\nrules:\n  - {{from: a, to: a}}\n")
    with pytest.raises(SpecError, match="safety option of the reader; only the command line"):
        load_spec(str(spec))


@pytest.mark.parametrize("opt,word", [("timeout=abc", "timeout"), ("timeout=1e300", "timeout"),
                                      ("timeout=-1", "timeout"), ("isolate=maybe", "isolate"),
                                      ("timeout=[1]", "timeout")])
def test_keras_option_types(tmp_path, opt, word):
    pytest.importorskip("h5py")
    p = tmp_path / "m.weights.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    rc, _, err = _run("inspect", p, "--format", "keras", "--option", opt)
    assert rc == 1 and "Traceback" not in err, err
    assert f"option {word} must be" in err, err


# -- names with control characters ------------------------------------------------------------------

EVIL = "a\x1b[31mred\nmapspec: error: forged\r\u202eb"


@pytest.fixture()
def evil_file(tmp_path):
    p = tmp_path / "evil.npz"
    module("npz").save(str(p), {EVIL: np.arange(3, dtype=np.float32), "ok": np.zeros(2, np.float32)})
    return p


def _clean(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text, repr(text)
    assert not any(line.startswith("mapspec: error: forged") for line in text.splitlines()), text


def test_inspect_escapes_names_and_json_stays_exact(evil_file):
    rc, out, _ = _run("inspect", evil_file)
    assert rc == 0
    _clean(out)
    assert "a\\x1b[31mred\\nmapspec: error: forged\\r\\u202eb" in out
    rc, out, _ = _run("inspect", evil_file, "--json")
    assert [t["name"] for t in json.loads(out)["tensors"]] == [EVIL, "ok"]


def test_plan_and_errors_escape_names(evil_file, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - {from: "ok", to: "ok"}\n')
    rc, out, err = _run("plan", spec, "-s", evil_file)
    assert rc == 1  # the evil tensor is unused
    _clean(out + err)
    spec.write_text('mapspec: 1\nrules:\n  - {from: "<n:path>", to: "{n}"}\n')
    rc, out, err = _run("plan", spec, "-s", evil_file)
    assert rc == 0, err
    _clean(out)
    rc, out, _ = _run("plan", spec, "-s", evil_file, "--json")
    assert EVIL in [s["target"] for s in json.loads(out)["steps"]]


def test_diff_escapes_names(evil_file, tmp_path):
    other = tmp_path / "other.npz"
    module("npz").save(str(other), {"ok": np.zeros(2, np.float32)})
    rc, out, err = _run("diff", evil_file, other)
    assert rc == 1
    _clean(out + err)


# -- safetensors headers and unstorable names -----------------------------------------------------

def _safetensors(path: Path, header: str) -> Path:
    raw = header.encode("ascii")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    return path


@pytest.mark.parametrize("header,word", [
    ('{"a\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "lone surrogate"),
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":"\\udfff"}}', "lone surrogate"),
    ('{"a":{"dtype":"F32","shape":[' + "1" * 5001 + '],"data_offsets":[0,4]}}', "not acceptable JSON"),
])
def test_safetensors_hostile_header_text(tmp_path, header, word):
    p = _safetensors(tmp_path / "x.safetensors", header)
    rc, _, err = _run("inspect", p)
    assert rc == 1 and "Traceback" not in err, err
    assert word in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("out", ["o.safetensors", "o.pth", "o.npz", "o.params"])
def test_writers_refuse_a_name_that_is_not_text(tmp_path, out):
    src = tmp_path / "s.npz"
    module("npz").save(str(src), {"a": np.arange(3, dtype=np.float32)})
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - {from: "a", to: "bad\\ud800name"}\n')
    rc, _, err = _run("apply", spec, "-s", src, "-o", tmp_path / out)
    assert rc == 1 and "Traceback" not in err, err
    assert "not valid Unicode text" in err and "bad\\ud800name" in err
    assert not (tmp_path / out).exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
