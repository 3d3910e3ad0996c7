"""What the draft leaves to a person: TODO texts, and mappings held back because a source tensor is left over.

A TODO is written as a rule (``name: TODO ...`` with a ``from`` that matches nothing), so that the
draft plans only once it is resolved.  Three kinds: a target layer left open (its candidates named);
a source tensor left unused beside a mapped tensor of its layer (a bias the target layer has no
place for); the other unused source tensors, together.  A bias left over changes what the layer
computes: where the source graph shows a BatchNorm reading that layer alone, the bias belongs in
the BatchNorm's mean (``mean - bias``), so the draft holds that mean's mapping back and says so,
rather than map it without the bias.
"""

from __future__ import annotations

from typing import Optional

import yaml


def reads(maps: list) -> set:
    """Every source tensor name a set of mappings reads: each source and every name inside its transforms."""
    names: set = set()
    for m in maps:
        stack = [m.source, m.apply]
        while stack:
            v = stack.pop()
            if isinstance(v, str):
                names.add(v)
            elif isinstance(v, list):
                stack += v
            elif isinstance(v, dict):
                stack += list(v.values())
    return names


def hold_back(maps: list, su: list, st) -> tuple:
    """``(maps, held)``: ``held`` maps a left-over bias to ``(its layer, the BatchNorm reading it, the mean's
    mapping taken out of maps)``."""
    read = reads(maps)
    keys = {u.key for u in su} | {u.scale_op for u in su if u.scale_op}
    held: dict = {}
    for u in su:
        bias, weight = u.tensors.get("bias"), u.tensors.get("weight")
        if u.kind != "w" or bias is None or weight is None or bias.name in read or weight.name not in read:
            continue
        if st is None:
            continue
        readers = [v for v in su if v.kind == "bn" and "mean" in v.tensors and st.feeders(v.key, keys) == {u.key}]
        mean = [m for v in readers[:1] for m in maps if m.source == v.tensors["mean"].name and m.target]
        if len(readers) == 1 and len(mean) == 1:
            held[bias.name] = (u, readers[0], mean[0])
    out = [m for m in maps if not any(m is h[2] for h in held.values())]
    return out, held


def _flow(obj) -> str:
    return yaml.safe_dump(obj, default_flow_style=True, width=1 << 16, sort_keys=False).strip()


def todo_texts(al, su: list, maps: list, unused: list, held: Optional[dict] = None) -> list:
    """``[(key, text)]`` in the order the draft lists them."""
    held = held or {}
    out = []
    for u, cands, why in al.open:
        names = ", ".join(i.name for i in u.tensors.values())
        out.append((u.key, f"TODO {u.key} ({names}): " + (why + "; " if why else "")
                    + (f"candidates {', '.join(cands)}" if cands else "no source layer of this kind and shape left")))
    target_of = {m.source: m.target for m in maps if m.target}
    named = {c for _, cands, _ in al.open for c in cands}
    # a candidate's tensors, and those of the BatchNorm after a candidate without a bias (folded in with it)
    asked = {i.name for k, u in enumerate(su) for i in u.tensors.values() if u.key in named or (
        u.kind == "bn" and k and su[k - 1].key in named and "bias" not in su[k - 1].tensors)}
    explained = {h[2].source for h in held.values()}
    rest = []
    for n in unused:
        if n in asked or n in explained:  # named by another TODO
            continue
        u = next((u for u in su if any(i.name == n for i in u.tensors.values())), None)
        role = next((r for r, i in u.tensors.items() if i.name == n), None) if u is not None else None
        mapped = [(r, target_of[i.name]) for r, i in u.tensors.items() if i.name in target_of] if u else []
        if not mapped:
            rest.append(n)
            continue
        done = ", ".join(f"its {r} maps to {t}" for r, t in mapped)
        if n in held:
            _, bn, m = held[n]
            rule = {"from": m.source, "to": m.target, "apply": m.apply + [{"sub": {"by": n}}]}
            out.append((n, f"TODO {n} (the {role} of {u.key}) is not used, while {done}, a layer without {role}: "
                           f"{bn.key} reads {u.key}'s output, so the {role} belongs in its mean: {m.target} is left "
                           f"open; write it as {_flow(rule)}"))
        else:
            out.append((n, f"TODO {n} (the {role} of {u.key}) is not used, while {done}, a layer without {role}: "
                           f"fold it into the layer that reads {u.key}'s output (a BatchNorm: subtract it from the "
                           f"mean) or map it; dropping it changes the output"))
    if rest:
        shown = ", ".join(rest[:20]) + (f", ... ({len(rest)} in all)" if len(rest) > 20 else "")
        out.append(("unused", f"TODO source tensors not used: {shown}; map, drop or ignore each"))
    return out
