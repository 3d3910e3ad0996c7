"""The input both sides run on: an image, a ``.npy`` array, token ids, or seeded random values.

Every input is bounded before anything is allocated: the shape (positive, at most
``MAX_INPUT_VALUES`` values), an ``.npy`` file's header against that bound and the file's
size, an image's pixel count before it is decoded (a decompression bomb is refused), and
token ids against the models' vocabulary.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import MapspecError, MissingDependency

MAX_INPUT_VALUES = 1 << 26      # 64 Mi values (256 MiB of float32): far beyond any verify input
MAX_IMAGE_PIXELS = 1 << 26      # checked before an image is decoded
MAX_DIMS = 8
DEFAULT_TOKENS = 16


@dataclass
class Input:
    array: np.ndarray
    description: str

    @property
    def tokens(self) -> bool:
        return self.array.dtype.kind in "iu"


def check_shape(shape, what: str = "the input shape") -> tuple:
    """A shape of positive integers whose element count is bounded."""
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise MapspecError(f"{what} must be a list of positive integers, not {shape!r}") from None
    if not dims or len(dims) > MAX_DIMS:
        raise MapspecError(f"{what} {list(dims)} must have 1 to {MAX_DIMS} dimensions")
    if any(d < 1 for d in dims):
        raise MapspecError(f"{what} {list(dims)} has a dimension below 1")
    n = 1
    for d in dims:
        n *= d
        if n > MAX_INPUT_VALUES:
            raise MapspecError(f"{what} {list(dims)} has more than {MAX_INPUT_VALUES:,} values: too large for an "
                               f"input to verify")
    return dims


def parse_tokens(text: str) -> Optional[tuple]:
    """``tokens:1,2,3`` -> ("ids", [1, 2, 3]); ``random-tokens:16`` -> ("random", 16); else None."""
    kind, sep, rest = text.partition(":")
    if kind not in ("tokens", "random-tokens"):
        return None
    if not sep or not rest.strip():
        raise MapspecError(f"--input {text!r}: write tokens:ID,ID,... or random-tokens:LENGTH")
    try:
        values = [int(v) for v in rest.split(",")]
    except ValueError:
        raise MapspecError(f"--input {text!r}: token ids and lengths are integers") from None
    if kind == "random-tokens":
        if len(values) != 1:
            raise MapspecError(f"--input {text!r}: random-tokens takes one length, e.g. random-tokens:16")
        check_shape((1, values[0]), f"--input {text}")
        return "random", values[0]
    check_shape((1, len(values)), f"--input {text}")
    if min(values) < 0:
        raise MapspecError(f"--input {text!r}: token ids are not negative")
    return "ids", values


def token_input(source: Optional[str], length: int, vocab: Optional[int], seed: int = 0) -> Input:
    """(1, n) int64 token ids: given (``tokens:...``) or seeded random ids below ``vocab``."""
    parsed = parse_tokens(source) if source else None
    if parsed is None or parsed[0] == "random":
        n = parsed[1] if parsed else length
        check_shape((1, n), "the token input")
        if not vocab:
            raise MapspecError("random token ids need the vocabulary size: neither model says it (give the ids "
                               "with --input tokens:ID,ID,...)")
        ids = np.random.default_rng(seed).integers(0, vocab, size=(1, n), dtype=np.int64)
        return Input(ids, f"{n} seeded random token ids, uniform over the whole vocabulary 0..{vocab - 1} "
                          f"({vocab} ids, seed {seed})")
    ids = np.asarray([parsed[1]], dtype=np.int64)
    if vocab is not None and int(ids.max()) >= vocab:
        raise MapspecError(f"--input {source}: token id {int(ids.max())} is outside the vocabulary ({vocab} ids)")
    return Input(ids, f"token ids {source[len('tokens:'):]}")


def load_input(source: Optional[str], shape, value_range=(0.0, 1.0), seed: int = 0) -> np.ndarray:
    """NCHW float32: an image file (RGB, resized to the input size), a .npy array (``shape`` None: the array's
    own), or seeded random values."""
    if shape is None and source is not None and source.lower().endswith(".npy") and os.path.isfile(source):
        return _load_npy(source, None)
    shape = check_shape(shape)
    if source is None or source == "random":
        rng = np.random.default_rng(seed)
        lo, hi = value_range
        return rng.uniform(lo, hi, size=shape).astype(np.float32)
    if not os.path.isfile(source):
        raise MapspecError(f"{source}: no such input file")
    if source.lower().endswith(".npy"):
        return _load_npy(source, shape)
    return _load_image(source, shape, value_range)


def _load_npy(source: str, shape: tuple) -> np.ndarray:
    fmt = np.lib.format
    try:
        with open(source, "rb") as f:
            version = fmt.read_magic(f)
            header = fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
            offset = f.tell()
        arr_shape, _fortran, dtype = header
    except (ValueError, OSError, SyntaxError) as e:
        raise MapspecError(f"{source}: not a readable .npy array: {e}") from None
    if dtype.hasobject:
        raise MapspecError(f"{source}: an array of Python objects is not an input")
    count = 1
    for d in arr_shape:
        count *= int(d)
    if count > MAX_INPUT_VALUES:
        raise MapspecError(f"{source}: the array claims {count:,} values (shape {tuple(arr_shape)}); an input "
                           f"may have at most {MAX_INPUT_VALUES:,}")
    if offset + count * dtype.itemsize > os.path.getsize(source):
        raise MapspecError(f"{source}: truncated: the header claims {count * dtype.itemsize:,} bytes of data")
    try:
        arr = np.load(source, allow_pickle=False)
        arr = np.asarray(arr, dtype=np.float32)
    except (ValueError, OSError, TypeError) as e:
        raise MapspecError(f"{source}: not a readable .npy array: {e}") from None
    if shape is None:
        check_shape(arr.shape, f"{source}: the array's shape")
        return arr
    if tuple(arr.shape) != tuple(shape):
        if arr.size == int(np.prod(shape)):
            arr = arr.reshape(shape)
        else:
            raise MapspecError(f"{source}: array of shape {arr.shape} does not fit the input shape {tuple(shape)}")
    return arr


def _load_image(source: str, shape: tuple, value_range) -> np.ndarray:
    if len(shape) != 4 or shape[1] != 3:
        raise MapspecError(f"an image input needs a 1x3xHxW input shape, not {tuple(shape)}")
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependency("PIL", "reading an image input", "pass a .npy array") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(source)  # lazy: only the header is read here
        with im:
            w0, h0 = im.size
            if w0 * h0 > MAX_IMAGE_PIXELS:
                raise MapspecError(f"{source}: the image claims {w0}x{h0} = {w0 * h0:,} pixels; an input image may "
                                   f"have at most {MAX_IMAGE_PIXELS:,} (a decompression bomb?)")
            im = im.convert("RGB")
            n, c, h, w = shape
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MapspecError(f"{source}: refused as a decompression bomb: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise MapspecError(f"{source}: cannot read the image: {e}") from None
    lo, hi = value_range
    arr = arr / 255.0 * (hi - lo) + lo
    return np.broadcast_to(arr.transpose(2, 0, 1)[None], shape).astype(np.float32)
