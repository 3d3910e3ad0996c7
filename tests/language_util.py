"""Shared by the spec language 1.1 tests: spec and source writers, per-expert weights, stack specs."""

from __future__ import annotations

import numpy as np

import mapspec
from mapspec.formats import module


def write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def experts(n_layers=2, n_experts=4, rows=3, cols=2):
    """Per-expert weights, distinct values everywhere."""
    out = {}
    k = 0
    for i in range(n_layers):
        for e in range(n_experts):
            out[f"layers.{i}.experts.{e}.w1"] = np.arange(k, k + rows * cols, dtype=np.float32).reshape(rows, cols)
            k += rows * cols
    return out


def save(tmp_path, tensors, name="src.npz"):
    p = tmp_path / name
    module("npz").save(p, tensors)
    return str(p)


def load(path):
    with mapspec.open_checkpoint(path) as r:
        return {n: np.array(r.read(n)) for n in r.infos()}


STACK = """
mapspec: 1.1
rules:
  - from: "layers.<i>.experts.<e>.w1"
    to: "layers.{i}.w1"
    stack: {over: e, axis: 0}
"""


UNSTACK = """
mapspec: 1.1
rules:
  - from: "layers.<i>.w1"
    to: "layers.{i}.experts.{e}.w1"
    each: {e: {range: [0, "{n_experts}"]}}
    apply: [{take: ["{e}"]}, {squeeze: [0]}]
vars: {n_experts: 4}
"""
