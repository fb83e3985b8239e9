"""engine.Trainer: steps, hand-computed updates, clipping, decay masks, schedules, fit, metrics,
EarlyStopping, evaluate and exact checkpoint resume."""
import math

import numpy as np
import pytest
from conftest import TOLERANCES

import engine


def tol(dtype, factor=1):
    """conftest's per-op TOLERANCES times ``factor``. They bound one op against the reference;
    here a whole model is compared with a float64 NumPy recomputation, so factor is the number
    of chained rounding steps, roughly (a layer, an activation, a loss, an update: 2 to 8)."""
    t = TOLERANCES[np.dtype(dtype).type]
    return dict(rtol=t["rtol"] * factor, atol=t["atol"] * factor)


def approx(value, dtype, factor=1):
    t = tol(dtype, factor)
    return pytest.approx(value, rel=t["rtol"], abs=t["atol"])


def classification(n=60, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.argmax(X @ rng.normal(size=(d, k)), axis=1)
    return X, y


def regression(n=40, d=4, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, X @ rng.normal(size=(d, k)) + 0.1 * rng.normal(size=(n, k))


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits, y):
    return -log_softmax(logits.astype(np.float64))[np.arange(len(y)), y].mean()


def logits_of(model, X):
    """Logits through the public API: the same weights in an output='none' twin."""
    twin = engine.MLP(model.sizes, activation=model.activations, output="none", backend=model.backend,
                      dtype=model.dtype, seed=0)
    twin.set_weights(model.get_weights())
    return twin.predict(X).astype(np.float64)


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------- train_step
def test_train_step_returns_loss_before_update(backend_name, dtype):
    X, y = classification()
    model = engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, loss="cross_entropy", optimizer=engine.AdamW(lr=0.05))
    before_eval = trainer.evaluate(X, y)["loss"]
    before_hand = cross_entropy(logits_of(model, X), y)
    w0 = model.get_weights()
    loss = trainer.train_step(X, y)
    assert isinstance(loss, float)
    assert loss == approx(before_eval, dtype, 4)
    assert loss == approx(before_hand, dtype, 4)
    after = trainer.evaluate(X, y)["loss"]
    assert after < loss  # a sensible step on the batch it saw lowers its loss
    assert all(not np.array_equal(a, b) for a, b in zip(w0, model.get_weights()))
    assert trainer.optimizer.iterations == 1
    assert trainer.train_step(X, y) == approx(after, dtype, 4)


@pytest.mark.parametrize("weight_decay, decay_bias", [(0.0, True), (0.3, True), (0.3, False)])
def test_hand_computed_sgd_step(weight_decay, decay_bias, backend_name, dtype):
    X, y = regression(n=7, d=3, k=2)
    model = engine.MLP([3, 2], seed=1, backend=backend_name, dtype=dtype)
    model.set_weights([np.array([[0.5, -1.0], [0.25, 2.0], [-0.75, 0.1]]), np.array([0.3, -0.2])])
    W, b = (w.astype(np.float64) for w in model.get_weights())
    lr = 0.1
    trainer = engine.Trainer(model, loss="mse", metrics=(),
                             optimizer=engine.SGD(lr=lr, weight_decay=weight_decay, decay_bias=decay_bias))
    loss = trainer.train_step(X, y)

    Z = X @ W + b
    expected_loss = np.mean((Z - y) ** 2)
    dZ = 2.0 * (Z - y) / Z.size  # mean over all N*K elements
    gW = X.T @ dZ + weight_decay * W
    gb = dZ.sum(axis=0) + (weight_decay * b if decay_bias else 0.0)
    W1, b1 = model.get_weights()
    assert loss == approx(expected_loss, dtype, 4)
    np.testing.assert_allclose(W1, W - lr * gW, **tol(dtype, 4))
    np.testing.assert_allclose(b1, b - lr * gb, **tol(dtype, 4))


def test_gradient_matches_finite_differences(backend_name):
    """SGD(lr=1) moves every parameter by minus the gradient of the evaluated loss."""
    X, y = classification(n=12, d=3, k=3, seed=4)
    make = lambda: engine.MLP([3, 4, 3], activation="tanh", seed=2, backend=backend_name, dtype="float64")
    model = make()
    w0 = model.get_weights()
    engine.Trainer(model, optimizer=engine.SGD(lr=1.0)).train_step(X, y)
    grads = [a - b for a, b in zip(w0, model.get_weights())]

    probe = make()
    trainer = engine.Trainer(probe)
    eps = 1e-6
    for i, w in enumerate(w0):
        for j in range(w.size):
            losses = []
            for sign in (1, -1):
                shifted = [v.copy() for v in w0]
                shifted[i].flat[j] += sign * eps
                probe.set_weights(shifted)
                losses.append(trainer.evaluate(X, y)["loss"])
            numeric = (losses[0] - losses[1]) / (2 * eps)
            # central differences: O(eps^2) truncation plus ~1e-16/eps rounding, ~1e-9 here
            assert grads[i].flat[j] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (i, j)


# --------------------------------------------------------------------- clipping
CLIP_SIZES = [4, 5, 3]


def clip_setup(backend_name, dtype):
    X, y = regression(n=9, d=4, k=3, seed=3)
    y = 5.0 * y  # large residuals: gradients worth clipping
    make = lambda: engine.MLP(CLIP_SIZES, activation="tanh", seed=5, bias_init="uniform", backend=backend_name,
                              dtype=dtype)
    model = make()
    w0 = [w.astype(np.float64) for w in model.get_weights()]
    engine.Trainer(model, loss="mse", optimizer=engine.SGD(lr=1.0)).train_step(X, y)
    grads = [a - b for a, b in zip(w0, model.get_weights())]  # delta = -lr * g with lr = 1
    return X, y, make, w0, grads


def clipped_step(make, X, y, optimizer=None, **clip):
    model = make()
    engine.Trainer(model, loss="mse", optimizer=optimizer or engine.SGD(lr=1.0), **clip).train_step(X, y)
    return model.get_weights()


