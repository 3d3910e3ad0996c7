"""The model factories a spec may name: the registry ``FACTORIES`` is the one home of that decision.

A spec is data, so its ``verify:`` section names a model by a registered name (``model: densenet121``)
and may pass only the typed hyper-parameters that factory declares (``params: {num_classes: 10}``),
each checked for its type and range before anything runs.  No declared parameter is a path: what a
factory reads comes from the command line (``checkpoint``: the path of the weights the user gave,
whose model config lies beside them), never from the spec.  Anything else (your own model code,
seeded weight writers, test helpers) is reachable only from the command line (``--source-model`` /
``--target-model``), because the user typed it.

Importing this module imports no framework: ``ref`` is imported when the model is built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Int:
    low: int
    high: int

    def check(self, v: Any) -> Optional[str]:
        if not isinstance(v, int) or isinstance(v, bool):
            return f"must be an integer ({self.low}..{self.high}), not {_show(v)}"
        if not self.low <= v <= self.high:
            return f"must be between {self.low} and {self.high}, not {_show(v)}"
        return None


@dataclass(frozen=True)
class Float:
    low: float
    high: float

    def check(self, v: Any) -> Optional[str]:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return f"must be a number ({self.low}..{self.high}), not {_show(v)}"
        if not (math.isfinite(v) and self.low <= v <= self.high):
            return f"must be between {self.low} and {self.high}, not {_show(v)}"
        return None


@dataclass(frozen=True)
class Bool:
    def check(self, v: Any) -> Optional[str]:
        return None if isinstance(v, bool) else f"must be true or false, not {_show(v)}"


@dataclass(frozen=True)
class Choice:
    values: tuple  # plain words: never a path

    def check(self, v: Any) -> Optional[str]:
        return None if isinstance(v, str) and v in self.values else \
            f"must be one of {', '.join(self.values)}, not {_show(v)}"


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, int) or isinstance(v, bool) or abs(v) < 10 ** 30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Factory:
    ref: str                          # module:function inside mapspec.models, imported when the model is built
    params: dict = field(default_factory=dict)  # name -> Int / Float / Bool / Choice: what a spec may pass
    checkpoint: bool = False          # takes ``weights``: the checkpoint path given on the command line


NUM_CLASSES = Int(1, 32768)
_DENSENETS = {f"{p}densenet{d}": Factory(f"mapspec.models.densenet:{p}densenet{d}", {"num_classes": NUM_CLASSES})
              for p in ("", "efficient_") for d in (121, 161, 169, 201)}
_KERAS_CAFFENETS = {n: Factory(f"mapspec.models.caffenet:{n}") for n in (
    "keras_caffenet_split", "keras_caffenet_grouped", "keras_caffenet_split_tiny", "keras_caffenet_grouped_tiny")}
_LLMS = {n: Factory(f"mapspec.models.llm:{n}", checkpoint=True) for n in (
    "meta_llama", "hf_llama", "hf_mixtral", "hf_gpt2", "hf_gpt_neox", "split_gpt_neox", "nanogpt")}

FACTORIES: dict[str, Factory] = {
    **_DENSENETS,
    "mobilefacenet": Factory("mapspec.models.mobilefacenet:mobilefacenet", {"normalize": Bool()}),
    "iresnet": Factory("mapspec.models.iresnet:iresnet", {"depth": Int(18, 100), "num_features": Int(1, 2048)}),
    **_KERAS_CAFFENETS,
    **_LLMS,
}

NAME = re.compile(r"[a-z][a-z0-9_]*")


def problems(name: Any, params: Any) -> list[tuple[Optional[str], str]]:
    """What is wrong with a spec naming ``name`` with ``params``: [(parameter or None, message)]."""
    import difflib

    if not isinstance(name, str) or name not in FACTORIES:
        if isinstance(name, str) and ":" in name:
            fn = name.rsplit(":", 1)[1]
            hint = f"; write model: {fn}" if fn in FACTORIES else ""
            return [(None, f"{name!r} names code, not a registered model factory{hint} (a spec names only "
                           f"factories registered in mapspec.models.registry; pass your own with --SIDE-model on "
                           f"the command line)")]
        close = difflib.get_close_matches(str(name), list(FACTORIES), n=1)
        return [(None, f"{_show(name)} is not a registered model factory" +
                 (f" (did you mean {close[0]!r}?)" if close else f"; registered: {', '.join(FACTORIES)}") +
                 "; pass your own with --SIDE-model on the command line")]
    if params is None:
        return []
    if not isinstance(params, dict):
        return [(None, f"params must be a mapping of {name}'s parameters, not {type(params).__name__}")]
    f, out = FACTORIES[name], []
    for key, value in params.items():
        kind = f.params.get(key) if isinstance(key, str) else None
        if kind is None:
            takes = ", ".join(f.params) if f.params else "none"
            out.append((key, f"{name} takes no parameter {_show(key)} (its parameters: {takes})"))
            continue
        why = kind.check(value)
        if why:
            out.append((key, f"{name} parameter {key} {why}"))
    return out


def check(name: Any, params: Any, side: str = "target") -> dict:
    """The validated keyword arguments for ``name`` (a registered factory); else a MapspecError."""
    from ..errors import MapspecError

    found = problems(name, params)
    if found:
        raise MapspecError(f"verify.{side}.model: " + found[0][1].replace("--SIDE-", f"--{side}-"))
    return dict(params or {})
