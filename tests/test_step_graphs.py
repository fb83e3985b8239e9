"""A step's recorded part (engine.step_graphs): replays give the same training as op by op.

Without a GPU, the graph semantics are those of :class:`RecordingBackend`: the numba
backend whose ``capture`` records each op call (name and arguments, none run) and whose
replay calls them again with exactly those arguments, as a CUDA graph does; an
allocation while recording is refused as on a GPU. A step whose arguments change from
replay to replay (a scalar baked into the recording) then trains differently from the
op-by-op step of the same model, which these tests compare bit for bit. On a GPU the
same comparison runs with CuPy's real graphs (marked gpu).
"""
import warnings

import numpy as np
import pytest
from conftest import load_backend

import engine
from engine import backend as backend_module
from engine.optim import SGD, AdamW

ALLOCATING = ("empty", "zeros", "to_device")


class RecordingBackend:
    """kernels.cpu with graphs: ``capture`` records the ops its work calls and returns
    their replay (counted in ``replays``)."""

    def __init__(self, module):
        self._module = module
        self._recording = None
        self.replays = 0
        self.recordings = 0

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            if self._recording is None:
                return value(*args, **kwargs)
            if name in ALLOCATING:
                self._recording.append(None)  # a device would hand memory the graph cannot keep
                return value(*args, **kwargs)
            if name in ("to_host", "capture"):
                raise RuntimeError(f"{name} while recording a graph")
            self._recording.append((value, args, kwargs))
            return None
        return call

    def capture(self, work):
        self._recording = calls = []
        try:
            work()
        finally:
            self._recording = None
        if None in calls:
            warnings.warn("recording allocated", RuntimeWarning)
            return None
        self.recordings += 1

        def replay():
            self.replays += 1
            for function, args, kwargs in calls:
                function(*args, **kwargs)
        return replay


def _data(n=200, features=7, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)).astype(np.float32), rng.integers(0, classes, n)


def _trainer(recording, dropout=0.0, optimizer=None, **kwargs):
    model = engine.MLP([7, 16, 12, 3], dropout=dropout, seed=3, backend="numba")
    if recording:
        model._k = RecordingBackend(model._k)
    return engine.Trainer(model, optimizer=optimizer or AdamW(lr=1e-2), **kwargs)


def _weights(trainer):
    return trainer.model.get_weights()


def _assert_same(a, b):
    for i, (wa, wb) in enumerate(zip(_weights(a), _weights(b))):
        np.testing.assert_array_equal(wa, wb, err_msg=f"parameter {i}")