def test_clip_value(backend_name, dtype):
    X, y, make, w0, grads = clip_setup(backend_name, dtype)
    v = 0.3 * max(np.abs(g).max() for g in grads)
    assert sum((np.abs(g) > v).sum() for g in grads) > 0 and sum((np.abs(g) < v).sum() for g in grads) > 0
    got = clipped_step(make, X, y, clip_value=v)
    for w, g, new in zip(w0, grads, got):
        np.testing.assert_allclose(new, w - np.clip(g, -v, v), **tol(dtype, 4))


def test_clip_norm_per_parameter(backend_name, dtype):
    X, y, make, w0, grads = clip_setup(backend_name, dtype)
    norms = np.array([np.linalg.norm(g) for g in grads])
    c = float(np.median(norms))
    assert (norms > 1.05 * c).any() and (norms < 0.95 * c).any()  # some clipped, some not
    got = clipped_step(make, X, y, clip_norm=c)
    for w, g, n, new in zip(w0, grads, norms, got):
        expected = g * min(1.0, c / n)
        np.testing.assert_allclose(new, w - expected, **tol(dtype, 4))
        # the step actually taken has norm <= c (c/(norm + 1e-6) would round the same at this tolerance)
        assert np.linalg.norm(w - new) <= c * (1 + 1e-4)


@pytest.mark.parametrize("fraction", [0.3, 2.0])
def test_clip_global_norm(fraction, backend_name, dtype):
    X, y, make, w0, grads = clip_setup(backend_name, dtype)
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    c = fraction * total
    scale = min(1.0, c / (total + 1e-6))  # torch clip_grad_norm_
    got = clipped_step(make, X, y, clip_global_norm=c)
    for w, g, new in zip(w0, grads, got):
        np.testing.assert_allclose(new, w - scale * g, **tol(dtype, 4))


def test_clipping_comes_before_weight_decay(backend_name, dtype):
    # torch order: clip the loss gradient, then the optimizer adds wd * p (not clipped).
    X, y, make, w0, grads = clip_setup(backend_name, dtype)
    v, wd = 0.2 * max(np.abs(g).max() for g in grads), 0.5
    got = clipped_step(make, X, y, optimizer=engine.SGD(lr=1.0, weight_decay=wd), clip_value=v)
    for w, g, new in zip(w0, grads, got):
        np.testing.assert_allclose(new, w - (np.clip(g, -v, v) + wd * w), **tol(dtype, 4))


def test_clipping_comes_before_momentum(backend_name):
    # Two steps of SGD with momentum on clipped gradients: buf = g1c, then 0.9 buf + g2c.
    X, y = regression(n=9, d=4, k=3, seed=3)
    y = 5.0 * y
    v, mom = 0.05, 0.9
    clipped = engine.MLP(CLIP_SIZES, activation="tanh", seed=5, backend=backend_name, dtype="float64")
    probe = engine.MLP(CLIP_SIZES, activation="tanh", seed=5, backend=backend_name, dtype="float64")
    t_clip = engine.Trainer(clipped, loss="mse", optimizer=engine.SGD(lr=1.0, momentum=mom), clip_value=v)
    buf = None
    for _ in range(2):
        w0 = clipped.get_weights()
        probe.set_weights(w0)
        engine.Trainer(probe, loss="mse", optimizer=engine.SGD(lr=1.0)).train_step(X, y)
        g = [np.clip(a - b, -v, v) for a, b in zip(w0, probe.get_weights())]
        buf = g if buf is None else [mom * bb + gg for bb, gg in zip(buf, g)]
        t_clip.train_step(X, y)
        for w, bb, new in zip(w0, buf, clipped.get_weights()):
            # float64, but g is recovered as a difference of weights (cancellation): 10x conftest's
            np.testing.assert_allclose(new, w - bb, rtol=1e-10, atol=1e-11)


# ----------------------------------------------------------------- weight decay
def _nonzero_bias_model(backend_name, dtype, activation="relu"):
    model = engine.MLP([4, 6, 3], activation=activation, seed=3, bias_init="uniform", backend=backend_name,
                       dtype=dtype)
    return model


@pytest.mark.parametrize("decay_bias", [False, True])
def test_adamw_decay_bias(decay_bias, backend_name, dtype):
    """One AdamW step with and without weight decay from the same weights: the difference is
    exactly the decoupled decay lr * wd * p0 on decayed parameters and zero on exempt ones."""
    X, y = classification(n=20, d=4, k=3)
    lr, wd = 0.1, 0.5
    plain = _nonzero_bias_model(backend_name, dtype, "prelu")
    decayed = _nonzero_bias_model(backend_name, dtype, "prelu")
    w0 = plain.get_weights()
    engine.Trainer(plain, optimizer=engine.AdamW(lr=lr, weight_decay=0.0)).train_step(X, y)
    engine.Trainer(decayed, optimizer=engine.AdamW(lr=lr, weight_decay=wd, decay_bias=decay_bias)).train_step(X, y)
    for p0, a, b in zip(w0, plain.get_weights(), decayed.get_weights()):
        if p0.ndim == 1 and not decay_bias:  # biases and prelu slopes are exempt
            np.testing.assert_array_equal(b, a)
        else:
            np.testing.assert_allclose(a.astype(np.float64) - b, lr * wd * p0, **tol(dtype, 4))
            assert not np.array_equal(a, b)


