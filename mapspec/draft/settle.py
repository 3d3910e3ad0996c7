"""Pairings that order alone decided, settled by the graph or by names, or left open.

The graph-order alignment (:func:`.match.align`) pairs layers of the same shape by their place in
the files.  That is a fact only where the graph orders the layers: a chain of convolutions runs in
one order, but two parallel branches (a two-tower net, a ResNet block's shortcut beside its last
convolution) are listed in an order that says nothing about which is which.  So a pairing whose
source could be swapped with another fitting source that the graph does not order against it (on
either side: the source's or the template's graph; with no graph, any) is not taken as it is.  In
each such group, in template order:

1. the graph: where the layers a target reads from are paired (the template's graph; without one, the
   layer listed just before it in the same module, a module's order standing for its chain), the one
   candidate that reads from their sources directly;
2. names: a target and a source that are each other's single best by name similarity;
3. the one candidate left that fits a target and no other target of the group.

What remains, while two or more candidates are left, is open: a TODO naming the candidates.
"""

from __future__ import annotations

from typing import Optional

from .graph import Topology

WHY = "shapes and order alone cannot tell (the graph does not order the candidates; names do not decide)"


def settle(S: list, T: list, matched: dict, plain: set, fits, similarity, st: Optional[Topology],
           tt: Optional[Topology]) -> dict:
    """Unsettle and settle ``matched`` (target index -> (source index, mappings, tie)) in place; returns the
    targets left open: target index -> (candidate source indices, why).  ``plain``: the target indices paired
    one to one or folded by the alignment (not split, not fixed by name); ``fits(i, j)``: the mappings or None."""
    src_of = {j: matched[j][0] for j in plain}
    tgt_of = {i: j for j, i in src_of.items()}
    busy = {v[0] for j, v in matched.items() if j not in plain}  # sources taken by name, fold or split

    def ordered(i: int, i2: int, j: int, j2: Optional[int]) -> bool:
        return bool((st is not None and st.ordered(S[i].key, S[i2].key))
                    or (tt is not None and j2 is not None and tt.ordered(T[j].key, T[j2].key)))

    parent = {j: j for j in plain}

    def find(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    extra: dict[int, set] = {}  # group root -> unpaired sources that are candidates
    for j in sorted(plain):
        i = src_of[j]
        for i2, s2 in enumerate(S):
            if i2 == i or i2 in busy or s2.kind != T[j].kind:
                continue
            j2 = tgt_of.get(i2)
            if ordered(i, i2, j, j2) or fits(i2, j) is None:
                continue
            if j2 is None:
                extra.setdefault(j, set()).add(i2)
            elif fits(i, j2) is not None:
                parent[find(j2)] = find(j)
    groups: dict[int, list] = {}
    for j in sorted(plain):
        groups.setdefault(find(j), []).append(j)
    opened: dict[int, tuple] = {}
    for root in sorted(groups, key=lambda r: min(groups[r])):
        js = groups[root]
        srcs = {src_of[j] for j in js} | {i for j in js for i in extra.get(j, ())}
        if len(srcs) < 2 and len(js) < 2:
            continue
        for j in js:
            del matched[j]
        cand = {j: [i for i in sorted(srcs) if fits(i, j) is not None] for j in js}
        todo = list(js)
        while True:
            decided = (_by_graph(S, T, todo, cand, matched, st, tt) or _by_names(S, T, todo, cand, similarity)
                       or _last_ones(todo, cand))
            applied = 0
            for j, i in decided:
                if j not in todo or i not in cand[j]:
                    continue
                applied += 1
                matched[j] = (i, fits(i, j), False)
                todo.remove(j)
                for k in todo:
                    if i in cand[k]:
                        cand[k].remove(i)
            if not applied:
                break
        for j in todo:
            opened[j] = (cand[j], WHY)
    return opened


def _by_graph(S: list, T: list, todo: list, cand: dict, matched: dict, st: Optional[Topology],
              tt: Optional[Topology]) -> list:
    """Targets whose input layers are paired and which exactly one candidate reads from directly (in the source
    graph).  A target's input layers: the template graph's, where it has one; else the layer listed just before it
    in the same module (``layer1.0.bn2`` before ``layer1.0.conv3``: a module's order standing for its chain)."""
    if st is None:
        return []
    keys = {u.key for u in S} | {u.scale_op for u in S if u.scale_op}
    tindex = {u.key: k for k, u in enumerate(T)} | {u.scale_op: k for k, u in enumerate(T) if u.scale_op}
    out, taken = [], set()
    for j in sorted(todo):
        if tt is not None:
            ins = [tindex[k] for k in tt.feeders(T[j].key, set(tindex))]
        else:
            ins = [j - 1] if j and _module(T[j - 1].key) == _module(T[j].key) else []
        if not ins or not cand[j] or any(k not in matched for k in ins):
            continue
        before: set = set()
        for k in ins:
            i, mps, _ = matched[k]
            before |= {S[i].key, S[i].scale_op}
            if any("fold_bn" in c for m in mps for c in m.apply if isinstance(c, dict)):  # its BatchNorm too
                before |= {S[i + 1].key, S[i + 1].scale_op}
        hits = [i for i in cand[j] if before & st.feeders(S[i].key, keys)]
        if len(hits) == 1 and hits[0] not in taken:
            out.append((j, hits[0]))
            taken.add(hits[0])
    return out


def _module(key: str) -> str:
    """The module a torch-style name's layer sits in (``layer1.0`` for ``layer1.0.conv3``)."""
    return key.rsplit(".", 1)[0] if "." in key else ""


def _by_names(S: list, T: list, todo: list, cand: dict, similarity) -> list:
    """A target and a source that are each other's single best by name."""
    sims = {(j, i): similarity(S[i].key, T[j].key) for j in todo for i in cand[j]}
    out = []
    for j in todo:
        if len(cand[j]) < 2:
            continue
        best = max(cand[j], key=lambda i: sims[(j, i)])
        if sum(1 for i in cand[j] if sims[(j, i)] == sims[(j, best)]) != 1:
            continue
        rivals = [k for k in todo if best in cand[k]]
        top = max(sims[(k, best)] for k in rivals)
        if sims[(j, best)] == top and sum(1 for k in rivals if sims[(k, best)] == top) == 1:
            out.append((j, best))
    return out


def _last_ones(todo: list, cand: dict) -> list:
    """A target with one candidate left that fits no other target of the group."""
    return [(j, cand[j][0]) for j in todo if len(cand[j]) == 1
            and sum(1 for k in todo if cand[j][0] in cand[k]) == 1]
