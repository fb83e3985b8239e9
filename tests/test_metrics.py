"""engine.metrics against scikit-learn's functions, fed in several batches (a streaming
metric must equal the function of all rows, not a mean of batch values), their awkward
cases, and through Trainer.fit / evaluate. Also the target checks of cross_entropy that
decide what a metric sees: ignore_index rows, (N, 1) class columns, the default metrics of
each loss.
"""
import math

import numpy as np
import pytest
from sklearn import metrics as sk

import engine
from engine import metrics as M


def batches(n, seed):
    """Random cut points of n rows into several batches of unequal sizes (one of size 1)."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(2, n - 1), size=4, replace=False))
    return [slice(a, b) for a, b in zip([0, 1, *cuts], [1, *cuts, n])]


def streamed(metric, y_true, y_pred, seed=0):
    metric.reset()
    for part in batches(len(y_pred), seed):
        metric.update(y_true[part], y_pred[part])
    return metric.compute()


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def multiclass(n=90, k=5, seed=0, never_predicted=(3,), never_seen=(4,)):
    """(logits, labels): class ``never_predicted`` appears in the labels but never wins
    the argmax; class ``never_seen`` is neither a label nor predicted."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    for c in never_predicted + never_seen:
        logits[:, c] -= 20.0
    labels = rng.choice([c for c in range(k) if c not in never_seen], size=n)
    return logits, labels


# ------------------------------------------------------------ precision, recall, f1
SK_SCORES = {"precision": sk.precision_score, "recall": sk.recall_score, "f1": sk.f1_score}
CLASSES = {"precision": M.Precision, "recall": M.Recall, "f1": M.F1}


@pytest.mark.parametrize("name", sorted(SK_SCORES))
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_class_scores_several_outputs_match_sklearn(name, average):
    logits, y = multiclass()
    predicted = logits.argmax(axis=1)
    assert 3 in y and 3 not in predicted and 4 not in y and 4 not in predicted
    expected = SK_SCORES[name](y, predicted, average=average, zero_division=0)
    assert streamed(CLASSES[name](average=average), y, logits) == pytest.approx(expected, rel=1e-12)
    one_hot = np.eye(5)[y]
    assert streamed(CLASSES[name](average=average), one_hot, logits, seed=1) == pytest.approx(expected, rel=1e-12)
    column = y[:, None]  # a column of class indices
    assert streamed(CLASSES[name](average=average), column, logits, seed=2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(SK_SCORES))
def test_macro_is_the_default_for_several_outputs_and_not_a_mean_of_batches(name):
    logits, y = multiclass(seed=3)
    metric = CLASSES[name]()
    value = streamed(metric, y, logits)
    assert value == pytest.approx(SK_SCORES[name](y, logits.argmax(axis=1), average="macro", zero_division=0),
                                  rel=1e-12)
    parts = batches(len(y), 0)
    per_batch = [SK_SCORES[name](y[p], logits[p].argmax(axis=1), average="macro", zero_division=0) for p in parts]
    assert abs(np.mean(per_batch) - value) > 1e-3  # the test could tell the two apart


@pytest.mark.parametrize("name", sorted(SK_SCORES))
@pytest.mark.parametrize("average", [None, "binary", "macro", "micro"])
@pytest.mark.parametrize("from_logits", [True, False])
def test_class_scores_one_output_match_sklearn(name, average, from_logits):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(70, 1))
    scores = z if from_logits else 1 / (1 + np.exp(-z))
    labels = (rng.uniform(size=70) < 0.4).astype(np.float64)
    predicted = (z[:, 0] > 0).astype(int)  # logit > 0, probability > 0.5
    expected = SK_SCORES[name](labels, predicted, average=average or "binary", zero_division=0)
    metric = CLASSES[name](average=average, from_logits=from_logits)
    assert streamed(metric, labels, scores) == pytest.approx(expected, rel=1e-12)
    assert streamed(metric, labels.astype(np.int64)[:, None], scores) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(SK_SCORES))
def test_binary_average_on_two_outputs_scores_class_one(name):
    rng = np.random.default_rng(5)
    logits, y = rng.normal(size=(40, 2)), rng.integers(0, 2, 40)
    expected = SK_SCORES[name](y, logits.argmax(axis=1), average="binary", pos_label=1, zero_division=0)
    assert streamed(CLASSES[name](average="binary"), y, logits) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(SK_SCORES))
