"""Which source unit becomes which target unit, and the transforms for each of its tensors.

Units are aligned in graph order (an alignment maximising the tensors mapped, name similarity
breaking ties between equally sized candidates); a target unit whose best source is tied with
another is left open, never guessed.  Per role, a chain of transforms brings the source tensor
to the target's layout: weights through a canonical OIHW / (out, in) form (Keras HWIO and
(in, out) transposed, legacy 4-D Caffe blobs squeezed, a 1x1 convolution squeezed into a
Linear), BatchNorm conventions per format pair (Caffe's factor divided out or written as 1,
MXNet's ``fix_gamma``, a difference of BatchNorm eps absorbed into the variance,
num_batches_tracked made or dropped).
"""

from __future__ import annotations

import difflib
import re
from typing import NamedTuple, Optional

from .names import ROTARY, SYNONYMS, reading, rotary_family
from .settle import settle
from .todo import reads
from .units import Unit

TORCH_EPS = 1e-5
_TORCHLIKE = ("torch", "safetensors", "npz")


class Mapping(NamedTuple):
    target: str  # "" when the source tensor is deliberately dropped
    source: str
    apply: list  # transform mappings, tensor names concrete
    also: list  # more outputs from the same match: {to, value, dtype[, shape]} constants or {to, apply}
    layout: str = ""  # 2-D weights of unknown layout: "square" (could be either way) or "transposed"


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _to_canon(u: Unit, role: str) -> tuple[list, tuple]:
    """Transforms to the canonical layout, and the canonical shape."""
    shape = u.shape(role)
    if u.fmt == "keras" and role == "weight":
        if len(shape) == 4:
            return [{"transpose": [3, 2, 0, 1]}], (shape[3], shape[2], shape[0], shape[1])
        if len(shape) == 2:
            return [{"transpose": [1, 0]}], (shape[1], shape[0])
    if u.fmt == "caffe" and len(shape) == 4 and shape[:2] == (1, 1) and role == "weight" and u.attrs.get(
            "type") == "InnerProduct":
        return [{"squeeze": [0, 1]}], shape[2:]
    if role != "weight" and len(shape) > 1 and _numel(shape) == max(shape):
        return [{"reshape": [-1]}], (_numel(shape),)
    return [], shape


def _from_canon(u: Unit, role: str) -> list:
    shape = u.shape(role)
    if u.fmt == "keras" and role == "weight":
        if len(shape) == 4:
            return [{"transpose": [2, 3, 1, 0]}]
        if len(shape) == 2:
            return [{"transpose": [1, 0]}]
    return []


def tensor_chain(s: Unit, sr: str, t: Unit, tr: str, flatten_c: Optional[int] = None) -> Optional[list]:
    """Transforms from source role ``sr`` to target role ``tr``, or None if the shapes cannot agree."""
    pre, sc = _to_canon(s, sr)
    post = _from_canon(t, tr)
    _, tc = _to_canon(t, tr)
    mid: list = []
    if sc == tc:
        pass
    elif len(sc) == 4 and sc[2:] == (1, 1) and tuple(sc[:2]) == tuple(tc):
        mid = [{"squeeze": [2, 3]}]
    elif len(tc) == 4 and tc[2:] == (1, 1) and tuple(tc[:2]) == tuple(sc):
        mid = [{"unsqueeze": [2, 3]}]
    elif len(sc) == 2 and tuple(sc) == tuple(tc)[::-1] and sr == "weight":
        mid = [{"transpose": [1, 0]}]  # (in, out) vs (out, in): e.g. GPT-2's Conv1D against a Linear
    elif _numel(sc) == _numel(tc) and sr != "weight":
        mid = [{"reshape": list(t.shape(tr))}]
        post = []
    else:
        return None
    if flatten_c and len(tc) == 2 and tc[1] % flatten_c == 0 and tc[1] != flatten_c:
        # Caffe/torch flatten C,H,W; Keras H,W,C: reorder the input rows of the first fc
        o = tc[0]
        mid = mid + [{"reshape": [o, flatten_c, -1]}, {"transpose": [0, 2, 1]}, {"reshape": [o, -1]}]
    return pre + mid + post


def _flatten_order_differs(s: Unit, t: Unit) -> bool:
    return (s.fmt == "keras") != (t.fmt == "keras")