def test_adamw_decay_with_zero_gradient(backend_name):
    """Zero loss gradient (targets = predictions, MSE): AdamW only decays, p *= 1 - lr*wd,
    and leaves biases alone with decay_bias=False."""
    X = np.random.default_rng(0).normal(size=(10, 4))
    model = _nonzero_bias_model(backend_name, "float64", "identity")
    y = model.predict(X)
    w0 = model.get_weights()
    lr, wd = 0.1, 0.2
    engine.Trainer(model, loss="mse", optimizer=engine.AdamW(lr=lr, weight_decay=wd, decay_bias=False)).train_step(X, y)
    W1, b1, W2, b2 = model.get_weights()
    # the gradient is zero up to rounding of the two forwards (Adam would turn such a g << eps
    # into a step of ~lr*g/eps, far below 1e-9); any real gradient would show at rtol 1e-9
    np.testing.assert_allclose(W1, w0[0] * (1 - lr * wd), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(W2, w0[2] * (1 - lr * wd), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b1, w0[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b2, w0[3], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda wd, d: engine.SGD(lr=0.1, momentum=0.5, weight_decay=wd, decay_bias=d),
    lambda wd, d: engine.Adam(lr=0.1, weight_decay=wd, decay_bias=d),
    lambda wd, d: engine.NAdam(lr=0.1, weight_decay=wd, decay_bias=d),
    lambda wd, d: engine.RMSprop(lr=0.1, weight_decay=wd, decay_bias=d),
    lambda wd, d: engine.Adagrad(lr=0.1, weight_decay=wd, decay_bias=d),
    lambda wd, d: engine.Adadelta(lr=0.1, weight_decay=wd, decay_bias=d),
], ids=["sgd", "adam", "nadam", "rmsprop", "adagrad", "adadelta"])
def test_decay_bias_false_biases_as_without_decay(make, backend_name):
    """Coupled decay: with decay_bias=False the biases move exactly as with weight_decay=0,
    the weights exactly as with decay_bias=True."""
    X, y = classification(n=20, d=4, k=3)
    runs = {}
    for key, (wd, decay_bias) in {"decay": (0.5, True), "exempt": (0.5, False), "none": (0.0, True)}.items():
        model = _nonzero_bias_model(backend_name, "float64")
        engine.Trainer(model, optimizer=make(wd, decay_bias)).train_step(X, y)
        runs[key] = model.get_weights()
    for i, (a, b, c) in enumerate(zip(runs["decay"], runs["exempt"], runs["none"])):
        if a.ndim == 1:
            np.testing.assert_array_equal(b, c)
            assert not np.array_equal(a, b), f"parameter {i}: decay_bias=True should decay the bias"
        else:
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c)


# ---------------------------------------------------------------- lr schedules
def test_lr_schedule_called_with_update_index(backend_name):
    X, y = classification(n=30)
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.01

    trainer = engine.Trainer(engine.MLP([5, 4, 3], seed=0, backend=backend_name), optimizer=engine.SGD(lr=schedule))
    trainer.train_step(X, y)
    trainer.train_step(X, y)
    assert calls == [0, 1]
    trainer.fit(X, y, epochs=2, batch_size=10, verbose=0)  # 3 batches per epoch
    assert calls == list(range(8))


def test_lr_schedule_values_are_used(backend_name, dtype):
    X, y = classification(n=30)
    model = engine.MLP([5, 4, 3], seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=lambda s: [0.0, 0.5, 0.0][s]))
    w0 = model.get_weights()
    trainer.train_step(X, y)
    assert_weights_equal(model.get_weights(), w0)  # lr 0: no change
    trainer.train_step(X, y)
    w1 = model.get_weights()
    assert not np.array_equal(w1[0], w0[0])
    trainer.train_step(X, y)
    assert_weights_equal(model.get_weights(), w1)
    assert trainer.optimizer.iterations == 3


def test_schedule_object_matches_constant_lr(backend_name):
    X, y = classification(n=30)
    a = engine.MLP([5, 4, 3], seed=0, backend=backend_name, dtype="float64")
    b = engine.MLP([5, 4, 3], seed=0, backend=backend_name, dtype="float64")
    engine.Trainer(a, optimizer=engine.Adam(lr=engine.schedules.Constant(0.01))).fit(X, y, epochs=1, verbose=0)
    engine.Trainer(b, optimizer=engine.Adam(lr=0.01)).fit(X, y, epochs=1, verbose=0)
    assert_weights_equal(a.get_weights(), b.get_weights())


# -------------------------------------------------------------------------- fit
def test_fit_history_keys_and_lengths(backend_name):
    X, y = classification(n=50)
    model = engine.MLP([5, 8, 3], seed=0, backend=backend_name)
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=1e-2))
    history = trainer.fit(X, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "lr", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in history.history.values())
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert all(0 <= a <= 1 for a in history.history["accuracy"] + history.history["val_accuracy"])
    assert history.history["loss"][-1] < history.history["loss"][0]

    plain = engine.Trainer(engine.MLP([5, 8, 3], seed=0, backend=backend_name)).fit(X, y, epochs=2, verbose=0)
    assert set(plain.history) == {"loss", "accuracy", "lr"}


def test_fit_epoch_loss_and_accuracy_aggregate_all_samples(backend_name):
    """With shuffle=False fit equals train_step over consecutive slices; its epoch loss is
    the sample-weighted mean of the batch losses (unequal batches 16,16,16,2) and its
    accuracy counts rows of the pre-update logits of each batch."""
    X, y = classification(n=50)
    bs = 16
    a = engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype="float64")
    b = engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype="float64")
    history = engine.Trainer(a, optimizer=engine.SGD(lr=0.5)).fit(X, y, epochs=1, batch_size=bs, shuffle=False,
                                                                 verbose=0)
    manual = engine.Trainer(b, optimizer=engine.SGD(lr=0.5))
    losses, sizes, correct = [], [], 0
    for start in range(0, len(X), bs):
        xb, yb = X[start:start + bs], y[start:start + bs]
        correct += int((logits_of(b, xb).argmax(axis=1) == yb).sum())
        losses.append(manual.train_step(xb, yb))
        sizes.append(len(xb))
    assert sizes == [16, 16, 16, 2]
    assert_weights_equal(a.get_weights(), b.get_weights())
    weighted = np.dot(losses, sizes) / sum(sizes)
    assert abs(weighted - np.mean(losses)) > 1e-3  # the two aggregations differ here
    assert history.history["loss"][0] == pytest.approx(weighted, rel=1e-12)
    assert history.history["accuracy"][0] == pytest.approx(correct / len(X), rel=1e-12)


def test_fit_shuffle(backend_name):
    X, y = classification(n=48)
    weights = []
    for shuffle, seed in ((False, 0), (True, 0), (True, 0), (True, 1)):
        model = engine.MLP([5, 8, 3], seed=seed, backend=backend_name, dtype="float64")
        model.set_weights(engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype="float64").get_weights())
        engine.Trainer(model, optimizer=engine.SGD(lr=0.3)).fit(X, y, epochs=2, batch_size=8, shuffle=shuffle,
                                                               verbose=0)
        weights.append(model.get_weights())
    unshuffled, shuffled, shuffled_again, other_seed = weights
    assert not np.array_equal(unshuffled[0], shuffled[0])
    assert_weights_equal(shuffled, shuffled_again)
    assert not np.array_equal(shuffled[0], other_seed[0])


