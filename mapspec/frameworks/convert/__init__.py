"""Network graphs from one framework to another: MXNet ``-symbol.json`` <-> Caffe ``.prototxt``.

* :mod:`.common`: what a conversion produces (:class:`~.common.Converted`: the graph text and the
  weight mapping, one :class:`~.common.WeightRule` per source tensor) and the error naming a node.
* :mod:`.mxnet_to_caffe`: the table MXNet op -> converter function (Convolution, BatchNorm as
  BatchNorm + Scale, LeakyReLU, Pooling with both frameworks' rounding checked, ...).
* :mod:`.caffe_to_mxnet`: the table Caffe layer type -> converter function.
* :mod:`.spec`: the weight spec of a conversion (``--emit-spec``), one explicit rule per tensor.
* :mod:`.command`: ``mapspec graph``: read, convert, write atomically.

An op or layer a table does not know, or an attribute the other framework cannot express with
the same numbers, is an error naming the node: nothing is dropped.
"""
