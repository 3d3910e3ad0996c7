"""One home per framework for what its nets mean: layer/op semantics, graph parsing, shape inference.

No tensor I/O and no torch here: the template readers in :mod:`mapspec.formats`, the reference
executors in :mod:`mapspec.executors` and ``verify`` all read nets through these modules, so a
net is understood one way.  Each framework is a subpackage registered in :data:`FRAMEWORKS`
(imported on first use, like formats): adding one is a subpackage plus one line here.

* ``caffe``: ``caffe.proto`` (package data) and its schema, layer geometry and shape rules,
  nets and their shape inference.
* ``mxnet``: attribute literals, the op table (typed attributes with MXNet's defaults, shape
  rules), symbol graphs and their shape inference, parameter naming.
"""

from __future__ import annotations

from ..registry import LazyTable

FRAMEWORKS = LazyTable("framework", {
    "caffe": "mapspec.graphs.caffe",
    "mxnet": "mapspec.graphs.mxnet",
})
framework = FRAMEWORKS.load  # the package holding a framework's graph knowledge (imported on first use)


__all__ = ["FRAMEWORKS", "framework"]
