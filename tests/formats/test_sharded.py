"""Sharded checkpoints (an index.json and its shards): reading, writing, hostile indexes.

Shards are made by the reference libraries (safetensors' numpy writer, torch.save,
transformers' save_pretrained) and our outputs are read back by them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.engine import apply
from mapspec.errors import FormatError, MapspecError
from mapspec.formats import open_checkpoint
from mapspec.formats import sharded
from mapspec.formats.base import TensorInfo

st_numpy = pytest.importorskip("safetensors.numpy")

IDENTITY = """mapspec: 1
name: identity
source: {format: safetensors}
target: {format: safetensors}
rules:
  - from: "<n:path>"
    to: "{n}"
"""


def arange(shape, start=0, dtype=np.float32) -> np.ndarray:
    n = int(np.prod(shape))
    return (np.arange(start, start + n) % 65521).astype(dtype).reshape(shape)


def tensors() -> dict:
    return {f"layers.{i}.w": arange((4, 6), 100 * i) for i in range(4)} | {"embed": arange((8, 3), 7)}


def write_sharded(directory: Path, shards: dict, index_name="model.safetensors.index.json", weight_map=None,
                  saver=None) -> Path:
    """Shards written by the reference writer, plus an index (by default, the true weight map)."""
    directory.mkdir(parents=True, exist_ok=True)
    wm = {}
    for fname, tdict in shards.items():
        (saver or st_numpy.save_file)(tdict, str(directory / fname))
        wm.update({k: fname for k in tdict})
    index = directory / index_name
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map or wm}))
    return index


def two_shards(tmp_path) -> tuple[Path, dict]:
    t = tensors()
    names = list(t)
    index = write_sharded(tmp_path / "ckpt", {"model-00001-of-00002.safetensors": {k: t[k] for k in names[:3]},
                                              "model-00002-of-00002.safetensors": {k: t[k] for k in names[3:]}})
    return index, t


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def spec_file(tmp_path, text=IDENTITY, name="spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- reading -----------------------------------------------------------------------------------

def test_reads_index_and_directory(tmp_path):
    index, t = two_shards(tmp_path)
    for where in (index, index.parent):
        with open_checkpoint(where) as r:
            assert set(r.infos()) == set(t)
            for k, v in t.items():
                np.testing.assert_array_equal(r.read(k), v)
            assert r.shard_of("embed") == "model-00002-of-00002.safetensors"
            assert r.notes == []
    # the first try: --source-format safetensors on the index
    with open_checkpoint(index, format="safetensors") as r:
        assert len(r) == len(t)


def test_inspect_shows_shards(tmp_path):
    index, _ = two_shards(tmp_path)
    code, out, _ = run_cli("inspect", index.parent)
    assert code == 0
    assert "shard" in out.splitlines()[0]
    line = next(x for x in out.splitlines() if x.startswith("embed "))
    assert line.rstrip().endswith("model-00002-of-00002.safetensors")
    assert "(2 safetensors shards)" in out
    code, out, _ = run_cli("inspect", index, "--json")
    js = json.loads(out)
    assert {e["name"]: e["shard"] for e in js["tensors"]}["layers.0.w"] == "model-00001-of-00002.safetensors"


def test_directory_with_one_plain_checkpoint(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    st_numpy.save_file({"a": arange((2, 2))}, str(d / "model.safetensors"))
    with open_checkpoint(d) as r:
        assert r.format == "safetensors" and list(r.infos()) == ["a"]


def test_torch_bin_shards(tmp_path):
    torch = pytest.importorskip("torch")
    t = tensors()
    names = list(t)
    parts = {"pytorch_model-00001-of-00002.bin": {k: t[k] for k in names[:2]},
             "pytorch_model-00002-of-00002.bin": {k: t[k] for k in names[2:]}}
    index = write_sharded(tmp_path / "bin", parts, "pytorch_model.bin.index.json",
                          saver=lambda d, p: torch.save({k: torch.from_numpy(v) for k, v in d.items()}, p))
    with open_checkpoint(index.parent) as r:
        assert r.shard_format == "torch"
        for k, v in t.items():
            np.testing.assert_array_equal(r.read(k), v)


@pytest.mark.parametrize("jobs", [1, 2])
def test_references_and_stacks_across_shards(tmp_path, jobs):
    index, t = two_shards(tmp_path)  # layers.0-2 in shard 1, layers.3 and embed in shard 2
    spec = spec_file(tmp_path, """mapspec: 1.1
