"""The family picker: ``mapspec apply hf-to-gguf -s DIR`` applies the shipped spec of the model's family.

A shipped spec says which models it reads in top-level fields (data in the spec, not a table here):

    architectures: [LlamaForCausalLM, MistralForCausalLM]   # config.json's "architectures" (a Hugging Face source)
    model_types: [llama, mistral]                           # config.json's "model_type" (optional)
    gguf_architecture: llama                                # general.architecture (a GGUF source)
    gguf_has: [llama.expert_count]                          # ... whose metadata holds these keys (optional)
    gguf_lacks: [llama.expert_count]                        # ... and not these (optional)

A *generic name* is the file name of such specs without their family folder (``hf-to-gguf``,
``gguf-to-hf``).  Given one, :func:`resolve` reads the source's config.json (or the GGUF's
``general.architecture``) and returns the one spec declaring it.  Only exact names count: an
architecture no spec declares, or one two specs declare, is an error listing what is supported.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from ..errors import Location, MapspecError, SpecError

FIELDS = ("architectures", "model_types", "gguf_architecture", "gguf_has", "gguf_lacks")


@dataclasses.dataclass(frozen=True)
class Family:
    spec: str  # the shipped spec's name: qwen2/hf-to-gguf
    generic: str  # its name without the family folder: hf-to-gguf
    architectures: tuple = ()
    model_types: tuple = ()
    gguf_architecture: Optional[str] = None
    gguf_has: tuple = ()
    gguf_lacks: tuple = ()

    @property
    def reads(self) -> str:
        """What the picker picks this spec for, as ``mapspec specs`` shows it."""
        if self.gguf_architecture:
            return f"general.architecture {self.gguf_architecture}" + "".join(
                [f" with {k}" for k in self.gguf_has] + [f" without {k}" for k in self.gguf_lacks])
        return ", ".join(self.architectures + tuple(f"model_type {m}" for m in self.model_types))


def declared(doc) -> dict:
    """The picker fields of a spec document (a parsed YAML mapping), those present."""
    return {k: doc[k] for k in FIELDS if isinstance(doc, dict) and k in doc}


def check(doc, loc_of, version) -> list:
    """Semantic checks of the picker fields (their shapes are the schema's): language 1.1; ``gguf_architecture``
    belongs to a spec reading GGUF, ``architectures``/``model_types`` to one reading a Hugging Face checkpoint."""
    fields = declared(doc)
    errors = [SpecError(f"{k!r} is spec language 1.1: declare 'mapspec: 1.1' (readers of version 1 do not know it)",
                        loc_of(k)) for k in fields if version == 1]
    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    reads_gguf = source.get("format") == "gguf"
    if "gguf_architecture" in fields and not reads_gguf:
        errors.append(SpecError("gguf_architecture: only a spec whose source is GGUF (source: {format: gguf}) is "
                                "picked by general.architecture; a spec reading config.json declares "
                                "architectures: [...]", loc_of("gguf_architecture")))
    for key in ("architectures", "model_types"):
        if key in fields and reads_gguf:
            errors.append(SpecError(f"{key}: a spec reading GGUF is picked by general.architecture; declare "
                                    f"gguf_architecture: NAME instead", loc_of(key)))
    for key in ("gguf_has", "gguf_lacks"):
        if key in fields and "gguf_architecture" not in fields:
            errors.append(SpecError(f"{key}: declare gguf_architecture: NAME too (these keys only tell apart specs "
                                    f"of one architecture)", loc_of(key)))
    if "model_types" in fields and "architectures" not in fields:
        errors.append(SpecError("model_types: declare architectures: [...] too (config.json's architectures are "
                                "what the picker reads first)", loc_of("model_types")))
    return errors


_CACHE: dict = {}


def families() -> list[Family]:
    """Every shipped spec that declares what it reads, sorted by spec name."""
    from ..resources import shipped_specs, specs_dir
    from .yamlsafe import load_file

    root = str(specs_dir())
    if root in _CACHE:
        return _CACHE[root]
    out = []
    for name, path in shipped_specs().items():
        try:
            doc = load_file(str(path))
        except MapspecError:
            continue  # a broken spec is validate's to report; it declares nothing here
        f = declared(doc)
        if not f:
            continue

        def names(v) -> tuple:
            return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()
        ga = f.get("gguf_architecture")
        out.append(Family(spec=name, generic=name.rsplit("/", 1)[-1], architectures=names(f.get("architectures")),
                          model_types=names(f.get("model_types")),
                          gguf_architecture=ga if isinstance(ga, str) else None,
                          gguf_has=names(f.get("gguf_has")), gguf_lacks=names(f.get("gguf_lacks"))))
    _CACHE[root] = out
    return out


def resolve(name, source) -> str:
    """``name`` itself, unless it is a generic name (no file of that name, no shipped spec of that name):
    then the shipped spec of the source's family."""
    if not isinstance(name, str) or "/" in name or os.sep in name or os.path.exists(name):
        return name
    candidates = [f for f in families() if f.generic == name]
    if not candidates or source is None:
        return name
    source = getattr(source, "path", source)
    if any(f.gguf_architecture for f in candidates):
        return _by_gguf(name, candidates, str(source))
    return _by_config(name, candidates, str(source))


def _supported(candidates: list) -> str:
    return "; ".join(f"{f.reads} ({f.spec})" for f in candidates)


def _how(name: str, candidates: list, key: str, wanted: str = "") -> str:
    """How to add the family: copy the spec whose name for what it reads is closest to ``wanted``."""
    import difflib

    names = {n: f.spec for f in candidates for n in f.architectures + f.model_types + (f.gguf_architecture or "",)
             if n}
    close = difflib.get_close_matches(wanted, list(names), n=1, cutoff=0) if wanted else []
    nearest = names[close[0]] if close else candidates[0].spec
    return (f"to convert it, write a spec for it: copy the nearest family's (specs/{nearest}.yaml; `mapspec specs` "
            f"lists them), declare {key} and adapt its rules, then give its path instead of {name!r}")


def _one(name: str, hits: list, what: str, where: str) -> str:
    specs = sorted({f.spec for f in hits})
    if len(specs) > 1:
        raise MapspecError(f"{where}: {what} is declared by several {name} specs ({', '.join(specs)}); name the "
                           f"one to apply instead of {name!r}")
    return specs[0]


def _by_gguf(name: str, candidates: list, source: str) -> str:
    from ..formats import detect
    from ..formats.gguf import GGUFReader

    if detect(source) != "gguf":
        raise MapspecError(f"{source}: {name} reads a GGUF file (its general.architecture picks the spec); this "
                           f"is not one")
    reader = GGUFReader(source)
    try:
        arch = reader.metadata_value("general.architecture")
        keys = {k for f in candidates for k in f.gguf_has + f.gguf_lacks}
        present = {k for k in keys if reader.metadata_value(k) is not None}
    finally:
        reader.close()
    if not isinstance(arch, str):
        raise MapspecError(f"{source}: no general.architecture (text) in the GGUF metadata to pick the {name} spec "
                           f"by; name the spec to apply instead of {name!r} (`mapspec specs` lists them)")
    hits = [f for f in candidates if f.gguf_architecture == arch and set(f.gguf_has) <= present
            and not set(f.gguf_lacks) & present]
    if not hits:
        keys = sorted(k for f in candidates if f.gguf_architecture == arch for k in f.gguf_has + f.gguf_lacks)
        held = f" (holding {', '.join(sorted(present))}, not {', '.join(sorted(set(keys) - present))})" if keys \
            else ""
        raise MapspecError(f"{source}: general.architecture {arch!r}{held} has no shipped {name} spec (supported: "
                           f"{_supported(candidates)}); "
                           f"{_how(name, candidates, f'gguf_architecture: {arch}', arch)}")
    return _one(name, hits, f"general.architecture {arch!r}", source)


def config_path(source: str) -> str:
    """The config.json a Hugging Face checkpoint keeps beside its weights (in it, for a folder)."""
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    return os.path.join(folder, "config.json")


def _by_config(name: str, candidates: list, source: str) -> str:
    from .config import read_file

    path = config_path(source)
    if not os.path.isfile(path):
        raise MapspecError(f"{source}: no config.json beside the checkpoint, so no architecture to pick the {name} "
                           f"spec by; name the spec to apply instead of {name!r} (`mapspec specs` lists them)")
    cfg = read_file(path)
    archs, model_type = cfg.get("architectures"), cfg.get("model_type")
    if archs is not None and (not isinstance(archs, list) or not archs
                              or not all(isinstance(a, str) for a in archs)):
        raise MapspecError(f"{path}: 'architectures' is not a list of class names ({archs!r})")
    if model_type is not None and not isinstance(model_type, str):
        raise MapspecError(f"{path}: 'model_type' is not text ({model_type!r})")
    if archs:
        for a in archs:
            if not any(a in f.architectures for f in candidates):
                raise MapspecError(
                    f"{path}: architecture {a!r} has no shipped {name} spec (supported: {_supported(candidates)}); "
                    f"{_how(name, candidates, f'architectures: [{a}]', a)}")
        picked = {_one(name, [f for f in candidates if a in f.architectures], f"architecture {a!r}", path)
                  for a in archs}
        if len(picked) > 1:
            raise MapspecError(f"{path}: architectures {', '.join(archs)} belong to different specs "
                               f"({', '.join(sorted(picked))}); name the one to apply instead of {name!r}")
        spec = picked.pop()
        fam = next(f for f in candidates if f.spec == spec)
        others = [f.spec for f in candidates if model_type in f.model_types and f.spec != spec]
        if model_type and model_type not in fam.model_types and others:
            raise MapspecError(f"{path}: architectures {', '.join(archs)} ({spec}) and model_type {model_type!r} "
                               f"({', '.join(others)}) disagree; name the spec to apply instead of {name!r}")
        return spec
    if model_type:
        hits = [f for f in candidates if model_type in f.model_types]
        if not hits:
            raise MapspecError(
                f"{path}: no 'architectures', and model_type {model_type!r} has no shipped {name} spec "
                f"(supported: {_supported(candidates)}); "
                f"{_how(name, candidates, f'model_types: [{model_type}]', model_type)}")
        return _one(name, hits, f"model_type {model_type!r}", path)
    raise MapspecError(f"{path}: neither 'architectures' nor 'model_type' says which model this is; name the spec "
                       f"to apply instead of {name!r} (`mapspec specs` lists them)")

