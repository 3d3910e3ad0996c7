"""llama.cpp as the oracle: its Python binding (llama-cpp-python, which builds llama.cpp from source) and its
own converter, convert_hf_to_gguf.py.  Each helper skips the calling test with a reason when its piece is
not installed here (.ci/run installs both: the binding from a cached wheel, the converter's sources from the
binding's sdist, exported as $MAPSPEC_LLAMA_CPP_SRC)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

DEFAULT_SRC = os.path.expanduser("~/.cache/mapspec-ci/src/llama_cpp_python-0.3.36/vendor/llama.cpp")

# Runs the converter with its get_vocab_base_pre answering NAME for the one hash given: what its error asks a
# user to do for a tokenizer it does not list (add the hash to the table); and with HPARAMS (JSON) added to the
# hyper-parameters it loads where they lack them (keys it reads that transformers 5 no longer writes).
_WRAPPER = """
import json, runpy, sys
from hashlib import sha256
src, chkhsh, name, hparams = sys.argv[1:5]
sys.path[:0] = [src, src + "/gguf-py"]
from conversion import base
load_hparams = base.ModelBase.load_hparams
def load_with(*args, **kwargs):
    loaded = load_hparams(*args, **kwargs)
    for k, v in json.loads(hparams).items():
        loaded.setdefault(k, v)
    return loaded
base.ModelBase.load_hparams = staticmethod(load_with)
original = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    ids = tokenizer.encode('''{text}''')
    if sha256(str(ids).encode()).hexdigest() == chkhsh:
        return name
    return original(self, tokenizer)
base.TextModel.get_vocab_base_pre = pre
sys.argv = [src + "/convert_hf_to_gguf.py"] + sys.argv[5:]
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def llama_cpp():
    """The llama_cpp module, or skip."""
    try:
        import llama_cpp as module
    except ImportError as e:
        pytest.skip(f"llama-cpp-python is not installed ({e}); .ci/run installs it from a cached wheel")
    return module


def converter_src() -> str:
    """llama.cpp's converter folder (convert_hf_to_gguf.py, conversion/, gguf-py/), or skip."""
    src = os.environ.get("MAPSPEC_LLAMA_CPP_SRC") or DEFAULT_SRC
    if not os.path.isfile(os.path.join(src, "convert_hf_to_gguf.py")):
        pytest.skip(f"llama.cpp's converter is not here ({src}); set MAPSPEC_LLAMA_CPP_SRC or run .ci/run")
    return src


def convert(model_dir, out, *args, pre: tuple = (), hparams: dict | None = None) -> None:
    """llama.cpp's convert_hf_to_gguf.py on ``model_dir`` (in a subprocess, its own gguf-py first on the path).
    ``pre=(chkhsh, name)``: its pre-tokenizer table also knows that hash.  ``hparams``: keys added to the
    config it loads where it lacks them (GPT-2's n_ctx, GPT-NeoX's rotary_pct: keys it reads that transformers 5
    no longer writes; a key the config has keeps its value)."""
    src = converter_src()
    import json

    text = json.load(open(os.path.join(os.path.dirname(__file__), "..", "mapspec", "frameworks",
                                       "gguf", "pretokenizers.json"), encoding="utf-8"))["check_text"]
    wrapper = _WRAPPER.replace("'''{text}'''", repr(text))
    argv = [sys.executable, "-c", wrapper, src, *(pre or ("-", "-")), json.dumps(hparams or {}), str(model_dir),
            "--outfile", str(out), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.path.join(src, "gguf-py")]),
           }
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]


def fields(path, prefix: str = "") -> dict:
    """{key: (gguf-py's value types, value)} of a GGUF file's metadata, read by llama.cpp's gguf-py."""
    import gguf

    out = {}
    for name, f in gguf.GGUFReader(str(path)).fields.items():
        if name.startswith(prefix):
            v = f.contents()
            out[name] = ([int(t) for t in f.types], v.tolist() if isinstance(v, np.ndarray) else v)
    return out


def tokenize(model, text: str) -> list:
    """llama.cpp's tokenization of ``text``, adding the special tokens its metadata asks for."""
    return model.tokenize(text.encode("utf-8"), add_bos=True, special=False)


def logits(model, ids: list) -> np.ndarray:
    """llama.cpp's logits at every position of ``ids`` (float32, n_tokens x n_vocab)."""
    model.reset()
    model.eval(ids)
    return np.array(model.scores[:len(ids)], dtype=np.float32)
