"""``mapspec verify``: both sides of a conversion run and compared, with the per-layer report."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from ..errors import escape
from ..options import parse_pairs, parse_shape
from .flags import _add_allow_path, _add_force, _add_progress, _add_vars, Command
from .show import _shape, _table


def _layer_rows(v, limit: int = 16) -> tuple[list, int]:
    """The layer table for one screen: the first rows and those around the first divergence."""
    layers = v.layers
    keep = set(range(min(4, len(layers))))
    if v.first_bad is not None:
        i = layers.index(v.first_bad)
        keep |= set(range(max(0, i - 3), min(len(layers), i + 3)))
    keep |= set(range(len(layers)))if len(layers) <= limit else set()
    rows, last = [], -1
    for i in sorted(keep):
        if i > last + 1:
            rows.append(["...", "", "", "", "", ""])
        l = layers[i]
        rows.append([escape(l.source), escape(l.target), "-" if l.cmp is None else f"{l.cmp.max_abs:.3g}",
                     "-" if l.cmp is None else f"{l.cmp.max_rel:.3g}", "-" if l.cmp is None else f"{l.cmp.cosine:.7f}",
                     "<-- first divergence" if l is v.first_bad else l.note])
        last = i
    return rows, len(layers) - len(keep)


def cmd_verify(args, out: TextIO, err: TextIO) -> int:
    from ..progress import byte_bar, wanted
    from ..language.load import load_spec
    from ..language.family import resolve
    from ..verify import run_verify

    spec = load_spec(resolve(args.spec, args.source), args.allow_path or ())
    if args.report:
        from ..verify.report import check_report_path

        check_report_path(args.report, args.force, [
            ("source", args.source), ("converted", args.converted), ("graph", args.source_graph),
            ("graph", args.target_graph), ("config", args.source_config), ("config", args.target_config),
            ("vars", args.vars_file), ("input", args.input)], spec)
    bars = (lambda desc, total, unit: byte_bar(err, total, desc, args.progress, unit)) \
        if wanted(args.progress, err) else None
    v = run_verify(spec, args.source, args.converted, source_graph=args.source_graph, target_graph=args.target_graph,
                   source_model=args.source_model, target_model=args.target_model,
                   source_config=args.source_config, target_config=args.target_config, input=args.input,
                   input_shape=parse_shape(args.input_shape) if args.input_shape else None, seed=args.seed,
                   layers=args.layers or bool(args.report), atol=args.atol, cosine=args.cosine,
                   vars=parse_pairs(args.var, "--var"),
                   vars_file=args.vars_file, hidden_states=args.hidden_states, progress=bars)
    if args.report:
        from ..verify.report import write_report

        write_report(v, args.report, args.force, f"{args.spec}: {args.source} -> {args.converted}")
    if args.json:
        json.dump(v.to_json(), out, indent=1)
        print(file=out)
        return 0 if v.ok else 1
    if v.layers:
        rows, hidden = _layer_rows(v)
        _table(rows, out, ["source layer", "target layer", "max |a-b|", "rel", "cosine", ""])
        if hidden:
            print(f"({len(v.layers)} layers compared, {hidden} not shown: --json lists every one)", file=out)
        print(file=out)
    if v.layers_note:
        print(f"layers: none compared: {escape(v.layers_note)}", file=out)
    print(f"input: {v.input_desc}, shape {_shape(v.input_shape)}", file=out)
    for name, o in v.outputs:
        label = "output" if name == "output" else f"output ({escape(name)})"
        print(f"{label} {_shape(o.shape)}: max |a-b| {o.max_abs:.3g}, relative {o.max_rel:.3g}, "
              f"cosine {o.cosine:.9f}", file=out)
    if v.error:
        print(f"error: {v.error}", file=out)
    if v.first_bad is not None:
        print(f"first divergence: {escape(v.first_bad.source)} -> {escape(v.first_bad.target)}", file=out)
        for c in v.causes:
            print(f"  likely cause: {escape(c, keep_newlines=True)}", file=out)
    verdict = "PASS" if v.ok else "FAIL"
    print(f"{verdict} (max |a-b| <= {v.atol:g} and cosine >= {v.cosine:g})", file=out)
    return 0 if v.ok else 1


def _add_verify(p: argparse.ArgumentParser) -> None:
    from ..verify.metrics import ATOL, COSINE

    p.add_argument("spec", help="the spec used for the conversion (its verify: section says how to run both sides)")
    p.add_argument("--source", "-s", required=True, metavar="FILE", help="the original weights")
    p.add_argument("--converted", "-c", required=True, metavar="FILE", help="the converted weights (apply's output)")
    p.add_argument("--source-graph", help="the original graph (.prototxt / -symbol.json) if the spec does not say")
    p.add_argument("--target-graph", help="the converted model's graph, if the spec does not say")
    p.add_argument("--source-model", help="the original model: a registered factory (e.g. densenet121), or your own "
                                          "module:function or file.py:function returning a torch nn.Module or keras "
                                          "Model (overrides the spec's)")
    p.add_argument("--target-model", help="the converted model's factory, as --source-model")
    p.add_argument("--source-config", help="run the original as a transformers model built from this config.json "
                                           "(without it: the config.json beside the weights, if the spec says so)")
    p.add_argument("--target-config", help="the same for the converted model")
    p.add_argument("--input", "-i", help="an image (RGB, resized), a .npy array, tokens:ID,ID,..., "
                                         "random-tokens:LENGTH, or 'random' (default)")
    p.add_argument("--input-shape", type=lambda t: t,
                   help="e.g. 1,3,224,224 or 1x3x224x224 (default: the spec's verify.input.shape)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    _add_vars(p)
    _add_allow_path(p)
    p.add_argument("--hidden-states", action="store_true", help="transformers models on both sides: compare every "
                                                                "hidden state too, not just the logits")
    p.add_argument("--layers", action="store_true", help="compare intermediate activations and name the first "
                                                         "layer that diverges")
    p.add_argument("--report", metavar="FILE.html", help="also draw the per-layer error (max abs, relative, cosine) "
                   "along the network, first divergence marked, as a self-contained HTML page (implies --layers)")
    _add_force(p)
    p.add_argument("--atol", type=float,
                   help=f"largest allowed max |a-b| of the outputs (default: spec, else {ATOL:g})")
    p.add_argument("--cosine", type=float, help=f"smallest allowed cosine similarity (default: spec, else {COSINE:g})")
    _add_progress(p)
    p.add_argument("--json", action="store_true")


VERIFY = Command("verify", "prove a conversion: run the original and the converted model and compare",
                 _add_verify, cmd_verify)
