"""fit's augmentation and row weights (engine.augmentation) on every engine backend: weighted
steps against PyTorch, class_weight as the sample_weight it stands for, the input noise
against the reference op's draws, mixup against training by hand on the mixed batch, bad
arguments refused before any update, and the digits still learned with each feature."""
import math

import numpy as np
import pytest

import engine
from engine.optim import SGD
from kernels import reference
from kernels.rng import noise_key

SIZES = [5, 6, 3]


def _data(n=24, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, SIZES[0])), g.integers(0, SIZES[-1], n)


def _trainer(backend_name, loss="cross_entropy", seed=1, sizes=SIZES, lr=0.1):
    model = engine.MLP(sizes, activation="tanh", dtype="float64", seed=seed, backend=backend_name)
    return engine.Trainer(model, loss=loss, optimizer=SGD(lr=lr), metrics=())


def _one_step(trainer, X, y, **kwargs):
    """fit on one batch of all rows, in order: one update; its logged loss."""
    return trainer.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, verbose=0, **kwargs).history["loss"][0]


def _assert_same_weights(a, b):
    for i, (wa, wb) in enumerate(zip(a.model.get_weights(), b.model.get_weights())):
        np.testing.assert_array_equal(wa, wb, err_msg=f"parameter {i}")


# ------------------------------------------------------------------ row weights
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_a_weighted_step_is_torchs_weighted_loss_and_gradient(backend_name, loss):
    """Keras semantics: sum_i w_i loss_i divided by the rows (by N K for an elementwise
    loss), computed here with torch on the same weights, and one SGD step on it."""
    torch = pytest.importorskip("torch")
    X, labels = _data()
    y = labels if loss == "cross_entropy" else np.random.default_rng(5).standard_normal((len(X), SIZES[-1]))
    w = np.random.default_rng(6).uniform(0.0, 3.0, len(X))
    trainer = _trainer(backend_name, loss)
    W1, b1, W2, b2 = (torch.tensor(p, requires_grad=True) for p in trainer.model.get_weights())
    logits = torch.tanh(torch.tensor(X) @ W1 + b1) @ W2 + b2
    if loss == "cross_entropy":
        per_row = torch.nn.functional.cross_entropy(logits, torch.tensor(labels), reduction="none")
        expected_loss = (torch.tensor(w) * per_row).sum() / len(X)
    else:
        expected_loss = (torch.tensor(w)[:, None] * (logits - torch.tensor(y)) ** 2).sum() / y.size
    expected_loss.backward()
    got_loss = _one_step(trainer, X, y, sample_weight=w)
    assert got_loss == pytest.approx(expected_loss.item(), rel=1e-13)
    for got, p in zip(trainer.model.get_weights(), (W1, b1, W2, b2)):
        np.testing.assert_allclose(got, (p - 0.1 * p.grad).detach().numpy(), rtol=1e-12, atol=1e-14)


def test_class_weight_is_the_sample_weight_of_each_rows_class(backend_name):
    X, y = _data()
    table = {0: 2.5, 2: 0.25}  # class 1 unnamed: weight 1
    by_class, by_row = _trainer(backend_name), _trainer(backend_name)
    for _ in range(2):
        _one_step(by_class, X, y, class_weight=table)
        _one_step(by_row, X, y, sample_weight=np.array([table.get(c, 1.0) for c in y]))
    _assert_same_weights(by_class, by_row)


def test_class_weight_of_one_sigmoid_output_reads_labels_above_one_half(backend_name):
    X, _ = _data()
    labels = np.random.default_rng(2).uniform(0, 1, len(X))  # soft labels: class 1 above 0.5
    by_class = _trainer(backend_name, "binary_cross_entropy", sizes=[5, 6, 1])
    by_row = _trainer(backend_name, "binary_cross_entropy", sizes=[5, 6, 1])
    _one_step(by_class, X, labels, class_weight={1: 3.0})
    _one_step(by_row, X, labels, sample_weight=np.where(labels > 0.5, 3.0, 1.0))
    _assert_same_weights(by_class, by_row)


