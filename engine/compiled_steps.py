"""Training steps as one compiled call on the numba backend (kernels.cpu.steps).

A step run op by op from Python costs some 5-10 us per op call around the kernels (the
wrappers' checks and the unboxing of arguments), which on a small model is most of the
step. Where the model and the trainer's settings are what kernels.cpu.steps compiles (see
:meth:`CompiledSteps.stack`), ``train_step`` runs its step, and ``fit`` a run of its
batches (the gather of a shuffled batch included), as one call: the same kernels with the
same arguments in the same order, so the weights, optimizer state, losses and metric sums
are bit for bit those of the op-by-op path. Python still does, per step, what it does
for an op-by-op step: the optimizer's learning rate (a schedule is called once per
update) and constants (kernels.cpu.optim.deferred_updates), and the dropout and
input-noise keys; it hands them over in arrays.

Each batch size runs its first step in a process op by op. That step loads (or compiles)
the kernels it calls as functions of their own, which the compiled call then runs: a
compiled call links copies of its kernels, optimized again with it, and the JIT runs the
copy only where no function of that name was loaded before it (kernels.cpu.jit's
``row_loop``): under fastmath's contraction a copy may fuse other multiply-adds, and the
first process to use a cached step would then train differently in the last bits.

A Ctrl-C needs no holding here (engine.interrupts): the compiled call runs to its end
before Python sees the signal, and counts the steps it made in ``progress``; whatever
interrupts Python around it, the optimizer then counts exactly the updates made.

Everything else runs op by op, as before: other backends, normalization layers, frozen
layers, losses other than cross-entropy on class targets, penalties and max_norm,
``on_nonfinite="skip"`` (its next update depends on the host reading the verdict),
diagnostics, row weights, mixup, data-parallel shards, host metrics and callbacks that
read every batch's loss. (fit's input noise runs inside the compiled runs, drawn as
engine.augmentation draws it.) ``Trainer(compiled_steps=False)`` turns it off.

When: the first call of a model's steps compiles them, some 4-8 s on a 2-core machine,
once: numba keeps them on disk for every later process, which loads them in some 50 ms.
On a small model they save about a third of the time op by op, so a short first fit
would be slower for them. With ``compiled_steps="auto"`` (the Trainer's default) they run
at once where compiled before, and otherwise once this process spent
:data:`COMPILE_AFTER_SECONDS` training that model op by op (or a fit plans that much):
renting until the rent reaches the price, then buying, never more than twice the best
choice made knowing the future. ``True`` compiles at the first chance.
"""
from __future__ import annotations

import numpy as np

from kernels import spec
from kernels.rng import split_key

from . import backend as backend_module
from . import optim
from .augmentation import input_noise_key
from .losses import SoftmaxCrossEntropy
from .model import dropout_mask_key

_NO_ORDER = np.empty(0, np.int64)
_WARM = set()  # (Stack, batch size): an op-by-op step of them ran in this process
_OP_BY_OP_SECONDS = {}  # Stack -> the seconds its steps took op by op in this process
_NO_SLOTS = np.empty(0, np.int64)

COMPILE_AFTER_SECONDS = 20.0
"""Seconds of steps op by op after which ``compiled_steps="auto"`` compiles a model's
steps: compiling them (4-8 s here) at the third or so of a small model's step that they
save."""


