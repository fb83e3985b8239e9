"""Transfer and pretraining: MLP.freeze / unfreeze (no update, no decay, no weight-gradient
GEMM, optimizer state untouched), copy_layers_from, engine.pretrain_layerwise, and a
transfer from digits 0-4 to digits 5-9."""
import numpy as np
import pytest

import engine
from engine.demo import load_digits_splits

OPTIMIZERS = {
    "sgd": lambda: engine.SGD(lr=0.05, momentum=0.9, weight_decay=1e-2),
    "adagrad": lambda: engine.Adagrad(lr=0.05, weight_decay=1e-2),
    "rmsprop": lambda: engine.RMSprop(lr=1e-2, momentum=0.5, centered=True, weight_decay=1e-2),
    "adadelta": lambda: engine.Adadelta(weight_decay=1e-2),
    "adam": lambda: engine.Adam(lr=1e-2, amsgrad=True, weight_decay=1e-2),
    "adamw": lambda: engine.AdamW(lr=1e-2, weight_decay=0.1),
    "nadam": lambda: engine.NAdam(lr=1e-2, weight_decay=1e-2),
}


def classification(n=96, d=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.argmax(X @ rng.normal(size=(d, k)), axis=1)


def make_model(backend_name, sizes=(6, 12, 10, 8, 4), dtype="float32", seed=0, activation="relu", **kwargs):
    return engine.MLP(list(sizes), activation=activation, seed=seed, backend=backend_name, dtype=dtype, **kwargs)


def layer_weights_of(weights, model, layer):
    """The arrays of ``weights`` (a get_weights list of ``model``) that are ``layer``'s."""
    return [w for w, s in zip(weights, model._layout.segments) if s.layer == layer]


def layer_weights(model, layer):
    """The host arrays of ``layer``'s parameters, in get_weights order."""
    return layer_weights_of(model.get_weights(), model, layer)


def state_segments(trainer, layer):
    """Each optimizer state array's values in ``layer``'s segments (host copies)."""
    model, arrays = trainer.model, trainer.optimizer.state_dict()["arrays"]
    spans = [(s.offset, s.offset + s.size) for s in model._layout.segments if s.layer == layer]
    return {name: np.concatenate([a[lo:hi] for lo, hi in spans]) for name, a in arrays.items()}


# ------------------------------------------------------------------------ freeze
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("frozen", [2, [1], [0, 3], [-1]], ids=str)
def test_frozen_layers_are_bit_identical_after_fit(backend_name, optimizer, frozen):
    """No update, no decay (every optimizer decays here), no state change for frozen layers,
    whether they are the first ones, in the middle, the output layer or several runs apart;
    the other layers train. Dropout and prelu slopes included."""
    X, y = classification()
    model = make_model(backend_name, activation=["relu", "prelu", "tanh"], dropout=0.2)
    trainer = engine.Trainer(model, optimizer=OPTIMIZERS[optimizer](), clip_global_norm=1.0)
    trainer.fit(X, y, epochs=1, batch_size=32, verbose=0)  # state everywhere, before freezing
    before = model.get_weights()
    state_before = {layer: state_segments(trainer, layer) for layer in range(4)}
    model.freeze(frozen)
    indices = model.frozen_layers
    assert indices == tuple(sorted({i % 4 for i in ([0, 1] if frozen == 2 else frozen)}))
    trainer.fit(X, y, epochs=2, batch_size=32, verbose=0)
    for layer in range(4):
        for w0, w1 in zip(layer_weights_of(before, model, layer), layer_weights(model, layer)):
            if layer in indices:
                np.testing.assert_array_equal(w1, w0, err_msg=f"frozen layer {layer} moved")
            else:
                assert not np.array_equal(w1, w0), f"trained layer {layer} did not move"
        if layer in indices:
            for name, values in state_segments(trainer, layer).items():
                np.testing.assert_array_equal(values, state_before[layer][name],
                                              err_msg=f"{optimizer} state {name} of frozen layer {layer}")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "nadam"])