def test_fit_each_epoch_sees_every_row_once_in_a_new_order(backend_name):
    X, y = classification(n=24)
    model = engine.MLP([5, 4, 3], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=0.0))  # weights never change
    full = trainer.evaluate(X, y)["loss"]

    class BatchLosses(engine.callbacks.Callback):
        def __init__(self):
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append([])

        def on_batch_end(self, batch, logs=None):
            self.epochs[-1].append(logs["loss"])

    for shuffle in (True, False):
        spy = BatchLosses()
        history = trainer.fit(X, y, epochs=3, batch_size=5, shuffle=shuffle, verbose=0, callbacks=[spy])
        for value in history.history["loss"]:  # every row once per epoch
            assert value == pytest.approx(full, rel=1e-12)
        first, second, third = spy.epochs
        assert len(first) == 5
        if shuffle:
            assert first != second and second != third
        else:
            assert first == second == third
            for b, loss in enumerate(first):
                assert loss == pytest.approx(trainer.evaluate(X[5 * b:5 * b + 5], y[5 * b:5 * b + 5])["loss"],
                                             rel=1e-12)


def test_validation_split_uses_last_rows(backend_name):
    X, y = classification(n=50)
    n_val = 10
    a = engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype="float64")
    b = engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype="float64")
    ta = engine.Trainer(a, optimizer=engine.AdamW(lr=1e-2))
    tb = engine.Trainer(b, optimizer=engine.AdamW(lr=1e-2))
    history = ta.fit(X, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0)
    tb.fit(X[:-n_val], y[:-n_val], epochs=2, batch_size=8, verbose=0)  # Keras: the last rows, unshuffled
    assert_weights_equal(a.get_weights(), b.get_weights())
    val = ta.evaluate(X[-n_val:], y[-n_val:])
    assert history.history["val_loss"][-1] == pytest.approx(val["loss"], rel=1e-12)
    assert history.history["val_accuracy"][-1] == pytest.approx(val["accuracy"], rel=1e-12)


def test_validation_data(backend_name):
    X, y = classification(n=50)
    Xv, yv = classification(n=17, seed=9)
    model = engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=1e-2))
    history = trainer.fit(X, y, epochs=2, batch_size=8, validation_data=(Xv, yv), verbose=0)
    val = trainer.evaluate(Xv, yv)
    assert history.history["val_loss"][-1] == pytest.approx(val["loss"], rel=1e-12)
    assert history.history["val_loss"][-1] == pytest.approx(cross_entropy(logits_of(model, Xv), yv), rel=1e-11)
    assert history.history["val_accuracy"][-1] == pytest.approx(val["accuracy"], rel=1e-12)
    assert history.history["val_loss"][0] != history.history["val_loss"][1]


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_fit_verbose(verbose, backend_name, capsys):
    X, y = classification(n=40)
    trainer = engine.Trainer(engine.MLP([5, 8, 3], seed=0, backend=backend_name))
    history = trainer.fit(X, y, epochs=2, batch_size=16, validation_split=0.25, verbose=verbose)
    out, err = capsys.readouterr()
    assert len(history.history["loss"]) == 2
    if verbose == 0:
        assert out == "" and err == ""
    elif verbose == 1:
        assert "1/2" in out + err and "2/2" in out + err  # a progress bar per epoch
    else:
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 2 and "loss" in lines[0] and "val_loss" in lines[1]


def test_fit_epochs_zero_and_callbacks_called(backend_name):
    X, y = classification(n=30)
    events = []

    class Recorder(engine.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("begin")

        def on_epoch_end(self, epoch, logs=None):
            events.append(("epoch", epoch, sorted(logs)))

        def on_batch_end(self, batch, logs=None):
            events.append("batch")

        def on_train_end(self, logs=None):
            events.append("end")

    model = engine.MLP([5, 4, 3], seed=0, backend=backend_name)
    w0 = model.get_weights()
    trainer = engine.Trainer(model, callbacks=[Recorder()])
    trainer.fit(X, y, epochs=0, verbose=0)
    assert_weights_equal(model.get_weights(), w0)
    assert events == ["begin", "end"]
    events.clear()
    trainer.fit(X, y, epochs=2, batch_size=10, verbose=0)
    assert events == ["begin"] + (["batch"] * 3 + [("epoch", 0, ["accuracy", "loss", "lr"])]) \
        + (["batch"] * 3 + [("epoch", 1, ["accuracy", "loss", "lr"])]) + ["end"]


# --------------------------------------------------------------- EarlyStopping
class WeightsPerEpoch(engine.callbacks.Callback):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.trainer.model.get_weights())


