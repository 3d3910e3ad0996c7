"""Prove a conversion: run the original and the converted model on the same input and compare.

``run_verify`` is what ``mapspec verify`` does: it builds a runner for each side (from the
spec's ``verify:`` section and the command line), makes the input, runs both, compares every
output against the tolerances, and with ``layers=True`` compares intermediate activations
through the layer correspondence, names the first layer whose error jumps and diagnoses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import MapspecError, escape
from ..progress import no_bar
from . import inputs as I
from .preprocess import from_side
from .diagnose import diagnose, diagnose_weights
from .layers import (LayerResult, candidates, compare_layers, derive_layers, explicit_layers, last_position,
                     why_no_layers)
from .rotary import expected as expected_rotary
from .metrics import ATOL, COSINE, LAYER_REL_TOL, Comparison, compare
from .runners import Runner, RunError, Side, make_runner
from .runners.choice import Evidence, choose


@dataclass
class Verdict:
    outputs: list                 # [(name, Comparison)]
    atol: float
    cosine: float
    layers: list = field(default_factory=list)
    first_bad: Optional[LayerResult] = None
    causes: list = field(default_factory=list)
    input_desc: str = ""
    input_shape: tuple = ()
    error: str = ""               # a side failed on the input (the layers before it are still compared)
    layers_note: str = ""         # --layers compared none: why

    @property
    def output(self) -> Optional[Comparison]:
        return self.outputs[0][1] if self.outputs else None

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.outputs) and all(c.ok(self.atol, self.cosine) for _, c in self.outputs)

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "atol": self.atol, "cosine_min": self.cosine, "input": self.input_desc,
            "input_shape": list(self.input_shape),
            "error": self.error or None,
            "output": self.output.to_json() if self.output else None,  # the main output (the first of "outputs")
            "outputs": [{"name": n, **c.to_json()} for n, c in self.outputs],
            "layers": [l.to_json() for l in self.layers],
            **({"layers_note": self.layers_note} if self.layers_note else {}),
            "first_divergence": None if self.first_bad is None else {
                "source": self.first_bad.source, "target": self.first_bad.target, "likely_causes": self.causes},
        }


def align_outputs(ys: np.ndarray, yt: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Line up two outputs: equal shapes; equal sizes (a 1x1000x1x1 Caffe classifier vs a 1x1000 Linear);
    or a sequence model's logits at every position vs one that returns the last position only (nanoGPT)."""
    if ys.shape == yt.shape:
        return ys, yt, ""
    if ys.size == yt.size:
        return ys, yt.reshape(ys.shape), ""
    last = last_position(ys, yt)
    if last is not None:
        return (*last, "last position")
    raise MapspecError(f"the outputs have different shapes: source {ys.shape}, target {yt.shape}")


def verify(source_runner: Runner, target_runner: Runner, x: np.ndarray, atol: float = ATOL,
           cosine: float = COSINE, pairs=None, input_desc: str = "", layer_rel_tol: float = LAYER_REL_TOL,
           weights=None, progress=no_bar) -> Verdict:
    """Run both sides on ``x``; ``weights(pair)`` gives (src name, src, tgt name, tgt) for a layer pair;
    ``progress(desc, total, unit)`` a bar over the steps (running each side, comparing each layer)."""
    with progress("verify", 2 + (len(pairs) if pairs is not None else 0), "step") as bar:
        return _verify(source_runner, target_runner, x, atol, cosine, pairs, input_desc, layer_rel_tol, weights, bar)


