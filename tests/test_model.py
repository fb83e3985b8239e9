"""engine.MLP: construction, activations, weights, initializers, seeds, predict, dropout, save/load."""
import math

import numpy as np
import pytest
from conftest import TOLERANCES

import engine
from engine import backend as backend_module

SELU_ALPHA = 1.6732632423543772848170429916717  # torch.nn.SELU's documented constants
SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# Independent float64 formulas (torch's definitions) for every activation name.
FORMULAS = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(z)),
    "gelu": lambda z: 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0))),
    "gelu_tanh": lambda z: 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3))),
    "silu": lambda z: z * _sigmoid(z),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "prelu": lambda z: np.where(z > 0, z, 0.25 * z),
}


def tol(dtype, factor=1):
    """conftest's per-op TOLERANCES times ``factor``. They bound one op against the reference;
    here a whole model is compared with a float64 NumPy recomputation, so factor is the number
    of chained rounding steps, roughly (a layer, an activation, a loss, an update: 2 to 8)."""
    t = TOLERANCES[np.dtype(dtype).type]
    return dict(rtol=t["rtol"] * factor, atol=t["atol"] * factor)


def forward(weights, X, activations):
    """The logits of an MLP from its get_weights() list, in float64, with the given hidden
    activations (callables); prelu slopes taken from the list where present."""
    A = np.asarray(X, dtype=np.float64)
    i = 0
    n_layers = len(activations) + 1
    for layer in range(n_layers):
        W, b = weights[i].astype(np.float64), weights[i + 1].astype(np.float64)
        i += 2
        Z = A @ W + b
        if layer == n_layers - 1:
            return Z
        act = activations[layer]
        if act == "prelu":
            slope = weights[i].astype(np.float64)
            i += 1
            A = np.where(Z > 0, Z, slope * Z)
        else:
            A = act(Z)


def random_inputs(n, d, seed=0, scale=1.5):
    return np.random.default_rng(seed).normal(scale=scale, size=(n, d))


# ----------------------------------------------------------------- construction
@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_by_name(name, backend_name, dtype):
    model = engine.MLP([3, 7, 2], activation=name, seed=1, backend=backend_name, dtype=dtype)
    X = random_inputs(20, 3)
    act = "prelu" if name == "prelu" else FORMULAS[name]
    expected = forward(model.get_weights(), X, [act])
    # 2 layers of rounding with transcendental functions: 4x the per-op tolerance
    np.testing.assert_allclose(model.predict(X), expected, **tol(dtype, 4))
    assert model.predict(X).dtype == dtype


@pytest.mark.parametrize("make, formula", [
    (lambda: engine.activations.LeakyReLU(0.2), lambda z: np.where(z > 0, z, 0.2 * z)),
    (lambda: engine.activations.ELU(0.5), lambda z: np.where(z > 0, z, 0.5 * np.expm1(z))),
    (lambda: engine.activations.LeakyReLU(), FORMULAS["leaky_relu"]),
    (lambda: engine.activations.ELU(), FORMULAS["elu"]),
], ids=["leaky0.2", "elu0.5", "leaky_default", "elu_default"])
def test_activation_object(make, formula, backend_name, dtype):
    model = engine.MLP([3, 6, 2], activation=make(), seed=2, backend=backend_name, dtype=dtype)
    X = random_inputs(25, 3)
    np.testing.assert_allclose(model.predict(X), forward(model.get_weights(), X, [formula]), **tol(dtype, 4))


def test_prelu_object(backend_name):
    model = engine.MLP([3, 6, 2], activation=engine.activations.PReLU(), seed=2, backend=backend_name)
    weights = model.get_weights()
    assert len(weights) == 5
    np.testing.assert_array_equal(weights[2], np.full(6, 0.25, dtype=np.float32))


def test_per_layer_activation_list(backend_name, dtype):
    names = ["tanh", "relu", "sigmoid"]
    model = engine.MLP([4, 5, 6, 3, 2], activation=names, seed=3, backend=backend_name, dtype=dtype)
    X = random_inputs(15, 4)
    expected = forward(model.get_weights(), X, [FORMULAS[n] for n in names])
    np.testing.assert_allclose(model.predict(X), expected, **tol(dtype, 4))
    # not the same as one activation for all
    other = forward(model.get_weights(), X, [FORMULAS["relu"]] * 3)
    assert not np.allclose(other, expected)