def _contrary_run(backend_name, restore, patience=2, epochs=20):
    """Train on (X, y) and validate on flipped labels: val_loss rises from the first epoch."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] > 0).astype(np.int64)
    model = engine.MLP([4, 16, 2], seed=0, backend=backend_name, dtype="float64")
    recorder = WeightsPerEpoch()
    stopper = engine.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=restore)
    trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=0.05), callbacks=[stopper])
    history = trainer.fit(X, y, epochs=epochs, batch_size=16, validation_data=(X, 1 - y), verbose=0,
                          callbacks=[recorder])
    return model, history.history, recorder.weights


@pytest.mark.parametrize("patience", [0, 2])
def test_early_stopping_restores_best_weights(patience, backend_name):
    model, history, per_epoch = _contrary_run(backend_name, restore=True, patience=patience)
    val = history["val_loss"]
    assert all(b > a for a, b in zip(val, val[1:])), f"premise: val_loss should rise every epoch, got {val}"
    # epoch 0 is the best; Keras patience counts epochs without improvement (0 stops at the first)
    assert len(val) == max(patience, 1) + 1 == len(per_epoch)
    assert_weights_equal(model.get_weights(), per_epoch[0])


def test_early_stopping_without_restore_keeps_last_weights(backend_name):
    model, history, per_epoch = _contrary_run(backend_name, restore=False)
    assert len(history["val_loss"]) == 3
    assert_weights_equal(model.get_weights(), per_epoch[-1])
    assert not np.array_equal(per_epoch[-1][0], per_epoch[0][0])


def test_early_stopping_min_delta_and_improving_runs(backend_name):
    X, y = classification(n=40)
    for min_delta, expected_epochs in ((0.0, 6), (1e9, 3)):
        model = engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype="float64")
        trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=1e-2),
                                 callbacks=[engine.EarlyStopping("val_loss", patience=2, min_delta=min_delta)])
        history = trainer.fit(X, y, epochs=6, batch_size=8, validation_data=(X, y), verbose=0).history
        assert len(history["loss"]) == expected_epochs
        if min_delta == 0.0:  # it improved every epoch: ran to the end
            assert all(b < a for a, b in zip(history["val_loss"], history["val_loss"][1:]))


# ------------------------------------------------------------------- metrics
def test_mean_metric_weighted():
    m = engine.metrics.Mean()
    m.update([1.0, 2.0, 3.0])
    m.update([10.0], weight=3.0)
    assert m.compute() == pytest.approx((1 + 2 + 3 + 30) / 6)
    m.update(np.array([[4.0, 0.0]]), weight=np.array([[0.5, 0.5]]))
    assert m.compute() == pytest.approx((36 + 2.0) / 7)
    m.reset()
    m.update([5.0])
    assert m.compute() == 5.0


def test_accuracy_metric_aggregates_over_updates():
    m = engine.metrics.Accuracy()
    scores = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0]])
    m.update(np.array([0, 1, 2]), scores)          # 3 of 3
    m.update(np.array([1]), np.array([[5.0, 0.0, 0.0]]))  # 0 of 1
    assert m.compute() == pytest.approx(3 / 4)     # not (1 + 0) / 2
    m.update(np.eye(3)[[0, 1, 0]], scores)         # one-hot targets: 2 of 3
    assert m.compute() == pytest.approx(5 / 7)
    m.reset()
    m.update(np.array([1.0, 0.0, 1.0]), np.array([[0.3], [-2.0], [-0.1]]))  # one logit: > 0 is class 1
    assert m.compute() == pytest.approx(2 / 3)


def test_mse_metric_aggregates_over_updates():
    m = engine.metrics.MSE()
    m.update(np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]), np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]))
    m.update(np.array([[0.0, 0.0]]), np.array([[3.0, 1.0]]))
    assert m.compute() == pytest.approx(10.0 / 8)  # not (0 + 5) / 2
    m.reset()
    m.update(np.array([1.0, 2.0]), np.array([[2.0], [2.0]]))
    assert m.compute() == pytest.approx(0.5)


def test_cross_entropy_metric_aggregates_over_updates():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(2, 4))
    y1, y2 = np.array([0, 1, 2, 3, 0]), np.array([3, 3])
    m = engine.metrics.CrossEntropy()
    m.update(y1, z1)
    m.update(y2, z2)
    l1 = -log_softmax(z1)[np.arange(5), y1]
    l2 = -log_softmax(z2)[np.arange(2), y2]
    assert m.compute() == pytest.approx(np.concatenate([l1, l2]).mean(), rel=1e-12)
    assert abs(np.concatenate([l1, l2]).mean() - (l1.mean() + l2.mean()) / 2) > 1e-3
    m.reset()
    dist = np.full((2, 4), 0.25)
    m.update(dist, z2)
    assert m.compute() == pytest.approx(-(0.25 * log_softmax(z2)).sum(axis=1).mean(), rel=1e-12)


def test_metric_objects_and_strings_in_trainer(backend_name):
    X, y = regression(n=30, k=1)
    model = engine.MLP([4, 6, 1], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, loss="mse", metrics=("mse", engine.metrics.MSE()))
    result = trainer.evaluate(X, y, batch_size=7)
    pred = model.predict(X)[:, 0]
    assert result["mse"] == pytest.approx(np.mean((pred - y[:, 0]) ** 2), rel=1e-11)
    assert result["loss"] == pytest.approx(result["mse"], rel=1e-11)


# --------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("batch_size", [None, 1, 7, 1000])
def test_evaluate(batch_size, backend_name, dtype):
    X, y = classification(n=45)
    model = engine.MLP([5, 8, 3], dropout=0.5, seed=0, backend=backend_name, dtype=dtype)
    trainer = engine.Trainer(model, metrics=("accuracy",))
    result = trainer.evaluate(X, y, batch_size=batch_size)
    assert set(result) == {"loss", "accuracy"}
    logits = logits_of(model, X)  # no dropout in evaluate
    assert result["loss"] == approx(cross_entropy(logits, y), dtype, 4)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == y), rel=1e-12)
    assert trainer.evaluate(X, y, batch_size=batch_size) == result  # deterministic, no dropout
    assert trainer.optimizer.iterations == 0


def test_evaluate_mse_and_binary(backend_name):
    X, y = regression(n=33, k=2)
    model = engine.MLP([4, 5, 2], seed=0, backend=backend_name, dtype="float64")
    result = engine.Trainer(model, loss="mse", metrics=()).evaluate(X, y, batch_size=10)
    assert set(result) == {"loss"}
    assert result["loss"] == pytest.approx(np.mean((model.predict(X) - y) ** 2), rel=1e-11)

    t = (X[:, 0] > 0).astype(np.float64)
    model = engine.MLP([4, 5, 1], output="sigmoid", seed=0, backend=backend_name, dtype="float64")
    result = engine.Trainer(model, loss="binary_cross_entropy").evaluate(X, t, batch_size=10)
    p = model.predict(X)[:, 0]
    assert result["loss"] == pytest.approx(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)), rel=1e-11)
    assert result["accuracy"] == pytest.approx(np.mean((p > 0.5) == (t > 0.5)))


# ------------------------------------------------------------------ checkpoints
RESUME_OPTIMIZERS = {
    "adamw": lambda: engine.AdamW(lr=1e-2),
    "nadam": lambda: engine.NAdam(lr=1e-2, weight_decay=1e-3),
    "adam_amsgrad": lambda: engine.Adam(lr=1e-2, amsgrad=True),
    "sgd_nesterov": lambda: engine.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "rmsprop_centered": lambda: engine.RMSprop(lr=1e-3, momentum=0.5, centered=True),
    "adagrad": lambda: engine.Adagrad(lr=1e-2),
    "adadelta": lambda: engine.Adadelta(),
    "adamw_schedule": lambda: engine.AdamW(lr=engine.schedules.CosineDecay(1e-2, total_steps=20, warmup_steps=3)),
}


def _resume_model(seed, backend_name, dtype):
    return engine.MLP([5, 12, 12, 3], activation=["relu", "prelu"], dropout=[0.3, 0.2], seed=seed,
                      backend=backend_name, dtype=dtype)


@pytest.mark.parametrize("opt", sorted(RESUME_OPTIMIZERS))
def test_checkpoint_exact_resume(opt, tmp_path, backend_name, dtype):
    X, y = classification(n=70)
    make_opt = RESUME_OPTIMIZERS[opt]
    fit = dict(batch_size=16, shuffle=True, verbose=0)

    continuous = _resume_model(7, backend_name, dtype)
    engine.Trainer(continuous, optimizer=make_opt()).fit(X, y, epochs=2, **fit)

    first = _resume_model(7, backend_name, dtype)
    t1 = engine.Trainer(first, optimizer=make_opt())
    t1.fit(X, y, epochs=1, **fit)
    path = tmp_path / "ckpt.npz"
    t1.save_checkpoint(str(path))
    after_one = first.get_weights()

    resumed = _resume_model(123, backend_name, dtype)  # different seed: init, dropout and shuffling
    t2 = engine.Trainer(resumed, optimizer=make_opt())
    t2.load_checkpoint(str(path))
    assert_weights_equal(resumed.get_weights(), after_one)
    assert t2.optimizer.iterations == t1.optimizer.iterations == 5
    t2.fit(X, y, epochs=1, **fit)
    assert_weights_equal(resumed.get_weights(), continuous.get_weights())
    assert not np.array_equal(resumed.get_weights()[0], after_one[0])


def test_checkpoint_resume_with_train_steps(tmp_path, backend_name):
    X, y = classification(n=40)
    a = _resume_model(1, backend_name, "float32")
    ta = engine.Trainer(a, optimizer=engine.NAdam())
    for _ in range(3):
        ta.train_step(X, y)
    ta.save_checkpoint(tmp_path / "c.npz")
    ta.train_step(X, y)
    ta.train_step(X, y)

    b = _resume_model(2, backend_name, "float32")
    tb = engine.Trainer(b, optimizer=engine.NAdam())
    tb.load_checkpoint(tmp_path / "c.npz")
    assert tb.optimizer.iterations == 3
    tb.train_step(X, y)
    tb.train_step(X, y)
    assert_weights_equal(a.get_weights(), b.get_weights())
    sa, sb = ta.optimizer.state_dict(), tb.optimizer.state_dict()
    assert sa["iterations"] == sb["iterations"] == 5
    for name in sa["arrays"]:
        np.testing.assert_array_equal(sa["arrays"][name], sb["arrays"][name])


def test_checkpoint_mismatch_is_rejected(tmp_path, backend_name):
    X, y = classification(n=20)
    trainer = engine.Trainer(_resume_model(1, backend_name, "float32"), optimizer=engine.AdamW())
    trainer.train_step(X, y)
    trainer.save_checkpoint(tmp_path / "c.npz")
    other = engine.MLP([5, 10, 3], seed=0, backend=backend_name)
    w0 = other.get_weights()
    with pytest.raises(ValueError):
        engine.Trainer(other, optimizer=engine.AdamW()).load_checkpoint(tmp_path / "c.npz")
    assert_weights_equal(other.get_weights(), w0)
    same_arch = _resume_model(1, backend_name, "float32")
    w0 = same_arch.get_weights()
    with pytest.raises(ValueError, match="optimizer"):
        engine.Trainer(same_arch, optimizer=engine.SGD(lr=0.1)).load_checkpoint(tmp_path / "c.npz")
    assert_weights_equal(same_arch.get_weights(), w0)


# ------------------------------------------------- decisions on the device (issue 7)
# These tests overflow on purpose: NumPy's RuntimeWarnings are expected there.
overflows = pytest.mark.filterwarnings("ignore::RuntimeWarning")

BAD_STEP = 28  # in the second epoch of 20 batches
EXPLODING_OPTIMIZERS = {
    # lr 1e30 at the update before BAD_STEP: finite weights ~1e30, whose float32 forward overflows
    "adam": lambda: engine.Adam(lr=lambda s: 1e30 if s == BAD_STEP - 1 else 1e-2),
    "nadam": lambda: engine.NAdam(lr=lambda s: 1e30 if s == BAD_STEP - 1 else 1e-2),
    "sgd_momentum": lambda: engine.SGD(lr=lambda s: 1e30 if s == BAD_STEP - 1 else 1e-2, momentum=0.9),
}


def trainer_state(trainer):
    state = trainer.optimizer.state_dict()
    return trainer.model.get_weights(), state["iterations"], state["scalars"], state["arrays"]


def assert_same_state(a, b):
    weights_a, iterations_a, scalars_a, arrays_a = a
    weights_b, iterations_b, scalars_b, arrays_b = b
    assert_weights_equal(weights_a, weights_b)
    assert iterations_a == iterations_b
    assert scalars_a == scalars_b
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


class LossesSeen(engine.callbacks.Callback):
    def __init__(self):
        self.losses = []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


@overflows
@pytest.mark.parametrize("opt", sorted(EXPLODING_OPTIMIZERS))
@pytest.mark.parametrize("reads", ["epoch_end", "progress_bar", "batch_callback"])
def test_fit_raises_for_the_first_bad_step_as_train_step_does(opt, reads, backend_name):
    """fit reads the device's record only now and then; the sticky flag makes every update
    after the bad one a no-op, so the error names exactly that update and leaves weights,
    optimizer state and update count as train_step would have left them."""
    X, y = classification(n=40)
    make = lambda: engine.Trainer(engine.MLP([5, 8, 3], seed=0, backend=backend_name),
                                  optimizer=EXPLODING_OPTIMIZERS[opt]())
    twin = make()
    twin_losses = []
    with pytest.raises(engine.NonFiniteError, match=rf"\bstep {BAD_STEP}\b") as twin_error:
        for step in range(3 * 20):
            b = step % 20
            if step == BAD_STEP:
                before = trainer_state(twin)
            twin_losses.append(twin.train_step(X[2 * b:2 * b + 2], y[2 * b:2 * b + 2]))
    assert len(twin_losses) == BAD_STEP
    assert_same_state(trainer_state(twin), before)

    trainer = make()
    seen = LossesSeen()
    with pytest.raises(engine.NonFiniteError, match=rf"\bstep {BAD_STEP}\b") as error:
        trainer.fit(X, y, epochs=3, batch_size=2, shuffle=False, verbose=1 if reads == "progress_bar" else 0,
                    callbacks=[seen] if reads == "batch_callback" else [])
    assert str(error.value) == str(twin_error.value)  # the same reason and loss
    assert_same_state(trainer_state(trainer), before)
    assert trainer.optimizer.iterations == BAD_STEP
    if reads == "batch_callback":  # every batch before the bad one, as train_step returned them
        assert all(isinstance(loss, float) for loss in seen.losses)
        assert seen.losses == twin_losses[:len(seen.losses)] and len(seen.losses) == BAD_STEP

    # the record was cleared: with sane weights training goes on from update BAD_STEP
    trainer.model.set_weights(engine.MLP([5, 8, 3], seed=0, backend=backend_name).get_weights())
    trainer.train_step(X[:2], y[:2])
    assert trainer.optimizer.iterations == BAD_STEP + 1


@overflows
def test_fit_error_after_an_unread_bad_update_names_the_bad_update(backend_name):
    """The schedule fails at update 6 (NaN), before fit has read the record holding update 4's
    overflow: the error that surfaces is the first one, raised from the schedule's."""
    X, y = classification(n=40)
    lr = lambda s: 1e30 if s == 3 else (1e-2 if s < 6 else float("nan"))
    trainer = engine.Trainer(engine.MLP([5, 8, 3], seed=0, backend=backend_name), optimizer=engine.Adam(lr=lr))
    with pytest.raises(engine.NonFiniteError, match=r"\bstep 4\b") as error:
        trainer.fit(X, y, epochs=1, batch_size=2, shuffle=False, verbose=0)
    assert isinstance(error.value.__cause__, ValueError) and "lr schedule" in str(error.value.__cause__)
    assert trainer.optimizer.iterations == 4


