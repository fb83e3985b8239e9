"""Bad input (API.md "Bad input"): the right exception, a message naming the argument and the
offending value, and nothing half-updated; NonFiniteError during training."""
import copy
import re

import numpy as np
import pytest

import engine
from engine import validation

N_IN, N_OUT = 4, 3


def snapshot(trainer):
    """Everything a failed step must leave alone."""
    return {"weights": trainer.model.get_weights(), "state": copy.deepcopy(trainer.optimizer.state_dict()),
            "iterations": trainer.optimizer.iterations}


def assert_unchanged(trainer, before):
    after = snapshot(trainer)
    assert after["iterations"] == before["iterations"]
    for a, b in zip(after["weights"], before["weights"]):
        np.testing.assert_array_equal(a, b)
    assert after["state"]["iterations"] == before["state"]["iterations"]
    assert set(after["state"]["arrays"]) == set(before["state"]["arrays"])
    for name in before["state"]["arrays"]:
        np.testing.assert_array_equal(after["state"]["arrays"][name], before["state"]["arrays"][name])
    assert after["state"].get("scalars") == before["state"].get("scalars")


def assert_message(error, *parts):
    message = str(error.value)
    for part in parts:
        assert re.search(part, message), f"{part!r} not in the message {message!r}"


def good_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, N_IN)), np.arange(n) % N_OUT


@pytest.fixture
def trained(backend_name):
    """A cross-entropy trainer with AdamW after two good steps (non-trivial optimizer state)."""
    model = engine.MLP([N_IN, 6, N_OUT], dropout=0.2, seed=0, backend=backend_name)
    trainer = engine.Trainer(model, loss="cross_entropy", optimizer=engine.AdamW(lr=1e-2))
    X, y = good_data()
    trainer.train_step(X, y)
    trainer.train_step(X, y)
    return trainer


X8, Y8 = good_data()


def _with(array, index, value):
    array = np.array(array, dtype=np.float64)
    array[index] = value
    return array


# (id, xb, yb, exception, pattern of the argument named in the message)
# The targets are named "y" or "yb" (train_step's parameter is yb): both accepted.
Y_ARG = r"\byb?\b"
BAD_STEPS = [
    ("x_1d", np.ones(N_IN), Y8[:1], ValueError, r"\bxb\b"),
    ("x_3d", np.ones((8, N_IN, 1)), Y8, ValueError, r"\bxb\b"),
    ("x_columns", np.ones((8, N_IN + 1)), Y8, ValueError, r"\bxb\b"),
    ("x_too_few_columns", np.ones((8, N_IN - 1)), Y8, ValueError, r"\bxb\b"),
    ("y_rows", X8, Y8[:7], ValueError, Y_ARG),
    ("y_2d_wrong", X8, np.ones((8, N_OUT + 1)), ValueError, Y_ARG),
    ("y_3d", X8, np.ones((8, N_OUT, 1)), ValueError, Y_ARG),
    ("x_strings", np.full((8, N_IN), "1.0"), Y8, TypeError, r"\bxb\b"),
    ("x_complex", X8 + 1j, Y8, TypeError, r"\bxb\b"),
    ("x_object", X8.astype(object), Y8, TypeError, r"\bxb\b"),
    ("x_none", None, Y8, TypeError, r"\bxb\b"),
    ("x_ragged", [[1.0, 2.0], [1.0]], Y8[:2], TypeError, r"\bxb\b"),
    ("y_strings", X8, Y8.astype(str), TypeError, Y_ARG),
    ("y_complex", X8, Y8 + 0j, TypeError, Y_ARG),
    ("y_object", X8, Y8.astype(object), TypeError, Y_ARG),
    ("x_nan", _with(X8, (2, 1), np.nan), Y8, ValueError, r"\bxb\b"),
    ("x_inf", _with(X8, (0, 0), np.inf), Y8, ValueError, r"\bxb\b"),
    ("x_neg_inf", _with(X8, (7, 3), -np.inf), Y8, ValueError, r"\bxb\b"),
    ("y_nan", X8, _with(Y8, 3, np.nan), ValueError, Y_ARG),
    ("y_prob_nan", X8, _with(np.full((8, N_OUT), 1.0 / N_OUT), (1, 1), np.nan), ValueError, Y_ARG),
    ("y_class_too_big", X8, _with(Y8, 0, N_OUT).astype(np.int64), ValueError, Y_ARG),
    ("y_class_negative", X8, _with(Y8, 5, -1).astype(np.int64), ValueError, Y_ARG),
    ("x_empty", np.ones((0, N_IN)), np.zeros(0, dtype=np.int64), ValueError, r"\bxb\b"),
    ("y_empty", X8, np.zeros(0, dtype=np.int64), ValueError, Y_ARG),
]


