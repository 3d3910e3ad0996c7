"""PyTorch model definitions shipped with mapspec (targets for ``verify`` and tests).

Importing this package needs torch.  Each factory is addressable from a spec or the
command line as ``module:function``, e.g. ``mapspec.models.densenet:densenet121``.
"""
