"""Keras 3 .keras archives: read and write, checked against Keras 3 itself (load_model / load_weights)."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import detect, open_checkpoint
from mapspec.formats import keras as kh5
from mapspec.formats import keras_archive as ka

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")


def build():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="d1"),
                             keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(3, name="d2")],
                            name="net")


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "model.keras"
    build().save(str(path))
    return path


def distinct(infos) -> dict:
    out, start = {}, 0
    for name, info in infos.items():
        n = int(np.prod(info.shape))
        out[name] = ((np.arange(n, dtype=np.float32) + start) / 50 + 0.5).reshape(info.shape)
        start += n
    return out


def as_numpy(y):
    return y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)


def test_read_names_like_the_weights_file(archive, tmp_path):
    assert detect(archive) == "keras-archive"
    model = keras.saving.load_model(str(archive))
    model.save_weights(str(tmp_path / "w.weights.h5"))
    with open_checkpoint(archive) as a, open_checkpoint(tmp_path / "w.weights.h5") as b:
        assert a.names() == b.names() and len(a.names()) == 8
        for n in a.names():
            assert np.array_equal(a.read(n), b.read(n))
    with open_checkpoint(archive, format="keras") as c:  # --format keras on a .keras file works too
        assert c.names() == b.names()


def test_write_load_model_equals_load_weights(archive, tmp_path):
    with open_checkpoint(archive) as r:
        new = distinct(r.infos())
    out = tmp_path / "out.keras"
    ka.save(out, new, template=str(archive))
    with zipfile.ZipFile(archive) as t, zipfile.ZipFile(out) as o:
        assert [z.filename for z in o.infolist()] == [z.filename for z in t.infolist()]
        assert o.read("config.json") == t.read("config.json") and o.read("metadata.json") == t.read("metadata.json")
    weights = tmp_path / "same.weights.h5"
    kh5.save(weights, new, template=build())  # the Keras HDF5 writer, laid out like the model
    loaded = keras.saving.load_model(str(out))
    reference = build()
    reference.load_weights(str(weights))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
    got, want = as_numpy(loaded(x)), as_numpy(reference(x))
    assert np.array_equal(got, want)
    assert not np.allclose(got, as_numpy(keras.saving.load_model(str(archive))(x)))  # the weights did change
    with open_checkpoint(out) as r:
        for k, v in new.items():
            assert np.array_equal(r.read(k), v)


def test_writer_needs_a_keras_template(tmp_path, archive):
    with pytest.raises(MapspecError, match="needs a template .keras"):
        ka.save(tmp_path / "o.keras", {"d1/kernel": np.zeros((6, 5), np.float32)})
    with pytest.raises(MapspecError):
        ka.save(tmp_path / "o.keras", {"d1/kernel": np.zeros((5, 6), np.float32)}, template=str(archive))
    assert not (tmp_path / "o.keras").exists()


# -- hostile archives ---------------------------------------------------------------------------

def test_zip_bomb_refused_before_extraction(tmp_path, archive):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.writestr("metadata.json", src.read("metadata.json"))
        out.writestr("config.json", src.read("config.json"))
        with out.open("model.weights.h5", "w", force_zip64=True) as f:
            zeros = b"\0" * (1 << 20)
            for _ in range(200):  # 200 MB of zeros, ~200 KB compressed
                f.write(zeros)
    with pytest.raises(FormatError, match="zip bomb"):
        ka.open(str(bomb))


def test_lying_size_stops_extraction(tmp_path, archive):
    """A member that expands past its declared size (the directory lies) is cut off."""
    data = bytearray(archive.read_bytes())
    # shrink the declared uncompressed size in the central directory entry of the weights
    bad = tmp_path / "lie.keras"
    idx = bytes(data).rfind(b"PK\x01\x02")
    while idx >= 0:
        name_len = int.from_bytes(data[idx + 28:idx + 30], "little")
        if data[idx + 46:idx + 46 + name_len] == b"model.weights.h5":
            data[idx + 24:idx + 28] = (100).to_bytes(4, "little")
            break
        idx = bytes(data).rfind(b"PK\x01\x02", 0, idx)
    bad.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        ka.open(str(bad))


@pytest.mark.parametrize("members", [["config.json"], ["model.weights.h5"], []])
def test_missing_members(tmp_path, members):
    p = tmp_path / "x.keras"
    with zipfile.ZipFile(p, "w") as z:
        for m in members:
            z.writestr(m, b"{}")
    with pytest.raises(FormatError):
        ka.open(str(p))


def test_truncated_and_garbage_weights(tmp_path, archive):
    data = archive.read_bytes()
    cut = tmp_path / "cut.keras"
    for n in (10, len(data) // 2, len(data) - 30):
        cut.write_bytes(data[:n])
        with pytest.raises(FormatError):
            ka.open(str(cut))
    junk = tmp_path / "junk.keras"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("config.json", b"{}")
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\xff" * 600)
    with pytest.raises(FormatError, match="model.weights.h5"):
        ka.open(str(junk))


@pytest.mark.parametrize("target", ["", "target: {format: keras}\n"])
def test_apply_into_a_keras_archive_through_the_cli(archive, tmp_path, target):
    """A spec whose target is a .keras file (the suffix decides the format, also where the spec names the keras
    family): the template gives the architecture."""
    import io

    from mapspec import cli

    with open_checkpoint(archive) as r:
        new = distinct(r.infos())
    src = tmp_path / "src.npz"
    from mapspec.formats import module

    module("npz").save(str(src), {k.replace("/", "__"): v for k, v in new.items()})
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nsource: {format: npz}\n" + target +
                    "rules:\n  - {from: '<l:word>__<w:word>', to: '{l}/{w}'}\n")
    out = tmp_path / "out.keras"
    err = io.StringIO()
    code = cli.run(["apply", str(spec), "-s", str(src), "-o", str(out), "-t", str(archive)], stdout=io.StringIO(),
                   stderr=err)
    assert code == 0, err.getvalue()
    loaded = keras.saving.load_model(str(out))
    for layer in loaded.layers:
        for v in layer.weights:
            assert np.array_equal(as_numpy(v.value), new[f"{layer.name}/{v.name}"]), v.path
