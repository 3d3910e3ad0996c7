"""Vars from a model's own config file: ``config.json`` / ``params.json`` beside the checkpoint.

A spec's ``config:`` section names the files to look for and which key gives which var::

    config:
      file: [params.json]                   # beside the source checkpoint (inside it if it is a directory)
      vars:
        n_heads: n_heads                    # var: key
        n_kv_heads: [n_kv_heads, n_heads]   # keys tried in order (older params.json lack n_kv_heads)
        vocab: model.vocab_size             # a.b reads a nested key

``--vars-file FILE`` (``vars_file=``) reads FILE instead; a spec without ``config:``
then takes FILE's entries as values of its own vars (each must be a var of the spec).
A var found nowhere keeps its value under ``vars:``; without one it is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

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


def _lookup(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _usable(v) -> bool:
    return isinstance(v, (int, float, str, bool, list, dict))  # JSON null: try the next key


def with_config(spec: Spec, source_path: Optional[str], vars_file: Optional[str] = None, given=()) -> Spec:
    """The spec with vars taken from its config file (or ``vars_file``); vars in ``given`` (``--var``) need none."""
    cfg = spec.config
    if vars_file is None and not cfg:
        return spec
    if vars_file is not None:
        path = vars_file
    else:
        base = source_path if source_path and os.path.isdir(source_path) else os.path.dirname(
            os.path.abspath(source_path or "."))
        tried = [os.path.join(base, f) for f in cfg["file"]]
        path = next((p for p in tried if os.path.isfile(p)), None)
    data = _read(path) if path else {}
    values = {}
    if cfg:
        missing = []
        for var, keys in cfg["vars"].items():
            keys = keys if isinstance(keys, list) else [keys]
            found = next((v for v in (_lookup(data, k) for k in keys) if _usable(v)), None)
            if found is not None:
                values[var] = found
            elif var not in spec.vars and var not in given:
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
    return dataclasses.replace(spec, vars={**spec.vars, **values})
