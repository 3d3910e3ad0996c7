"""How well `mapspec draft` does on the pairs the shipped specs convert.

    .venv/bin/python benchmarks/draft.py [--fixtures ../shared/fixtures] [--out draft.json]

For each pair, the source is the shipped spec's input (seeded DenseNet-121 / CaffeNet / VGG16
caffemodels made here, the real MobileFaceNet MXNet checkpoint of the fixtures) and the
template is the target's layout with its values zeroed (the shipped spec's output rewritten
as zeros, or the shipped Caffe prototxt), so the draft sees names and shapes only.  The draft
is applied to the source and compared, target by target, with the shipped spec's output:

* mapped exactly: the draft produces the tensor with the same values (bit for bit);
* open: the draft leaves it out (a TODO);
* wrong: the draft produces it with other values, or produces a target that does not exist.

The draft's TODO rules are left out for that (they are what it leaves open).  The last pairs are
ones that file order alone would get wrong, built here as real files (tests/two_tower.py,
tests/resnet_kaiming.py) and compared with a spec written by hand: two parallel towers of one
shape listed in opposite orders (with telling and with opaque names), torch layers whose names cross
the file order, and Kaiming's Caffe ResNet-50 (conv1 with a bias, each stage's shortcut listed first)
against torchvision's layout.

Prints a Markdown table (the README's) and, with --out, the numbers as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run(*argv) -> str:
    from mapspec import cli

    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    if code != 0:
        raise SystemExit(f"mapspec {' '.join(map(str, argv))} failed:\n{out.getvalue()}{err.getvalue()}")
    return out.getvalue() + err.getvalue()


def _tensors(path) -> dict:
    from mapspec.formats import open_checkpoint

    with open_checkpoint(str(path)) as r:
        return {n: np.array(r.read(n)) for n in r.names()}


def _zeros_copy(path: Path, out: Path) -> Path:
    """The same names, shapes and dtypes, every value 0: a template that gives nothing away."""
    from mapspec.formats import detect, module

    module(detect(path)).save(str(out), {k: np.zeros_like(v) for k, v in _tensors(path).items()})
    return out


def _model_template(d: Path, module: str, factory: str) -> Path:
    """The target model's own state dict (random init, torch's module order), as a user would give it."""
    import importlib

    import torch

    torch.manual_seed(0)
    model = getattr(importlib.import_module(f"mapspec.models.{module}"), factory)()
    path = d / f"{factory}-model.pth"
    torch.save(model.state_dict(), path)
    return path


def _llm_pairs(d: Path) -> list:
    """GPT-2 as transformers saves it (safetensors) and a Meta Llama checkpoint (consolidated.00.pth +
    params.json), tiny and seeded."""
    import json

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=16, n_embd=24, n_layer=2, n_head=4)).save_pretrained(
        d / "gpt2")
    dim, heads, kv, hidden, layers = 32, 4, 2, 40, 2
    hd = dim // heads
    shapes = {"tok_embeddings.weight": (48, dim), "norm.weight": (dim,), "output.weight": (48, dim)}
    for i in range(layers):
        for name, shape in (("attention.wq", (heads * hd, dim)), ("attention.wk", (kv * hd, dim)),
                            ("attention.wv", (kv * hd, dim)), ("attention.wo", (dim, heads * hd)),
                            ("feed_forward.w1", (hidden, dim)), ("feed_forward.w2", (dim, hidden)),
                            ("feed_forward.w3", (hidden, dim)), ("attention_norm", (dim,)), ("ffn_norm", (dim,))):
            shapes[f"layers.{i}.{name}.weight"] = shape
    (d / "llama").mkdir(exist_ok=True)
    torch.save({k: torch.randn(s) for k, s in shapes.items()}, d / "llama" / "consolidated.00.pth")
    (d / "llama" / "params.json").write_text(json.dumps({"dim": dim, "n_layers": layers, "n_heads": heads,
                                                         "n_kv_heads": kv, "vocab_size": 48, "norm_eps": 1e-5}))
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=48, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=False)
                     ).save_pretrained(d / "hf-llama")  # names sorted, as every safetensors file has them
    return [("GPT-2 HF -> nanoGPT", "gpt2/hf-to-nanogpt", d / "gpt2" / "model.safetensors", ".pt", None),
            ("Llama Meta -> HF (template in the converter's order)", "llama/meta-to-hf",
             d / "llama" / "consolidated.00.pth", ".safetensors", None),
            ("Llama Meta -> HF (template as transformers saves it)", "llama/meta-to-hf",
             d / "llama" / "consolidated.00.pth", ".safetensors", d / "hf-llama" / "model.safetensors")]


def _pairs(d: Path, fixtures: Path) -> list:
    from mapspec.models.caffenet import TINY
    from mapspec.models.caffenet import caffe_prototxt as caffenet_prototxt
    from mapspec.models.seeded import write_caffemodel

    pairs = []
    proto = fixtures / "densenet-caffe" / "DenseNet_121.prototxt"
    if proto.is_file():
        write_caffemodel(str(proto), str(d / "densenet121.caffemodel"), seed=121)
        pairs.append(("DenseNet-121 Caffe -> torchvision", "densenet/caffe-to-torchvision",
                      d / "densenet121.caffemodel", ".pth", _model_template(d, "densenet", "densenet121")))
    params = fixtures / "mobilefacenet-mxnet" / "model_mobilefacenet-0200.params"
    if params.is_file():
        pairs.append(("MobileFaceNet MXNet -> torch", "mobilefacenet/mxnet-to-torch", params, ".pth",
                      _model_template(d, "mobilefacenet", "mobilefacenet")))
        pairs.append(("MobileFaceNet MXNet -> Caffe", "mobilefacenet/mxnet-to-caffe", params, ".caffemodel",
                      ROOT / "specs" / "mobilefacenet" / "mobilefacenet.prototxt"))
    for name in ("mobilenet_deploy", "mobilenet_v2_deploy"):
        proto = fixtures / "mobilenet-caffe" / f"{name}.prototxt"
        if proto.is_file():  # the folded prototxt (mapspec fold-bn) is the template of caffe/fold-bn
            write_caffemodel(str(proto), str(d / f"{name}.caffemodel"), seed=5)
            _run("fold-bn", proto, d / f"{name}.caffemodel", "-o", d / f"{name}-folded", "--force")
            pairs.append((f"{'MobileNet v2' if 'v2' in name else 'MobileNet v1'} Caffe -> BN folded", "caffe/fold-bn",
                          d / f"{name}.caffemodel", ".caffemodel", d / f"{name}-folded.prototxt"))
    (d / "caffenet.prototxt").write_text(caffenet_prototxt(TINY))
    write_caffemodel(str(d / "caffenet.prototxt"), str(d / "caffenet.caffemodel"), seed=3)
    pairs.append(("CaffeNet Caffe -> Keras (groups=2)", "caffenet/caffe-to-keras-grouped", d / "caffenet.caffemodel",
                  ".h5", None))
    pairs.append(("CaffeNet Caffe -> Keras (split groups)", "caffenet/caffe-to-keras", d / "caffenet.caffemodel",
                  ".h5", None))
    pairs += _llm_pairs(d)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gen import vgg16_caffemodel

    vgg16_caffemodel(str(d / "vgg16.caffemodel"), scale=1 / 64, seed=0)
    pairs.append(("VGG16 Caffe -> torch", str(ROOT / "benchmarks" / "specs" / "vgg16-caffe-to-torch.yaml"),
                  d / "vgg16.caffemodel", ".pth", None))
    return pairs + _no_guess_pairs(d)


def _truth(d: Path, name: str, src_fmt: str, pairs: list) -> str:
    """A spec written by hand from the known correspondence (the truth a draft is compared with)."""
    import yaml

    path = d / f"{name}-truth.yaml"
    path.write_text(yaml.safe_dump({"mapspec": 1, "name": name, "source": {"format": src_fmt},
                                    "target": {"format": "torch"},
                                    "rules": [{"from": a, "to": b} for a, b in pairs]}, sort_keys=False))
    return str(path)


def _no_guess_pairs(d: Path) -> list:
    """Layers that shapes and file order alone would pair wrongly: two parallel towers of one shape (Caffe lists
    the left first, torch registers the right first), with telling and with opaque names; torch layers whose
    names cross the file order; Kaiming's Caffe ResNet-50 (conv1 with a bias, the shortcut listed first) against
    torchvision's layout (the tensors at full size)."""
    import torch

    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "draft")]  # the tests' builders of these files
    import resnet_kaiming as rk
    import two_tower as tt

    out = []
    for tag, (a, b), (p, q), label in (("names", ("tower_left", "tower_right"), ("left", "right"),
                                        "Two towers Caffe -> torch (tower_left/right -> right, left)"),
                                       ("opaque", ("tower_a", "tower_b"), ("path_p", "path_q"),
                                        "Two towers Caffe -> torch, opaque names (tower_a/b -> path_q, path_p)")):
        _, model = tt.caffe_files(d / tag, a, b)
        template = tt.torch_template(d / tag / "tpl.pth", first=p, second=q, torch_order=(q, p))
        truth = [(f"{s}[{k}]", f"{t}.{r}") for s, t in (("stem", "stem"), (a, p), (b, q), ("fc", "fc"))
                 for k, r in enumerate(("weight", "bias"))]
        out.append((label, _truth(d, f"two-tower-{tag}", "caffe", truth), model, ".pth", template))
    g = torch.Generator().manual_seed(3)
    torch.save({f"{m}.{r}": torch.randn(s, generator=g) for m in ("encoder", "decoder")
                for r, s in (("weight", (6, 6)), ("bias", (6,)))}, d / "encdec.pth")
    torch.save({f"{m}_proj.{r}": torch.zeros(s) for m in ("decoder", "encoder")
                for r, s in (("weight", (6, 6)), ("bias", (6,)))}, d / "encdec-template.pth")
    truth = [(f"{m}.{r}", f"{m}_proj.{r}") for m in ("encoder", "decoder") for r in ("weight", "bias")]
    out.append(("torch -> torch, encoder/decoder against decoder_proj listed first",
                _truth(d, "encdec", "torch", truth), d / "encdec.pth", ".pth", d / "encdec-template.pth"))
    _, model = rk.caffe_files(d / "resnet50")
    out.append(("ResNet-50 Kaiming Caffe -> torchvision",
                str(ROOT / "specs" / "resnet" / "caffe-to-torchvision.yaml"), model, ".pth",
                rk.torch_template(d / "resnet50" / "torchvision.pth")))
    return out


