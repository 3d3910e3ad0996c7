"""The tools on top: ``fold-bn``, ``graph`` and ``example``."""

from __future__ import annotations

import argparse
from typing import TextIO

from ..errors import escape
from .flags import Command, _add_force, _add_output, _add_progress


def cmd_fold_bn(args, out: TextIO, err: TextIO) -> int:
    from .foldbn import fold_bn
    from ..progress import plan_progress

    prefix = args.output
    for suffix in (".caffemodel", ".prototxt"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    r = fold_bn(args.prototxt, args.caffemodel, prefix, force=args.force, sync=args.sync, emit_spec=args.emit_spec,
                verify=args.verify, seed=args.seed, progress=lambda p: plan_progress(err, p, "fold-bn", args.progress))
    for c in r.chains:
        parts = [c.conv, c.bn] + ([c.scale] if c.scale else [])
        print(f"folded {escape(' -> '.join(parts))}", file=out)
    for n in r.notes:
        print(f"note: {escape(n, keep_newlines=True)}", file=out)
    print(f"wrote {r.prototxt} and {r.caffemodel}: {len(r.chains)} chains folded"
          + (f"; spec in {args.emit_spec}" if args.emit_spec else ""), file=out)
    if r.verify is not None:
        from ..verify.metrics import ATOL, COSINE

        ok = True
        for name, c in r.verify.items():
            if "(worst of" in name:  # intermediate activations can be large: judged by relative error
                good = bool(c.max_rel <= ATOL and c.cosine >= COSINE)
                crit = f"relative {c.max_rel:.3g}"
            else:  # outputs: absolute, or relative to their magnitude when they are large
                good = bool((c.max_abs <= args.atol or c.max_rel <= 1e-5) and c.cosine >= COSINE)
                crit = f"max |a-b| {c.max_abs:.3g}, relative {c.max_rel:.3g}"
            ok &= good
            print(f"verify {name}: {crit}, cosine {c.cosine:.9f} ({'PASS' if good else 'FAIL'})", file=out)
        return 0 if ok else 1
    return 0


def cmd_example(args, out: TextIO, err: TextIO) -> int:
    from ..example import example_args, run_example

    name, directory = example_args(args.name, args.directory)
    return run_example(name, directory, out, err, force=args.force, sync=args.sync, run_command=args.run_command)


def cmd_graph(args, out: TextIO, err: TextIO) -> int:
    from ..frameworks.convert.command import graph

    conv = graph(args.source, args.to, args.output, input_shape=args.input_shape, emit_spec=args.emit_spec,
                 force=args.force)
    for n in conv.notes:
        print(f"note: {escape(n, keep_newlines=True)}", file=out)
    print(f"wrote {escape(args.output)} ({conv.target_format}; outputs {escape(', '.join(conv.outputs))}; "
          f"{len(conv.rules)} weight tensors)" + (f"; spec in {escape(args.emit_spec)}" if args.emit_spec else ""),
          file=out)
    if args.emit_spec:
        weights = ".params" if conv.source_format == "mxnet" else ".caffemodel"
        print(f"convert the weights with: mapspec apply {escape(args.emit_spec)} -s WEIGHTS{weights} -o OUT", file=out)
    return 0



def _add_fold_bn(p: argparse.ArgumentParser) -> None:
    from ..verify.metrics import ATOL, COSINE

    p.add_argument("prototxt")
    p.add_argument("caffemodel")
    _add_output(p, "output prefix (required): writes PREFIX.prototxt and PREFIX.caffemodel", "PREFIX")
    _add_force(p)
    p.add_argument("--emit-spec", help="also write the generated spec (one explicit rule per chain) here")
    _add_progress(p)
    p.add_argument("--verify", action="store_true",
                   help="run both nets on a seeded random input and compare: outputs within --atol (or 1e-5 "
                        f"relative), every shared layer within {ATOL:g} relative, cosine >= {COSINE:g}")
    p.add_argument("--atol", type=float, default=ATOL)
    p.add_argument("--seed", type=int, default=0)


def _add_example(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="densenet (a Caffe DenseNet-121 -> torchvision; the default)")
    p.add_argument("directory", nargs="?", help="where to write the files (default: example/); "
                                                "`mapspec example DIR` works too")
    _add_force(p)


def _add_graph(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="an MXNet -symbol.json or a Caffe .prototxt")
    p.add_argument("--to", required=True, choices=("caffe", "mxnet"), help="the framework to write")
    _add_output(p, "the graph to write (required): a .prototxt for --to caffe, a -symbol.json for --to mxnet")
    p.add_argument("--input-shape", metavar="N,C,H,W", help="the shape of the (single) data input, when the source "
                                                            "does not record it (e.g. 1,3,112,112)")
    p.add_argument("--emit-spec", metavar="SPEC.yaml", help="also write the weight spec for the written graph "
                                                            "(one explicit rule per source tensor)")
    _add_force(p)


FOLD_BN = Command("fold-bn", "fold Convolution -> BatchNorm -> Scale chains of a Caffe net for deployment",
                  _add_fold_bn, cmd_fold_bn, output_required=True)
EXAMPLE = Command("example", "make a model, convert it with a shipped spec and verify the result",
                  _add_example, cmd_example)
GRAPH = Command("graph", "convert a network graph: MXNet -symbol.json <-> Caffe .prototxt", _add_graph, cmd_graph,
                output_required=True)
