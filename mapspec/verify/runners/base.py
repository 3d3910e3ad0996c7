"""What every runner shares: the :class:`Side` it is built from, the :class:`Runner` interface,
and building a side's model from its factory (:func:`build_model`).

A spec names only factories registered in ``mapspec.models.registry`` and passes only their
declared, typed parameters (a spec is data and must not choose code to run or files to touch);
the command line (``--source-model`` / ``--target-model``) may also name any importable
``module:function`` or a ``path/to/file.py:function``, because the user typed it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ...errors import MapspecError
from ..preprocess import Preprocess, apply


@dataclass
class Side:
    """One side of a verification, from the spec's ``verify.source``/``verify.target`` and the command line."""

    name: str                       # "source" or "target": how errors name the side
    kind: str                       # a RUNNERS key
    weights: str                    # the checkpoint this side runs
    weights_format: Optional[str] = None
    graph: Optional[str] = None     # prototxt / -symbol.json, resolved
    model: Optional[str] = None     # a registered factory (spec or command line) or module:function (command line)
    model_from_cli: bool = False    # named on the command line (may be the user's own code)
    params: Optional[dict] = None   # the spec's params for a registered factory (checked against the registry)
    config: Optional[str] = None    # a transformers config.json (default: beside the weights)
    output: Optional[str] = None
    input: Optional[str] = None     # the graph's input blob name
    preprocess: Preprocess = field(default_factory=Preprocess)  # this side's own input step (verify.<side>.input)
    vars: dict = field(default_factory=dict)
    loaded: Optional[Callable[[int], None]] = None  # told the bytes of each tensor read (a progress bar)

    @property
    def flag(self) -> str:
        return f"--{self.name}"


class RunError(MapspecError):
    """A model failed on the input; ``acts`` holds the activations captured before it failed."""

    def __init__(self, message: str, acts=None):
        super().__init__(message)
        self.acts = acts if acts is not None else OrderedDict()


class Runner:
    """One side of a comparison.  ``run`` returns ({output name: array}, {activation: array}) in execution order."""

    kind = "?"
    name = "?"                 # the side ("source", "target"): how errors name it
    preprocess = Preprocess()  # this side's own input step
    layout = "nchw"            # the layout the model takes when its step does not say
    kernel_layout = "oihw"   # how this side stores convolution kernels (weights are compared in OIHW)
    vocab_size: Optional[int] = None  # set by models that take token ids
    takes_tokens = False              # integer inputs (token ids) make sense for this runner

    def prepare(self, x: np.ndarray) -> np.ndarray:
        if x.dtype.kind in "iu":
            return np.ascontiguousarray(x, dtype=np.int64)
        return apply(self.preprocess, x, self.layout, f"verify.{self.name}")

    def run(self, x: np.ndarray, capture: bool = False) -> tuple["OrderedDict[str, np.ndarray]", OrderedDict]:
        raise NotImplementedError

    def alternatives(self, layer: str) -> list:
        """Other activations that may stand for ``layer`` (e.g. after its in-place ReLU)."""
        return []

    def layer_of(self, tensor: str) -> str:
        """The layer (module, op) owning a tensor of this side's checkpoint: ``conv1.weight`` -> ``conv1``."""
        if tensor.endswith("]") and "[" in tensor:
            return tensor[:tensor.rindex("[")]
        return tensor.rsplit(".", 1)[0]

    def rotary(self, layer: str) -> Optional[str]:
        """How ``layer``'s output pairs features for rotary embeddings ("interleaved", "halves"), if it says."""
        return None

    def inputs_of(self, layer: str) -> Optional[list]:
        """The layers whose outputs ``layer`` reads, in order, where the runner knows its graph."""
        return None

    def input_shape(self) -> Optional[tuple]:
        """The input shape the model declares (graph executors), if any."""
        return None


def build_model(side: Side, model_types: tuple, what: str):
    """The model of ``side`` from its factory: a registered one with the spec's checked params, or (command
    line only) the user's ``module:function`` / ``file.py:function``, which may also take the spec's vars."""
    from ...models import registry

    ref = side.model
    if not side.model_from_cli or (isinstance(ref, str) and ref in registry.FACTORIES):
        params = registry.check(ref, side.params if not side.model_from_cli else None, side.name)
        factory = registry.FACTORIES[ref]
        if factory.checkpoint:
            params["weights"] = side.weights
        return _call(_import(factory.ref, side.name), ref, params, model_types, what)
    fn = load_factory(ref, side.name)
    try:
        sig = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        sig = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())
    kwargs = {k: v for k, v in side.vars.items() if takes_all or k in sig}
    if "weights" in sig:
        kwargs["weights"] = side.weights
    return _call(fn, ref, kwargs, model_types, what)


def load_factory(ref: str, side: str = "target") -> Callable:
    """The factory the command line names: ``module:function`` or ``file.py:function``."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise MapspecError(f"model {ref!r} must be written module:function (e.g. mypkg.models:build) or be a "
                           f"registered model factory")
    mod_name = ref.split(":")[0]
    if mod_name.endswith(".py"):
        try:
            mod = _module_from_file(mod_name)
        except MapspecError:
            raise
        except Exception as e:  # an import runs the user's code: any exception is theirs to see, in one line
            raise MapspecError(f"--{side}-model {ref}: cannot import {mod_name!r}: {type(e).__name__}: {e}") \
                from None
        return _attr(mod, ref, side)
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the user's own package beside them
    try:
        return _import(ref, side)
    finally:
        if added:
            sys.path.remove(os.getcwd())


def _import(ref: str, side: str) -> Callable:
    mod_name = ref.split(":")[0]
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # an import runs the user's code: any exception is theirs to see, in one line
        raise MapspecError(f"--{side}-model {ref}: cannot import {mod_name!r}: {type(e).__name__}: {e}") from None
    return _attr(mod, ref, side)


def _attr(mod, ref: str, side: str) -> Callable:
    mod_name, fn_name = ref.split(":")
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise MapspecError(f"--{side}-model {ref}: module {mod_name!r} has no attribute {fn_name!r}")
    if not callable(fn) or inspect.ismodule(fn):
        raise MapspecError(f"--{side}-model {ref}: {fn_name!r} is a {type(fn).__name__}, not a factory function")
    return fn


def _module_from_file(path: str):
    if not os.path.isfile(path):
        raise MapspecError(f"model file {path}: no such file")
    name = "_mapspec_user_model_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _call(fn: Callable, ref: str, kwargs: dict, model_types: tuple, what: str):
    """Call a factory; the result must be a model."""
    try:
        model = fn(**kwargs)
    except MapspecError:  # a shipped factory's own error names the file and the fix
        raise
    except Exception as e:  # the user's code
        raise MapspecError(f"model factory {ref} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, model_types):
        raise MapspecError(f"model factory {ref} returned a {type(model).__name__}, not {what}")
    return model
