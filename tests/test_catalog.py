"""`mapspec formats` and `mapspec transforms` (mapspec/catalog.py); the manual's transform reference is generated
from the same rows at build time (tests/test_docgen.py)."""

from __future__ import annotations

import io
import json
import re

from mapspec import cli
from mapspec.formats import FORMATS
from mapspec.transforms import TRANSFORMS


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_transforms_lists_every_registered_transform_and_argument():
    code, out, _ = run("transforms", "--json")
    rows = {r["transform"]: r for r in json.loads(out)}
    assert set(rows) == set(TRANSFORMS)
    for name, t in TRANSFORMS.items():
        assert [a["name"] for a in rows[name]["args"]] == list(t.args)
    code, out, _ = run("transforms")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith("(")}
    assert set(lines) == set(TRANSFORMS)
    assert re.match(r"split +parts, take, axis=0 +Split `axis` into `parts` equal parts and keep part `take`\.$",
                    lines["split"])
    assert re.match(r"fill +\(value\), when=true ", lines["fill"])


def test_transform_detail():
    code, out, _ = run("transforms", "split")
    assert code == 0
    assert out.splitlines() == ["split: Split `axis` into `parts` equal parts and keep part `take`.",
                                "  parts: int, required; number of equal parts",
                                "  take: int, required; which part to keep (0-based)",
                                "  axis: int, default 0",
                                "  inverse (mapspec invert): Concatenate the parts again (the rule's `each` must take "
                                "every part)."]
    code, _, err = run("transforms", "splt")
    assert code == 1 and err.startswith("mapspec: error: unknown transform 'splt'; known transforms: add, cast")


def test_formats_lists_reads_writes_and_options():
    code, out, _ = run("formats")
    assert code == 0
    rows = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()[2:2 + len(FORMATS)]}
    assert set(rows) == set(FORMATS)
    assert re.match(r"\.safetensors +yes +yes +- +metadata$", rows["safetensors"])
    assert re.match(r"\.prototxt +template only +no +input_shape, input_shapes +-$", rows["prototxt"])
    assert re.match(r"\.pt \.pth \.bin \.ckpt \.tar +yes +yes +root +wrap, stream$", rows["torch"])
    code, out, _ = run("formats", "--json")
    doc = {r["format"]: r for r in json.loads(out)}
    assert doc["mxnet"]["write_options"] == ["prefixes", "version"] and doc["mxnet"]["read_options"] == ["symbol"]
    assert doc["mxnet-symbol"]["write"] == "no" and doc["keras"]["suffixes"] == [".weights.h5", ".h5", ".hdf5"]
