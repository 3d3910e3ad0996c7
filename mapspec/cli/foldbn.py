"""``mapspec fold-bn``: fold Convolution -> BatchNorm (-> Scale) chains of a Caffe net into the convolution.

The chains, the spec and the folded net come from :mod:`mapspec.frameworks.caffe.foldbn`.  This
pipeline writes the folded prototxt and the spec (``--emit-spec`` saves it, to read or reuse) and
applies the spec through the normal engine, with the folded prototxt as the target template, so
every shape and every blob is checked; ``--verify`` runs both nets on one seeded input.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import MapspecError
from ..files import atomic_output
from ..frameworks.caffe.foldbn import find_chains, fold_net, make_spec


MAX_UNKNOWN_NOTES = 10


def _unknown_notes(prototxt: str, unknown: list) -> list[str]:
    """Notes for the prototxt fields mapspec's schema skipped: the folded prototxt will not have them."""
    notes = [f"{prototxt}:{u.line}: {u.path} is not a Caffe field mapspec knows (a fork's extension?); "
             f"it is left out of the folded prototxt, add it back by hand if your Caffe needs it"
             for u in unknown[:MAX_UNKNOWN_NOTES]]
    if len(unknown) > MAX_UNKNOWN_NOTES:
        notes.append(f"{prototxt}: {len(unknown) - MAX_UNKNOWN_NOTES} more unknown fields left out as well")
    return notes


@dataclass
class FoldResult:
    prototxt: str
    caffemodel: str
    chains: list
    notes: list
    spec_text: str
    verify: Optional[dict] = None


def fold_bn(prototxt: str, caffemodel: str, out_prefix: str, force: bool = False, emit_spec: Optional[str] = None,
            verify: bool = False, seed: int = 0, progress=None, sync: bool = True) -> FoldResult:
    """``progress``: optional ``plan -> context manager`` yielding ``engine.execute``'s progress callback.
    ``sync``: fsync the outputs before they are put in place (see :func:`mapspec.files.atomic_output`)."""
    from .. import engine
    from ..formats import open_checkpoint
    from ..frameworks.caffe.net import dump, load_net_with_unknown
    from ..guard import refuse_inputs
    from ..language.load import load_spec

    net, unknown = load_net_with_unknown(prototxt)
    chains, notes = find_chains(net)
    notes += _unknown_notes(prototxt, unknown)
    if not chains:
        raise MapspecError(f"{prototxt}: no Convolution -> BatchNorm chain to fold"
                           + (f" ({'; '.join(notes)})" if notes else ""))
    spec_text = make_spec(chains)
    folded = fold_net(net, chains)
    out_proto, out_model = out_prefix + ".prototxt", out_prefix + ".caffemodel"
    for p in (out_proto, out_model) + ((emit_spec,) if emit_spec else ()):
        if os.path.exists(p) and not force:
            raise MapspecError(f"{p}: output exists; pass --force to overwrite it")
    refuse_inputs([("output", out_proto), ("output", out_model)] + ([("--emit-spec", emit_spec)] if emit_spec else []),
                  [("prototxt", prototxt), ("caffemodel", caffemodel)])
    with atomic_output(out_proto, force=force, sync=sync) as tmp_proto:
        with open(tmp_proto, "w", encoding="utf-8") as f:
            f.write(f"# {os.path.basename(prototxt)} with {len(chains)} BatchNorm/Scale chains folded by mapspec "
                    f"fold-bn\n")
            f.write(dump(folded))
        spec_path = emit_spec or (tmp_proto + ".spec.yaml")
        try:
            with atomic_output(spec_path, force=True, sync=sync and bool(emit_spec)) as tmp_spec:
                with open(tmp_spec, "w", encoding="utf-8") as f:
                    f.write(spec_text)
            spec = load_spec(spec_path)
            with open_checkpoint(caffemodel, format="caffe") as src, open_checkpoint(tmp_proto, format="prototxt") \
                    as template:
                p = engine.plan(spec, src, template=template, target_format="caffe")
                with progress(p) if progress else contextlib.nullcontext() as callback:
                    engine.execute(p, out_model, force=force, progress=callback, sync=sync)
        finally:
            if not emit_spec and os.path.exists(spec_path):
                os.unlink(spec_path)
    result = FoldResult(out_proto, out_model, chains, notes, spec_text)
    if verify:
        result.verify = _verify(prototxt, caffemodel, out_proto, out_model, seed, chains)
    return result


def _verify(proto_a: str, model_a: str, proto_b: str, model_b: str, seed: int, chains) -> dict:
    """Both nets on one seeded input: the outputs, and every layer both nets still have (the folded
    convolutions excepted: they now produce what their Scale produced)."""
    from ..formats import open_checkpoint
    from ..frameworks.caffe.executor import CaffeExecutor
    from ..verify import compare

    folded = {c.conv for c in chains} | {c.bn for c in chains} | {c.scale for c in chains if c.scale}
    with open_checkpoint(model_a, format="caffe") as wa, open_checkpoint(model_b, format="caffe") as wb:
        ea, eb = CaffeExecutor(proto_a, wa), CaffeExecutor(proto_b, wb)
        rng = np.random.default_rng(seed)
        inputs = {k: rng.uniform(-1, 1, size=tuple(v)).astype(np.float32) for k, v in ea.input_shapes.items()}
        ya, yb = ea.run(inputs, capture=True), eb.run(inputs, capture=True)
    out = {}
    for k in ea.output_names:
        if k in yb:
            out[k] = compare(ya[k], yb[k])
    worst = None
    for k in ya:
        if k in yb and k not in folded and k not in out:
            c = compare(ya[k], yb[k])
            if worst is None or c.max_rel > worst[1].max_rel:
                worst = (k, c)
    if worst is not None:
        out[f"{worst[0]} (worst of {sum(1 for k in ya if k in yb and k not in folded)} layers)"] = worst[1]
    return out
