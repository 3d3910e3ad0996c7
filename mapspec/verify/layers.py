"""Layer correspondence: which source layer's activation should equal which target layer's.

The pairs come from the spec (``verify.layers``) or from its rules: each planned tensor goes
from a source tensor to a target tensor, and each runner says which layer owns a tensor of
its checkpoint (``conv1[0]`` -> ``conv1``, ``conv_1_conv2d_weight`` -> ``conv_1_conv2d``,
``model.layers.0.self_attn.q_proj.weight`` -> ``model.layers.0.self_attn.q_proj``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .metrics import Comparison, compare


@dataclass
class LayerPair:
    sources: list                 # source layers whose tensors went to the target layer
    target: str
    tensors: list = field(default_factory=list)   # (source tensor, target tensor) planned between them


@dataclass
class LayerResult:
    source: str                   # the activation compared (a layer, or what follows it in place)
    target: str
    cmp: Optional[Comparison]
    note: str = ""
    pair: Optional[LayerPair] = None

    def to_json(self) -> dict:
        return {"source": self.source, "target": self.target, **(self.cmp.to_json() if self.cmp else {}),
                "note": self.note}


def derive_layers(plan, source_runner, target_runner) -> list:
    """LayerPairs from the spec's rules: every target layer with the source layers its tensors came from."""
    pairs: dict = OrderedDict()
    for s in plan.steps:
        if s.source is None:
            continue
        src = source_runner.layer_of(s.source)
        tgt = target_runner.layer_of(s.target)
        pair = pairs.setdefault(tgt, LayerPair([], tgt))
        if src not in pair.sources:
            pair.sources.append(src)
        pair.tensors.append((s.source, s.target))
    return list(pairs.values())


def explicit_layers(layers) -> list:
    return [LayerPair([a], b) for a, b in layers]


def _feature_permutation(a: np.ndarray, b: np.ndarray):
    """A permutation p of the last axis with b ~ a[..., p] (e.g. rotary halves vs interleaved pairs), or None."""
    if a.ndim < 2 or a.shape != b.shape or a.shape[-1] < 2:
        return None
    A = a.reshape(-1, a.shape[-1]).astype(np.float64)
    B = b.reshape(-1, b.shape[-1]).astype(np.float64)
    r = np.random.default_rng(0).standard_normal(A.shape[0])
    ka, kb = r @ A, r @ B
    oa, ob = np.argsort(ka), np.argsort(kb)
    perm = np.empty_like(oa)
    perm[ob] = oa
    if np.array_equal(perm, np.arange(perm.size)):
        return None
    return perm


def last_position(a: np.ndarray, b: np.ndarray):
    """(a, b) at the last position when one sequence output (batch, positions, features) holds only the
    last position (nanoGPT's inference logits), else None."""
    if a.ndim == b.ndim == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[2] \
            and a.shape[1] != b.shape[1] and 1 in (a.shape[1], b.shape[1]):
        return a[:, -1:], b[:, -1:]
    return None


def candidates(a: np.ndarray, b: np.ndarray) -> list:
    """Ways to line up a source activation ``a`` with a target activation ``b``: as is, reshaped, as one
    channel slice of ``a`` when ``b`` is one group of a split grouped convolution (or the last channels of ``b``
    when it concatenates, like an efficient DenseBlock), or with its features
    permuted when the spec permuted a projection's rows (rotary embeddings)."""
    if a.shape == b.shape:
        out = [("", a, b)]
        perm = _feature_permutation(a, b) if a.ndim == 3 else None
        if perm is not None:
            out.append(("features permuted", a[..., perm], b))
        return out
    if a.size == b.size:
        return [("", a, b.reshape(a.shape))]
    last = last_position(a, b)
    if last is not None:
        return [("last position", *last)]
    out = []
    if a.ndim == b.ndim and a.ndim >= 2 and a.shape[0] == b.shape[0] and a.shape[2:] == b.shape[2:] \
            and b.shape[1] and a.shape[1] % b.shape[1] == 0:
        n = a.shape[1] // b.shape[1]
        for k in range(n):
            part = a[:, k * b.shape[1]:(k + 1) * b.shape[1]]
            out.append((f"channel slice {k + 1} of {n}", part, b))
    elif a.ndim == b.ndim and a.ndim >= 2 and a.shape[0] == b.shape[0] and a.shape[2:] == b.shape[2:] \
            and a.shape[1] and b.shape[1] % a.shape[1] == 0:
        # the target layer concatenates (an efficient DenseBlock): its last channels are the source layer's
        out.append((f"last {a.shape[1]} of {b.shape[1]} channels", a, b[:, -a.shape[1]:]))
    return out


