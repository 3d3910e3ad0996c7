"""A side's own input step, as verify applies it: the step is part of the spec language
(:mod:`mapspec.language.inputstep`, where the spec loader checks it); verify and its runners take it from here."""

from ..language.inputstep import Preprocess, apply, from_side, side_errors  # noqa: F401
