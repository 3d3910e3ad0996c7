"""The transform registry (mapspec/transforms/registry.py)."""

from __future__ import annotations

import pytest


def test_registry_refuses_double_registration():
    from mapspec.transforms.registry import Arg, transform

    with pytest.raises(ValueError, match="registered twice"):
        transform("reshape", kernel=lambda x: x, args={"shape": Arg("ints")})(lambda meta, shape: meta)