def _regression_with_bad_batches(dtype, bad_batches, batch=4, n_batches=5):
    X, y = regression(n=batch * n_batches, d=4, k=2)
    for b in bad_batches:  # finite inputs whose squared error overflows the dtype
        X[b * batch:(b + 1) * batch] *= float(np.finfo(dtype).max) ** 0.75
    return X, y


@overflows
@pytest.mark.parametrize("make_opt", [lambda: engine.AdamW(lr=1e-2), lambda: engine.NAdam(lr=1e-2)],
                         ids=["adamw", "nadam"])
def test_skip_mode_counts_only_the_updates_made(make_opt, backend_name, dtype):
    """Skipped updates are not counted: Adam's bias correction, NAdam's momentum product and
    the dropout keys of later steps are those of a run that never saw the bad batches."""
    bad = (1, 3)
    X, y = _regression_with_bad_batches(dtype, bad)
    make = lambda: engine.Trainer(engine.MLP([4, 6, 2], dropout=0.3, seed=0, backend=backend_name, dtype=dtype),
                                  loss="mse", optimizer=make_opt(), metrics=(), on_nonfinite="skip")
    trainer = make()
    history = trainer.fit(X, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert trainer.optimizer.iterations == 2 * 3
    assert all(math.isinf(v) or math.isnan(v) for v in history.history["loss"])  # bad batches' losses count

    twin = make()
    for _ in range(2):
        for b in range(5):
            loss = twin.train_step(X[4 * b:4 * b + 4], y[4 * b:4 * b + 4])
            assert math.isfinite(loss) != (b in bad)
    assert twin.optimizer.iterations == 6
    good = make()
    for _ in range(2):
        for b in (0, 2, 4):
            good.train_step(X[4 * b:4 * b + 4], y[4 * b:4 * b + 4])
    assert_same_state(trainer_state(trainer), trainer_state(good))
    assert_same_state(trainer_state(twin), trainer_state(good))


METRIC_CASES = {
    # (sizes, loss, metrics, targets from (X, class labels))
    "classes": ([5, 8, 3], "cross_entropy", ("accuracy", "cross_entropy"), lambda X, c: c),
    "one_hot": ([5, 8, 3], "cross_entropy", ("accuracy", "cross_entropy"), lambda X, c: np.eye(3)[c]),
    "binary": ([5, 8, 1], "binary_cross_entropy", ("accuracy", "cross_entropy"), lambda X, c: (c == 1) * 1.0),
    "regression": ([5, 8, 2], "mse", ("mse", "mae"), lambda X, c: X[:, :2] * 2.0 - 1.0),
}


@pytest.mark.parametrize("case", sorted(METRIC_CASES))
def test_fit_and_evaluate_metrics_equal_the_host_metrics(case, backend_name):
    sizes, loss, names, targets = METRIC_CASES[case]
    X, c = classification(n=45)
    y = targets(X, c)
    make = lambda: engine.Trainer(engine.MLP(sizes, seed=0, backend=backend_name, dtype="float64"), loss=loss,
                                  optimizer=engine.SGD(lr=0.3), metrics=names)
    trainer = make()
    history = trainer.fit(X, y, epochs=2, batch_size=7, shuffle=False, verbose=0).history
    assert all(m.device_kind(np.asarray(y, dtype=np.float64 if y.ndim == 2 else np.int64)) is not None
               for m in trainer.metrics)  # these run on the device

    twin = make()
    for epoch in range(2):
        host = [engine.metrics.get(name) for name in names]
        for start in range(0, 45, 7):
            xb, yb = X[start:start + 7], y[start:start + 7]
            logits = logits_of(twin.model, xb)
            for m in host:
                m.update(yb, logits)
            twin.train_step(xb, yb)
        for m in host:
            assert history[m.name][epoch] == pytest.approx(m.compute(), rel=1e-12), (m.name, epoch)
    result = trainer.evaluate(X, y, batch_size=7)
    logits = logits_of(trainer.model, X)
    for name in names:
        m = engine.metrics.get(name)
        m.update(y, logits)
        assert result[name] == pytest.approx(m.compute(), rel=1e-12), name


def test_metric_device_kinds():
    classes, rows = np.zeros(3, np.int64), np.zeros((3, 2))
    Metrics = engine.metrics
    assert Metrics.Accuracy().device_kind(classes)[1] == 0.0
    assert Metrics.Accuracy(from_logits=False).device_kind(rows)[1] == 0.5
    assert Metrics.CrossEntropy().device_kind(classes) is not None
    assert Metrics.CrossEntropy(from_logits=False).device_kind(rows) is None
    assert Metrics.MSE().device_kind(rows) is not None and Metrics.MAE().device_kind(rows) is not None
    assert Metrics.MSE().device_kind(classes) is None

    class Top2(Metrics.Accuracy):  # its own update: the device's accuracy is not it
        def update(self, y_true, y_pred):
            self._add(np.count_nonzero((np.argsort(y_pred, axis=1)[:, -2:] == y_true[:, None]).any(axis=1)),
                      len(y_true))

    class Named(Metrics.MSE):  # inherits update, and so its device kind
        name = "named"

    assert Top2().device_kind(classes) is None
    assert Named().device_kind(rows) == Metrics.MSE().device_kind(rows)
    assert Metrics.Mean().device_kind(rows) is None


def test_custom_metrics_keep_the_host_path(backend_name):
    class MeanTopLogit(engine.metrics.Metric):
        name = "top_logit"

        def update(self, y_true, y_pred):
            assert isinstance(y_pred, np.ndarray)  # a host array
            self._add(np.max(y_pred, axis=1).sum(), len(y_pred))

    class Top2(engine.metrics.Accuracy):
        name = "top2"

        def update(self, y_true, y_pred):
            top2 = np.argsort(y_pred, axis=1)[:, -2:]
            self._add(np.count_nonzero((top2 == np.asarray(y_true)[:, None]).any(axis=1)), len(y_pred))

    X, y = classification(n=30, k=4)
    model = engine.MLP([5, 8, 4], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, optimizer=engine.SGD(lr=0.0), metrics=("accuracy", MeanTopLogit(), Top2()))
    history = trainer.fit(X, y, epochs=1, batch_size=8, verbose=0).history
    logits = logits_of(model, X)  # lr 0: the same logits at every step
    top2 = np.argsort(logits, axis=1)[:, -2:]
    expected = {"accuracy": np.mean(logits.argmax(axis=1) == y), "top_logit": logits.max(axis=1).mean(),
                "top2": np.mean((top2 == y[:, None]).any(axis=1))}
    assert expected["top2"] > expected["accuracy"]
    for name, value in expected.items():
        assert history[name][0] == pytest.approx(value, rel=1e-12), name
        assert trainer.evaluate(X, y)[name] == pytest.approx(value, rel=1e-12), name


def test_batch_callback_gets_the_losses_train_step_returns(backend_name, dtype):
    X, y = classification(n=50)
    make = lambda: engine.Trainer(engine.MLP([5, 8, 3], seed=0, backend=backend_name, dtype=dtype),
                                  optimizer=engine.AdamW(lr=1e-2))
    seen = LossesSeen()
    make().fit(X, y, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=[seen])
    twin = make()
    expected = [twin.train_step(X[s:s + 16], y[s:s + 16]) for _ in range(2) for s in range(0, 50, 16)]
    assert all(type(loss) is float for loss in seen.losses)
    assert seen.losses == expected


class _Reads:
    """Counts the backend's to_host calls (each a wait for the device on a GPU)."""

    def __init__(self, monkeypatch, k):
        self.count = 0
        original = k.to_host

        def to_host(array):
            self.count += 1
            return original(array)

        monkeypatch.setattr(k, "to_host", to_host)


@pytest.mark.parametrize("verbose", [0, 1])
def test_fit_reads_the_device_only_at_progress_updates(verbose, backend_name, monkeypatch):
    """Op by op, the progress bar reads the record every 16 batches (numba's compiled runs
    read it once a run: tests/test_compiled_steps.py)."""
    X, y = classification(n=100)
    trainer = engine.Trainer(engine.MLP([5, 8, 3], seed=0, backend=backend_name), metrics=("accuracy",
                                                                                         "cross_entropy"),
                             compiled_steps=False)
    reads = _Reads(monkeypatch, trainer.model._k)
    trainer.fit(X, y, epochs=2, batch_size=2, verbose=verbose)  # 50 batches an epoch
    progress = len([b for b in range(50) if b % 16 == 0 or b == 49])  # 0, 16, 32, 48, 49
    assert reads.count == 2 * (1 + (progress if verbose == 1 else 0))
    reads.count = 0
    trainer.evaluate(X, y, batch_size=7)
    assert reads.count == 1
    reads.count = 0
    trainer.train_step(X, y)
    assert reads.count == 1


def test_evaluate_ignore_index_means_over_kept_rows(backend_name):
    X, y = classification(n=20, k=4)
    y[[1, 5, 6, 13]] = -100
    model = engine.MLP([5, 6, 4], seed=0, backend=backend_name, dtype="float64")
    trainer = engine.Trainer(model, loss=engine.SoftmaxCrossEntropy(ignore_index=-100), metrics=())
    kept = y != -100
    expected = cross_entropy(logits_of(model, X[kept]), y[kept])
    assert trainer.evaluate(X, y, batch_size=3)["loss"] == pytest.approx(expected, rel=1e-12)
    with np.errstate(invalid="ignore"):
        assert math.isnan(trainer.evaluate(X, np.full(20, -100), batch_size=3)["loss"])
