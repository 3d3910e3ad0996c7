"""Run a Caffe net with torch (float32, CPU), no Caffe needed: a reference for ``verify``.

``CaffeExecutor(net, weights, input_shapes=None)``: ``net`` is a ``.prototxt`` path (or its
text) or a ``NetParameter`` from :mod:`mapspec.frameworks.caffe.schema`; ``weights`` a
:class:`~mapspec.formats.base.Reader` whose tensors are named ``layer[k]`` (a
``.caffemodel``, or any format holding such names), a ``{"layer[k]": array}`` mapping, or
``None`` to use the blobs stored in ``net`` itself.

Semantics are Caffe's TEST phase: layers are filtered by their include/exclude rules for
phase TEST (and the net's ``state`` level and stages), then run in file order.  Each layer
type is one pure kernel in :mod:`mapspec.frameworks.caffe.ops` (the table ``KERNELS``);
BatchNorm uses the stored statistics divided by the factor blob, Dropout is the identity,
Pooling rounds and pads as ``pooling_layer.cpp`` does.  In-place layers (top == bottom)
rebind the blob name to the new value, which is what Caffe's in-place memory reuse and
its automatic Split insertion amount to for every later reader.

``input_shapes`` maps each net input (``input`` fields and ``Input`` layers) to its declared
shape (``None`` where the prototxt gives none); the constructor's ``input_shapes`` overrides
them.  ``dense_block_factor`` ("gpu" default, or "cpu") chooses how Tongcheng's DenseBlock
uses its moving-average factor blob (see :mod:`mapspec.frameworks.caffe.ops.dense_block`).
Weights are checked up front (every layer gets exactly the blobs its type and parameters
need, ``layer[0..n-1]``, all problems reported at once), blob shapes when the layer runs
(a :class:`ConversionError` naming ``layer[k]``, with Caffe's legacy 4-D shapes accepted as
Caffe accepts them).  Parameters that would make a tensor larger than Caffe's own per-blob
limit (INT_MAX elements) are refused before anything is allocated.

``run(inputs, outputs=None, capture=False)`` returns numpy arrays.  ``outputs`` may name
blobs (their final value, as ``net.blobs[name]`` after a Caffe forward) or layers (the
layer's first top as that layer produced it, e.g. a BatchNorm's output before the
in-place Scale after it).  The default outputs (``output_names``) are the blobs no later
layer reads, in the order they were produced (Caffe's ``net.outputs``, which it lists
alphabetically).  With ``capture``, every layer's output is returned too, in execution
order, keyed by layer name (a layer with several tops also under each top name); where a
requested output blob has the name of a layer, the key holds the blob's final value.
``in_place_followers(layer)`` lists the layers that rewrite a layer's output in place after
it (BatchNorm -> Scale -> ReLU), for comparisons with frameworks that fuse them.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np

from ...errors import ConversionError, FormatError, MapspecError
from . import net as caffe_net
from . import schema
from .blobs import BLOB_NAME
from .layers import blob_count, in_phase
from ..executor_base import Executor, feed, tensor_source

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None

if torch is not None:
    from .ops import FACTOR_MODES, INPUT_TYPES, KERNELS, LayerError, Unsupported
    from .ops.common import BlobError
    from .ops.dense_block import dense_block
else:  # pragma: no cover
    KERNELS, INPUT_TYPES, FACTOR_MODES = {}, frozenset(), ()
    LayerError = Unsupported = BlobError = Exception


class _Step(NamedTuple):
    """One layer to run: its position in the filtered net, its message, its kernel."""

    index: int
    layer: object  # schema.LayerParameter
    kernel: object


def _load_net(net):
    """(NetParameter with the new ``layer`` list, a name for messages) from a path, text or message."""
    if isinstance(net, schema.NetParameter):
        if len(net.layers):
            net = caffe_net.load_net(net)  # a copy with the legacy V1 layers upgraded
        return net, net.name or "<net>"
    if not isinstance(net, (str, os.PathLike)):
        raise MapspecError(f"net must be a .prototxt path or a caffe NetParameter, not {type(net).__name__}")
    text_given = isinstance(net, str) and ("\n" in net or "{" in net) and not os.path.exists(net)
    return caffe_net.load_net(net), ("<prototxt text>" if text_given else str(net))


def _blob_array(blob, where: str) -> np.ndarray:
    """The values of a ``BlobProto`` held in a net message (shape from ``shape`` or legacy 4-D)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = blob.double_data if len(blob.double_data) else blob.data
    if any(d < 0 for d in shape):
        raise FormatError(where, f"negative dimension in blob shape {shape}")
    n = 1
    for d in shape:
        n *= d
    if len(values) != n:
        raise FormatError(where, f"blob has {len(values)} values but its shape {shape} needs {n}")
    return np.asarray(values, dtype=np.float32).reshape(shape)


