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
    cause: str = ""               # a cause known from the comparison itself (rotary order, swapped branches)
    benign: bool = False          # differs, but what reads it gives the same value (branches swapped into a sum)

    def to_json(self) -> dict:
        return {"source": self.source, "target": self.target, **(self.cmp.to_json() if self.cmp else {}),
                "note": self.note, **({"cause": self.cause} if self.cause else {})}


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


def why_no_layers(pairs: list, src_acts: dict, tgt_acts: dict) -> str:
    """Why ``--layers`` compared nothing: one sentence naming what did not meet."""
    if not pairs:
        return "the spec's rules pair no source layer with a target layer"
    if not src_acts or not tgt_acts:
        side = "source" if not src_acts else "target"
        return (f"the {side} model exposes no layers to compare (it runs as one function, with no named modules "
                f"or graph nodes)")
    src_index, tgt_index = suffix_index(src_acts), suffix_index(tgt_acts)
    pair = pairs[0]
    src_hit = any(s in src_acts or s in src_index for s in pair.sources)
    side, name, acts = ("target", pair.target, tgt_acts) if src_hit else ("source", pair.sources[0], src_acts)
    return (f"the spec's layers are not the models' layers: e.g. the {side} layer {name} is none of the {side} "
            f"model's {len(acts)} layers ({', '.join(list(acts)[:3])}, ...)")


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
                   done: Callable[[], None] = lambda: None,
                   rotary: Callable[[str, str], Optional[str]] = lambda s, t: None,
                   inputs: Callable[[str, str], tuple] = lambda s, t: (None, None),
                   ) -> tuple[list, Optional[LayerResult]]:
    """Compare each pair's activations.  ``rotary(source, target)`` says how a pair's features must relate
    ("same", "permuted": see ``verify/rotary.py``); ``inputs(source, target)`` the layers each side's layer reads
    (a graph runner), so that two branches swapped by the spec are named, not the layer that joins them."""
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
    for _, src, pair in resolved:
        results.append(_compare_pair(src, pair, src_acts, tgt_acts, rel_tol, alternatives, rotary))
        done()
    results = _swapped_branches(results, src_acts, tgt_acts, rel_tol, inputs)
    first_bad = None
    prev = 0.0
    for res in results:
        if res.benign:
            continue
        rel = math.inf if res.cmp is None else res.cmp.max_rel
        if res.cause or (not rel <= rel_tol and not rel <= 10 * prev):  # NaN counts as a divergence
            first_bad = res
            break
        prev = max(prev, 0.0 if res.cmp is None else res.cmp.max_rel)
    return results, first_bad


def _compare_pair(src, pair, src_acts, tgt_acts, rel_tol, alternatives, rotary) -> LayerResult:
    from .diagnose import rotary_cause

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
    if best is None:
        return LayerResult(src, tgt, None, f"shapes {src_acts[src].shape} and {tgt_acts[tgt].shape} cannot be "
                                           f"compared", pair)
    expect = rotary(best.source, tgt)
    permuted = best.note.startswith("features permuted")
    if best.cmp.max_rel <= rel_tol and ((expect == "same" and permuted) or (expect == "permuted" and not permuted)):
        best.cause = rotary_cause(best.source, tgt, expect)
        if permuted:  # the numbers of the relation that should hold: equal as they are
            best.cmp = compare(src_acts[best.source], tgt_acts[tgt])
        best.note = "equal only with its rotary features permuted" if permuted else \
            "equal as it is, where the rotary features must be permuted"
    return best


def _close(a: np.ndarray, b: np.ndarray, rel_tol: float) -> bool:
    return a.shape == b.shape and compare(a, b).max_rel <= rel_tol


def _swapped_branches(results: list, src_acts: dict, tgt_acts: dict, rel_tol: float, inputs) -> list:
    """Walk up the graph from each compared pair, input by input (the target's k-th input must compute the
    source's k-th), to the layers that read several branches (a Concat, an Eltwise sum).  A branch that computes
    a sibling's value was swapped by the spec (its pairing follows the spec, so it alone looks right): its row
    says so, and is a divergence unless the join hides it (a sum of the two gives the same value)."""
    from .diagnose import swap_cause

    out = list(results)
    seen: set = set()
    frontier = [(r.source, r.target, r) for r in results]
    while frontier:
        s, t, res = frontier.pop()
        if (s, t) in seen:
            continue
        seen.add((s, t))
        si, ti = inputs(s, t)
        if not si or not ti or len(si) != len(ti):
            continue
        frontier += [(a, b, res) for a, b in zip(si, ti) if a in src_acts and b in tgt_acts]
        if len(si) < 2:
            continue
        for k, (a, b) in enumerate(zip(si, ti)):
            if a not in src_acts or b not in tgt_acts or _close(src_acts[a], tgt_acts[b], rel_tol):
                continue
            other = next((a2 for j, a2 in enumerate(si) if j != k and a2 in src_acts
                          and _close(src_acts[a2], tgt_acts[b], rel_tol)), None)
            if other is None:
                continue
            hidden = s in src_acts and t in tgt_acts and _close(src_acts[s], tgt_acts[t], rel_tol)
            row = LayerResult(a, b, compare(src_acts[a], tgt_acts[b]), f"computes the source's {other}" + (
                f" (swapped; {t} gives the same value either way)" if hidden else ""),
                cause="" if hidden else swap_cause(a, b, other, t), benign=hidden)
            at = next((i for i, r in enumerate(out) if r.target == b), None)
            if at is None:  # before the row the walk started from (or last, if that row was itself replaced)
                out.insert(next((i for i, r in enumerate(out) if r is res), len(out)), row)
            else:
                out[at] = row
    return out
