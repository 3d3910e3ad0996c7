"""Streaming a planned conversion into its output: size check, reads shared between rules, the
writer (in order, or in parallel at known offsets), companions, and :func:`apply` (plan + execute)."""

from __future__ import annotations

from collections import Counter
import os
import time
from typing import Callable, Optional, Union

import numpy as np

from .. import companions, dtypes, numeric, parallel
from ..errors import ConversionError, MapspecError
from ..formats import Reader, TensorInfo, atomic_output, create_writer, module, output_format, sharded
from ..language.args import Ref
from ..language.model import Spec
from ..transforms import TransformError
from .plan import plan
from .report import Result, report_document, report_entry
from .rules import _nbytes
from .steps import Plan, Step, _shape_text


def _read_counts(p: Plan) -> Counter:
    uses: Counter = Counter()
    for s in p.steps:
        for src in s.sources:
            uses[src] += 1
        for r in s.refs:
            uses[r] += 1
    return uses


DEFAULT_GROWTH = 4  # an output may be this many times its source (plus DEFAULT_SLACK) unless allowed
DEFAULT_SLACK = 1 << 30


def check_size(p: Plan, max_output: Optional[float] = None) -> None:
    """Refuse, before anything is written, a conversion whose output (or any array along a rule's
    chain) is far larger than its source, unless ``max_output`` (bytes; ``--max-output-size``)
    allows it.  The default is ``DEFAULT_GROWTH`` times the source plus ``DEFAULT_SLACK``."""
    source_bytes = sum(i.nbytes for i in p.source.infos().values())
    limit = max_output if max_output is not None else DEFAULT_GROWTH * source_bytes + DEFAULT_SLACK
    total = sum(_nbytes(s.out_meta) for s in p.steps)
    biggest = max(p.steps, key=lambda s: s.peak, default=None)
    worst = max(total, biggest.peak if biggest is not None else 0)
    if worst <= limit:
        return
    what = (f"the output would be {worst:,} bytes" if worst == total else
            f"{biggest.rule.label} makes an array of {worst:,} bytes for target {biggest.target!r}")
    largest = sorted(p.steps, key=lambda s: -s.peak)[:3]
    names = ", ".join(f"{s.target!r} ({s.peak:,} B)" for s in largest)
    raise MapspecError(f"{what}, more than the allowed {limit:,.0f} bytes "
                       + (f"(the source holds {source_bytes:,}; default limit {DEFAULT_GROWTH} x source + 1 GiB)"
                          if max_output is None else "(--max-output-size)")
                       + f"; largest: {names}. Pass --max-output-size SIZE (e.g. 20GB, or 'any') if this is "
                         f"intended")