@pytest.mark.parametrize("xb, yb, error, argument", [case[1:] for case in BAD_STEPS],
                         ids=[case[0] for case in BAD_STEPS])
def test_bad_train_step_changes_nothing(trained, xb, yb, error, argument):
    before = snapshot(trained)
    with pytest.raises(error, match=argument):
        trained.train_step(xb, yb)
    assert_unchanged(trained, before)
    X, y = good_data()  # and it still trains
    trained.train_step(X, y)
    assert trained.optimizer.iterations == before["iterations"] + 1


def test_fractional_class_indices(trained):
    before = snapshot(trained)
    with pytest.raises((TypeError, ValueError), match=Y_ARG):
        trained.train_step(X8, _with(Y8, 2, 0.5))
    assert_unchanged(trained, before)
    trained.train_step(X8, Y8.astype(np.float64))  # integral floats are class indices


def test_out_of_range_message_says_what_was_expected_and_given(trained):
    with pytest.raises(ValueError) as error:
        trained.train_step(X8, _with(Y8, 0, 7).astype(np.int64))
    assert_message(error, r"\by", str(N_OUT), "7")


def test_wrong_columns_message_says_expected_and_given(trained):
    with pytest.raises(ValueError) as error:
        trained.train_step(np.ones((8, 9)), Y8)
    assert_message(error, r"\bxb\b", str(N_IN), "9")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_inputs_overflowing_float32_are_bad_input(backend_name):
    model = engine.MLP([N_IN, 6, N_OUT], seed=0, backend=backend_name, dtype="float32")
    trainer = engine.Trainer(model)
    huge = _with(X8, (1, 1), 1e39)
    with pytest.raises(ValueError, match=r"\bX\b"):
        model.predict(huge)
    with pytest.raises(ValueError, match=r"\bX\b"):
        trainer.evaluate(huge, Y8)
    with pytest.raises(ValueError, match=r"\bxb\b"):
        trainer.train_step(huge, Y8)


# --------------------------------------------------------- other losses' targets
def test_mse_targets(backend_name):
    model = engine.MLP([N_IN, 5, 2], seed=0, backend=backend_name)
    trainer = engine.Trainer(model, loss="mse", optimizer=engine.Adam())
    trainer.train_step(X8, np.zeros((8, 2)))
    before = snapshot(trainer)
    for yb, error in ((np.zeros((8, 3)), ValueError), (np.zeros(8), ValueError), (np.zeros((7, 2)), ValueError),
                      (_with(np.zeros((8, 2)), (0, 0), np.inf), ValueError), (np.full((8, 2), "a"), TypeError)):
        with pytest.raises(error, match=Y_ARG):
            trainer.train_step(X8, yb)
        assert_unchanged(trainer, before)


def test_binary_cross_entropy_targets(backend_name):
    model = engine.MLP([N_IN, 5, 1], output="sigmoid", seed=0, backend=backend_name)
    trainer = engine.Trainer(model, loss="binary_cross_entropy", optimizer=engine.NAdam())
    trainer.train_step(X8, (np.arange(8) % 2).astype(float))
    before = snapshot(trainer)
    for yb in (np.full(8, 1.5), np.full(8, -0.1), np.zeros((8, 2)), np.zeros(7)):
        with pytest.raises(ValueError, match=Y_ARG):
            trainer.train_step(X8, yb)
        assert_unchanged(trainer, before)
    trainer.train_step(X8, np.full((8, 1), 0.3))  # probabilities, (N, 1)
    two_outputs = engine.Trainer(engine.MLP([N_IN, 2], backend=backend_name), loss="binary_cross_entropy")
    with pytest.raises(ValueError, match="output"):
        two_outputs.train_step(X8, np.zeros(8))