def unit_mappings(s: Unit, t: Unit, prev_conv_c: Optional[int] = None) -> Optional[list]:
    """Every target tensor of ``t`` from ``s``, or None when they are not the same kind of layer."""
    if s.kind != t.kind:
        return None
    out: list = []
    if s.kind in ("w", "slope"):
        flatten = prev_conv_c if (_flatten_order_differs(s, t) and s.kind == "w") else None
        for role, info in t.tensors.items():
            if role not in s.tensors:
                return None
            chain = tensor_chain(s, role, t, role, flatten if role == "weight" else None)
            if chain is None:
                return None
            layout = ""
            sc, tc = _to_canon(s, role)[1], _to_canon(t, role)[1]
            if role == "weight" and len(sc) == len(tc) == 2 and "keras" not in (s.fmt, t.fmt):
                layout = "square" if sc[0] == sc[1] else "transposed" if tuple(sc) != tuple(tc) else "straight"
            out.append(Mapping(info.name, s.tensors[role].name, chain, [], layout))
        if set(s.tensors) - set(t.tensors) - {"bias"}:
            return None
        return out  # a bias the target has no place for stays unused: a TODO beside the mapped weight
    if s.kind != "bn":
        return None
    if s.channels != t.channels:
        return None
    factor = s.tensors.get("factor")
    also = []
    if "factor" in t.tensors and factor is None:  # a Caffe target from a format without the factor: 1
        also.append({"to": t.tensors["factor"].name, "value": [1.0], "dtype": "float32"})
    if "count" in t.tensors and "count" not in s.tensors and factor is None:
        also.append({"to": t.tensors["count"].name, "value": 0, "dtype": "int64", "shape": []})
    for role, info in t.tensors.items():
        if role in ("factor", "count") and role not in s.tensors:
            if role == "count" and factor is not None:  # torch's num_batches_tracked driven by Caffe's factor
                out.append(Mapping(info.name, factor.name, [{"squeeze": [0]}, {"fill": 0}, {"cast": "int64"}], []))
            continue
        if role not in s.tensors:
            return None
        chain = tensor_chain(s, role, t, role)
        if chain is None:
            return None
        pre: list = []
        if role in ("mean", "var") and factor is not None and "factor" not in t.tensors:
            pre.append({"div": {"by": factor.name, "zero": 0}})  # Caffe stores mean * factor, var * factor
        if role == "var":
            eps_s, eps_t = _eps(s), _eps(t)
            if eps_s is not None and eps_t is not None and eps_s != eps_t:
                # what each side adds to the variance must agree: absorb the difference into it
                pre += [{"add": {"attr": "eps", "of": s.op} if "eps" in s.attrs else eps_s}, {"sub": eps_t}]
        chain = pre + chain
        if role == "gamma" and s.fmt == "mxnet" and "fix_gamma" in s.attrs:
            chain = [{"fill": {"value": 1, "when": {"attr": "fix_gamma", "of": s.op}}}] + chain
        m = Mapping(info.name, s.tensors[role].name, chain, also if role == "mean" else [])
        out.append(m)
    if "count" in s.tensors and "count" not in t.tensors:  # torch's num_batches_tracked: nothing to carry
        out.append(Mapping("", s.tensors["count"].name, [], []))
    return out


def fold_mappings(s: Unit, bn: Unit, t: Unit) -> Optional[list]:
    """A conv/fc ``s`` followed by the BatchNorm ``bn`` (Caffe: with its Scale), as the target's single
    layer ``t`` with a bias: the BatchNorm folded in (``fold_bn`` on the weight, ``fold_bn_bias`` from
    the mean), with the BatchNorm's own eps."""
    if s.kind != "w" or bn.kind != "bn" or t.kind != "w" or set(t.tensors) != {"weight", "bias"}:
        return None
    if "weight" not in s.tensors or "var" not in bn.tensors or "mean" not in bn.tensors:
        return None
    weight = tensor_chain(s, "weight", t, "weight")
    bias = tensor_chain(bn, "mean", t, "bias")
    _, canon = _to_canon(s, "weight")
    if weight is None or bias is None or canon[0] != bn.channels:
        return None
    eps = _eps(bn)
    if eps is None:  # folding needs the BatchNorm's own eps; a weights file that does not say: not drafted
        return None
    args = {"var": bn.tensors["var"].name, "eps": {"attr": "eps", "of": bn.op} if "eps" in bn.attrs else eps}
    for role in ("factor", "gamma"):
        if role in bn.tensors:
            args[role] = bn.tensors[role].name
    bias_args = dict(args)
    if "beta" in bn.tensors:
        bias_args["beta"] = bn.tensors["beta"].name
    if "bias" in s.tensors:
        bias_args["bias"] = s.tensors["bias"].name
    return [Mapping(t.tensors["weight"].name, s.tensors["weight"].name, [{"fold_bn": args}] + weight, []),
            Mapping(t.tensors["bias"].name, bn.tensors["mean"].name, [{"fold_bn_bias": bias_args}] + bias, [])]


