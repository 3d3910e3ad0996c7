"""Vars from a model's own config file: ``config.json`` / ``params.json`` beside the checkpoint.

A spec's ``config:`` section names the files to look for and which key gives which var::

    config:
      file: [params.json]                   # beside the source checkpoint (inside it if it is a directory)
      vars:
        n_heads: n_heads                    # var: key
        n_kv_heads: [n_kv_heads, n_heads]   # keys tried in order (older params.json lack n_kv_heads)
        vocab: model.vocab_size             # a.b reads a nested key
        rope_theta: {one_of: [rope_parameters.rope_theta, rope_scaling.rope_theta, rope_theta]}
        rope_type: {one_of: [rope_parameters.rope_type, rope_scaling.rope_type], values: [default, llama3]}
        head_dim: {one_of: [head_dim], default: "{hidden_size // num_attention_heads}"}
        rope_factor: {one_of: [rope_parameters.factor], optional: true}
      inside: text_config                   # a multimodal config: keys are read inside this mapping

A mapping entry names the places a config format may hold the key (``one_of``): when several hold it
they must agree (no guess between two values).  ``values`` lists the values the spec implements (any
other is an error naming the key); ``default`` is for a config whose format lacks the key (an
``{expr}`` over the other config vars); ``optional: true`` leaves the var unset (a metadata entry or
generator using it must be guarded by ``when``; one that is not says which key is missing).

A source whose file holds its hyper-parameters (a GGUF's key/values) is read with ``from:
source_metadata`` instead of ``file:``; a key is then the metadata's full dotted name::

    config:
      from: source_metadata
      vars:
        num_attention_heads: llama.attention.head_count

The same rules hold (a key the metadata lacks is an error naming it); a GGUF float32 value is
read as the shortest decimal that gives that float32 (``1e-05``, not ``9.99999974e-06``), the
number the model's own config held before it was stored in 32 bits.

``--vars-file FILE`` (``vars_file=``) reads FILE instead; a spec without ``config:``
then takes FILE's entries as values of its own vars (each must be a var of the spec).
A var found nowhere keeps its value under ``vars:``; without one it is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from ..errors import MapspecError
from .model import Spec

MAX_CONFIG_BYTES = 16 << 20


def _read(path: str) -> dict:
    if not os.path.exists(path):
        raise MapspecError(f"{path}: no such config file")
    if not os.path.isfile(path):  # a FIFO or a device would block or never end
        raise MapspecError(f"{path}: the config file is not a regular file")
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise MapspecError(f"{path}: config file of {size} bytes is larger than {MAX_CONFIG_BYTES} (a model "
                               f"config is a few KiB)")
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        else:
            from .yamlsafe import load_file

            data = load_file(path)
    except OSError as e:
        raise MapspecError(f"{path}: cannot read the config file: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise MapspecError(f"{path}: not a JSON/YAML config: {e}") from None
    if not isinstance(data, dict):
        raise MapspecError(f"{path}: a config file holds a mapping, not {type(data).__name__}")
    return data


read_file = _read  # the family picker reads config.json's architectures the same way


def _lookup(data: dict, key: str):
    if key in data:  # a flat key (GGUF metadata: llama.attention.head_count)
        return data[key]
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _usable(v) -> bool:
    return isinstance(v, (int, float, str, bool, list, dict))  # JSON null: try the next key


def entry_keys(entry) -> list:
    """The config keys a ``config.vars`` entry reads (a key, a list of keys, or ``{one_of: [...]}``)."""
    if isinstance(entry, dict):
        keys = entry.get("one_of") or []
        return list(keys) if isinstance(keys, list) else [keys]
    return list(entry) if isinstance(entry, list) else [entry]


def _found(var: str, entry, data: dict, path: str):
    """(key, value) of one config var (value None: not found), checking the agreement of ``one_of`` places."""
    keys = entry_keys(entry)
    if not isinstance(entry, dict):
        return next(((k, v) for k, v in ((k, _lookup(data, k)) for k in keys) if _usable(v)), (None, None))
    hits = [(k, v) for k, v in ((k, _lookup(data, k)) for k in keys) if _usable(v)]
    for k, v in hits[1:]:
        if v != hits[0][1]:
            raise MapspecError(f"{path}: {hits[0][0]} is {hits[0][1]!r} but {k} is {v!r}; the config holds "
                               f"{var} twice with different values (fix the config, or give --var {var}=VALUE)")
    return hits[0] if hits else (None, None)


def _check_values(spec: Spec, cfg: dict, found: dict, env: dict, path: str) -> None:
    """A value outside an entry's ``values`` (each a constant or an ``{expr}`` over the vars) is an error."""
    for var, (key, value) in found.items():
        entry = cfg["vars"][var]
        allowed = entry.get("values") if isinstance(entry, dict) else None
        if not isinstance(allowed, list):
            continue
        shown = []
        for a in allowed:
            v = _default(spec, var, a, env)
            if v == value:
                break
            shown.append(repr(v) if v == a else f"{a} = {v!r}")
        else:
            raise MapspecError(f"{path}: {key} is {value!r}, which this spec cannot represent (it takes "
                               f"{', '.join(shown)}); converting would write a file that computes something else")