def test_a_step_with_frozen_layers_updates_the_others_as_without(backend_name, optimizer):
    """Without clipping, one step's update of a trained parameter depends on its own gradient
    only: with layer 1 frozen (two runs of trained segments) the others end where they end
    unfrozen; and NAdam's momentum product advances once per update, not once per run."""
    X, y = classification()
    free, frozen = make_model(backend_name), make_model(backend_name)
    frozen.freeze([1])
    trainers = [engine.Trainer(m, optimizer=OPTIMIZERS[optimizer]()) for m in (free, frozen)]
    for t in trainers:
        t.train_step(X[:32], y[:32])
    for layer in (0, 2, 3):
        for a, b in zip(layer_weights(free, layer), layer_weights(frozen, layer)):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=f"layer {layer}")
    for t in trainers:
        t.train_step(X[32:64], y[32:64])
    if optimizer == "nadam":
        assert trainers[1].optimizer.mu_product == trainers[0].optimizer.mu_product


class _Recording:
    """A backend module whose dense_backward calls are recorded (layer by dY's width)."""

    def __init__(self, k):
        self._k, self.calls = k, []

    def __getattr__(self, name):
        return getattr(self._k, name)

    def dense_backward(self, dY, X, W, Z, act, act_param, slope, dropout_p, key, dZ, dW, db, dslope, dX):
        self.calls.append((W.shape, dW is None, db is None, dslope is None, dX is None))
        self._k.dense_backward(dY, X, W, Z, act, act_param, slope, dropout_p, key, dZ, dW, db, dslope, dX)


def test_frozen_layers_compute_no_weight_gradients(backend_name):
    """A frozen layer's backward gets dW, db, dslope None (no weight-gradient GEMM); under the
    lowest trained layer there is no backward at all, and that layer computes no dX."""
    X, y = classification()
    model = make_model(backend_name, activation=["prelu", "relu", "prelu"])
    trainer = engine.Trainer(model)
    trainer.train_step(X[:16], y[:16])
    model.freeze([0, 2])
    recording = _Recording(model._k)
    model._k = recording
    trainer.train_step(X[:16], y[:16])
    # Layers 3, 2 (frozen: dX only), 1 (lowest trained: no dX); none for layer 0.
    assert recording.calls == [((8, 4), False, False, True, False), ((10, 8), True, True, True, False),
                               ((12, 10), False, False, True, True)]
    # The frozen layers' gradients were zeroed at freeze time and never written since.
    grads = model._k.to_host(model._grads)
    for s in model._layout.segments:
        segment = grads[s.offset:s.offset + s.size]
        if s.layer in (0, 2):
            assert not segment.any(), f"{s.kind} of frozen layer {s.layer}"
        else:
            assert segment.any(), f"{s.kind} of layer {s.layer}"


def test_everything_frozen_trains_nothing(backend_name):
    X, y = classification()
    model = make_model(backend_name)
    trainer = engine.Trainer(model)
    model.freeze(4)
    before = model.get_weights()
    loss = trainer.train_step(X[:16], y[:16])
    assert np.isfinite(loss)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_unfreeze_resumes_training(backend_name):
    X, y = classification()
    model = make_model(backend_name)
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=1e-2))
    model.freeze(2)
    trainer.fit(X, y, epochs=1, verbose=0)
    frozen_weights = layer_weights(model, 0) + layer_weights(model, 1)
    model.unfreeze([0])
    assert model.frozen_layers == (1,)
    trainer.fit(X, y, epochs=1, verbose=0)
    assert not np.array_equal(layer_weights(model, 0)[0], frozen_weights[0])
    np.testing.assert_array_equal(layer_weights(model, 1)[0], frozen_weights[2])
    model.unfreeze()
    assert model.frozen_layers == ()
    assert model._trained_runs is None  # one optimizer launch per step again
    trainer.fit(X, y, epochs=1, verbose=0)
    assert not np.array_equal(layer_weights(model, 1)[0], frozen_weights[2])


def test_freeze_rejects_bad_layers_and_changes_nothing():
    model = make_model("numpy")
    model.freeze([1])
    for bad, error, words in [(5, ValueError, "layers"), (-1, ValueError, "layers"), ([0, 4], ValueError, r"layers\[1\]"),
                              ([0, -5], ValueError, r"layers\[1\]"), ("all", TypeError, "layers"),
                              ([1.0], TypeError, r"layers\[0\]"), (True, TypeError, "layers"),
                              ([True], TypeError, r"layers\[0\]"), (None, TypeError, "layers")]:
        with pytest.raises(error, match=words):
            model.freeze(bad)
        assert model.frozen_layers == (1,)
    with pytest.raises(ValueError, match="layers"):
        model.unfreeze([7])
    assert model.frozen_layers == (1,)
    model.freeze(0)  # the first 0 layers: nothing more
    assert model.frozen_layers == (1,)


