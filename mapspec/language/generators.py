"""Generators: plain functions that compute a target tensor or a metadata value from numbers and text.

A spec names one where the target holds something no source tensor does, computed from config vars
(llama.cpp's ``rope_freqs.weight`` for Llama 3 rope scaling) or from facts of the conversion (the
parameter count behind ``general.size_label``)::

    - to: rope_freqs.weight
      generate: {llama3_rope_factors: {base: "{rope_theta}", dim: "{head_dim}", ...}}
      when: [{var: rope_type, is: llama3}]

    general.size_label: {type: string, generate: {size_label: {params: "{output_params}"}}}

A generator never reads a file: its arguments are numbers or text (each of a declared kind, checked
before it runs) and it returns a numpy array (a tensor) or a value (metadata).
"""

from __future__ import annotations

import math
import re
from typing import Callable, NamedTuple

import numpy as np

from ..errors import MapspecError

KINDS = {"float": (int, float), "int": (int,), "text": (str,), "floats": (list,)}
MAX_ELEMENTS = 1 << 20  # a generated tensor's elements (a rotary dimension is a few hundred)


class Generator(NamedTuple):
    fn: Callable
    args: dict  # name -> kind ("float", "int", "text")
    returns: str  # "tensor" or "value"
    doc: str


GENERATORS: dict[str, Generator] = {}


def generator(returns: str, **args: str):
    def register(fn):
        GENERATORS[fn.__name__] = Generator(fn, args, returns, (fn.__doc__ or "").strip().splitlines()[0])
        return fn
    return register


def run(name: str, args: dict, where: str) -> object:
    """Call generator ``name`` with bound ``args``, each checked against its declared kind."""
    gen = GENERATORS[name]
    for k, kind in gen.args.items():
        v = args.get(k)
        if isinstance(v, bool) or not isinstance(v, KINDS[kind]):
            want = {"float": "a number", "int": "an integer", "text": "text", "floats": "a list of numbers"}[kind]
            raise MapspecError(f"{where}: {name} argument {k!r} must be {want}, not {v!r}")
        if kind == "floats" and not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise MapspecError(f"{where}: {name} argument {k!r} must be a list of numbers, not {v!r}")
    return gen.fn(**{k: args[k] for k in gen.args})


@generator("tensor", base="float", dim="int", factor="float", low_freq_factor="float", high_freq_factor="float",
           original_context="int")
def llama3_rope_factors(base, dim, factor, low_freq_factor, high_freq_factor, original_context) -> np.ndarray:
    """Llama 3 rope scaling: one float32 factor per rotary pair (llama.cpp's rope_freqs.weight).

    The steps and roundings of llama.cpp's converter (float32 throughout; ``a / x`` of a number by a
    tensor is ``a * (1 / x)`` there, as in torch); the power is torch's float32 pow, which the
    converter uses, when torch is installed (numpy's rounds a few values one unit in the last place
    differently), else numpy's."""
    if dim <= 0 or dim % 2:
        raise MapspecError(f"llama3_rope_factors: the rotary dimension must be even and positive, not {dim}")
    if not 0 < dim <= MAX_ELEMENTS:
        raise MapspecError(f"llama3_rope_factors: a rotary dimension of {dim} is not one of a model (at most "
                           f"{MAX_ELEMENTS})")
    if not (base > 0 and factor > 0 and low_freq_factor > 0 and original_context > 0):
        raise MapspecError(f"llama3_rope_factors: base {base}, factor {factor}, low_freq_factor {low_freq_factor} "
                           f"and original_context {original_context} must be positive")
    if not high_freq_factor > low_freq_factor:
        raise MapspecError(f"llama3_rope_factors: high_freq_factor {high_freq_factor} must be larger than "
                           f"low_freq_factor {low_freq_factor}")
    f32 = np.float32
    exponent = np.arange(0, dim, 2, dtype=f32) / f32(dim)
    power = _pow32(base, exponent)
    with np.errstate(all="ignore"):  # an overflow shows as a non-finite factor, refused below
        freqs = np.reciprocal(power)
        wavelen = np.reciprocal(freqs) * f32(2 * math.pi)
        smooth = (np.reciprocal(wavelen) * f32(original_context) - f32(low_freq_factor)) / f32(
            high_freq_factor - low_freq_factor)
        mid = np.reciprocal((f32(1) - smooth) / f32(factor) + smooth)
    high, low = f32(original_context / high_freq_factor), f32(original_context / low_freq_factor)
    out = np.where(wavelen < high, f32(1), np.where(wavelen > low, f32(factor), mid)).astype(f32)
    if not np.isfinite(out).all():
        raise MapspecError(f"llama3_rope_factors: factors are not finite (factor {factor}, base {base})")
    return out