def _verify(source_runner, target_runner, x, atol, cosine, pairs, input_desc, layer_rel_tol, weights, bar):
    capture = pairs is not None
    errors = []

    def side(runner, name):
        bar.set_postfix_str(f"run {name}")
        try:
            return runner.run(x, capture=capture)
        except RunError as e:
            if not capture:
                raise
            errors.append(f"{name}: {e}")
            return None, e.acts
        finally:
            bar.update(1)

    ys, src_acts = side(source_runner, "source")
    yt, tgt_acts = side(target_runner, "target")
    outputs = []
    if ys is not None and yt is not None:
        (sname, a), (tname, b) = next(iter(ys.items())), next(iter(yt.items()))
        a, b, note = align_outputs(np.asarray(a), np.asarray(b))
        label = tname if sname in (tname, "output") else sname if tname == "output" else f"{sname} / {tname}"
        label = note if label == "output" and note else label + (f", {note}" if note else "")
        outputs.append((label, compare(a, b)))
        for name in list(ys)[1:]:
            if name in yt:
                outputs.append((name, compare(*align_outputs(np.asarray(ys[name]), np.asarray(yt[name]))[:2])))
    v = Verdict(outputs, atol, cosine, input_desc=input_desc, input_shape=tuple(x.shape), error="; ".join(errors))
    if capture:
        bar.set_postfix_str("compare layers")
        v.layers, v.first_bad = compare_layers(
            pairs, src_acts, tgt_acts, layer_rel_tol, source_runner.alternatives, done=lambda: bar.update(1),
            rotary=lambda s, t: expected_rotary(source_runner.rotary(s), target_runner.rotary(t)),
            inputs=lambda s, t: (source_runner.inputs_of(s), target_runner.inputs_of(t)))
        bar.update(max(0, len(pairs) - len(v.layers)))  # the pairs with no activation on a side: nothing to compare
        if not v.layers:
            v.layers_note = why_no_layers(pairs, src_acts, tgt_acts)
        bad = v.first_bad
        if bad is not None and bad.cause:
            v.causes = [bad.cause]
        elif bad is not None:
            if weights is not None and bad.pair is not None:
                v.causes = diagnose_weights(weights(bad.pair), source_runner.kernel_layout,
                                            target_runner.kernel_layout)
            s, t = src_acts[bad.source], tgt_acts[bad.target]
            cands = candidates(s, t)
            if cands:
                s, t = cands[0][1], cands[0][2]
            if not v.causes or bad.cmp is None:
                v.causes += diagnose(s, t, bad.source + " " + bad.target)
    return v


def _side(name: str, cfg: Optional[dict], spec, weights: str, fmt: Optional[str], graph, model, config,
          vars_: dict) -> Side:
    cfg = cfg or {}
    spec_dir = spec.spec_dir

    def spec_path(key):
        v = cfg.get(key)
        return os.path.join(spec_dir, v) if v and spec_dir else v

    flags = frozenset(k for k, v in (("config", config), ("model", model), ("graph", graph)) if v)
    graph = graph or spec_path("graph")
    config = config or spec_path("config")
    given = frozenset(k for k, v in (("config", config), ("model", model), ("graph", graph)) if v)
    kind = choose(Evidence(name, weights, fmt, cfg.get("run"), given, flags, bool(graph)))
    inp = cfg.get("input")
    return Side(name=name, kind=kind, weights=weights, weights_format=fmt,
                graph=graph, model=model or cfg.get("model"), model_from_cli=bool(model), config=config,
                params=None if model else cfg.get("params"),
                output=cfg.get("output"), input=inp.get("name") if isinstance(inp, dict) else inp,
                preprocess=from_side(cfg, f"verify.{name}"), vars=vars_)


def _make_input(args_input: Optional[str], shape_arg, cfg: dict, src: Runner, tgt: Runner, seed: int):
    icfg = cfg.get("input") or {}
    vocabs = [v for v in (src.vocab_size, tgt.vocab_size) if v]
    vocab = min(vocabs) if vocabs else None
    tokens_given = bool(args_input) and I.parse_tokens(args_input) is not None
    npy = bool(args_input) and args_input.lower().endswith(".npy")
    token_models = bool(vocab) and src.takes_tokens and tgt.takes_tokens
    file_given = bool(args_input) and not tokens_given and args_input != "random"
    if token_models and icfg.get("range") is not None and not file_given:
        raise MapspecError(f"verify.input.range {icfg['range']}: both models take token ids, drawn from the whole "
                           f"vocabulary ({vocab} ids): write verify.input as {{tokens: LENGTH}}")
    if tokens_given or (not file_given and ("tokens" in icfg or token_models)):  # a file given is the input
        for r, name in ((src, "source"), (tgt, "target")):
            if not r.takes_tokens:
                raise MapspecError(f"the {name} runs as {r.kind}, which takes no token ids: give an image, a .npy "
                                   f"array or random values")
        length = int(shape_arg[-1]) if shape_arg else int(icfg.get("tokens") or (icfg.get("shape") or [0])[-1]
                                                            or I.DEFAULT_TOKENS)
        inp = I.token_input(args_input, length, vocab, seed)
        return inp.array, inp.description
    shape = tuple(shape_arg or ())
    if not shape and npy:
        shape = None  # the array's own shape
    elif not shape:
        shape = tuple(icfg.get("shape") or ()) or src.input_shape() or tgt.input_shape() or ()
        if not shape:
            raise MapspecError("verify needs the input shape: give verify.input.shape in the spec or --input-shape")
    rng = tuple(icfg.get("range") or (0.0, 1.0))
    x = I.load_input(args_input, shape, rng, seed=seed)
    return x, args_input or f"seeded random uniform{list(rng)} (seed {seed})"


