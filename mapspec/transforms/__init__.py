"""Transforms: one module per operator (a pure numpy kernel + registry glue).

Importing this package registers them all in :data:`TRANSFORMS`.
"""

from . import (arith, cast, concat, fill, fold_bn, groups, reshape, reverse, rope, slice_, split, squeeze,  # noqa: F401
               take, transpose)
from .registry import SELECTIONS, STATIC_CHECKS, TRANSFORMS, Arg, Meta, TransformDef, TransformError

__all__ = ["SELECTIONS", "STATIC_CHECKS", "TRANSFORMS", "Arg", "Meta", "TransformDef", "TransformError"]
