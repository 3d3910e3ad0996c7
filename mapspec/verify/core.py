"""Prove a conversion: run the original and the converted model on the same input and compare.

A *runner* executes one side: the Caffe or MXNet reference executor (torch-based, no
framework needed), a torch module built by a factory (``module:function``), or a Keras
model.  ``verify`` feeds both the same input (an image, a ``.npy`` array, or seeded
random values), compares the outputs (max abs error, relative error, cosine) against a
tolerance, and with ``layers=True`` compares intermediate activations through a layer
correspondence (from the spec's ``verify.layers``, else derived from the spec's
rules), reports the first layer whose error jumps, and says what most likely differs
there (eps, the BatchNorm factor, fix_gamma, channel order, transposed kernels,
flatten order).

A spec may name model factories only inside ``mapspec.models`` (a spec is data and
must not choose arbitrary code to run); ``--target-model`` on the command line may
name any importable factory, because the user typed it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import MapspecError, SpecError
from ..formats import open_checkpoint

SPEC_FACTORY_PREFIX = "mapspec.models."


# -- metrics ------------------------------------------------------------------------------

@dataclass
class Comparison:
    max_abs: float
    max_rel: float
    cosine: float
    shape: tuple

    def ok(self, atol: float, cosine: float) -> bool:
        return bool(self.max_abs <= atol and self.cosine >= cosine)  # False for NaN

    def to_json(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "cosine": self.cosine, "shape": list(self.shape)}


def compare(a: np.ndarray, b: np.ndarray) -> Comparison:
    if a.shape != b.shape:
        raise MapspecError(f"outputs have different shapes: {a.shape} vs {b.shape}")
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size == 0:
        return Comparison(0.0, 0.0, 1.0, a.shape)
    if np.isnan(x).any() or np.isnan(y).any():
        same_nan = bool((np.isnan(x) == np.isnan(y)).all())
        if not same_nan:
            return Comparison(math.inf, math.inf, float("nan"), a.shape)
        keep = ~np.isnan(x)
        x, y = x[keep], y[keep]
        if x.size == 0:
            return Comparison(0.0, 0.0, 1.0, a.shape)
    d = np.abs(x - y)
    max_abs = float(d.max())
    scale = float(np.abs(x).max())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 and ny == 0:
        cos = 1.0
    elif nx == 0 or ny == 0:
        cos = 0.0
    else:
        cos = float(np.dot(x, y) / (nx * ny))
    return Comparison(max_abs, max_rel, cos, a.shape)


# -- inputs -------------------------------------------------------------------------------

def load_input(source: Optional[str], shape: tuple, value_range=(0.0, 1.0), seed: int = 0) -> np.ndarray:
    """NCHW float32: an image file (RGB, resized to the input size), a .npy array, or seeded random values."""
    if source is None or source == "random":
        rng = np.random.default_rng(seed)
        lo, hi = value_range
        return rng.uniform(lo, hi, size=shape).astype(np.float32)
    if not os.path.isfile(source):
        raise MapspecError(f"{source}: no such input file")
    if source.lower().endswith(".npy"):
        try:
            arr = np.load(source, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise MapspecError(f"{source}: not a readable .npy array: {e}") from None
        arr = np.asarray(arr, dtype=np.float32)
        if tuple(arr.shape) != tuple(shape):
            if arr.size == int(np.prod(shape)):
                arr = arr.reshape(shape)
            else:
                raise MapspecError(f"{source}: array of shape {arr.shape} does not fit the input shape {tuple(shape)}")
        return arr
    try:
        from PIL import Image
    except ImportError:
        raise MapspecError("reading an image input needs Pillow: pip install pillow (or pass a .npy array)") from None
    try:
        with Image.open(source) as im:
            im = im.convert("RGB")
            n, c, h, w = shape
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (OSError, ValueError) as e:
        raise MapspecError(f"{source}: cannot read the image: {e}") from None
    if len(shape) != 4 or shape[1] != 3:
        raise MapspecError(f"an image input needs a 1x3xHxW input shape, not {tuple(shape)}")
    lo, hi = value_range
    arr = arr / 255.0 * (hi - lo) + lo
    return np.broadcast_to(arr.transpose(2, 0, 1)[None], shape).astype(np.float32)


# -- runners ----------------------------------------------------------------------------

class Runner:
    """One side of a comparison.  ``run`` returns (output, {activation name: array}) in execution order."""

    kind = "?"
    channels = "rgb"
    layout = "nchw"

    def prepare(self, x: np.ndarray) -> np.ndarray:
        if self.channels == "bgr":
            x = x[:, ::-1]
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, x: np.ndarray, capture: bool = False):
        raise NotImplementedError

    def alternatives(self, layer: str) -> list:
        """Other activations that may stand for ``layer`` (e.g. after its in-place ReLU)."""
        return []


class ExecutorRunner(Runner):
    def __init__(self, kind: str, executor, input_name: Optional[str], output: Optional[str]):
        self.kind = kind
        self.ex = executor
        names = list(executor.input_shapes) if executor.input_shapes else []
        self.input_name = input_name or (names[0] if names else "data")
        self.output = output

    def run(self, x, capture=False):
        outs = [self.output] if self.output else None
        res = self.ex.run({self.input_name: self.prepare(x)}, outputs=outs, capture=capture)
        key = self.output or self.ex.output_names[-1]
        if key not in res:
            raise MapspecError(f"the {self.kind} model has no output {key!r}; outputs: "
                               f"{', '.join(self.ex.output_names)}")
        acts = OrderedDict((k, v) for k, v in res.items()) if capture else OrderedDict()
        return np.asarray(res[key]), acts

    def alternatives(self, layer: str) -> list:
        followers = getattr(self.ex, "in_place_followers", None)
        return list(followers(layer)) if followers else []


def _load_factory(ref: str, from_spec: bool):
    if ":" not in ref:
        raise MapspecError(f"model {ref!r} must be written module:function")
    mod_name, fn_name = ref.split(":", 1)
    if from_spec and not mod_name.startswith(SPEC_FACTORY_PREFIX):
        raise MapspecError(f"a spec may only name model factories in {SPEC_FACTORY_PREFIX}* (got {ref!r}); "
                           f"pass other factories with --target-model on the command line")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise MapspecError(f"cannot load model factory {ref!r}: {e}") from None
    return fn


def _torch_state(path: str) -> dict:
    import torch

    with open_checkpoint(path) as r:
        return {k: torch.from_numpy(np.array(r.read(k))) for k in r.names()}


class TorchRunner(Runner):
    kind = "torch"

    def __init__(self, factory: Callable, weights: str):
        import torch

        self.torch = torch
        self.model = factory()
        state = _torch_state(weights)
        result = self.model.load_state_dict(state, strict=False)
        problems = []
        if result.missing_keys:
            problems.append(f"missing {len(result.missing_keys)}: {', '.join(result.missing_keys[:5])}")
        if result.unexpected_keys:
            problems.append(f"unexpected {len(result.unexpected_keys)}: {', '.join(result.unexpected_keys[:5])}")
        if problems:
            raise MapspecError(f"{weights}: does not load into the torch model with strict=True ("
                               + "; ".join(problems) + ")")
        self.model.train(False)  # inference mode: BatchNorm uses running stats, dropout is off

    def run(self, x, capture=False):
        torch = self.torch
        acts: OrderedDict = OrderedDict()
        hooks = []
        if capture:
            for name, mod in self.model.named_modules():
                if not name:
                    continue

                def hook(_m, _inp, out, name=name):
                    if isinstance(out, torch.Tensor):
                        acts[name] = out.detach().numpy().copy()
                hooks.append(mod.register_forward_hook(hook))
        try:
            with torch.no_grad():
                y = self.model(torch.from_numpy(self.prepare(x)))
        finally:
            for h in hooks:
                h.remove()
        return y.detach().numpy(), acts


class KerasRunner(Runner):
    kind = "keras"
    layout = "nhwc"

    def __init__(self, factory: Callable, weights: str):
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras

        self.keras = keras
        self.model = factory()
        try:
            self.model.load_weights(weights)
        except Exception as e:  # keras raises ValueError/KeyError/OSError variants
            raise MapspecError(f"{weights}: keras could not load these weights: {e}") from None

    def run(self, x, capture=False):
        keras = self.keras
        xin = np.ascontiguousarray(self.prepare(x).transpose(0, 2, 3, 1))
        acts: OrderedDict = OrderedDict()
        if capture:
            layers = [l for l in self.model.layers if not isinstance(l, keras.layers.InputLayer)]
            probe = keras.Model(self.model.inputs, [l.output for l in layers])
            outs = probe.predict(xin, verbose=0)
            for l, o in zip(layers, outs):
                o = np.asarray(o)
                acts[l.name] = o.transpose(0, 3, 1, 2) if o.ndim == 4 else o
            y = np.asarray(outs[-1])
        else:
            y = np.asarray(self.model.predict(xin, verbose=0))
        return (y.transpose(0, 3, 1, 2) if y.ndim == 4 else y), acts


def _takes_weights(factory: Callable) -> bool:
    try:
        return "weights" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable without a signature (a builtin)
        return False


def make_runner(cfg: dict, weights: str, spec_dir: Optional[str], graph: Optional[str] = None,
                model: Optional[str] = None) -> Runner:
    """A runner from a verify side config: {run, graph, model, output, input, channels}."""
    kind = cfg.get("run")
    g = graph or (os.path.join(spec_dir, cfg["graph"]) if cfg.get("graph") and spec_dir else cfg.get("graph"))
    if kind in ("caffe", "mxnet"):
        if not g:
            raise MapspecError(f"the {kind} side needs its graph file (a {'.prototxt' if kind == 'caffe' else '-symbol.json'}):"
                               f" pass it with --{'source' if cfg.get('_side') == 'source' else 'target'}-graph")
        reader = open_checkpoint(weights)
        if kind == "caffe":
            from ..executors.caffe import CaffeExecutor

            ex = CaffeExecutor(g, reader)
        else:
            from ..executors.mxnet import MXNetExecutor

            ex = MXNetExecutor(g, reader)
        r: Runner = ExecutorRunner(kind, ex, cfg.get("input"), cfg.get("output"))
    elif kind in ("torch", "keras"):
        ref = model or cfg.get("model")
        if not ref:
            raise MapspecError(f"the {kind} side needs a model factory (module:function): pass --target-model")
        factory = _load_factory(ref, from_spec=model is None)
        if _takes_weights(factory):  # it reads the model's config beside the weights
            factory = functools.partial(factory, weights=weights)
        r = TorchRunner(factory, weights) if kind == "torch" else KerasRunner(factory, weights)
    else:
        raise MapspecError(f"unknown runner {kind!r} (caffe, mxnet, torch, keras)")
    r.channels = cfg.get("channels", "rgb")
    return r


# -- layer correspondence and diagnosis -------------------------------------------------------

def _source_layer(name: str, fmt: str, reader=None) -> str:
    if name.endswith("]") and "[" in name:
        return name[:name.rindex("[")]
    if fmt == "mxnet":
        for suffix in ("_weight", "_bias", "_gamma", "_beta", "_moving_mean", "_moving_var", "_running_mean",
                       "_running_var"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
    if "/" in name:
        return name.rsplit("/", 1)[0]
    return name.rsplit(".", 1)[0]


def _target_layer(name: str, kind: str) -> str:
    if kind == "caffe" or (name.endswith("]") and "[" in name):
        return name[:name.rindex("[")] if "[" in name else name
    if kind == "keras":
        return name.split("/", 1)[0]
    return name.rsplit(".", 1)[0]


def derive_layers(plan, source_kind: str, target_kind: str) -> list[tuple[str, str]]:
    """(source layer, target layer) pairs from the spec's rules: every target layer paired with the
    source layers its tensors came from (the last of them in source execution order is compared)."""
    pairs: dict[str, list[str]] = OrderedDict()
    for s in plan.steps:
        if s.source is None:
            continue
        src = _source_layer(s.source, source_kind)
        tgt = _target_layer(s.target, target_kind)
        pairs.setdefault(tgt, [])
        if src not in pairs[tgt]:
            pairs[tgt].append(src)
    return [(srcs, tgt) for tgt, srcs in pairs.items()]


@dataclass
class LayerResult:
    source: str
    target: str
    cmp: Optional[Comparison]
    note: str = ""


def _affine_fit(s: np.ndarray, t: np.ndarray):
    """Per-channel least squares t ~ a*s + b over axis 1; returns (a, b, residual ratio)."""
    if s.ndim < 2 or s.shape != t.shape:
        return None
    c = s.shape[1]
    S = np.moveaxis(s, 1, 0).reshape(c, -1).astype(np.float64)
    T = np.moveaxis(t, 1, 0).reshape(c, -1).astype(np.float64)
    if S.shape[1] < 2:
        return None
    sm, tm = S.mean(1, keepdims=True), T.mean(1, keepdims=True)
    var = ((S - sm) ** 2).sum(1)
    cov = ((S - sm) * (T - tm)).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(var > 0, cov / var, 1.0)
    b = (tm[:, 0] - a * sm[:, 0])
    resid = T - (a[:, None] * S + b[:, None])
    denom = np.abs(T - tm).sum() + 1e-30
    return a, b, float(np.abs(resid).sum() / denom)


def diagnose(s: np.ndarray, t: np.ndarray, layer_hint: str = "") -> list[str]:
    """Likely causes for a target activation ``t`` that differs from the source's ``s``."""
    causes = []
    if s.shape != t.shape:
        return [f"the activations have different shapes ({s.shape} vs {t.shape}): a hyper-parameter (stride, "
                f"pad, pooling rounding, groups) or the graph differs here"]
    if s.ndim == 4 and s.shape[1] > 1 and np.allclose(t, s[:, ::-1], rtol=1e-3, atol=1e-4 * (np.abs(s).max() + 1e-12)):
        causes.append("the channels are in reverse order: RGB vs BGR (add {take: {indices: [2, 1, 0], axis: 1}} to "
                      "the first convolution's weight)")
    if s.ndim == 4 and s.shape[2] == s.shape[3] and s.shape[2] > 1 and np.allclose(
            t, s.swapaxes(2, 3), rtol=1e-3, atol=1e-4 * (np.abs(s).max() + 1e-12)):
        causes.append("height and width are swapped: a kernel transposed in HW (check the transpose axes)")
    fit = _affine_fit(s, t)
    if fit is not None:
        a, b, resid = fit
        if resid < 1e-3:
            spread = float(np.abs(s).mean()) + 1e-12
            scale_off = np.abs(a - 1) > 1e-4
            offset_off = np.abs(b) > 1e-4 * spread
            if scale_off.any():
                dev = a - 1
                one_sided = bool((dev >= -1e-6).all() or (dev <= 1e-6).all())
                if one_sided and float(np.median(np.abs(dev))) < 0.01:
                    causes.append(f"a per-channel scale error in one direction, tiny in most channels (median "
                                  f"{float(np.median(np.abs(dev))):.2%}) and large where the variance is small (up "
                                  f"to {float(np.abs(dev).max()):.3g}): typical of a BatchNorm eps mismatch "
                                  f"(MXNet's 1e-3 vs Caffe's/torch's 1e-5): carry eps over or absorb it into the "
                                  f"variance")
                elif np.ptp(a) < 1e-3 * np.abs(a).mean():
                    causes.append(f"every channel is scaled by the same {a.mean():.6g}: statistics not divided by "
                                  f"Caffe's moving-average factor (BatchNorm blob 2), or an input scale differs")
                else:
                    causes.append("a per-channel scale differs (factors "
                                  f"{a.min():.3g}..{a.max():.3g}): gamma is missing or wrong, e.g. fix_gamma=True "
                                  f"(MXNet uses gamma = 1), or the variance is wrong")
            elif offset_off.any():
                causes.append("a per-channel offset differs: the BatchNorm mean, beta or a bias was not carried "
                              "over as the source computes it")
    if not causes and s.ndim == 2 and "fc" in layer_hint.lower():
        causes.append("a fully connected layer: check the flatten order of its input (Caffe flattens C,H,W; Keras "
                      "H,W,C) and whether its weight needs a transpose")
    if not causes:
        causes.append("no simple relation between the two: compare this layer's weights (mapspec diff) and its "
                      "hyper-parameters (stride, pad, groups, eps)")
    return causes


