"""What most likely differs at the first diverging layer.

Two kinds of evidence: the layer's weights (the source tensor and the converted one, both
brought to OIHW: a kernel whose H and W axes were swapped, a kernel flipped, input channels
reversed), and its activations (a per-channel affine relation between source and target
activations: BatchNorm eps, Caffe's moving-average factor, gamma, a missing mean or beta;
reversed channels; different shapes; a fully connected layer's flatten order).
"""

from __future__ import annotations

import numpy as np


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6 * (float(np.abs(b).max()) + 1e-30)))


def _oihw(w: np.ndarray, layout: str) -> np.ndarray:
    return w.transpose(3, 2, 0, 1) if layout == "hwio" and w.ndim == 4 else w


def diagnose_weights(pairs, source_layout: str = "oihw", target_layout: str = "oihw") -> list[str]:
    """Causes read off (source tensor name, source array, target tensor name, converted array) pairs."""
    causes, unchanged = [], []
    for sname, s, tname, t in pairs:
        s = _oihw(np.asarray(s, dtype=np.float64), source_layout)
        t = _oihw(np.asarray(t, dtype=np.float64), target_layout)
        if s.ndim != 4 or s.shape != t.shape:
            continue
        h, w = s.shape[2:]
        if _close(t, s):
            if h * w > 1:
                unchanged.append(tname)
            continue
        if h == w and h > 1 and _close(t, s.swapaxes(2, 3)):
            causes.append(f"swapped kernel axes: {tname} holds {sname} with its H and W axes swapped (check the "
                          f"transpose axes: OIHW -> HWIO is [2, 3, 1, 0], not [3, 2, 1, 0])")
        elif (h > 1 or w > 1) and _close(t, s[:, :, ::-1, ::-1]):
            causes.append(f"flipped kernel: {tname} holds {sname} rotated by 180 degrees (convolution vs "
                          f"correlation): add or remove a reverse of axes 2 and 3")
        elif s.shape[1] > 1 and _close(t, s[:, ::-1]):
            causes.append(f"the input channels of {tname} are in reverse order: RGB vs BGR (the first "
                          f"convolution's weight needs {{take: {{indices: [2, 1, 0], axis: 1}}}}, or must lose it)")
    if not causes and unchanged:
        causes.append(f"kernels copied unchanged ({unchanged[0]}{' ...' if len(unchanged) > 1 else ''}), yet the "
                      f"layer differs on the same input: the target may apply kernels flipped (a true convolution, "
                      f"as the efficient DenseBlock does: add {{reverse: 2}}, {{reverse: 3}}), or a hyper-parameter "
                      f"(stride, pad, dilation, groups) differs")
    return causes


def rotary_cause(source: str, target: str, expected: str) -> str:
    """A q/k projection whose features relate the wrong way (``expected``: "same" or "permuted", see
    ``verify/rotary.py``)."""
    from .rotary import CAUSE

    if expected == "same":
        return (f"{CAUSE}: {target} equals {source} only with each head's features reordered, though both sides "
                f"pair rotary features the same way: the spec's rule for its weight lacks the rope_permute that "
                f"the target's loader undoes (llama.cpp stores q/k rows interleaved), or has one too many")
    return (f"{CAUSE}: {target} equals {source} as it is, though one side rotates adjacent pairs (interleaved) and "
            f"the other the two halves of each head: the spec's rule for its weight needs a rope_permute")


def swap_cause(source: str, target: str, sibling: str, joiner: str) -> str:
    """A branch that computes its sibling's value (two parallel layers of the same shape, swapped)."""
    return (f"swapped branches: the target's {target} computes what the source's {sibling} computes, not its "
            f"{source} (both feed {joiner}): the spec maps {sibling}'s weights to {target}; swap its rules back")


