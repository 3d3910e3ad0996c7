"""Fuzz targets beyond the readers: whole commands driven by mutated specs, flags and signals.

Each runs the command line in-process (``cli.run``) in a work folder holding a small source
checkpoint, a spec and an existing output, and judges what a user would see and find:

``apply``
    the input is a spec; ``mapspec plan`` and ``mapspec apply --force --report`` run on it.
``flags``
    the input is a command line (one argument per line, decoded like a real argv); only
    validate/inspect/plan/apply/diff/specs run, and only on relative paths inside the
    work folder (an input naming another place is skipped, not run).  The folder also
    holds aliases of inputs (``link.npz``: a symlink to the source, ``hard.yaml``: a hard
    link to the spec), and a file the command line reads that changes is a bug.
``signals``
    the input picks a signal (SIGTERM, SIGHUP, SIGINT) and a delay; the signal is sent to
    the process while ``mapspec apply --force`` runs.

Verdicts: exit status 0 is accepted, 1/2 (or 128+signal for ``signals``) rejected; any
exception escaping ``cli.run``, any other status, a file left behind in the work folder, an
existing output changed by a failed run, or a successful output that cannot be read (or
holds NaN/infinity from a finite source with a spec that allows nothing) is a bug.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import numpy as np

OLD_OUTPUT = b"the user's previous output"
KEEP = {"src.npz", "other.npz", "spec.yaml", "out.npz", "link.npz", "hard.yaml"}  # work-folder files an input may find
# Aliases of inputs (output paths that alias inputs): a symlink to the source, a hard link to the spec.
ALIASES = {"link.npz": ("symlink", "src.npz"), "hard.yaml": ("hardlink", "spec.yaml")}


class Broken(Exception):
    """Imported by the harness as its invariant failure."""


def support(workdir: Path) -> None:
    """The source, a second checkpoint, a spec and an existing output."""
    from mapspec.formats import module

    workdir.mkdir(parents=True, exist_ok=True)
    tensors = {f"conv{i}.weight": (np.arange(24 * (i + 1), dtype=np.float32) % 251).reshape(2 * (i + 1), 3, 2, 2)
               for i in range(3)}
    tensors["conv0.bias"] = np.arange(2, dtype=np.float32)
    tensors["bn.var"] = np.arange(1, 3, dtype=np.float32)
    tensors["steps"] = np.array(7, dtype=np.int64)
    for i in range(24):  # enough data that a signal can land mid-way
        tensors[f"pad{i}"] = (np.arange(1 << 14, dtype=np.float32) % 251)
    module("npz").save(str(workdir / "src.npz"), tensors)
    module("npz").save(str(workdir / "other.npz"), {"conv0.weight": tensors["conv0.weight"] + 1})
    (workdir / "spec.yaml").write_text(SPEC)
    (workdir / "out.npz").write_bytes(OLD_OUTPUT)
    _aliases(workdir)


def _aliases(workdir: Path) -> None:
    for name, (how, target) in ALIASES.items():
        p = workdir / name
        if not os.path.lexists(p):
            if how == "symlink":
                p.symlink_to(target)
            else:
                os.link(workdir / target, p)


SPEC = """mapspec: 1
rules:
  - from: "conv<i>.weight"
    to: "layer{i}.w"
    apply: [{transpose: [2, 3, 1, 0]}]
  - from: "conv0.bias"
    to: "layer0.b"
    apply: [{mul: 2}]
  - from: "steps"
    to: "steps"
    apply: [{cast: int32}]
  - from: "pad<i>"
    to: "pad.{i}"
