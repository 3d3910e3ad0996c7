"""``mapspec invert``: the reverse of a spec, built from each transform's declared inverse.

A forward rule ``from: P, to: T, apply: [t1, ..., tn]`` becomes ``from: T', to: P', apply:
[inv(tn), ..., inv(t1)]`` where

* ``T'`` is the target template read as a pattern: a hole ``{x}`` becomes the placeholder
  ``<x>`` (of the capture's kind), a hole linear in one capture (``{b-1}``, ``{2*i+1}``)
  a fresh integer placeholder ``<_b>`` with ``b`` solved (``_b+1``) wherever it is used;
  holes of vars only become their literal value;
* ``P'`` is the source pattern written as a template with those solutions;
* ``inv(t)`` comes from the transform module itself (``inverse=`` beside its kernel, see
  :mod:`mapspec.transforms.registry`); a transform that keeps one part (``split``) under an
  ``each`` is undone by concatenating every part, the others dropped as rules of their own.

What cannot be undone is never guessed: a transform that loses information (``fold_bn``,
``fill``, a narrowing cast, rounding arithmetic) or a ``drop``/``ignore`` makes invert fail
naming the rule and why, unless ``lossy`` is set, in which case the rule is left out and
listed as missing from the reverse output.  Facts only a file can tell (the shape before a
reshape, the dtype before a cast, a source attribute) come from planning the forward spec
on ``source``.  An ``optional`` rule whose reverse names overlap another rule's (an
alternative source layout the forward accepts) is left out with a note: the reverse writes
the layout of the other rule.

The rooms: :mod:`.names` (templates <-> patterns, linear holes solved), :mod:`.rules` (the rule walk:
each forward rule reversed), :mod:`.order` (first-match order of the reverse rules), :mod:`.build`
(:func:`invert`: vars, the forward plan, the walk, the target dtype) and :mod:`.render` (the YAML
text and :func:`write`).  Reversing a lookup table lives in :mod:`mapspec.inverse_tables`.
"""

from .build import invert
from .names import (capture_kinds, linear, pattern_template, rewrite, substitute, template_pattern, template_text,
                    unparse)
from .order import order
from .render import SpecDumper, write
from .rules import Reverse

__all__ = ["Reverse", "SpecDumper", "capture_kinds", "invert", "linear", "order", "pattern_template", "rewrite",
           "substitute", "template_pattern", "template_text", "unparse", "write"]