@dataclass
class Verdict:
    output: Comparison
    atol: float
    cosine: float
    layers: list = field(default_factory=list)
    first_bad: Optional[LayerResult] = None
    causes: list = field(default_factory=list)
    input_desc: str = ""

    @property
    def ok(self) -> bool:
        return self.output.ok(self.atol, self.cosine)

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "atol": self.atol, "cosine_min": self.cosine, "input": self.input_desc,
            "output": self.output.to_json(),
            "layers": [{"source": l.source, "target": l.target, **(l.cmp.to_json() if l.cmp else {}),
                        "note": l.note} for l in self.layers],
            "first_divergence": None if self.first_bad is None else {
                "source": self.first_bad.source, "target": self.first_bad.target, "likely_causes": self.causes},
        }


def _candidates(a: np.ndarray, b: np.ndarray) -> list:
    """Ways to line up a source activation ``a`` with a target activation ``b``: as is, reshaped, or
    as one channel slice of ``a`` when ``b`` is one group of a split grouped convolution."""
    if a.shape == b.shape:
        return [("", a, b)]
    if a.size == b.size:
        return [("", a, b.reshape(a.shape))]
    out = []
    if a.ndim == b.ndim and a.ndim >= 2 and a.shape[0] == b.shape[0] and a.shape[2:] == b.shape[2:] \
            and b.shape[1] and a.shape[1] % b.shape[1] == 0:
        n = a.shape[1] // b.shape[1]
        for k in range(n):
            part = a[:, k * b.shape[1]:(k + 1) * b.shape[1]]
            out.append((f"channel slice {k + 1} of {n}", part, b))
    return out


