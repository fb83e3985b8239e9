"""Triangular and Warmup schedules, ReduceLROnPlateau (against torch), the "lr" the history
logs, and history.plot."""
import itertools
import sys

import numpy as np
import pytest

import engine
from engine.callbacks import LambdaCallback
from engine.schedules import Constant, CosineDecay, Scaled, StepDecay, Triangular, Warmup

# Schedules and callbacks are host code, the same on every backend: the reference suffices.
BACKEND = "numpy"


def classification(n=40, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.argmax(X @ rng.normal(size=(d, k)), axis=1)


def make_trainer(optimizer, callbacks=(), seed=0):
    model = engine.MLP([4, 8, 3], seed=seed, backend=BACKEND, dtype="float64")
    return engine.Trainer(model, optimizer=optimizer, callbacks=callbacks)


# ----------------------------------------------------------------------- Triangular
def test_triangular_rises_and_falls_linearly_over_half_cycles():
    schedule = Triangular(0.1, 0.5, 4)
    expected = [0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.4]
    assert [schedule(t) for t in range(len(expected))] == pytest.approx(expected, rel=1e-12)
    assert all(schedule(t) == pytest.approx(schedule(t + 8), rel=1e-12) for t in range(50))


@pytest.mark.parametrize("min_lr, max_lr, half_cycle", [(1e-3, 1e-2, 5), (0.0, 0.3, 1), (0.2, 0.2, 3),
                                                        (1e-4, 0.1, 7)])
def test_triangular_matches_torch_cycliclr(min_lr, max_lr, half_cycle):
    torch = pytest.importorskip("torch")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=min_lr)
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=min_lr, max_lr=max_lr,
                                                  step_size_up=half_cycle, mode="triangular", cycle_momentum=False)
    schedule = Triangular(min_lr, max_lr, half_cycle)
    for t in range(6 * half_cycle + 3):  # the rate of update t is the one torch holds before its t-th step
        assert schedule(t) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15), t
        optimizer.step()
        scheduler.step()


def test_triangular_drives_the_optimizer_and_is_logged():
    X, y = classification()
    schedule = Triangular(0.01, 0.1, 3)
    history = make_trainer(engine.SGD(lr=schedule)).fit(X, y, epochs=5, batch_size=10, verbose=0).history
    # 4 updates per epoch: epoch e logs the rate of its last update, 4e + 3
    assert history["lr"] == [schedule(4 * e + 3) for e in range(5)]
    assert len(set(history["lr"])) > 1


# --------------------------------------------------------------------------- Warmup
def test_warmup_ramps_linearly_then_starts_the_schedule_at_its_update_0():
    inner = StepDecay(0.8, step_size=2, gamma=0.5)
    schedule = Warmup(inner, 4)
    assert [schedule(t) for t in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8], rel=1e-12)
    assert [schedule(4 + t) for t in range(6)] == [inner(t) for t in range(6)]


@pytest.mark.parametrize("warmup", [1, 3, 10])
def test_warmup_in_front_of_cosine_equals_cosine_warmup_steps(warmup):
    wrapped = Warmup(CosineDecay(0.1, 20, min_lr=0.01), warmup)
    built_in = CosineDecay(0.1, 20, min_lr=0.01, warmup_steps=warmup)
    assert [wrapped(t) for t in range(40)] == pytest.approx([built_in(t) for t in range(40)], rel=1e-14)


def test_warmup_takes_a_number_or_any_callable_and_zero_steps():
    assert [Warmup(0.3, 3)(t) for t in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3], rel=1e-12)
    assert [Warmup(lambda t: 1.0 / (t + 1), 2)(t) for t in range(4)] == pytest.approx([0.5, 1.0, 1.0, 0.5])
    assert [Warmup(Constant(0.2), 0)(t) for t in range(3)] == [0.2, 0.2, 0.2]


