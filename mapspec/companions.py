"""Companion files: what a model folder needs beside its weights (``config.json``, tokenizer files, ``params.json``).

A spec declares them under ``target: companions:``; they are written only when the output is a
model folder (``-o DIR/``, a sharded checkpoint), next to its index::

    target:
      companions:
        copy: [config.json, generation_config.json, tokenizer.json]   # from the source's folder, those it holds
        json:                                                         # made from the spec's vars
          config.json:
            model_type: llama
            hidden_size: "{hidden_size}"                   # a lone {expr} keeps its type (int, float)
            tie_word_embeddings: {$absent: lm_head.weight} # true when the output has no such tensor
            dtype: {$dtype: model.embed_tokens.weight}     # the torch dtype name of an output tensor
            bos_token_id: {$source_metadata: tokenizer.ggml.bos_token_id, optional: true}  # null if absent
        tokenizer: gguf          # tokenizer files from a GGUF source's tokenizer.ggml.* (transformers' converter)

Value forms (:data:`FORMS`): ``$absent``, ``$dtype``, ``$source_metadata`` as above; ``{$count: PATTERN}``
(output tensors matching it: a layer count); ``{$meta_ffn: multiple_of | ffn_dim_multiplier, dim, hidden}``
(Meta params.json values that give a feed-forward width); ``{$ratio: [PART, WHOLE]}`` (a float fraction).
``shape('tensor')`` in an ``{expr}`` is an output tensor's shape.  A target with ``file:`` (Meta's ``consolidated.00.pth``) writes that one file in
the folder instead of shards.

Each kind is one plain function of :data:`KINDS`.  Files are built before anything is written (an
error leaves no output); a file that exists is refused without ``--force``; the files are written into
the output's staging folder and published with the weights, whole
(:func:`mapspec.formats.shard_output.staged`).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, Optional

from .errors import MapspecError, MissingDependency

MAX_COPY_BYTES = 1 << 30  # a tokenizer.json is a few MB; a companion is never a weights file
# torch's names of mapspec's dtype names (what transformers writes as config.json's "dtype")
TORCH_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64"}
# what transformers' save_pretrained of a tokenizer loaded from a GGUF adds about that loading only
_LOAD_ONLY_KEYS = ("is_local", "local_files_only", "_commit_hash", "name_or_path")


def declared(spec) -> dict:
    raw = getattr(spec.target, "companions", None)
    return raw if isinstance(raw, dict) else {}


def folder_file(spec, output) -> Optional[str]:
    """``DIR/FILE`` when ``output`` names a folder (``-o DIR/``) and the spec's target keeps its weights in one
    file there (``target: file: consolidated.00.pth``); else None (a folder output is shards and an index)."""
    from .formats import sharded

    name = getattr(spec.target, "file", None)
    if not name or sharded.output_target(output, None) is None or sharded.is_index(output):
        return None
    return os.path.join(str(output), name)


def named(spec) -> list:
    """The companion file names a spec declares by name (copied or made from vars; not the tokenizer's)."""
    raw = declared(spec)
    return list(raw.get("copy") or []) + list(raw.get("json") or {})


def source_folder(plan) -> str:
    path = plan.source.path
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def _copy(plan, value, files: dict, notes: list, no_tokenizer: bool) -> None:
    folder = source_folder(plan)
    missing = []
    for name in value:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            missing.append(name)
            continue
        size = os.path.getsize(path)
        if size > MAX_COPY_BYTES:
            raise MapspecError(f"{path}: {size} bytes is not a companion file (at most {MAX_COPY_BYTES})")
        try:
            with open(path, "rb") as f:
                files[name] = f.read()
        except OSError as e:
            raise MapspecError(f"{path}: cannot read the companion file: {e.strerror}") from None
    if "config.json" in missing:  # the one file every consumer of a model folder reads
        notes.append(f"{folder}: no config.json beside the source, so the output folder has none (from_pretrained "
                     f"needs one)")


def _json(plan, value, files: dict, notes: list, no_tokenizer: bool) -> None:
    for name, content in value.items():
        data = _value(plan, content, f"target.companions.json.{name}")
        files[name] = (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _tokenizer(plan, value, files: dict, notes: list, no_tokenizer: bool) -> None:
    if value != "gguf":
        raise MapspecError(f"{plan.spec.path}: target.companions.tokenizer: {value!r} is not a tokenizer source "
                           f"(gguf)")
    if no_tokenizer:
        notes.append("no tokenizer files written (--no-tokenizer): AutoTokenizer cannot load the folder")
        return
    types = plan.source.metadata_types() if hasattr(plan.source, "metadata_types") else {}
    if "tokenizer.ggml.model" not in types:
        raise MapspecError(f"{plan.source.path}: the GGUF holds no tokenizer (tokenizer.ggml.model), so the output "
                           f"folder would have none; pass --no-tokenizer to write it without tokenizer files")
    files.update(gguf_tokenizer_files(plan.source.path))


def gguf_tokenizer_files(path: str) -> dict:
    """{file name: bytes} of the Hugging Face tokenizer transformers builds from a GGUF's tokenizer.ggml.*
    (``AutoTokenizer.from_pretrained(folder, gguf_file=...)``, then ``save_pretrained``)."""
    try:
        import transformers
    except ImportError:
        raise MissingDependency("transformers", f"{path}: making the tokenizer files from a GGUF",
                                "pass --no-tokenizer") from None
    folder, name = os.path.split(os.path.abspath(path))
    try:
        tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as e:  # noqa: BLE001 - transformers' own error, one line
        raise MapspecError(f"{path}: transformers cannot build a tokenizer from the GGUF's tokenizer.ggml.* "
                           f"({type(e).__name__}: {e}); pass --no-tokenizer to write the folder without one") from None
    out = {}
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        for f in sorted(os.listdir(d)):
            with open(os.path.join(d, f), "rb") as fh:
                out[f] = fh.read()
    if "tokenizer_config.json" in out:
        cfg = json.loads(out["tokenizer_config.json"])
        for k in _LOAD_ONLY_KEYS:
            cfg.pop(k, None)
        out["tokenizer_config.json"] = (json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return out


KINDS: dict[str, Callable] = {"copy": _copy, "json": _json, "tokenizer": _tokenizer}


def _value(plan, v, where: str):
    from .language.expr import SHAPE_OF, ExprError, Template

    if isinstance(v, str):
        try:
            return Template(v).value({**plan.spec.vars, SHAPE_OF: lambda name: _shape(plan, name)})
        except ExprError as e:
            raise MapspecError(f"{plan.spec.path}: {where}: {v!r}: {e}") from None
    if isinstance(v, list):
        return [_value(plan, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        special = [k for k in v if isinstance(k, str) and k.startswith("$")]
        if special:
            return _special(plan, v, special[0], where)
        return {k: _value(plan, x, f"{where}.{k}") for k, x in v.items()}
    return v


def _shape(plan, name=None) -> list:
    """shape("tensor") in a companion's {expr}: the shape of an output tensor."""
    for s in plan.steps:
        if s.target == name:
            return [int(d) for d in s.out_meta.shape]
    raise KeyError(f"the output has no tensor {name!r}")


def _absent(plan, v: dict, arg, where: str):
    """``{$absent: tensor}``: true when the output has no such tensor (tied embeddings: no lm_head)."""
    return not any(s.target == arg for s in plan.steps)


def _dtype(plan, v: dict, arg, where: str):
    """``{$dtype: tensor}``: the torch dtype name of an output tensor (config.json's ``dtype``)."""
    step = next((s for s in plan.steps if s.target == arg), None)
    if step is None:
        raise MapspecError(f"{plan.spec.path}: {where}: the output has no tensor {arg!r} to take the dtype of")
    dtype = TORCH_DTYPES.get(step.out_meta.dtype)
    if dtype is None:
        raise MapspecError(f"{plan.spec.path}: {where}: {arg!r} is {step.out_meta.dtype}, not a float dtype "
                           f"transformers loads a model in")
    return dtype


def _source_metadata(plan, v: dict, arg, where: str):
    """``{$source_metadata: key}``: a value of the source's metadata (GGUF); ``optional: true``: null if absent."""
    meta = getattr(plan.source, "metadata", None)
    if isinstance(meta, dict) and arg in meta:
        return meta[arg]
    if v.get("optional") is True:
        return None
    raise MapspecError(f"{plan.source.path}: no metadata key {arg!r}, which {where} needs")


def _count(plan, v: dict, arg, where: str):
    """``{$count: "layers.<i>.attention.wq.weight"}``: how many output tensors the pattern matches."""
    from .language.pattern import Pattern, PatternSyntaxError

    try:
        pattern = Pattern(arg)
    except (PatternSyntaxError, TypeError) as e:
        raise MapspecError(f"{plan.spec.path}: {where}: {arg!r}: {e}") from None
    return sum(1 for s in plan.steps if pattern.match(s.target) is not None)


def meta_ffn_size(dim: int, multiple_of: int, ffn_dim_multiplier=None) -> int:
    """The feed-forward width Meta's Llama reference (llama/model.py, FeedForward) computes from params.json."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def meta_ffn(dim: int, hidden: int) -> dict:
    """params.json's ``multiple_of`` / ``ffn_dim_multiplier`` that give the feed-forward width ``hidden``:
    the largest power of two with no multiplier (Llama 2's 256), else ``multiple_of: hidden`` with the
    multiplier that brings 8/3 x dim down or up to it; checked with Meta's own formula."""
    for k in range(12, -1, -1):
        if meta_ffn_size(dim, 2 ** k) == hidden:
            return {"multiple_of": 2 ** k, "ffn_dim_multiplier": None}
    base = int(2 * (4 * dim) / 3)
    for mult in (hidden / base, (hidden - 0.5) / base):
        if base > 0 and meta_ffn_size(dim, hidden, mult) == hidden:
            return {"multiple_of": hidden, "ffn_dim_multiplier": mult}
    raise MapspecError(f"no params.json multiple_of / ffn_dim_multiplier gives Meta's feed-forward width {hidden} "
                       f"for dim {dim}")


def _meta_ffn(plan, v: dict, arg, where: str):
    """``{$meta_ffn: multiple_of | ffn_dim_multiplier, dim: EXPR, hidden: EXPR}`` (see :func:`meta_ffn`)."""
    dim, hidden = (_value(plan, v.get(k), f"{where}.{k}") for k in ("dim", "hidden"))
    if arg not in ("multiple_of", "ffn_dim_multiplier") or not all(isinstance(x, int) for x in (dim, hidden)):
        raise MapspecError(f"{plan.spec.path}: {where}: $meta_ffn takes multiple_of or ffn_dim_multiplier, with "
                           f"integer dim and hidden")
    return meta_ffn(dim, hidden)[arg]


def _ratio(plan, v: dict, arg, where: str):
    """``{$ratio: [PART, WHOLE]}``: PART / WHOLE as a float (a rotary fraction: rotary dims over head_dim), refused
    when the consumer's ``int(WHOLE * ratio)`` would not give PART back."""
    parts = _value(plan, arg, f"{where}.$ratio") if isinstance(arg, list) and len(arg) == 2 else None
    if not parts or not all(isinstance(x, int) and not isinstance(x, bool) for x in parts) or parts[1] <= 0:
        raise MapspecError(f"{plan.spec.path}: {where}: $ratio takes [part, whole], two integers (whole > 0)")
    part, whole = parts
    ratio = part / whole
    if int(whole * ratio) != part:
        raise MapspecError(f"{plan.spec.path}: {where}: {part}/{whole} as a float does not give {part} back "
                           f"(int({whole} * {ratio!r}))")
    return ratio


# Value forms of a JSON companion: {$name: argument, ...}, each a plain function (plan, the mapping, argument, where)
FORMS: dict[str, Callable] = {"$absent": _absent, "$dtype": _dtype, "$source_metadata": _source_metadata,
                              "$meta_ffn": _meta_ffn, "$count": _count, "$ratio": _ratio}


def _special(plan, v: dict, key: str, where: str):
    if key not in FORMS:
        raise MapspecError(f"{plan.spec.path}: {where}: {key!r} is not a companion value form "
                           f"({', '.join(FORMS)})")
    return FORMS[key](plan, v, v[key], where)


def _refused(plan, entries: list) -> None:
    """``refuse: [{source_tensor: NAME | source_metadata: KEY | var: NAME, except: [values], why: TEXT}]``: what
    the companions cannot express (the folder would compute another model than the source) stops the conversion."""
    meta = getattr(plan.source, "metadata", None)
    meta = meta if isinstance(meta, dict) else {}
    for e in entries:
        if "source_tensor" in e and e["source_tensor"] in plan.source.infos():
            held = f"holds {e['source_tensor']}"
        elif "source_metadata" in e and e["source_metadata"] in meta \
                and meta[e["source_metadata"]] not in (e.get("except") or []):
            held = f"has {e['source_metadata']} = {meta[e['source_metadata']]!r}"
        elif "var" in e and plan.spec.vars.get(e["var"]) is not None \
                and plan.spec.vars[e["var"]] not in (e.get("except") or []):
            held = f"has {e['var']} = {plan.spec.vars[e['var']]!r}"
        else:
            continue
        raise MapspecError(f"{plan.source.path}: {held} ({e.get('why')}), which the companion files of "
                           f"{plan.spec.name} cannot express, so the folder would compute another model; write the "
                           f"tensors to a file (-o FILE.safetensors) and give the model's config yourself")


def build(plan, no_tokenizer: bool = False) -> tuple[dict, list]:
    """({file name: bytes}, notes) of the companions ``plan``'s spec declares (JSON after copies: it wins)."""
    files: dict = {}
    notes: list = []
    raw = declared(plan.spec)
    _refused(plan, raw.get("refuse") or [])
    for kind in ("copy", "tokenizer", "json"):
        if kind in raw:
            KINDS[kind](plan, raw[kind], files, notes, no_tokenizer)
    return files, notes


def check_targets(folder: str, files: dict, force: bool) -> None:
    """Refuse, before anything is written, a companion that exists (without ``force``) or is not a file."""
    from .files import check_output_path

    for name in files:
        check_output_path(os.path.join(folder, name), force, "companion file", make_parent=True)


def write(stage: str, files: dict, folder: str) -> list:
    """Write ``files`` into the staging folder of a model-folder output (:func:`mapspec.formats.shard_output.staged`),
    which publishes them with the weights, whole; returns the paths they will have in ``folder``."""
    for name, data in sorted(files.items()):
        with open(os.path.join(stage, name), "xb") as f:
            f.write(data)
    return [os.path.join(folder, name) for name in sorted(files)]
