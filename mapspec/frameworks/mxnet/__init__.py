"""MXNet, as a framework: what a symbol is, what its ops mean, and how to run one.

Graph knowledge (no tensors, no torch):

* :mod:`.attrs`: the attribute literal parser (never ``eval``) and the declared kinds.
* :mod:`.ops`: the op table (slots, typed attributes with MXNet's defaults such as BatchNorm's
  ``eps``/``fix_gamma``, shape rules, outputs), pooled sizes, Deconvolution pad/adj, Reshape
  codes, parameter suffixes (:func:`~.ops.param_base_name`).
* :mod:`.graph`: symbol JSON parsing, variable roles (inputs, parameters, aux states, labels),
  shape inference.
* :mod:`.params`: a checkpoint's array names (``arg:``/``aux:`` prefixes, the role a bare name
  has by MXNet's conventions) and ``PREFIX-NNNN.params`` beside ``PREFIX-symbol.json``.

Running a symbol (torch; above :mod:`mapspec.formats`, whose ``Reader`` it takes as weights):

* :mod:`.executor`: :class:`~.executor.MXNetExecutor`, the inference forward pass.
* :mod:`.exec_ops`: one pure torch kernel per op, the table ``KERNELS``.

Users: the ``mxnet`` and ``mxnet-symbol`` formats (:mod:`mapspec.formats.mxnet`,
:mod:`mapspec.formats.mxnet_symbol`), :mod:`mapspec.frameworks.convert`, ``verify``'s ``mxnet``
runner.
"""
