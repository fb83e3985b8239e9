"""Compiled steps (engine.compiled_steps, kernels.cpu.steps): one compiled call per step or
run of fit's batches trains exactly as the op-by-op path does, bit for bit.

Every comparison trains two copies of a model from the same seed, one with
``Trainer(compiled_steps=False)``, on the same data, and compares every weight, every
optimizer state array and the losses with ``array_equal``: the compiled step calls the
op-by-op path's kernels with its arguments, so nothing may differ, not even the last bit.
Each test also checks that the compiled path ran (a test of two op-by-op runs would pass
whatever the compiled code does).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import engine
from engine import compiled_steps as compiled_steps_module
from engine import schedules
from engine import trainer as trainer_module
from engine.optim import SGD, Adadelta, Adagrad, Adam, AdamW, NAdam, RMSprop

pytest.importorskip("numba", reason="the compiled steps are the numba backend's")

from kernels.cpu import steps as cpu_steps  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# A Python list handed to a compiled step is typed as numba's reflected list (a slower
# compilation of its own, deprecated): every argument must be an array or a tuple.
pytestmark = pytest.mark.filterwarnings("error::numba.core.errors.NumbaPendingDeprecationWarning")


@pytest.fixture
def compiled_calls(monkeypatch):
    """The calls of compiled steps made (one per step, or per run of fit's batches)."""
    calls = []
    original = cpu_steps.compiled

    def counting(*args):
        function = original(*args)

        def call(*arguments):
            calls.append(args[0])
            return function(*arguments)
        return call
    monkeypatch.setattr(cpu_steps, "compiled", counting)
    return calls


def _data(n=150, n_in=12, n_out=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)).astype(dtype), rng.integers(0, n_out, n)


def _pair(sizes=(12, 16, 9, 4), optimizer=AdamW, trainer_args=None, **model_args):
    """(compiled, op by op) trainers of two identical models."""
    trainers = []
    for compiled in (True, False):
        model = engine.MLP(list(sizes), seed=3, backend="numba", **model_args)
        trainers.append(engine.Trainer(model, optimizer=optimizer(), compiled_steps=compiled,
                                       **(trainer_args or {})))
    return trainers


def _assert_same_state(compiled, op_by_op):
    for a, b in zip(compiled.model.get_weights(), op_by_op.model.get_weights()):
        assert np.array_equal(a, b)
    state_a, state_b = compiled.optimizer.state_dict(), op_by_op.optimizer.state_dict()
    assert state_a["iterations"] == state_b["iterations"]
    assert state_a["scalars"] == state_b["scalars"]
    for name in state_a["arrays"]:
        assert np.array_equal(state_a["arrays"][name], state_b["arrays"][name]), name