def measure(d: Path, label: str, spec: str, source: Path, suffix: str, template) -> dict:
    key = label.split()[0].lower() + str(abs(hash(label)) % 1000)
    shipped = d / f"{key}-shipped{suffix}"
    _run("apply", spec, "-s", source, "-o", shipped, "-q", "--force",
         *(["-t", template] if suffix == ".caffemodel" and template is not None else []))
    if template is None:
        template = _zeros_copy(shipped, d / f"{key}-template{suffix}")
    spec_out = d / f"{key}-draft.yaml"
    _run("draft", "-s", source, "-t", template, "-o", spec_out, "--force")
    drafted = d / f"{key}-drafted{suffix}"
    import yaml

    doc = yaml.safe_load(spec_out.read_text())
    # writers check the template; here what the draft leaves open is counted instead (a Caffe writer gets it by -t)
    doc["target"].pop("template", None)
    todos = [r for r in doc["rules"] if str(r.get("name", "")).startswith("TODO")]
    doc["rules"] = [r for r in doc["rules"] if r not in todos]  # what the draft maps, without what it leaves open
    loose = d / f"{key}-draft-untemplated.yaml"
    loose.write_text(yaml.safe_dump(doc, sort_keys=False))
    _run("apply", loose, "-s", source, "-o", drafted, "-q", "--force", "--relax", "missing-target", "--relax",
         "unused-source", *(["-t", template] if suffix == ".caffemodel" else []))
    want, got = _tensors(shipped), _tensors(drafted)
    exact = [n for n in want if n in got and got[n].dtype == want[n].dtype and np.array_equal(got[n], want[n])]
    open_ = [n for n in want if n not in got]
    wrong = [n for n in want if n in got and n not in exact] + [n for n in got if n not in want]
    return {"pair": label, "spec": spec if not spec.startswith(str(d)) else "(truth written by the benchmark)",
            "targets": len(want), "exact": len(exact), "open": len(open_), "wrong": len(wrong),
            "wrong_names": wrong[:10], "open_names": open_[:10], "draft_rules": len(doc["rules"]), "todos": len(todos)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=os.environ.get("MAPSPEC_FIXTURES", str(ROOT.parent / "shared" / "fixtures")))
    ap.add_argument("--out")
    ap.add_argument("--keep", help="keep the drafts and files in this directory")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        rows = [measure(d, *p) for p in _pairs(d, Path(args.fixtures))]
    print("| pair | targets | mapped exactly | left open | mapped wrong | draft rules | TODOs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["targets"]
        print(f"| {r['pair']} | {n} | {r['exact']} ({100 * r['exact'] / n:.0f}%) | {r['open']} "
              f"({100 * r['open'] / n:.0f}%) | {r['wrong']} | {r['draft_rules']} | {r['todos']} |")
    for r in rows:
        if r["wrong"] or r["open"]:
            print(f"{r['pair']}: open {r['open_names']} wrong {r['wrong_names']}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
