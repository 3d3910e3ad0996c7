"""Fuzzing in the normal test run: every target for a share of ``$MAPSPEC_FUZZ_SECONDS``.

* ``test_fuzz_target[T]`` runs a supervised, deterministic campaign (seed
  ``$MAPSPEC_FUZZ_SEED``, default 0) of structure-aware mutations against target ``T`` in a
  child process (see ``tests/fuzz/driver.py``).  The budget is ``$MAPSPEC_FUZZ_SECONDS``
  seconds in total (default 20, CI sets 150), shared equally by the targets that can run.
  A failure names each new bug, the input kept for it and the command that reproduces it;
  inputs are kept in ``$MAPSPEC_FUZZ_OUT`` when set (else in pytest's temporary directory).
* ``test_corpus_replays[T/file]`` replays every input in ``tests/fuzz/corpus/T/`` through the
  shipped code path, in-process with traced memory: each must be accepted or refused with a
  MapspecError, in bounded time and memory.  Inputs of bugs not fixed yet (in modules the
  fuzzing owner may not edit) are ``xfail(strict=True)``, listed in ``fuzz.targets.KNOWN_BUGS``.
* ``test_seeds_are_valid`` checks that every seed of every target is accepted: a seed the
  reader refuses would only test the first error path.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from fuzz import driver, harness, seeds
from fuzz.targets import KNOWN_BUGS, TARGETS

BUDGET = float(os.environ.get("MAPSPEC_FUZZ_SECONDS") or 20)
SEED = int(os.environ.get("MAPSPEC_FUZZ_SEED") or 0)
RUNNABLE = [n for n, t in TARGETS.items() if t.available() is None]
CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
KNOWN = {(kb.target, kb.file): kb for kb in KNOWN_BUGS}
# Corpus files that take seconds to replay (a parser loop bounded by its limits): full suite only.
SLOW_CORPUS = {("keras", "hdf5-parser-loops.h5")}
# Seeds made to exercise error paths rather than to be read (a symbol whose broadcast needs another
# input shape than the target's fixed one).
SEEDS_REFUSED = {("mxnet-symbol", "custom-aux-symbol.json")}


def _skip_unless_available(name: str) -> None:
    why = TARGETS[name].available()
    if why:
        pytest.skip(f"target {name}: {why}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_target(name, tmp_path):
    _skip_unless_available(name)
    out = Path(os.environ["MAPSPEC_FUZZ_OUT"]) / name if os.environ.get("MAPSPEC_FUZZ_OUT") else tmp_path
    # At least 1 s each: the supervisor starts no campaign for less than 0.5 s (12 targets share the budget).
    share = max(BUDGET / max(len(RUNNABLE), 1), 1.0)
    res = driver.supervise(TARGETS[name], share, SEED, out, log=sys.stderr)
    rate = res["execs"] / res["seconds"] if res["seconds"] else 0.0
    print(f"{name}: {res['execs']} executions in {res['seconds']:.1f} s ({rate:.0f}/s); {res['counts']}; "
          f"{len(res['known'])} known bugs met; {res['restarts']} process restarts")
    assert res["execs"] > 0, f"target {name}: the campaign ran no input (see {out})"
    if res["bugs"]:
        lines = [f"target {name}: {len(res['bugs'])} new bug(s) in {res['execs']} executions (seed {SEED}):"]
        for b in res["bugs"]:
            lines.append(f"  {b['detail']}\n    input: {b['input']}\n    reproduce: {b['reproduce']}")
        lines.append("Fix the bug and copy the input into tests/fuzz/corpus/" + name + "/ (see its README.md).")
        pytest.fail("\n".join(lines), pytrace=False)


def _corpus_params() -> list:
    params = []
    for name in TARGETS:
        folder = CORPUS / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.name.startswith(".") or f.suffix == ".md":
                continue
            kb = KNOWN.get((name, f.name))
            marks = [pytest.mark.xfail(strict=True, reason=kb.reason)] if kb else []
            if (name, f.name) in SLOW_CORPUS:
                marks.append(pytest.mark.slow)
            params.append(pytest.param(name, f, id=f"{name}/{f.name}", marks=marks))
    return params


@pytest.mark.parametrize("name,path", _corpus_params())
def test_corpus_replays(name, path, tmp_path):
    _skip_unless_available(name)
    target = TARGETS[name]
    if (name, path.name) in KNOWN:
        # A known bug may hang or exhaust memory, and interrupting it can leave a library
        # (torch's lazy imports) half-initialized: judge it in a child process.
        verdict = driver.replay_product(target, path, timeout=5.0)
    else:
        harness.support_files(target, tmp_path)
        dst = harness.input_path(target, tmp_path)
        shutil.copyfile(path, dst)
        verdict = harness.run_file(target, dst, timeout=driver.PRODUCT_TIMEOUT, product=True, track_memory=True)
    assert not verdict.bug, (f"{name}/{path.name}: {verdict.detail}\n{verdict.trace}\nreproduce: "
                             f"{driver.repro_command(target, path)}")


def test_known_bugs_have_corpus_inputs():
    for kb in KNOWN_BUGS:
        assert kb.target in TARGETS, kb
        assert (CORPUS / kb.target / kb.file).is_file(), f"KNOWN_BUGS names a missing input: {kb}"


@pytest.mark.parametrize("name", list(TARGETS))
def test_seeds_are_valid(name, tmp_path):
    _skip_unless_available(name)
    target = TARGETS[name]
    work = tmp_path / "work"
    work.mkdir()
    harness.support_files(target, work)
    for p in seeds.build(name, tmp_path / "seeds"):
        if p.parent.name == name and p.parent.parent == CORPUS:
            continue  # regression inputs are judged by test_corpus_replays
        v = harness.run_bytes(target, p.read_bytes(), work, timeout=30.0)
        if (name, p.name) in SEEDS_REFUSED:
            assert v.status == "rejected", (p.name, v)
        elif name == "spec" or target.exercise:
            # the bad_specs are refused, by design; so are some of the command seeds (that is their point)
            assert not v.bug, (p.name, v.detail, v.trace)
        else:
            assert v.status == "accepted", (p.name, v.detail, v.trace)