def test_class_scores_zero_division_is_zero(name):
    # nothing predicted positive, and no positive label: sklearn's zero_division=0 gives 0
    metric = CLASSES[name](average="binary")
    metric.update(np.array([0.0, 0.0, 0.0]), np.array([-1.0, -2.0, -0.5]))
    assert metric.compute() == SK_SCORES[name]([0, 0, 0], [0, 0, 0], zero_division=0) == 0.0
    metric.update(np.array([1.0]), np.array([-3.0]))  # a positive, missed: still 0 for each
    assert metric.compute() == SK_SCORES[name]([0, 0, 0, 1], [0, 0, 0, 0], zero_division=0) == 0.0


@pytest.mark.parametrize("name", sorted(SK_SCORES))
def test_class_scores_skip_ignored_rows_and_start_at_nan(name):
    logits, y = multiclass(n=50, k=4, seed=6, never_predicted=(), never_seen=())
    metric = CLASSES[name]()
    assert math.isnan(metric.compute())
    y_ignored = y.copy()
    y_ignored[::6] = -100
    kept = y_ignored != -100
    expected = SK_SCORES[name](y[kept], logits[kept].argmax(axis=1), average="macro", zero_division=0)
    assert streamed(metric, y_ignored, logits) == pytest.approx(expected, rel=1e-12)
    metric.reset()
    metric.update(np.full(3, -100), logits[:3])
    assert math.isnan(metric.compute())


def test_class_scores_bad_arguments():
    with pytest.raises(ValueError, match="average"):
        M.Precision(average="weighted")
    with pytest.raises(TypeError, match="average"):
        M.Recall(average=1)
    with pytest.raises(ValueError, match="average"):
        M.F1(average="binary").update(np.array([0, 1, 2]), np.eye(3))
    metric = M.Precision()
    metric.update(np.array([0, 1]), np.eye(2))
    with pytest.raises(ValueError, match="y_pred"):
        metric.update(np.array([0, 1, 2]), np.eye(3))
    with pytest.raises(ValueError, match="y_true"):
        metric.update(np.array([0, 1, 1]), np.eye(2))
    with pytest.raises(ValueError, match="y_true"):
        metric.update(np.array([0.5, 1.0]), np.eye(2))  # fractional class indices


# ---------------------------------------------------------------------------------- auc
def test_auc_one_output_matches_sklearn():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(80, 1))
    y = (rng.uniform(size=80) < 1 / (1 + np.exp(-2 * z[:, 0]))).astype(np.float64)
    expected = sk.roc_auc_score(y, z[:, 0])
    assert streamed(M.AUC(), y, z) == pytest.approx(expected, rel=1e-12)
    assert streamed(M.AUC(), y, 1 / (1 + np.exp(-z))) == pytest.approx(expected, rel=1e-12)  # probabilities
    assert streamed(M.AUC(), y.astype(np.int64), z[:, 0]) == pytest.approx(expected, rel=1e-12)


def test_auc_two_outputs_scores_class_one():
    rng = np.random.default_rng(8)
    logits, y = rng.normal(size=(60, 2)), rng.integers(0, 2, 60)
    expected = sk.roc_auc_score(y, softmax(logits)[:, 1])
    assert streamed(M.AUC(), y, logits) == pytest.approx(expected, rel=1e-12)
    assert streamed(M.AUC(), np.eye(2)[y], softmax(logits)) == pytest.approx(expected, rel=1e-12)


def test_auc_ties_count_one_half():
    rng = np.random.default_rng(9)
    z = np.round(rng.normal(size=(100, 1)), 1)  # many tied scores, across batches
    y = rng.integers(0, 2, 100)
    assert len(np.unique(z)) < 60
    assert streamed(M.AUC(), y, z) == pytest.approx(sk.roc_auc_score(y, z[:, 0]), rel=1e-12)
    metric = M.AUC()
    metric.update(np.array([0, 1]), np.array([0.5, 0.5]))
    assert metric.compute() == 0.5


