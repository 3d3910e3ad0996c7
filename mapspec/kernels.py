"""Fast per-tensor kernels (plain numpy calls, which release the GIL, so ``apply --jobs`` runs them in parallel).

``copy_strided(out, src)`` is ``out[...] = src`` for a ``src`` whose innermost axis is
strided (a transposed view, as ``transpose`` returns): numpy's own copy then reads one
element per cache line and writes along the output's rows, ~0.5 GiB/s for a 4096 x 4096
float32 matrix.  Copying stripes one cache line wide (64 bytes of the output's innermost
axis) reads every source line once while the stripe's output lines stay in cache:
measured on this project's 2-core VM, 64 MiB float32, best of 3: numpy 111 ms, stripes of
128 elements 37 ms, stripes of 64 bytes 15 ms (a plain contiguous copy: 6 ms).

``copy_range`` copies a tensor's bytes from one file to another inside the kernel
(``copy_file_range``; ``pread``/``pwrite`` in 16 MiB pieces where that is missing): a
tensor that a conversion only renames never enters this process's memory.

The float32 -> bfloat16 cast stays on ``ml_dtypes`` (``astype``): with ml_dtypes 0.6 it
converts 64 MiB in 8 ms here, against 14 ms for a blocked round-to-nearest-even bit trick
in numpy (measured and not kept); the transform tests compare it bit for bit with torch.
"""

from __future__ import annotations

import os

import numpy as np

LINE = 64  # bytes per stripe: one cache line


def copy_strided(out: np.ndarray, src: np.ndarray) -> None:
    """``out[...] = src`` (same shape), in cache-line-wide stripes of the last axis when that axis is strided."""
    casting = "no" if out.dtype == src.dtype else "equiv"
    width = max(1, LINE // max(1, src.itemsize))
    n = src.shape[-1] if src.ndim else 0
    if src.ndim < 2 or n <= width or abs(src.strides[-1]) <= src.itemsize:
        np.copyto(out, src, casting=casting)
        return
    for j in range(0, n, width):
        np.copyto(out[..., j:j + width], src[..., j:j + width], casting=casting)


_PIECE = 16 << 20


def copy_range(src_fd: int, src_off: int, dst_fd: int, dst_off: int, nbytes: int) -> None:
    """Copy ``nbytes`` from ``src_fd`` at ``src_off`` to ``dst_fd`` at ``dst_off`` (file offsets untouched)."""
    fast = hasattr(os, "copy_file_range")
    while nbytes > 0:
        n = 0
        if fast:
            try:
                n = os.copy_file_range(src_fd, dst_fd, min(nbytes, 1 << 30), src_off, dst_off)
            except OSError:  # EXDEV on old kernels, ENOSYS, EINVAL on some file systems: copy by hand
                fast = False
        if not fast:
            data = os.pread(src_fd, min(nbytes, _PIECE), src_off)
            view = memoryview(data)
            while len(view):
                k = os.pwrite(dst_fd, view, dst_off + n)
                view = view[k:]
                n += k
        if n <= 0:
            raise OSError(f"the source ended {nbytes} bytes early")
        src_off += n
        dst_off += n
        nbytes -= n
