"""Caffe, as a framework: what a net is and what its layers mean, without tensors or torch.

* ``caffe.proto`` + :mod:`.schema`: the message classes (built at run time from the shipped
  ``.proto``), text parsing with unknown-field reports, the legacy V1 upgrade.
* :mod:`.geometry`: each layer's arithmetic (axes, convolution/pooling geometry, Caffe's pooling
  rounding, Reshape codes, Slice points, Eltwise checks), shared by shape inference and the executor.
* :mod:`.layers`: the layer-type table with shape rules, typed attributes with Caffe's defaults,
  blob counts, phase filtering.
* :mod:`.net`: loading a net (prototxt path/text, ``NetParameter``), its inputs, shape inference.
"""
