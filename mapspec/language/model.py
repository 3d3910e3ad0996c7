"""The in-memory form of a validated spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import Location
from ..transforms import TransformDef
from .expr import Template
from .pattern import Pattern

RELAXATIONS = ("unused-source", "unmatched-rule", "missing-target", "unexpected-target", "dtype-mismatch",
               "unused-elements", "overlapping-elements", "ignored-and-matched")


@dataclass
class Endpoint:
    """``source:`` or ``target:``: a format name, an optional template file, options."""

    format: Optional[str] = None
    template: Optional[str] = None  # resolved relative to the spec file
    dtype: Optional[str] = None
    options: dict = field(default_factory=dict)  # for the reader (source) or the writer (target)
    template_options: dict = field(default_factory=dict)  # for opening the template (e.g. input_shape)
    metadata: dict = field(default_factory=dict)  # file-level metadata for the writer (values may be templates)
    tokenizer: Optional[dict] = None  # target only: {from: source, vocab_size: ...} (mapspec.formats.gguf_vocab)
    companions: Optional[dict] = None  # target only: files beside the weights in a model folder (mapspec.companions)
    file: Optional[str] = None  # target only: the weights' file name in a folder output (-o DIR/), not shards
    loc: Optional[Location] = None


@dataclass
class Call:
    """One transform in a rule's ``apply`` list, with its raw (unbound) arguments."""

    tdef: TransformDef
    args: dict  # arg name -> raw YAML value
    arg_locs: dict  # arg name -> Location
    loc: Location

    @property
    def name(self) -> str:
        return self.tdef.name


@dataclass
class Rule:
    index: int  # 1-based position in the spec (included specs continue the count)
    loc: Location
    to: Template
    to_text: str
    to_loc: Location
    source: Optional[Pattern] = None
    source_text: Optional[str] = None
    source_loc: Optional[Location] = None
    calls: list = field(default_factory=list)
    each: dict = field(default_factory=dict)  # var -> raw values (list or {range: [...]})
    each_loc: Optional[Location] = None
    require: list = field(default_factory=list)  # [(Template, Location)]: all must exist in the source
    absent: list = field(default_factory=list)  # [(Template, Location)]: none may exist in the source
    when: list = field(default_factory=list)  # [(attr, Template of the layer, expected value, Location)]
    when_vars: list = field(default_factory=list)  # [{var, is/in/set}]: conditions over vars (mapspec.language.conditions)
    generate: Optional[dict] = None  # {generator: {arg: value}}: a tensor computed from vars (mapspec.language.generators)
    optional: bool = False
    value: Any = None
    dtype: Optional[str] = None
    shape: Optional[list] = None
    name: Optional[str] = None
    also: list = field(default_factory=list)  # more outputs from the same match (Rule objects)
    constant: bool = False  # produces 'value' rather than transforming a source tensor
    drop: bool = False  # discards what 'from' matches
    stack: Optional[dict] = None  # {over: capture, axis: int}: matches differing only in 'over' become one output
    allow: frozenset = frozenset()  # numeric effects the spec permits (mapspec.numeric.ALLOW)
    parent: Optional["Rule"] = None
    also_index: int = 0

    @property
    def label(self) -> str:
        if self.parent is not None:
            return f"{self.parent.label} also[{self.also_index}]"
        if self.name:
            return f"rule {self.index} ({self.name})"
        if self.source_text is not None:
            return f"rule {self.index} ({'drop ' if self.drop else 'from '}{self.source_text!r})"
        return f"rule {self.index} (to {self.to_text!r})"

    @property
    def is_constant(self) -> bool:
        """A top-level constant rule (no 'from')."""
        return self.source is None and self.parent is None


@dataclass
class Spec:
    path: str
    name: str
    description: str
    source: Endpoint
    target: Endpoint
    vars: dict
    rules: list
    ignore: list  # [(Pattern, Location)]
    relax: set
    allow: frozenset = frozenset()  # the top-level 'allow:' (already merged into each of its rules)
    includes: list = field(default_factory=list)
    verify: Optional[dict] = None  # the 'verify:' section, for mapspec verify
    config: Optional[dict] = None  # {file: [names], vars: {var: entry}, inside}: vars from the model's config file
    unset: dict = field(default_factory=dict)  # optional config vars the config file lacks: {var: why}
    vars_path: Optional[str] = None  # the file vars were read from (--vars-file, or the config file found)

    @property
    def spec_dir(self) -> str:
        import os

        return os.path.dirname(os.path.abspath(self.path))