def execute(p: Plan, output: str, force: bool = False, progress: Optional[Callable[[int, int, Step], None]] = None,
            target_options: Optional[dict] = None, jobs: Optional[int] = None,
            max_output: Optional[float] = None, sync: bool = True, outtype: Optional[str] = None) -> Result:
    """Stream the planned conversion into ``output`` (atomically).

    ``output`` may be a directory or a ``*.index.json`` (a sharded checkpoint, see
    :mod:`mapspec.formats.sharded`).  ``jobs``: worker threads (default: the cores) for writers
    that place tensors at known offsets; other writers get the tensors one by one, in order.
    An output beyond ``max_output`` bytes (default: see :func:`check_size`) is refused before
    anything is written.  No file written may be one the plan reads (:mod:`mapspec.guard`).
    ``sync`` (default): fsync'ed before it is put in place (``--no-sync`` turns it off).  ``outtype`` (GGUF
    outputs): the ggml type of the weights, as llama.cpp's converter chooses them
    (:mod:`mapspec.frameworks.gguf.outtype`); other outputs: the dtype of every float
    tensor (:mod:`mapspec.engine.outtype`).
    """
    from .. import guard
    from ..formats.shard_output import staged

    p.check()
    check_size(p, max_output)
    spec, reader = p.spec, p.source
    fmt = output_format(output, p.target_format)
    if outtype is not None and fmt != "gguf":  # float outputs: every float tensor in one dtype
        from . import outtype as float_outtype

        float_outtype.cast_plan(p, outtype, fmt, output)
        outtype = None
    infos = [TensorInfo(s.target, tuple(s.out_meta.shape), s.out_meta.dtype, s.meta) for s in p.steps]
    options = dict(spec.target.options)
    options.update(target_options or {})
    if p.metadata:
        options["metadata"] = {**(options.get("metadata") or {}), **p.metadata}
    if p.template is not None:
        options.setdefault("template", p.template.path)
    requested = output  # what the guard checks (it resolves a folder output the same way)
    in_folder = companions.folder_file(spec, output)
    if in_folder:  # -o DIR/ of a layout whose folder holds one weights file (Meta's consolidated.00.pth)
        output = in_folder
        fmt = output_format(output, p.target_format)
    if outtype is not None:
        options["outtype"] = outtype
    if options.get("outtype") is not None:
        from ..frameworks.gguf import outtype as gguf_outtype

        options["outtype"] = gguf_outtype.resolve(options["outtype"], fmt, output, p.source.infos().values())
    route = None if in_folder else sharded.output_target(output, fmt)
    if route is not None:
        output, shard_format = route
        fmt = sharded.NAME
        options = {"shard_format": shard_format, "overwrite": force, **options}
    elif "max_shard_size" in options:
        raise MapspecError(f"{output}: max_shard_size needs a sharded output (a directory, or a *.index.json)")
    extra, extra_notes, folder = {}, [], None
    if (route is not None or in_folder) and companions.declared(spec):  # a model folder: config, tokenizer...
        folder = os.path.dirname(os.path.abspath(output))
        extra, extra_notes = companions.build(p, p.no_tokenizer)
        companions.check_targets(folder, extra, force)
    wrote_extra: list = []
    uses = _read_counts(p)
    cache: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    written = 0
    entries = []

    def get(name: str) -> np.ndarray:
        arr = cache.get(name)
        if arr is None:
            arr = reader.read(name)
            if uses[name] > 1:
                cache[name] = arr
        return arr

    drop_pages = getattr(reader, "release", None)

    dropped: set = set()  # released by a worker thread already (parallel path)

    def release(name: str) -> None:
        uses[name] -= 1
        if uses[name] <= 0:
            cache.pop(name, None)
            if drop_pages is not None and name not in dropped:
                drop_pages(name)  # memory-mapped readers let the tensor's pages go (RSS stays ~one tensor)

    span = getattr(reader, "span", None)

    def inputs(s: Step) -> tuple:
        """A step's input and transform arguments (memory-mapped views where the format allows); a
        stacked step's input is its parts' inputs.  Read on the calling thread (readers need not be
        thread-safe)."""
        args = [{k: _materialize(v, get) for k, v in c.args.items()} for c in s.calls]
        if s.parts:
            return [inputs(part) for part in s.parts], args
        return (get(s.source) if s.source is not None else np.array(s.constant)), args

    def prepare(i: int):
        return inputs(p.steps[i])

    def prepare_positional(i: int):
        """As prepare; a tensor that is only renamed is copied file to file instead (never read in here).
        Also says whether this step is the source's last use (its pages can go as soon as it is written)."""
        s = p.steps[i]
        last = s.source is not None and uses[s.source] == 1
        if last and not s.calls and span is not None:
            where = span(s.source)
            if where is not None:
                return "copy", where, False
        return "compute", prepare(i), last

    def work(i: int, prepared) -> None:
        s = p.steps[i]
        how, what, last = prepared
        if how == "copy":
            writer.copy_at(s.target, TensorInfo(s.target, tuple(s.out_meta.shape), s.out_meta.dtype), what)
            return
        writer.write_at(s.target, _compute(s, *what))
        if last and drop_pages is not None:
            drop_pages(s.source)  # now, not when its turn in plan order comes (memory ~ largest x jobs)
            dropped.add(s.source)

    def done(i: int, x) -> None:
        nonlocal written
        s = p.steps[i]
        stored = getattr(writer, "stored", None)  # (bytes, type) a writer encodes a tensor in (GGUF outtype)
        nbytes, encoding = stored(s.target) if stored else (None, None)
        written += nbytes if nbytes is not None else TensorInfo(s.target, s.out_meta.shape, s.out_meta.dtype).nbytes
        entries.append(report_entry(s, encoding))
        for src in s.sources:
            release(src)
        for r in s.refs:
            release(r)
        if progress is not None:
            progress(i + 1, len(p.steps), s)

    guard.check(p, requested, force=force)
    anonymous = not getattr(module(fmt), "NAMED_TEMP", False)
    # a model folder (shards, or one file in a layout's folder) is staged and published whole, companions included
    with (staged(output, shard_format if route is not None else fmt, force=force, sync=sync)
          if route is not None or in_folder else atomic_output(output, force=force, anonymous=anonymous,
                                                               sync=sync)) as tmp:
        writer = create_writer(tmp, infos, format=fmt, final_path=str(output),
                               copy_phases=parallel.copy_phases(p.steps, span), **options)
        try:
            if getattr(writer, "positional", False):
                parallel.run(p.steps, parallel.default_jobs() if jobs is None else jobs, prepare_positional, work,
                             done)
            else:
                for i, s in enumerate(p.steps):
                    x = _compute(s, *prepare(i))
                    writer.write(s.target, x)
                    done(i, x)
                    del x
            writer.close()
            if extra:
                wrote_extra = companions.write(os.path.dirname(tmp), extra, folder)
        except BaseException:
            writer.abort()
            raise
    seconds = time.perf_counter() - t0
    report = report_document(p, output, fmt, entries, written, seconds, extra_notes, wrote_extra)
    p.warnings.extend(extra_notes)
    return Result(p, output, len(entries), written, seconds, report, wrote_extra)


