"""Fuzz driver: ``python tests/fuzz/driver.py COMMAND --target NAME ...``.

Commands:

``fuzz``      supervised campaign (what ``tests/test_fuzz.py`` runs): a ``campaign`` in a
              child process; if the child dies (a segfault in a C library, a hang the
              alarm could not interrupt), its last input is kept, replayed through the
              shipped code path (``--product``), and the campaign resumes with the next
              seed number for the remaining time.
``campaign``  the in-process loop: deterministic structure-aware mutations of the seeds
              (``--seed``), for ``--seconds`` or ``--max-execs``; bugs are written to
              ``--out``/crashes with their traceback and the command that reproduces them.
``atheris``   coverage-guided fuzzing with atheris/libFuzzer (mapspec instrumented), the
              same harness and mutations as a custom mutator; extra arguments go to
              libFuzzer (``-max_total_time=600 -timeout=10 -rss_limit_mb=4096``).
``replay``    judge given files (``--product`` uses the shipped reader options).
``list``      the targets and whether they can run here.

A bug is any exception that is not a MapspecError, a hang, a broken invariant or a
memory blow-up; see :mod:`fuzz.harness`.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple, Optional

if __package__ in (None, ""):  # run as a script: make ``fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz import harness, mutate, seeds  # noqa: E402
from fuzz.targets import KNOWN_BUGS, TARGETS, Target, known_bug  # noqa: E402

DRIVER = Path(__file__).resolve()
PROJECT = DRIVER.parents[2]
RSS_GROWTH_LIMIT = 512 << 20  # bytes of peak RSS growth one input may cause
DATA_HEADROOM = 2 << 30  # RLIMIT_DATA above the warmed-up process: a runaway allocation fails, not the machine
MAX_BUGS = 20  # distinct bugs recorded per campaign before it stops
PRODUCT_TIMEOUT = 60.0  # seconds per input on the shipped path (it may parse in a child process first)
# Verdicts after which the process may be unsound (an import or a C call interrupted midway).
_UNSETTLING = ("Hang", "MemoryError", "Memory")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _vm_data() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_data() -> None:
    base = _vm_data()
    if base:
        limit = base + DATA_HEADROOM
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def repro_command(target: Target, path: Path) -> str:
    rel = os.path.relpath(DRIVER, Path.cwd())
    return f"{sys.executable} {rel} replay --target {target.name} {path}"


def save_bug(target: Target, data: bytes, verdict: harness.Verdict, out: Path) -> Path:
    """Keep a failing input and its report; returns the input's path."""
    crashes = out / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    path = crashes / f"{target.name}-{digest}{target.suffix}"
    path.write_bytes(data)
    path.with_name(path.name + ".txt").write_text(
        f"target: {target.name}\nverdict: {verdict.detail}\nreproduce: {repro_command(target, path)}\n\n"
        f"{verdict.trace}")
    return path


# -- campaign (in-process) ------------------------------------------------------------

class Stats(NamedTuple):
    target: str
    seed: int
    execs: int
    seconds: float
    counts: dict  # accepted, rejected, bug (new), known (matches targets.KNOWN_BUGS)
    bugs: list  # [{"signature", "detail", "input", "reproduce"}]
    known: list  # known bugs met again: [{"signature", "file"}]
    restart: bool = False  # stopped early after an input that may have left the process unsound

    @property
    def rate(self) -> float:
        return self.execs / self.seconds if self.seconds else 0.0