@pytest.mark.parametrize("make, error, words", [
    (lambda: Triangular(0.2, 0.1, 4), ValueError, "max_lr"),
    (lambda: Triangular(-0.1, 0.1, 4), ValueError, "min_lr"),
    (lambda: Triangular(0.1, 0.2, 0), ValueError, "half_cycle"),
    (lambda: Triangular(0.1, 0.2, 2.5), TypeError, "half_cycle"),
    (lambda: Warmup("0.1", 3), TypeError, "schedule"),
    (lambda: Warmup(Constant(0.1), -1), ValueError, "steps"),
    (lambda: Warmup(Constant(0.1), 2.0), TypeError, "steps"),
    (lambda: Scaled(Constant(0.1), -0.5), ValueError, "scale"),
])
def test_schedule_arguments_are_checked(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("schedule", [Triangular(0.01, 0.2, 3), Warmup(StepDecay(0.1, 5, 0.5), 6)],
                         ids=["triangular", "warmup"])
def test_checkpoint_resumes_the_schedule_exactly(tmp_path, schedule):
    """The schedules are functions of the update count, which the checkpoint restores."""
    X, y = classification()
    straight = make_trainer(engine.SGD(lr=schedule, momentum=0.9))
    straight.fit(X, y, epochs=4, batch_size=8, verbose=0)
    first = make_trainer(engine.SGD(lr=schedule, momentum=0.9))
    first.fit(X, y, epochs=2, batch_size=8, verbose=0)
    first.save_checkpoint(tmp_path / "half.npz")
    resumed = make_trainer(engine.SGD(lr=schedule, momentum=0.9), seed=1)
    resumed.load_checkpoint(tmp_path / "half.npz")
    history = resumed.fit(X, y, epochs=2, batch_size=8, verbose=0).history
    assert history["lr"] == [schedule(5 * e + 4) for e in (2, 3)]
    for a, b in zip(straight.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------- logged "lr"
def test_lr_is_logged_every_epoch_and_may_be_monitored():
    X, y = classification()
    history = make_trainer(engine.AdamW(lr=3e-3)).fit(X, y, epochs=3, batch_size=16, validation_split=0.25,
                                                     verbose=0).history
    assert history["lr"] == [3e-3] * 3
    assert list(history)[-1] == "lr"
    stop = engine.EarlyStopping("lr", patience=0)  # lr never improves: stops after epoch 2
    assert len(make_trainer(engine.SGD(lr=0.1)).fit(X, y, epochs=5, verbose=0, callbacks=[stop]).epoch) == 2


# ---------------------------------------------------------------- ReduceLROnPlateau
def plateau_against_torch(values, **kwargs):
    """The rate after each epoch's step, from ReduceLROnPlateau fed ``values`` through a
    Trainer's optimizer (lr 1.0), and from torch's fed the same values."""
    torch = pytest.importorskip("torch")
    callback = engine.ReduceLROnPlateau(monitor="m", **kwargs)
    trainer = make_trainer(engine.SGD(lr=1.0))
    callback.trainer = trainer
    callback.on_train_begin()
    ours = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"m": value})
        ours.append(trainer.optimizer.learning_rate())

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    translated = {"threshold" if k == "min_delta" else k: v for k, v in kwargs.items()}
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **translated)
    theirs = []
    for value in values:
        scheduler.step(value)
        theirs.append(optimizer.param_groups[0]["lr"])
    return ours, theirs


FALLING_SLOWLY = [1.0, 0.9, 0.9, 0.89995, 0.9, 0.8, 0.85, 0.8, 0.79999, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.7,
                  float("nan"), 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(patience=0),
    dict(patience=1, factor=0.5),
    dict(patience=2, factor=0.5, cooldown=2),
    dict(patience=0, factor=0.3, min_lr=0.05),
    dict(patience=1, factor=0.5, min_delta=0.05),
    dict(patience=1, factor=0.5, min_delta=0.05, threshold_mode="abs"),
    dict(patience=0, factor=0.5, min_delta=0.0, cooldown=1),
], ids=lambda kwargs: ",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults")
def test_reduce_lr_on_plateau_follows_torch(kwargs):
    ours, theirs = plateau_against_torch(FALLING_SLOWLY, **kwargs)
    assert ours == theirs
    if kwargs:
        assert min(theirs) < 1.0, "premise: the sequence makes torch cut the rate"


@pytest.mark.parametrize("kwargs", [dict(patience=1, factor=0.5), dict(patience=0, min_delta=0.1, cooldown=1)])
def test_reduce_lr_on_plateau_max_mode_follows_torch(kwargs):
    rising = [0.5, 0.6, 0.6, 0.61, 0.605, 0.7, 0.7, 0.7, 0.75, 0.74, 0.74, 0.8, 0.8, 0.8]
    ours, theirs = plateau_against_torch(rising, mode="max", **kwargs)
    assert ours == theirs and min(theirs) < 1.0


