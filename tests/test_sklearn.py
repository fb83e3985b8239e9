"""engine.sklearn: scikit-learn's own estimator checks, pipelines and grid searches, pickling,
label handling, multilabel and multi-output targets, partial_fit, the stopping rule and
the l2 formula, and accuracy next to scikit-learn's MLPClassifier on the same splits."""
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_breast_cancer, load_digits, make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as ScikitMLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import get_tags  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

import engine  # noqa: E402
from engine.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Small and quick, yet enough to pass the checks' accuracy bars (0.83 on blobs, R^2 0.5).
FAST = dict(hidden_layer_sizes=(16,), epochs=50, learning_rate=1e-2, backend="numba")
quiet_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@quiet_convergence
@parametrize_with_checks([MLPClassifier(**FAST), MLPRegressor(**FAST)])
def test_scikit_learn_estimator_checks(estimator, check):
    # Every check passes: no expected_failed_checks.
    check(estimator)


def test_tags_declare_multilabel_and_multioutput():
    assert get_tags(MLPClassifier()).classifier_tags.multi_label
    assert get_tags(MLPRegressor()).target_tags.multi_output
    assert not get_tags(MLPClassifier()).target_tags.multi_output


# ------------------------------------------------------------------ data
def scaled_split(loader):
    """The comparison's split: a quarter held out, stratified, standardized on the training rows."""
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


@pytest.fixture(scope="module")
def digits():
    return scaled_split(load_digits)


# ----------------------------------------------------- ecosystem and parity
def test_pipeline_in_grid_search_on_digits():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(epochs=20, backend="numba", random_state=0))
    grid = {"mlpclassifier__hidden_layer_sizes": [(32,), (64,)], "mlpclassifier__learning_rate": [1e-3, 3e-3]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_score_ > 0.9
    assert search.score(X_test, y_test) > 0.9


@quiet_convergence
@pytest.mark.parametrize("loader", [load_breast_cancer, load_digits], ids=["breast_cancer", "digits"])
def test_accuracy_matches_scikit_learns_mlp(loader):
    X_train, X_test, y_train, y_test = scaled_split(loader)
    epochs = 30  # both run every epoch: no stopping rule (n_iter_no_change = epochs), no L2
    ours = MLPClassifier(hidden_layer_sizes=(100,), optimizer="adam", learning_rate=1e-3, batch_size=32,
                         epochs=epochs, n_iter_no_change=epochs, backend="numba", random_state=0)
    theirs = ScikitMLPClassifier(hidden_layer_sizes=(100,), solver="adam", learning_rate_init=1e-3, batch_size=32,
                                 alpha=0.0, max_iter=epochs, n_iter_no_change=epochs, random_state=0)
    ours_accuracy = ours.fit(X_train, y_train).score(X_test, y_test)
    theirs_accuracy = theirs.fit(X_train, y_train).score(X_test, y_test)
    assert ours.n_iter_ == theirs.n_iter_ == epochs
    assert ours_accuracy > 0.93
    assert abs(ours_accuracy - theirs_accuracy) <= 0.03, (ours_accuracy, theirs_accuracy)


# ----------------------------------------------------------------- labels
@quiet_convergence
def test_string_labels_train_as_their_sorted_codes(digits):
    X_train, X_test, y_train, _ = digits
    # "digit_0" < ... < "digit_9" sorts as 0..9: the same codes, so the same training.
    names = np.array([f"digit_{k}" for k in range(10)])
    as_ints = MLPClassifier(hidden_layer_sizes=(32,), epochs=5, backend="numba", random_state=3).fit(X_train, y_train)
    as_strings = MLPClassifier(hidden_layer_sizes=(32,), epochs=5, backend="numba", random_state=3)
    as_strings.fit(X_train, names[y_train])
    assert list(as_strings.classes_) == list(names)
    predicted = as_strings.predict(X_test)
    assert set(predicted) <= set(names)
    np.testing.assert_array_equal(predicted, names[as_ints.predict(X_test)])


@quiet_convergence
@pytest.mark.parametrize("relabel", [lambda y: y.astype(bool), lambda y: np.where(y == 1, 7, -3),
                                     lambda y: np.where(y == 1, "benign", "malignant").astype(object)],
                         ids=["bool", "ints", "object-strings"])
def test_binary_labels_of_any_type_round_trip(relabel):
    X_train, X_test, y_train, y_test = scaled_split(load_breast_cancer)
    clf = MLPClassifier(hidden_layer_sizes=(16,), epochs=20, backend="numba", random_state=0)
    clf.fit(X_train, relabel(y_train))
    assert list(clf.classes_) == sorted(set(relabel(y_train)))
    predicted = clf.predict(X_test)
    assert set(predicted) <= set(clf.classes_)
    assert clf.score(X_test, relabel(y_test)) > 0.9
    probabilities = clf.predict_proba(X_test)
    assert probabilities.shape == (len(X_test), 2)  # binary: two softmax outputs
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_one_class_is_rejected():
    with pytest.raises(ValueError, match="one class"):
        MLPClassifier(epochs=1, backend="numba").fit(np.ones((5, 2)), np.full(5, "only"))


def test_continuous_targets_are_not_labels():
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier(epochs=1, backend="numba").fit(np.ones((5, 2)), np.linspace(0, 1, 5))


# ------------------------------------------------------------- multilabel
@quiet_convergence
def test_multilabel_indicator_targets():
    X, Y = make_multilabel_classification(n_samples=400, n_features=10, n_classes=4, random_state=0)
    X = StandardScaler().fit_transform(X)
    X_train, X_test, Y_train, Y_test = X[:300], X[300:], Y[:300], Y[300:]
    clf = MLPClassifier(hidden_layer_sizes=(32,), epochs=60, learning_rate=3e-3, backend="numba", random_state=0)
    clf.fit(X_train, Y_train)
    np.testing.assert_array_equal(clf.classes_, np.arange(4))
    probabilities = clf.predict_proba(X_test)
    assert probabilities.shape == Y_test.shape
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert np.abs(probabilities.sum(axis=1) - 1).max() > 0.1  # independent sigmoids, not a softmax
    predicted = clf.predict(X_test)
    assert predicted.dtype == Y_test.dtype
    np.testing.assert_array_equal(predicted, (probabilities > 0.5).astype(Y_test.dtype))
    # Per-label accuracy well above always answering each label's majority.
    majority = (Y_train.mean(axis=0) > 0.5).astype(int)
    assert (predicted == Y_test).mean() > (majority == Y_test).mean() + 0.1


def test_binary_cross_entropy_takes_one_target_per_output():
    # Multilabel training rests on engine.BinaryCrossEntropy over (N, K) targets:
    # mean over all elements of max(z, 0) - z t + log(1 + exp(-|z|)).
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(6, 3)), rng.integers(0, 2, size=(6, 3)).astype(float)
    expected = np.mean(np.logaddexp(0.0, logits) - logits * targets)
    np.testing.assert_allclose(engine.BinaryCrossEntropy()(logits, targets), expected, rtol=1e-10)