def test_auc_undefined_cases_and_ignored_rows():
    metric = M.AUC()
    assert math.isnan(metric.compute())
    metric.update(np.array([1, 1]), np.array([0.3, -0.2]))  # one class only: sklearn's nan too
    assert math.isnan(metric.compute())
    metric.update(np.array([0, -100, 7]), np.array([0.1, 5.0, 9.0]))  # -100 and 7 skipped
    assert metric.compute() == pytest.approx(sk.roc_auc_score([1, 1, 0], [0.3, -0.2, 0.1]))
    with pytest.raises(ValueError, match="y_pred"):
        metric.update(np.array([0, 1]), np.eye(3)[:2])


# ----------------------------------------------------------------------------------- r2
def test_r2_matches_sklearn_over_batches():
    rng = np.random.default_rng(10)
    y = rng.normal(size=(60, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -2.0]
    pred = y + rng.normal(size=(60, 3)) * [0.5, 4.0, 0.1]
    assert streamed(M.R2(), y, pred) == pytest.approx(sk.r2_score(y, pred), rel=1e-12)
    metric = M.R2()
    for i in range(60):  # one row at a time
        metric.update(y[i:i + 1], pred[i:i + 1])
    assert metric.compute() == pytest.approx(sk.r2_score(y, pred), rel=1e-12)
    one = rng.normal(size=25)
    assert streamed(M.R2(), one, one[:, None] + 0.3) == pytest.approx(sk.r2_score(one, one + 0.3), rel=1e-12)


def test_r2_no_cancellation_on_a_large_offset():
    # sum y^2 - n mean^2 would lose every digit of the spread; the merged spread keeps them
    rng = np.random.default_rng(11)
    y = 1e9 + rng.normal(size=(40, 1))
    pred = y + 0.5 * rng.normal(size=(40, 1))
    assert streamed(M.R2(), y, pred) == pytest.approx(sk.r2_score(y, pred), rel=1e-6)


def test_r2_constant_targets_and_too_few_rows():
    y = np.array([[2.0, 1.0], [2.0, 3.0], [2.0, 5.0]] * 4)
    pred = np.array([[2.0, 1.0], [2.0, 2.0], [2.0, 5.0]] * 4)  # output 0 constant and exact
    assert streamed(M.R2(), y, pred) == pytest.approx(sk.r2_score(y, pred), rel=1e-14)
    pred[0, 0] = 2.5  # constant, not exact: 0 (force_finite)
    assert streamed(M.R2(), y, pred) == pytest.approx(sk.r2_score(y, pred), rel=1e-14)
    metric = M.R2()
    metric.update(y[:1], pred[:1])
    assert math.isnan(metric.compute())  # sklearn: not defined for one sample
    with pytest.raises(ValueError, match="y_true"):
        metric.update(y[:2, :1], pred[:2])


# ---------------------------------------------------------------------------------- mae
def test_mae_matches_sklearn_over_batches():
    rng = np.random.default_rng(12)
    y, pred = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    assert streamed(M.MAE(), y, pred) == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-12)
    assert streamed(M.MAE(), y[:, 0], pred[:, :1]) == pytest.approx(sk.mean_absolute_error(y[:, 0], pred[:, 0]),
                                                                     rel=1e-12)


# ------------------------------------------------------------------------ top_k_accuracy
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_accuracy_matches_sklearn(k):
    rng = np.random.default_rng(13)
    logits, y = rng.normal(size=(80, 8)), rng.integers(0, 8, 80)
    expected = sk.top_k_accuracy_score(y, logits, k=k, labels=np.arange(8))
    metric = M.TopKAccuracy(k=k) if k != 5 else M.TopKAccuracy()
    assert streamed(metric, y, logits) == pytest.approx(expected, rel=1e-12)
    assert streamed(metric, np.eye(8)[y], logits) == pytest.approx(expected, rel=1e-12)
    y_ignored = y.copy()
    y_ignored[::5] = -100
    kept = y_ignored >= 0
    expected = sk.top_k_accuracy_score(y[kept], logits[kept], k=k, labels=np.arange(8))
    assert streamed(metric, y_ignored, logits) == pytest.approx(expected, rel=1e-12)