def test_class_and_sample_weights_multiply_and_ignored_rows_weigh_nothing(backend_name):
    X, y = _data()
    y = np.where(np.arange(len(y)) % 5 == 0, -1, y)  # ignore_index rows
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(X))
    loss = engine.SoftmaxCrossEntropy(ignore_index=-1)
    both, by_hand = _trainer(backend_name, loss), _trainer(backend_name, loss)
    _one_step(both, X, y, class_weight={1: 4.0}, sample_weight=w)
    _one_step(by_hand, X, y, sample_weight=np.where(y == 1, 4.0, 1.0) * np.where(y < 0, 0.0, 1.0) * w)
    _assert_same_weights(both, by_hand)


def test_sample_weight_of_ones_trains_as_no_weights(backend_name):
    X, y = _data(40)
    weighted, plain = _trainer(backend_name), _trainer(backend_name)
    for trainer, kwargs in ((weighted, {"sample_weight": np.ones(len(X))}), (plain, {})):
        trainer.fit(X, y, epochs=2, batch_size=16, verbose=0, **kwargs)  # shuffled, a last batch of 8
    _assert_same_weights(weighted, plain)


def test_sample_weight_is_split_as_x_by_validation_split(backend_name):
    X, y = _data(40)
    w = np.random.default_rng(7).uniform(0.0, 2.0, len(X))
    split, by_hand = _trainer(backend_name), _trainer(backend_name)
    h1 = split.fit(X, y, epochs=2, batch_size=8, verbose=0, validation_split=0.25, sample_weight=w)
    h2 = by_hand.fit(X[:30], y[:30], epochs=2, batch_size=8, verbose=0, validation_data=(X[30:], y[30:]),
                     sample_weight=w[:30])
    _assert_same_weights(split, by_hand)
    assert h1.history == h2.history


# ------------------------------------------------------------------ input noise
def _noisy(X, seed, step, std):
    """X plus the noise the reference op draws at update ``step``."""
    out = np.empty_like(X)
    reference.gaussian_noise(X, std, noise_key(seed, step), out)
    return out


def test_input_noise_is_training_on_x_plus_the_reference_noise_of_each_step(backend_name):
    X, y = _data(24)
    noisy, by_hand = _trainer(backend_name), _trainer(backend_name)
    noisy.fit(X, y, epochs=1, batch_size=12, shuffle=False, verbose=0, input_noise=0.5)
    first, second = _noisy(X[:12], 1, 0, 0.5), _noisy(X[12:], 1, 1, 0.5)
    assert not np.allclose(first - X[:12], second - X[12:])  # fresh noise at each update
    by_hand.train_step(first, y[:12])
    by_hand.train_step(second, y[12:])
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in noisy.model.get_weights()]),
                               np.concatenate([w.ravel() for w in by_hand.model.get_weights()]),
                               rtol=1e-13, atol=1e-15)  # z to the backend's libm (kernels.spec)


def test_input_noise_is_reproducible_by_seed_and_changes_the_training(backend_name):
    X, y = _data(40)
    runs = []
    for seed, noise in ((1, 0.3), (1, 0.3), (1, 0.0)):
        trainer = _trainer(backend_name, seed=seed)
        trainer.fit(X, y, epochs=2, batch_size=16, verbose=0, input_noise=noise)
        runs.append(trainer)
    _assert_same_weights(runs[0], runs[1])
    assert not np.array_equal(runs[0].model.get_weights()[0], runs[2].model.get_weights()[0])


def test_input_noise_is_absent_at_evaluation_and_prediction(backend_name):
    X, y = _data(40)
    trainer = _trainer(backend_name)
    history = trainer.fit(X[:30], y[:30], epochs=1, batch_size=10, verbose=0, input_noise=2.0,
                          validation_data=(X[30:], y[30:]))
    # the validation at the end of the noised epoch, evaluate and predict agree: no noise
    assert history.history["val_loss"][0] == trainer.evaluate(X[30:], y[30:])["loss"]
    probabilities = engine.MLP.predict(trainer.model, X[30:])
    np.testing.assert_array_equal(probabilities, trainer.model.predict(X[30:]))
    clean = _trainer(backend_name)
    clean.model.set_weights(trainer.model.get_weights())
    assert clean.evaluate(X[30:], y[30:]) == trainer.evaluate(X[30:], y[30:])


# ------------------------------------------------------------------ mixup
def _mixup_draws(seed, alpha, n):
    """The trainer's RNG (seeded by the model's seed) without shuffling: lam, then perm."""
    rng = np.random.default_rng(seed)
    return rng.beta(alpha, alpha), rng.permutation(n)