# ------------------------------------------------------ fit, evaluate, predict
@pytest.mark.parametrize("X, y, error, argument", [
    (np.ones(N_IN), Y8[:1], ValueError, r"\bX\b"),
    (np.ones((8, N_IN + 2)), Y8, ValueError, r"\bX\b"),
    (_with(X8, (3, 3), np.nan), Y8, ValueError, r"\bX\b"),
    (X8.astype(str), Y8, TypeError, r"\bX\b"),
    (np.ones((0, N_IN)), np.zeros(0, dtype=int), ValueError, r"\bX\b"),
    (X8, Y8[:5], ValueError, r"\by\b"),
    (X8, _with(Y8, 1, 3).astype(int), ValueError, r"\by\b"),
    (X8, _with(Y8, 1, np.inf), ValueError, r"\by\b"),
    (X8, Y8 + 0j, TypeError, r"\by\b"),
], ids=["x_1d", "x_columns", "x_nan", "x_str", "empty", "y_rows", "y_range", "y_inf", "y_complex"])
def test_bad_fit_and_evaluate(trained, X, y, error, argument):
    before = snapshot(trained)
    with pytest.raises(error, match=argument):
        trained.fit(X, y, epochs=1, verbose=0)
    assert_unchanged(trained, before)
    with pytest.raises(error, match=argument):
        trained.evaluate(X, y)
    assert_unchanged(trained, before)


@pytest.mark.parametrize("kwargs, error, argument", [
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(epochs=1.5), TypeError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(validation_split=1.0), ValueError, "validation_split"),
    (dict(validation_split=-0.1), ValueError, "validation_split"),
    (dict(validation_split=0.01), ValueError, "validation_split"),  # 8 rows: nothing left to validate on
    (dict(verbose=5), ValueError, "verbose"),
    (dict(validation_data=(X8[:, :2], Y8)), ValueError, r"validation_data"),
    (dict(validation_data=X8), TypeError, "validation_data"),
    (dict(validation_data=(_with(X8, (0, 0), np.nan), Y8)), ValueError, r"validation_data"),
], ids=["epochs_neg", "epochs_float", "batch_size", "split_1", "split_neg", "split_tiny", "verbose",
        "val_columns", "val_not_pair", "val_nan"])
def test_bad_fit_arguments_change_nothing(trained, kwargs, error, argument):
    before = snapshot(trained)
    with pytest.raises(error, match=argument):
        trained.fit(X8, Y8, **{"epochs": 1, "verbose": 0, **kwargs})
    assert_unchanged(trained, before)


def test_bad_validation_targets_named(trained):
    with pytest.raises(ValueError, match=r"validation_data"):
        trained.fit(X8, Y8, epochs=1, verbose=0, validation_data=(X8, _with(Y8, 0, 9).astype(int)))


def test_bad_validation_targets_change_nothing(trained):
    before = snapshot(trained)
    with pytest.raises(ValueError):
        trained.fit(X8, Y8, epochs=1, verbose=0, validation_data=(X8, _with(Y8, 0, 9).astype(int)))
    assert_unchanged(trained, before)


@pytest.mark.parametrize("X, error", [
    (np.ones(N_IN), ValueError), (np.ones((2, N_IN + 1)), ValueError), (np.ones((0, N_IN)), ValueError),
    (_with(X8, (0, 2), np.nan), ValueError), (_with(X8, (0, 2), -np.inf), ValueError),
    (np.full((2, N_IN), "x"), TypeError), (X8 * 1j, TypeError), (X8.astype(object), TypeError),
])
def test_bad_predict(X, error, backend_name):
    model = engine.MLP([N_IN, 5, N_OUT], seed=0, backend=backend_name)
    with pytest.raises(error, match=r"\bX\b"):
        model.predict(X)


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_bad_batch_size(batch_size, error, trained):
    with pytest.raises(error, match="batch_size"):
        trained.model.predict(X8, batch_size=batch_size)
    with pytest.raises(error, match="batch_size"):
        trained.evaluate(X8, Y8, batch_size=batch_size)


