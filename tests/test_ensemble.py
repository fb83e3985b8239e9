"""engine.Ensemble and engine.train_ensemble: averaged predictions, ensemble logits and
metrics, members seeded from seed + i, bagging on seeded bootstrap samples, and on the
digits an ensemble at least as accurate as its members on average."""
import numpy as np
import pytest

import engine
from engine.demo import load_digits_splits
from engine.ensemble import bootstrap_rows


def classification(n=90, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, np.argmax(X @ rng.normal(size=(d, k)), axis=1)


def members(output, n=3, sizes=(5, 8, 3), backend="numpy", dtype="float32"):
    return [engine.MLP(list(sizes), output=output, seed=i, backend=backend, dtype=dtype) for i in range(n)]


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "none"])
def test_predict_is_the_mean_of_the_members_predict(output):
    X, _ = classification()
    models = members(output)
    ens = engine.Ensemble(models)
    expected = np.mean([m.predict(X).astype(np.float64) for m in models], axis=0)
    got = ens.predict(X, batch_size=7)
    assert got.dtype == np.float32 and got.shape == (len(X), 3)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "none"])
def test_logits_give_predict_through_the_output_function(output):
    """softmax(logits) = mean of the members' probabilities (likewise sigmoid); for no
    output function, the mean of the logits; in log space, so even a member whose
    probability underflows in float32 counts."""
    X, _ = classification()
    models = members(output, dtype="float64")
    ens = engine.Ensemble(models)
    logits = ens.logits(X)
    if output == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        through = e / e.sum(axis=1, keepdims=True)
    elif output == "sigmoid":
        through = 1 / (1 + np.exp(-logits))
    else:
        through = logits
    np.testing.assert_allclose(through, ens.predict(X), rtol=1e-12, atol=1e-15)
    if output == "softmax":  # a confident member: 0 in float32, not in the ensemble's logits
        w = models[0].get_weights()
        models[0].set_weights([w[0], w[1], w[2] * 0, np.array([0.0, 200.0, -200.0])])
        assert np.isfinite(engine.Ensemble(models).logits(X)).all()


def test_evaluate_scores_the_ensemble():
    X, y = classification()
    ens = engine.Ensemble(members("softmax"))
    accuracy = engine.metrics.Accuracy()
    result = ens.evaluate(X, y, metrics=("accuracy", "cross_entropy", accuracy))
    assert set(result) == {"accuracy", "cross_entropy"}
    assert result["accuracy"] == pytest.approx(np.mean(np.argmax(ens.predict(X), axis=1) == y))
    p = ens.predict(X).astype(np.float64)
    assert result["cross_entropy"] == pytest.approx(-np.log(p[np.arange(len(y)), y]).mean(), rel=1e-5)
    assert np.isnan(accuracy.compute())  # a metric object given is copied, never updated


def test_ensemble_rejects_bad_members():
    for models, error, words in [
        ([], ValueError, "at least one"),
        (engine.MLP([5, 3]), TypeError, "list of engine.MLP"),
        ([engine.MLP([5, 3]), "model"], TypeError, r"models\[1\]"),
        ([engine.MLP([5, 3]), engine.MLP([5, 4])], ValueError, r"models\[1\] has 5 inputs, 4 outputs"),
        ([engine.MLP([5, 3], output="softmax"), engine.MLP([5, 3])], ValueError, "output 'none'"),
    ]:
        with pytest.raises(error, match=words):
            engine.Ensemble(models)


def make_trainer_factory(seed=0, sizes=(5, 8, 3), backend="numba", created=None):
    def make_trainer(i):
        model = engine.MLP(list(sizes), output="softmax", dropout=0.1, seed=seed + i, backend=backend)
        trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=1e-2))
        if created is not None:
            created.append(trainer)
        return trainer
    return make_trainer