name: cross
rules:
  - from: "embed"
    to: joined
    apply: [{reshape: [4, 6]}, {concat: {after: ["layers.0.w"]}}]
  - from: "layers.<e>.w"
    to: stacked
    stack: {over: e, axis: 0}
    apply: [{transpose: [1, 0]}]
""")
    out = tmp_path / "joined.safetensors"
    apply(str(spec), str(index), str(out), jobs=jobs)
    got = st_numpy.load_file(str(out))
    np.testing.assert_array_equal(got["joined"], np.concatenate([t["embed"].reshape(4, 6), t["layers.0.w"]]))
    np.testing.assert_array_equal(got["stacked"], np.stack([t[f"layers.{e}.w"].T for e in range(4)]))


# -- hostile indexes: one FormatError each, naming the files, nothing written ------------------

def _expect_error(tmp_path, index, *needles):
    with pytest.raises(FormatError) as ei:
        open_checkpoint(index)
    for n in needles:
        assert n in str(ei.value), str(ei.value)
    out = tmp_path / "out"
    code, o, err = run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{out}/")
    assert code == 1 and err.startswith("mapspec: error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    return str(ei.value)


def test_truncated_index(tmp_path):
    index, _ = two_shards(tmp_path)
    index.write_bytes(index.read_bytes()[:40])
    msg = _expect_error(tmp_path, index, str(index), "not valid JSON", "truncated")
    assert "at byte" in msg


@pytest.mark.parametrize("bad, needle", [("../x.safetensors", "goes up a directory"),
                                         ("/etc/passwd", "absolute path"),
                                         ("sub/../../x.safetensors", "goes up a directory")])
def test_index_pointing_outside(tmp_path, bad, needle):
    index, t = two_shards(tmp_path)
    js = json.loads(index.read_text())
    js["weight_map"]["embed"] = bad
    index.write_text(json.dumps(js))
    _expect_error(tmp_path, index, str(index), repr(bad), needle)


def test_symlinked_shard_outside(tmp_path):
    index, t = two_shards(tmp_path)
    outside = tmp_path / "outside.safetensors"
    st_numpy.save_file({"embed": t["embed"]}, str(outside))
    shard = index.parent / "model-00002-of-00002.safetensors"
    shard.unlink()
    shard.symlink_to(outside)
    _expect_error(tmp_path, index, "outside the index's directory")


def test_missing_shard(tmp_path):
    index, _ = two_shards(tmp_path)
    (index.parent / "model-00002-of-00002.safetensors").unlink()
    _expect_error(tmp_path, index, str(index), "'model-00002-of-00002.safetensors' does not exist", "'layers.3.w'")


def test_shard_not_safetensors(tmp_path):
    index, _ = two_shards(tmp_path)
    (index.parent / "model-00002-of-00002.safetensors").write_bytes(b"PK\x03\x04 not a safetensors file at all")
    msg = _expect_error(tmp_path, index, "model-00002-of-00002.safetensors", f"shard of {index}")
    assert "header length" in msg


def test_two_shards_hold_one_tensor(tmp_path):
    t = tensors()
    index = write_sharded(tmp_path / "dup", {"a.safetensors": {"x": t["embed"], "y": t["layers.0.w"]},
                                             "b.safetensors": {"x": t["embed"], "z": t["layers.1.w"]}},
                          weight_map={"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"})
    _expect_error(tmp_path, index, "two shards hold this tensor", "'a.safetensors'", "'b.safetensors'", "'x'")


def test_tensor_missing_from_its_shard(tmp_path):
    t = tensors()
    index = write_sharded(tmp_path / "miss", {"a.safetensors": {"x": t["embed"]}, "b.safetensors": {"y": t["embed"]}},
                          weight_map={"x": "a.safetensors", "y": "b.safetensors", "z": "b.safetensors"})
    _expect_error(tmp_path, index, str(index), "'z'", "shard 'b.safetensors', which does not hold it")


def test_index_and_shards_disagree(tmp_path):
    t = tensors()
    index = write_sharded(tmp_path / "swap", {"a.safetensors": {"x": t["embed"]}, "b.safetensors": {"y": t["embed"]}},
                          weight_map={"x": "b.safetensors", "y": "a.safetensors"})
    _expect_error(tmp_path, index, "'x'", "'b.safetensors'", "'a.safetensors' does")


@pytest.mark.parametrize("text, needle", [('{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}',
                                           "names 'a' twice"),
                                          ('{"weight_map": ["a"]}', "weight_map"),
                                          ('{"weight_map": {"a": 3}}', "is a string"),
                                          ('{"weight_map": {}}', "empty"),
                                          ('[' * 100000, "JSON"),
                                          ('{"metadata": {"total_size": ' + "9" * 5000 + '}, "weight_map": {}}',
                                           "an integer of 5000 digits")])
def test_malformed_index(tmp_path, text, needle):
    d = tmp_path / "m"
    d.mkdir()
    index = d / "model.safetensors.index.json"
    index.write_text(text)
    _expect_error(tmp_path, index, str(index), needle)


def test_stray_shard_noted_once(tmp_path):
    index, t = two_shards(tmp_path)
    st_numpy.save_file({"old": t["embed"]}, str(index.parent / "model-00003-of-00003.safetensors"))
    with open_checkpoint(index) as r:
        assert "old" not in r
        assert len(r.notes) == 1 and "model-00003-of-00003.safetensors" in r.notes[0]
    code, out, err = run_cli("plan", spec_file(tmp_path), "-s", index.parent)
    assert code == 0 and out.count("not named by it and not read") == 1


def test_directory_with_several_checkpoints(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for n in ("a.safetensors", "b.safetensors"):
        st_numpy.save_file({"a": arange((2,))}, str(d / n))
    with pytest.raises(FormatError, match="2 checkpoint files .* no \\*.index.json"):
        open_checkpoint(d)


# -- writing -----------------------------------------------------------------------------------

def test_parse_size_units():
    assert sharded.parse_size("5GB") == 5 * 10 ** 9
    assert sharded.parse_size("100KB") == 100_000
    assert sharded.parse_size("2GiB") == 2 << 30
    assert sharded.parse_size("1.5MB") == 1_500_000
    assert sharded.parse_size(4096) == 4096
    for bad in ("5 parsecs", "", "-1GB", 0, True, "GB"):
        with pytest.raises(MapspecError, match="max_shard_size"):
            sharded.parse_size(bad)


def test_plan_shards_oversized_tensor_alone():
    infos = [TensorInfo(n, (s,), "uint8") for n, s in [("a", 40), ("b", 50), ("big", 300), ("c", 10), ("d", 95)]]
    groups = [[i.name for i in g] for g in sharded.plan_shards(infos, 100)]
    assert groups == [["a", "b"], ["big"], ["c"], ["d"]]


def test_sharded_output_layout_and_reference_reader(tmp_path):
    index, t = two_shards(tmp_path)
    out = tmp_path / "out"
    code, o, err = run_cli("apply", spec_file(tmp_path), "-s", index.parent, "-o", f"{out}/",
                           "--max-shard-size", "200B", "-j", "1")
    assert code == 0, err
    files = sorted(p.name for p in out.iterdir())
    n = len(files) - 1
    assert files[-1] == "model.safetensors.index.json"
    assert files[:-1] == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    js = json.loads((out / "model.safetensors.index.json").read_text())
    assert js["metadata"]["total_size"] == sum(v.nbytes for v in t.values())
    got = {}
    for f in files[:-1]:
        part = st_numpy.load_file(str(out / f))
        assert sum(v.nbytes for v in part.values()) <= 200 or len(part) == 1
        got.update({k: (f, v) for k, v in part.items()})
    assert {k: f for k, (f, _) in got.items()} == js["weight_map"]
    for k, v in t.items():
        np.testing.assert_array_equal(got[k][1], v)
    # plan order: shards hold the tensors in the source's order
    order = [k for f in files[:-1] for k in st_numpy.load_file(str(out / f))]
    with open_checkpoint(index) as r:
        assert order == list(r.infos())


def test_sharded_output_atomic(tmp_path):
    index, t = two_shards(tmp_path)
    spec = spec_file(tmp_path, IDENTITY.replace('to: "{n}"', 'to: "{n}"\n    apply: [{div: {by: 0}}]'), "div.yaml")
    out = tmp_path / "new" / "dir"
    code, _, err = run_cli("apply", spec, "-s", index, "-o", f"{out}/", "--max-shard-size", "100B")
    assert code == 1 and "zero" in err
    assert not (tmp_path / "new").exists()  # directories made for the output are gone again
    # an existing checkpoint is untouched without --force, and no temporary files stay behind
    good = tmp_path / "good"
    assert run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{good}/")[0] == 0
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    code, _, err = run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{good}/", "--max-shard-size", "100B")
    assert code == 1 and "--force" in err
    code, _, err = run_cli("apply", spec, "-s", index, "-o", f"{good}/", "--force")
    assert code == 1
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{good}/", "--max-shard-size", "100B",
                   "--force")[0] == 0
    assert not [p for p in good.iterdir() if p.name.startswith(".")]
    assert len(list(good.glob("model-*-of-00005.safetensors"))) == 5
    # --force with fewer shards: the replaced index's shards go (as save_pretrained does); other files stay
    (good / "notes.txt").write_text("mine")
    assert run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{good}/", "--force")[0] == 0
    assert sorted(p.name for p in good.iterdir()) == ["model-00001-of-00001.safetensors",
                                                      "model.safetensors.index.json", "notes.txt"]


def test_interrupt_leaves_nothing(tmp_path):
    index, _ = two_shards(tmp_path)
    from mapspec.engine import execute, plan

    out = tmp_path / "o"
    out.mkdir()

    def boom(done, total, step):
        if done == 3:
            raise KeyboardInterrupt

    for jobs in (1, 2):
        p = plan(str(spec_file(tmp_path)), str(index))
        with pytest.raises(KeyboardInterrupt):
            execute(p, f"{out}/", progress=boom, jobs=jobs, target_options={"max_shard_size": 100})
        p.source.close()
        assert list(out.iterdir()) == []


def test_max_shard_size_needs_sharded_output(tmp_path):
    index, _ = two_shards(tmp_path)
    code, _, err = run_cli("apply", spec_file(tmp_path), "-s", index, "-o", tmp_path / "one.safetensors",
                           "--max-shard-size", "1GB")
    assert code == 1 and "sharded output" in err


def test_torch_shard_output(tmp_path):
    torch = pytest.importorskip("torch")
    index, t = two_shards(tmp_path)
    out = tmp_path / "tout" / "pytorch_model.bin.index.json"
    spec = spec_file(tmp_path, IDENTITY.replace("target: {format: safetensors}\n", ""))
    (tmp_path / "tout").mkdir()
    code, _, err = run_cli("apply", spec, "-s", index, "-o", out, "--max-shard-size", "150B")
    assert code == 0, err
    js = json.loads(out.read_text())
    shards = sorted(set(js["weight_map"].values()))
    assert shards[0].startswith("pytorch_model-00001-of-") and shards[0].endswith(".bin")
    for f in shards:
        sd = torch.load(out.parent / f, weights_only=True)
        for k, v in sd.items():
            assert js["weight_map"][k] == f
            np.testing.assert_array_equal(v.numpy(), t[k])


def _tiny_llama(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1)
    model = transformers.LlamaForCausalLM(cfg).eval()
    src = tmp_path / "llama"
    model.save_pretrained(src, max_shard_size="10KB")
    return torch, transformers, model, src


@pytest.mark.parametrize("jobs, target", [("1", "safetensors"), ("3", "safetensors"), ("2", "torch")])
def test_transformers_loads_sharded_output(tmp_path, jobs, target):
    torch, transformers, model, src = _tiny_llama(tmp_path)
    assert len(list(src.glob("model-*.safetensors"))) > 1  # the source is sharded by transformers itself
    out = tmp_path / "converted"
    where = f"{out}/" if target == "safetensors" else out / "pytorch_model.bin.index.json"
    spec = spec_file(tmp_path, IDENTITY.replace("target: {format: safetensors}", f"target: {{format: {target}}}"))
    out.mkdir()
    code, _, err = run_cli("apply", spec, "-s", src, "-o", where, "--max-shard-size", "8KB", "--jobs", jobs)
    assert code == 0, err
    shards = list(out.glob("model-*.safetensors" if target == "safetensors" else "pytorch_model-*.bin"))
    assert len(shards) > 1
    (out / "config.json").write_text((src / "config.json").read_text())
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    x = torch.arange(12)[None]
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    sd = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_shard_size_as_writer_option_and_bad_flags(tmp_path):
    index, t = two_shards(tmp_path)
    out = tmp_path / "opt"
    code, _, err = run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{out}/",
                           "--target-option", "max_shard_size=150B")
    assert code == 0, err
    assert len(list(out.glob("model-*.safetensors"))) == len(t)  # every tensor is 96 bytes: one per shard
    code, _, err = run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{tmp_path / 'x'}/", "-j", "0")
    assert code == 2 and "--jobs" in err
    code, _, err = run_cli("apply", spec_file(tmp_path), "-s", index, "-o", f"{tmp_path / 'y'}/",
                           "--max-shard-size", "lots")
    assert code == 1 and "max_shard_size: 'lots' is not a size" in err and not (tmp_path / "y").exists()


def test_diff_and_plan_take_sharded_checkpoints(tmp_path):
    index, t = two_shards(tmp_path)
    single = tmp_path / "single.safetensors"
    st_numpy.save_file(t, str(single))
    code, out, _ = run_cli("diff", index.parent, single)
    assert code == 0 and f"{len(t)} common tensors, 0 differ" in out
    changed = dict(t, embed=t["embed"] + 1)
    st_numpy.save_file(changed, str(single))
    code, out, _ = run_cli("diff", single, index)
    assert code == 1 and "embed" in out
    code, out, _ = run_cli("plan", spec_file(tmp_path), "-s", index)
    assert code == 0 and "coverage: OK" in out


def test_renamed_tensors_keep_their_place_in_the_page_in_every_shard(tmp_path):
    """Sharded output of a rename: each shard's data area starts so that the copied tensors' bytes sit at
    the same offset mod 4096 as in their source shard; the library reads every shard."""
    import struct

    def offsets(path):
        raw = Path(path).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        return {k: 8 + n + v["data_offsets"][0] for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}

    src_dir = tmp_path / "src"
    src_dir.mkdir()
    weight_map, want = {}, {}
    for k in range(2):
        part = {f"w.{2 * k + j}": (np.arange(2048, dtype=np.float32) + 10_000 * (2 * k + j)).reshape(32, 64)
                for j in range(2)}
        name = f"model-0000{k + 1}-of-00002.safetensors"
        st_numpy.save_file(part, str(src_dir / name), metadata={"shard": "x" * (5 + 37 * k)})
        weight_map.update({t: name for t in part})
        want.update(part)
    (src_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nname: r\nsource: {format: safetensors}\ntarget: {format: safetensors}\n"
                    "rules:\n  - from: \"w.<i>\"\n    to: \"renamed.{i}\"\n")
    out = tmp_path / "out"
    apply(str(spec), str(src_dir), f"{out}/", target_options={"max_shard_size": 8192 * 2}, jobs=2)
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) == 2
    src_at = {}
    for name in set(weight_map.values()):
        src_at.update(offsets(src_dir / name))
    for shard in set(index.values()):
        got = st_numpy.load_file(str(out / shard))
        for t, at in offsets(out / shard).items():
            i = int(t.split(".")[1])
            assert at % 4096 == src_at[f"w.{i}"] % 4096, t
            np.testing.assert_array_equal(got[t], want[f"w.{i}"])
