"""MXNet, as a framework: what a symbol is and what its ops mean, without tensors or torch.

* :mod:`.attrs`: the attribute literal parser (never ``eval``) and the declared kinds.
* :mod:`.ops`: the op table (slots, typed attributes with MXNet's defaults such as BatchNorm's
  ``eps``/``fix_gamma``, shape rules, outputs), pooled sizes, Deconvolution pad/adj, Reshape
  codes, parameter suffixes (:func:`~.ops.param_base_name`).
* :mod:`.graph`: symbol JSON parsing, variable roles (inputs, parameters, aux states, labels),
  shape inference.
"""
