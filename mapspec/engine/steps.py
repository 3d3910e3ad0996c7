"""What a plan is made of: the bound transform calls, the steps (one output tensor each) and the plan
itself; below both the planner and :mod:`mapspec.engine.outtype`, which adds cast steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .. import rawblocks
from ..errors import ErrorList, Location
from ..formats import Reader, TensorInfo
from ..language.args import Ref
from ..language.model import Call, Rule, Spec
from ..transforms import TRANSFORMS, Meta


@dataclass
class BoundCall:
    call: Call
    args: dict  # bound values; references as Ref, optional missing references as None
    label: str

    @property
    def refs(self) -> list[str]:
        out = []
        for v in self.args.values():
            if isinstance(v, Ref):
                out.append(v.name)
            elif isinstance(v, list):
                out += [r.name for r in v if isinstance(r, Ref)]
        return out


@dataclass
class Step:
    """One output tensor: where it comes from and what happens to it."""

    target: str
    rule: Rule
    source: Optional[str]
    calls: list
    in_meta: Meta
    out_meta: Meta
    env: dict = field(default_factory=dict)
    constant: Any = None
    meta: Optional[dict] = None  # the template's format-specific facts for this target
    parts: list = field(default_factory=list)  # stack: one Step per stacked match, in order
    stack_axis: int = 0
    peak: int = 0  # bytes of the largest array along the chain (input, intermediates, output)

    @property
    def refs(self) -> list[str]:
        return [r for p in self.parts for r in p.refs] + [r for c in self.calls for r in c.refs]

    @property
    def sources(self) -> list[str]:
        """The source tensors read for this output (several when it stacks matches)."""
        if self.parts:
            return [p.source for p in self.parts]
        return [self.source] if self.source is not None else []

    @property
    def transforms_text(self) -> str:
        return " | ".join(c.label for c in self.calls) or "-"


@dataclass
class Plan:
    spec: Spec
    source: Reader
    template: Optional[Reader]
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    dropped_by: dict = field(default_factory=dict)  # dropped source name -> the drop rule that matched it
    referenced: set = field(default_factory=set)
    unmatched_rules: list = field(default_factory=list)
    missing_targets: list = field(default_factory=list)
    unexpected_targets: list = field(default_factory=list)
    target_format: Optional[str] = None
    metadata: dict = field(default_factory=dict)  # target.metadata with its expressions evaluated
    no_tokenizer: bool = False  # --no-tokenizer: no tokenizer metadata / companion files

    @property
    def ok(self) -> bool:
        return not self.errors

    def check(self) -> "Plan":
        """Raise every error found while planning (one error, or an ErrorList)."""
        if self.errors:
            if len(self.errors) == 1:
                raise self.errors[0]
            raise ErrorList(self.errors)
        return self

    @property
    def verdict(self) -> str:
        if self.errors:
            return f"FAIL: {len(self.errors)} error{'s' if len(self.errors) > 1 else ''}"
        return "OK" + (f" ({len(self.warnings)} relaxed)" if self.warnings else "")

    def summary(self) -> dict:
        return {
            "outputs": len(self.steps),
            "source_tensors": len(self.source.infos()),
            "matched": sum(len(s.sources) for s in self.steps),
            "dropped": len(self.dropped),
            "referenced": len(self.referenced),
            "ignored": len(self.ignored),
            "unused": len(self.unused),
            "constants": sum(1 for s in self.steps if not s.sources),
            "output_bytes": sum(TensorInfo(s.target, s.out_meta.shape, s.out_meta.dtype).nbytes for s in self.steps),
        }

    def to_json(self) -> dict:
        return {
            "spec": self.spec.path,
            "source": self.source.path,
            "template": self.template.path if self.template else None,
            "verdict": self.verdict,
            "summary": self.summary(),
            "steps": [{
                "target": s.target, "source": s.source if not s.parts else s.sources, "rule": s.rule.index,
                "refs": s.refs,
                "transforms": [c.label for c in s.calls], "in_shape": list(s.in_meta.shape),
                "shape": list(s.out_meta.shape), "dtype": s.out_meta.dtype,
                **({"ggml_type": s.meta["ggml_type"], "ggml_shape": list(s.meta["shape"])}
                   if rawblocks.raw_type(s.out_meta.dtype, s.meta) else {}),
            } for s in self.steps],
            "errors": [str(e) for e in self.errors],
            "warnings": list(self.warnings),
        }


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def _call_label(call: Call, args: dict) -> str:
    parts = []
    for k, v in args.items():
        if call.tdef.args[k].default == v and k not in call.args:
            continue
        if isinstance(v, Ref):
            v = v.name
        elif isinstance(v, list):
            v = "[" + ",".join(x.name if isinstance(x, Ref) else str(x) for x in v) + "]"
        parts.append(f"{k}={v}")
    return f"{call.name}({', '.join(parts)})"


_IMPLICIT_CAST = Call(tdef=TRANSFORMS["cast"], args={}, arg_locs={}, loc=Location("<target: dtype>"))

