"""The benchmark scripts run (at tiny sizes) and produce what they claim; no timing assertions here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mapspec
from mapspec.frameworks.caffe import schema

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import gen  # noqa: E402  (benchmarks/gen.py)


def test_vgg16_layers_have_vgg16s_parameter_count():
    """138,357,544 parameters and fc6 4096 x 25088: the published VGG16 figures."""
    blobs = [b for layer in gen.vgg16_layers(1.0) for b in layer.blobs]
    assert sum(b.count for b in blobs) == 138_357_544
    largest = max(blobs, key=lambda b: b.count)
    assert (largest.layer, largest.dims) == ("fc6", (1, 1, 4096, 25088))
    assert len(blobs) == 32


def test_generated_caffemodel_parses_with_protobuf_and_our_reader(tmp_path):
    p = tmp_path / "v.caffemodel"
    facts = gen.vgg16_caffemodel(str(p), scale=1 / 256, seed=1)
    assert facts["bytes"] == p.stat().st_size
    net = schema.NetParameter.FromString(p.read_bytes())  # protobuf's own decoder, independent of ours
    pb = {f"{layer.name}[{k}]": (tuple((b.num, b.channels, b.height, b.width)), np.array(b.data, np.float32))
          for layer in net.layer for k, b in enumerate(layer.blobs)}
    assert [layer.type for layer in net.layer][:3] == ["Convolution", "ReLU", "Convolution"]
    with mapspec.open_checkpoint(str(p)) as r:
        assert list(r.infos()) == list(pb)
        for name, (shape, values) in pb.items():
            assert r.infos()[name].shape == shape
            np.testing.assert_array_equal(r.read(name).reshape(-1), values)
    assert facts["values"] == sum(v.size for _, v in pb.values())


def test_generated_safetensors_reads_with_the_library(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    p = tmp_path / "s.safetensors"
    gen.safetensors_checkpoint(str(p), count=8, rows=16, cols=24, seed=2)
    lib = safetensors_numpy.load_file(str(p))
    assert sorted(lib) == sorted(f"layers.{i}.{k}.weight" for i in range(2) for k in gen.SAFETENSORS_KINDS)
    assert all(v.shape == (16, 24) and v.dtype == np.float32 for v in lib.values())
    assert len({v.tobytes() for v in lib.values()}) == 8  # seeded, but every tensor distinct


def test_specs_validate():
    from mapspec import cli

    specs = sorted(str(p) for p in (BENCH / "specs").glob("*.yaml"))
    names = {Path(p).name for p in specs}
    assert {"safetensors-rename.yaml", "vgg16-caffe-to-torch.yaml", "llama-hf-to-meta.yaml", "gguf-rename.yaml",
            "gguf-to-safetensors.yaml", "safetensors-rename-only.yaml"} <= names
    assert cli.run(["validate", *specs]) == 0


@pytest.mark.slow
def test_quick_run_produces_every_case_and_checks_outputs(tmp_path):
    """``benchmarks/run.py --quick``: every case runs, outputs are checked, the JSON holds the numbers."""
    pytest.importorskip("torch")  # the baseline and the output check use torch
    out = tmp_path / "results.json"
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--quiet", "--workdir", str(work),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    cases = report["cases"]
    assert list(cases) == ["vgg16-caffe-to-torch", "safetensors-rename-4g", "plan-inspect", "scaling",
                           "sharded-llama-0.6g", "gguf-llama", "sync-vs-no-sync-1.5g", "hf-to-gguf-outtype"]
    assert cases["gguf-llama"]["check"].startswith("equal to gguf-py's (48 GGUF tensors")
    assert cases["sharded-llama-0.6g"]["check"].startswith("equal to the HF way's")
    outtype = cases["hf-to-gguf-outtype"]
    assert "skipped" in outtype or outtype["check"].startswith("equal to llama.cpp's converter")
    assert cases["vgg16-caffe-to-torch"]["check"].startswith("identical to the baseline")
    assert cases["safetensors-rename-4g"]["check"].startswith("all 8 tensors equal")
    assert "rename-only: all 8 tensors equal the source's bytes" in cases["safetensors-rename-4g"]["check"]
    assert {"rename-only --no-sync <= 1.15 x cp", "rename-only (durable) <= 1.15 x cp && sync",
            "full workload (durable) <= 1.3 x cp && sync", "full workload < HF way",
            "rename-only (durable) < HF way"} <= set(cases["safetensors-rename-4g"]["targets"])
    sync = cases["sync-vs-no-sync-1.5g"]
    assert sync["check"].startswith("all 8 tensors equal") and set(sync["results"]) == {
        "mapspec apply (sync)", "mapspec apply --no-sync", "mapspec apply DIR/ (sync)",
        "mapspec apply DIR/ --no-sync", "cp && sync FILE", "cp"}
    for name in ("vgg16-caffe-to-torch", "safetensors-rename-4g", "plan-inspect"):
        for m in cases[name]["results"].values():
            assert len(m["wall_s"]) == 1 and m["wall_median_s"] > 0 and m["peak_rss_median_mb"] > 0
        assert all(set(t) == {"value", "limit", "unit", "met"} for t in cases[name]["targets"].values())
    rows = cases["scaling"]["rows"]
    assert [r["scale"] for r in rows] == sorted(r["scale"] for r in rows) and len(rows) == 4
    assert rows[0]["bytes"] < rows[-1]["bytes"]
    assert "| vgg16-caffe-to-torch | mapspec apply |" in proc.stdout
    assert not list(work.glob("*.caffemodel")) and not list(work.glob("*.safetensors"))  # cleaned up
    assert not list(work.glob("llama-*")) and not list(work.glob("sync-*")) and not list(work.glob("hf-llama-*"))


def test_generated_gguf_reads_with_gguf_py(tmp_path):
    gguf = pytest.importorskip("gguf")
    p = tmp_path / "l.gguf"
    facts = gen.llama_gguf(str(p), scale=1 / 128, seed=4)
    r = gguf.GGUFReader(str(p))  # gguf-py's reader, independent of ours
    assert r.fields["general.architecture"].contents() == "llama" and r.fields["llama.block_count"].contents() == 8
    assert len(r.tensors) == facts["tensors"] == 48 and facts["bytes"] == p.stat().st_size
    shapes = {t.name: tuple(t.data.shape) for t in r.tensors}
    assert shapes["blk.0.attn_q.weight"] == (32, 32) and shapes["blk.7.ffn_up.weight"] == (64, 32)
    assert shapes["blk.3.ffn_down.weight"] == (32, 64)
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F16 for t in r.tensors)
    assert len({t.data.tobytes() for t in r.tensors}) == 48  # seeded, every tensor distinct


@pytest.mark.slow
def test_baseline_script_matches_the_spec(tmp_path):
    """The baseline and ``mapspec apply`` with the benchmark spec write the same state dict."""
    torch = pytest.importorskip("torch")
    src = tmp_path / "v.caffemodel"
    gen.vgg16_caffemodel(str(src), scale=1 / 1024, seed=3)
    base = tmp_path / "b.pth"
    subprocess.run([sys.executable, str(BENCH / "baseline_caffe_to_torch.py"), str(src), str(base)], check=True,
                   capture_output=True)
    ours = tmp_path / "o.pth"
    mapspec.apply(str(BENCH / "specs" / "vgg16-caffe-to-torch.yaml"), str(src), str(ours))
    a = torch.load(str(ours), weights_only=True)
    b = torch.load(str(base), weights_only=True)
    assert list(a) == list(b) and len(a) == 32
    assert list(a)[:2] == ["features.0.weight", "features.0.bias"] and list(a)[-1] == "classifier.6.bias"
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_generated_llama_shards_load_with_transformers_layout(tmp_path):
    """gen.llama_sharded writes what save_pretrained writes: shards the library reads and an index that
    names every tensor's shard; the HF-way script and the benchmark spec rename alike."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    pytest.importorskip("torch")
    src = tmp_path / "llama"
    facts = gen.llama_sharded(str(src), gib=0.6, shard_bytes=20_000, seed=1, scale=1 / 64)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) == facts["shards"] > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    for shard in shards:
        assert all(index["weight_map"][k] == shard for k in safetensors_numpy.load_file(str(src / shard)))
    assert sum(len(safetensors_numpy.load_file(str(src / f))) for f in shards) == facts["tensors"]
    hf = tmp_path / "hf"
    subprocess.run([sys.executable, str(BENCH / "hf_shards.py"), str(src), str(hf)], check=True, capture_output=True)
    ours = tmp_path / "ours"
    mapspec.apply(str(BENCH / "specs" / "llama-hf-to-meta.yaml"), str(src), f"{ours}/")
    a = {k: v for f in ours.glob("*.safetensors") for k, v in safetensors_numpy.load_file(str(f)).items()}
    b = {k: v for f in hf.glob("*.safetensors") for k, v in safetensors_numpy.load_file(str(f)).items()}
    assert sorted(a) == sorted(b) and "layers.0.attention.wq.weight" in a and "output.weight" in a
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("mode,spec", [("full", "safetensors-rename.yaml"), ("rename", "safetensors-rename-only.yaml")])
def test_hf_file_script_matches_the_spec(tmp_path, mode, spec):
    """hf_file.py (the Hugging Face way of the safetensors case) writes what mapspec writes with the spec."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    src = tmp_path / "s.safetensors"
    gen.safetensors_checkpoint(str(src), count=8, rows=16, cols=24, seed=3)
    subprocess.run([sys.executable, str(BENCH / "hf_file.py"), mode, str(src), str(tmp_path / "hf.safetensors")],
                   check=True)
    mapspec.apply(str(BENCH / "specs" / spec), str(src), str(tmp_path / "ms.safetensors"))
    a, b = load_file(str(tmp_path / "hf.safetensors")), load_file(str(tmp_path / "ms.safetensors"))
    assert sorted(a) == sorted(b) and len(a) == 8
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
