"""fold_bn / fold_bn_bias: fold an inference BatchNorm (and its Scale) into the preceding conv or fc.

With the BatchNorm statistics ``mean``, ``var`` (optionally stored multiplied by a
moving-average ``factor``, as Caffe does: the true statistics are ``mean/f`` and
``var/f``, and ``f == 0`` means zero statistics, exactly as Caffe's BatchNorm layer
computes) and the affine ``gamma``, ``beta`` (default 1 and 0)::

    alpha = gamma / sqrt(var/f + eps)
    W'    = W * alpha          (along the output-channel axis, ``axis``, default 0)
    b'    = beta + (b - mean/f) * alpha      (b = 0 when the layer had no bias)

``fold_bn`` turns the weight (the rule's input) into ``W'``.  ``fold_bn_bias`` gives
``b'``; its input is the BatchNorm *mean* (so a bias is created when the conv had
none), and the conv's own bias, if any, comes in as the ``bias`` reference (usually
``{ref: "conv1[1]", optional: true}``).  ``eps`` is required: use the BatchNorm
layer's own, e.g. ``{attr: eps, of: conv1/bn}``, never a machine epsilon.
Per-channel factors are computed in float64.
"""

from __future__ import annotations

import numpy as np

from .. import numeric
from .inverse import InverseContext, Lossy
from .registry import Arg, Meta, TransformError, norm_axis, transform


def _stats(channels: int, var, mean=None, factor=None, gamma=None, beta=None):
    def vec(a, name):
        if a is None:
            return None
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        if a.size != channels:
            raise TransformError(f"{name} has {a.size} values but the layer has {channels} channels")
        return a

    scale = 1.0
    if factor is not None:
        f = np.asarray(factor, dtype=np.float64).reshape(-1)
        if f.size != 1:
            raise TransformError(f"factor must hold one value (Caffe's BatchNorm blob 2), got {f.size}")
        scale = 0.0 if f[0] == 0 else 1.0 / f[0]
    var = vec(var, "var") * scale
    mean = vec(mean, "mean")
    mean = None if mean is None else mean * scale
    gamma = vec(gamma, "gamma")
    beta = vec(beta, "beta")
    return var, mean, gamma, beta


def _alpha(var, gamma, eps: float, allow: frozenset = frozenset()) -> np.ndarray:
    """gamma / sqrt(var + eps); NaN/infinite statistics or eps are refused (unless ``non-finite``
    is allowed), since they would fold into NaN or all-zero weights."""
    if "non-finite" not in allow:
        if not np.isfinite(float(eps)):
            raise TransformError(f"eps is {eps}: folding would give NaN or all-zero weights; check eps")
        for name, v in (("var", var), ("gamma", gamma)):
            if v is not None and not np.isfinite(v).all():
                n = int((~np.isfinite(v)).sum())
                raise TransformError(f"{name} has {n} NaN/infinite value{'s' if n > 1 else ''} (channel "
                                     f"{int(np.flatnonzero(~np.isfinite(v))[0])}); folding would spread them "
                                     f"into the weights")
    denom = var + eps
    bad = ~(denom > 0)  # NaN counts as not positive
    if np.any(bad) and not ("non-finite" in allow and not np.any(denom[bad] <= 0)):
        raise TransformError(f"var + eps is not positive for {int(bad.sum())} channel(s); "
                             f"check eps ({eps}) and the variance blob")
    alpha = 1.0 / np.sqrt(denom)
    return alpha if gamma is None else alpha * gamma


def fold_bn(x: np.ndarray, var, eps: float, factor=None, gamma=None, axis: int = 0,
            allow: frozenset = frozenset()) -> np.ndarray:
    ax = norm_axis(axis, x.ndim)
    var, _, gamma, _ = _stats(x.shape[ax], var, factor=factor, gamma=gamma)
    alpha = _alpha(var, gamma, eps, allow)
    shape = [1] * x.ndim
    shape[ax] = -1
    ct = x.dtype if x.dtype.itemsize >= 4 else np.dtype(np.float32)
    a = alpha.astype(ct).reshape(shape)
    with np.errstate(over="ignore", under="ignore"):
        out = x.astype(ct, copy=False) * a
    numeric.check_underflow(out, [x, a], allow, "product")  # a weight scaled to exactly 0
    return numeric.cast(out, x.dtype, allow) if out.dtype != x.dtype else out


def fold_bn_bias(mean: np.ndarray, var, eps: float, factor=None, gamma=None, beta=None, bias=None,
                 allow: frozenset = frozenset()) -> np.ndarray:
    c = int(np.asarray(mean).size)
    var, mean64, gamma, beta = _stats(c, var, mean=mean, factor=factor, gamma=gamma, beta=beta)
    alpha = _alpha(var, gamma, eps, allow)
    b = np.zeros(c) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    if b.size != c:
        raise TransformError(f"bias has {b.size} values but the layer has {c} channels")
    out = (b - mean64) * alpha
    if beta is not None:
        out = out + beta
    dt = mean.dtype if mean.dtype.kind == "f" else np.dtype(np.float32)
    return numeric.cast(out.reshape(mean.shape), dt, allow)


def _check_vecs(c: int, **refs) -> None:
    for name, m in refs.items():
        if m is None:
            continue
        if name == "factor":
            if m.numel != 1:
                raise TransformError(f"factor must hold one value (Caffe's BatchNorm blob 2), got shape {m.shape}")
        elif m.numel != c:
            raise TransformError(f"{name} has shape {m.shape} ({m.numel} values) but the layer has {c} channels")


_BN = {
    "var": Arg("ref", required=True, doc="BatchNorm variance (running_var / moving_var / Caffe blob 1)"),
    "eps": Arg("number", required=True, doc="BatchNorm epsilon: a number or {attr: eps, of: LAYER}"),
    "factor": Arg("ref", default=None, doc="Caffe's moving-average factor blob (BatchNorm blob 2)"),
    "gamma": Arg("ref", default=None, doc="scale (Caffe Scale blob 0); 1 when absent"),
}


def inverse(ctx: InverseContext):
    """None: the folded weight or bias mixes the BatchNorm in, and the BatchNorm is not in the target."""
    raise Lossy(f"{ctx.name} folds a BatchNorm in; its statistics and the unfolded values are not in the target")


@transform("fold_bn", inverse=inverse, kernel=fold_bn,
           args={**_BN, "axis": Arg("int", default=0, doc="output-channel axis")})
def infer_fold_bn(meta: Meta, var, eps, factor=None, gamma=None, axis: int = 0) -> Meta:
    """Conv/fc weight -> weight with the following BatchNorm (+Scale) folded in."""
    ax = norm_axis(axis, len(meta.shape))
    _check_vecs(meta.shape[ax], var=var, factor=factor, gamma=gamma)
    return meta


@transform("fold_bn_bias", inverse=inverse, kernel=fold_bn_bias, args={
    **_BN,
    "beta": Arg("ref", default=None, doc="shift (Caffe Scale blob 1); 0 when absent"),
    "bias": Arg("ref", default=None, doc="the conv/fc layer's own bias, if it has one"),
})
def infer_fold_bn_bias(meta: Meta, var, eps, factor=None, gamma=None, beta=None, bias=None) -> Meta:
    """BatchNorm mean -> the bias of the conv/fc with the BatchNorm (+Scale) folded in."""
    _check_vecs(meta.numel, var=var, factor=factor, gamma=gamma, beta=beta, bias=bias)
    dt = meta.dtype if meta.dtype.startswith(("float", "bfloat")) else "float32"
    return Meta(meta.shape, dt)
