"""``mapspec graph SRC --to caffe|mxnet -o OUT``: read a network graph, convert it, write it atomically.

The source's framework comes from its name (``-symbol.json``/``.json``: MXNet; ``.prototxt``,
``.pbtxt``: Caffe).  ``--emit-spec`` writes the weight spec beside (see :mod:`.spec`).  Every
output is checked for existence first (``force`` to overwrite) and written through
:func:`~mapspec.files.atomic_output`: a failure leaves nothing behind.
"""

from __future__ import annotations

import os
from typing import Optional

from ...errors import MapspecError, UsageError
from ...files import atomic_output
from .common import Converted

TARGETS = ("caffe", "mxnet")


def source_framework(path: str) -> str:
    low = path.lower()
    if low.endswith(".json"):
        return "mxnet"
    if low.endswith((".prototxt", ".pbtxt")):
        return "caffe"
    raise UsageError(f"{path}: cannot tell the framework from the name: give an MXNet -symbol.json or a Caffe "
                     f".prototxt")


def _shape(text: Optional[str], path: str, name: str = "data") -> Optional[tuple]:
    if text is None:
        return None
    from ..caffe.net import as_shape

    return as_shape(path, name, text)


def convert_file(src: str, to: str, input_shape: Optional[str] = None) -> Converted:
    """The conversion of the graph file ``src`` into framework ``to``."""
    if to not in TARGETS:
        raise UsageError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    frm = source_framework(src)
    if frm == to:
        raise UsageError(f"{src} is already a {to} graph; --to names the other framework")
    if frm == "mxnet":
        from ..mxnet.graph import load_symbol, resolve_input_shapes
        from .mxnet_to_caffe import convert

        graph = load_symbol(src)
        return convert(graph, resolve_input_shapes(graph, input_shape=_shape(input_shape, src)))
    from ..caffe.net import load_net_with_unknown
    from .caffe_to_mxnet import convert as convert_caffe

    net, unknown = load_net_with_unknown(src)
    if unknown:
        u = unknown[0]
        raise MapspecError(f"{src}:{u.line}: {u.path} is not a Caffe field mapspec knows (a fork's extension?): "
                           f"the graph cannot be converted without knowing what it does")
    return convert_caffe(net, src, input_shape=_shape(input_shape, src))


def graph(src: str, to: str, out: str, input_shape: Optional[str] = None, emit_spec: Optional[str] = None,
          force: bool = False) -> Converted:
    """Convert ``src`` and write the graph to ``out`` (and the weight spec to ``emit_spec``)."""
    for p in (out,) + ((emit_spec,) if emit_spec else ()):
        if os.path.exists(p) and not force:
            raise MapspecError(f"{p}: output exists; pass --force to overwrite it")
    if emit_spec and os.path.abspath(emit_spec) == os.path.abspath(out):
        raise UsageError(f"{out}: the graph and the spec cannot be the same file")
    conv = convert_file(src, to, input_shape)
    spec_text = None
    if emit_spec:
        from .spec import make_spec

        spec_text = make_spec(conv, src, out, emit_spec)
    with atomic_output(out, force=force) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            if conv.target_format == "caffe":
                f.write(f"# {os.path.basename(src)} converted by mapspec graph\n")
            f.write(conv.text)
        if spec_text is not None:
            with atomic_output(emit_spec, force=force, what="spec") as tmp_spec:
                with open(tmp_spec, "w", encoding="utf-8") as f:
                    f.write(spec_text)
    return conv


__all__ = ["graph", "convert_file", "source_framework", "TARGETS"]
