"""DenseNet as a Caffe net definition, in the layer naming of shicai's DenseNet-Caffe.

mapspec may not ship other people's model files, so its bundled example builds the
standard Caffe DenseNet itself: ``conv1``, ``conv1/bn`` (BatchNorm, eps 1e-5),
``conv1/scale`` (Scale with bias), ``relu1``, ``pool1`` (3x3/2 max pooling, pad 1,
floor rounding: the fork field ``ceil_mode: false``), then for dense block B (2..5)
and layer L: ``convB_L/x1/bn``, ``convB_L/x1/scale``, ``reluB_L/x1``, ``convB_L/x1``
(1x1), ``convB_L/x2/bn``, ``convB_L/x2/scale``, ``reluB_L/x2``, ``convB_L/x2`` (3x3),
``concat_B_L``; transitions ``convB_blk/bn``, ``convB_blk/scale``, ``reluB_blk``,
``convB_blk`` (1x1), ``poolB`` (2x2/2 average); ``conv5_blk/bn``, ``conv5_blk/scale``,
``relu5_blk``, ``pool5`` (global average) and ``fc6``, a 1x1 convolution with bias.
The shapes agree with torchvision's DenseNet of the same depth.
"""

from __future__ import annotations

from .densenet import CONFIGS


def _layer(name, type_, bottoms, top, body=""):
    lines = ["layer {", f'  name: "{name}"', f'  type: "{type_}"'] + [f'  bottom: "{b}"' for b in bottoms]
    lines.append(f'  top: "{top}"')
    lines += ["  " + l for l in body.strip().splitlines()] if body else []
    return "\n".join(lines + ["}"])


def _bn_scale_relu(prefix: str, relu: str, bottom: str) -> list:
    bn = f"{prefix}/bn"
    return [
        _layer(bn, "BatchNorm", [bottom], bn, "batch_norm_param {\n  eps: 1e-5\n}"),
        _layer(f"{prefix}/scale", "Scale", [bn], bn, "scale_param {\n  bias_term: true\n}"),
        _layer(relu, "ReLU", [bn], bn),
    ]


def _conv(name, bottom, n, k, stride=1, pad=0, bias=False):
    body = f"convolution_param {{\n  num_output: {n}" + ("" if bias else "\n  bias_term: false")
    body += (f"\n  pad: {pad}" if pad else "") + f"\n  kernel_size: {k}" + (f"\n  stride: {stride}" if stride > 1 else "")
    return _layer(name, "Convolution", [bottom], name, body + "\n}")


def _net(name: str, depth: int, num_classes: int, size: int, block) -> str:
    """Stem, dense blocks (``block(b, n, bottom, channels) -> (layers, top)``), transitions, classifier."""
    growth, blocks, init = CONFIGS[f"densenet{depth}"]
    out = [f'name: "{name}"', 'input: "data"'] + [f"input_dim: {d}" for d in (1, 3, size, size)]
    out.append(_conv("conv1", "data", init, 7, stride=2, pad=3))
    out += _bn_scale_relu("conv1", "relu1", "conv1")
    out.append(_layer("pool1", "Pooling", ["conv1/bn"], "pool1",
                      "pooling_param {\n  pool: MAX\n  kernel_size: 3\n  stride: 2\n  pad: 1\n  ceil_mode: false\n}"))
    x, c = "pool1", init
    for b, n in enumerate(blocks, start=2):
        layers, x = block(b, n, x, c, growth)
        out += layers
        c += n * growth
        out += _bn_scale_relu(f"conv{b}_blk", f"relu{b}_blk", x)
        if b < 5:
            c //= 2
            out.append(_conv(f"conv{b}_blk", f"conv{b}_blk/bn", c, 1))
            out.append(_layer(f"pool{b}", "Pooling", [f"conv{b}_blk"], f"pool{b}",
                              "pooling_param {\n  pool: AVE\n  kernel_size: 2\n  stride: 2\n}"))
            x = f"pool{b}"
    out.append(_layer("pool5", "Pooling", ["conv5_blk/bn"], "pool5",
                      "pooling_param {\n  pool: AVE\n  global_pooling: true\n}"))
    out.append(_conv("fc6", "pool5", num_classes, 1, bias=True))
    return "\n".join(out) + "\n"


def _standard_block(b: int, n: int, x: str, c: int, growth: int):
    out = []
    for layer in range(1, n + 1):
        p = f"conv{b}_{layer}"
        out += _bn_scale_relu(f"{p}/x1", f"relu{b}_{layer}/x1", x)
        out.append(_conv(f"{p}/x1", f"{p}/x1/bn", 4 * growth, 1))
        out += _bn_scale_relu(f"{p}/x2", f"relu{b}_{layer}/x2", f"{p}/x1")
        out.append(_conv(f"{p}/x2", f"{p}/x2/bn", growth, 3, pad=1))
        cat = f"concat_{b}_{layer}"
        out.append(_layer(cat, "Concat", [x, f"{p}/x2"], cat))
        x = cat
    return out, x


def _efficient_block(b: int, n: int, x: str, c: int, growth: int):
    top = f"concat_{b}_{n}"
    return [_layer(f"denseblock{b - 1}", "DenseBlock", [x], top,
                   f"denseblock_param {{\n  numTransition: {n}\n  initChannel: {c}\n  growthRate: {growth}\n"
                   f"  use_dropout: false\n  use_BC: true\n  BC_ultra_space_efficient: true\n}}")], top


def caffe_prototxt(depth: int = 121, num_classes: int = 1000, size: int = 224) -> str:
    return _net(f"DENSENET_{depth}", depth, num_classes, size, _standard_block)


def efficient_prototxt(depth: int = 121, num_classes: int = 1000, size: int = 224) -> str:
    """The same DenseNet with each dense block as one "efficient" ``DenseBlock`` layer (Tongcheng's
    memory-efficient Caffe, seed 000): ``denseblock1`` .. ``denseblock4`` replace the convB_L layers;
    the stem, transitions and classifier keep their names."""
    return _net(f"DENSENET_{depth}_EFFICIENT", depth, num_classes, size, _efficient_block)
