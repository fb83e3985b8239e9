"""Robustness of training: Ctrl-C at step boundaries and exact resumption, determinism
across processes, losses finite at huge logits, and skipped non-finite steps counted."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import engine
from conftest import FAST_BACKENDS, load_backend
from kernels import spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_IN, N_OUT, N_ROWS = 5, 3, 40


def data(seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(N_ROWS, N_IN)), g.integers(0, N_OUT, N_ROWS)


def make_trainer(backend, optimizer=None, callbacks=()):
    model = engine.MLP([N_IN, 8, N_OUT], dropout=0.25, seed=3, backend=backend)
    return engine.Trainer(model, optimizer=optimizer or engine.NAdam(lr=1e-2), callbacks=callbacks)


def state(trainer):
    """Everything a resumed run depends on, on the host."""
    saved = trainer.optimizer.state_dict()
    return {"weights": trainer.model.get_weights(), "arrays": saved["arrays"], "scalars": saved["scalars"],
            "iterations": trainer.optimizer.iterations, "rng": trainer._rng.bit_generator.state,
            "seed": trainer.model._seed}


def assert_same_state(a, b):
    """Bit for bit: every array equal, and the counters and RNG the same."""
    assert a["iterations"] == b["iterations"]
    assert a["scalars"] == b["scalars"] and a["rng"] == b["rng"] and a["seed"] == b["seed"]
    for x, y in zip(a["weights"], b["weights"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert set(a["arrays"]) == set(b["arrays"])
    for name in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][name], b["arrays"][name])


class InterruptAt(engine.callbacks.Callback):
    """Raises KeyboardInterrupt (what Ctrl-C raises) after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            raise KeyboardInterrupt


class SigintInsideUpdate(engine.NAdam):
    """Sends this process SIGINT in the middle of update ``at`` (after the optimizer kernel,
    before the step is counted): the window where an unheld Ctrl-C would leave the weights
    updated but the step count and NAdam's momentum product not."""

    def __init__(self, at, **kwargs):
        super().__init__(**kwargs)
        self.at = at

    def _update(self, *args, **kwargs):
        super()._update(*args, **kwargs)
        if self.iterations + 1 == self.at:  # counted only after this returns
            os.kill(os.getpid(), signal.SIGINT)


def steps_by_hand(backend, n_steps, batch_size=8):
    """A trainer after ``n_steps`` train_steps on fit's unshuffled batches, cycling epochs."""
    trainer = make_trainer(backend)
    X, y = data()
    starts = list(range(0, N_ROWS, batch_size))
    for i in range(n_steps):
        start = starts[i % len(starts)]
        trainer.train_step(X[start:start + batch_size], y[start:start + batch_size])
    return trainer


@pytest.mark.parametrize("how", ["callback", "sigint_inside_update"])
def test_interrupted_fit_stops_at_a_step_boundary(backend_name, how):
    """After Ctrl-C the weights, optimizer state and step count are those of the steps made:
    the same as a run of exactly that many steps."""
    X, y = data()
    if how == "callback":
        trainer = make_trainer(backend_name, callbacks=[InterruptAt(epoch=1, batch=2)])
        made = 5 + 3  # epoch 0 (5 batches), then batches 0..2 of epoch 1
    else:
        trainer = make_trainer(backend_name, optimizer=SigintInsideUpdate(at=7, lr=1e-2))
        made = 7
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(X, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    assert trainer.optimizer.iterations == made
    expected = state(steps_by_hand(backend_name, made))
    got = state(trainer)
    got["rng"] = expected["rng"]  # fit drew no permutation (shuffle=False), train_step never does
    assert_same_state(got, expected)


def test_sigint_inside_train_step_raises_after_the_step(backend_name):
    trainer = make_trainer(backend_name, optimizer=SigintInsideUpdate(at=3, lr=1e-2))
    X, y = data()
    for _ in range(2):
        trainer.train_step(X[:8], y[:8])
    with pytest.raises(KeyboardInterrupt):
        trainer.train_step(X[:8], y[:8])
    reference = make_trainer(backend_name)
    for _ in range(3):
        reference.train_step(X[:8], y[:8])
    assert_same_state(state(trainer), state(reference))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored


@pytest.mark.parametrize("how", ["callback", "sigint_inside_update"])
def test_checkpoint_after_interrupt_resumes_exactly(backend_name, how, tmp_path):
    """Interrupted mid-epoch, saved, loaded into a fresh trainer: it then trains exactly as
    the interrupted trainer itself does when it goes on (weights, state, step, RNG)."""
    X, y = data()
    if how == "callback":
        interrupted = make_trainer(backend_name, SigintInsideUpdate(at=-1, lr=1e-2), [InterruptAt(epoch=1, batch=1)])
    else:
        interrupted = make_trainer(backend_name, optimizer=SigintInsideUpdate(at=6, lr=1e-2))
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, y, epochs=3, batch_size=8, verbose=0)
    interrupted.callbacks = []
    interrupted.optimizer.at = -1  # no second interrupt
    path = tmp_path / "interrupted.npz"
    interrupted.save_checkpoint(path)

    resumed = make_trainer(backend_name, SigintInsideUpdate(at=-1, lr=1e-2))
    resumed.load_checkpoint(path)
    assert_same_state(state(resumed), state(interrupted))
    for trainer in (interrupted, resumed):
        trainer.fit(X, y, epochs=2, batch_size=8, verbose=0)
        trainer.train_step(X[:8], y[:8])
    assert_same_state(state(resumed), state(interrupted))


