"""Model definitions shipped with mapspec (targets for ``verify`` and tests).

A spec names only the factories registered in :mod:`mapspec.models.registry` (``model: densenet121``,
with their declared ``params``); the command line may also name any of these modules' functions,
or the user's own, as ``module:function`` (e.g. ``mapspec.models.densenet:densenet121``).
"""
