"""Caffe, as a framework: what a net is, what its layers mean, and how to run one.

Graph knowledge (no tensors, no torch):

* ``caffe.proto`` + :mod:`.schema`: the message classes (built at run time from the shipped
  ``.proto``), text parsing with unknown-field reports, the legacy V1 upgrade.
* :mod:`.geometry`: each layer's arithmetic (axes, convolution/pooling geometry, Caffe's pooling
  rounding, Reshape codes, Slice points, Eltwise checks), shared by shape inference and the executor.
* :mod:`.layers`: the layer-type table with shape rules, typed attributes with Caffe's defaults,
  blob counts, phase filtering.
* :mod:`.blobs`: what a ``.caffemodel``'s blobs mean (caffe.proto field numbers, the V1 type codes,
  ``Blob::FromProto``'s shape rule, ``layer[k]`` tensor names).
* :mod:`.net`: loading a net (prototxt path/text, ``NetParameter``), its inputs, shape inference,
  ``dump`` back to prototxt text.
* :mod:`.foldbn`: Convolution -> BatchNorm (-> Scale) chains (:func:`~.foldbn.find_chains`), the
  spec folding them (:func:`~.foldbn.make_spec`) and the folded net (:func:`~.foldbn.fold_net`).

Running a net (torch; above :mod:`mapspec.formats`, whose ``Reader`` it takes as weights):

* :mod:`.executor`: :class:`~.executor.CaffeExecutor`, the TEST-phase forward pass.
* :mod:`.ops`: one pure torch kernel per layer type, the table ``KERNELS``.

Users: the ``caffe`` and ``prototxt`` formats (:mod:`mapspec.formats.caffe`,
:mod:`mapspec.formats.prototxt`), :mod:`mapspec.frameworks.convert`, ``verify``'s ``caffe``
runner and ``mapspec fold-bn`` (:mod:`mapspec.cli.foldbn`).
"""
