"""What every runner shares: the :class:`Side` it is built from, the :class:`Runner` interface,
and loading a model factory named ``module:function``.

A spec may name factories only inside ``mapspec.models`` (a spec is data and must not choose
code to run); the command line (``--source-model`` / ``--target-model``) may name any
importable module or a ``path/to/file.py``, because the user typed it.
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

SPEC_FACTORY_PREFIX = "mapspec.models."


@dataclass
class Side:
    """One side of a verification, from the spec's ``verify.source``/``verify.target`` and the command line."""

    name: str                       # "source" or "target": how errors name the side
    kind: str                       # a RUNNERS key
    weights: str                    # the checkpoint this side runs
    weights_format: Optional[str] = None
    graph: Optional[str] = None     # prototxt / -symbol.json, resolved
    model: Optional[str] = None     # a factory module:function
    model_from_cli: bool = False    # named on the command line (may be outside mapspec.models)
    config: Optional[str] = None    # a transformers config.json (default: beside the weights)
    output: Optional[str] = None
    input: Optional[str] = None
    channels: str = "rgb"
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
    channels = "rgb"
    kernel_layout = "oihw"   # how this side stores convolution kernels (weights are compared in OIHW)
    vocab_size: Optional[int] = None  # set by models that take token ids
    takes_tokens = False              # integer inputs (token ids) make sense for this runner

    def prepare(self, x: np.ndarray) -> np.ndarray:
        if x.dtype.kind in "iu":
            return np.ascontiguousarray(x, dtype=np.int64)
        if self.channels == "bgr":
            x = x[:, ::-1]
        return np.ascontiguousarray(x, dtype=np.float32)

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


def load_factory(ref: str, from_cli: bool, side: str = "target") -> Callable:
    """The factory ``module:function`` (or, from the command line, ``file.py:function``)."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise MapspecError(f"model {ref!r} must be written module:function (e.g. mypkg.models:build)")
    mod_name, fn_name = ref.split(":")
    if not from_cli and not mod_name.startswith(SPEC_FACTORY_PREFIX):
        raise MapspecError(f"a spec may only name model factories in {SPEC_FACTORY_PREFIX}* (got {ref!r}); "
                           f"pass your own with --{side}-model on the command line")
    try:
        if from_cli and mod_name.endswith(".py"):
            mod = _module_from_file(mod_name)
        else:
            added = from_cli and os.getcwd() not in sys.path and "" not in sys.path
            if added:
                sys.path.insert(0, os.getcwd())  # as `python -m` would: the user's own package beside them
            try:
                mod = importlib.import_module(mod_name)
            finally:
                if added:
                    sys.path.remove(os.getcwd())
    except MapspecError:
        raise
    except Exception as e:  # an import runs the user's code: any exception is theirs to see, in one line
        raise MapspecError(f"--{side}-model {ref}: cannot import {mod_name!r}: {type(e).__name__}: {e}") from None
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


def call_factory(fn: Callable, ref: str, side: Side, model_types: tuple, what: str):
    """Call a factory, passing the spec's vars it names as parameters (and ``weights``, the checkpoint's path,
    if it takes that: a model built from the config beside its weights); the result must be a model."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in side.vars.items() if takes_all or k in params}
    if "weights" in params:
        kwargs["weights"] = side.weights
    try:
        model = fn(**kwargs)
    except MapspecError:  # a shipped factory's own error names the file and the fix
        raise
    except Exception as e:  # the user's code
        raise MapspecError(f"model factory {ref} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, model_types):
        raise MapspecError(f"model factory {ref} returned a {type(model).__name__}, not {what}")
    return model