ignore: ["bn.var"]
"""


def seeds_apply(d: Path) -> list:
    out = []
    texts = [SPEC, SPEC.replace("ignore: [\"bn.var\"]\n", "") + '  - from: "bn.var"\n    to: "v"\n'
             '    apply: [{add: 1.0e-5}, {fill: 2}, {cast: float16}]\n',
             "mapspec: 1\nallow: [overflow]\nrelax: [unused-source]\nrules:\n  - from: \"steps\"\n    to: \"s\"\n"
             "    apply: [{mul: 4611686018427387904}]\n  - {to: c, value: 0, dtype: float32, shape: [4, 4]}\n",
             "mapspec: 1\nrelax: [unused-source]\ntarget: {dtype: float16}\nrules:\n  - from: \"conv<i>.weight\"\n"
             "    to: \"w{i}\"\n    apply: [{reshape: [-1]}, {take: [0, 1, 0]}]\n"]
    for i, text in enumerate(texts):
        p = d / f"apply{i}.yaml"
        p.write_text(text)
        out.append(p)
    return out


FLAG_SEEDS = [
    ["apply", "spec.yaml", "-s", "src.npz", "-o", "new.npz"],
    ["apply", "spec.yaml", "-s", "src.npz", "-o", "out.npz", "--force", "--report", "r.json"],
    ["apply", "spec.yaml", "-s", "src.npz", "-o", "out.npz", "--report", "src.npz", "--force"],
    ["apply", "spec.yaml", "-s", "src.npz", "-o", "link.npz", "--force"],  # a symlink to the source
    ["apply", "spec.yaml", "-s", "src.npz", "-o", "new.npz", "--report", "hard.yaml", "--force"],  # the spec
    ["apply", "hard.yaml", "-s", "link.npz", "-o", "spec.yaml", "--force", "--report", "src.npz"],
    ["apply", "spec.yaml", "-s", "src.npz", "-o", "x.safetensors", "--max-output-size", "1KiB", "--quiet"],
    ["plan", "spec.yaml", "-s", "src.npz", "--json", "--relax", "unused-source", "--var", "a=1"],
    ["inspect", "src.npz", "--json"],
    ["inspect", "src.npz", "--format", "keras", "--option", "timeout=abc"],
    ["diff", "src.npz", "other.npz", "--atol", "0.5", "--all"],
    ["validate", "spec.yaml", "--allow-path", "."],
    ["specs"],
]


def seeds_flags(d: Path) -> list:
    out = []
    for i, argv in enumerate(FLAG_SEEDS):
        p = d / f"flags{i}.args"
        p.write_bytes("\n".join(argv).encode())
        out.append(p)
    return out


def seeds_signals(d: Path) -> list:
    out = []
    for i, raw in enumerate((b"\x00\x00\x10\x00", b"\x01\x00\x40\x00", b"\x02\x00\x02\x00", b"\x00\x01\x00\x00")):
        p = d / f"sig{i}.sig"
        p.write_bytes(raw)
        out.append(p)
    return out


# -- running ----------------------------------------------------------------------------------

def _reset(workdir: Path) -> None:
    for p in workdir.iterdir():
        if p.name not in KEEP and not p.name.startswith("input"):
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
    (workdir / "out.npz").write_bytes(OLD_OUTPUT)
    _aliases(workdir)


_READS = {"-s", "--source", "-t", "--template", "--vars-file"}


def _inputs_of(argv: list, workdir: Path) -> dict:
    """The files an apply/plan command line reads (its spec, source, template, vars file): {real path: bytes}."""
    if not argv or argv[0] not in ("apply", "plan") or len(argv) < 2:
        return {}
    names = [argv[1]] + [b for a, b in zip(argv, argv[1:]) if a in _READS]
    names += [a.split("=", 1)[1] for a in argv if "=" in a and a.split("=", 1)[0] in _READS]
    out = {}
    for n in names:
        try:
            p = Path(os.path.realpath(workdir / n))
            if p.is_file():
                out[p] = p.read_bytes()
        except (OSError, ValueError):  # a name no file can have: the command says so itself
            continue
    return out


def _key(path: Path):
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _names_of(inputs: dict, workdir: Path) -> dict:
    """Every name in the work folder that reaches an input file (itself, a symlink, a hard link): {name: key}."""
    keys = {_key(p) for p in inputs}
    return {n: _key(workdir / n) for n in os.listdir(workdir) if _key(workdir / n) in keys}


def _run_cli(argv: list, workdir: Path) -> tuple:
    from mapspec import cli

    here = os.getcwd()
    os.chdir(workdir)
    try:
        o, e = io.StringIO(), io.StringIO()
        rc = cli.run(argv, o, e)
        return rc, o.getvalue(), e.getvalue()
    finally:
        os.chdir(here)


def _judge(rc: int, err: str, workdir: Path, before: set, ok_codes: tuple, outputs: tuple, strict: bool) -> str:
    from mapspec.errors import MapspecError

    left = sorted(set(os.listdir(workdir)) - before - set(outputs))
    if left:
        raise Broken(f"files left behind: {left[:5]} (exit {rc})")
    out = workdir / "out.npz"
    if rc not in ok_codes:
        raise Broken(f"exit status {rc}: {err.strip()[:200]}")
    if rc != 0 and "out.npz" in outputs and out.read_bytes() != OLD_OUTPUT:
        _readable(out)  # a signal after the rename: the new output, complete
    if rc == 0 and "out.npz" in outputs and out.read_bytes() != OLD_OUTPUT:
        values = _readable(out)
        if strict:
            bad = [n for n, a in values.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
            if bad:
                raise Broken(f"apply wrote NaN/infinity into {bad[:3]} from a finite source without 'allow'")
    if rc:
        raise MapspecError(err.strip().splitlines()[-1][:300] if err.strip() else f"exit {rc}")
    return "exit 0"


def _readable(path: Path) -> dict:
    from mapspec.formats import open_checkpoint

    with open_checkpoint(str(path)) as r:
        return {n: np.array(r.read(n)) for n in r.names()}


def exercise_apply(path: Path) -> str:
    workdir = path.parent
    _reset(workdir)
    before = set(os.listdir(workdir))
    rc, _, err = _run_cli(["plan", path.name, "-s", "src.npz"], workdir)
    if rc not in (0, 1):
        raise Broken(f"plan exit status {rc}: {err.strip()[:200]}")
    rc, _, err = _run_cli(["apply", path.name, "-s", "src.npz", "-o", "out.npz", "--force", "--report", "r.json"],
                          workdir)
    strict = b"allow" not in path.read_bytes()
    return _judge(rc, err, workdir, before, (0, 1), ("out.npz", "r.json"), strict)


SAFE_COMMANDS = {"validate", "inspect", "plan", "apply", "diff", "specs"}


def exercise_flags(path: Path) -> str:
    workdir = path.parent
    _reset(workdir)
    raw = path.read_bytes()
    if b"\0" in raw:
        return "skipped (a real argv cannot hold NUL)"
    argv = [os.fsdecode(a) for a in raw.split(b"\n")]
    if not argv or argv[0] not in SAFE_COMMANDS:
        return "skipped (command not fuzzed)"
    for a in argv:
        if ".." in a or a.startswith("~") or "/" in a.rstrip("/"):
            return "skipped (names a path outside the work folder)"
    before = set(os.listdir(workdir))
    inputs = _inputs_of(argv, workdir)
    names = _names_of(inputs, workdir)
    rc, _, err = _run_cli(argv, workdir)
    changed = [p.name for p, data in inputs.items() if not p.is_file() or p.read_bytes() != data]
    changed += [n for n, k in names.items() if _key(workdir / n) != k]
    if changed:  # an output path that aliases an input (its name, a symlink, a hard link) replaced it
        raise Broken(f"an input was replaced: {changed} (exit {rc})")
    # whatever it was asked to write (a positional argument, or the value of --flag=VALUE)
    outputs = tuple(a.split("=", 1)[-1].rstrip("/") for a in argv)
    return _judge(rc, err, workdir, before, (0, 1, 2), outputs, strict=False)


SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def exercise_signals(path: Path) -> str:
    workdir = path.parent
    _reset(workdir)
    raw = path.read_bytes() + b"\0\0\0\0"
    sig = SIGNALS[raw[0] % len(SIGNALS)]
    delay = int.from_bytes(raw[1:4], "little") % 300_000 / 1e6  # up to 0.3 s
    active, seen, sent = [True], [], []

    def handler(signum, frame):
        # SIGINT is Ctrl-C while mapspec runs; anything after it returned is ignored.  (SIGTERM and
        # SIGHUP reach this only outside cli.run, which installs its own handlers.)
        seen.append(signum)
        if active[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def send():
        sent.append(sig)
        os.kill(os.getpid(), sig)

    saved = {s: signal.signal(s, handler) for s in SIGNALS}
    timer = threading.Timer(delay, send)
    before = set(os.listdir(workdir))
    try:
        try:
            timer.start()
            rc, _, err = _run_cli(["apply", "spec.yaml", "-s", "src.npz", "-o", "out.npz", "--force"], workdir)
        except KeyboardInterrupt:  # delivered just before cli.run began or just after it returned
            rc, err = 128 + sig, ""
        finally:
            active[0] = False
            timer.cancel()
            timer.join()
            if sent and not seen:  # let a signal already sent reach a handler before ours is removed
                import time

                for _ in range(1000):
                    if seen:
                        break
                    time.sleep(0.001)
    finally:
        for s, old in saved.items():
            signal.signal(s, old)
    if rc == 128 + sig and err:  # what the user is told must match what is on disk
        changed = (workdir / "out.npz").read_bytes() != OLD_OUTPUT
        said = "written completely" in err
        if changed != said:
            raise Broken(f"after {sig.name} the output {'changed' if changed else 'is unchanged'} but mapspec "
                         f"said: {err.strip()[-200:]}")
    return _judge(rc, err, workdir, before, (0, 128 + sig), ("out.npz",), strict=True)


EXERCISES = {"apply": exercise_apply, "flags": exercise_flags, "signals": exercise_signals}
SEEDS = {"apply": seeds_apply, "flags": seeds_flags, "signals": seeds_signals}