def test_checkpoint_of_a_frozen_model_resumes_exactly(tmp_path, backend_name):
    """Checkpoints hold every parameter and the whole optimizer state (frozen segments'
    too); the frozen layers are set-up, frozen again after loading."""
    X, y = classification()
    a = make_model(backend_name, dropout=0.1)
    ta = engine.Trainer(a, optimizer=engine.AdamW(lr=1e-2))
    ta.fit(X, y, epochs=1, verbose=0)
    a.freeze([0, 2])
    ta.fit(X, y, epochs=1, verbose=0)
    ta.save_checkpoint(tmp_path / "c.npz")
    ta.fit(X, y, epochs=2, verbose=0)
    b = make_model(backend_name, dropout=0.1)
    tb = engine.Trainer(b, optimizer=engine.AdamW(lr=1e-2))
    tb.load_checkpoint(tmp_path / "c.npz")
    b.freeze([0, 2])
    tb.fit(X, y, epochs=2, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wb, wa)


# ------------------------------------------------------------- copy_layers_from
def test_copy_layers_from_copies_the_first_layers_only(backend_name):
    source = make_model(backend_name, sizes=(6, 12, 10, 3), activation=["prelu", "relu"], seed=1, dtype="float64")
    target = make_model(backend_name, sizes=(6, 12, 10, 5, 2), activation=["prelu", "tanh", "relu"], seed=2)
    before = target.get_weights()
    target.copy_layers_from(source, 2)
    for layer in (0, 1):
        for got, want in zip(layer_weights(target, layer), layer_weights(source, layer)):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want.astype(np.float32))
    for layer in (2, 3):
        for got, want in zip(layer_weights(target, layer), layer_weights_of(before, target, layer)):
            np.testing.assert_array_equal(got, want)