def _affine_fit(s: np.ndarray, t: np.ndarray):
    """Per-channel least squares t ~ a*s + b over axis 1; returns (a, b, residual ratio)."""
    if s.ndim < 2 or s.shape != t.shape:
        return None
    c = s.shape[1]
    S = np.moveaxis(s, 1, 0).reshape(c, -1).astype(np.float64)
    T = np.moveaxis(t, 1, 0).reshape(c, -1).astype(np.float64)
    if S.shape[1] < 2:
        return None
    sm, tm = S.mean(1, keepdims=True), T.mean(1, keepdims=True)
    var = ((S - sm) ** 2).sum(1)
    cov = ((S - sm) * (T - tm)).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(var > 0, cov / var, 1.0)
    b = (tm[:, 0] - a * sm[:, 0])
    resid = T - (a[:, None] * S + b[:, None])
    denom = np.abs(T - tm).sum() + 1e-30
    return a, b, float(np.abs(resid).sum() / denom)


def _affine_causes(s: np.ndarray, t: np.ndarray) -> list[str]:
    fit = _affine_fit(s, t)
    if fit is None or fit[2] >= 1e-3:
        return []
    a, b, _ = fit
    spread = float(np.abs(s).mean()) + 1e-12
    if (np.abs(a - 1) > 1e-4).any():
        dev = a - 1
        one_sided = bool((dev >= -1e-6).all() or (dev <= 1e-6).all())
        if one_sided and float(np.median(np.abs(dev))) < 0.01:
            return [f"a per-channel scale error in one direction, tiny in most channels (median "
                    f"{float(np.median(np.abs(dev))):.2%}) and large where the variance is small (up "
                    f"to {float(np.abs(dev).max()):.3g}): typical of a BatchNorm eps mismatch "
                    f"(MXNet's 1e-3 vs Caffe's/torch's 1e-5): carry eps over or absorb it into the variance"]
        if np.ptp(a) < 1e-3 * np.abs(a).mean():
            return [f"every channel is scaled by the same {a.mean():.6g}: statistics not divided by "
                    f"Caffe's moving-average factor (BatchNorm blob 2), or an input scale differs"]
        return [f"a per-channel scale differs (factors {a.min():.3g}..{a.max():.3g}): gamma is missing or wrong, "
                f"e.g. fix_gamma=True (MXNet uses gamma = 1), or the variance is wrong"]
    if (np.abs(b) > 1e-4 * spread).any():
        return ["a per-channel offset differs: the BatchNorm mean, beta or a bias was not carried "
                "over as the source computes it"]
    return []


def diagnose(s: np.ndarray, t: np.ndarray, layer_hint: str = "") -> list[str]:
    """Likely causes for a target activation ``t`` that differs from the source's ``s``."""
    if s.shape != t.shape:
        return [f"the activations have different shapes ({s.shape} vs {t.shape}): a hyper-parameter (stride, "
                f"pad, pooling rounding, groups) or the graph differs here"]
    causes = []
    tol = 1e-4 * (np.abs(s).max() + 1e-12)
    if s.ndim == 4 and s.shape[1] > 1 and np.allclose(t, s[:, ::-1], rtol=1e-3, atol=tol):
        causes.append("the output channels are in reverse order: the layer's weight (and bias) rows were "
                      "reversed (RGB vs BGR belongs to the input channels of the first convolution)")
    if s.ndim == 4 and s.shape[2] == s.shape[3] and s.shape[2] > 1 and np.allclose(
            t, s.swapaxes(2, 3), rtol=1e-3, atol=tol):
        causes.append("the feature map is transposed in height and width: the input or a reshape swapped H and W")
    causes += _affine_causes(s, t)
    if not causes and s.ndim == 2 and "fc" in layer_hint.lower():
        causes.append("a fully connected layer: check the flatten order of its input (Caffe flattens C,H,W; Keras "
                      "H,W,C) and whether its weight needs a transpose")
    if not causes:
        causes.append("no simple relation between the two: compare this layer's weights (mapspec diff) and its "
                      "hyper-parameters (stride, pad, groups, eps)")
    return causes
