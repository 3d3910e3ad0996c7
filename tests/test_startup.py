"""Start-up cost: a command imports what it uses when it uses it.

``ml_dtypes`` (most of a second of C-extension loading), torch, h5py, onnx, protobuf and
the oracle packages must not be imported to build the command line or to run commands that
do not touch them.  Each check runs in a fresh interpreter, so nothing imported by the test
process hides a regression.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("ml_dtypes", "torch", "h5py", "onnx", "onnxruntime", "google.protobuf", "safetensors",
         "transformers", "keras", "gguf", "tqdm", "sentencepiece", "tokenizers")


def _loaded_after(code: str) -> list[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(m for m in %r if m in sys.modules)))" % (HEAVY,)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_the_command_line_imports_no_heavy_package():
    assert _loaded_after("import mapspec.cli as c; c.build_parser()") == []


def test_help_imports_no_heavy_package():
    code = ("import io, mapspec.cli as c\n"
            "try:\n    c.run(['--help'], stdout=io.StringIO(), stderr=io.StringIO())\n"
            "except SystemExit:\n    pass")
    assert _loaded_after(code) == []


def _bf16_safetensors(path: Path) -> None:
    """A bf16 tensor written by hand (header + bytes), so the test needs neither library."""
    header = {"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
              "b": {"dtype": "F32", "shape": [3], "data_offsets": [12, 24]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(12) + np.arange(3, dtype="<f4").tobytes())


def test_inspect_and_plan_of_a_bf16_checkpoint_do_not_load_ml_dtypes(tmp_path):
    src = tmp_path / "m.safetensors"
    _bf16_safetensors(src)
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nname: s\nsource: {}\ntarget: {format: safetensors}\n"
                    "rules:\n  - {from: w, to: x}\n  - {from: b, to: y}\n")
    for argv in (["inspect", str(src)], ["plan", str(spec), "-s", str(src)],
                 ["validate", str(spec)]):
        code = ("import io, mapspec.cli as c\n"
                f"assert c.run({argv!r}, stdout=io.StringIO(), stderr=io.StringIO()) == 0")
        assert "ml_dtypes" not in _loaded_after(code), argv


def test_touching_bf16_data_still_works_after_a_lazy_start():
    code = ("from mapspec import dtypes\n"
            "import numpy as np\n"
            "assert dtypes.itemsize('bfloat16') == 2\n"
            "import sys; assert 'ml_dtypes' not in sys.modules\n"
            "a = np.arange(4, dtype=np.float32).astype(dtypes.to_numpy('bfloat16'))\n"
            "assert dtypes.name_of(a.dtype) == 'bfloat16', dtypes.name_of(a.dtype)\n"
            "assert dtypes.name_of(a.dtype.newbyteorder('>')) == 'bfloat16'\n"
            "assert a.astype(np.float32).tolist() == [0, 1, 2, 3]")
    assert "ml_dtypes" in _loaded_after(code)