def compare_layers(pairs, src_acts: dict, tgt_acts: dict, rel_tol: float,
                   alternatives: Callable[[str], list] = lambda name: []) -> tuple[list, Optional[LayerResult]]:
    results = []
    order = {name: i for i, name in enumerate(src_acts)}
    resolved = []
    for srcs, tgt in pairs:
        srcs = [srcs] if isinstance(srcs, str) else list(srcs)
        present = [s for s in srcs if s in src_acts]
        if not present or tgt not in tgt_acts:
            continue
        src = max(present, key=lambda n: order[n])
        resolved.append((order[src], src, tgt))
    resolved.sort()
    # one source layer split into several target layers (MXNet BatchNorm -> Caffe BatchNorm + Scale):
    # the last of them in the target's execution order is the one that computes what the source computes
    tgt_order = {name: i for i, name in enumerate(tgt_acts)}
    last_target: dict = {}
    for _, src, tgt in resolved:
        if src not in last_target or tgt_order[tgt] > tgt_order[last_target[src]]:
            last_target[src] = tgt
    resolved = [r for r in resolved if last_target[r[1]] == r[2]]
    first_bad = None
    prev = 0.0
    for _, src, tgt in resolved:
        best = None
        # the layer itself first, then what follows it in place (a fused activation on the target side)
        for name in [src] + [f for f in alternatives(src) if f in src_acts]:
            for note, a, b in _candidates(src_acts[name], tgt_acts[tgt]):
                cmp = compare(a, b)
                label = ", ".join(x for x in (note, f"after {name}" if name != src else "") if x)
                if best is None or cmp.max_rel < best.cmp.max_rel:
                    best = LayerResult(name, tgt, cmp, label)
                if cmp.max_rel <= rel_tol:
                    break
            if best is not None and best.cmp.max_rel <= rel_tol:
                break
        res = best or LayerResult(src, tgt, None, f"shapes {src_acts[src].shape} and {tgt_acts[tgt].shape} "
                                                  f"cannot be compared")
        results.append(res)
        if first_bad is None:
            rel = math.inf if res.cmp is None else res.cmp.max_rel
            if not rel <= rel_tol and not rel <= 10 * prev:  # NaN counts as a divergence
                first_bad = res
            prev = max(prev, 0.0 if res.cmp is None else res.cmp.max_rel)
    return results, first_bad


