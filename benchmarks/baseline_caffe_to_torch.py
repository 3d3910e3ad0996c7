"""The established way to convert a caffemodel to a torch state dict, as a benchmark baseline.

What the common conversion scripts do (caffemodel-to-pytorch converters, MMdnn-style
loaders): parse the whole file with protobuf (``NetParameter.ParseFromString``), turn
every blob's repeated ``data`` field into a numpy array (``np.array(blob.data)``), wrap
it in a tensor under its new name, keep the whole state dict, then ``torch.save`` it.
The mapping is the same as ``benchmarks/specs/vgg16-caffe-to-torch.yaml`` (VGG16 layer
names to torchvision's), so both produce the same file contents.

    python benchmarks/baseline_caffe_to_torch.py IN.caffemodel OUT.pth

Protobuf here is mapspec's runtime ``caffe.proto`` subset (``mapspec.frameworks.caffe.schema``),
which is what a user without Caffe would use too.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from mapspec.frameworks.caffe import schema

VGG16_BASE = {1: 0, 2: 5, 3: 10, 4: 17, 5: 24}


def torch_name(layer: str, k: int) -> str:
    kind = "weight" if k == 0 else "bias"
    if layer.startswith("conv"):
        b, i = (int(x) for x in layer[4:].split("_"))
        return f"features.{VGG16_BASE[b] + 2 * (i - 1)}.{kind}"
    return f"classifier.{(int(layer[2:]) - 6) * 3}.{kind}"


def blob_shape(blob) -> tuple:
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def convert(src: str, dst: str) -> int:
    net = schema.NetParameter()
    with open(src, "rb") as f:
        net.ParseFromString(f.read())
    state = {}
    for layer in net.layer:
        for k, blob in enumerate(layer.blobs):
            arr = np.array(blob.data, dtype=np.float32).reshape(blob_shape(blob))
            if layer.type == "InnerProduct" and k == 0:
                arr = arr.reshape(arr.shape[-2:])
            elif k == 1:
                arr = arr.reshape(-1)
            state[torch_name(layer.name, k)] = torch.from_numpy(arr)
    torch.save(state, dst)
    return len(state)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"wrote {sys.argv[2]}: {convert(sys.argv[1], sys.argv[2])} tensors")
