"""``mapspec example``: a complete conversion on a model mapspec makes itself.

``densenet``: writes a Caffe DenseNet-121 (shicai's layer naming, generated prototxt,
seeded weights with Caffe-style BatchNorm statistics) into a folder, converts it with
the shipped spec ``densenet/caffe-to-torchvision`` to a torchvision state dict, and
proves the conversion with ``mapspec verify``: the Caffe net (our Caffe executor) and
the torch DenseNet give the same logits.  Every step is printed as the command a user
would type, and run exactly so.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
from typing import Callable, Optional, TextIO

EXAMPLES = ("densenet",)
DEFAULT_DIRECTORY = "example"


def example_args(name: Optional[str], directory: Optional[str]) -> tuple[str, str]:
    """``mapspec example [NAME] [DIR]``: a single argument that is not an example's name is the folder."""
    if name is not None and directory is None and name not in EXAMPLES:
        return EXAMPLES[0], name
    return name or EXAMPLES[0], directory or DEFAULT_DIRECTORY


def run_example(name: str, directory: str, out: TextIO, err: TextIO, run_command: Callable,
                force: bool = False, sync: bool = True) -> int:
    """Make example ``name`` in ``directory``; each step runs as ``run_command(argv, stdout=, stderr=)``, the
    CLI's own entry point (passed in by the CLI, so that this module does not import it back)."""
    from .errors import MapspecError, MissingDependency
    from .files import atomic_output

    if name not in EXAMPLES:
        raise MapspecError(f"unknown example {name!r} (examples: {', '.join(EXAMPLES)})")
    if importlib.util.find_spec("torch") is None:
        raise MissingDependency("torch", "mapspec example (it runs the converted DenseNet)")
    from .models.densenet_caffe import caffe_prototxt
    from .models.seeded import write_caffemodel

    if os.path.exists(directory) and not os.path.isdir(directory):
        raise MapspecError(f"{directory}: exists and is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise MapspecError(f"{directory}: cannot make the example's directory: {e.strerror or e}") from None
    proto = os.path.join(directory, "DenseNet_121.prototxt")
    model = os.path.join(directory, "DenseNet_121.caffemodel")
    pth = os.path.join(directory, "densenet121.pth")
    for p in (proto, model, pth):
        if os.path.exists(p) and not force:
            raise MapspecError(f"{p}: exists; pass --force to make the example again")
    print(f"# 1. a Caffe DenseNet-121 made here: {proto} and {model} (seeded weights)", file=out)
    with atomic_output(proto, force=True, sync=sync) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(caffe_prototxt(121))
    write_caffemodel(proto, model, seed=2026)
    steps = [
        ("2. what the spec will do, from metadata only", ["plan", "densenet/caffe-to-torchvision", "--source", model]),
        ("3. convert", ["apply", "densenet/caffe-to-torchvision", "--source", model, "--output", pth] +
         (["--force"] if force else []) + ([] if sync else ["--no-sync"])),
        ("4. prove it: run both models on the same input and compare the logits",
         ["verify", "densenet/caffe-to-torchvision", "--source", model, "--converted", pth, "--source-graph", proto]),
    ]
    for title, argv in steps:
        print(f"\n# {title}\n$ mapspec {' '.join(shlex.quote(a) for a in argv)}", file=out, flush=True)
        if argv[0] == "plan":
            import io

            buf = io.StringIO()
            code = run_command(argv, stdout=buf, stderr=err)
            lines = buf.getvalue().splitlines()
            shown = lines[:8] + ([f"... ({len(lines) - 12} more lines)"] if len(lines) > 12 else []) + lines[-4:]
            print("\n".join(shown), file=out)
        else:
            code = run_command(argv, stdout=out, stderr=err)
        if code != 0:
            return code
    return 0