def _as_tensor(value) -> "torch.Tensor":
    """A float32 tensor of a blob: shares a writable float32 array's memory (kernels never write to
    their inputs), copies anything else (read-only memory maps, other dtypes)."""
    arr = np.asarray(value)
    if arr.dtype == np.float32 and arr.flags.c_contiguous and arr.flags.writeable:
        return torch.from_numpy(arr)
    return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))


class CaffeExecutor(Executor):
    """A Caffe net with its weights, runnable with torch at Caffe's TEST-phase semantics."""

    framework = "caffe"

    def __init__(self, net, weights=None, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 dense_block_factor: str = "gpu"):
        """``dense_block_factor``: how a DenseBlock uses its moving-average factor blob: "gpu"
        (Tongcheng's GPU code, the default: ignored) or "cpu" (statistics divided by it)."""
        super().__init__()
        if torch is None:  # pragma: no cover
            raise MapspecError("the Caffe reference executor needs torch: pip install torch")
        if dense_block_factor not in FACTOR_MODES:
            raise MapspecError(f"dense_block_factor must be one of {', '.join(FACTOR_MODES)}, "
                               f"not {dense_block_factor!r}")
        self.net, self.path = _load_net(net)
        kernels = dict(KERNELS)
        kernels["DenseBlock"] = functools.partial(dense_block, factor_mode=dense_block_factor)
        layers = self._filtered_layers()
        bad = sorted({l.type for l in layers if l.type not in kernels and l.type not in INPUT_TYPES})
        if bad:
            where = [f"{l.name!r}" for l in layers if l.type in bad][:5]
            raise MapspecError(f"{self.path}: the Caffe executor cannot run layer type(s) {', '.join(bad)} "
                               f"(layers {', '.join(where)}); supported: {', '.join(sorted(kernels))}")
        self._inputs = caffe_net.declared_inputs(self.net, self.path, layers)
        self._steps = [_Step(i, l, kernels.get(l.type)) for i, l in enumerate(layers) if l.type not in INPUT_TYPES]
        self.layer_names = [s.layer.name for s in self._steps]
        self._layer_index = {s.layer.name: k for k, s in enumerate(self._steps)}
        self.output_names = self._check_graph()
        self._blob_names = set(self._inputs) | {t for s in self._steps for t in s.layer.top}
        if input_shapes:
            unknown = [k for k in input_shapes if k not in self._inputs]
            if unknown:
                raise MapspecError(f"{self.path}: {unknown[0]!r} is not an input of this net "
                                   f"(inputs: {', '.join(self._inputs) or 'none'})")
            for k, v in input_shapes.items():
                self._inputs[k] = tuple(int(d) for d in v)
        self.input_shapes = dict(self._inputs)
        self.params = self._load_weights(weights)

    # -- set-up --------------------------------------------------------------
    def _filtered_layers(self) -> list:
        """The layers of the TEST-phase net (Caffe's ``Net::FilterNet``)."""
        level, stages = int(self.net.state.level), set(self.net.state.stage)
        kept = []
        for layer in self.net.layer:
            if len(layer.include) and len(layer.exclude):
                raise MapspecError(f"{self.path}: layer {layer.name!r} specifies both include and exclude rules; "
                                   f"Caffe accepts one or the other")
            if in_phase(layer, schema.PHASE_TEST, level, stages):
                kept.append(layer)
        return kept

    def _check_graph(self) -> list:
        """Every bottom must exist when its layer runs; returns the net's output blobs."""
        known = set(self._inputs)
        available = dict.fromkeys(self._inputs)  # not yet read: an insertion-ordered set
        for s in self._steps:
            layer = s.layer
            for j, b in enumerate(layer.bottom):
                if b not in known:
                    raise MapspecError(f"{self.path}: layer {layer.name!r} ({layer.type}) reads unknown bottom blob "
                                       f"{b!r} (bottom {j}); no earlier layer or input produces it")
            for b in layer.bottom:
                available.pop(b, None)
            for t in layer.top:
                known.add(t)
                available.pop(t, None)
                available[t] = None
        return list(available)

    def _load_weights(self, weights) -> dict:
        """Layer name -> list of float32 tensors (``layer[0]``, ``layer[1]``, ...), checked for count."""
        wanted = {s.layer.name for s in self._steps}
        found: dict[str, dict[int, object]] = {}
        if weights is None:
            for s in self._steps:
                for k, blob in enumerate(s.layer.blobs):
                    found.setdefault(s.layer.name, {})[k] = functools.partial(
                        _blob_array, blob, f"{self.path}: layer {s.layer.name!r} blob {k}")
        elif (source := tensor_source(weights)) is not None:
            names, get = source
            for name in names:
                m = BLOB_NAME.match(name) if isinstance(name, str) else None
                if m and m.group(1) in wanted:
                    found.setdefault(m.group(1), {})[int(m.group(2))] = functools.partial(get, name)
        else:
            raise MapspecError(f"weights must be a reader, a {{'layer[k]': array}} mapping or None, "
                               f"not {type(weights).__name__}")
        params: dict = {}
        problems = []
        seen: set = set()
        for s in self._steps:
            if s.layer.name in seen and blob_count(s.layer) != 0:
                raise MapspecError(f"{self.path}: two layers are named {s.layer.name!r} and this one has parameters; "
                                   f"their blobs {s.layer.name}[k] would be ambiguous: rename one")
            seen.add(s.layer.name)
        for s in self._steps:
            name = s.layer.name
            have = found.get(name, {})
            ks = sorted(have)
            if ks != list(range(len(ks))):
                gap = next(i for i in range(len(ks) + 1) if i not in have)
                problems.append(f"{name}[{gap}] is missing but {name}[{ks[-1]}] is present")
                continue
            need = blob_count(s.layer)
            if need is not None and len(ks) != need:
                got = f"{len(ks)} ({', '.join(f'{name}[{k}]' for k in ks)})" if ks else "none"
                problems.append(f"layer {name!r} ({s.layer.type}) needs {need} blob(s), the weights have {got}")
                continue
            params[name] = [_as_tensor(have[k]()) for k in ks]
        if problems:
            more = f" and {len(problems) - 8} more" if len(problems) > 8 else ""
            what = "the blobs inside" if weights is None else "the weights do not fit"
            raise ConversionError(f"{what} {self.path}: " + "; ".join(problems[:8]) + more)
        return params

    def in_place_followers(self, layer: str) -> list:
        """The layers that rewrite ``layer``'s first top in place right after it (e.g. a
        convolution's BatchNorm -> Scale -> ReLU chain): the last of them holds the value a
        framework that fuses those steps into one layer reports for ``layer``."""
        k = self._layer_index.get(layer)
        if k is None:
            raise MapspecError(f"{self.path}: no layer named {layer!r}")
        if not self._steps[k].layer.top:
            return []
        blob = self._steps[k].layer.top[0]
        out = []
        for s in self._steps[k + 1:]:
            if blob in s.layer.top:
                if list(s.layer.bottom[:1]) != [blob]:
                    break  # the name is rebound to something else
                out.append(s.layer.name)
        return out

    def producers(self, layer: str) -> list:
        """For each bottom of ``layer``, in order, the layer that last wrote it before ``layer`` runs (an in-place
        follower included), or the input's name."""
        k = self._layer_index.get(layer)
        if k is None:
            raise MapspecError(f"{self.path}: no layer named {layer!r}")
        out = []
        for blob in self._steps[k].layer.bottom:
            writer = next((s.layer.name for s in reversed(self._steps[:k]) if blob in s.layer.top), blob)
            out.append(writer)
        return out

    # -- running ---------------------------------------------------------------
    def _plan(self, targets: list) -> tuple:
        """Steps to run (indices) for the target blobs/layers, and which target each resolves to."""
        resolved = []
        for name in targets:
            if name in self._blob_names:
                resolved.append(("blob", name))
            elif name in self._layer_index:
                resolved.append(("layer", name))
            else:
                raise MapspecError(f"{self.path}: no blob or layer named {name!r}")
        needed_blobs = {n for kind, n in resolved if kind == "blob"}
        starts = [self._layer_index[n] for kind, n in resolved if kind == "layer"]
        run = set()
        for k in range(len(self._steps) - 1, -1, -1):
            layer = self._steps[k].layer
            if k in starts or any(t in needed_blobs for t in layer.top):
                run.add(k)
                needed_blobs.difference_update(layer.top)
                needed_blobs.update(layer.bottom)
        return sorted(run), resolved, needed_blobs

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Optional[Sequence[str]] = None,
            capture: bool = False) -> dict:
        unknown = [k for k in inputs if k not in self._inputs]
        if unknown:
            raise MapspecError(f"{self.path}: {unknown[0]!r} is not an input of this net "
                               f"(inputs: {', '.join(self._inputs) or 'none'})")
        targets = list(outputs) if outputs is not None else list(self.output_names)
        order, resolved, needed_inputs = self._plan(targets)
        if capture:
            order = list(range(len(self._steps)))
            needed_inputs = set(self._inputs)
        needed_inputs = [n for n in self._inputs if n in needed_inputs]
        blobs = feed(self.path, inputs, needed_inputs, list(self._inputs))
        keep_blobs = {n for kind, n in resolved if kind == "blob"}
        keep_layers = {n for kind, n in resolved if kind == "layer"}
        last_read = self._last_reads(order)
        results: dict = {}
        layer_out: dict = {}
        with torch.no_grad():
            for k in order:
                layer = self._steps[k].layer
                tops = self._call(self._steps[k], [blobs[b] for b in layer.bottom])
                if capture:
                    if tops:
                        results[layer.name] = tops[0].numpy()
                    if len(tops) > 1:
                        for t, v in zip(layer.top, tops):
                            if t not in self._layer_index:
                                results.setdefault(t, v.numpy())
                if layer.name in keep_layers and tops:
                    layer_out[layer.name] = tops[0]
                for b in set(layer.bottom) - set(layer.top):
                    if last_read.get((b, k)) and b not in keep_blobs:
                        blobs.pop(b, None)
                for t, v in zip(layer.top, tops):
                    blobs[t] = v
        for kind, name in resolved:
            value = blobs.get(name) if kind == "blob" else layer_out.get(name)
            if value is None:
                raise MapspecError(f"{self.path}: {name!r} was not computed")  # pragma: no cover - defensive
            results[name] = value.numpy()
        return results

    def _last_reads(self, order: list) -> dict:
        """{(blob, step): True} where that step is the last reader of the blob's current value."""
        last: dict = {}
        current: dict = {}  # blob name -> key of its latest reader
        for k in order:
            layer = self._steps[k].layer
            for b in layer.bottom:
                current[b] = k
            for t in layer.top:
                if t in current:
                    last[(t, current.pop(t))] = True
        for b, k in current.items():
            last[(b, k)] = True
        return last

    def _call(self, step: _Step, bottoms: list) -> list:
        layer = step.layer
        try:
            tops = step.kernel(layer, bottoms, self.params.get(layer.name, []))
        except BlobError as e:
            tensor = f"{layer.name}[{e.index}]" if e.index >= 0 else None
            raise ConversionError(f"{self.path}: layer {layer.name!r} ({layer.type}): {e}; the layer's input "
                                  f"shapes: {', '.join(str(tuple(b.shape)) for b in bottoms)}", tensor=tensor) from None
        except Unsupported as e:
            raise MapspecError(f"{self.path}: layer {layer.name!r} ({layer.type}): {e} is not supported by the Caffe "
                               f"executor") from None
        except LayerError as e:
            raise MapspecError(f"{self.path}: layer {layer.name!r} ({layer.type}): {e}") from None
        except MemoryError:
            raise MapspecError(f"{self.path}: layer {layer.name!r} ({layer.type}) ran out of memory on inputs of "
                               f"shape {[tuple(b.shape) for b in bottoms]}") from None
        except (RuntimeError, ValueError, IndexError, TypeError, OverflowError) as e:
            raise MapspecError(f"{self.path}: layer {layer.name!r} ({layer.type}) failed on inputs of shape "
                               f"{[tuple(b.shape) for b in bottoms]}: {e}") from None
        if len(tops) != len(layer.top):
            raise MapspecError(f"{self.path}: layer {layer.name!r} ({layer.type}) has {len(layer.top)} top(s) but "
                               f"produces {len(tops)}")
        return tops


__all__ = ["CaffeExecutor", "KERNELS"]