def test_top_k_accuracy_ties_and_small_k():
    metric = M.TopKAccuracy(k=2)
    # row 0: the target ties the 2nd place (a hit, as tf.math.in_top_k); row 1: two above it
    metric.update(np.array([2, 0]), np.array([[3.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 0.0]]))
    assert metric.compute() == 0.5
    metric = M.TopKAccuracy(k=3)
    metric.update(np.array([0, 1]), np.array([[0.0, 1.0, 2.0], [5.0, 0.0, 1.0]]))  # k >= K: every row
    assert metric.compute() == 1.0
    with pytest.raises(ValueError, match="k"):
        M.TopKAccuracy(k=0)
    with pytest.raises(TypeError, match="k"):
        M.TopKAccuracy(k=2.5)
    with pytest.raises(ValueError, match="y_pred"):
        M.TopKAccuracy().update(np.array([0, 1]), np.array([[0.2], [0.3]]))


# ----------------------------------------------------------------- names and registry
def test_names_give_the_classes():
    expected = {"accuracy": M.Accuracy, "acc": M.Accuracy, "mse": M.MSE, "mae": M.MAE,
                "cross_entropy": M.CrossEntropy, "precision": M.Precision, "recall": M.Recall, "f1": M.F1,
                "auc": M.AUC, "r2": M.R2, "top_k_accuracy": M.TopKAccuracy}
    assert set(M.NAMES) == set(expected)
    for name, cls in expected.items():
        metric = M.get(name)
        assert type(metric) is cls and metric.name in (name, "accuracy")
    with pytest.raises(ValueError, match="metrics"):
        M.get("roc")


# ------------------------------------------------ rough edge 3: ignore_index in accuracy
def test_accuracy_skips_ignore_index_rows():
    logits, y = multiclass(n=40, k=4, seed=14, never_predicted=(), never_seen=())
    y_ignored = y.copy()
    y_ignored[[0, 5, 9, 30]] = -100
    kept = y_ignored != -100
    expected = sk.accuracy_score(y[kept], logits[kept].argmax(axis=1))
    assert streamed(M.Accuracy(), y_ignored, logits) == pytest.approx(expected, rel=1e-14)
    z = np.array([[0.5], [-1.0], [2.0], [0.1]])  # one output: labels 0/1, -100 skipped
    metric = M.Accuracy()
    metric.update(np.array([1, -100, 0, 1]), z)
    assert metric.compute() == pytest.approx(2 / 3)


def ignore_index_data(n=40, k=4, seed=15):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = np.argmax(X @ rng.normal(size=(5, k)), axis=1)
    y[rng.choice(n, 9, replace=False)] = -100
    return X, y


def test_trainer_accuracy_and_cross_entropy_skip_ignore_index_rows(backend_name):
    X, y = ignore_index_data()
    kept = y != -100
    model = engine.MLP([5, 8, 4], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(ignore_index=-100), optimizer=engine.SGD(lr=0.0),
                             metrics=("accuracy", "cross_entropy"))
    logits = model.logits(X)
    accuracy = sk.accuracy_score(y[kept], logits[kept].argmax(axis=1))
    result = trainer.evaluate(X, y, batch_size=7)
    assert result["accuracy"] == pytest.approx(accuracy, rel=1e-12)
    assert result["cross_entropy"] == pytest.approx(sk.log_loss(y[kept], softmax(logits[kept]), labels=range(4)),
                                                    rel=1e-10)
    assert result["cross_entropy"] == pytest.approx(result["loss"], rel=1e-12)
    history = trainer.fit(X, y, epochs=1, batch_size=6, verbose=0).history  # lr 0: the same logits
    assert history["accuracy"][0] == pytest.approx(accuracy, rel=1e-12)
    assert history["cross_entropy"][0] == pytest.approx(result["loss"], rel=1e-12)