# ----------------------------------------------------------------- unknown names
UNKNOWN_NAMES = [
    ("activation", lambda b: engine.MLP([3, 4, 2], activation="swish2", backend=b)),
    ("activation", lambda b: engine.MLP([3, 4, 4, 2], activation=["relu", "swish2"], backend=b)),
    ("output", lambda b: engine.MLP([3, 2], output="swish2", backend=b)),
    ("init", lambda b: engine.MLP([3, 2], init="swish2", backend=b)),
    ("bias_init", lambda b: engine.MLP([3, 2], bias_init="swish2", backend=b)),
    ("backend", lambda b: engine.MLP([3, 2], backend="swish2")),
    ("dtype", lambda b: engine.MLP([3, 2], dtype="swish2", backend=b)),
    ("loss", lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), loss="swish2")),
    ("optimizer", lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), optimizer="swish2")),
    ("metric", lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), metrics=("accuracy", "swish2"))),
    ("metric", lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), metrics="swish2")),
    ("reduction", lambda b: engine.MSE(reduction="swish2")),
    ("reduction", lambda b: engine.Huber(reduction="swish2")),
    ("reduction", lambda b: engine.SoftmaxCrossEntropy(reduction="swish2")),
    ("reduction", lambda b: engine.BinaryCrossEntropy(reduction="swish2")),
    ("on_nonfinite", lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), on_nonfinite="swish2")),
]


@pytest.mark.parametrize("argument, make", UNKNOWN_NAMES, ids=[f"{a}{i}" for i, (a, _) in enumerate(UNKNOWN_NAMES)])
def test_unknown_names(argument, make, backend_name):
    with pytest.raises(ValueError) as error:
        make(backend_name)
    # names the argument ("metrics" for the metric), what was given, and what was expected
    assert_message(error, argument, "swish2")
    expected_choice = {"activation": "relu", "output": "softmax", "init": "glorot_uniform", "bias_init": "zeros",
                       "backend": "numpy", "dtype": "float32", "loss": "cross_entropy", "optimizer": "adamw",
                       "metric": "accuracy", "reduction": "mean", "on_nonfinite": "raise"}[argument]
    assert_message(error, expected_choice)


def test_unknown_backend_in_set_backend(monkeypatch):
    from engine import backend as backend_module
    monkeypatch.setattr(backend_module, "_selected", backend_module._selected)
    with pytest.raises(ValueError) as error:
        engine.set_backend("swish2")
    assert_message(error, "backend", "swish2")


@pytest.mark.parametrize("make, error, argument", [
    (lambda b: engine.MLP([3, 4, 2], activation=3, backend=b), TypeError, "activation"),
    (lambda b: engine.MLP([3, 4, 4, 2], activation=["relu"], backend=b), ValueError, "activation"),
    (lambda b: engine.MLP([3], backend=b), ValueError, "sizes"),
    (lambda b: engine.MLP([3, 0, 2], backend=b), ValueError, "sizes"),
    (lambda b: engine.MLP([3, 2.5, 2], backend=b), TypeError, "sizes"),
    (lambda b: engine.MLP("34", backend=b), TypeError, "sizes"),
    (lambda b: engine.MLP([3, 2], seed=-1, backend=b), ValueError, "seed"),
    (lambda b: engine.MLP([3, 2], seed="a", backend=b), TypeError, "seed"),
    (lambda b: engine.Trainer("model"), TypeError, "model"),
    (lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), clip_value=0.0), ValueError, "clip_value"),
    (lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), clip_norm=-1.0), ValueError, "clip_norm"),
    (lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), clip_global_norm=-1.0), ValueError,
     "clip_global_norm"),
    (lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), callbacks=[print]), TypeError, "callbacks"),
    (lambda b: engine.Trainer(engine.MLP([3, 2], backend=b), loss=engine.MSE(reduction="none")), ValueError,
     "reduction"),
    (lambda b: engine.SGD(lr=-0.1), ValueError, "lr"),
    (lambda b: engine.AdamW(lr="fast"), TypeError, "lr"),
    (lambda b: engine.Adam(betas=(0.9, 1.0)), ValueError, "betas"),
    (lambda b: engine.Adam(betas=0.9), TypeError, "betas"),
    (lambda b: engine.AdamW(weight_decay=-1.0), ValueError, "weight_decay"),
    (lambda b: engine.RMSprop(momentum=-0.5), ValueError, "momentum"),
    (lambda b: engine.SGD(lr=0.1, decay_bias="no"), TypeError, "decay_bias"),
    (lambda b: engine.Huber(delta=0.0), ValueError, "delta"),
    (lambda b: engine.SoftmaxCrossEntropy(label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda b: engine.EarlyStopping(patience=-1), ValueError, "patience"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_constructor_arguments(make, error, argument, backend_name):
    with pytest.raises(error, match=argument):
        make(backend_name)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, float("nan"), [0.2, 1.0], [0.2]])