def campaign(target: Target, seconds: float, seed: int, out: Path, timeout: float = harness.DEFAULT_TIMEOUT,
             max_execs: Optional[int] = None, log=None, progress: Optional[Path] = None) -> Stats:
    """Mutate the target's seeds for ``seconds`` (deterministic sequence for a given ``seed``).

    ``progress``: a JSON file rewritten every two seconds with the statistics so far, so
    that a supervisor can still count the executions of a process that died.
    """
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    harness.support_files(target, work)
    # Inputs of known, unfixed bugs would only stall every campaign (they hang or blow up memory by
    # design); test_corpus_replays judges them.
    known_files = {kb.file for kb in KNOWN_BUGS if kb.target == target.name}
    seed_paths = [p for p in seeds.build(target.name, out / "seeds")
                  if not (p.parent == seeds.CORPUS / target.name and p.name in known_files)]
    corpus = [p.read_bytes() for p in seed_paths]
    if not corpus:
        raise SystemExit(f"target {target.name}: no seeds")
    harness.warm_up(target, work, seed_paths[0])
    _limit_data()
    rng = random.Random(seed)
    pool: list[bytes] = []  # accepted mutants: valid-looking inputs one step deeper
    counts = {"accepted": 0, "rejected": 0, "bug": 0, "known": 0}
    bugs: dict[str, dict] = {}
    known: dict[str, dict] = {}
    execs = 0
    start = time.monotonic()
    # Each input first replays the seeds as they are (they must be accepted or cleanly rejected).
    queue = list(corpus)
    last_note = start
    restart = False
    while True:
        elapsed = time.monotonic() - start
        # Note progress every 2 s, and after the first inputs, so that a campaign killed early
        # (a hang in C code on its first mutants) still reports what it ran.
        if progress is not None and (time.monotonic() - last_note > 2.0 or 0 < execs <= 8):
            last_note = time.monotonic()
            snap = Stats(target.name, seed, execs, elapsed, counts, list(bugs.values()), list(known.values()))
            progress.write_text(json.dumps(snap._asdict()))
        if (max_execs is not None and execs >= max_execs) or (max_execs is None and elapsed >= seconds):
            break
        if queue:
            data = queue.pop(0)
        else:
            parent = rng.choice(pool) if pool and rng.random() < 0.3 else rng.choice(corpus)
            try:
                data = mutate.mutate(parent, rng, target.mutations, corpus)
            except Exception as e:  # noqa: BLE001 - a mutator bug must not end the campaign
                if log:
                    print(f"[{target.name}] mutator failed ({type(e).__name__}: {e}); input kept as is",
                          file=log, flush=True)
                data = parent
        before = _peak_rss()
        faulthandler.dump_traceback_later(timeout + 5, exit=True)  # a hang the alarm cannot break
        verdict = harness.run_bytes(target, data, work, timeout=timeout)
        faulthandler.cancel_dump_traceback_later()
        grown = _peak_rss() - before
        if not verdict.bug and grown > RSS_GROWTH_LIMIT:
            verdict = harness.Verdict("bug", f"Memory: peak RSS grew by {grown >> 20} MB on one input", "")
        execs += 1
        kb = known_bug(target.name, verdict.signature()) if verdict.bug else None
        counts["known" if kb else verdict.status] += 1
        if kb:
            known.setdefault(verdict.signature(), {"signature": verdict.signature(), "file": kb.file})
        if verdict.status == "accepted":
            if len(pool) < 256:
                pool.append(data)
            else:
                pool[rng.randrange(len(pool))] = data
        if verdict.bug and verdict.detail.split(":")[0] in _UNSETTLING:
            restart = True  # an interrupted library may be half-initialized: go on in a fresh process
        if verdict.bug and not kb:
            sig = verdict.signature()
            if sig not in bugs:
                path = save_bug(target, data, verdict, out)
                bugs[sig] = {"signature": sig, "detail": verdict.detail, "input": str(path),
                             "reproduce": repro_command(target, path)}
                if log:
                    print(f"[{target.name}] BUG {verdict.detail}\n  input: {path}\n  reproduce: "
                          f"{repro_command(target, path)}", file=log, flush=True)
                if len(bugs) >= MAX_BUGS:
                    break
        if restart:
            break
    return Stats(target.name, seed, execs, time.monotonic() - start, counts, list(bugs.values()),
                 list(known.values()), restart)


# -- supervised campaign ----------------------------------------------------------------

def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("KERAS_BACKEND", "torch")
    return env


def replay_product(target: Target, path: Path, timeout: float) -> harness.Verdict:
    """Judge ``path`` through the shipped code path in a fresh process (a crash there is a bug)."""
    cmd = [sys.executable, str(DRIVER), "replay", "--target", target.name, "--product", "--json",
           "--timeout", str(timeout), str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 3 + 60, env=_child_env())
    except subprocess.TimeoutExpired:
        return harness.Verdict("bug", "Hang: the shipped code path did not finish either")
    if done.returncode < 0:
        return harness.Verdict("bug", f"Crash: the shipped code path died with signal {-done.returncode}",
                               done.stderr[-3000:])
    try:
        row = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return harness.Verdict("bug", f"Crash: replay exited {done.returncode}", done.stderr[-3000:])
    return harness.Verdict(row["status"], row["detail"], row.get("trace", ""))