# ---------------------------------------- rough edge 4: CrossEntropy on probabilities
def test_cross_entropy_refuses_probabilities_taken_for_logits():
    rng = np.random.default_rng(16)
    logits, y = rng.normal(size=(20, 4)), rng.integers(0, 4, 20)
    probabilities = softmax(logits)
    with pytest.raises(ValueError, match="from_logits=False"):
        M.CrossEntropy().update(y, probabilities)
    expected = sk.log_loss(y, probabilities, labels=range(4))
    assert streamed(M.CrossEntropy(from_logits=False), y, probabilities) == pytest.approx(expected, rel=1e-12)
    assert streamed(M.CrossEntropy(), y, logits) == pytest.approx(expected, rel=1e-12)
    # said explicitly, any scores are logits: these probabilities as logits
    as_logits = -np.log(softmax(probabilities))[np.arange(20), y].mean()
    assert streamed(M.CrossEntropy(from_logits=True), y, probabilities) == pytest.approx(as_logits, rel=1e-12)
    with pytest.raises(TypeError, match="from_logits"):
        M.CrossEntropy(from_logits="yes")


def test_cross_entropy_metric_skips_ignore_index_rows():
    _, y = ignore_index_data(seed=17)
    logits = np.random.default_rng(18).normal(size=(len(y), 4))
    kept = y != -100
    expected = sk.log_loss(y[kept], softmax(logits[kept]), labels=range(4))
    assert streamed(M.CrossEntropy(), y, logits) == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_probability_check_stays_off_the_trainer(backend_name):
    # the trainer's scores are logits, even when they look like probabilities: 0.25 each
    X, y = ignore_index_data(seed=19)
    model = engine.MLP([5, 4], seed=0, backend=backend_name, dtype="float64")
    model.set_weights([np.zeros((5, 4)), np.full(4, 0.25)])
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(ignore_index=-100), metrics=("cross_entropy",))
    assert trainer.evaluate(X, y, batch_size=8)["cross_entropy"] == pytest.approx(np.log(4), rel=1e-12)
    with pytest.raises(ValueError, match="from_logits"):  # the same scores by hand, with no from_logits
        M.CrossEntropy().update(y, model.logits(X))


# ------------------------------------------------ rough edge 5: metrics by default
@pytest.mark.parametrize("loss, sizes, expected", [
    ("mse", [4, 6, 2], ["mae"]),
    ("huber", [4, 6, 1], ["mae"]),
    ("cross_entropy", [4, 6, 3], ["accuracy"]),
    ("binary_cross_entropy", [4, 6, 1], ["accuracy"]),
])
def test_default_metrics_depend_on_the_loss(loss, sizes, expected, backend_name):
    model = engine.MLP(sizes, seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, loss=loss)
    assert [m.name for m in trainer.metrics] == expected
    rng = np.random.default_rng(20)
    X = rng.normal(size=(30, 4))
    if loss in ("mse", "huber"):
        y = rng.normal(size=(30, sizes[-1]))
    elif loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], 30)
    else:
        y = rng.integers(0, 2, 30).astype(np.float64)
    history = trainer.fit(X, y, epochs=1, batch_size=8, validation_split=0.2, verbose=0).history
    assert set(history) == {"loss", "lr", "val_loss", *expected, *(f"val_{name}" for name in expected)}
    assert set(trainer.evaluate(X, y)) == {"loss", *expected}
    assert [m.name for m in engine.Trainer(model, loss=loss, metrics=()).metrics] == []


def test_regression_targets_with_the_default_loss_say_so():
    model = engine.MLP([3, 4, 1], seed=0)
    trainer = engine.Trainer(model)
    X = np.random.default_rng(21).normal(size=(10, 3))
    for y in (X @ [1.0, 2.0, -1.0], np.round(X @ [1.0, 2.0, -1.0]) + 3):  # fractional, then integral
        with pytest.raises((TypeError, ValueError)) as error:
            trainer.fit(X, y, verbose=0)
        message = str(error.value)
        assert "cross_entropy" in message and "loss='mse'" in message and "y" in message, message


# --------------------------------------- rough edge 6: (N, 1) class indices, not probabilities
@pytest.mark.parametrize("column_dtype", [np.int64, np.int32, np.float64])
def test_class_index_columns_are_class_indices(column_dtype, backend_name):
    rng = np.random.default_rng(22)
    X, y = rng.normal(size=(24, 5)), rng.integers(0, 3, 24)
    make = lambda: engine.Trainer(engine.MLP([5, 6, 3], seed=0, backend=backend_name, dtype="float64"),
                                  metrics=("accuracy", "f1"))
    flat, column = make(), make()
    assert column.train_step(X, y[:, None].astype(column_dtype)) == flat.train_step(X, y)
    assert column.evaluate(X, y[:, None].astype(column_dtype)) == flat.evaluate(X, y)
    with_ignored = engine.Trainer(engine.MLP([5, 6, 3], seed=0, backend=backend_name),
                                  loss=engine.SoftmaxCrossEntropy(ignore_index=-100))
    y[0] = -100
    with_ignored.train_step(X, y[:, None].astype(column_dtype))


