"""Runs whatever a model factory returns: a torch ``nn.Module`` (a transformers model included) or a
Keras model.  Used when the command line names a factory and the spec does not say how to run it."""

from __future__ import annotations

from ...errors import MapspecError
from .base import Runner, Side, build_model


def _is(obj, module_prefix: str, cls_name: str) -> bool:
    return any(c.__name__ == cls_name and c.__module__.startswith(module_prefix) for c in type(obj).__mro__)


def build(side: Side) -> Runner:
    if not side.model:
        raise MapspecError(f"the {side.name} needs a model factory (module:function): pass {side.flag}-model")
    model = build_model(side, (object,), "a model")
    if _is(model, "transformers", "PreTrainedModel"):
        from .transformers import TransformersRunner

        return TransformersRunner(model, side.weights, side.weights_format, side.loaded)
    if _is(model, "torch.nn", "Module"):
        from .torch import TorchRunner

        return TorchRunner(model, side.weights, side.weights_format, side.loaded)
    if _is(model, "keras", "Model"):
        from .keras import KerasRunner

        return KerasRunner(model, side.weights)
    raise MapspecError(f"model factory {side.model} returned a {type(model).__name__}, not a torch.nn.Module or "
                       f"a keras Model")
