"""Tensors grouped into units (a layer with roles: weight, bias, gamma, beta, mean, var, ...).

Each format names a layer's tensors its own way; this module reads the roles off the names
(and, for Caffe, off the layer type and blob index), merges a Caffe BatchNorm with the Scale
that follows it, and puts units in graph order (an MXNet checkpoint's own order is not: the
symbol's op order is used when the sibling ``-symbol.json`` is there).  Layouts: conv
weights are OIHW and fc weights (out, in) everywhere but Keras (HWIO, (in, out)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# name suffix -> role, for formats with flat names (longest first)
_SUFFIXES = (("num_batches_tracked", "count"), ("running_mean", "mean"), ("running_var", "var"),
             ("moving_variance", "var"), ("moving_mean", "mean"), ("moving_var", "var"),
             ("depthwise_kernel", "weight"), ("kernel", "weight"), ("weight", "weight"), ("bias", "bias"),
             ("gamma", "gamma"), ("beta", "beta"))
_SEPARATORS = {"torch": ".", "safetensors": ".", "npz": ".", "keras": "/", "mxnet": "_"}
_SAME_LAYOUT = {"prototxt": "caffe", "mxnet-symbol": "mxnet"}  # templates: the layout of their weights format
_CAFFE_ROLES = {"BatchNorm": ("mean", "var", "factor"), "Scale": ("gamma", "beta"), "PReLU": ("slope",),
                "Convolution": ("weight", "bias"), "Deconvolution": ("weight", "bias"),
                "InnerProduct": ("weight", "bias")}


@dataclass
class Unit:
    key: str  # the layer's name (Caffe layer, MXNet op, torch module path, Keras layer)
    kind: str  # "w" (conv/fc), "bn", "slope", or another layer type
    fmt: str
    order: int
    tensors: dict = field(default_factory=dict)  # role -> TensorInfo
    attrs: dict = field(default_factory=dict)
    op: Optional[str] = None  # the layer/op whose attributes a spec may read (source side)
    scale_op: Optional[str] = None  # Caffe: the Scale layer merged into this BatchNorm

    def shape(self, role: str) -> tuple:
        return tuple(self.tensors[role].shape)

    @property
    def channels(self) -> Optional[int]:
        for role in ("mean", "gamma", "slope", "bias"):
            if role in self.tensors:
                n = 1
                for d in self.tensors[role].shape:
                    n *= int(d)
                return n
        return None


def in_graph_order(reader, us: list[Unit]) -> bool:
    """Whether the file's order can stand for graph order: Caffe files and MXNet with a symbol are;
    elsewhere, names in sorted order (safetensors) or a unit whose tensors are not next to each other (a
    re-saved dict) are not."""
    if reader.format in ("caffe", "prototxt") or (_SAME_LAYOUT.get(reader.format, reader.format) == "mxnet"
                                                  and reader.nodes()):
        return True
    names = reader.names()
    if len(us) > 4 and names == sorted(names):
        return False  # sorted by name (safetensors files are): not the order layers run in
    index = {n: i for i, n in enumerate(names)}
    for u in us:
        pos = sorted(index[i.name] for i in u.tensors.values())
        if pos and pos[-1] - pos[0] + 1 != len(pos):
            return False
    return True


def units(reader) -> list[Unit]:
    fmt = _SAME_LAYOUT.get(reader.format, reader.format)
    if fmt == "caffe":
        return _caffe(reader)
    sep = _SEPARATORS.get(fmt, ".")
    by_key: dict[str, Unit] = {}
    loose = []
    for i, (name, info) in enumerate(reader.infos().items()):
        for suffix, role in _SUFFIXES:
            if name.endswith(sep + suffix):
                key = name[: -len(sep + suffix)]
                u = by_key.setdefault(key, Unit(key, "w", fmt, i, op=key))
                if role in u.tensors:  # e.g. two names ending the same way: not a unit we understand
                    loose.append(info)
                else:
                    u.tensors[role] = info
                break
        else:
            loose.append(info)
    nodes = {n: k for k, n in enumerate(reader.nodes())} if fmt == "mxnet" else {}
    out = []
    for u in by_key.values():
        if "mean" in u.tensors or "var" in u.tensors:
            u.kind = "bn"
            if fmt in ("torch", "safetensors", "npz"):  # a torch BatchNorm's affine weight and bias
                for a, b in (("weight", "gamma"), ("bias", "beta")):
                    if a in u.tensors:
                        u.tensors[b] = u.tensors.pop(a)
        elif set(u.tensors) == {"gamma"} or (set(u.tensors) == {"weight"} and len(u.tensors["weight"].shape) == 1):
            u.kind = "slope"  # MXNet LeakyReLU(prelu) gamma, torch PReLU weight
            u.tensors = {"slope": next(iter(u.tensors.values()))}
        if nodes:
            u.order = nodes.get(u.key, len(nodes) + u.order)
            u.attrs = dict(reader.attrs(u.key)) if u.key in nodes else {}
        out.append(u)
    for info in loose:
        out.append(Unit(info.name, "other", fmt, 10 ** 9, {"t": info}))
    return sorted(out, key=lambda u: u.order)


def _caffe(reader) -> list[Unit]:
    out: list[Unit] = []
    by_layer: dict[str, Unit] = {}
    for i, (name, info) in enumerate(reader.infos().items()):
        meta = info.meta or {}
        layer, ltype, blob = meta.get("layer"), meta.get("type") or "", meta.get("blob")
        if layer is None or blob is None:
            out.append(Unit(name, "other", "caffe", i, {"t": info}))
            continue
        u = by_layer.get(layer)
        if u is None:
            kind = {"BatchNorm": "bn", "Scale": "scale", "PReLU": "slope"}.get(ltype, "w" if ltype in _CAFFE_ROLES
                                                                              else ltype or "other")
            u = by_layer[layer] = Unit(layer, kind, "caffe", i, op=layer)
            try:
                u.attrs = dict(reader.attrs(layer))
            except Exception:  # noqa: BLE001 - attributes are a help, never required
                u.attrs = {}
            out.append(u)
        roles = _CAFFE_ROLES.get(ltype, ())
        u.tensors[roles[blob] if blob < len(roles) else f"b{blob}"] = info
    merged: list[Unit] = []
    for u in out:
        prev = merged[-1] if merged else None
        if u.kind == "scale" and prev is not None and prev.kind == "bn" and "gamma" not in prev.tensors:
            prev.tensors.update(u.tensors)
            prev.scale_op = u.key
            continue
        merged.append(u)
    return merged