def run_verify(spec, source: str, converted: str, *, source_graph=None, target_graph=None, source_model=None,
               target_model=None, source_config=None, target_config=None, input=None, input_shape=None,
               seed: int = 0, layers: bool = False, atol=None, cosine=None, vars=None, vars_file=None,
               hidden_states: bool = False, progress=None) -> Verdict:
    """What ``mapspec verify`` does (``spec`` is a loaded Spec); ``progress(desc, total, unit)``, if given, makes
    the bars: the bytes of weights each side loads, then the steps of :func:`verify`."""
    from ..engine import plan
    from ..formats import open_checkpoint

    from ..engine import with_vars
    from ..language.config import with_config

    cfg = spec.verify or {}
    # the vars a factory may take: the spec's, its config file's (beside the source, or vars_file), --var
    vars_ = dict(with_vars(with_config(spec, source, vars_file, given=set(vars or ())), vars).vars)
    if input_shape is not None:
        input_shape = I.check_shape(input_shape, "--input-shape")
    if input and I.parse_tokens(input) is None and input != "random" and not os.path.isfile(input):
        raise MapspecError(f"{input}: no such input file (or write tokens:ID,ID,... / random-tokens:LENGTH)")
    src, tgt = _load([_side("source", cfg.get("source"), spec, source, spec.source.format, source_graph,
                            source_model, source_config, vars_),
                      _side("target", cfg.get("target"), spec, converted, spec.target.format, target_graph,
                            target_model, target_config, vars_)], progress)
    if hidden_states:
        for r, name in ((src, "source"), (tgt, "target")):
            if not hasattr(r, "hidden_states"):
                raise MapspecError(f"--hidden-states compares transformers models; the {name} runs as {r.kind}")
            r.hidden_states = True
    x, desc = _make_input(input, input_shape, cfg, src, tgt, seed)
    pairs, weights = None, None
    if layers:
        p = plan(spec, source, template=None, relax=("missing-target", "unexpected-target"), vars=vars or {},
                 vars_file=vars_file, no_tokenizer=True)  # tensors only: the tokenizer is not compared
        try:
            derived = derive_layers(p, src, tgt)
        finally:
            p.source.close()
        pairs = explicit_layers(cfg["layers"]) if cfg.get("layers") else derived
        by_target = {pr.target: pr.tensors for pr in derived}

        def weights(pair):
            tensors = pair.tensors or by_target.get(pair.target, [])
            out = []
            with open_checkpoint(source, format=spec.source.format) as rs, open_checkpoint(converted) as rt:
                names = set(rt.names())
                for sname, tname in tensors:
                    if tname in names:
                        out.append((sname, np.array(rs.read(sname)), tname, np.array(rt.read(tname))))
            return out

    tol = cfg.get("tolerance", {})
    atol = atol if atol is not None else tol.get("atol", ATOL)
    cosine = cosine if cosine is not None else tol.get("cosine", COSINE)
    return verify(src, tgt, x, atol=atol, cosine=cosine, pairs=pairs, input_desc=desc, weights=weights,
                  progress=progress or no_bar)


def _nbytes(path: str, fmt: Optional[str]) -> int:
    """The bytes of a checkpoint's tensors, from its metadata (0 if mapspec cannot open it: its runner will say)."""
    from ..formats import open_checkpoint

    try:
        with open_checkpoint(path, format=fmt) as r:
            return sum(i.nbytes for i in r.infos().values())
    except MapspecError:
        return 0


def _load(sides: list, progress) -> list:
    """Build each side's runner; with ``progress``, under a bar over the bytes of weights they load."""
    if progress is None:
        return [make_runner(s) for s in sides]
    sizes = [_nbytes(s.weights, s.weights_format) for s in sides]
    runners = []
    with progress("load", sum(sizes), "iB") as bar:
        for side, size in zip(sides, sizes):
            bar.set_postfix_str(f"{side.name} " + escape(os.path.basename(side.weights))[-30:])
            done = [0]

            def loaded(n: int) -> None:
                n = min(n, size - done[0])  # never past this side's share
                done[0] += n
                bar.update(n)

            side.loaded = loaded
            runners.append(make_runner(side))
            bar.update(size - done[0])  # runners that load a file whole (keras, onnx, the executors) at once
    return runners