def test_resume_after_interrupt_at_epoch_end_matches_an_uninterrupted_run(backend_name, tmp_path):
    """Interrupted at an epoch boundary (Ctrl-C during the end-of-epoch callbacks), saved,
    resumed for the remaining epochs: bit for bit the run that was never interrupted,
    shuffling and dropout included. (A resume mid-epoch starts a new epoch, with a new
    shuffle, so only epoch boundaries can match an uninterrupted fit.)"""
    X, y = data()
    uninterrupted = make_trainer(backend_name)
    uninterrupted.fit(X, y, epochs=4, batch_size=8, verbose=0)

    class AfterEpoch(engine.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    interrupted = make_trainer(backend_name, callbacks=[AfterEpoch()])
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, y, epochs=4, batch_size=8, verbose=0)
    interrupted.save_checkpoint(tmp_path / "epoch2.npz")
    resumed = make_trainer(backend_name)
    resumed.load_checkpoint(tmp_path / "epoch2.npz")
    resumed.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert_same_state(state(resumed), state(uninterrupted))


# ---------------------------------------------------------------- determinism
_TRAIN_AND_REPORT = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    import engine
    backend = sys.argv[1]
    g = np.random.default_rng(0)
    X, y = g.normal(size=(300, 20)), g.integers(0, 4, 300)
    model = engine.MLP([20, 64, 32, 4], dropout=0.1, seed=11, backend=backend)
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=3e-3), clip_global_norm=1.0)
    trainer.fit(X, y, epochs=3, batch_size=32, validation_split=0.1, verbose=0)
    digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    print(json.dumps({"weights": digest, "iterations": trainer.step}))
