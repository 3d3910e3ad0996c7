"""mapspec: move pretrained weights between frameworks and checkpoint layouts with a declarative YAML spec.

Public API::

    spec = mapspec.load_spec("densenet/caffe-to-torchvision")     # or a path
    p = mapspec.plan(spec, "DenseNet_121.caffemodel")              # metadata only; p.ok, p.errors, p.steps
    mapspec.apply(spec, "DenseNet_121.caffemodel", "densenet121.pth")
    with mapspec.open_checkpoint("model.safetensors") as r:        # lazy
        print(r.infos())
"""

__version__ = "0.1.0"

from .errors import (ConversionError, CoverageError, ErrorList, FormatError, MapspecError,  # noqa: E402
                     SpecError, UsageError)


def load_spec(path):
    """Load and check a spec (a path, or a shipped spec's name); raises SpecError/ErrorList."""
    from .language.load import load_spec as _load

    return _load(path)


def plan(spec, source, template=None, **kwargs):
    """Plan a conversion from metadata only; see :func:`mapspec.engine.plan`."""
    from .engine import plan as _plan

    return _plan(spec, source, template=template, **kwargs)


def apply(spec, source, output, template=None, **kwargs):
    """Convert ``source`` into ``output``; see :func:`mapspec.engine.apply`."""
    from .engine import apply as _apply

    return _apply(spec, source, output, template=template, **kwargs)


def open_checkpoint(path, format=None, **options):
    """Open a checkpoint or template lazily (names, shapes, dtypes; data on demand)."""
    from .formats import open_checkpoint as _open

    return _open(path, format=format, **options)


__all__ = ["load_spec", "plan", "apply", "open_checkpoint", "MapspecError", "SpecError", "FormatError",
           "ConversionError", "CoverageError", "ErrorList", "UsageError", "__version__"]