def source_metadata(reader) -> dict:
    """A source reader's metadata as config values (GGUF float32 numbers as their shortest decimal)."""
    values = getattr(reader, "metadata", None)
    if not isinstance(values, dict):
        raise MapspecError(f"{reader.path}: a {getattr(reader, 'format', 'source')} file holds no metadata "
                           f"key/values; this spec reads its vars from a GGUF source's metadata")
    types = reader.metadata_types() if hasattr(reader, "metadata_types") else {}
    out = dict(values)
    for k, t in types.items():
        if t == "float32" and isinstance(out.get(k), float):
            out[k] = float(str(np.float32(out[k])))
    return out


def with_config(spec: Spec, source_path: Optional[str], vars_file: Optional[str] = None, given=(),
                reader=None) -> Spec:
    """The spec with vars taken from its config file (or ``vars_file``); vars in ``given`` (``--var``) need none.

    Optional vars the file lacks are listed in ``spec.unset`` ({var: why}); defaults (``default:``) are
    evaluated over the other vars.  ``reader``: the opened source, for a spec whose config is ``from:
    source_metadata`` (else the source is opened here)."""
    cfg = spec.config
    if vars_file is None and not cfg:
        return spec
    if vars_file is not None and cfg and cfg.get("from") == "source_metadata":
        raise MapspecError(f"{spec.path}: its vars come from the source file's own metadata; --vars-file {vars_file} "
                           f"is not needed (override a var with --var NAME=VALUE)")
    if vars_file is None and cfg.get("from") == "source_metadata":
        if reader is None and not source_path:
            raise MapspecError(f"{spec.path}: its vars come from the source file's metadata; give the source, "
                               f"or --vars-file FILE / --var NAME=VALUE")
        if reader is None:
            from ..formats import open_checkpoint

            with open_checkpoint(source_path, format=spec.source.format, **spec.source.options) as opened:
                data = source_metadata(opened)
        else:
            data = source_metadata(reader)
        path = f"{source_path if reader is None else reader.path} (its metadata)"
    elif vars_file is not None:
        path = vars_file
    else:
        base = source_path if source_path and os.path.isdir(source_path) else os.path.dirname(
            os.path.abspath(source_path or "."))
        tried = [os.path.join(base, f) for f in cfg["file"]]
        path = next((p for p in tried if os.path.isfile(p)), None)
    if vars_file is not None or cfg.get("from") != "source_metadata":
        data = _read(path) if path else {}
    inside = (cfg or {}).get("inside")
    if inside and isinstance(data.get(inside), dict):  # a multimodal config: the text model's own
        data = data[inside]
    values, unset, defaults, where = {}, {}, {}, {}
    if cfg:
        missing = []
        for var, entry in cfg["vars"].items():
            keys = entry_keys(entry)
            key, found = (None, None) if var in given else _found(var, entry, data, path)
            if found is not None:
                values[var], where[var] = found, (key, found)
            elif var in spec.vars or var in given:
                continue
            elif isinstance(entry, dict) and "default" in entry:
                defaults[var] = entry["default"]
            elif isinstance(entry, dict) and entry.get("optional"):
                unset[var] = f"{path or 'the config'} has no {' or '.join(keys)}"
            else:
                missing.append(f"{var} (from {' or '.join(keys)})")
        if missing:
            where = f"{path} has no" if path else (f"no config file ({', '.join(cfg['file'])}) beside the source, "
                                                   f"so no value for")
            raise MapspecError(f"{spec.path}: {where} {', '.join(missing)}; give --vars-file FILE or --var "
                               f"NAME=VALUE")
    else:
        unknown = [k for k in data if k not in spec.vars]
        if unknown:
            raise MapspecError(f"{path}: {unknown[0]!r} is not a var of {spec.path} (its vars: "
                               f"{', '.join(sorted(spec.vars)) or 'none'}); a spec with a config: section maps "
                               f"file keys to vars")
        values = dict(data)
    env = {**spec.vars, **values}
    for var, default in defaults.items():
        env[var] = _default(spec, var, default, env)
    if cfg:
        _check_values(spec, cfg, where, env, path)
    return dataclasses.replace(spec, vars=env, unset=unset, vars_path=path)


def _default(spec: Spec, var: str, default, env: dict):
    """A ``default:`` (a constant, or an ``{expr}`` over the other vars)."""
    if not isinstance(default, str):
        return default
    from .expr import ExprError, Template

    try:
        return Template(default).value(env)
    except ExprError as e:
        raise MapspecError(f"{spec.path}: config var {var}: default {default!r}: {e}") from None