def test_reduce_lr_on_plateau_in_fit_follows_torch_on_the_logged_losses():
    torch = pytest.importorskip("torch")
    X, y = classification()
    kwargs = dict(factor=0.5, patience=0, min_delta=0.2)  # demands 20% less loss every epoch
    plateau = engine.ReduceLROnPlateau("loss", **kwargs)
    history = make_trainer(engine.SGD(lr=0.2), callbacks=[plateau]).fit(X, y, epochs=8, batch_size=8,
                                                                       verbose=0).history
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.2)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, threshold=0.2)
    expected = [0.2]
    for loss in history["loss"][:-1]:  # a cut at the end of an epoch shows in the next one's "lr"
        scheduler.step(loss)
        expected.append(optimizer.param_groups[0]["lr"])
    assert history["lr"] == expected
    assert history["lr"][-1] < 0.2, "premise: the rate was cut"


def test_reduce_lr_on_plateau_changes_the_rate_the_updates_use():
    X, y = classification()
    # factor 0: the cut leaves rate 0, so the weights stop moving. The loss never falls by
    # 99% in an epoch: epoch 0 sets the best, epoch 1 is bad, and the cut follows it.
    plateau = engine.ReduceLROnPlateau("loss", factor=0.0, patience=0, min_delta=0.99)
    trainer = make_trainer(engine.SGD(lr=0.1), callbacks=[plateau])
    per_epoch = []
    recorder = LambdaCallback(on_epoch_end=lambda epoch, logs: per_epoch.append(trainer.model.get_weights()))
    history = trainer.fit(X, y, epochs=4, batch_size=8, verbose=0, callbacks=[recorder]).history
    assert history["lr"] == [0.1, 0.1, 0.0, 0.0]
    assert not np.array_equal(per_epoch[0][0], per_epoch[1][0])
    for later in per_epoch[2:]:
        for a, b in zip(per_epoch[1], later):
            np.testing.assert_array_equal(a, b)


def test_reduce_lr_on_plateau_multiplies_a_schedule():
    schedule = StepDecay(1.0, step_size=3, gamma=0.5)
    trainer = make_trainer(engine.SGD(lr=schedule))
    plateau = engine.ReduceLROnPlateau("m", factor=0.1, patience=0, min_lr=0.02)
    plateau.trainer = trainer
    trainer.optimizer.iterations = 4  # the next update is 4: rate schedule(4) = 0.5
    plateau.on_epoch_end(0, {"m": 1.0})
    plateau.on_epoch_end(1, {"m": 1.0})  # bad epoch: cut to 0.05
    assert trainer.optimizer.learning_rate() == pytest.approx(0.05, rel=1e-12)
    assert isinstance(trainer.optimizer.lr, Scaled) and trainer.optimizer.lr.schedule is schedule
    assert [trainer.optimizer.learning_rate(t) for t in range(4, 12)] == \
        pytest.approx([0.1 * schedule(t) for t in range(4, 12)], rel=1e-12)
    plateau.on_epoch_end(2, {"m": 1.0})  # cut again: 0.005 < min_lr, so min_lr at the cut
    assert trainer.optimizer.learning_rate() == pytest.approx(0.02, rel=1e-12)
    assert trainer.optimizer.learning_rate(6) == pytest.approx(0.04 * schedule(6), rel=1e-12)
    assert schedule(4) == 0.5  # the user's schedule is left as it was


def test_reduce_lr_on_plateau_state_carries_over_between_fits():
    X, y = classification()
    plateau = engine.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=0.99)
    trainer = make_trainer(engine.SGD(lr=0.1), callbacks=[plateau])
    lrs = [trainer.fit(X, y, epochs=1, verbose=0).history["lr"][0] for _ in range(5)]
    # best at epoch 0, bad epochs 1 and 2: the cut after epoch 2 shows from epoch 3
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])