# -------------------------------------------------------------- regression
@quiet_convergence
def test_multi_output_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    Y = np.column_stack([X @ rng.normal(size=5), np.tanh(X[:, 0]) - X[:, 1] ** 2 / 2])
    reg = MLPRegressor(hidden_layer_sizes=(32,), epochs=100, learning_rate=3e-3, backend="numba", random_state=0)
    reg.fit(X[:450], Y[:450])
    predicted = reg.predict(X[450:])
    assert reg.n_outputs_ == 2 and predicted.shape == (150, 2)
    assert reg.score(X[450:], Y[450:]) == pytest.approx(r2_score(Y[450:], predicted))
    assert reg.score(X[450:], Y[450:]) > 0.9
    one = MLPRegressor(hidden_layer_sizes=(8,), epochs=2, backend="numba", random_state=0).fit(X, Y[:, 0])
    assert one.predict(X).shape == (600,)


# ----------------------------------------------------------------- pickling
@quiet_convergence
@pytest.mark.parametrize("make", [
    lambda: MLPClassifier(hidden_layer_sizes=(16, 8), dropout=0.1, epochs=3, backend="numba", random_state=0),
    lambda: MLPRegressor(hidden_layer_sizes=(16,), optimizer="nadam", epochs=3, backend="numba", random_state=0),
], ids=["classifier", "regressor"])
def test_pickle_keeps_weights_and_training_state(make, digits):
    X_train, X_test, y_train, _ = digits
    fitted = make().fit(X_train, y_train)
    state = fitted.__getstate__()
    assert not any(isinstance(value, (engine.MLP, engine.Trainer)) for value in state.values())
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.model_ is not fitted.model_
    np.testing.assert_array_equal(restored.predict(X_test), fitted.predict(X_test))
    # The optimizer's moments and the shuffling order came along: one more epoch on both agrees.
    kwargs = {"classes": fitted.classes_} if hasattr(fitted, "classes_") else {}
    fitted.partial_fit(X_train, y_train, **kwargs)
    restored.partial_fit(X_train, y_train, **kwargs)
    np.testing.assert_array_equal(restored.predict(X_test), fitted.predict(X_test))
    assert restored.loss_curve_ == fitted.loss_curve_