def _used(maps: list) -> int:
    """Source tensors a set of mappings reads (tie-break: explain more of the source)."""
    return len(reads(maps))


def split_mappings(s: Unit, ts: list, prev_conv_c: Optional[int] = None) -> Optional[list]:
    """A grouped convolution ``s`` (Caffe ``group: g``) as g target layers, one per group: each role split
    into g parts along the output channels, part k to ``ts[k]`` (the first output, the others ``also``)."""
    g = len(ts)
    parts = []
    for k, t in enumerate(ts):
        view = Unit(s.key, s.kind, s.fmt, s.order, {}, s.attrs, s.op)
        for role, info in s.tensors.items():
            shape = tuple(info.shape)
            if not shape or shape[0] % g:
                return None
            view.tensors[role] = info._replace(shape=(shape[0] // g,) + shape[1:])
        maps = unit_mappings(view, t, prev_conv_c)
        if maps is None:
            return None
        parts.append({m.source: (m.target, [{"split": {"parts": g, "take": k}}] + m.apply) for m in maps})
    out = []
    for source, (target, apply) in parts[0].items():
        also = [{"to": p[source][0], "apply": p[source][1]} for p in parts[1:]]
        out.append(Mapping(target, source, apply, also))
    return out


def _eps(u: Unit) -> Optional[float]:
    """The BatchNorm eps a side computes with: torch's fixed 1e-5, else the layer's attribute if known."""
    if u.fmt in _TORCHLIKE:
        return TORCH_EPS
    if "eps" in u.attrs:
        return float(u.attrs["eps"])
    return None


# -- alignment -------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z]+")


def _similarity(a: str, b: str) -> float:
    """Word-level similarity of two layer names, known synonyms read as the same word."""
    def words(key: str) -> list:
        return [x for w in reading(key) for x in ([w] if w in SYNONYMS else _WORD.findall(w))]

    return difflib.SequenceMatcher(None, words(a), words(b)).ratio()


class Alignment(NamedTuple):
    mappings: list  # Mapping
    open: list  # [(target unit, [candidate source unit keys], why)]
    notes: list = []  # what the draft assumed and could not check


def _same_names(S: list, T: list, last_c: list) -> dict:
    """Layers of the same name on both sides that fit each other, then layers that read the same (known
    synonyms, placement words dropped, the same layer index) where each is the only one on its side that
    reads so: target index -> (source index, mappings, tied)."""
    tindex = {u.key: j for j, u in enumerate(T)}
    out = {}
    for i, s in enumerate(S):
        j = tindex.get(s.key)
        maps = unit_mappings(s, T[j], last_c[i]) if j is not None and s.kind == T[j].kind else None
        if maps is not None:
            out[j] = (i, maps, False)
    taken = {i for i, _, _ in out.values()}
    by_reading: dict = {}
    for side, units_, skip in ((0, S, taken), (1, T, set(out))):
        for k, u in enumerate(units_):
            if k not in skip:
                by_reading.setdefault(reading(u.key), ([], []))[side].append(k)
    for si, tj in by_reading.values():
        if len(si) == 1 and len(tj) == 1 and S[si[0]].kind == T[tj[0]].kind:
            maps = unit_mappings(S[si[0]], T[tj[0]], last_c[si[0]])
            if maps is not None:
                out[tj[0]] = (si[0], maps, False)
    return out


def unique_pairs(src: list[Unit], tgt: list[Unit], rope: Optional[dict] = None) -> Alignment:
    """Without a usable order: layers of the same name, then a target layer that exactly one source layer
    fits when that source layer fits no other target layer."""
    S = [u for u in src if u.kind != "other"]
    T = [u for u in tgt if u.kind != "other"]
    if len(S) * len(T) > MAX_CELLS:
        from ..errors import MapspecError

        raise MapspecError(f"draft: {len(S)} source layers x {len(T)} target layers is more than it compares "
                           f"({MAX_CELLS:,} pairs)")
    matched = _same_names(S, T, [None] * len(S))
    taken = {i for i, _, _ in matched.values()}
    fits = {(i, j): unit_mappings(s, t) for i, s in enumerate(S) for j, t in enumerate(T)
            if s.kind == t.kind and i not in taken and j not in matched}
    fits = {k: v for k, v in fits.items() if v is not None}
    for j in range(len(T)):
        cands = [i for (i, jj) in fits if jj == j]
        if len(cands) == 1 and sum(1 for (i, _) in fits if i == cands[0]) == 1:
            matched[j] = (cands[0], fits[(cands[0], j)], False)
    return _finish(S, T, matched, [None] * len(S), rope)


def _finish(S: list, T: list, matched: dict, last_c: list, rope: Optional[dict] = None,
            opened: Optional[dict] = None) -> Alignment:
    """From the matched layers (target index -> (source index, mappings, tied)) to the alignment: what is
    not certain is left open with the reason, and the candidates are listed."""
    n = len(S)
    maps: list = []
    open_: list = []
    why: dict[int, str] = {}  # target unit -> why a match found is not taken
    notes: list = []
    opened = opened or {}
    _last_candidates(S, T, dict(matched), opened, last_c, matched)
    # A square 2-D weight fits as it is and transposed.  Layers of the same make (the same roles) whose
    # weights are not square tell which: all transposed (GPT-2's Conv1D against Linear) or all as they are.
    evidence: dict = {}
    for i, mps, tie in matched.values():
        for mp in mps:
            if mp.layout in ("transposed", "straight"):
                evidence.setdefault(frozenset(S[i].tensors), set()).add(mp.layout)
    for j, (i, mps, tie) in matched.items():
        if not any(mp.layout == "square" for mp in mps):
            continue
        seen = evidence.get(frozenset(S[i].tensors), set())
        if seen == {"transposed"}:
            matched[j] = (i, [mp._replace(apply=mp.apply + [{"transpose": [1, 0]}], layout="transposed")
                              if mp.layout == "square" else mp for mp in mps], tie)
            note = ("square 2-D weights transposed like every other weight of layers with the same roles "
                    "(their non-square weights all needed it)")
            if note not in notes:
                notes.append(note)
        elif "transposed" in seen:
            why[j] = f"{S[i].key} fits, but square: stored as is or transposed?"
    for j, (i, mps, tie) in matched.items():
        if tie:
            why.setdefault(j, "another source layer fits as well")
        elif mps and _rotary_layouts_differ(S[i].key, T[j].key):
            fam = rotary_family(T[j].key)
            heads = (rope or {}).get("k" if T[j].key.endswith(ROTARY[fam][0][1]) else "q")
            if heads is None:
                why[j] = (f"{S[i].key} fits, but Meta and HF order a q/k projection's rotary rows differently: "
                          f"rope_permute, with the head count from the model's config (no "
                          f"{' or '.join(c for _, c, _ in ROTARY.values())} beside the files)")
            else:
                matched[j] = (i, [mp._replace(apply=mp.apply + [{"rope_permute": {"heads": heads, "to": fam}}])
                                  for mp in mps], tie)
                note = (f"q/k projections: rope_permute to {fam}'s rotary row order, the head counts from "
                        f"{rope['file']}")
                if note not in notes:
                    notes.append(note)
    used = set()
    for j, u in enumerate(T):
        if j in matched and j not in why:
            maps += matched[j][1]
            used.add(matched[j][0])
    for j, u in enumerate(T):
        if j in opened:
            open_.append((u, [S[i].key for i in opened[j][0]], opened[j][1]))
        elif j not in matched or j in why:
            cands = [S[i].key for i in range(n) if i not in used and S[i].kind == u.kind
                     and unit_mappings(S[i], u, last_c[i]) is not None][:5]
            open_.append((u, cands, why.get(j, "")))
    unknown = sorted({u.fmt for j, (i, mps, tie) in matched.items() if j not in why and S[i].kind == "bn"
                      for u in (S[i], T[j]) if _eps(u) is None})
    notes += [f"{fmt} weights do not say a BatchNorm's eps: the draft assumes both sides use the same one; check "
              f"the model's (Keras defaults to 1e-3, Caffe and torch to 1e-5)" for fmt in unknown]
    return Alignment(maps, open_, notes)


def _last_candidates(S: list, T: list, taken: dict, opened: dict, last_c: list, matched: dict) -> None:
    """Pair a target layer left unpaired with the one source layer left that fits it, when that source layer
    fits no other target layer left (shapes alone decide: one candidate)."""
    read: set = set()
    for _, mps, _ in taken.values():
        for mp in mps:
            stack = [mp.source, mp.apply]
            while stack:
                v = stack.pop()
                if isinstance(v, str):
                    read.add(v)
                elif isinstance(v, (list, tuple)):
                    stack += list(v)
                elif isinstance(v, dict):
                    stack += list(v.values())
    held = {i for cands, _ in opened.values() for i in cands}
    free_s = [i for i, u in enumerate(S) if i not in held and u.kind != "other"
              and not any(t.name in read for t in u.tensors.values())]
    free_t = [j for j in range(len(T)) if j not in matched and j not in opened]
    fit = {(i, j): unit_mappings(S[i], T[j], last_c[i]) for i in free_s for j in free_t if S[i].kind == T[j].kind}
    fit = {k: v for k, v in fit.items() if v is not None}
    for j in free_t:
        cands = [i for (i, jj) in fit if jj == j]
        if len(cands) == 1 and sum(1 for (i, _) in fit if i == cands[0]) == 1:
            matched[j] = (cands[0], fit[(cands[0], j)], False)


MAX_CELLS = 16_000_000  # layers x layers aligned (a few seconds, ~150 MB); beyond it draft refuses


def align(src: list[Unit], tgt: list[Unit], rope: Optional[dict] = None, topologies: tuple = (None, None)) -> Alignment:
    S = [u for u in src if u.kind != "other"]
    T = [u for u in tgt if u.kind != "other"]
    n, m = len(S), len(T)
    if n * m > MAX_CELLS:
        from ..errors import MapspecError

        raise MapspecError(f"draft: {n} source layers x {m} target layers is more than it aligns "
                           f"({MAX_CELLS:,} pairs); draft a spec for a part of the model first")
    # channels of the last conv before each source unit (for the first fc after it)
    last_c, prev = [], None
    for u in S:
        last_c.append(prev)
        if u.kind == "w" and len(u.tensors.get("weight", ())) and len(u.shape("weight")) == 4:
            _, canon = _to_canon(u, "weight")
            prev = canon[0]
        elif u.kind == "w":
            prev = None
    # The same layer name on both sides is taken as it is (when the layers fit); the rest is aligned in order.
    S_all, T_all, last_c_all = S, T, last_c
    fixed = {j: (i, mps) for j, (i, mps, _) in _same_names(S, T, last_c).items()}
    taken_s = {i for i, _ in fixed.values()}
    Si = [i for i in range(len(S)) if i not in taken_s]
    Tj = [j for j in range(len(T)) if j not in fixed]
    S, T, last_c = [S_all[i] for i in Si], [T_all[j] for j in Tj], [last_c[i] for i in Si]
    n, m = len(S), len(T)
    cache: dict = {}

    def pair(i: int, j: int):
        key = (i, j)
        if key not in cache:
            maps = unit_mappings(S[i], T[j], last_c[i])
            cache[key] = None if maps is None else (maps, 1000 * len(maps) + 10 * _used(maps)
                                                    - 500 * bool(set(S[i].tensors) - set(T[j].tensors))
                                                    + _similarity(S[i].key, T[j].key))
        return cache[key]

    groups = [int(u.attrs.get("group", 1) or 1) if u.kind == "w" else 1 for u in S]

    def split_pair(i: int, j: int, g: int):
        key = (i, j, g)
        if key not in cache:
            ts = T[j:j + g]
            maps = split_mappings(S[i], ts, last_c[i]) if all(t.kind == "w" for t in ts) else None
            cache[key] = None if maps is None else (maps, 1000 * sum(1 + len(m.also) for m in maps)
                                                    + 10 * _used(maps) + _similarity(S[i].key, ts[0].key))
        return cache[key]

    def fold_pair(i: int, j: int):  # source units i (conv/fc) and i + 1 (BatchNorm) -> target unit j
        key = ("fold", i, j)
        if key not in cache:
            maps = fold_mappings(S[i], S[i + 1], T[j]) if i + 1 < n else None
            cache[key] = None if maps is None else (maps, 1000 * len(maps) + 10 * _used(maps)
                                                    + _similarity(S[i].key, T[j].key))
        return cache[key]

    f = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        fi, fp = f[i], f[i - 1]
        g = groups[i - 1]
        for j in range(1, m + 1):
            best = max(fp[j], fi[j - 1])
            # cheap filter before the full check: the same kind
            if S[i - 1].kind == T[j - 1].kind:
                p = pair(i - 1, j - 1)
                if p is not None:
                    best = max(best, fp[j - 1] + p[1])
                if g > 1 and j >= g:
                    p = split_pair(i - 1, j - g, g)
                    if p is not None:
                        best = max(best, fp[j - g] + p[1])
            if i >= 2 and S[i - 1].kind == "bn" and T[j - 1].kind == "w":
                p = fold_pair(i - 2, j - 1)
                if p is not None:
                    best = max(best, f[i - 2][j - 1] + p[1])
            fi[j] = best
    i, j = n, m
    matched: dict[int, tuple] = {}  # target unit -> (source unit, mappings, ambiguous)
    plain: set = set()  # target units paired one to one or folded (order may have decided them)
    while i > 0 and j > 0:
        g = groups[i - 1]
        sp = split_pair(i - 1, j - g, g) if g > 1 and j >= g and S[i - 1].kind == T[j - 1].kind else None
        p = pair(i - 1, j - 1) if S[i - 1].kind == T[j - 1].kind else None
        fp_ = fold_pair(i - 2, j - 1) if i >= 2 and S[i - 1].kind == "bn" and T[j - 1].kind == "w" else None
        if fp_ is not None and f[i][j] == f[i - 2][j - 1] + fp_[1]:
            matched[j - 1] = (i - 2, fp_[0], f[i][j] in (f[i - 1][j], f[i][j - 1]))
            plain.add(Tj[j - 1])
            i, j = i - 2, j - 1
        elif sp is not None and f[i][j] == f[i - 1][j - g] + sp[1]:
            tie = f[i][j] in (f[i - 1][j], f[i][j - 1])
            matched[j - g] = (i - 1, sp[0], tie)
            for k in range(j - g + 1, j):
                matched[k] = (i - 1, [], tie)
            i, j = i - 1, j - g
        elif p is not None and f[i][j] == f[i - 1][j - 1] + p[1]:
            matched[j - 1] = (i - 1, p[0], f[i][j] in (f[i - 1][j], f[i][j - 1]))
            plain.add(Tj[j - 1])
            i, j = i - 1, j - 1
        elif f[i][j] == f[i - 1][j]:
            i -= 1
        else:
            j -= 1
    matched = {Tj[j]: (Si[i], mps, tie) for j, (i, mps, tie) in matched.items()}
    matched.update({j: (i, mps, False) for j, (i, mps) in fixed.items()})
    fit_cache: dict = {}

    def fits(i: int, j: int):  # as one layer, or with the BatchNorm after it folded in
        if (i, j) not in fit_cache:
            maps = unit_mappings(S_all[i], T_all[j], last_c_all[i])
            if maps is None and i + 1 < len(S_all) and S_all[i + 1].kind == "bn":
                maps = fold_mappings(S_all[i], S_all[i + 1], T_all[j])
            fit_cache[(i, j)] = maps
        return fit_cache[(i, j)]

    opened = settle(S_all, T_all, matched, {j for j in plain if not matched[j][2]}, fits, _similarity,
                    *topologies)
    return _finish(S_all, T_all, matched, last_c_all, rope, opened)


def _rotary_layouts_differ(a: str, b: str) -> bool:
    """Meta's and Hugging Face's q/k projections pair the rotary rows differently (interleaved vs halves),
    which shapes cannot show (:data:`.names.ROTARY`)."""
    fa, fb = rotary_family(a), rotary_family(b)
    return fa is not None and fb is not None and fa != fb
