"""Keras HDF5 weights: the legacy ``.h5`` layout and the Keras 3 ``.weights.h5`` layout.

**Legacy** (Keras 1/2 ``save_weights("x.h5")``, Keras 3 ``model.save("x.h5")``): a
group (the root, or ``model_weights`` in a full-model file) has attribute
``layer_names`` (in model order; chunked as ``layer_names0``, ``layer_names1``...
when large); each layer group has ``weight_names`` (``conv1/kernel:0`` in Keras 2,
``conv1/kernel`` in Keras 3) and each weight name is a dataset path below that
layer group (``conv1/conv1/kernel:0``).  Keras loads these **by position**: the
n-th layer with weights gets the n-th group, its weights in ``weight_names`` order.

Exposed names: ``<layer>/<weight>``, where ``<weight>`` is the weight name without
a leading ``<layer>/`` and without a ``:<digits>`` suffix (``conv1/kernel:0`` in
layer ``conv1`` -> ``conv1/kernel``).  Order: ``layer_names`` then ``weight_names``.

**Keras 3** (``model.save_weights("x.weights.h5")``): one group per saveable object,
named by its *path in the model*, not by layer name: ``layers/conv2d/vars/0``,
``layers/conv2d_1/vars/1`` (container members are named by snake-cased class name,
deduplicated with ``_1``, ``_2``...; attributes of subclassed models by attribute
name).  Variables are stored by index, in ``trainable + non_trainable`` order.
Recent Keras 3 (3.15 here) also stores the layer's name as attribute ``name`` on each
``vars`` group; older Keras 3 files lack it.

Exposed names: ``<layer label>/<variable name>``:

* layer label: the ``name`` attributes of the ``vars`` groups along the path (outer
  model excluded), joined with ``/`` -- ``conv1``, or ``block1/conv1`` for a nested
  model; where the attribute is missing, the path component (``conv2d_1``).
* variable name: when the group's path component, stripped of its ``_<n>`` suffix,
  is a built-in class in :data:`KERAS3_VARIABLES` *and* the number of stored
  variables selects one unambiguous list there (``conv2d`` with 2 -> kernel, bias;
  with 1 -> kernel; ``batch_normalization`` with 4 -> gamma, beta, moving_mean,
  moving_variance), that name; otherwise ``vars/<i>`` (``my_block/vars/0``).  The
  class cannot be known from the file in other cases (custom layers, attribute
  paths, a BatchNormalization with only one of scale/center), so we do not guess.
* names that would still collide fall back to the dataset's full HDF5 path.

Keras 3 files do not record model order (HDF5 lists groups alphabetically); infos are
in natural path order (``conv2d_2`` before ``conv2d_10``).  Each TensorInfo's
``meta`` has ``h5path`` (dataset path), ``layer`` and, when known, ``keras_class``.

Writing: the legacy layout by default, the Keras 3 layout when the output name
ends with ``.weights.h5`` (also recognised inside the temporary name
``.x.weights.h5.<random>.tmp`` that atomic output uses) or with
``layout="keras3"``/``"legacy"``.  Option ``template`` (a Keras weights file of
either layout, a full-model ``.h5``, or a ``keras.Model``) fixes the exact structure
Keras expects; see :class:`KerasWriter`.  Datasets are written as tensors arrive.

Safety: like Keras' own loader we refuse soft/external links, external and virtual
datasets and "shape bomb" datasets whose declared size is far larger than what is
stored; contiguous datasets are handed out as zero-copy memory-mapped views.
Because libhdf5 itself can hang or crash on damaged files, the reader first parses
each file in a child process (see :func:`.keras_hdf5.probe`; option ``isolate=False`` skips it).
"""

from __future__ import annotations

from typing import Sequence

from ..errors import MapspecError
from ..files import read_head
from .base import TensorInfo, save_with
# the format's constants, read by the engine and by the archive format
from .keras_hdf5 import (KERAS3, LEGACY, NAME, NAMED_TEMP, PROBE_TIMEOUT, WRITE_DTYPES, _HDF5_MAGIC,  # noqa: F401
                         probe, reader_options)
from .keras_weights import KerasReader, KerasWriter


def sniff(path: str, head: bytes) -> bool:
    return head.startswith(_HDF5_MAGIC)


# Options a user may give (spec source/target options; --source-option, --template-option, --target-option, inspect --option); anything else is an error.
READ_OPTIONS = ("isolate", "timeout")
WRITE_OPTIONS = ("layout",)


def open(path: str, **options) -> KerasReader:  # noqa: A001 - the format API's name
    """Options: ``isolate`` (default True: parse in a child process first), ``timeout`` (seconds, > 0).

    Both are safety options: a spec may not set them (the spec loader refuses), only the command line.
    A ``.keras`` archive (a zip) named as format ``keras`` is read by :mod:`.keras_archive`."""
    isolate, timeout = reader_options(path, options)
    from . import keras_archive

    if keras_archive.sniff(path, read_head(path)):
        return keras_archive.KerasArchiveReader(path, isolate=isolate, timeout=timeout)
    return KerasReader(path, isolate=isolate, timeout=timeout)


def create(path: str, infos: Sequence[TensorInfo], **options) -> KerasWriter:
    if str(options.get("final_path") or path).lower().endswith(".keras"):
        from . import keras_archive

        if options.pop("layout", None) not in (None, KERAS3):
            raise MapspecError(f"{path}: a .keras archive holds the Keras 3 layout only")
        return keras_archive.create(path, infos, **options)
    return KerasWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
