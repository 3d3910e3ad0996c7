"""Runs a torch ``nn.Module`` built by a factory, with the converted (or source) weights loaded strictly.

With ``capture``, forward hooks collect every named module's output (the first tensor of a
tuple), in execution order, for layer-by-layer comparison.  Also the base of the
transformers runner.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ...errors import MapspecError
from ...formats import open_checkpoint
from .base import Runner, RunError, Side, build_model


def state_dict(path: str, fmt=None, loaded=None) -> dict:
    import torch

    state = {}
    with open_checkpoint(path, format=fmt) as r:
        for k in r.names():
            a = np.array(r.read(k))
            if loaded is not None:
                loaded(a.nbytes)
            if a.dtype.name == "bfloat16":
                state[k] = torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
            else:
                state[k] = torch.from_numpy(a)
    return state


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):  # transformers' ModelOutput is an ordered dict of what was computed
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


class TorchRunner(Runner):
    kind = "torch"
    takes_tokens = True

    def __init__(self, model, weights: str, weights_format=None, loaded=None, state=None):
        import torch

        self.torch = torch
        self.model = model
        self.load(state if state is not None else state_dict(weights, weights_format, loaded), weights)
        self.model.train(False)  # inference mode: BatchNorm uses running stats, dropout is off
        self.vocab_size = self._vocab()

    def load(self, state: dict, weights: str) -> None:
        try:
            result = self.model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # torch: a tensor's shape is not the model's (a config that does not fit)
            lines = [l.strip() for l in str(e).splitlines() if l.strip()]
            first = next((l for l in lines if l.startswith("size mismatch")), lines[-1] if lines else "")
            raise MapspecError(f"{weights}: does not load into the {self.kind} model built from its config: "
                               f"{first} (does the config describe these weights? e.g. head_dim)") from None
        # a parameter shared under several names (tied embeddings) needs only one of them in the file
        aliases: dict = {}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            aliases.setdefault(id(p), []).append(name)
        by_name = {n: names for names in aliases.values() for n in names}
        missing = [k for k in result.missing_keys if not any(a in state for a in by_name.get(k, []))]
        problems = []
        if missing:
            problems.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
        if result.unexpected_keys:
            problems.append(f"unexpected {len(result.unexpected_keys)}: {', '.join(result.unexpected_keys[:5])}")
        if problems:
            raise MapspecError(f"{weights}: does not load into the {self.kind} model strictly ("
                               + "; ".join(problems) + ")")

    def _vocab(self):
        nn = self.torch.nn
        for mod in self.model.modules():
            if next(mod.parameters(recurse=False), None) is not None:
                return mod.num_embeddings if isinstance(mod, nn.Embedding) else None
        return None

    def forward(self, x):
        return self.model(x)

    def rotary(self, layer: str):
        """The rotary layout of ``layer``'s output (see ``verify/rotary.py``): the model's own word (a reference
        model's ``rotary_layout``), else transformers' model type."""
        from ..rotary import hf_layout

        own = getattr(self.model, "rotary_layout", None)
        if callable(own):
            return own(layer)
        return hf_layout(getattr(getattr(self.model, "config", None), "model_type", None), layer)

    def outputs(self, y) -> "OrderedDict":
        t = _first_tensor(y)
        if t is None:
            raise MapspecError(f"the {self.kind} model returned {type(y).__name__}, not a tensor")
        return OrderedDict([("output", t.detach().float().numpy())])

    def run(self, x, capture=False):
        torch = self.torch
        acts: OrderedDict = OrderedDict()
        hooks = []
        if capture:
            for name, mod in self.model.named_modules():
                if not name:
                    continue

                def hook(_m, _inp, out, name=name):
                    t = _first_tensor(out)
                    if t is not None and name not in acts:
                        acts[name] = t.detach().float().numpy().copy()
                hooks.append(mod.register_forward_hook(hook))
        try:
            with torch.no_grad():
                y = self.forward(torch.from_numpy(self.prepare(x)))
        except MapspecError:
            raise
        except Exception as e:  # the model's own code failed on this input (a shape that does not fit, ...)
            raise RunError(f"the {self.kind} model failed on the input: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}", acts) from None
        finally:
            for h in hooks:
                h.remove()
        return self.outputs(y), acts


def build(side: Side) -> TorchRunner:
    import torch

    if not side.model:
        raise MapspecError(f"the torch {side.name} needs a model factory (module:function): pass {side.flag}-model")
    model = build_model(side, (torch.nn.Module,), "a torch.nn.Module")
    return TorchRunner(model, side.weights, side.weights_format, side.loaded)
