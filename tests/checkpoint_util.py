"""Helpers shared by tests that run the CLI and compare checkpoints."""

from __future__ import annotations

import io

import numpy as np

from mapspec import cli
from mapspec.formats import open_checkpoint


def run(*argv):
    """The CLI in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def tensors(path) -> dict:
    """Every tensor of a checkpoint, as numpy arrays."""
    with open_checkpoint(str(path)) as r:
        return {n: np.array(r.read(n)) for n in r.names()}


def tiny_caffenet(d):
    """The tiny CaffeNet (grouped convolutions, LRN): prototxt and a seeded caffemodel in ``d``."""
    from mapspec.models.caffenet import TINY, caffe_prototxt
    from mapspec.models.seeded import write_caffemodel

    proto = d / "tiny.prototxt"
    proto.write_text(caffe_prototxt(TINY))
    write_caffemodel(str(proto), str(d / "tiny.caffemodel"), seed=3)
    return d
