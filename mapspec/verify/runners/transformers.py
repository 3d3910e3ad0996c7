"""Runs a Hugging Face transformers model: built from a ``config.json`` (beside the weights, or
given with ``config:`` / ``--source-config`` / ``--target-config``) with ``from_config``, the
weights loaded strictly (tied weights need only one name), fed token ids; compares logits.

The model class is the config's ``architectures[0]`` when transformers defines it, else the
causal-LM auto class.  No code from the checkpoint is run (no ``trust_remote_code``).

A GGUF file is read by transformers' own GGUF loader (it needs the gguf package): the config from
the file's metadata (unless one is given with ``config:`` / ``--*-config``), the tensors renamed and
un-permuted by transformers' code, then loaded strictly like any other checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import OrderedDict

from ...errors import MapspecError, MissingDependency
from ...paths import checkpoint_dir
from .base import Side
from .torch import TorchRunner, _first_tensor

MAX_CONFIG_BYTES = 1 << 20


def _read_config(path: str) -> dict:
    if not os.path.isfile(path):
        raise MapspecError(f"{path}: no such transformers config (give config.json beside the weights, or pass it "
                           f"with --source-config / --target-config)")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise MapspecError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes: not a transformers config.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise MapspecError(f"{path}: not a readable JSON config: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model_type"), str):
        raise MapspecError(f"{path}: a transformers config.json is an object with a 'model_type'")
    return doc


def _model_class(transformers, doc: dict):
    archs = doc.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        cls = getattr(transformers, archs[0], None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return None


class TransformersRunner(TorchRunner):
    kind = "transformers"
    hidden_states = False  # also return every hidden state (verify --hidden-states)

    def __init__(self, model, weights: str, weights_format=None, loaded=None, state=None):
        super().__init__(model, weights, weights_format, loaded, state)
        self.vocab_size = getattr(model.config, "vocab_size", None) or self.vocab_size

    file_names: dict = {}  # a GGUF side: module -> the layer's name in the file (blk.0.attn_k)

    def run(self, x, capture=False):
        outputs, acts = super().run(x, capture)
        if self.file_names:  # name the layers as the file does, as the spec's rules name them
            acts = OrderedDict((self.file_names.get(k, k), v) for k, v in acts.items())
        return outputs, acts

    def rotary(self, layer: str):
        modules = {v: k for k, v in self.file_names.items()}
        return super().rotary(modules.get(layer, layer))

    def forward(self, x):
        extra = {"output_hidden_states": True} if self.hidden_states else {}
        return self.model(input_ids=x, **extra) if x.dtype == self.torch.int64 else self.model(x, **extra)

    def outputs(self, y):
        logits = getattr(y, "logits", None)
        t = logits if logits is not None else _first_tensor(y)
        if t is None:
            raise MapspecError(f"the transformers model returned {type(y).__name__} without logits or a tensor")
        out = OrderedDict([("logits" if logits is not None else "output", t.detach().float().numpy())])
        for i, h in enumerate(getattr(y, "hidden_states", None) or ()):
            out[f"hidden_states[{i}]"] = h.detach().float().numpy()
        return out


def _is_gguf(side: Side) -> bool:
    from ...formats import canonical, detect

    if side.weights_format:
        return canonical(side.weights_format) == "gguf"
    try:
        return detect(side.weights) == "gguf"
    except MapspecError:  # a directory or missing file: the checkpoint reader says what is wrong
        return False


def _gguf(path: str, model=None):
    """transformers' reading of a GGUF file: its config dict, or with ``model`` its state dict for it."""
    try:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        if model is None:
            return load_gguf_checkpoint(path)["config"]
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar would interleave with the report
            return load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    except ImportError as e:
        raise MissingDependency(e.name or "gguf", f"{path}: transformers' reading of a GGUF file") from None
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise MapspecError(f"{path}: transformers cannot load this GGUF file: {type(e).__name__}: {e}") from None


def _file_names(model, doc: dict) -> dict:
    """{module: layer name in the GGUF file} as transformers' GGUF loader mapped the file's tensors onto the
    model (``blk.0.attn_k.weight`` -> ``model.layers.0.self_attn.k_proj.weight``); empty if it cannot say."""
    try:
        from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                              get_gguf_hf_weights_map)

        processor = TENSOR_PROCESSORS.get(doc.get("model_type"), TensorProcessor)(config=doc)
        names = get_gguf_hf_weights_map(model, processor)
    except Exception:  # noqa: BLE001 - a transformers internal: without it the layers keep its module names
        return {}
    out = {}
    for gguf_name, hf_name in names.items():
        g, h = gguf_name.rsplit(".", 1)[0], hf_name.rsplit(".", 1)[0]
        if gguf_name.rsplit(".", 1)[-1] == hf_name.rsplit(".", 1)[-1]:
            out.setdefault(h, g)
    return out


def build(side: Side) -> TransformersRunner:
    import transformers

    transformers.logging.set_verbosity_error()  # its warnings about a config would bury the verdict
    gguf = _is_gguf(side)
    if gguf and not side.config:
        path, doc = side.weights, dict(_gguf(side.weights))
        if not isinstance(doc.get("model_type"), str):
            raise MapspecError(f"{path}: transformers found no model type in this GGUF file's metadata")
    else:
        path = side.config or os.path.join(checkpoint_dir(side.weights), "config.json")
        doc = _read_config(path)
    try:
        rest = {k: v for k, v in doc.items() if k != "model_type"}
        config = transformers.AutoConfig.for_model(doc["model_type"], **rest)
    except (ValueError, TypeError, KeyError) as e:
        raise MapspecError(f"{path}: transformers cannot build a config from it: {e}") from None
    config._attn_implementation = "eager"  # plain attention: deterministic, and hooks see every module
    cls = _model_class(transformers, doc)
    try:
        model = cls(config) if cls is not None else transformers.AutoModelForCausalLM.from_config(config)
    except (ValueError, TypeError, KeyError) as e:
        raise MapspecError(f"{path}: transformers cannot build a model from this config: {e}") from None
    state = _gguf(side.weights, model) if gguf else None
    runner = TransformersRunner(model, side.weights, side.weights_format, side.loaded, state)
    if gguf:
        runner.file_names = _file_names(model, doc)
    return runner