class CompiledSteps:
    """A trainer's compiled steps (see the module's docstring)."""

    def __init__(self, trainer, mode="auto"):
        self._trainer = trainer
        self._steps = None  # the kernels.cpu.steps module where the model's backend is kernels.cpu
        self._auto = mode == "auto"
        model = trainer.model
        # The steps call kernels.cpu's kernels themselves: only for a model on that very module
        # (not, say, a wrapper of it).
        if mode and model.backend == "numba" and model._k is backend_module.module("numba"):
            from kernels.cpu import optim as cpu_optim, steps
            self._steps, self._deferred_updates = steps, cpu_optim.deferred_updates
        self._stacks = {}  # settings -> Stack or None
        self._functions = {}  # (id of a Stack, update kernel, batch sizes) -> compiled steps
        self._cached_arrays = None  # (key, workspace, the arrays of _arrays)
        self._progress = np.zeros(1, np.int64)  # the batches a compiled call has trained on
        self._step_buffers = None  # (counters, constants) of _per_step
        self._noised = None  # the buffer of noised batches, rows like X's
        self._warm = set()  # (id of a Stack, batch size) of _WARM, seen by this trainer
        self._seconds = {}  # (id of a Stack, batch size) -> seconds a batch of the last timed run
        self._at_hand = {}  # (id of a Stack, batch size) -> whether its steps were compiled before
        self._update_kind = None  # the optimizer's kernel (kernels.cpu.optim's), once asked

    def stack(self, X, y, metrics=(), input_noise=0.0):
        """The kernels.cpu.steps.Stack of steps on batches like (X, y) with device
        ``metrics`` ((kind, threshold) pairs) and fit's ``input_noise``, or None where they
        run op by op."""
        if self._steps is None:
            return None
        trainer = self._trainer
        model, loss, penalties = trainer.model, trainer.loss, trainer.penalties
        settings = (id(loss), trainer.on_nonfinite, trainer._diagnostics is None, penalties.active,
                    penalties.max_norm, model._frozen, type(trainer.optimizer), X.shape, X.dtype, y.ndim, y.dtype,
                    tuple(metrics), input_noise)
        stack = self._stacks.get(settings, False)
        if stack is False:
            stack = self._stacks[settings] = self._describe(X, y, metrics, input_noise)
        return stack

    def _describe(self, X, y, metrics, input_noise):
        trainer, steps = self._trainer, self._steps
        model, loss, penalties = trainer.model, trainer.loss, trainer.penalties
        if (trainer._diagnostics is not None or trainer.on_nonfinite != "raise" or penalties.active
                or penalties.max_norm is not None or model._frozen or type(loss) is not SoftmaxCrossEntropy
                or type(trainer.optimizer) not in optim.CLASSES.values() or y.ndim != 1 or y.dtype != np.int64
                or not X.flags.c_contiguous or not steps.supported(X, *(layer.params["W"] for layer in model._layers))):
            return None
        layers = tuple(layer.compiled_layer(steps.Layer) for layer in model._layers)
        if None in layers:
            return None
        ignore = spec.NO_IGNORE if loss.ignore_index is None else loss.ignore_index
        return steps.Stack(layers, loss.label_smoothing, ignore, loss.reduction == "mean", tuple(metrics),
                           model.dtype.name, float(input_noise))

    def ready(self, stack, n, planned=0.0):
        """Whether the next steps of ``stack`` on batches of ``n`` rows run compiled: once
        one of them ran op by op in this process (:meth:`warm`), and where the trainer's
        mode is "auto", where they were compiled before or the steps of ``stack`` run op
        by op in this process and those ``planned`` (seconds) come to
        :data:`COMPILE_AFTER_SECONDS` (see the module's docstring)."""
        if not self.warm(stack, n):
            return False
        if not self._auto or _OP_BY_OP_SECONDS.get(stack, 0.0) + planned >= COMPILE_AFTER_SECONDS:
            return True
        at_hand = self._at_hand.get((id(stack), n))
        if at_hand is None:
            at_hand = self._at_hand[(id(stack), n)] = self._steps.compiled_before(
                stack, self._kind(), (n,), self._trainer.model._layout.size)
        return at_hand

    def _kind(self):
        """The kernel of the optimizer's updates (kernels.cpu.optim's), from an update
        deferred and not counted (``Optimizer._update_all``: no learning-rate schedule is
        called, no state changes)."""
        if self._update_kind is None:
            trainer = self._trainer
            optimizer, model = trainer.optimizer, trainer.model
            with self._deferred_updates() as calls:
                optimizer._update_all(model._params, model._grads, trainer._seg_scale, trainer._limits()[0], 0.0,
                                      optimizer.iterations + 1)
            self._update_kind = calls[0].kind
        return self._update_kind

    def warm(self, stack, n):
        """Whether steps of ``stack`` on batches of ``n`` rows may run compiled: one of them
        ran op by op in this process (see the module's docstring); :meth:`ran_op_by_op`
        says so."""
        return (id(stack), n) in self._warm or self._warm_globally(stack, n)

    def _warm_globally(self, stack, n):
        if (stack, n) not in _WARM:
            return False
        self._warm.add((id(stack), n))
        return True

    def ran_op_by_op(self, stack, n, seconds):
        """A step of ``stack`` on ``n`` rows ran op by op in this process, in ``seconds``."""
        _WARM.add((stack, n))
        self._warm.add((id(stack), n))
        _OP_BY_OP_SECONDS[stack] = _OP_BY_OP_SECONDS.get(stack, 0.0) + seconds

    def seconds_per_batch(self, stack, n):
        """What a batch of ``n`` rows took in the last run :meth:`timed` kept, or None."""
        return self._seconds.get((id(stack), n))

    def timed(self, stack, n, seconds):
        """Keep ``seconds`` a batch of ``n`` rows (None: forget; a run that compiled)."""
        self._seconds[(id(stack), n)] = seconds

    def run(self, stack, X, y, order, bounds, loss_slot, metric_slots=_NO_SLOTS):
        """Train on the batches ``bounds`` (rows ``bounds[b]:bounds[b + 1]`` of X and y, or
        of their rows ``order`` when it is not None) with the steps of ``stack``, each
        batch's loss into ``record[loss_slot + b]`` and each metric's sums into
        ``record[metric_slots[m]:+2]`` (an int64 array). An error of the learning rate's
        at an update is raised after the updates before it are made, as op by op; after
        any error the optimizer counts the updates made."""
        optimizer = self._trainer.optimizer
        first, last_lr = optimizer.iterations, optimizer.last_lr
        self._progress[0] = 0
        error = None
        try:
            calls, error = self._defer(len(bounds) - 1)
            if calls:
                self._call(stack, calls, X, y, order, bounds, loss_slot, metric_slots, first)
        finally:
            made = int(self._progress[0])
            if optimizer.iterations != first + made:  # an error, or a Ctrl-C, before the end
                optimizer._rewind(first + made)
                if not made:
                    optimizer.last_lr = last_lr
        if error is not None:
            raise error

    def _defer(self, count):
        """The optimizer's next ``count`` updates as kernel calls, not run (but counted: the
        caller runs them), and the error that stopped them early, or None: a learning-rate
        schedule's, raised once the updates before it are made."""
        trainer = self._trainer
        model = trainer.model
        apply = trainer.optimizer.apply
        arguments = (model._params, model._grads, trainer._seg_scale, trainer._limits()[0], trainer._status)
        with self._deferred_updates() as calls:
            try:
                for _ in range(count):
                    apply(*arguments)
            except Exception as error:  # noqa: BLE001  (a schedule is user code: re-raised by run)
                return calls, error
        return calls, None

    def _call(self, stack, calls, X, y, order, bounds, loss_slot, metric_slots, first):
        """The deferred updates ``calls`` made, one per batch of ``bounds``, in compiled calls."""
        trainer = self._trainer
        model, optimizer = trainer.model, trainer.optimizer
        n_batches = len(calls)
        edges = bounds[:n_batches + 1].tolist()
        sizes = tuple(sorted({stop - start for start, stop in zip(edges, edges[1:])}))
        key = (id(stack), calls[0].kind, sizes)  # the stacks are kept in self._stacks: ids stay theirs
        function = self._functions.get(key)
        if function is None:
            function = self._functions[key] = self._steps.compiled(stack, calls[0].kind, sizes, model._layout.size)
        counters, constants = self._per_step(stack, calls, first)
        arrays = self._arrays(sizes[-1], X, y, order is not None, stack.input_noise > 0.0)
        order = _NO_ORDER if order is None else order
        limits = trainer._limits()[1:]
        stand_ins = self._steps.stand_ins(model.dtype)
        done = 0
        # Runs of updates whose kernel flags agree (SGD's first update differs): a call each.
        while done < n_batches:
            end = done + 1
            while end < n_batches and calls[end].flags == calls[done].flags:
                end += 1
            call = calls[done]
            trained, bad = function(X, y, order, bounds[done:end + 1], *arrays, *call.states, optimizer._seg_decay,
                                    trainer._seg_scale, trainer._sq_norms, trainer._record, loss_slot + done,
                                    metric_slots, counters[done:end], constants[done:end], call.flags,
                                    call.clip_value, *limits, *stand_ins, self._progress)
            if bad:  # fit and train_step check the targets first: never here
                raise IndexError(f"{bad} class targets outside [0, {model.sizes[-1]}) that are not ignore_index")
            done = end

    def _per_step(self, stack, calls, first):
        """What changes from step to step, for the updates ``first, first + 1, ...`` of
        ``calls``: (counters, constants), views of buffers kept from call to call. A row of
        counters (int64) is the update's index, then the (key_lo, key_hi) of each dropout
        layer's mask (kernels.rng), as the model draws them, then with input noise its
        three counters (kernels.cpu.steps.noise_counters) under the key engine.augmentation
        draws it with; a row of constants (float64) the update's 8 kernel constants and its
        learning rate."""
        model = self._trainer.model
        dropout = [i for i, layer in enumerate(stack.layers) if layer.dropout > 0.0]
        dropout_columns, noise_column, width = stack.counter_columns
        n_batches = len(calls)
        buffers = self._step_buffers
        if buffers is None or buffers[0].shape[0] < n_batches or buffers[0].shape[1] != width:
            buffers = self._step_buffers = (np.empty((max(n_batches, 16), width), np.int64),
                                            np.empty((max(n_batches, 16), 9)))
        counters, constants = buffers[0][:n_batches], buffers[1][:n_batches]
        counters[:, 0] = np.arange(first, first + n_batches)
        for column, i in zip(dropout_columns, dropout):  # whole batches (no data-parallel shard here)
            counters[:, column:column + 2] = [split_key(dropout_mask_key(model._seed, first + b, i))
                                              for b in range(n_batches)]
        if stack.input_noise > 0.0:
            counters[:, noise_column:] = [self._steps.noise_counters(input_noise_key(model._seed, first + b))
                                          for b in range(n_batches)]
        # one conversion of the run's rows: filled row by row, this cost about 1 us a step
        constants[:] = [call.values for call in calls]
        return counters, constants

    def _arrays(self, n, X, y, shuffled, noise):
        """The model's arrays a compiled step takes, for batches of up to ``n`` rows: the
        layers' parameters and gradients, the workspace of ``n`` rows, the buffers of
        shuffled batches (else X and y stand in), that of the noised batch (else X stands
        in), the flat buffers and their offsets."""
        model = self._trainer.model
        ws = model._workspace(n)
        key = (n, shuffled, X.shape[1:], X.dtype)
        cached = self._cached_arrays
        if cached is None or cached[0] != key or cached[1] is not ws:
            layers, workspaces = model._layers, ws.layers
            params = [layer.params for layer in layers]
            grads = [layer.grads for layer in layers]
            xbuf, ybuf = self._trainer._gather_buffers((X, y), n) if shuffled else (X, y)
            arrays = (tuple(p["W"] for p in params), tuple(p["b"] for p in params),
                      tuple(p.get("slope", p["b"]) for p in params), tuple(g["W"] for g in grads),
                      tuple(g["b"] for g in grads), tuple(g.get("slope", g["b"]) for g in grads),
                      tuple(w.Z for w in workspaces), tuple(w.Y for w in workspaces),
                      tuple(w.dY for w in workspaces), xbuf, ybuf, model._params, model._grads, model._offsets)
            cached = self._cached_arrays = (key, ws, arrays)
        arrays = cached[2]
        noise_buffer = self._noise_buffer(n, X) if noise else X
        if not shuffled:  # X and y stand in for the shuffle buffers
            return arrays[:9] + (X, y, noise_buffer) + arrays[11:]
        return arrays[:11] + (noise_buffer,) + arrays[11:]

    def _noise_buffer(self, n, X):
        """A buffer of ``n`` rows like X's, kept from call to call: the noised batches."""
        buffer = self._noised
        if buffer is None or buffer.shape[0] < n or buffer.shape[1:] != X.shape[1:] or buffer.dtype != X.dtype:
            buffer = self._noised = self._trainer.model._k.empty((n,) + X.shape[1:], X.dtype)
        return buffer
