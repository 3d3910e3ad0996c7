"""Transforms: one module per operator (a pure numpy kernel + registry glue).

Importing this package registers them all in :data:`TRANSFORMS`.
"""

from . import (arith, cast, concat, dequantize, fill, fold_bn, groups, reshape, reverse, rope, slice_,  # noqa: F401
               split, squeeze, take, transpose)
from .registry import SELECTIONS, STATIC_CHECKS, TRANSFORMS, Arg, Meta, TransformDef, TransformError

__all__ = ["SELECTIONS", "STATIC_CHECKS", "TRANSFORMS", "Arg", "Meta", "TransformDef", "TransformError"]
