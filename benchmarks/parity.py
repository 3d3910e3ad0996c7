"""Output parity of every shipped spec, measured: convert, then run both models and compare.

    .venv/bin/python benchmarks/parity.py [--fixtures ../shared/fixtures] [--out parity.json]

DenseNet and CaffeNet use seeded weights made here (their trained weights are not
public); MobileFaceNet uses the real MXNet checkpoint of the fixtures (skipped when the
fixtures are absent).  Each row is what `mapspec verify` reports: max |a-b| and cosine
of the final outputs (logits / embeddings), on seeded random input and, for
MobileFaceNet, on the fixture face image.  Prints a Markdown table (the README's).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(argv):
    from mapspec import cli

    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


def _verify(argv) -> dict:
    code, text = _run(["verify", *argv, "--json"])
    if code not in (0, 1):
        raise RuntimeError(text)
    doc = json.loads(text[text.index("{"):])
    return {"ok": doc["ok"], "max_abs": doc["output"]["max_abs"], "cosine": doc["output"]["cosine"],
            "input": doc["input"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=os.environ.get("MAPSPEC_FIXTURES", str(ROOT.parent / "shared" / "fixtures")))
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from mapspec.models.caffenet import TINY, caffe_prototxt as caffenet_prototxt
    from mapspec.models.densenet_caffe import caffe_prototxt as densenet_prototxt, efficient_prototxt
    from mapspec.models.seeded import write_caffemodel

    rows = []
    fx = Path(args.fixtures)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t0 = time.perf_counter()
        # DenseNet-121, Caffe -> torchvision and -> efficient DenseBlock Caffe
        (d / "dn.prototxt").write_text(densenet_prototxt(121))
        (d / "eff.prototxt").write_text(efficient_prototxt(121))
        write_caffemodel(str(d / "dn.prototxt"), str(d / "dn.caffemodel"), seed=1)
        _run(["apply", "densenet/caffe-to-torchvision", "-s", d / "dn.caffemodel", "-o", d / "dn.pth", "-q"])
        rows.append(("densenet/caffe-to-torchvision", "DenseNet-121, seeded", "logits 1x1000",
                     _verify(["densenet/caffe-to-torchvision", "-s", d / "dn.caffemodel", "-c", d / "dn.pth",
                              "--source-graph", d / "dn.prototxt"])))
        _run(["apply", "densenet/caffe-to-efficient-caffe", "-s", d / "dn.caffemodel", "-t", d / "eff.prototxt",
              "-o", d / "eff.caffemodel", "-q"])
        rows.append(("densenet/caffe-to-efficient-caffe", "DenseNet-121, seeded", "logits 1x1000",
                     _verify(["densenet/caffe-to-efficient-caffe", "-s", d / "dn.caffemodel", "-c",
                              d / "eff.caffemodel", "--source-graph", d / "dn.prototxt", "--target-graph",
                              d / "eff.prototxt"])))
        _run(["apply", "densenet/torchvision-to-efficient-pytorch", "-s", d / "dn.pth", "-o", d / "effpt.pth", "-q"])
        rows.append(("densenet/torchvision-to-efficient-pytorch", "DenseNet-121 (from the row above)",
                     "logits 1x1000", _verify(["densenet/torchvision-to-efficient-pytorch", "-s", d / "dn.pth",
                                               "-c", d / "effpt.pth"])))
        # CaffeNet (tiny: same layers and groups, 99x99 input), Caffe -> Keras
        (d / "cn.prototxt").write_text(caffenet_prototxt(TINY))
        write_caffemodel(str(d / "cn.prototxt"), str(d / "cn.caffemodel"), seed=2)
        for spec, factory in (("caffenet/caffe-to-keras", "keras_caffenet_split_tiny"),
                              ("caffenet/caffe-to-keras-grouped", "keras_caffenet_grouped_tiny")):
            out = d / f"{factory}.h5"
            _run(["apply", spec, "-s", d / "cn.caffemodel", "-o", out, "-q"])
            rows.append((spec, "CaffeNet (tiny), seeded", "logits 1x10",
                         _verify([spec, "-s", d / "cn.caffemodel", "-c", out, "--source-graph", d / "cn.prototxt",
                                  "--target-model", f"mapspec.models.caffenet:{factory}", "--input-shape",
                                  "1,3,99,99", "--input", "random"])))
        # MobileFaceNet, the real checkpoint
        params = fx / "mobilefacenet-mxnet" / "model_mobilefacenet-0200.params"
        image = fx / "images" / "Aaron_Eckhart_0001.jpg"
        if params.exists():
            for spec, ext in (("mobilefacenet/mxnet-to-caffe", "caffemodel"), ("mobilefacenet/mxnet-to-torch", "pth")):
                out = d / f"mfn.{ext}"
                _run(["apply", spec, "-s", params, "-o", out, "-q"])
                for inp, what in ((image, "face image"), ("random", "seeded random")):
                    rows.append((spec, f"MobileFaceNet (real weights), {what}", "embedding 1x128",
                                 _verify([spec, "-s", params, "-c", out, "--input", inp])))
        else:
            print(f"(fixtures not found at {fx}: MobileFaceNet rows skipped)", file=sys.stderr)
        seconds = time.perf_counter() - t0
    print("| spec | model | compared | max abs error | cosine | verdict |")
    print("|---|---|---|---|---|---|")
    for spec, model, what, r in rows:
        print(f"| `{spec}` | {model} | {what} | {r['max_abs']:.2e} | {r['cosine']:.9f} | "
              f"{'PASS' if r['ok'] else 'FAIL'} |")
    print(f"\n({len(rows)} verifications in {seconds:.0f} s)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump([{"spec": s, "model": m, "compared": w, **r} for s, m, w, r in rows], f, indent=1)
    return 0 if all(r["ok"] for *_, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
