"""Shared by the invert tests: tensor-by-tensor identity and a forward/invert/reverse round trip."""

from __future__ import annotations

import numpy as np

from checkpoint_util import run


def assert_identical(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), k


def round_trip(tmp_path, spec, source, suffix, *invert_args, template=None):
    fwd = tmp_path / f"forward{suffix}"
    code, _, err = run("apply", spec, "-s", source, "-o", fwd, "-q")
    assert code == 0, err
    rev = tmp_path / "reverse.yaml"
    code, out, notes = run("invert", spec, "-o", rev, *invert_args)
    assert code == 0, notes
    assert run("validate", rev)[0] == 0
    back = tmp_path / ("back" + source.suffix)
    code, _, err = run("apply", rev, "-s", fwd, "-o", back, "-q", *(["-t", template] if template else []))
    assert code == 0, err
    return back, rev, notes