def test_mixed_list_of_names_and_objects(backend_name):
    model = engine.MLP([4, 5, 6, 2], activation=["silu", engine.activations.LeakyReLU(0.3)], seed=3,
                       backend=backend_name, dtype="float64")
    X = random_inputs(15, 4)
    expected = forward(model.get_weights(), X, [FORMULAS["silu"], lambda z: np.where(z > 0, z, 0.3 * z)])
    np.testing.assert_allclose(model.predict(X), expected, **tol(np.float64, 4))


def test_prelu_slope_follows_its_layers_bias(backend_name, dtype):
    model = engine.MLP([3, 4, 5, 2], activation=["prelu", "relu"], seed=0, backend=backend_name, dtype=dtype)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(3, 4), (4,), (4,), (4, 5), (5,), (5, 2), (2,)]
    slope = model.get_weights()[2]
    assert slope.dtype == dtype
    np.testing.assert_array_equal(slope, np.full(4, 0.25))

    both = engine.MLP([3, 4, 5, 2], activation="prelu", seed=0, backend=backend_name, dtype=dtype)
    assert [w.shape for w in both.get_weights()] == [(3, 4), (4,), (4,), (4, 5), (5,), (5,), (5, 2), (2,)]


def test_prelu_slopes_are_used_and_learned(backend_name, dtype):
    model = engine.MLP([3, 4, 2], activation="prelu", seed=0, backend=backend_name, dtype=dtype)
    weights = model.get_weights()
    weights[2] = np.array([0.0, 0.5, -1.0, 2.0])
    weights[1] = np.array([-3.0, -3.0, 0.0, 0.0])  # push some units negative
    model.set_weights(weights)
    X = random_inputs(30, 3)
    np.testing.assert_allclose(model.predict(X), forward(model.get_weights(), X, ["prelu"]), **tol(dtype, 4))

    trainer = engine.Trainer(model, loss="cross_entropy", optimizer=engine.SGD(lr=0.1))
    trainer.train_step(X, np.arange(30) % 2)
    assert not np.array_equal(model.get_weights()[2], weights[2]), "the prelu slopes got no update"


def test_no_hidden_layer_model(backend_name, dtype):
    model = engine.MLP([4, 3], seed=0, backend=backend_name, dtype=dtype)
    W, b = model.get_weights()
    X = random_inputs(10, 4)
    np.testing.assert_allclose(model.predict(X), X @ W.astype(np.float64) + b, **tol(dtype, 2))


def test_dtype_argument(backend_name):
    for dtype in ("float32", np.float32, np.dtype("float32")):
        assert all(w.dtype == np.float32 for w in engine.MLP([2, 3, 1], dtype=dtype, backend=backend_name).get_weights())
    for dtype in ("float64", np.float64):
        assert all(w.dtype == np.float64 for w in engine.MLP([2, 3, 1], dtype=dtype, backend=backend_name).get_weights())
    assert engine.MLP([2, 3, 1], backend=backend_name).get_weights()[0].dtype == np.float32  # default


# ---------------------------------------------------------------------- weights
def test_get_set_weights_round_trip(backend_name, dtype):
    model = engine.MLP([3, 4, 5, 2], activation=["prelu", "tanh"], seed=0, backend=backend_name, dtype=dtype)
    rng = np.random.default_rng(7)
    new = [rng.normal(size=w.shape) for w in model.get_weights()]
    model.set_weights(new)
    got = model.get_weights()
    assert len(got) == len(new)
    for g, n in zip(got, new):
        assert isinstance(g, np.ndarray) and g.dtype == dtype and g.shape == n.shape
        np.testing.assert_array_equal(g, n.astype(dtype))
    # and they are used
    X = random_inputs(6, 3)
    np.testing.assert_allclose(model.predict(X), forward(new, X, ["prelu", np.tanh]), **tol(dtype, 4))


def test_get_weights_returns_copies(backend_name):
    model = engine.MLP([3, 4, 2], seed=0, backend=backend_name)
    X = random_inputs(5, 3)
    before = model.predict(X)
    weights = model.get_weights()
    weights[0][...] = 100.0
    weights[1][...] = 100.0
    np.testing.assert_array_equal(model.predict(X), before)
    assert not np.array_equal(model.get_weights()[0], weights[0])