def test_dropout_outside_unit_interval(dropout, backend_name):
    with pytest.raises(ValueError, match="dropout"):
        engine.MLP([3, 4, 4, 2], dropout=dropout, backend=backend_name)


@pytest.mark.parametrize("dropout", [0.0, 0.999, [0.0, 0.5]])
def test_dropout_inside_unit_interval_accepted(dropout, backend_name):
    assert engine.MLP([3, 4, 4, 2], dropout=dropout, backend=backend_name) is not None


def test_lr_schedule_returning_bad_value_changes_nothing(backend_name):
    model = engine.MLP([N_IN, 5, N_OUT], seed=0, backend=backend_name)
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=lambda s: 0.1 if s == 0 else float("nan")))
    trainer.train_step(X8, Y8)
    before = snapshot(trainer)
    with pytest.raises(ValueError, match="lr"):
        trainer.train_step(X8, Y8)
    assert_unchanged(trainer, before)


# ------------------------------------------------------------- NonFiniteError
# These tests overflow on purpose: NumPy's RuntimeWarnings are expected there.
overflows = pytest.mark.filterwarnings("ignore::RuntimeWarning")
def _step_pattern(trainer):
    """The failing update named either by its 0-based index (as lr schedules count) or 1-based."""
    i = trainer.optimizer.iterations
    return rf"\bstep\D{{0,3}}({i}|{i + 1})\b"


def _huge(dtype):
    return 0.3 * float(np.finfo(dtype).max)


@overflows
def test_loss_overflow_raises_non_finite(backend_name, dtype):
    model = engine.MLP([N_IN, 5, 2], seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, loss="mse", optimizer=engine.AdamW(lr=1e-2))
    y = np.zeros((8, 2))
    trainer.train_step(X8, y)
    trainer.train_step(X8, y)
    weights = trainer.model.get_weights()
    # finite (max^0.75: 1.5e29 in float32), but the logits' squared error is ~max^1.5: overflows
    weights[0] = np.full(weights[0].shape, float(np.finfo(dtype).max) ** 0.75)
    model.set_weights(weights)
    before = snapshot(trainer)
    with pytest.raises(engine.NonFiniteError, match=_step_pattern(trainer)) as error:
        trainer.train_step(X8, y)
    assert isinstance(error.value, FloatingPointError)
    assert_unchanged(trainer, before)
    with pytest.raises(engine.NonFiniteError):
        trainer.fit(X8, y, epochs=1, verbose=0)
    assert_unchanged(trainer, before)


@overflows
def test_huge_inputs_raise_non_finite(backend_name, dtype):
    model = engine.MLP([N_IN, 5, 2], seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, loss="mse", optimizer=engine.RMSprop())
    trainer.train_step(X8, np.zeros((8, 2)))
    before = snapshot(trainer)
    huge = X8 * float(np.finfo(dtype).max) ** 0.75  # finite in the model's dtype; its square is not
    with pytest.raises(engine.NonFiniteError, match=_step_pattern(trainer)):
        trainer.train_step(huge, np.zeros((8, 2)))
    assert_unchanged(trainer, before)


@overflows
@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_nan_loss_with_finite_gradient(on_nonfinite, backend_name, dtype):
    """Every target ignored: torch's mean cross-entropy is 0/0 = NaN while the gradient is
    zero, so only the loss check can see it."""
    model = engine.MLP([N_IN, 5, N_OUT], seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(ignore_index=-100),
                             optimizer=engine.SGD(lr=0.1, weight_decay=0.1), on_nonfinite=on_nonfinite)
    trainer.train_step(X8, Y8)
    before = snapshot(trainer)
    ignored = np.full(8, -100)
    if on_nonfinite == "raise":
        with pytest.raises(engine.NonFiniteError, match=_step_pattern(trainer)):
            trainer.train_step(X8, ignored)
    else:
        trainer.train_step(X8, ignored)
    assert_unchanged(trainer, before)  # weight decay alone would have moved the weights