def supervise(target: Target, seconds: float, seed: int, out: Path, timeout: float = harness.DEFAULT_TIMEOUT,
              log=None) -> dict:
    """Run campaigns in child processes until ``seconds`` of fuzzing are spent; a summary dict."""
    out.mkdir(parents=True, exist_ok=True)
    total = {"target": target.name, "seed": seed, "execs": 0, "seconds": 0.0, "bugs": [], "known": [],
             "contained": [], "restarts": 0, "counts": {"accepted": 0, "rejected": 0, "bug": 0, "known": 0}}
    left = seconds
    attempt = 0
    while attempt == 0 or (left > 0.5 and attempt < 10):  # a tiny share still runs one campaign
        run_dir = out / f"run{attempt}"
        stats_file = run_dir / "stats.json"
        progress_file = run_dir / "progress.json"
        cmd = [sys.executable, str(DRIVER), "campaign", "--target", target.name, "--seconds", f"{left:.2f}",
               "--seed", str(seed + attempt), "--out", str(run_dir), "--timeout", str(timeout),
               "--stats", str(stats_file), "--progress", str(progress_file)]
        t0 = time.monotonic()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left + timeout * 4 + 180,
                                  env=_child_env())
            rc, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired as e:
            rc, stderr = None, (e.stderr or b"").decode("utf-8", "replace") if isinstance(e.stderr, bytes) else ""
        wall = time.monotonic() - t0
        finished = stats_file.exists()
        snap = stats_file if finished else progress_file
        st = None
        if snap.exists():
            try:
                st = json.loads(snap.read_text())
            except ValueError:  # killed while writing it
                st = None
            if st is not None:
                total["execs"] += st["execs"]
                total["seconds"] += st["seconds"]
                for k, v in st["counts"].items():
                    total["counts"][k] += v
                total["bugs"] += st["bugs"]
                total["known"] += st["known"]
        if finished and not (st or {}).get("restart"):
            break
        if finished:  # the campaign stopped after a hang or a memory blow-up: go on in a fresh process
            attempt += 1
            total["restarts"] += 1
            left -= max(wall - 3.0, 1.0)
            continue
        # The child died (or was killed) mid-input: its last input is still in its work dir.
        if log:
            print(f"[{target.name}] campaign process ended abnormally (exit {rc}); judging its last input",
                  file=log, flush=True)
        last = harness.input_path(target, run_dir / "work")
        data = last.read_bytes() if last.exists() else b""
        if last.exists():
            total["execs"] += 1  # the input it died on was run (and is judged below)
        verdict = replay_product(target, last, max(timeout, PRODUCT_TIMEOUT)) if last.exists() else \
            harness.Verdict("bug", f"Crash: campaign exited {rc} before any input", stderr[-3000:])
        kb = known_bug(target.name, verdict.signature()) if verdict.bug else None
        if kb:
            total["known"].append({"signature": verdict.signature(), "file": kb.file})
            total["counts"]["known"] += 1
        elif verdict.bug:
            verdict = harness.Verdict("bug", f"{verdict.detail} (campaign process: exit {rc})",
                                      verdict.trace or stderr[-3000:])
            path = save_bug(target, data, verdict, out)
            total["bugs"].append({"signature": verdict.signature(), "detail": verdict.detail, "input": str(path),
                                  "reproduce": repro_command(target, path)})
            break
        else:
            kept = save_bug(target, data, harness.Verdict("contained", f"in-process crash (exit {rc}); shipped "
                                                          f"path: {verdict.detail}", stderr[-3000:]), out)
            total["contained"].append({"input": str(kept), "exit": rc, "product": verdict.detail})
        total["restarts"] += 1
        attempt += 1
        left -= max(wall - 3.0, 1.0)  # process start-up is not fuzzing time
    return total


# -- atheris ------------------------------------------------------------------------------

