"""The frameworks table: each name imports its package on first use; an unknown one is an error naming the known."""

from __future__ import annotations

import pytest

from mapspec.errors import MapspecError
from mapspec.frameworks import FRAMEWORKS, framework


def test_framework_registry():
    assert set(FRAMEWORKS) == {"caffe", "mxnet", "gguf"}
    assert framework("caffe").__name__ == "mapspec.frameworks.caffe"
    assert framework("gguf").__name__ == "mapspec.frameworks.gguf"
    with pytest.raises(MapspecError, match="unknown framework 'onnx'"):
        framework("onnx")