@quiet_convergence
def test_unpickling_rebuilds_on_the_backend_named_then(digits):
    X_train, X_test, y_train, _ = digits
    fitted = MLPClassifier(hidden_layer_sizes=(16,), epochs=3, backend="numba", random_state=0).fit(X_train, y_train)
    on_numpy = pickle.loads(pickle.dumps(fitted.set_params(backend="numpy")))
    assert on_numpy.model_.backend == "numpy"
    np.testing.assert_allclose(on_numpy.predict_proba(X_test), fitted.predict_proba(X_test), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------- partial_fit, stopping
@quiet_convergence
def test_partial_fit_epochs_equal_fit_epochs(digits):
    X_train, X_test, y_train, _ = digits
    settings = dict(hidden_layer_sizes=(16,), batch_size=64, backend="numba", random_state=5)
    whole = MLPClassifier(epochs=4, n_iter_no_change=4, **settings).fit(X_train, y_train)
    stepwise = MLPClassifier(**settings)
    for epoch in range(4):
        stepwise.partial_fit(X_train, y_train, classes=np.arange(10))
        assert stepwise.n_iter_ == epoch + 1 == len(stepwise.loss_curve_)
    np.testing.assert_array_equal(stepwise.predict_proba(X_test), whole.predict_proba(X_test))
    assert stepwise.loss_curve_ == whole.loss_curve_
    assert whole.loss_curve_[-1] < whole.loss_curve_[0]


def test_partial_fit_needs_classes_first_and_known_labels_after(digits):
    X_train, _, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(8,), backend="numba", random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X_train, y_train)
    clf.partial_fit(X_train[y_train < 5], y_train[y_train < 5], classes=np.arange(10))  # later labels may come
    assert clf.predict_proba(X_train[:3]).shape == (3, 10)
    with pytest.raises(ValueError, match=r"\by\b.*unseen labels"):
        clf.partial_fit(X_train[:10], y_train[:10] + 20)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X_train[:10], y_train[:10], classes=np.arange(3))


def test_training_stops_after_n_iter_no_change_epochs_without_improvement(digits):
    X_train, _, y_train, _ = digits
    # No epoch after the first lowers the loss by more than tol=100: the first sets the best,
    # then n_iter_no_change=3 epochs without improvement stop it.
    clf = MLPClassifier(hidden_layer_sizes=(8,), epochs=50, tol=100.0, n_iter_no_change=3, backend="numba",
                        random_state=0).fit(X_train, y_train)
    assert clf.n_iter_ == 4
    assert clf.best_loss_ == clf.loss_curve_[0]


def test_running_every_epoch_warns_of_convergence(digits):
    X_train, _, y_train, _ = digits
    with pytest.warns(ConvergenceWarning, match="epochs=2"):
        MLPClassifier(hidden_layer_sizes=(8,), epochs=2, backend="numba", random_state=0).fit(X_train, y_train)


@quiet_convergence
def test_early_stopping_holds_out_validation_rows(digits):
    X_train, X_test, y_train, y_test = digits
    clf = MLPClassifier(hidden_layer_sizes=(64,), learning_rate=1e-2, epochs=200, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=3, backend="numba", random_state=0)
    clf.fit(X_train, y_train)
    assert clf.n_iter_ < 200
    assert len(clf.validation_loss_curve_) == len(clf.loss_curve_) == clf.n_iter_
    # The kept epoch's loss: the last that improved on the best by more than tol.
    assert clf.best_validation_loss_ in clf.validation_loss_curve_
    assert 0 <= clf.best_validation_loss_ - min(clf.validation_loss_curve_) <= clf.tol
    assert clf.best_loss_ is None
    assert clf.score(X_test, y_test) > 0.9


