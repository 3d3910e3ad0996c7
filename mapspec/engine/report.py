"""What a finished conversion reports: :class:`Result` and the ``--report`` document."""

from __future__ import annotations

from dataclasses import dataclass, field

from .steps import Plan, Step


@dataclass
class Result:
    plan: Plan
    output: str
    tensors: int
    bytes_written: int
    seconds: float
    report: dict
    companions: list = field(default_factory=list)  # companion files written beside the weights (paths)




def report_entry(s: Step, encoding) -> dict:
    """One written tensor in the report (``encoding``: the type a writer stored it in, if it says)."""
    return {"target": s.target, "source": s.source if not s.parts else s.sources, "refs": s.refs,
            "transforms": [c.label for c in s.calls], "shape": list(s.out_meta.shape),
            "dtype": s.out_meta.dtype, **({"stored_as": encoding} if encoding else {})}


def report_document(p: Plan, output: str, fmt: str, entries: list, written: int, seconds: float, notes: list,
                    companions: list) -> dict:
    """The ``--report`` document of a finished conversion."""
    return {
        "spec": p.spec.path, "source": p.source.path, "output": output, "format": fmt,
        "template": p.template.path if p.template else None, "tensors": entries,
        "summary": {**p.summary(), "bytes_written": written, "seconds": round(seconds, 3)},
        "ignored": p.ignored, "warnings": p.warnings + notes, "companions": companions,
    }