def test_set_weights_does_not_alias_input(backend_name):
    model = engine.MLP([3, 2], seed=0, backend=backend_name, dtype="float64")
    weights = [np.ones((3, 2)), np.zeros(2)]
    model.set_weights(weights)
    weights[0][...] = 5.0
    np.testing.assert_array_equal(model.get_weights()[0], np.ones((3, 2)))


def test_set_weights_wrong_count(backend_name):
    model = engine.MLP([3, 4, 2], seed=0, backend=backend_name)
    weights = model.get_weights()
    with pytest.raises(ValueError, match="weights"):
        model.set_weights(weights[:-1])
    with pytest.raises(ValueError, match="weights"):
        model.set_weights(weights + [np.zeros(2)])


@pytest.mark.parametrize("index, shape", [(0, (4, 3)), (1, (5,)), (2, (4, 2, 1)), (3, ())])
def test_set_weights_wrong_shape_changes_nothing(index, shape, backend_name):
    model = engine.MLP([3, 4, 2], seed=0, backend=backend_name)
    before = model.get_weights()
    bad = [np.full(w.shape, 9.0) for w in before]
    bad[index] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"weights\[{index}\]"):
        model.set_weights(bad)
    for got, old in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, old)


def test_set_weights_rejects_non_finite_and_non_numeric(backend_name):
    model = engine.MLP([3, 2], seed=0, backend=backend_name)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        model.set_weights([np.ones((3, 2)), np.array([1.0, np.nan])])
    with pytest.raises(TypeError, match=r"weights\[0\]"):
        model.set_weights([np.full((3, 2), "a"), np.zeros(2)])
    for got, old in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, old)


# ----------------------------------------------------------------- initializers
FAN_IN, FAN_OUT = 800, 1250  # unequal, so fan_in and fan_out cannot be confused
INIT_STD = {
    "glorot_uniform": math.sqrt(2.0 / (FAN_IN + FAN_OUT)),
    "glorot_normal": math.sqrt(2.0 / (FAN_IN + FAN_OUT)),
    "he_uniform": math.sqrt(2.0 / FAN_IN),
    "he_normal": math.sqrt(2.0 / FAN_IN),
    "lecun_normal": math.sqrt(1.0 / FAN_IN),
    "uniform": 1.0 / math.sqrt(FAN_IN) / math.sqrt(3.0),  # U[-l, l] has std l / sqrt(3)
}
UNIFORM_LIMIT = {"glorot_uniform": math.sqrt(6.0 / (FAN_IN + FAN_OUT)), "he_uniform": math.sqrt(6.0 / FAN_IN),
                 "uniform": 1.0 / math.sqrt(FAN_IN)}


@pytest.mark.parametrize("name", sorted(INIT_STD))
def test_initializer_variance(name, backend_name):
    W = engine.MLP([FAN_IN, FAN_OUT], init=name, seed=11, backend=backend_name, dtype="float64").get_weights()[0]
    expected = INIT_STD[name]
    # 1M samples: the empirical std is within ~0.1% of the true one; 2% leaves no doubt
    assert abs(W.std() / expected - 1.0) < 0.02, (W.std(), expected)
    assert abs(W.mean()) < 0.01 * expected
    # uniform vs normal shape: P(|w| < std) is 0.683 for a normal, 1/sqrt(3) = 0.577 for a uniform
    within = np.mean(np.abs(W) < expected)
    if name in UNIFORM_LIMIT:
        limit = UNIFORM_LIMIT[name]
        assert np.abs(W).max() <= limit
        assert np.abs(W).max() > 0.999 * limit
        assert abs(within - 1.0 / math.sqrt(3.0)) < 0.01
    else:
        assert abs(within - 0.6827) < 0.01


def test_zeros_initializer_and_default_bias(backend_name):
    W, b = engine.MLP([30, 20], init="zeros", seed=0, backend=backend_name).get_weights()
    assert not W.any() and not b.any()
    W, b = engine.MLP([30, 20], seed=0, backend=backend_name).get_weights()
    assert W.any() and not b.any()  # bias_init="zeros" by default