def _gradient_overflow_model(backend_name, dtype):
    """Hidden activations near the dtype's max and tiny output weights: logits about +-3, a
    finite summed loss, but dL/dW2 = sum over 8 rows of ~0.3 max overflows."""
    model = engine.MLP([1, 1, 2], activation="identity", seed=0, backend=backend_name, dtype=dtype)
    big = _huge(dtype)
    model.set_weights([np.array([[big]]), np.zeros(1), np.array([[3.0 / big, -3.0 / big]]), np.zeros(2)])
    return model


@overflows
def test_gradient_overflow_with_finite_loss_raises_non_finite(backend_name, dtype):
    model = _gradient_overflow_model(backend_name, dtype)
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(reduction="sum"), optimizer=engine.Adam())
    X, y = np.ones((8, 1)), np.ones(8, dtype=np.int64)
    assert np.isfinite(trainer.evaluate(X, y)["loss"])  # premise: the loss itself is finite
    before = snapshot(trainer)
    with pytest.raises(engine.NonFiniteError, match=_step_pattern(trainer)):
        trainer.train_step(X, y)
    assert_unchanged(trainer, before)


@overflows
def test_huge_learning_rate_raises_non_finite(backend_name, dtype):
    model = engine.MLP([N_IN, 5, 2], seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, loss="mse", optimizer=engine.SGD(lr=np.sqrt(_huge(dtype)) / 1e3))
    y = np.ones((8, 2))
    for _ in range(5):
        before = snapshot(trainer)
        try:
            trainer.train_step(X8, y)
        except engine.NonFiniteError as error:
            assert re.search(_step_pattern(trainer), str(error)), str(error)
            break
    else:
        pytest.fail("five steps with lr ~ sqrt(max) never raised NonFiniteError")
    assert trainer.optimizer.iterations >= 1
    assert_unchanged(trainer, before)


@overflows
def test_on_nonfinite_skip(backend_name, dtype):
    model = _gradient_overflow_model(backend_name, dtype)
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(reduction="sum"), optimizer=engine.AdamW(),
                             on_nonfinite="skip")
    X, y = np.ones((8, 1)), np.ones(8, dtype=np.int64)
    before = snapshot(trainer)
    trainer.train_step(X, y)  # skipped, no exception
    assert_unchanged(trainer, before)
    trainer.fit(X, y, epochs=2, batch_size=4, verbose=0)  # every step skipped
    assert_unchanged(trainer, before)

    model.set_weights([np.ones((1, 1)), np.zeros(1), np.array([[0.5, -0.5]]), np.zeros(2)])
    trainer.train_step(X, y)  # a good step is taken
    assert trainer.optimizer.iterations == 1
    assert not np.array_equal(model.get_weights()[0], np.ones((1, 1)))


# Below the threshold each element is looked at; above it the sum is, then the elements
# only when the sum is not finite.
FINITE_CHECK_SIZES = [1, 7, validation._ELEMENTWISE_MAX, validation._ELEMENTWISE_MAX + 3]


@pytest.mark.parametrize("size", FINITE_CHECK_SIZES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_finite_check_counts_the_bad_elements_and_names_the_first(size, bad, dtype):
    x = np.ones(size, dtype)
    x[size // 2] = x[-1] = bad
    count = len({size // 2, size - 1})
    with pytest.raises(ValueError, match=rf"^X must be finite in {np.dtype(dtype).name}; got NaN or Inf at "
                                         rf"{count} element\(s\), the first at flat index {size // 2}$"):
        validation.check_finite(x, "X")


@pytest.mark.parametrize("size", FINITE_CHECK_SIZES)
def test_finite_values_whose_sum_overflows_pass_the_check_silently(size, recwarn):
    x = np.full(size, np.finfo(np.float32).max, np.float32)
    x[::2] *= -1  # and inf - inf where the sum's halves overflow both ways
    validation.check_finite(x, "X")
    validation.check_finite(x.reshape(1, -1)[:, ::-1], "X")  # not contiguous
    assert not recwarn.list
