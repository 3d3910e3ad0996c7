"""Lining up activations: features permuted by the spec (rotary halves), last positions, channel slices; and what
--layers says end to end: why nothing was compared, two sibling branches a spec swapped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.verify.layers import candidates, last_position


def test_features_permuted_are_found_and_undone():
    a = np.arange(2 * 5 * 8, dtype=np.float64).reshape(2, 5, 8) ** 1.5
    perm = np.array([0, 2, 4, 6, 1, 3, 5, 7])  # interleaved pairs -> halves
    b = a[..., perm]
    notes = {note: (x, y) for note, x, y in candidates(a, b)}
    x, y = notes["features permuted"]
    np.testing.assert_array_equal(x, y)
    assert [n for n, _, _ in candidates(a, a.copy())] == [""]  # nothing to undo: one way only


def test_last_position_and_channel_slices():
    a = np.arange(3 * 4, dtype=np.float32).reshape(1, 3, 4)
    x, y = last_position(a, a[:, -1:])
    np.testing.assert_array_equal(x, y)
    assert last_position(a, a[:, :2]) is None
    s = np.arange(1 * 2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2)
    t = np.concatenate([s * 0, s], axis=1)  # a concatenation whose last channels are the source layer's
    [(note, x, y)] = candidates(s, t)
    assert note == "last 2 of 4 channels"
    np.testing.assert_array_equal(x, y)


# -- end to end: what --layers says --------------------------------------------------------------------

HERE = Path(__file__).resolve().parent


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


IDENTITY = """mapspec: 1
name: identity
source: {format: torch}
target: {format: torch}
rules:
  - from: "<n:path>"
    to: "{n}"
"""


def test_layers_that_compare_nothing_say_why(tmp_path):
    """A model with no named modules (one nn.Linear) has no layers to hook: --layers says so, not []."""
    torch = pytest.importorskip("torch")
    spec = tmp_path / "identity.yaml"
    spec.write_text(IDENTITY)
    state = {"weight": torch.arange(8, dtype=torch.float32).reshape(2, 4) / 8, "bias": torch.tensor([0.5, -1.0])}
    torch.save(state, tmp_path / "a.pt")
    torch.save(state, tmp_path / "b.pt")
    tiny = f"{HERE / 'bad_models.py'}:tiny_linear"
    argv = ("verify", spec, "-s", tmp_path / "a.pt", "-c", tmp_path / "b.pt", "--source-model", tiny,
            "--target-model", tiny, "--input-shape", "1,4", "--layers")
    code, text, err = run(*argv)
    assert code == 0, text + err
    assert "layers: none compared: the source model exposes no layers to compare" in text
    doc = json.loads(run(*argv, "--json")[1])
    assert doc["layers"] == [] and "exposes no layers" in doc["layers_note"]


TWO_TOWER_SPEC = """mapspec: 1.1
name: two-tower-%s
source: {format: caffe}
target: {format: caffe}
rules:
%s  - from: "head[<k>]"
    to: "head[{k}]"
verify:
  source: {run: caffe, graph: two_tower.prototxt}
  target: {run: caffe, graph: two_tower.prototxt}
"""
STRAIGHT = '  - from: "<t:tower_left|tower_right>[<k>]"\n    to: "{t}[{k}]"\n'
SWAPPED = ('  - from: "tower_left[<k>]"\n    to: "tower_right[{k}]"\n'
           '  - from: "tower_right[<k>]"\n    to: "tower_left[{k}]"\n')


@pytest.mark.parametrize("join", ["concat", "sum"])
@pytest.mark.parametrize("swapped", [False, True])
def test_two_towers_swapped_by_the_spec_are_named(tmp_path, join, swapped):
    """Two parallel convolutions of one shape: a spec that swaps them pairs each with the other, so each looks
    right alone.  Compared by position under the layer that joins them, the swap is named (a divergence when
    they are concatenated; a note when they are summed, which gives the same value either way)."""
    pytest.importorskip("torch")
    import two_tower

    proto, model = two_tower.write(tmp_path, join)
    spec = tmp_path / "spec.yaml"
    spec.write_text(TWO_TOWER_SPEC % (join, SWAPPED if swapped else STRAIGHT))
    out = tmp_path / "out.caffemodel"
    assert run("apply", spec, "-s", model, "-t", proto, "-o", out, "-q")[0] == 0
    code, text, err = run("verify", spec, "-s", model, "-c", out, "--layers", "--json")
    doc = json.loads(text)
    rows = {(l["source"], l["target"]): l for l in doc["layers"]}
    if not swapped:
        assert code == 0 and doc["ok"] and doc["first_divergence"] is None, text + err
        assert not any("computes the source's" in l["note"] for l in doc["layers"])
        return
    left = rows[("tower_left", "tower_left")]
    assert left["note"].startswith("computes the source's tower_right") and left["max_rel"] > 0.1
    if join == "concat":
        assert code == 1 and not doc["ok"]
        bad = doc["first_divergence"]
        assert bad["target"] in ("tower_left", "tower_right") and bad["target"] == bad["source"]
        assert bad["likely_causes"][0].startswith("swapped branches: the target's " + bad["target"])
        assert "fuse" in bad["likely_causes"][0]
    else:  # a sum of the two towers is the same either way: it passes, and the table names the swap
        assert code == 0 and doc["ok"] and doc["first_divergence"] is None
        assert "gives the same value either way" in left["note"]