@pytest.mark.parametrize("alpha", [0.4, 3.0])
def test_mixup_trains_on_the_mixed_batch_and_its_mixed_targets(backend_name, alpha):
    torch = pytest.importorskip("torch")
    X, y = _data()
    mixed, by_hand = _trainer(backend_name), _trainer(backend_name)
    lam, perm = _mixup_draws(1, alpha, len(X))
    X_mix = lam * X + (1 - lam) * X[perm]
    T = lam * np.eye(3)[y] + (1 - lam) * np.eye(3)[y[perm]]
    W1, b1, W2, b2 = (torch.tensor(p) for p in by_hand.model.get_weights())
    logits = torch.tanh(torch.tensor(X_mix) @ W1 + b1) @ W2 + b2
    ce = torch.nn.functional.cross_entropy
    # CE with mixed targets is the mixture of the two CEs (Zhang et al. 2018)
    expected = lam * ce(logits, torch.tensor(y)) + (1 - lam) * ce(logits, torch.tensor(y[perm]))
    loss = _one_step(mixed, X, y, mixup=alpha)
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    by_hand.train_step(X_mix, T)
    for got, want in zip(mixed.model.get_weights(), by_hand.model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_mixup_mixes_float_targets_and_row_weights(backend_name):
    X, _ = _data()
    y = np.random.default_rng(8).standard_normal((len(X), 3))
    w = np.random.default_rng(9).uniform(0.0, 2.0, len(X))
    mixed, by_hand = _trainer(backend_name, "mse"), _trainer(backend_name, "mse")
    lam, perm = _mixup_draws(1, 0.5, len(X))
    _one_step(mixed, X, y, mixup=0.5, sample_weight=w)
    _one_step(by_hand, lam * X + (1 - lam) * X[perm], lam * y + (1 - lam) * y[perm],
              sample_weight=lam * w + (1 - lam) * w[perm])
    for got, want in zip(mixed.model.get_weights(), by_hand.model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_mixup_metrics_score_the_dominant_labels(backend_name):
    """Training accuracy against y where lam >= 0.5, else y[perm]."""
    X, y = _data(40)
    for alpha, seed in ((0.2, 1), (0.2, 2), (0.2, 4)):
        lam, perm = _mixup_draws(seed, alpha, len(X))
        model = engine.MLP(SIZES, activation="tanh", dtype="float64", seed=seed, backend=backend_name)
        trainer = engine.Trainer(model, optimizer=SGD(lr=0.1), metrics=["accuracy", "f1"])
        before = _trainer(backend_name, seed=seed).model
        labels = y if lam >= 0.5 else y[perm]
        X_mix = lam * X + (1 - lam) * X[perm]
        predicted = before.predict(X_mix).argmax(axis=1)  # the logits of the step, before its update
        logs = trainer.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, verbose=0, mixup=alpha).history
        assert logs["accuracy"][0] == pytest.approx(np.mean(predicted == labels), abs=1e-12)  # on the device
        assert logs["f1"][0] == pytest.approx(_macro_f1(labels, predicted, 3), abs=1e-12)  # on the host


def _macro_f1(labels, predicted, n_classes):
    scores = []
    for c in range(n_classes):
        tp = np.sum((predicted == c) & (labels == c))
        fp, fn = np.sum((predicted == c) & (labels != c)), np.sum((predicted != c) & (labels == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return np.mean(scores)


# ------------------------------------------------------------------ bad arguments
BAD = [
    ({"input_noise": -0.1}, ValueError, "input_noise"),
    ({"input_noise": math.inf}, ValueError, "input_noise"),
    ({"input_noise": "0.1"}, TypeError, "input_noise"),
    ({"mixup": -1.0}, ValueError, "mixup"),
    ({"mixup": math.nan}, ValueError, "mixup"),
    ({"mixup": None}, TypeError, "mixup"),
    ({"class_weight": [1.0, 2.0]}, TypeError, "class_weight"),
    ({"class_weight": {3: 1.0}}, ValueError, "class_weight"),
    ({"class_weight": {"0": 1.0}}, ValueError, "class_weight"),
    ({"class_weight": {True: 1.0}}, ValueError, "class_weight"),
    ({"class_weight": {0: -1.0}}, ValueError, r"class_weight\[0\]"),
    ({"class_weight": {0: math.nan}}, ValueError, r"class_weight\[0\]"),
    ({"sample_weight": np.ones(23)}, ValueError, "sample_weight"),
    ({"sample_weight": np.ones((24, 1))}, ValueError, "sample_weight"),
    ({"sample_weight": -np.ones(24)}, ValueError, "sample_weight"),
    ({"sample_weight": np.full(24, np.nan)}, ValueError, "sample_weight"),
    ({"sample_weight": ["a"] * 24}, TypeError, "sample_weight"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD, ids=lambda v: repr(v)[:40] if isinstance(v, dict) else "")
def test_bad_arguments_are_refused_before_any_update(backend_name, kwargs, error, match):
    X, y = _data()
    trainer = _trainer(backend_name)
    before = trainer.model.get_weights()
    with pytest.raises(error, match=match):
        trainer.fit(X, y, epochs=1, batch_size=8, verbose=0, **kwargs)
    for got, want in zip(trainer.model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert trainer.step == 0


@pytest.mark.parametrize("loss, kwargs, match", [
    ("mse", {"class_weight": {0: 2.0}}, "class_weight needs class targets"),
    (engine.SoftmaxCrossEntropy(ignore_index=-1), {"mixup": 0.2}, "ignore_index"),
], ids=["class_weight of a regression", "mixup with ignore_index"])
def test_settings_that_cannot_apply_are_refused(backend_name, loss, kwargs, match):
    X, y = _data()
    targets = np.eye(3)[y] if loss == "mse" else y
    trainer = _trainer(backend_name, loss)
    with pytest.raises(ValueError, match=match):
        trainer.fit(X, targets, epochs=1, verbose=0, **kwargs)
    assert trainer.step == 0


# ------------------------------------------------------------------ learning
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    from engine.demo import load_digits_splits
    (X, y), _, test = load_digits_splits(0)
    return X, y, test


@pytest.mark.parametrize("kwargs", [
    {"input_noise": 0.3}, {"mixup": 0.2}, {"class_weight": {c: 1.0 + c / 10 for c in range(10)}},
    {"sample_weight": "uniform"}, {"input_noise": 0.2, "mixup": 0.2, "sample_weight": "uniform"},
], ids=["noise", "mixup", "class_weight", "sample_weight", "all"])
def test_digits_are_learned_with_each_feature(backend_name, digits, kwargs):
    X, y, (X_test, y_test) = digits
    if kwargs.get("sample_weight") == "uniform":
        kwargs = {**kwargs, "sample_weight": np.random.default_rng(0).uniform(0.5, 1.5, len(X))}
    model = engine.MLP([64, 64, 10], seed=0, backend=backend_name)
    trainer = engine.Trainer(model, optimizer=engine.optim.Adam(lr=3e-3))
    trainer.fit(X, y, epochs=8, batch_size=32, verbose=0, **kwargs)
    # the same model without augmentation reaches about 0.97 on this split
    assert trainer.evaluate(X_test, y_test)["accuracy"] > 0.9


def test_a_data_parallel_job_of_one_trains_weighted_and_noised_as_one_process():
    """Each rank weights and noises its shard as the whole batch would be (offset_key);
    mixup, whose rows would mix across shards, is refused."""
    pytest.importorskip("mpi4py", reason='mpi4py is not installed (pip install "fusedense[mpi]")')
    from engine import distributed
    assert distributed.init("numpy") == (0, 1)
    X, y = _data(40)
    w = np.random.default_rng(3).uniform(0.0, 2.0, len(X))
    runs = []
    for data_parallel in (False, True):
        model = engine.MLP(SIZES, seed=1, backend="numpy")
        trainer = engine.Trainer(model, data_parallel=data_parallel)
        trainer.fit(X, y, epochs=2, batch_size=16, verbose=0, input_noise=0.3, sample_weight=w)
        runs.append(trainer)
        assert trainer.step == 6
    _assert_same_weights(*runs)
    with pytest.raises(ValueError, match="mixup with data_parallel"):
        runs[1].fit(X, y, epochs=1, verbose=0, mixup=0.2)
    assert runs[1].step == 6