""")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_same_seed_and_threads_give_identical_weights_in_two_processes(backend):
    """Two fresh processes, same seed and thread count: bit-identical weights (a hash of
    their bytes). Each process starts its own thread pools and allocator, so anything
    depending on timing or addresses would show here."""
    if backend not in engine.available_backends():
        pytest.skip(f"{backend} cannot run here")
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2",
               MKL_NUM_THREADS="2")
    reports = [subprocess.run([sys.executable, "-c", _TRAIN_AND_REPORT, backend], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300) for _ in range(2)]
    for report in reports:
        assert report.returncode == 0, report.stderr[-3000:]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in reports)
    assert first["iterations"] == 3 * 9  # 270 training rows in batches of 32
    assert first == second


# ------------------------------------------------------ numerical faults
HUGE = 1e30


@pytest.fixture(params=[pytest.param("reference"), *FAST_BACKENDS])
def kernels_module(request):
    """The reference, then each fast backend (cuda where a device answers)."""
    return load_backend(request.param)


def _huge_logits(dtype):
    return np.array([[HUGE, -HUGE, 0.0], [-HUGE, -HUGE, -HUGE], [HUGE, HUGE, -HUGE], [HUGE, 0.0, 0.0]], dtype)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", [spec.MEAN, spec.SUM, spec.NONE], ids=["mean", "sum", "none"])
def test_cross_entropy_finite_at_huge_logits(kernels_module, dtype, smoothing, reduction):
    """Logits of +-1e30 (finite in float32): each row's loss is its exact value, |z| sums
    of at most 2e30 * 3 (e.g. 2e30 when the target's logit is 1e30 below the largest), and
    the gradient p * sum(t) - t with p one-hot on the largest logits, all finite."""
    k = kernels_module
    logits, targets = _huge_logits(dtype), np.array([1, 0, 2, 0], np.int64)
    losses, grad = k.zeros(4, dtype), k.zeros((4, 3), dtype)
    value = k.softmax_cross_entropy(k.to_device(logits, dtype), k.to_device(targets, np.int64), smoothing,
                                    spec.NO_IGNORE, reduction, losses, grad)
    losses, grad = k.to_host(losses), k.to_host(grad)
    e, K = smoothing, 3
    # -log p_k = lse - z_k with lse = the row's max (the others' exp underflow to 0 next to it)
    # plus log(count of maxima); by hand per row:
    neg_log_p = np.array([[0.0, 2 * HUGE, HUGE], [np.log(3)] * 3, [np.log(2), np.log(2), 2 * HUGE],
                          [0.0, HUGE, HUGE]])
    onehot = np.eye(K)[targets]
    t = (1 - e) * onehot + e / K
    expected_losses = (t * neg_log_p).sum(axis=1)
    p = np.exp(-neg_log_p)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-6)
    if reduction != spec.NONE:
        total = expected_losses.sum() / (4 if reduction == spec.MEAN else 1)
        np.testing.assert_allclose(value, total, rtol=1e-6)
        assert np.isfinite(value)
    np.testing.assert_allclose(grad, (p - t) / (4 if reduction == spec.MEAN else 1), rtol=1e-6, atol=1e-7)
    assert np.isfinite(losses).all() and np.isfinite(grad).all()


def test_binary_cross_entropy_finite_at_huge_logits(kernels_module, dtype):
    """l = max(x, 0) - x t + log(1 + exp(-|x|)): at x = +-1e30 the last term is 0 and the
    loss is 1e30 times how wrong the target is; dl/dx = sigmoid(x) - t."""
    k = kernels_module
    x = np.array([[HUGE], [-HUGE], [HUGE], [-HUGE], [HUGE]], dtype)
    t = np.array([[0.0], [1.0], [1.0], [0.0], [0.25]], dtype)
    losses, grad = k.zeros((5, 1), dtype), k.zeros((5, 1), dtype)
    value = k.binary_cross_entropy(k.to_device(x, dtype), k.to_device(t, dtype), spec.SUM, losses, grad)
    expected = np.array([[HUGE], [HUGE], [0.0], [0.0], [0.75 * HUGE]])
    np.testing.assert_allclose(k.to_host(losses), expected, rtol=1e-6)
    np.testing.assert_allclose(value, expected.sum(), rtol=1e-6)
    np.testing.assert_allclose(k.to_host(grad), np.array([[1.0], [-1.0], [0.0], [0.0], [0.75]]), rtol=1e-6)


@pytest.mark.parametrize("loss, n_out, y", [("cross_entropy", 3, np.array([1, 0])),
                                            ("binary_cross_entropy", 1, np.array([0.0, 1.0]))])
def test_training_on_huge_logits_stays_finite(backend_name, dtype, loss, n_out, y):
    """A linear model whose logits are +-1e30: the loss is finite and so is the step (the
    gradient p - t is bounded), so the update is made, not refused as non-finite."""
    model = engine.MLP([1, n_out], seed=0, backend=backend_name, dtype=dtype)
    model.set_weights([np.array([[HUGE, -HUGE, 0.0][:n_out]]), np.zeros(n_out)])
    trainer = engine.Trainer(model, loss=loss, optimizer=engine.SGD(lr=1e-3))
    X = np.array([[1.0], [-1.0]])
    evaluated = trainer.evaluate(X, y)["loss"]
    assert np.isfinite(evaluated) and evaluated >= HUGE * 0.5  # one row is wrong by about 1e30
    loss_value = trainer.train_step(X, y)
    assert np.isfinite(loss_value) and trainer.step == 1
    assert all(np.isfinite(w).all() for w in model.get_weights())


# ---------------------------------------------------- skipped steps counted
def test_skipped_steps_are_counted_in_the_history(backend_name):
    """With on_nonfinite="skip", a batch whose gradient overflows is skipped and counted:
    history "skipped" per epoch and trainer.skipped_steps in all; good batches are made."""
    big = 0.3 * float(np.finfo(np.float32).max)
    model = engine.MLP([1, 1, 2], activation="identity", seed=0, backend=backend_name)
    model.set_weights([np.array([[big]]), np.zeros(1), np.array([[3.0 / big, -3.0 / big]]), np.zeros(2)])
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(reduction="sum"), optimizer=engine.SGD(lr=0.0),
                             on_nonfinite="skip")
    # Rows of 1 overflow dL/dW2 = sum of ~0.3 max (8 rows); rows of 1e-30 keep it small.
    X = np.concatenate([np.ones((8, 1)), np.full((8, 1), 1e-30), np.ones((8, 1))])
    y = np.ones(24, dtype=np.int64)
    history = trainer.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert history.history["skipped"] == [2, 2]
    assert trainer.skipped_steps == 4 and trainer.step == 2  # one good batch per epoch
    trainer.train_step(X[:8], y[:8])
    assert trainer.skipped_steps == 5 and trainer.step == 2


def test_raising_trainer_logs_no_skipped(backend_name):
    model = engine.MLP([N_IN, N_OUT], seed=0, backend=backend_name)
    X, y = data()
    history = engine.Trainer(model).fit(X, y, epochs=1, verbose=0)
    assert "skipped" not in history.history
