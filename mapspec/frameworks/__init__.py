"""Everything mapspec knows about each framework, one package a framework.

A newcomer looking for "what mapspec knows about Caffe" reads ``frameworks/caffe/``; checkpoint
file I/O stays in :mod:`mapspec.formats`, which imports the knowledge from here.  Each framework
is a subpackage registered in :data:`FRAMEWORKS` (imported on first use, like formats): adding one
is a subpackage plus one line here.  Each subpackage's docstring is its interface: what it knows,
its public names, who uses it.

* ``caffe``: ``caffe.proto`` (package data) and its schema, layer geometry and shape rules, nets
  and their shape inference, BatchNorm-chain folding; the reference executor and its kernels.
* ``mxnet``: attribute literals, the op table (typed attributes with MXNet's defaults, shape
  rules), symbol graphs and their shape inference, parameter naming; the reference executor.
* ``gguf``: ggml's tensor types and llama.cpp's file types, the block quantizers, and the tables
  llama.cpp's converter uses (pre-tokenizer hashes, tokenizer keys, tensors kept in float32).
* :mod:`.convert`: graph translation MXNet <-> Caffe (it knows two frameworks, so it sits above both).
* :mod:`.executor_base`: the base class and input feeding the two executors share.

The graph knowledge (``caffe``, ``mxnet`` without their executors) holds no tensor I/O and no
torch: the template readers in :mod:`mapspec.formats`, the executors and ``verify`` all read nets
through it, so a net is understood one way.
"""

from __future__ import annotations

from ..registry import LazyTable

FRAMEWORKS = LazyTable("framework", {
    "caffe": "mapspec.frameworks.caffe",
    "mxnet": "mapspec.frameworks.mxnet",
    "gguf": "mapspec.frameworks.gguf",
})
framework = FRAMEWORKS.load  # the package holding a framework's knowledge (imported on first use)


__all__ = ["FRAMEWORKS", "framework"]