OPTIMIZERS = {
    "adamw": AdamW,
    "adam_amsgrad": lambda: Adam(lr=3e-3, amsgrad=True, weight_decay=1e-3),
    "sgd_nesterov": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "sgd_plain": lambda: SGD(lr=0.05),
    "rmsprop_centered": lambda: RMSprop(lr=1e-3, momentum=0.5, centered=True),
    "adagrad": Adagrad,
    "adadelta": Adadelta,
    "nadam": NAdam,
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_train_step_100_steps_bit_identical(name, compiled_calls):
    compiled, op_by_op = _pair(optimizer=OPTIMIZERS[name], activation="tanh", dropout=0.2)
    X, y = _data()
    for step in range(100):
        rows = slice(step % 5 * 30, step % 5 * 30 + 30)
        assert compiled.train_step(X[rows], y[rows]) == op_by_op.train_step(X[rows], y[rows])
    _assert_same_state(compiled, op_by_op)
    assert len(compiled_calls) >= 99  # a batch size's first step in a process runs op by op


def test_every_activation_bit_identical(compiled_calls):
    """One hidden layer of each activation of engine.activations, with and without dropout,
    in one model: one compiled step to build rather than one per activation."""
    names = engine.activations.NAMES
    sizes = (12,) + (16,) * len(names) + (4,)
    compiled, op_by_op = _pair(sizes, activation=list(names), dropout=[0.3 * (i % 2) for i in range(len(names))])
    X, y = _data()
    for step in range(20):
        compiled.train_step(X[:40], y[:40])
        op_by_op.train_step(X[:40], y[:40])
    weights = iter(zip(compiled.model.get_weights(), op_by_op.model.get_weights()))
    for name in names + ("output",):  # W, b, and prelu's slopes, layer by layer
        for a, b in [next(weights) for _ in range(3 if name == "prelu" else 2)]:
            assert np.array_equal(a, b), f"the {name} layer's parameters"
    _assert_same_state(compiled, op_by_op)
    assert compiled_calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("settings", [
    {"trainer_args": {"clip_value": 0.01}},
    {"trainer_args": {"clip_norm": 0.05, "clip_global_norm": 0.1}},
    {"trainer_args": {"loss": engine.losses.SoftmaxCrossEntropy(label_smoothing=0.1, ignore_index=2)}},
    {"trainer_args": {"loss": engine.losses.SoftmaxCrossEntropy(reduction="sum")}},
    {"optimizer": lambda: AdamW(lr=schedules.CosineDecay(1e-2, 30))},
], ids=["clip_value", "clip_norms", "smoothing_ignore", "sum", "schedule"])
def test_trainer_settings_bit_identical(dtype, settings, compiled_calls):
    compiled, op_by_op = _pair(dtype=dtype, **settings)
    X, y = _data(dtype=dtype)
    for step in range(30):
        rows = slice(step % 3 * 50, step % 3 * 50 + 50)
        assert compiled.train_step(X[rows], y[rows]) == op_by_op.train_step(X[rows], y[rows])
    _assert_same_state(compiled, op_by_op)
    assert compiled_calls


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n_rows", [160, 150])  # whole batches, and a last one of 22 rows
def test_fit_bit_identical(shuffle, n_rows, compiled_calls):
    compiled, op_by_op = _pair(optimizer=lambda: SGD(lr=0.05, momentum=0.9), dropout=0.1)
    X, y = _data(n=n_rows + 40)
    histories = [t.fit(X[:n_rows], y[:n_rows], epochs=3, batch_size=32, shuffle=shuffle, verbose=0,
                       validation_data=(X[n_rows:], y[n_rows:])).history
                 for t in (compiled, op_by_op)]
    assert histories[0] == histories[1]
    _assert_same_state(compiled, op_by_op)
    assert compiled.step == 3 * -(-n_rows // 32)
    assert compiled_calls


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n_in", [12, 1100], ids=["serial_noise", "both_noises"])
def test_fit_with_input_noise_bit_identical(shuffle, n_in, compiled_calls):
    """fit's input noise drawn inside the compiled runs: the same noise (kernel, key and
    buffer as engine.augmentation's) as op by op, with dropout and a last batch of 22 rows;
    with 1100 inputs, whole batches on the noise's parallel kernel and the last on its
    serial one (kernels.cpu.augment.NOISE_WORK_PER_ELEMENT), in one compiled run."""
    compiled, op_by_op = _pair(sizes=(n_in, 16, 4), dropout=0.1)
    X, y = _data(n=150, n_in=n_in)
    X_before = X.copy()
    histories = [t.fit(X, y, epochs=3, batch_size=32, shuffle=shuffle, verbose=0, input_noise=0.3).history
                 for t in (compiled, op_by_op)]
    assert histories[0] == histories[1]
    _assert_same_state(compiled, op_by_op)
    assert np.array_equal(X, X_before)  # the noise went into a buffer, not into the data
    assert any(stack.input_noise == 0.3 for stack in compiled_calls)
    # and it changed the training: without noise, other weights
    plain, _ = _pair(sizes=(n_in, 16, 4), dropout=0.1)
    plain.fit(X, y, epochs=3, batch_size=32, shuffle=shuffle, verbose=0)
    assert not np.array_equal(plain.model.get_weights()[0], compiled.model.get_weights()[0])


def test_fit_across_the_parallel_threshold(compiled_calls):
    """Whole batches of 64 x 2048 hidden units run the parallel kernels, the last batch of 22
    rows the serial ones: one compiled run holds both, chosen per batch as op by op."""
    compiled, op_by_op = _pair(sizes=(12, 2048, 4), dropout=0.1)
    X, y = _data(n=150)
    for trainer in (compiled, op_by_op):
        trainer.fit(X, y, epochs=2, batch_size=64, verbose=0)
    _assert_same_state(compiled, op_by_op)
    assert any(len(stack.layers) == 2 for stack in compiled_calls)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow on purpose
def test_fit_nonfinite_raises_at_the_same_step(compiled_calls):
    """Update 5's learning rate of 1e30 sends the weights to inf: the next step's loss is the
    first non-finite value, and the error names it, with the weights of before it."""
    compiled, op_by_op = _pair(optimizer=lambda: SGD(lr=lambda step: 1e30 if step == 5 else 1e-2))
    X, y = _data(n=320)
    errors = []
    for trainer in (compiled, op_by_op):
        with pytest.raises(engine.NonFiniteError) as error:
            trainer.fit(X, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
        errors.append(str(error.value))
    assert errors[0] == errors[1]
    assert "step 6" in errors[0]
    assert compiled.step == 6
    _assert_same_state(compiled, op_by_op)
    assert compiled_calls


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow on purpose
@pytest.mark.parametrize("clip_value", [None, 0.5])
def test_infinite_gradient_of_a_finite_loss(compiled_calls, clip_value):
    """Batch 3's first feature is 3e38 and its weights 0 (no earlier batch moved them): a
    finite loss whose weight gradient overflows. The compiled step's check of the gradients
    finds it and computes the norms as op by op: unclipped, the error names the gradient
    at the third update; clipped to 0.5, both train on alike."""
    compiled, op_by_op = _pair(optimizer=AdamW, trainer_args={
        "clip_value": clip_value, "loss": engine.losses.SoftmaxCrossEntropy(reduction="sum")})
    X, y = _data(n=128)
    X[:, 0] = 0.0
    X[64:96, 0] = 3e38
    outcomes = []
    for trainer in (compiled, op_by_op):
        weights = trainer.model.get_weights()
        weights[0][0] = 0.0
        trainer.model.set_weights(weights)
        try:
            trainer.fit(X, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
            outcomes.append(None)
        except engine.NonFiniteError as error:
            outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]
    if clip_value is None:
        assert "gradient at step 2" in outcomes[0]  # the third update, counted from 0
    _assert_same_state(compiled, op_by_op)
    assert compiled_calls


def test_schedule_error_raised_after_the_updates_before_it(compiled_calls):
    def schedule(step):
        if step == 7:
            raise ArithmeticError("schedule fails at update 7")
        return 1e-3

    compiled, op_by_op = _pair(optimizer=lambda: AdamW(lr=schedule))
    X, y = _data(n=320)
    for trainer in (compiled, op_by_op):
        with pytest.raises(ArithmeticError, match="update 7"):
            trainer.fit(X, y, epochs=1, batch_size=32, verbose=0)
        assert trainer.step == 7
    _assert_same_state(compiled, op_by_op)
    assert compiled_calls


@pytest.mark.parametrize("setup", [
    lambda: engine.Trainer(engine.MLP([12, 8, 4], seed=1, backend="numba", normalization="batch"),
                           compiled_steps=True),
    lambda: engine.Trainer(engine.MLP([12, 8, 4], seed=1, backend="numba"), l2=1e-3, compiled_steps=True),
    lambda: engine.Trainer(engine.MLP([12, 8, 4], seed=1, backend="numba"), on_nonfinite="skip",
                           compiled_steps=True),
    lambda: engine.Trainer(engine.MLP([12, 8, 4], seed=1, backend="numba"), loss="mse", compiled_steps=True),
    lambda: engine.Trainer(engine.MLP([12, 8, 4], seed=1, backend="numba"), compiled_steps=False),
], ids=["normalization", "penalty", "skip", "mse", "off"])
def test_what_it_cannot_run_goes_op_by_op(setup, compiled_calls):
    trainer = setup()
    X, y = _data(n=64)
    targets = np.eye(4, dtype=np.float32)[y] if trainer.loss.name == "mse" else y
    before = trainer.model.get_weights()
    trainer.fit(X, targets, epochs=1, batch_size=16, verbose=0)
    trainer.train_step(X[:16], targets[:16])
    assert not compiled_calls
    assert any(not np.array_equal(a, b) for a, b in zip(before, trainer.model.get_weights()))


def test_frozen_layers_go_op_by_op(compiled_calls):
    trainer = engine.Trainer(engine.MLP([12, 8, 4], seed=1, backend="numba"), compiled_steps=True)
    X, y = _data(n=32)
    for _ in range(2):  # the first step of a batch size in a process runs op by op
        trainer.train_step(X, y)
    assert len(compiled_calls) == 1
    trainer.model.freeze(1)
    trainer.train_step(X, y)
    assert len(compiled_calls) == 1


def test_first_step_of_a_batch_size_runs_op_by_op(compiled_calls):
    """The kernels a compiled step links must have been loaded as functions of their own
    first (engine.compiled_steps): one op-by-op step per new batch size in a process."""
    trainer = engine.Trainer(engine.MLP([12, 7, 4], seed=1, backend="numba", activation="softplus"),
                             compiled_steps=True)
    X, y = _data(n=64)
    trainer.train_step(X[:20], y[:20])
    assert not compiled_calls
    trainer.train_step(X[:20], y[:20])
    assert len(compiled_calls) == 1
    trainer.train_step(X[:21], y[:21])
    assert len(compiled_calls) == 1
    other = engine.Trainer(engine.MLP([12, 7, 4], seed=2, backend="numba", activation="softplus"),
                           compiled_steps=True)
    other.train_step(X[:21], y[:21])  # the same structure and size: already warm in this process
    assert len(compiled_calls) == 2


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_compiled_steps_must_be_true_false_or_auto(value):
    with pytest.raises(TypeError, match="compiled_steps must be True, False or 'auto'"):
        engine.Trainer(engine.MLP([3, 2], backend="numba"), compiled_steps=value)


def test_compiled_steps_against_the_reference():
    """Five compiled steps in float64 against the NumPy reference backend's (plain SGD at
    lr 1 moves each weight by its gradient): the same training to float64 rounding of sums
    in another order."""
    X, y = _data(n=40, dtype=np.float64)
    trainers = [engine.Trainer(engine.MLP([12, 16, 4], seed=5, backend=backend, dtype="float64", dropout=0.25),
                               optimizer=SGD(lr=1.0), compiled_steps=True) for backend in ("numba", "numpy")]
    losses = [[t.train_step(X[8 * i:8 * i + 8], y[8 * i:8 * i + 8]) for i in range(5)] for t in trainers]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    for a, b in zip(trainers[0].model.get_weights(), trainers[1].model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_compiled_in_memory_where_the_cache_directory_cannot_be_written(tmp_path, monkeypatch):
    """A read-only install: the generated step cannot be written, so it is compiled in
    memory, and trains the same."""
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setattr(cpu_steps, "_GENERATED", blocker / "steps")
    monkeypatch.setattr(cpu_steps, "_FUNCTIONS", {})
    monkeypatch.setattr(cpu_steps, "_LOADED", {})
    compiled, op_by_op = _pair(sizes=(12, 5, 4))
    X, y = _data()
    for trainer in (compiled, op_by_op):
        for _ in range(2):  # the first step of a batch size in a process runs op by op
            trainer.train_step(X[:16], y[:16])
    _assert_same_state(compiled, op_by_op)
    (function,) = cpu_steps._LOADED.values()
    assert function.py_func.__code__.co_filename.startswith("<step_")  # compiled from memory, not a file


# Two epochs of fit (shuffled, dropout, a last partial batch) of a small model, compiled or
# op by op (argv[1]), then the hash of its weights.
_FIT_AND_REPORT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import engine
    g = np.random.default_rng(0)
    X, y = g.normal(size=(90, 6)).astype(np.float32), g.integers(0, 3, 90)
    model = engine.MLP([6, 10, 3], dropout=0.2, seed=4, backend="numba")
    trainer = engine.Trainer(model, compiled_steps=sys.argv[1] == "compiled")
    trainer.fit(X, y, epochs=2, batch_size=32, verbose=0)
    print(hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
""")


def test_compiled_steps_from_the_disk_cache_train_as_op_by_op(tmp_path):
    """Three fresh processes on one numba cache: the first compiles kernels and steps, the
    second loads both from the cache, the third trains op by op: the same bits. (The
    copies of the kernels a cached step links are never what runs, engine.compiled_steps;
    on this model they happen to compile alike, so this checks the whole, not that rule.)"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _FIT_AND_REPORT, path], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600) for path in ("compiled", "compiled", "op_by_op")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    digests = [run.stdout.split()[-1] for run in runs]
    assert digests[0] == digests[1] == digests[2]


def test_out_of_range_targets_in_a_run_change_nothing_from_their_batch_on():
    """Targets reach a compiled run checked (train_step and fit refuse classes outside
    [0, n_out) first); given one all the same, the run stops at its batch with the kernel's
    IndexError, the batches before it trained and counted, nothing of it or after."""
    trainer = engine.Trainer(engine.MLP([12, 6, 4], seed=1, backend="numba"), metrics=(), compiled_steps=True)
    X, y = _data(n=96)
    trainer.train_step(X[:32], y[:32])  # the batch size's first step, op by op
    compiled = trainer._compiled_steps
    stack = compiled.stack(X, y)
    y_bad = y.copy()
    y_bad[70] = 9  # in the third batch of 32
    twin = engine.Trainer(engine.MLP([12, 6, 4], seed=1, backend="numba"), metrics=(), compiled_steps=False)
    for rows in (slice(0, 32), slice(0, 32), slice(32, 64)):
        twin.train_step(X[rows], y[rows])
    trainer._reserve(3)
    with pytest.raises(IndexError, match="1 class targets outside"):
        compiled.run(stack, X, y_bad, None, np.array([0, 32, 64, 96]), 4)
    assert trainer.step == 3
    for a, b in zip(trainer.model.get_weights(), twin.model.get_weights()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("verbose", [0, 1])
def test_fit_reads_the_record_once_a_run(verbose, monkeypatch):
    """A compiled run is one wait: with a progress bar the record is read after each run
    (and after each batch run op by op, here the first of the batch size), and at each
    epoch's end; without one, at the epoch's end alone."""
    from kernels import cpu
    X, y = _data(n=100)
    trainer = engine.Trainer(engine.MLP([12, 8, 4], seed=0, backend="numba"), metrics=("accuracy",),
                             compiled_steps=True)
    reads, runs, op_by_op = [0], [], []
    original_to_host, original_run, original_step = cpu.to_host, trainer._compiled_steps.run, trainer._step

    def to_host(array):
        reads[0] += 1
        return original_to_host(array)

    def run(*args, **kwargs):
        runs.append(len(args[4]) - 1)
        return original_run(*args, **kwargs)

    def step(*args, **kwargs):
        op_by_op.append(1)
        return original_step(*args, **kwargs)

    monkeypatch.setattr(cpu, "to_host", to_host)
    monkeypatch.setattr(trainer._compiled_steps, "run", run)
    monkeypatch.setattr(trainer, "_step", step)
    trainer.fit(X, y, epochs=2, batch_size=4, verbose=verbose)
    assert sum(runs) + len(op_by_op) == 2 * 25 and runs
    assert reads[0] == 2 + (len(runs) + len(op_by_op) if verbose == 1 else 0)


def test_fit_keeps_the_time_of_a_batch_from_fit_to_fit(monkeypatch):
    """Once a compiled run has timed its batches, every later epoch is planned from that
    time (here one run each, the chunk's time unbounded), even in another fit call: no
    first batch alone to measure again."""
    monkeypatch.setattr(trainer_module, "_CHUNK_SECONDS", 1e9)
    X, y = _data(n=100)
    trainer = engine.Trainer(engine.MLP([12, 8, 4], seed=0, backend="numba"), metrics=("accuracy",),
                             compiled_steps=True)
    trainer.fit(X, y, epochs=1, batch_size=4, verbose=0)
    runs, original_run = [], trainer._compiled_steps.run

    def run(*args, **kwargs):
        runs.append(len(args[4]) - 1)
        return original_run(*args, **kwargs)
    monkeypatch.setattr(trainer._compiled_steps, "run", run)
    trainer.fit(X, y, epochs=2, batch_size=4, verbose=0)
    assert runs == [25, 25]


@pytest.fixture
def fresh_process(tmp_path, monkeypatch):
    """What a new process knows of compiled steps: none loaded, none warm, no time spent
    op by op, and none compiled before (an empty directory of generated steps)."""
    monkeypatch.setattr(cpu_steps, "_GENERATED", tmp_path / "steps")
    monkeypatch.setattr(cpu_steps, "_FUNCTIONS", {})
    monkeypatch.setattr(cpu_steps, "_LOADED", {})
    monkeypatch.setattr(compiled_steps_module, "_WARM", set())
    monkeypatch.setattr(compiled_steps_module, "_OP_BY_OP_SECONDS", {})


def _auto_trainer():
    return engine.Trainer(engine.MLP([12, 9, 4], seed=3, backend="numba"))  # compiled_steps="auto"


def test_auto_compiles_once_the_steps_op_by_op_pay_for_it(fresh_process, compiled_calls, monkeypatch):
    X, y = _data(n=64)
    trainer = _auto_trainer()
    monkeypatch.setattr(compiled_steps_module, "COMPILE_AFTER_SECONDS", 1e9)
    for _ in range(3):
        trainer.train_step(X[:16], y[:16])
    assert not compiled_calls  # never compiled, and far from paying for it
    monkeypatch.setattr(compiled_steps_module, "COMPILE_AFTER_SECONDS", 1e-9)
    trainer.train_step(X[:16], y[:16])
    assert len(compiled_calls) == 1


def test_auto_runs_steps_compiled_before_at_once(fresh_process, compiled_calls, monkeypatch):
    """Steps some process compiled before (their source is on disk, numba's code beside it)
    run compiled from the first warm step, however little was spent op by op."""
    X, y = _data(n=64)
    first = engine.Trainer(engine.MLP([12, 9, 4], seed=3, backend="numba"), compiled_steps=True)
    for _ in range(2):
        first.train_step(X[:16], y[:16])
    assert len(compiled_calls) == 1 and list((cpu_steps._GENERATED).glob("step_*.py"))
    # another process: nothing loaded, nothing warm, no time spent op by op; the disk as it was
    monkeypatch.setattr(cpu_steps, "_FUNCTIONS", {})
    monkeypatch.setattr(cpu_steps, "_LOADED", {})
    monkeypatch.setattr(compiled_steps_module, "_WARM", set())
    monkeypatch.setattr(compiled_steps_module, "_OP_BY_OP_SECONDS", {})
    monkeypatch.setattr(compiled_steps_module, "COMPILE_AFTER_SECONDS", 1e9)
    trainer = _auto_trainer()
    trainer.train_step(X[:16], y[:16])  # a batch size's first step in a process: op by op
    trainer.train_step(X[:16], y[:16])
    assert len(compiled_calls) == 2


@pytest.mark.parametrize("threshold, compiled_runs", [(20.0, True), (30.0, False)])
def test_auto_fit_compiles_when_the_epoch_it_plans_pays_for_it(threshold, compiled_runs, fresh_process,
                                                                 compiled_calls, monkeypatch):
    """On a clock where every step op by op takes one second, an epoch of 25 batches plans
    25 s of them after its first: enough at a price of 20 s, not at 30 s."""
    clock = iter(range(10**6))
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(compiled_steps_module, "COMPILE_AFTER_SECONDS", threshold)
    X, y = _data(n=100)
    _auto_trainer().fit(X, y, epochs=1, batch_size=4, verbose=0)
    assert bool(compiled_calls) == compiled_runs