def test_bias_initializer(backend_name):
    fan_in = 400
    W, b = engine.MLP([fan_in, 5000], init="zeros", bias_init="uniform", seed=0, backend=backend_name,
                      dtype="float64").get_weights()
    assert not W.any()
    limit = 1.0 / math.sqrt(fan_in)
    assert np.abs(b).max() <= limit and np.abs(b).max() > 0.99 * limit
    assert abs(b.std() / (limit / math.sqrt(3.0)) - 1.0) < 0.05  # 5000 samples: ~1% sampling error


# ------------------------------------------------------------------ determinism
def _train_with_dropout(seed, backend_name, weights=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = engine.MLP([5, 16, 16, 2], dropout=[0.3, 0.2], seed=seed, backend=backend_name)
    if weights is not None:
        model.set_weights(weights)
    trainer = engine.Trainer(model, loss="cross_entropy", optimizer=engine.AdamW(lr=1e-2))
    trainer.fit(X, y, epochs=2, batch_size=10, shuffle=True, verbose=0)
    return model.get_weights()


def test_same_seed_same_initial_weights(backend_name):
    a = engine.MLP([5, 16, 3], seed=42, backend=backend_name).get_weights()
    b = engine.MLP([5, 16, 3], seed=42, backend=backend_name).get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = engine.MLP([5, 16, 3], seed=43, backend=backend_name).get_weights()
    assert not np.array_equal(a[0], c[0])
    d = engine.MLP([5, 16, 3], seed=None, backend=backend_name).get_weights()
    e = engine.MLP([5, 16, 3], seed=None, backend=backend_name).get_weights()
    assert not np.array_equal(d[0], e[0])


def test_same_seed_same_training(backend_name):
    a = _train_with_dropout(5, backend_name)
    b = _train_with_dropout(5, backend_name)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_seed_drives_dropout_and_shuffling(backend_name):
    # Same initial weights, different seeds: dropout masks and shuffling order differ.
    start = engine.MLP([5, 16, 16, 2], seed=5, backend=backend_name).get_weights()
    a = _train_with_dropout(5, backend_name, start)
    b = _train_with_dropout(6, backend_name, start)
    assert not np.array_equal(a[0], b[0])


# ---------------------------------------------------------------------- predict
def test_output_functions_applied_in_predict_only(backend_name, dtype):
    X = random_inputs(40, 4, scale=3.0)
    models = {out: engine.MLP([4, 8, 5], output=out, seed=9, backend=backend_name, dtype=dtype)
              for out in ("none", "softmax", "sigmoid")}
    weights = models["none"].get_weights()
    for m in models.values():  # same seed gives same weights, but make sure
        m.set_weights(weights)
    logits = forward(weights, X, [FORMULAS["relu"]])
    np.testing.assert_allclose(models["none"].predict(X), logits, **tol(dtype, 4))

    soft = models["softmax"].predict(X)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, **tol(dtype, 4))
    assert (soft >= 0).all()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(soft, e / e.sum(axis=1, keepdims=True), **tol(dtype, 8))

    sig = models["sigmoid"].predict(X)
    assert ((sig > 0) & (sig < 1)).all()
    np.testing.assert_allclose(sig, 1.0 / (1.0 + np.exp(-logits)), **tol(dtype, 8))


def test_sigmoid_output_stays_in_open_interval_for_moderate_logits(backend_name):
    model = engine.MLP([1, 1], output="sigmoid", seed=0, backend=backend_name, dtype="float64")
    model.set_weights([np.array([[1.0]]), np.array([0.0])])
    p = model.predict(np.array([[-30.0], [0.0], [30.0]]))[:, 0]
    assert 0 < p[0] < 1e-12 and p[1] == 0.5 and 1 - 1e-12 < p[2] < 1


