"""Seeded DenseNet weights under Caffe names (shicai's DenseNet-Caffe layout), for tests.

Written independently of the shipped spec: plain loops over the architecture, so a
test can compare what the spec produces with what these loops say it should be.
"""

from __future__ import annotations

import numpy as np

CONFIGS = {
    "121": (32, (6, 12, 24, 16), 64),
    "161": (48, (6, 12, 36, 24), 96),
    "169": (32, (6, 12, 32, 32), 64),
    "201": (32, (6, 12, 48, 32), 64),
}


def caffe_blobs(depth: str = "121", seed: int = 0, zero_factor: bool = False, num_classes: int = 1000):
    """{caffe name: array} for a DenseNet, with realistic BN statistics stored times a factor."""
    growth, blocks, init = CONFIGS[depth]
    rng = np.random.default_rng(seed)
    out = {}

    def conv(name, o, i, k, bias=False):
        fan_in = i * k * k
        out[f"{name}[0]"] = (rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if bias:
            out[f"{name}[1]"] = (rng.standard_normal(o) * 0.1).astype(np.float32)

    def bn(name, c):
        factor = np.float32(rng.uniform(900, 1000))
        out[f"{name}/bn[0]"] = (rng.standard_normal(c) * 0.1 * factor).astype(np.float32)
        out[f"{name}/bn[1]"] = (rng.uniform(0.5, 1.5, c) * factor).astype(np.float32)
        out[f"{name}/bn[2]"] = np.array([factor], dtype=np.float32)
        out[f"{name}/scale[0]"] = rng.uniform(0.8, 1.2, c).astype(np.float32)
        out[f"{name}/scale[1]"] = (rng.standard_normal(c) * 0.1).astype(np.float32)

    conv("conv1", init, 3, 7)
    bn("conv1", init)
    c = init
    for b, n in enumerate(blocks, start=2):
        for layer in range(1, n + 1):
            bn(f"conv{b}_{layer}/x1", c)
            conv(f"conv{b}_{layer}/x1", 4 * growth, c, 1)
            bn(f"conv{b}_{layer}/x2", 4 * growth)
            conv(f"conv{b}_{layer}/x2", growth, 4 * growth, 3)
            c += growth
        bn(f"conv{b}_blk", c)
        if b < 5:
            conv(f"conv{b}_blk", c // 2, c, 1)
            c //= 2
    conv("fc6", num_classes, c, 1, bias=True)
    if zero_factor:
        name = "conv2_1/x1/bn"
        out[f"{name}[0]"][:] = 0
        out[f"{name}[1]"][:] = 0
        out[f"{name}[2]"][:] = 0
    return out


def expected_torchvision(blobs: dict) -> dict:
    """The torchvision state dict these Caffe blobs stand for (numpy arrays)."""
    sd = {}

    def bn(caffe, torch_prefix):
        f = float(blobs[f"{caffe}/bn[2]"][0])
        s = 0.0 if f == 0 else 1.0 / f
        sd[f"{torch_prefix}.weight"] = blobs[f"{caffe}/scale[0]"]
        sd[f"{torch_prefix}.bias"] = blobs[f"{caffe}/scale[1]"]
        sd[f"{torch_prefix}.running_mean"] = (blobs[f"{caffe}/bn[0]"] * np.float32(s)).astype(np.float32)
        sd[f"{torch_prefix}.running_var"] = (blobs[f"{caffe}/bn[1]"] * np.float32(s)).astype(np.float32)
        sd[f"{torch_prefix}.num_batches_tracked"] = np.array(0, dtype=np.int64)

    sd["features.conv0.weight"] = blobs["conv1[0]"]
    bn("conv1", "features.norm0")
    b = 2
    while f"conv{b}_1/x1[0]" in blobs:
        layer = 1
        while f"conv{b}_{layer}/x1[0]" in blobs:
            p = f"features.denseblock{b - 1}.denselayer{layer}"
            bn(f"conv{b}_{layer}/x1", f"{p}.norm1")
            sd[f"{p}.conv1.weight"] = blobs[f"conv{b}_{layer}/x1[0]"]
            bn(f"conv{b}_{layer}/x2", f"{p}.norm2")
            sd[f"{p}.conv2.weight"] = blobs[f"conv{b}_{layer}/x2[0]"]
            layer += 1
        if f"conv{b}_blk[0]" in blobs:
            bn(f"conv{b}_blk", f"features.transition{b - 1}.norm")
            sd[f"features.transition{b - 1}.conv.weight"] = blobs[f"conv{b}_blk[0]"]
        else:
            bn(f"conv{b}_blk", "features.norm5")
        b += 1
    w = blobs["fc6[0]"]
    sd["classifier.weight"] = w.reshape(w.shape[0], w.shape[1])
    sd["classifier.bias"] = blobs["fc6[1]"]
    return sd