def run_atheris(target: Target, argv: list, seed: int) -> None:
    import atheris

    out = Path(tempfile.mkdtemp(prefix=f"mapspec-atheris-{target.name}-"))
    work = out / "work"
    work.mkdir()
    harness.support_files(target, work)
    corpus_dir = out / "corpus"
    if any(m == "mapspec" or m.startswith("mapspec.") for m in sys.modules):
        raise SystemExit("atheris: mapspec was imported before instrumentation; coverage would be blind")
    with atheris.instrument_imports(include=["mapspec"]):
        import mapspec.formats  # noqa: F401
        import mapspec.language.load  # noqa: F401
        if target.format is not None:
            from mapspec.formats import module

            module(target.format)
            if target.format == "mxnet":
                import mapspec.frameworks.mxnet.graph  # noqa: F401 - loaded lazily for attrs
    seed_paths = seeds.build(target.name, corpus_dir)  # after instrumenting: the writers import mapspec
    corpus = [p.read_bytes() for p in seed_paths]
    harness.warm_up(target, work, seed_paths[0])
    timeout = harness.DEFAULT_TIMEOUT

    def one_input(data: bytes) -> None:
        verdict = harness.run_bytes(target, data, work, timeout=timeout)
        if verdict.bug and not known_bug(target.name, verdict.signature()):
            path = save_bug(target, data, verdict, out)
            raise RuntimeError(f"{verdict.detail}\ninput: {path}\n{verdict.trace}")

    def custom_mutator(data: bytes, max_size: int, seed_: int) -> bytes:
        rng = random.Random(seed_)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        try:
            return mutate.mutate(data, rng, target.mutations, corpus)[:max_size]
        except Exception:  # noqa: BLE001 - a mutator bug must not end the run
            return atheris.Mutate(data, max_size)

    print(f"atheris: target {target.name}, corpus {corpus_dir}, crashes in {out}/crashes", file=sys.stderr)
    args = [sys.argv[0]] + argv + [f"-seed={seed}", "-max_len=1048576", str(corpus_dir)]
    atheris.Setup(args, one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


# -- command line -----------------------------------------------------------------------

def _target(name: str) -> Target:
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    t = TARGETS[name]
    why = t.available()
    if why:
        raise SystemExit(f"target {name} cannot run here: {why}")
    return t


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="driver.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("fuzz", "campaign"):
        c = sub.add_parser(name)
        c.add_argument("--target", required=True, help=f"one of {', '.join(TARGETS)} (or 'all' for fuzz)")
        c.add_argument("--seconds", type=float, default=20.0)
        c.add_argument("--seed", type=int, default=0)
        c.add_argument("--out", type=Path, help="where seeds, work files and crashes go (default: a temp dir)")
        c.add_argument("--timeout", type=float, default=harness.DEFAULT_TIMEOUT, help="seconds per input")
        if name == "campaign":
            c.add_argument("--max-execs", type=int)
            c.add_argument("--stats", type=Path, help="write the statistics as JSON here")
            c.add_argument("--progress", type=Path, help="rewrite the statistics so far here every 2 s")
    r = sub.add_parser("replay")
    r.add_argument("--target", required=True)
    r.add_argument("--product", action="store_true", help="the shipped reader options (keras: isolate=True)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--timeout", type=float, default=harness.DEFAULT_TIMEOUT)
    r.add_argument("files", nargs="+", type=Path)
    a = sub.add_parser("atheris")
    a.add_argument("--target", required=True)
    a.add_argument("--seed", type=int, default=0)
    sub.add_parser("list")
    args, extra = p.parse_known_args(argv)
    if extra and args.command != "atheris":
        p.error(f"unrecognized arguments: {' '.join(extra)}")

    if args.command == "list":
        for name, t in TARGETS.items():
            print(f"{name:14} {t.available() or 'ok'}")
        return 0
    if args.command == "atheris":
        run_atheris(_target(args.target), extra, args.seed)
        return 0
    if args.command == "replay":
        t = _target(args.target)
        bad = 0
        for f in args.files:
            work = Path(tempfile.mkdtemp(prefix="mapspec-replay-"))
            harness.support_files(t, work)
            dst = harness.input_path(t, work)
            shutil.copyfile(f, dst)
            v = harness.run_file(t, dst, timeout=args.timeout, product=args.product, track_memory=True)
            shutil.rmtree(work, ignore_errors=True)
            bad += v.bug
            if args.json:
                print(json.dumps({"file": str(f), "status": v.status, "detail": v.detail, "trace": v.trace}))
            else:
                print(f"{f}: {v.status}: {v.detail}")
                if v.bug and v.trace:
                    print(v.trace)
        return 1 if bad else 0
    out = args.out or Path(tempfile.mkdtemp(prefix="mapspec-fuzz-"))
    if args.command == "campaign":
        t = _target(args.target)
        st = campaign(t, args.seconds, args.seed, out, args.timeout, args.max_execs, log=sys.stderr,
                      progress=args.progress)
        row = st._asdict() | {"rate": st.rate}
        if args.stats:
            args.stats.write_text(json.dumps(row, indent=1))
        print(f"{t.name}: {st.execs} execs in {st.seconds:.1f} s ({st.rate:.0f}/s), {st.counts}, "
              f"{len(st.bugs)} bugs; output in {out}", file=sys.stderr)
        return 1 if st.bugs else 0
    names = list(TARGETS) if args.target == "all" else [args.target]
    runnable = [n for n in names if TARGETS[n].available() is None]
    bad = 0
    for n in runnable:
        res = supervise(TARGETS[n], args.seconds / len(runnable), args.seed, out / n, args.timeout, log=sys.stderr)
        rate = res["execs"] / res["seconds"] if res["seconds"] else 0
        print(f"{n}: {res['execs']} execs in {res['seconds']:.1f} s ({rate:.0f}/s), {res['counts']}, "
              f"{len(res['bugs'])} new bugs, {len(res['known'])} known, {res['restarts']} process restarts",
              file=sys.stderr)
        for b in res["bugs"]:
            print(f"  BUG {b['detail']}\n    reproduce: {b['reproduce']}", file=sys.stderr)
        bad += bool(res["bugs"])
    print(f"output in {out}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