def test_output_function_not_used_by_training_loss(backend_name):
    # Losses receive logits, whatever the output: same weights give the same loss.
    X = random_inputs(20, 3)
    y = np.arange(20) % 4
    losses = []
    for out in ("none", "softmax", "sigmoid"):
        model = engine.MLP([3, 6, 4], output=out, seed=4, backend=backend_name, dtype="float64")
        losses.append(engine.Trainer(model, loss="cross_entropy").evaluate(X, y)["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-12) and losses[0] == pytest.approx(losses[2], rel=1e-12)


@pytest.mark.parametrize("batch_size", [1, 7, 50, 64, 1000])
def test_predict_batch_size_gives_same_result(batch_size, backend_name, dtype):
    model = engine.MLP([6, 10, 3], output="softmax", seed=0, backend=backend_name, dtype=dtype)
    X = random_inputs(64, 6)
    full = model.predict(X)
    batched = model.predict(X, batch_size=batch_size)
    assert batched.shape == full.shape == (64, 3)
    np.testing.assert_allclose(batched, full, **tol(dtype))


@pytest.mark.parametrize("batch_size", [None, 7])
def test_predict_to_host_false_gives_the_backends_array(batch_size, backend_name):
    """predict(..., to_host=False) returns the backend's own array (CuPy on cupy) with the
    values predict returns on the host; logits likewise; to_host must be a bool."""
    from engine import backend as backend_module
    k = backend_module.module(backend_name)
    model = engine.MLP([6, 10, 3], output="softmax", seed=0, backend=backend_name, dtype="float64")
    X = random_inputs(20, 6)
    on_device = model.predict(X, batch_size=batch_size, to_host=False)
    assert type(on_device) is type(k.empty((1,), np.float64))
    np.testing.assert_array_equal(k.to_host(on_device), model.predict(X, batch_size=batch_size))
    np.testing.assert_array_equal(k.to_host(model.logits(X, batch_size=batch_size, to_host=False)),
                                  model.logits(X, batch_size=batch_size))
    with pytest.raises(TypeError, match="to_host"):
        model.predict(X, to_host="no")


def test_predict_accepts_lists_and_ints(backend_name):
    model = engine.MLP([2, 3, 1], seed=0, backend=backend_name, dtype="float64")
    a = model.predict([[1, 2], [3, 4]])
    b = model.predict(np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(a, b)
    assert isinstance(a, np.ndarray)
    np.testing.assert_array_equal(model(np.array([[1.0, 2.0]])), b[:1])


# ---------------------------------------------------------------------- dropout
def identity_net(width, n_hidden, dropout, backend_name, dtype, seed=0):
    """Identity activations and identity weights: training logits = X times the masks."""
    model = engine.MLP([width] * (n_hidden + 2), activation="identity", dropout=dropout, seed=seed,
                       backend=backend_name, dtype=dtype)
    model.set_weights([np.eye(width) if w.ndim == 2 else np.zeros(w.shape) for w in model.get_weights()])
    return model


def training_forward(model, X, step):
    k = model._k
    return k.to_host(model._forward(k.to_device(np.asarray(X, dtype=model.dtype), model.dtype),
                                    training=True, step=step)).copy()


def test_no_dropout_at_predict(backend_name, dtype):
    X = random_inputs(30, 4)
    dropped = engine.MLP([4, 16, 16, 3], dropout=0.5, seed=0, backend=backend_name, dtype=dtype)
    plain = engine.MLP([4, 16, 16, 3], dropout=0.0, seed=1, backend=backend_name, dtype=dtype)
    plain.set_weights(dropped.get_weights())
    first = dropped.predict(X)
    np.testing.assert_array_equal(dropped.predict(X), first)
    np.testing.assert_array_equal(first, plain.predict(X))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keep_rate_and_scaling(p, backend_name, dtype):
    width, n = 64, 500
    model = identity_net(width, 1, p, backend_name, dtype)
    out = training_forward(model, np.ones((n, width)), step=0)
    kept = out != 0
    rate = kept.mean()
    sigma = math.sqrt(p * (1 - p) / kept.size)
    assert abs(rate - (1 - p)) < 5 * sigma, (rate, 1 - p)
    # kept units scaled by 1/(1-p) once (the output layer is not dropped), dropped ones exactly 0
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - p), **tol(dtype))
    np.testing.assert_array_equal(out[~kept], 0.0)
    # the mean activation is preserved (inverted dropout)
    assert abs(out.mean() - 1.0) < 5 * sigma / (1 - p)


def test_dropout_mask_fresh_per_step_and_reproducible(backend_name, dtype):
    p, width, n = 0.5, 32, 200
    model = identity_net(width, 1, p, backend_name, dtype)
    X = np.ones((n, width))
    m0, m1 = training_forward(model, X, 0) != 0, training_forward(model, X, 1) != 0
    np.testing.assert_array_equal(training_forward(model, X, 0) != 0, m0)  # same step, same mask
    assert not np.array_equal(m0, m1)
    # independent masks agree on p^2 + (1-p)^2 of the elements
    agree = np.mean(m0 == m1)
    assert abs(agree - 0.5) < 5 * math.sqrt(0.25 / m0.size)
    # training=False: no dropout at all
    k = model._k
    inference = k.to_host(model._forward(k.to_device(X.astype(dtype), dtype), training=False, step=0))
    np.testing.assert_array_equal(inference, X)


def test_dropout_differs_between_layers_and_per_layer_list(backend_name):
    width, n = 32, 200
    X = np.ones((n, width))
    only_second = identity_net(width, 2, [0.0, 0.5], backend_name, "float64")
    out = training_forward(only_second, X, 3)
    assert set(np.unique(out)) == {0.0, 2.0}
    assert abs((out != 0).mean() - 0.5) < 0.03  # 6400 draws: sigma 0.006, this is 5 sigma

    both = identity_net(width, 2, [0.5, 0.5], backend_name, "float64")
    out = training_forward(both, X, 3)
    # two independent masks: kept by both with probability 1/4, scaled by 4
    assert set(np.unique(out)) == {0.0, 4.0}
    assert abs((out != 0).mean() - 0.25) < 0.03  # sigma 0.0054: over 5 sigma


def test_no_dropout_on_output_layer(backend_name):
    model = identity_net(16, 0, 0.5, backend_name, "float64")  # no hidden layer: nothing to drop
    X = random_inputs(50, 16)
    np.testing.assert_array_equal(training_forward(model, X, 0), X)


def test_dropout_in_training_step_depends_on_step(backend_name):
    # Through the public API: two train steps on the same batch with lr=0 give different
    # losses when dropout is on (fresh masks), the same loss without dropout.
    X = random_inputs(40, 5)
    y = np.arange(40) % 3
    for p, expect_equal in ((0.5, False), (0.0, True)):
        model = engine.MLP([5, 32, 3], dropout=p, seed=0, backend=backend_name, dtype="float64")
        trainer = engine.Trainer(model, optimizer=engine.SGD(lr=0.0))
        a, b = trainer.train_step(X, y), trainer.train_step(X, y)
        assert (a == b) is expect_equal


# -------------------------------------------------------------------- save/load
def test_save_load_round_trip(tmp_path, backend_name, dtype, monkeypatch):
    monkeypatch.setattr(backend_module, "_selected", backend_module._selected)
    engine.set_backend(backend_name)
    model = engine.MLP([4, 6, 5, 3], activation=["prelu", engine.activations.LeakyReLU(0.2)], output="softmax",
                       dropout=[0.1, 0.2], init="he_normal", seed=3, dtype=dtype)
    weights = model.get_weights()
    weights[2] = np.linspace(-0.5, 0.5, 6)  # non-default prelu slopes
    model.set_weights(weights)
    path = tmp_path / "model.npz"
    model.save(str(path))
    loaded = engine.load_model(str(path))
    assert isinstance(loaded, engine.MLP)
    assert loaded.backend == backend_name
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    X = random_inputs(25, 4)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict(X).sum(axis=1), 1.0, **tol(dtype, 4))  # output kept


def test_save_load_other_path_forms(tmp_path, backend_name, monkeypatch):
    monkeypatch.setattr(backend_module, "_selected", backend_module._selected)
    engine.set_backend(backend_name)
    model = engine.MLP([3, 2], output="sigmoid", seed=0)
    path = tmp_path / "weights.bin"  # any name, pathlib path
    model.save(path)
    assert path.exists()
    X = random_inputs(5, 3)
    np.testing.assert_array_equal(engine.load_model(path).predict(X), model.predict(X))


def test_a_dense_layer_refuses_a_segment_it_does_not_have():
    """engine.layers.Dense.initial_value: a dispatch over segment kinds ends in an error."""
    from engine.layers import Dense

    layer = Dense(3, 2, engine.activations.get("relu", "activation"), 0.0)
    with pytest.raises(ValueError, match="a dense layer has no segment 'gamma'"):
        layer.initial_value("gamma", np.random.default_rng(0), "glorot_uniform", "zeros")