def test_copy_layers_from_rejects_mismatches_and_writes_nothing():
    target = make_model("numpy", sizes=(6, 12, 10, 4))
    before = target.get_weights()
    cases = [
        (make_model("numpy", sizes=(6, 12, 9, 4)), 2, ValueError, r"sizes.*\[6, 12, 10\].*\[6, 12, 9\]"),
        (make_model("numpy", sizes=(6, 12, 4)), 3, ValueError, r"n_layers must be in \[1, 2\]"),
        (make_model("numpy", sizes=(6, 12, 4)), 0, ValueError, "n_layers"),
        (make_model("numpy", sizes=(6, 12, 10, 4), activation=["prelu", "relu"]), 1, ValueError,
         "layer 0 has the parameters W, b here but W, b, slope in other"),
        (make_model("numpy", sizes=(6, 12, 4)), 1.0, TypeError, "n_layers"),
        (before, 1, TypeError, "other must be an engine.MLP"),
    ]
    for other, n_layers, error, words in cases:
        with pytest.raises(error, match=words):
            target.copy_layers_from(other, n_layers)
    for a, b in zip(target.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ pretrain_layerwise
def test_pretrain_layerwise_is_the_greedy_stages():
    """The returned MLP of ``sizes`` is, bit for bit, the stages run by hand: [8, 16, 4]
    trained, its hidden layer copied into [8, 16, 12, 4], frozen there, the rest trained;
    so its first layer is what stage 1 trained. Every layer trainable afterwards."""
    X, y = classification(n=80, d=8, k=4, seed=3)
    kwargs = dict(activation=["tanh", "relu"], seed=5, backend="numba")
    model = engine.pretrain_layerwise([8, 16, 12, 4], X, y, [2, 3], model_kwargs=kwargs,
                                      fit_kwargs=dict(batch_size=16, verbose=0),
                                      loss="cross_entropy", optimizer=engine.AdamW(lr=1e-2))
    assert isinstance(model, engine.MLP) and model.sizes == [8, 16, 12, 4]
    assert model.frozen_layers == ()
    assert [a.name for a in model.activations] == ["tanh", "relu"]

    first = engine.MLP([8, 16, 4], activation=["tanh"], seed=5, backend="numba")
    engine.Trainer(first, optimizer=engine.AdamW(lr=1e-2)).fit(X, y, epochs=2, batch_size=16, verbose=0)
    second = engine.MLP([8, 16, 12, 4], **kwargs)
    second.copy_layers_from(first, 1)
    second.freeze(1)
    engine.Trainer(second, optimizer=engine.AdamW(lr=1e-2)).fit(X, y, epochs=3, batch_size=16, verbose=0)
    for got, want in zip(model.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(layer_weights(model, 0), layer_weights(first, 0)):
        np.testing.assert_array_equal(got, want)


def test_pretrain_layerwise_on_digits_reaches_a_sensible_accuracy():
    (X_train, y_train), _, (X_test, y_test) = load_digits_splits(0)
    model = engine.pretrain_layerwise([64, 64, 32, 10], X_train, y_train, 8, model_kwargs=dict(seed=0),
                                      fit_kwargs=dict(verbose=0), optimizer="adamw")
    accuracy = engine.Trainer(model).evaluate(X_test, y_test)["accuracy"]
    assert accuracy > 0.9, f"pretrained [64, 64, 32, 10] reaches test accuracy {accuracy:.3f}"


def test_pretrain_layerwise_rejects_bad_arguments():
    X, y = classification()
    for kwargs, error, words in [
        (dict(epochs_per_layer=[1]), ValueError, "one entry per stage"),
        (dict(epochs_per_layer=-1), ValueError, "epochs_per_layer"),
        (dict(epochs_per_layer=1, model_kwargs=dict(activation=["relu"])), ValueError, "one entry per hidden layer"),
        (dict(epochs_per_layer=1, model_kwargs=[("seed", 0)]), TypeError, "model_kwargs"),
        (dict(epochs_per_layer=1, freeze_previous=1), TypeError, "freeze_previous"),
    ]:
        with pytest.raises(error, match=words):
            engine.pretrain_layerwise([6, 8, 8, 4], X, y, **kwargs)
    bound = engine.AdamW()
    engine.Trainer(make_model("numpy"), optimizer=bound)
    with pytest.raises(ValueError, match="already bound"):
        engine.pretrain_layerwise([6, 8, 8, 4], X, y, 1, optimizer=bound)


# ---------------------------------------------------------------------- transfer
def test_transfer_from_digits_0_4_to_5_9():
    """The issue's example: train on digits 0-4, reuse the hidden layers (copy_layers_from,
    freeze) for 5-9 under a new output layer. Only that layer trains, the hidden ones stay
    bit for bit; the transferred features beat random frozen ones of the same shape (the
    same training otherwise), and unfreezing to fine-tune the whole model then learns the
    new task."""
    (X_train, y_train), _, (X_test, y_test) = load_digits_splits(0)
    low, high, test_high = y_train < 5, y_train >= 5, y_test >= 5
    sizes = [64, 32, 16, 5]  # features narrow enough that random ones are poor
    source = engine.MLP(sizes, seed=0)
    engine.Trainer(source, optimizer=engine.AdamW(lr=2e-3)).fit(X_train[low], y_train[low], epochs=20, verbose=0)
    hidden = [w for w, s in zip(source.get_weights(), source._layout.segments) if s.layer < 2]

    accuracy = {}
    for features in ("transferred", "random"):
        target = engine.MLP(sizes, seed=1)
        if features == "transferred":
            target.copy_layers_from(source, 2)
        target.freeze(2)
        trainer = engine.Trainer(target, optimizer=engine.AdamW(lr=1e-2))
        trainer.fit(X_train[high], y_train[high] - 5, epochs=20, verbose=0)
        accuracy[features] = trainer.evaluate(X_test[test_high], y_test[test_high] - 5)["accuracy"]
        if features == "transferred":
            for got, want in zip(target.get_weights(), hidden):
                np.testing.assert_array_equal(got, want)
            target.unfreeze()
            trainer.fit(X_train[high], y_train[high] - 5, epochs=10, verbose=0)
            accuracy["fine-tuned"] = trainer.evaluate(X_test[test_high], y_test[test_high] - 5)["accuracy"]
    report = ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items())
    assert accuracy["transferred"] > max(0.75, accuracy["random"] + 0.05), report
    assert accuracy["fine-tuned"] > 0.95, report
