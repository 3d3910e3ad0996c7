"""concat (mapspec/transforms/concat.py): inference matches the kernel."""

from __future__ import annotations

from hypothesis import given, settings

from mapspec.transforms import Meta

from transforms_util import K, arange, infer, shapes


@settings(max_examples=50)
@given(shapes)
def test_concat_inference_matches_kernel(shape):
    x = arange(*shape)
    out = K["concat"](x, after=[x, x], axis=-1)
    assert infer("concat", shape, after=[Meta(shape, "float32")] * 2, axis=-1).shape == out.shape
