"""Whole training steps of a stack of dense layers as ONE compiled call (spec.Backend.steps).

Why: on small models a step is all overhead. Run op by op from Python, a step of the S
workload (64 x 64 -> 128 -> 10) spends more time unboxing arguments and in the wrappers
around the kernels than in the kernels; here the step, or a run of steps over a data set
already in memory, is one call into compiled code.

How: a compiled function is generated for the stack (:class:`Stack`: the layers'
activations, dropout and the loss, metrics and optimizer kernel), straight-line code
that calls, in the trainer's order, the very kernels the op-by-op wrappers call
(kernels.cpu.augment, .dense, .losses, .optim, .decisions) with the arguments they would
pass: fit's input noise, forward per layer, softmax cross-entropy, backward per layer, the
gradient norms, the guard and the update, then the metrics' sums. So it computes what the
op-by-op path computes, bit for bit, and a kernel is fixed in one place only. (One
pass differs and gives the same bits: unclipped float32 gradients are first checked for
an inf or NaN by a lighter pass, the norms computed only where it finds one, since the
guard then reads nothing else of them.) Where the
wrappers choose a kernel's serial or parallel compilation by the size of its work, the
generated code holds the one the batch sizes of the call need (both, tested at run time,
where a run's batch sizes disagree), so the step links only what it runs.

What changes from step to step comes in arrays: the update index (the guard's count and
the optimizer's), the optimizer's constants and learning rate (computed in Python by the
optimizer as for an op-by-op update, :func:`kernels.cpu.optim.deferred_updates`), the
dropout keys and those of fit's input noise. A batch is rows ``bounds[b]:bounds[b + 1]``
of X, or of X's rows ``order`` gathered into ``xbuf`` when shuffling; with input noise,
the batch plus its noise in ``nbuf``.

The generated source is written once to a file named by its digest under this package's
``__pycache__/steps`` (where numba's disk cache can keep its compiled code: numba caches
only functions with a source file), and :func:`kernels.cpu.jit._drop_stale_cache` empties
it with the rest when a kernel's source changes. Where that directory is not writable the
function is compiled in memory, each process again.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba.np.ufunc import parallel as _numba_parallel

from .. import spec
from . import blas
from .activations import PRELU, IDENTITY, check_code
from .augment import NOISE_WORK_PER_ELEMENT
from .decisions import _NO_ROWS
from .losses import _STAND_INS as _LOSS_STAND_INS
from .optim import NORMS_WORK_PER_ELEMENT
from .jit import PARALLEL_MIN_WORK
from .rng import mask_args, noise_args

_GENERATED = Path(__file__).parent / "__pycache__" / "steps"
_LOADED = {}  # name of the source (its digest) -> compiled function
_FUNCTIONS = {}  # (stack, update kernel, batch sizes, parameters) -> compiled function


@dataclass(frozen=True)
class Layer:
    """One dense layer ``Y = dropout(act(X @ W + b))`` of a :class:`Stack`: its sizes, its
    activation code (kernels.spec's; PRELU reads per-unit slopes) and parameter, and its
    dropout rate."""

    fan_in: int
    fan_out: int
    act: int
    act_param: float
    dropout: float

    @property
    def linear(self):
        """Y is Z and dZ is dY (kernels.cpu.dense's aliasing): identity, no dropout."""
        return self.act == IDENTITY and self.dropout == 0.0


@dataclass(frozen=True)
class Stack:
    """What a compiled step computes: ``layers`` (a tuple of :class:`Layer`, all trained),
    softmax cross-entropy on class targets (``label_smoothing``, ``ignore_index`` as
    kernels.spec's, ``mean`` or sum), ``metrics`` ((kernels.spec METRIC_* code, threshold)
    pairs summed per batch on its logits and targets), the ``dtype``, and fit's
    ``input_noise`` (0: none)."""

    layers: tuple
    label_smoothing: float
    ignore_index: int
    mean: bool
    metrics: tuple
    dtype: str
    input_noise: float

    def __post_init__(self):
        for layer in self.layers:
            check_code(layer.act)

    @property
    def counter_columns(self):
        """Where a row of a step's int64 counters holds what, after the update's index in
        column 0: (the first column of each dropout layer's mask key pair (key_lo, key_hi),
        that of the input noise's three counters (:func:`noise_counters`), the row's width)."""
        n_dropout = sum(layer.dropout > 0.0 for layer in self.layers)
        noise = 1 + 2 * n_dropout
        return tuple(range(1, noise, 2)), noise, noise + 3 * (self.input_noise > 0.0)


def stand_ins(dtype):
    """The last two arguments of a compiled step: the stand-ins the op wrappers pass for
    the losses and target rows not asked for (so that the kernels' compilations are theirs)."""
    dtype = np.dtype(dtype)
    return _LOSS_STAND_INS[dtype, 1], _NO_ROWS[dtype]


def noise_counters(key):
    """The counters of a step's input noise under ``key`` (kernels.rng's, offset as
    engine.augmentation offsets it): the kernel's (key_lo, key_hi, second_hi), as ints."""
    return tuple(int(word) for word in noise_args(key))


def supported(*arrays):
    """Whether the compiled step can run on these arrays: BLAS bound, and sizes that fit
    its ints (what kernels.cpu.dense's wrappers check before letting a kernel run GEMMs)."""
    return blas.ENABLED and (blas.WIDE_INTS or blas.fits(*arrays))


def _parallel(work):
    return work >= PARALLEL_MIN_WORK


class _Source:
    """The generated function's lines, and the module-level names of the kernels it calls."""

    def __init__(self):
        self.lines = []
        self.names = {}

    def kernel(self, name, expression):
        """``name`` bound to ``expression`` (a kernel, from the names the module imports)."""
        self.names[name] = expression
        return name

    def add(self, line, depth):
        self.lines.append("    " * depth + line)


def _pick(src, name, builder, work_per_row, rows):
    """The kernel of ``builder`` (an expression giving (serial, parallel)) for batches of
    ``work_per_row`` elements a row, as kernels.cpu's wrappers choose by the work: a name,
    or (serial, parallel, work_per_row) where the batch sizes ``rows`` take both."""
    picks = {_parallel(work_per_row * n) for n in rows}
    if picks == {False}:
        return src.kernel(f"{name}_serial", f"{builder}[0]")
    if picks == {True}:
        return src.kernel(f"{name}_parallel", f"{builder}[1]")
    return (src.kernel(f"{name}_serial", f"{builder}[0]"), src.kernel(f"{name}_parallel", f"{builder}[1]"),
            work_per_row)


def _call(src, kernel, arguments, depth, result=None):
    """Lines calling ``kernel`` (a :func:`_pick`) on ``arguments``, into ``result`` if any."""
    into = f"{result} = " if result else ""
    if isinstance(kernel, str):
        src.add(f"{into}{kernel}({arguments})", depth)
        return
    serial, parallel, work_per_row = kernel
    src.add(f"if n * {work_per_row} >= {PARALLEL_MIN_WORK}:", depth)
    src.add(f"{into}{parallel}({arguments})", depth + 1)
    src.add("else:", depth)
    src.add(f"{into}{serial}({arguments})", depth + 1)


def _generate(stack, update_kind, rows, n_params):
    """The source of the compiled steps of ``stack`` with update kernel ``update_kind`` at
    batch sizes ``rows``."""
    src = _Source()
    L = len(stack.layers)
    ce = _pick(src, "cross_entropy", "_CROSS_ENTROPY_CLASSES", stack.layers[-1].fan_out, rows)
    norms_parallel = int(_parallel(n_params * NORMS_WORK_PER_ELEMENT))
    norms = src.kernel("grad_sq_norms", f"_GRAD_SQ_NORMS[{norms_parallel}]")
    update = src.kernel("update", f"_UPDATES[{update_kind}][{int(_parallel(n_params))}]")
    add = src.add
    add("def train_steps(X, y, order, bounds, Ws, bs, slopes, dWs, dbs, dslopes, Zs, Ys, dYs, xbuf, ybuf, nbuf,", 0)
    add("params, grads, offsets, s1, s2, s3, seg_decay, seg_scale, sq_norms, record, loss_slot,", 4)
    add("metric_slots, counters, constants, flags, clip_value, clip_norm, clip_global_norm, no_losses, no_rows,", 4)
    add("progress):", 4)
    add("status = record[:GUARD_SIZE]", 1)
    add("for b in range(bounds.size - 1):", 1)
    add("start, stop = bounds[b], bounds[b + 1]", 2)
    add("n = stop - start", 2)
    add("if order.size:", 2)
    add("xb, yb = xbuf[:n], ybuf[:n]", 3)
    add("for i in range(n):", 3)
    add("row = order[start + i]", 4)
    add("xb[i] = X[row]", 4)
    add("yb[i] = y[row]", 4)
    add("else:", 2)
    add("xb, yb = X[start:stop], y[start:stop]", 3)
    dropout_columns, noise_column, _ = stack.counter_columns
    if stack.input_noise > 0.0:  # into nbuf, as engine.augmentation into its buffer
        noise = _pick(src, "noise", "_GAUSSIAN_NOISE", stack.layers[0].fan_in * NOISE_WORK_PER_ELEMENT, rows)
        keys = ", ".join(f"np.uint32(counters[b, {noise_column + j}])" for j in range(3))
        _call(src, noise, f"xb.reshape(-1), {stack.input_noise!r}, {keys}, nbuf[:n].reshape(-1)", 2)
        add("xb = nbuf[:n]", 2)
    add("step = counters[b, 0]", 2)
    add("c = constants[b]", 2)
    columns = iter(dropout_columns)
    masks = []
    for i, layer in enumerate(stack.layers):
        if layer.dropout > 0.0:
            dropout, _, _, threshold, scale = mask_args(layer.dropout, 0, np.dtype(stack.dtype))
            column = next(columns)
            masks.append(f"{dropout}, counters[b, {column}], counters[b, {column + 1}], {threshold}, {scale!r}")
        else:
            masks.append("False, 0, 0, 0, 1.0")
    # forward
    for i, layer in enumerate(stack.layers):
        x = "xb" if i == 0 else f"Y{i - 1}"
        add(f"Z{i} = Zs[{i}][:n]", 2)
        add(f"Y{i} = Z{i}" if layer.linear else f"Y{i} = Ys[{i}][:n]", 2)
        fwd = _pick(src, f"forward{i}",
                    f"_forward_kernels({layer.act}, {layer.linear})", layer.fan_out, rows)
        slope = f"slopes[{i}]" if layer.act == PRELU else f"bs[{i}]"
        args = f"{layer.act_param!r}, {slope}"
        _call(src, fwd, f"{x}, Ws[{i}], Z{i}, Y{i}, bs[{i}], {args}, True, {masks[i]}, None", 2, "done")
        add("if not done:  # operands BLAS cannot take as they are: as kernels.cpu.dense_forward", 2)
        add(f"gemm({x}, Ws[{i}], Z{i})", 3)
        _call(src, fwd, f"Z{i}, Z{i}, Z{i}, Y{i}, bs[{i}], {args}, False, {masks[i]}, None", 3)
    last = L - 1
    add(f"dY{last} = dYs[{last}][:n]", 2)
    _call(src, ce, f"Y{last}, yb, {stack.ignore_index}, {stack.label_smoothing!r}, {stack.mean}, no_losses, False, "
          f"dY{last}, True, no_losses, False", 2, "loss, bad")
    add("if bad:", 2)
    add("return b, bad", 3)
    add("total = record[loss_slot + b:loss_slot + b + 1]", 2)
    add("total[0] = loss", 2)
    # backward, last layer first
    for i in reversed(range(L)):
        layer = stack.layers[i]
        x = "xb" if i == 0 else f"Y{i - 1}"
        if i > 0:
            add(f"dY{i - 1} = dYs[{i - 1}][:n]", 2)
        dz = f"dY{i}" if layer.linear else f"Z{i}"
        dz_is = "DZ_IS_DY" if layer.linear else "DZ_IS_Z"
        bwd = _pick(src, f"backward{i}", f"_backward_kernels({layer.act}, {dz_is}, False)",
                    layer.fan_out, rows)
        slope = f"slopes[{i}]" if layer.act == PRELU else f"dbs[{i}]"
        dslope = f"dslopes[{i}]" if layer.act == PRELU else f"dbs[{i}]"
        dx = f"dY{i - 1}" if i > 0 else dz
        _call(src, bwd, f"dY{i}, {x}, Ws[{i}], Z{i}, {dz}, dWs[{i}], dbs[{i}], {dslope}, {dx}, "
              f"{layer.act_param!r}, {slope}, True, {i > 0}, {masks[i]}", 2, "done")
        add("if not done:  # as kernels.cpu.dense_backward", 2)
        add(f"gemm({x}.T, {dz}, dWs[{i}])", 3)
        if i > 0:
            add(f"gemm({dz}, Ws[{i}].T, {dx})", 3)
    norms_call = f"{norms}(grads, offsets, clip_value, sq_norms, None, None, None, None, True, None)"
    if stack.dtype == "float32":
        # Unclipped, the guard reads the norms only for whether their sum is finite, and a
        # float64 sum of float32 squares is finite exactly where every gradient is: so a
        # lighter pass answers, and the norms are computed only where it finds an inf or NaN
        # (then as op by op: clip_value may make them finite). Zero norms give the guard's
        # seg_scale of 1, as any finite norms do without clipping.
        finite = src.kernel("all_finite", f"_ALL_FINITE[{norms_parallel}]")
        add(f"if clip_norm == np.inf and clip_global_norm == np.inf and {finite}(grads):", 2)
        add("sq_norms[:] = 0.0", 3)
        add("else:", 2)
        add(norms_call, 3)
    else:  # a float64 square may overflow where the gradient is finite
        add(norms_call, 2)
    add("_guard_update(total, sq_norms, clip_norm, clip_global_norm, step, True, seg_scale, status)", 2)
    add("if status[GUARD_SKIP] == 0:", 2)
    add(f"{update}(params, grads, s1, s2, s3, offsets, seg_scale, seg_decay, clip_value, c[0], c[1], c[2], "
        "c[3], c[4], c[5], c[6], c[7], flags, None, 0, c[8], None)", 3)
    for m, (kind, threshold) in enumerate(stack.metrics):
        add(f"_metric_sums({kind}, {float(threshold)!r}, Y{last}, yb, no_rows, True, "
            f"record[metric_slots[{m}]:metric_slots[{m}] + 2])", 2)
    add("progress[0] += 1", 2)
    add("return bounds.size - 1, 0", 1)
    header = ["# Generated by kernels.cpu.steps from the kernels it names: do not edit.",
              "import numpy as np",
              "from numba import njit",
              "from kernels.cpu.augment import _GAUSSIAN_NOISE",
              "from kernels.cpu.blas import gemm",
              "from kernels.cpu.decisions import _guard_update, _metric_sums",
              "from kernels.cpu.dense import DZ_IS_DY, DZ_IS_Z, _backward_kernels, _forward_kernels",
              "from kernels.cpu.losses import _CROSS_ENTROPY_CLASSES",
              "from kernels.cpu.optim import _ALL_FINITE, _GRAD_SQ_NORMS, _UPDATES",
              f"GUARD_SIZE, GUARD_SKIP = {spec.GUARD_SIZE}, {spec.GUARD_SKIP}"]
    header += [f"{name} = {expression}" for name, expression in sorted(src.names.items())]
    return "\n".join(header) + "\n\n\n@njit(cache=True, error_model='numpy')\n" + "\n".join(src.lines) + "\n"


def compiled(stack, update_kind, rows, n_params):
    """The compiled steps of ``stack`` (a :class:`Stack`) with the optimizer kernel
    ``update_kind`` (kernels.cpu.optim's, as a DeferredUpdate names it) for batches of the
    sizes in ``rows`` (a tuple) over a model of ``n_params`` parameters: generated, and
    loaded once per process (from numba's disk cache where a process compiled it before)."""
    key = (stack, update_kind, rows, n_params)
    function = _FUNCTIONS.get(key)
    if function is None:
        source, name = _source(*key)
        function = _LOADED.get(name)
        if function is None:
            function = _LOADED[name] = _load(source, name)
        _FUNCTIONS[key] = function
    return function


def compiled_before(stack, update_kind, rows, n_params):
    """Whether :func:`compiled` with these arguments loads its steps rather than compiles
    them: loaded in this process already, or compiled by a process before (which wrote
    their source, and numba's disk cache keeps their code: kernels.cpu.jit empties both
    together)."""
    key = (stack, update_kind, rows, n_params)
    if key in _FUNCTIONS:
        return True
    name = _source(*key)[1]
    return name in _LOADED or (_GENERATED / f"{name}.py").exists()


@functools.cache
def _source(stack, update_kind, rows, n_params):
    """(source, name) of the steps :func:`compiled` loads: the name is the source's digest."""
    source = _generate(stack, update_kind, sorted(set(rows)), n_params)
    return source, f"step_{hashlib.sha256(source.encode()).hexdigest()[:24]}"


def _load(source, name):
    # Loading code that links parallel kernels from the disk cache needs numba's thread
    # pool started, which registers the symbols they call (jit.thread_count).
    _numba_parallel._launch_threads()
    path = _GENERATED / f"{name}.py"
    try:
        if not path.exists():
            _GENERATED.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")  # a name of this process's
            temporary.write_text(source)
            temporary.replace(path)  # atomic: another process may be writing the same file
        module_spec = importlib.util.spec_from_file_location(f"kernels.cpu._steps.{name}", path)
        module = importlib.util.module_from_spec(module_spec)
        # numba's disk cache finds the function's module again by name when it loads it
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
        return module.train_steps
    except OSError:  # a read-only install: compiled in memory, without numba's disk cache
        namespace = {}
        exec(compile(source.replace("cache=True", "cache=False"), f"<{name}>", "exec"), namespace)
        return namespace["train_steps"]
