"""The spec's tokenizer hook, ``target: {tokenizer: {from: source, vocab_size: ...}}``: the plan's step that
puts the source folder's tokenizer into a GGUF output's metadata (read by :mod:`mapspec.formats.gguf_vocab`),
or records why it cannot as a plan error."""

from __future__ import annotations

import os
from typing import Optional

from ..errors import Location, MapspecError, SpecError
from ..formats.gguf_vocab import TOKENIZER_FILES, has_tokenizer, tokenizer_metadata
from ..language.expr import ExprError, Template


def add_to_plan(plan, no_tokenizer: bool = False, pre: Optional[str] = None) -> None:
    """Put the source folder's tokenizer into a GGUF plan's metadata, or record why not as a plan error.

    ``no_tokenizer`` (``--no-tokenizer``): write no tokenizer although the spec asks for one (llama.cpp
    cannot run such a file; a warning says so).  A GGUF template that holds a tokenizer keeps its own."""
    raw = plan.spec.target.tokenizer
    if raw is None:
        if pre is not None:
            plan.errors.append(MapspecError(f"--tokenizer-pre: {plan.spec.path} writes no tokenizer"))
        return
    loc = raw.loc_of("vocab_size") if hasattr(raw, "loc_of") else (plan.spec.target.loc or Location(plan.spec.path))
    if plan.target_format not in (None, "gguf"):
        plan.errors.append(SpecError(f"target.tokenizer: only a GGUF output holds a tokenizer, not "
                                     f"{plan.target_format}", loc))
        return
    if no_tokenizer:
        plan.warnings.append("no tokenizer written (--no-tokenizer): llama.cpp cannot run the file until one is "
                             "added")
        return
    from ..formats.gguf import GGUFReader

    if isinstance(plan.template, GGUFReader) and "tokenizer.ggml.model" in plan.template.metadata_types():
        plan.warnings.append(f"the tokenizer is the template's ({plan.template.path}), not read from the source's "
                             f"folder")
        return
    try:
        value = raw.get("vocab_size")
        vocab_size = Template(value).value(dict(plan.spec.vars)) if isinstance(value, str) else value
    except ExprError as e:
        plan.errors.append(SpecError(f"target.tokenizer.vocab_size: {e}", loc))
        return
    path = plan.source.path
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if not has_tokenizer(folder):
        plan.errors.append(MapspecError(
            f"{folder}: no tokenizer ({' or '.join(TOKENIZER_FILES)}) beside the source, and llama.cpp cannot run a "
            f"GGUF without one; put the model's tokenizer files there, or pass --no-tokenizer (no_tokenizer=True) "
            f"to write the file without a tokenizer"))
        return
    arch = plan.metadata.get("general.architecture")
    arch = arch.get("value") if isinstance(arch, dict) else arch
    try:
        plan.metadata.update({k: {"type": t, "value": v} for k, (t, v) in
                              tokenizer_metadata(folder, vocab_size, pre, arch).items() if k not in plan.metadata})
    except MapspecError as e:
        plan.errors.append(e)