def _train(trainer, X, y):
    """fit with shuffling (a last partial batch), fit in order, then train_step: the three
    ways a step gets its batch."""
    trainer.fit(X, y, epochs=2, batch_size=32, verbose=0)
    trainer.fit(X, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    return [trainer.train_step(X[i:i + 16], y[i:i + 16]) for i in range(0, 96, 16)]


def test_replayed_steps_train_as_op_by_op():
    X, y = _data()
    eager, graphed = _trainer(False), _trainer(True)
    losses = _train(eager, X, y)
    assert _train(graphed, X, y) == losses
    _assert_same(eager, graphed)
    k = graphed.model._k
    # Batch shapes 32, 8 (200 = 6 x 32 + 8 = 3 x 64 + 8), 64 and 16 are recorded once each,
    # and every step of a shape after its first (op by op) replays.
    assert k.recordings == 4
    assert k.replays == (2 * 6 - 1) + (2 * 1 - 1) + (3 - 1) + 1 + (6 - 1)


def test_settings_changed_between_steps_record_again():
    """freeze, clip_value and the loss are baked into a recording: changing one records anew."""
    X, y = _data()
    runs = []
    for recording in (False, True):
        trainer = _trainer(recording, optimizer=SGD(lr=0.05, momentum=0.9))
        trainer.fit(X, y, epochs=1, batch_size=40, verbose=0)
        trainer.clip_value = 0.01
        trainer.fit(X, y, epochs=1, batch_size=40, verbose=0)
        trainer.model.freeze(1)
        trainer.fit(X, y, epochs=1, batch_size=40, verbose=0)
        trainer.loss = engine.SoftmaxCrossEntropy(label_smoothing=0.2)
        trainer.fit(X, y, epochs=1, batch_size=40, verbose=0)
        runs.append(trainer)
    _assert_same(*runs)
    assert runs[1].model._k.recordings == 4


def test_dropout_and_diagnostics_steps_are_not_recorded():
    """Dropout keys change every step and diagnostics buffers every epoch: op by op."""
    X, y = _data()
    eager, graphed = _trainer(False, dropout=0.3), _trainer(True, dropout=0.3)
    for trainer in (eager, graphed):
        trainer.fit(X, y, epochs=2, batch_size=32, verbose=0)
    _assert_same(eager, graphed)
    assert graphed.model._k.recordings == 0

    diagnosed = _trainer(True)
    diagnosed.fit(X, y, epochs=2, batch_size=32, verbose=0, diagnostics=True)
    assert diagnosed.model._k.recordings == 0


def test_a_recording_that_allocates_is_not_replayed():
    """A step whose recording allocates (here: a new workspace, its batch size evicted by
    others in between) is refused with a warning and runs op by op, still right."""
    X, y = _data()
    trainer = _trainer(True)
    eager = _trainer(False)
    model = trainer.model
    for t in (trainer, eager):
        t.train_step(X[:10], y[:10])  # the first step of shape 10: op by op
    for n in (11, 12, 13, 14):  # model._workspace keeps 4 batch sizes: 10's is evicted
        model.predict(X[:n])
    with pytest.warns(RuntimeWarning, match="allocated"):
        trainer.train_step(X[:10], y[:10])
    eager.train_step(X[:10], y[:10])
    trainer.train_step(X[:10], y[:10])
    eager.train_step(X[:10], y[:10])
    _assert_same(eager, trainer)
    assert model._k.replays == 0


def _evict_and_train(trainer, X, y):
    """Steps of batch size 10, recorded at the second; then the model lets that size's
    buffers go (it keeps 4 batch sizes') and makes new ones, and steps of 10 go on."""
    losses = [trainer.train_step(X[:10], y[:10]) for _ in range(2)]
    for n in (11, 12, 13, 14):
        trainer.model.predict(X[:n])
    losses += [trainer.train_step(X[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)]
    return losses


def test_a_batch_size_whose_buffers_the_model_let_go_is_recorded_again():
    """A recording writes the buffers it was recorded with; once the model has new ones
    for that batch size, the step is recorded again into them, and trains as op by op."""
    X, y = _data()
    eager, graphed = _trainer(False), _trainer(True)
    assert _evict_and_train(eager, X, y) == _evict_and_train(graphed, X, y)
    _assert_same(eager, graphed)
    assert graphed.model._k.recordings == 2  # once before the eviction, once after
    assert graphed.model._k.replays == 5  # every step but the first


@pytest.mark.gpu
def test_cuda_graph_steps_after_an_eviction_train_as_op_by_op(monkeypatch):
    """On a GPU, where a graph replayed into buffers CuPy's pool had taken back would write
    into whatever arrays got that memory next."""
    cuda = load_backend("cuda")
    X, y = _data()

    def run():
        trainer = engine.Trainer(engine.MLP([7, 16, 12, 3], seed=3, backend="cupy"), optimizer=AdamW(lr=1e-2))
        return trainer, _evict_and_train(trainer, X, y)

    graphed, graphed_losses = run()
    monkeypatch.setattr(cuda, "capture", lambda work: None)
    eager, eager_losses = run()
    assert graphed_losses == eager_losses
    _assert_same(eager, graphed)


def test_cpu_backends_record_nothing():
    """kernels.spec.Backend.capture: None where a backend has no graphs."""
    for name in ("numpy", "numba"):
        k = backend_module.module(name)
        assert k.capture(lambda: pytest.fail("capture must not run the work")) is None


@pytest.mark.gpu
def test_cuda_graph_steps_train_as_op_by_op(monkeypatch):
    """On a GPU: the same training with CuPy's graphs and with capture disabled (every step
    op by op), bit for bit: the same kernels on the same data."""
    cuda = load_backend("cuda")
    X, y = _data()

    def run():
        model = engine.MLP([7, 16, 12, 3], seed=3, backend="cupy")
        trainer = engine.Trainer(model, optimizer=AdamW(lr=1e-2))
        return trainer, _train(trainer, X, y)

    graphed, graphed_losses = run()
    assert any(r is not None for r in graphed._graphs._recordings.values()), "no step was recorded"
    monkeypatch.setattr(cuda, "capture", lambda work: None)
    eager, eager_losses = run()
    assert graphed_losses == eager_losses
    _assert_same(eager, graphed)


def test_weighted_mixup_and_noise_steps_train_as_op_by_op():
    """Row weights are an input buffer of the recording (the shuffled batch's own, or a
    copy), and mixup and noise run before it with new draws at every step: bit for bit
    the training of op by op, the steps still replayed."""
    X, y = _data()
    weights = np.random.default_rng(4).uniform(0.0, 3.0, len(X))
    runs = []
    for recording in (False, True):
        trainer = _trainer(recording)
        trainer.fit(X, y, epochs=2, batch_size=32, verbose=0, sample_weight=weights)
        trainer.fit(X, y, epochs=1, batch_size=64, shuffle=False, verbose=0, class_weight={0: 2.0, 2: 0.5})
        history = trainer.fit(X, y, epochs=2, batch_size=32, verbose=0, sample_weight=weights, mixup=0.4,
                              input_noise=0.3)
        runs.append((trainer, history.history["loss"]))
    (eager, eager_losses), (graphed, graphed_losses) = runs
    assert graphed_losses == eager_losses
    _assert_same(eager, graphed)
    k = graphed.model._k
    # weighted shapes 32 and 8 from the batch buffers, 64 and 8 (the same recording) in
    # order, then 32 and 8 mixed (y as distributions): 5 recordings; every step of a shape
    # after its first replays
    assert k.recordings == 5
    assert k.replays == (2 * 6 - 1) + (2 - 1) + (3 - 1) + 1 + (2 * 6 - 1) + (2 - 1)
