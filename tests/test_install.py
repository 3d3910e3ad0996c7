"""The wheel and sdist as a user gets them: built from the files a clean clone has, installed
into a fresh virtual environment without torch (no editable install, not this checkout on the
path), and used from a folder outside the checkout.

Marked ``install`` (deselect with ``-m 'not install'``); it runs in the normal test command.
Installing the wheel's dependencies uses pip's cache (or the configured index).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.install, pytest.mark.slow]  # builds a wheel and a fresh venv

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.relative_to(ROOT / "specs").as_posix() for p in (ROOT / "specs").rglob("*") if p.is_file())
SCHEMAS = sorted(p.name for p in (ROOT / "schemas").iterdir() if p.is_file())


def _clean_tree(dest: Path) -> None:
    """The package's sources as a clean clone has them (tracked or not ignored), nothing built."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs the source checkout (git) to build from")
    for rel in filter(None, listed):
        top = rel.split("/")[0]
        if (top in ("mapspec", "specs", "schemas") or "/" not in rel) and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAPSPEC_SPECS", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd, cwd, check=True, timeout=300):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    src, dist = base / "src", base / "dist"
    src.mkdir()
    _clean_tree(src)
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", dist, src], cwd=base)
    sdist = next(dist.glob("mapspec-*.tar.gz"))
    # The wheel is built from the sdist: that proves the sdist complete as well.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", dist, sdist],
         cwd=base)
    wheel = next(dist.glob("mapspec-*.whl"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    _run([py, "-m", "pip", "install", "--quiet", wheel], cwd=base)
    work = base / "work"
    work.mkdir()
    return {"sdist": sdist, "wheel": wheel, "python": py, "mapspec": py.parent / "mapspec", "work": work}


def test_sdist_and_wheel_carry_specs_and_schema(installed):
    with tarfile.open(installed["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {f"specs/{s}" for s in SHIPPED} <= names
    assert {f"schemas/{s}" for s in SCHEMAS} <= names
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = set(z.namelist())
    assert {f"mapspec/_specs/{s}" for s in SHIPPED} <= names
    assert {f"mapspec/_schemas/{s}" for s in SCHEMAS} <= names
    assert not any(n.startswith(("specs/", "schemas/", "tests/")) for n in names)


def test_fresh_venv_has_no_torch_and_no_checkout(installed):
    r = _run([installed["python"], "-c", "import mapspec, importlib.util; print(mapspec.__file__); "
              "print(importlib.util.find_spec('torch'))"], cwd=installed["work"])
    where, torch = r.stdout.split()
    assert "site-packages" in where and not where.startswith(str(ROOT)), where
    assert torch == "None"


def test_specs_validate(installed):
    r = _run([installed["mapspec"], "specs"], cwd=installed["work"])
    table = r.stdout.split("\n\n")[0]  # the spec table; the family table follows after a blank line
    listed = {line.split()[0] for line in table.splitlines()[2:]}
    assert listed == {s[:-len(".yaml")] for s in SHIPPED if s.endswith(".yaml")}
    assert "(invalid" not in r.stdout
    names = sorted(listed)
    r = _run([installed["mapspec"], "validate", *names], cwd=installed["work"])
    assert r.stdout.count(": OK (") == len(names), r.stdout


def test_plan_and_apply_npz_to_safetensors(installed):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    work = installed["work"]
    np.savez(work / "in.npz", **{"conv.w": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                                 "fc.b": np.arange(5, dtype=np.int64)})
    (work / "s.yaml").write_text("mapspec: 1\nsource: {format: npz}\ntarget: {format: safetensors}\nrules:\n"
                                 "  - {from: conv.w, to: conv.weight, apply: [{transpose: [2, 0, 1]}]}\n"
                                 "  - {from: fc.b, to: fc.bias}\n")
    r = _run([installed["mapspec"], "plan", "s.yaml", "-s", "in.npz"], cwd=work)
    assert r.stdout.rstrip().endswith("coverage: OK")
    r = _run([installed["mapspec"], "apply", "s.yaml", "-s", "in.npz", "-o", "out.safetensors"], cwd=work)
    assert r.stdout.startswith("wrote out.safetensors: 2 tensors")
    got = safetensors_numpy.load_file(str(work / "out.safetensors"))
    np.testing.assert_array_equal(got["conv.weight"], np.arange(24, dtype=np.float32).reshape(2, 3, 4)
                                  .transpose(2, 0, 1))
    np.testing.assert_array_equal(got["fc.bias"], np.arange(5))


def test_writing_torch_files_needs_no_torch(installed):
    torch = pytest.importorskip("torch")  # the oracle here, not in the venv
    work = installed["work"]
    np.savez(work / "t.npz", w=np.arange(12, dtype=np.float32).reshape(3, 4))
    (work / "t.yaml").write_text("mapspec: 1\ntarget: {format: torch}\nrules:\n  - {from: w, to: fc.weight}\n")
    _run([installed["mapspec"], "apply", "t.yaml", "-s", "t.npz", "-o", "t.pth", "-q"], cwd=work)
    sd = torch.load(work / "t.pth", weights_only=True)
    assert list(sd) == ["fc.weight"]
    np.testing.assert_array_equal(sd["fc.weight"].numpy(), np.arange(12, dtype=np.float32).reshape(3, 4))


def test_torch_needing_commands_refuse_in_one_line(installed):
    work = installed["work"]
    r = _run([installed["mapspec"], "example", "ex"], cwd=work, check=False)
    assert r.returncode == 1
    assert r.stderr == ("mapspec: error: mapspec example (it runs the converted DenseNet) needs PyTorch, which is "
                        "not installed here; install it with: pip install torch\n")
    assert not (work / "ex").exists()
    (work / "w.pth").write_bytes(b"PK\x03\x04" + bytes(60))
    r = _run([installed["mapspec"], "inspect", "w.pth"], cwd=work, check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("mapspec: error: ") and "pip install torch" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_wheel_carries_the_caffe_schema(installed):
    """caffe.proto is package data that mapspec.frameworks.caffe.schema reads at import time."""
    with zipfile.ZipFile(installed["wheel"]) as z:
        assert "mapspec/frameworks/caffe/caffe.proto" in z.namelist()
    r = _run([installed["python"], "-c", "from mapspec.frameworks.caffe import schema; "
              "print(schema.message_class('FillerParameter')().type)"], cwd=installed["work"])
    assert r.stdout.strip() == "constant"


def test_wheel_carries_the_pretokenizer_table(installed):
    """llama.cpp's pre-tokenizer table is package data of mapspec.frameworks.gguf, read by the GGUF tokenizer."""
    with zipfile.ZipFile(installed["wheel"]) as z:
        assert "mapspec/frameworks/gguf/pretokenizers.json" in z.namelist()
    r = _run([installed["python"], "-c", "import json; from mapspec.frameworks.gguf.tokenizer import TABLE_FILE; "
              "print(bool(json.load(open(TABLE_FILE, encoding='utf-8'))['check_text']))"], cwd=installed["work"])
    assert r.stdout.strip() == "True"