# --------------------------------------------------- the new metrics through the Trainer
def logits_of(model, X):
    return np.asarray(model.logits(X), dtype=np.float64)


def test_binary_metrics_through_fit_and_evaluate(backend_name):
    rng = np.random.default_rng(23)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(np.float64)
    names = ("precision", "recall", "f1", "auc", "accuracy")
    model = engine.MLP([4, 6, 1], output="sigmoid", seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, loss="binary_cross_entropy", optimizer=engine.SGD(lr=0.0), metrics=names)
    history = trainer.fit(X, y, epochs=2, batch_size=7, validation_data=(X, y), verbose=0).history
    assert set(history) == {"loss", "lr", *names, "val_loss", *(f"val_{n}" for n in names)}
    z = logits_of(model, X)[:, 0]
    expected = {"precision": sk.precision_score(y, z > 0, zero_division=0),
                "recall": sk.recall_score(y, z > 0, zero_division=0),
                "f1": sk.f1_score(y, z > 0, zero_division=0), "auc": sk.roc_auc_score(y, z),
                "accuracy": sk.accuracy_score(y, z > 0)}
    result = trainer.evaluate(X, y, batch_size=9)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-12), name
        assert history[name] == pytest.approx([value] * 2, rel=1e-12), name  # lr 0: the same logits
        assert history[f"val_{name}"] == pytest.approx([value] * 2, rel=1e-12), name


def test_multiclass_metrics_through_fit_and_evaluate(backend_name):
    rng = np.random.default_rng(24)
    X = rng.normal(size=(70, 5))
    y = np.argmax(X @ rng.normal(size=(5, 6)), axis=1)
    names = ("precision", "recall", "f1", "top_k_accuracy")
    model = engine.MLP([5, 8, 6], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=0.1), metrics=names)
    history = trainer.fit(X, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0).history
    assert set(history) == {"loss", "lr", *names, "val_loss", *(f"val_{n}" for n in names)}
    assert all(len(values) == 2 for values in history.values())
    z = logits_of(model, X)
    p = z.argmax(axis=1)
    expected = {"precision": sk.precision_score(y, p, average="macro", zero_division=0),
                "recall": sk.recall_score(y, p, average="macro", zero_division=0),
                "f1": sk.f1_score(y, p, average="macro", zero_division=0),
                "top_k_accuracy": sk.top_k_accuracy_score(y, z, k=5, labels=range(6))}
    result = trainer.evaluate(X, y, batch_size=16)
    assert set(result) == {"loss", *names}
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-12), name
    result = engine.Trainer(model, metrics=(M.TopKAccuracy(k=2), M.F1(average="micro"))).evaluate(X, y)
    assert result["top_k_accuracy"] == pytest.approx(sk.top_k_accuracy_score(y, z, k=2, labels=range(6)), rel=1e-12)
    assert result["f1"] == pytest.approx(sk.f1_score(y, p, average="micro"), rel=1e-12)


def test_regression_metrics_through_fit_and_evaluate(backend_name):
    rng = np.random.default_rng(25)
    X = rng.normal(size=(50, 4))
    y = X @ rng.normal(size=(4, 2)) + 0.1 * rng.normal(size=(50, 2))
    model = engine.MLP([4, 8, 2], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, loss="mse", optimizer=engine.SGD(lr=0.05), metrics=("r2", "mae"))
    history = trainer.fit(X, y, epochs=3, batch_size=8, validation_split=0.2, verbose=0).history
    assert {"r2", "mae", "val_r2", "val_mae"} <= set(history) and len(history["r2"]) == 3
    result = trainer.evaluate(X, y, batch_size=11)
    pred = model.predict(X).astype(np.float64)
    assert result["r2"] == pytest.approx(sk.r2_score(y, pred), rel=1e-10)
    assert result["mae"] == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-10)