def test_reduce_lr_on_plateau_monitor_is_checked_before_training():
    X, y = classification()
    trainer = make_trainer(engine.SGD(lr=0.1), callbacks=[engine.ReduceLROnPlateau()])
    with pytest.raises(ValueError, match="ReduceLROnPlateau monitors 'val_loss'.*validation"):
        trainer.fit(X, y, epochs=1, verbose=0)
    assert trainer.step == 0


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(factor=1.0), ValueError, "factor"),
    (dict(factor=-0.1), ValueError, "factor"),
    (dict(patience=-1), ValueError, "patience"),
    (dict(patience=1.5), TypeError, "patience"),
    (dict(min_delta=-1e-4), ValueError, "min_delta"),
    (dict(cooldown=-1), ValueError, "cooldown"),
    (dict(min_lr=-1.0), ValueError, "min_lr"),
    (dict(monitor=3), TypeError, "monitor"),
    (dict(mode="up"), ValueError, "mode"),
    (dict(threshold_mode="relative"), ValueError, "threshold_mode"),
])
def test_reduce_lr_on_plateau_arguments_are_checked(kwargs, error, words):
    with pytest.raises(error, match=words):
        engine.ReduceLROnPlateau(**kwargs)


def test_reduce_lr_on_plateau_defaults():
    plateau = engine.ReduceLROnPlateau()
    assert (plateau.monitor, plateau.factor, plateau.patience, plateau.min_delta, plateau.cooldown,
            plateau.min_lr) == ("val_loss", 0.1, 10, 1e-4, 0, 0.0)
    assert plateau.mode == "min" and engine.ReduceLROnPlateau("val_accuracy").mode == "max"


# ------------------------------------------------------------------- history.plot
@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


@pytest.fixture(scope="module")
def fitted_history():
    X, y = classification()
    return make_trainer(engine.AdamW(lr=0.01)).fit(X, y, epochs=4, batch_size=8, validation_split=0.25,
                                                   verbose=0)


def panels(figure):
    """[(title, [line labels])] of the figure's visible panels."""
    return [(ax.get_title(), [line.get_label() for line in ax.get_lines()]) for ax in figure.axes if ax.axison]


def test_plot_writes_a_png_with_a_panel_per_quantity(pyplot, fitted_history, tmp_path):
    path = tmp_path / "curves.png"
    figure = fitted_history.plot(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert panels(figure) == [("loss", ["loss", "val_loss"]), ("accuracy", ["accuracy", "val_accuracy"])]
    loss_line = figure.axes[0].get_lines()[1]
    assert list(loss_line.get_xdata()) == [1, 2, 3, 4]
    assert list(loss_line.get_ydata()) == fitted_history.history["val_loss"]


def test_plot_keys_choose_the_panels(pyplot, fitted_history):
    figure = fitted_history.plot(keys=["val_accuracy", "lr", "loss", "accuracy"])
    assert panels(figure) == [("accuracy", ["accuracy", "val_accuracy"]), ("lr", ["lr"]),
                              ("loss", ["loss", "val_loss"])]
    assert figure.axes[1].get_yscale() == "log"
    assert panels(fitted_history.plot(keys="loss")) == [("loss", ["loss", "val_loss"])]


def test_plot_without_validation_draws_training_curves_alone(pyplot):
    X, y = classification()
    history = make_trainer(engine.SGD(lr=0.1)).fit(X, y, epochs=2, verbose=0)
    assert panels(history.plot()) == [("loss", ["loss"]), ("accuracy", ["accuracy"])]


@pytest.mark.parametrize("keys, error, words", [
    (["loss", "nope"], ValueError, "'nope' not logged"),
    ([], ValueError, "keys"),
    (3, TypeError, "keys"),
    ([1], TypeError, "keys"),
])
def test_plot_checks_keys(pyplot, fitted_history, keys, error, words):
    with pytest.raises(error, match=words):
        fitted_history.plot(keys=keys)


def test_plot_of_an_empty_history_is_an_error(pyplot):
    with pytest.raises(ValueError, match="nothing logged"):
        engine.History().plot()


def test_plot_without_matplotlib_says_which_extra(monkeypatch, fitted_history):
    for name in ("matplotlib", "matplotlib.pyplot"):  # None in sys.modules: that import fails
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"fusedense\[plot\]"):
        fitted_history.plot()


def test_logged_rates_pair_with_epochs():
    X, y = classification()
    schedule = Warmup(Triangular(0.01, 0.05, 2), 3)
    history = make_trainer(engine.Adam(lr=schedule)).fit(X, y, epochs=3, batch_size=20, verbose=0).history
    assert history["lr"] == [schedule(t) for t in itertools.islice(itertools.count(1, 2), 3)]
