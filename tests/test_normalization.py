"""MLP(normalization="batch" | "layer"): PyTorch BatchNorm1d / LayerNorm semantics inside
the model, on every backend.

The kernels are tested op by op (tests/test_reference_norm.py, test_kernels_norm.py);
here the model: weights order and state, one training step against torch.nn (the same
weights, float64), evaluation with the running statistics (one row predicts as within a
batch), save/load and checkpoints of the running statistics, the refused one-row batch,
and, on the digits, the faster early training batch norm is for.
"""
import numpy as np
import pytest

import engine
from engine.demo import load_digits_splits


def _model(norm, backend="numpy", activation="relu", dtype="float64", sizes=(5, 7, 6, 3), seed=0, **kwargs):
    return engine.MLP(list(sizes), activation=activation, normalization=norm, seed=seed, backend=backend,
                      dtype=dtype, **kwargs)


def _data(n=12, d=5, k=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


def test_weights_are_in_keras_order_with_the_running_statistics():
    kinds = {"batch": ["W", "b", "gamma", "beta", "running_mean", "running_var"],
             "layer": ["W", "b", "gamma", "beta"], None: ["W", "b"]}
    for norm, expected in kinds.items():
        model = _model(norm, activation="prelu")
        layers = [[s.kind for s in model._layout.segments if s.layer == i] for i in range(3)]
        assert layers[0] == layers[1] == expected + ["slope"]
        assert layers[2] == ["W", "b"]  # the output layer is never normalized
        weights = model.get_weights()
        if norm is not None:
            np.testing.assert_array_equal(weights[2], np.ones(7))  # gamma
            np.testing.assert_array_equal(weights[3], np.zeros(7))  # beta
        if norm == "batch":
            np.testing.assert_array_equal(weights[4], np.zeros(7))  # running_mean
            np.testing.assert_array_equal(weights[5], np.ones(7))  # running_var
        # The running statistics are saved, not trained.
        assert model.num_parameters == sum(w.size for w, s in zip(weights, model._layout.segments)
                                           if not s.kind.startswith("running"))


def test_normalization_is_checked():
    with pytest.raises(ValueError, match="normalization must be None, 'batch' or 'layer'; got 'group'"):
        _model("group")
    with pytest.raises(ValueError, match=r"normalization must have one entry per hidden layer \(2\)"):
        _model(["batch"])
    assert _model(["batch", None]).config()["normalization"] == ["batch", None]


def _torch_twin(model, norm):
    """torch.nn layers with ``model``'s weights: Linear, the norm, ReLU per hidden layer."""
    torch = pytest.importorskip("torch", reason="PyTorch defines the semantics compared here")
    weights = model.get_weights()
    layers, w = [], 0
    for i, (fan_in, fan_out) in enumerate(zip(model.sizes[:-1], model.sizes[1:])):
        linear = torch.nn.Linear(fan_in, fan_out).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[w].T.copy()))
            linear.bias.copy_(torch.from_numpy(weights[w + 1]))
        layers.append(linear)
        w += 2
        if i < len(model.sizes) - 2:
            normalization = (torch.nn.BatchNorm1d(fan_out) if norm == "batch" else torch.nn.LayerNorm(fan_out)).double()
            layers += [normalization, torch.nn.ReLU()]
            w += 4 if norm == "batch" else 2
    return torch, torch.nn.Sequential(*layers)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_a_training_step_and_evaluation_match_torch(backend_name, norm):
    """Two SGD steps in float64 give torch's weights and running statistics; then predict
    (evaluation: the running statistics for batch norm) gives torch's eval outputs."""
    model = _model(norm, backend=backend_name)
    torch, twin = _torch_twin(model, norm)
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=0.1))
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for seed in (1, 2):
        X, y = _data(seed=seed)
        loss = trainer.train_step(X, y)
        optimizer.zero_grad()
        twin.train()
        expected = torch.nn.functional.cross_entropy(twin(torch.from_numpy(X)), torch.from_numpy(y))
        expected.backward()
        optimizer.step()
        assert loss == pytest.approx(expected.item(), rel=1e-12)
    state = {name: value.detach().numpy() for name, value in twin.state_dict().items()
             if not name.endswith("num_batches_tracked")}
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in model.get_weights()]),
                               # state_dict's order is get_weights' (torch's Linear weight is W.T)
                               np.concatenate([v.ravel() if v.ndim == 1 else v.T.ravel() for v in state.values()]),
                               rtol=1e-10, atol=1e-12)
    X, _ = _data(n=9, seed=3)
    twin.eval()
    np.testing.assert_allclose(model.logits(X), twin(torch.from_numpy(X)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_one_row_predicts_as_within_a_batch(backend_name, norm):
    """Evaluation normalizes each row alone (layer norm) or by the running statistics
    (batch norm): a row's output does not depend on the rest of the batch."""
    model = _model(norm, backend=backend_name, dtype="float32")
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=0.05, momentum=0.9))
    X, y = _data(n=64)
    trainer.fit(X, y, epochs=3, batch_size=16, verbose=0)
    batch = model.predict(X)
    rows = np.concatenate([model.predict(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(rows, batch, rtol=1e-5, atol=1e-6)  # float32 GEMMs of 1 and 64 rows round apart


def test_running_statistics_are_saved_and_resumed(tmp_path):
    X, y = _data(n=40)
    model = _model("batch")
    trainer = engine.Trainer(model, optimizer=engine.Adam(lr=1e-2))
    trainer.fit(X, y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = engine.load_model(tmp_path / "m.npz", backend="numpy")
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))

    trainer.save_checkpoint(tmp_path / "c.npz")
    trainer.fit(X, y, epochs=1, batch_size=8, verbose=0)
    resumed = engine.Trainer(_model("batch"), optimizer=engine.Adam(lr=1e-2))
    resumed.load_checkpoint(tmp_path / "c.npz")
    resumed.fit(X, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(resumed.model.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_one_row_training_batch_is_refused_before_any_update():
    X, y = _data(n=17)
    model = _model("batch")
    trainer = engine.Trainer(model)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"batch_size=8 leaves a last batch of 1 row"):
        trainer.fit(X, y, epochs=1, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="xb: batch norm trains on batches of at least 2 rows; got 1"):
        trainer.train_step(X[:1], y[:1])
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert trainer.step == 0
    engine.Trainer(_model("layer")).train_step(X[:1], y[:1])  # layer norm has no such limit


def test_batch_norm_trains_the_digits_faster_early():
    """API.md: a 3-hidden-layer MLP on the digits, SGD with momentum at lr 1e-2, reaches after
    2 epochs (mean of 3 seeds) a higher test accuracy with batch norm than without."""
    (X, y), _, (X_test, y_test) = load_digits_splits(seed=0)
    accuracy = {}
    for norm in (None, "batch"):
        scores = []
        for seed in range(3):
            model = engine.MLP([64, 64, 64, 64, 10], normalization=norm, seed=seed, backend="numba")
            trainer = engine.Trainer(model, optimizer=engine.SGD(lr=1e-2, momentum=0.9))
            trainer.fit(X, y, epochs=2, batch_size=32, verbose=0)
            scores.append(trainer.evaluate(X_test, y_test)["accuracy"])
        accuracy[norm] = float(np.mean(scores))
    assert accuracy["batch"] > accuracy[None], accuracy
