"""Fixtures of the invert tests."""

from __future__ import annotations

import pytest

from checkpoint_util import tiny_caffenet


@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    return tiny_caffenet(tmp_path_factory.mktemp("caffenet"))