def _compute(s: Step, x, args_per_call: list) -> np.ndarray:
    """Run a step's transforms on its input (a stacked step: its parts', each into its slot of one array);
    check the result against the plan."""
    if s.parts:
        first = s.parts[0].out_meta
        out = np.empty(first.shape[:s.stack_axis] + (len(s.parts),) + first.shape[s.stack_axis:],
                       dtypes.to_numpy(first.dtype))
        for j, (part, (px, pargs)) in enumerate(zip(s.parts, x)):
            out[(slice(None),) * s.stack_axis + (j,)] = _compute(part, px, pargs)
        x = out
    for c, args in zip(s.calls, args_per_call):
        numeric_kernel = _takes_allow(c.call.tdef.kernel)
        if numeric_kernel:
            args = {**args, "allow": s.rule.allow}
        try:
            y = c.call.tdef.kernel(x, **args)
            if numeric_kernel:
                numeric.check_result(y, [x, *_arrays(args)], s.rule.allow)
            x = y
            del y
        except TransformError as e:
            raise ConversionError(f"{c.label}: {e}", tensor=s.source or s.target, rule=s.rule.label,
                                  loc=c.call.loc) from None
    if tuple(x.shape) != tuple(s.out_meta.shape) or dtypes.name_of(x.dtype) != s.out_meta.dtype:
        raise ConversionError(
            f"the data gives {_shape_text(x.shape)} {x.dtype} but the plan promised "
            f"{_shape_text(s.out_meta.shape)} {s.out_meta.dtype} (the source file's header and its "
            f"data disagree)", tensor=s.source or s.target, rule=s.rule.label)
    return x


_ALLOW_KERNELS: dict = {}


def _takes_allow(kernel) -> bool:
    """Does this kernel take the rule's numeric allowances (``allow=``, see :mod:`mapspec.numeric`)?"""
    if kernel not in _ALLOW_KERNELS:
        import inspect

        _ALLOW_KERNELS[kernel] = "allow" in inspect.signature(kernel).parameters
    return _ALLOW_KERNELS[kernel]


def _arrays(args: dict) -> list:
    out = []
    for v in args.values():
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, list):
            out += [a for a in v if isinstance(a, np.ndarray)]
    return out


def _materialize(v, get):
    if isinstance(v, Ref):
        return get(v.name)
    if isinstance(v, list):
        return [_materialize(x, get) for x in v]
    return v


def apply(spec: Union[str, Spec], source: Union[str, Reader], output: str, template: Union[str, Reader, None] = None,
          force: bool = False, target_format: Optional[str] = None, relax: tuple = (),
          progress: Optional[Callable[[int, int, Step], None]] = None, source_format: Optional[str] = None,
          vars: Optional[dict] = None, vars_file: Optional[str] = None, jobs: Optional[int] = None,
          target_options: Optional[dict] = None, max_output: Optional[float] = None, no_tokenizer: bool = False,
          tokenizer_pre: Optional[str] = None, sync: bool = True, outtype: Optional[str] = None) -> Result:
    """Plan, check and stream a conversion into ``output``; raises on any problem, leaving no partial file.
    ``outtype``: a GGUF output's type (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or auto); another output's
    float dtype (f32, f16, bf16 or auto: the source's matrices')."""
    p = plan(spec, source, template=template, target_format=target_format, output=output, relax=relax,
             source_format=source_format, vars=vars, vars_file=vars_file, no_tokenizer=no_tokenizer,
             tokenizer_pre=tokenizer_pre)
    return execute(p, output, force=force, progress=progress, jobs=jobs, target_options=target_options,
                   max_output=max_output, sync=sync, outtype=outtype)