def verify(source_runner: Runner, target_runner: Runner, x: np.ndarray, atol: float = 1e-4,
           cosine: float = 0.99999, pairs=None, input_desc: str = "", layer_rel_tol: float = 1e-3) -> Verdict:
    capture = pairs is not None
    ys, src_acts = source_runner.run(x, capture=capture)
    yt, tgt_acts = target_runner.run(x, capture=capture)
    ys, yt = np.asarray(ys), np.asarray(yt)
    if ys.shape != yt.shape and ys.size == yt.size:
        yt = yt.reshape(ys.shape)  # e.g. a 1x1000x1x1 Caffe classifier vs a 1x1000 Linear
    v = Verdict(compare(ys, yt), atol, cosine, input_desc=input_desc)
    if capture:
        v.layers, v.first_bad = compare_layers(pairs, src_acts, tgt_acts, layer_rel_tol, source_runner.alternatives)
        if v.first_bad is not None and v.first_bad.cmp is not None:
            cands = _candidates(src_acts[v.first_bad.source], tgt_acts[v.first_bad.target])
            a, b = cands[0][1], cands[0][2]
            v.causes = diagnose(a, b, v.first_bad.source + " " + v.first_bad.target)
        elif v.first_bad is not None:
            v.causes = [v.first_bad.note]
    return v


def spec_verify_config(spec) -> dict:
    cfg = getattr(spec, "verify", None)
    if not cfg:
        raise SpecError("this spec has no 'verify:' section (which runners, model factory, input shape); "
                        "add one to use mapspec verify")
    return cfg
