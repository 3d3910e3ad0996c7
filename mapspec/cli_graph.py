"""The ``mapspec graph`` sub-command: argument parsing and the report (the work is in
:mod:`mapspec.graphs.convert.command`)."""

from __future__ import annotations

from typing import TextIO

from .errors import escape


def cmd_graph(args, out: TextIO, err: TextIO) -> int:
    from .graphs.convert.command import graph

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


def add_graph_command(sub, _add_output, _add_force) -> None:
    """``mapspec graph``'s parser; the shared --output and --force flags come from :mod:`.cli`, which calls this
    (so that this module never imports it back)."""
    p = sub.add_parser("graph", help="convert a network graph: MXNet -symbol.json <-> Caffe .prototxt")
    p.add_argument("source", help="an MXNet -symbol.json or a Caffe .prototxt")
    p.add_argument("--to", required=True, choices=("caffe", "mxnet"), help="the framework to write")
    _add_output(p, "the graph to write (required): a .prototxt for --to caffe, a -symbol.json for --to mxnet")
    p.add_argument("--input-shape", metavar="N,C,H,W", help="the shape of the (single) data input, when the source "
                                                            "does not record it (e.g. 1,3,112,112)")
    p.add_argument("--emit-spec", metavar="SPEC.yaml", help="also write the weight spec for the written graph "
                                                            "(one explicit rule per source tensor)")
    _add_force(p)
    p.set_defaults(func=cmd_graph, output_required=True)