def test_train_ensemble_trains_each_member_as_fit_would():
    """Member i is make_trainer(i) fitted on (X, y) with fit_kwargs: without bagging, the
    same weights as that fit by hand; histories one per member."""
    X, y = classification()
    ens, histories = engine.train_ensemble(make_trainer_factory(seed=3), X, y, n_members=3, seed=3, epochs=2,
                                           batch_size=16, verbose=0)
    assert isinstance(ens, engine.Ensemble) and len(ens) == 3 and len(histories) == 3
    assert all(len(h.history["loss"]) == 2 for h in histories)
    by_hand = make_trainer_factory(seed=3)(1)
    by_hand.fit(X, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(ens[1].get_weights(), by_hand.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ens[0].get_weights()[0], ens[1].get_weights()[0])


def test_bagging_trains_on_seeded_bootstrap_samples():
    """Member i trains on X[bootstrap_rows(len(X), seed, i)]; the same seed gives the same
    ensemble bit for bit, another seed other samples."""
    X, y = classification()
    kwargs = dict(n_members=3, bagging=True, seed=7, epochs=2, verbose=0)
    ens, _ = engine.train_ensemble(make_trainer_factory(seed=7), X, y, **kwargs)
    again, _ = engine.train_ensemble(make_trainer_factory(seed=7), X, y, **kwargs)
    for a, b in zip(ens, again):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    rows = bootstrap_rows(len(X), 7, 2)
    assert rows.shape == (len(X),) and rows.min() >= 0 and rows.max() < len(X)
    assert len(np.unique(rows)) < len(X)  # drawn with replacement
    by_hand = make_trainer_factory(seed=7)(2)
    by_hand.fit(X[rows], y[rows], epochs=2, verbose=0)
    for a, b in zip(ens[2].get_weights(), by_hand.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(bootstrap_rows(len(X), 7, 0), bootstrap_rows(len(X), 7, 1))
    assert not np.array_equal(bootstrap_rows(len(X), 7, 0), bootstrap_rows(len(X), 8, 0))
    np.testing.assert_array_equal(bootstrap_rows(len(X), 7, 2), rows)


def test_train_ensemble_rejects_bad_arguments():
    X, y = classification()
    created = []
    same = make_trainer_factory(created=created)
    cases = [
        (dict(make_trainer="trainer"), TypeError, "make_trainer must be a callable"),
        (dict(n_members=0), ValueError, "n_members"),
        (dict(bagging="yes"), TypeError, "bagging"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(make_trainer=lambda i: engine.MLP([5, 3])), TypeError, r"make_trainer\(0\) must return an engine.Trainer"),
        (dict(make_trainer=make_trainer_factory(seed=0), seed=10), ValueError, r"seed \+ i = 10.*seed 0"),
        (dict(make_trainer=lambda i: created[0] if created else same(i), n_members=2), ValueError,
         "model of an earlier member"),
        (dict(bagging=True, validation_split=0.2), ValueError, "validation_split"),
        (dict(bagging=True, y=y[:-1]), ValueError, "one row per row of X"),
    ]
    for kwargs, error, words in cases:
        arguments = dict(make_trainer=make_trainer_factory(), X=X, y=y, n_members=2, epochs=1, verbose=0)
        arguments.update(kwargs)
        with pytest.raises(error, match=words):
            engine.train_ensemble(**arguments)
    used = make_trainer_factory()(0)
    used.train_step(X[:8], y[:8])
    with pytest.raises(ValueError, match="fresh Trainer"):
        engine.train_ensemble(lambda i: used, X, y, n_members=1, verbose=0)


@pytest.mark.parametrize("bagging", [False, True])
def test_ensemble_on_digits_is_at_least_as_accurate_as_its_members(bagging):
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = load_digits_splits(0)

    def make_trainer(i):
        model = engine.MLP([64, 32, 10], output="softmax", dropout=0.1, seed=i)
        return engine.Trainer(model, optimizer=engine.AdamW(lr=2e-3))

    ens, histories = engine.train_ensemble(make_trainer, X_train, y_train, n_members=5, bagging=bagging, seed=0,
                                           epochs=10, validation_data=(X_val, y_val), verbose=0)
    assert all("val_accuracy" in h.history for h in histories)
    members = [float(np.mean(np.argmax(m.predict(X_test), axis=1) == y_test)) for m in ens]
    accuracy = ens.evaluate(X_test, y_test)["accuracy"]
    assert accuracy == pytest.approx(np.mean(np.argmax(ens.predict(X_test), axis=1) == y_test))
    message = (f"ensemble test accuracy {accuracy:.4f}; members {', '.join(f'{a:.4f}' for a in members)} "
               f"(mean {np.mean(members):.4f})")
    assert accuracy >= np.mean(members), message
    assert accuracy > 0.9, message


def test_a_model_pickles_as_configuration_and_weights():
    """What a Dask worker sends back: the same configuration, seed and weights, predicting
    the same, and no backend module or device array in the bytes."""
    import pickle

    X, y = classification()
    trainer = make_trainer_factory(seed=4)(0)
    trainer.fit(X, y, epochs=2, batch_size=16, verbose=0)
    model = trainer.model
    copy = pickle.loads(pickle.dumps(model))
    assert copy.config() == model.config() and copy.backend == model.backend and copy._seed == model._seed
    for a, b in zip(copy.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(copy.predict(X), model.predict(X))


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_train_ensemble_on_dask_gives_the_members_trained_here(processes):
    """client=: one member per Dask task; with worker processes the models travel back
    pickled. The same members as one after another here, bit for bit, on the numpy
    backend: Dask's worker processes run their BLAS and OpenMP on one thread (its nanny
    sets OMP_NUM_THREADS=1), and numba's sums over another thread count round differently
    in the last bit (measured on a fresh CI clone: 6e-8 in float32)."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (the dask extra)")
    X, y = classification()
    kwargs = dict(n_members=3, seed=5, bagging=True, epochs=2, batch_size=16, verbose=0)
    make_trainer = make_trainer_factory(seed=5, backend="numpy")
    here, here_histories = engine.train_ensemble(make_trainer, X, y, **kwargs)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=processes,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        there, there_histories = engine.train_ensemble(make_trainer, X, y, client=client, **kwargs)
    for mine, theirs in zip(here, there):
        for a, b in zip(mine.get_weights(), theirs.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert [h.history for h in there_histories] == [h.history for h in here_histories]
    np.testing.assert_array_equal(there.predict(X), here.predict(X))
