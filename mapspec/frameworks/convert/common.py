"""What a graph conversion produces, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ...errors import FormatError


class GraphError(FormatError):
    """A node the other framework cannot express (names the file and the node)."""


@dataclass
class WeightRule:
    """One source tensor and where it goes: ``dst`` (a target tensor name), filled with ``fill`` when set
    (MXNet's fix_gamma), with constant companions ``also`` (target name -> list of values)."""

    src: str
    dst: str
    fill: Optional[float] = None
    also: dict = field(default_factory=dict)
    why: str = ""  # a comment for the spec
    transforms: list = field(default_factory=list)  # the rule's apply: list (plain dicts)


@dataclass
class Converted:
    """A converted graph: its text, its weight rules, its inputs (name -> shape) and outputs."""

    text: str
    rules: list
    inputs: dict
    outputs: list  # the written graph's output names
    source_outputs: list  # the same outputs as the source graph names them (node names / blobs)
    source_format: str  # "mxnet" or "caffe"
    target_format: str
    notes: list = field(default_factory=list)


def node_error(path: str, what: str, msg: str) -> GraphError:
    return GraphError(path, f"{what}: {msg}")