def suffix_index(acts: dict) -> dict:
    """Every dotted suffix of an activation's name that no other activation shares -> that name: a model
    wrapped in a module (``model.transformer.h.0``) still answers to its checkpoint's names (``transformer.h.0``)."""
    seen: dict = {}
    for name in acts:
        parts = name.split(".")
        for i in range(1, len(parts)):
            suffix = ".".join(parts[i:])
            seen[suffix] = None if suffix in seen else name
    return {k: v for k, v in seen.items() if v is not None and k not in acts}


def compare_layers(pairs, src_acts: dict, tgt_acts: dict, rel_tol: float,
                   alternatives: Callable[[str], list] = lambda name: [],
                   done: Callable[[], None] = lambda: None) -> tuple[list, Optional[LayerResult]]:
    results = []
    order = {name: i for i, name in enumerate(src_acts)}
    src_index, tgt_index = suffix_index(src_acts), suffix_index(tgt_acts)
    resolved = []
    for pair in pairs:
        present = [s if s in src_acts else src_index[s] for s in pair.sources if s in src_acts or s in src_index]
        target = pair.target if pair.target in tgt_acts else tgt_index.get(pair.target)
        if not present or target is None:
            continue
        src = max(present, key=lambda n: order[n])
        if target != pair.target:
            pair = LayerPair(pair.sources, target, pair.tensors)
        resolved.append((order[src], src, pair))
    resolved.sort(key=lambda r: r[0])
    # one source layer split into several target layers (MXNet BatchNorm -> Caffe BatchNorm + Scale):
    # the last of them in the target's execution order is the one that computes what the source computes
    # (a target whose activation cannot line up with the source's, e.g. a tied lm_head, is not chosen)
    tgt_order = {name: i for i, name in enumerate(tgt_acts)}
    last_target: dict = {}
    for _, src, pair in resolved:
        fits = bool(candidates(src_acts[src], tgt_acts[pair.target]))
        key = (fits, tgt_order[pair.target])
        if src not in last_target or key > last_target[src][0]:
            last_target[src] = (key, pair.target)
    last_target = {k: v[1] for k, v in last_target.items()}
    resolved = [r for r in resolved if last_target[r[1]] == r[2].target]
    first_bad = None
    prev = 0.0
    for _, src, pair in resolved:
        tgt = pair.target
        best = None
        # the layer itself first, then what follows it in place (a fused activation on the target side)
        for name in [src] + [f for f in alternatives(src) if f in src_acts]:
            for note, a, b in candidates(src_acts[name], tgt_acts[tgt]):
                cmp = compare(a, b)
                label = ", ".join(x for x in (note, f"after {name}" if name != src else "") if x)
                if best is None or cmp.max_rel < best.cmp.max_rel:
                    best = LayerResult(name, tgt, cmp, label, pair)
                if cmp.max_rel <= rel_tol:
                    break
            if best is not None and best.cmp.max_rel <= rel_tol:
                break
        res = best or LayerResult(src, tgt, None, f"shapes {src_acts[src].shape} and {tgt_acts[tgt].shape} "
                                                  f"cannot be compared", pair)
        results.append(res)
        done()
        if first_bad is None:
            rel = math.inf if res.cmp is None else res.cmp.max_rel
            if not rel <= rel_tol and not rel <= 10 * prev:  # NaN counts as a divergence
                first_bad = res
            prev = max(prev, 0.0 if res.cmp is None else res.cmp.max_rel)
    return results, first_bad