def _pow32(base: float, exponent: np.ndarray) -> np.ndarray:
    try:
        import torch
    except ImportError:
        return np.power(np.float32(base), exponent)
    return torch.pow(torch.tensor(float(base), dtype=torch.float32), torch.from_numpy(exponent)).numpy()


@generator("value", params="int")
def size_label(params) -> str:
    """A model's size class from its parameter count, as llama.cpp's converter writes general.size_label
    ("68K", "8.0B"): the count in thousands, millions, billions or trillions with at least two digits."""
    for limit, scale, suffix in ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M")):
        if params > limit:
            break
    else:
        scale, suffix = 1e-3, "K"
    scaled = params * scale
    digits = max(2 - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{digits}f}{suffix}"


@generator("value", params="int", expert_params="int", experts="int")
def moe_size_label(params, expert_params, experts) -> str:
    """A mixture of experts' size class as llama.cpp's converter writes general.size_label ("8x7.2B"): the
    expert count, then the parameters outside the stacked experts plus one expert's, as size_label writes them;
    without stacked experts (``experts`` 0) size_label's."""
    if experts <= 0:
        return size_label(params)
    shared = params - expert_params * experts
    return f"{experts}x{size_label(shared + expert_params)}"


@generator("tensor", values="floats", dim="int")
def rope_factors(values, dim) -> np.ndarray:
    """A config's per-pair rotary factors (longrope's long_factor / short_factor) as llama.cpp's
    rope_factors_long/short.weight: float32, one per rotary pair of a ``dim``-wide rotary part."""
    if dim <= 0 or dim % 2 or len(values) != dim // 2:
        raise MapspecError(f"rope_factors: {len(values)} factors, but a rotary dimension of {dim} has {dim // 2} "
                           f"pairs; the config's factors do not belong to this model")
    out = np.asarray(values, dtype=np.float32)
    if not np.isfinite(out).all():
        raise MapspecError("rope_factors: the factors are not finite float32 numbers")
    return out


@generator("value", context="int", original_context="int")
def longrope_attn_factor(context, original_context) -> float:
    """Phi-3's longrope attention factor as llama.cpp's converter writes rope.scaling.attn_factor:
    sqrt(1 + ln(s) / ln(original_context)) for s = context / original_context > 1, else 1."""
    if context <= 0 or original_context <= 1:
        raise MapspecError(f"longrope_attn_factor: contexts {context} and {original_context} must be positive "
                           f"(the original one above 1)")
    scale = context / original_context
    return math.sqrt(1 + math.log(scale) / math.log(original_context)) if scale > 1.0 else 1.0


@generator("value", mscale_all_dim="float")
def deepseek2_yarn_log_multiplier(mscale_all_dim) -> float:
    """llama.cpp's deepseek2 rope.scaling.yarn_log_multiplier: 0.1 x the yarn mscale_all_dim (the scale its
    converter writes for that architecture, not the multiplier other architectures take)."""
    return 0.1 * mscale_all_dim


@generator("value", head_dim="int", fraction="float")
def rotary_dims(head_dim, fraction) -> int:
    """The rotary part of a head with partial rotary (GPT-NeoX's rotary_pct / partial_rotary_factor): the
    whole part of fraction x head_dim, as llama.cpp's converter writes rope.dimension_count."""
    if not 0 < fraction <= 1 or head_dim <= 0:
        raise MapspecError(f"rotary_dims: the rotary fraction must be in (0, 1] and head_dim positive, not "
                           f"{fraction} and {head_dim}")
    return int(fraction * head_dim)


_VERSION = re.compile(r"^(v\d+(?:\.\d+)*|\d.*)$")


@generator("value", name_or_path="text", folder="text")
def hf_model_name(name_or_path, folder) -> str:
    """general.name as llama.cpp's converter derives it without a model card: the config's
    ``_name_or_path`` when it is a model id (``org/name``, at most one slash), else the folder's name;
    the part after the org, words split at '-' and lower-case words title-cased (not versions)."""
    model_id = name_or_path if name_or_path and name_or_path.count("/") <= 1 else folder
    full = model_id.split("/", 1)[1] if "/" in model_id and " " not in model_id else model_id
    return " ".join(w.title() if w.islower() and not _VERSION.match(w) else w
                    for w in full.strip().replace("-", " ").split())