# ----------------------------------------------------------------------- l2
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_l2_shrinks_weights_by_lr_times_l2_where_the_loss_gradient_is_zero(optimizer):
    # All-zero inputs give the first layer's weights a zero loss gradient and make the
    # logits the output bias alone: each update (a batch as large as the data) leaves those
    # weights as they were without l2 and multiplies them by 1 - lr * l2 with it (sgd: the
    # gradient l2 * W; adamw: its decoupled decay), while the biases, never decayed, move
    # the same in both (the second update would shrink the output bias the first moved).
    X, y = np.zeros((8, 3)), (np.arange(8) > 5).astype(int)  # unbalanced: the output bias moves
    settings = dict(hidden_layer_sizes=(4,), optimizer=optimizer, learning_rate=0.1, batch_size=8, backend="numba",
                    random_state=0)
    plain, decayed = MLPClassifier(l2=0.0, **settings), MLPClassifier(l2=0.5, **settings)
    for _ in range(2):
        plain.partial_fit(X, y, classes=[0, 1])
        decayed.partial_fit(X, y, classes=[0, 1])
    W1_plain, b1_plain, _, b2_plain = plain.model_.get_weights()
    W1_decayed, b1_decayed, _, b2_decayed = decayed.model_.get_weights()
    np.testing.assert_allclose(W1_decayed, W1_plain * (1 - 0.1 * 0.5) ** 2, rtol=1e-6)
    assert np.abs(b2_plain).min() > 0.01
    np.testing.assert_array_equal(b1_decayed, b1_plain)
    np.testing.assert_array_equal(b2_decayed, b2_plain)


def test_l2_under_adam_is_coupled_and_normalised():
    # Adam on the gradient l2 * W alone moves each weight by lr * sign(W) (to eps).
    X, y = np.zeros((8, 3)), np.arange(8) % 2
    settings = dict(hidden_layer_sizes=(4,), optimizer="Adam", learning_rate=0.01, batch_size=8, backend="numba",
                    random_state=0)
    W_plain = MLPClassifier(l2=0.0, **settings).partial_fit(X, y, classes=[0, 1]).model_.get_weights()[0]
    W_decayed = MLPClassifier(l2=0.5, **settings).partial_fit(X, y, classes=[0, 1]).model_.get_weights()[0]
    np.testing.assert_allclose(W_plain - W_decayed, 0.01 * np.sign(W_plain), rtol=1e-4)


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("parameter, value, error", [
    ("hidden_layer_sizes", (0,), ValueError), ("hidden_layer_sizes", "wide", TypeError),
    ("hidden_layer_sizes", (8, 2.5), TypeError),
    ("activation", "swish2", ValueError), ("optimizer", "adamx", ValueError), ("optimizer", None, TypeError),
    ("learning_rate", 0.0, ValueError), ("learning_rate", -1e-3, ValueError),
    ("batch_size", 0, ValueError), ("batch_size", "big", ValueError), ("epochs", 0, ValueError),
    ("epochs", 2.5, TypeError), ("early_stopping", "yes", TypeError),
    ("validation_fraction", 1.0, ValueError), ("validation_fraction", 0.0, ValueError),
    ("n_iter_no_change", 0, ValueError), ("tol", -1.0, ValueError), ("dropout", 1.0, ValueError),
    ("l2", -0.1, ValueError), ("backend", "tpu", ValueError), ("random_state", "seed", ValueError),
    ("verbose", 5, ValueError),
])
@pytest.mark.parametrize("estimator_class", [MLPClassifier, MLPRegressor])
def test_bad_parameters_fail_at_fit_naming_the_parameter(estimator_class, parameter, value, error):
    estimator = estimator_class(epochs=1, backend="numba").set_params(**{parameter: value})  # stored, unchecked
    assert estimator.get_params()[parameter] is value
    X, y = np.ones((6, 2)), np.arange(6) % 2
    with pytest.raises(error, match=rf"\b{parameter}\b"):
        estimator.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)


# ------------------------------------------------------------ feature names
@quiet_convergence
def test_feature_names_from_a_data_frame():
    pandas = pytest.importorskip("pandas")
    X, y = load_breast_cancer(return_X_y=True, as_frame=False)
    columns = [f"feature {i}" for i in range(X.shape[1])]
    frame = pandas.DataFrame(StandardScaler().fit_transform(X), columns=columns)
    clf = MLPClassifier(hidden_layer_sizes=(8,), epochs=2, backend="numba", random_state=0).fit(frame, y)
    assert list(clf.feature_names_in_) == columns and clf.n_features_in_ == len(columns)
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(frame.to_numpy())
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame[columns[::-1]])
