"""engine.tuning: the distributions, random and grid search, coarse-to-fine refinement,
sorting, the table, argument checks, and the same trials on a Dask LocalCluster."""
import itertools
import math

import numpy as np
import pytest

import engine
from engine.tuning import Trial, choice, grid_search, loguniform, randint, random_search, table, uniform

stats = pytest.importorskip("scipy.stats")  # scikit-learn's dependency, in the test extra


def draws(distribution, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([distribution.sample(rng) for _ in range(n)])


# ----------------------------------------------------------------- distributions
def test_uniform_covers_its_interval_uniformly():
    values = draws(uniform(-2.0, 3.0))
    assert values.min() >= -2.0 and values.max() < 3.0
    assert stats.kstest(values, stats.uniform(loc=-2.0, scale=5.0).cdf).pvalue > 1e-3


def test_loguniform_is_uniform_in_the_logarithm():
    values = draws(loguniform(1e-5, 1e-1))
    assert values.min() >= 1e-5 and values.max() < 1e-1
    assert stats.kstest(np.log(values), stats.uniform(loc=math.log(1e-5), scale=math.log(1e4)).cdf).pvalue > 1e-3
    per_decade = np.histogram(np.log10(values), bins=[-5, -4, -3, -2, -1])[0]
    np.testing.assert_allclose(per_decade / len(values), 0.25, atol=0.015)
    # the same test tells a plain uniform apart
    plain = draws(uniform(1e-5, 1e-1))
    assert stats.kstest(np.log(plain), stats.uniform(loc=math.log(1e-5), scale=math.log(1e4)).cdf).pvalue < 1e-6


def test_randint_excludes_its_upper_bound():
    values = draws(randint(3, 8), n=10000)
    assert all(isinstance(v, int) for v in values.tolist())
    counts = np.bincount(values - 3)
    assert len(counts) == 5  # 3..7: 8 never drawn
    assert stats.chisquare(counts).pvalue > 1e-3


def test_choice_draws_its_options_evenly():
    options = ["relu", "tanh", "gelu"]
    values = draws(choice(options), n=6000)
    counts = [int(np.sum(values == o)) for o in options]
    assert sum(counts) == 6000 and stats.chisquare(counts).pvalue > 1e-3
    assert draws(choice([64]), n=5).tolist() == [64] * 5


@pytest.mark.parametrize("make, error, words", [
    (lambda: uniform(1.0, 1.0), ValueError, "b must be in"),
    (lambda: uniform(0.0, math.inf), ValueError, "b must be finite"),
    (lambda: uniform("0", 1), TypeError, "a must be a number"),
    (lambda: loguniform(0.0, 1.0), ValueError, "a must be in"),
    (lambda: loguniform(1e-2, 1e-3), ValueError, "b must be in"),
    (lambda: randint(1.5, 4), TypeError, "a must be an integer"),
    (lambda: randint(4, 4), ValueError, "b must be in"),
    (lambda: choice([]), ValueError, "options"),
    (lambda: choice("abc"), TypeError, "options"),
    (lambda: choice([1, 2], p=[0.2, 0.2]), ValueError, "p must hold 2 probabilities"),
])
def test_distribution_arguments_are_checked(make, error, words):
    with pytest.raises(error, match=words):
        make()


# ---------------------------------------------------------------------- searches
def quadratic(config):
    """Best at lr 10^-2.5, x 0.3, n 7, act "tanh"."""
    return ((math.log10(config["lr"]) + 2.5) ** 2 + (config["x"] - 0.3) ** 2 + 0.01 * (config["n"] - 7) ** 2
            + (0.0 if config["act"] == "tanh" else 0.5))


SPACE = {"lr": loguniform(1e-5, 1.0), "x": uniform(-1.0, 1.0), "n": randint(0, 20),
         "act": choice(["relu", "tanh", "gelu"])}


def test_random_search_returns_its_trials_best_first():
    trials = random_search(quadratic, SPACE, n_trials=15, seed=3)
    assert len(trials) == 15 and all(isinstance(t, Trial) for t in trials)
    scores = [t.score for t in trials]
    assert scores == sorted(scores)
    for config, score, seconds in trials:
        assert score == quadratic(config) and seconds >= 0
        assert 1e-5 <= config["lr"] < 1.0 and -1.0 <= config["x"] < 1.0 and 0 <= config["n"] < 20
        assert config["act"] in ("relu", "tanh", "gelu")


def test_random_search_is_reproducible_by_seed():
    def run(seed):
        return [(t.config, t.score) for t in random_search(quadratic, SPACE, n_trials=8, seed=seed, refine=1)]
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_refine_improves_on_a_quadratic():
    plain = random_search(quadratic, SPACE, n_trials=20, seed=0)
    refined = random_search(quadratic, SPACE, n_trials=20, seed=0, refine=3)
    assert len(refined) == 80
    # the first round is the same draw, so the best can only improve; here it improves a lot
    assert refined[0].score <= plain[0].score
    assert refined[0].score < 0.2 * plain[0].score
    assert refined[0].config["act"] == "tanh"


def test_refine_draws_around_the_best_trials():
    calls = []

    def objective(config):
        calls.append(config)
        return (config["x"] - 0.3) ** 2

    random_search(objective, {"x": uniform(-10.0, 10.0)}, n_trials=10, seed=1, refine=2)
    assert len(calls) == 30
    for r, half_width in ((1, 5.0), (2, 2.5)):  # round r: 0.5^r of the width 20, centred on a best trial
        centres = sorted(calls[:10 * r], key=lambda c: abs(c["x"] - 0.3))[:2]  # ceil(0.2 * 10) of them
        spread = [min(abs(c["x"] - centre["x"]) for centre in centres) for c in calls[10 * r:10 * (r + 1)]]
        assert max(spread) <= half_width
        assert max(spread) > 0.2 * half_width  # not all on the centres


def test_nan_scores_sort_last_and_objective_must_return_a_number():
    trials = grid_search(lambda c: float("nan") if c["a"] == 2 else -c["a"], {"a": [1, 2, 3]})
    assert [t.config["a"] for t in trials] == [3, 1, 2]
    assert grid_search(lambda c: np.float32(c["a"]), {"a": [2, 1]})[0].score == 1.0
    with pytest.raises(TypeError, match="objective must return a number"):
        grid_search(lambda c: "good", {"a": [1]})


def test_grid_search_covers_the_product():
    seen = []

    def objective(config):
        seen.append(config)
        return config["b"] * 10 + config["a"]

    grid = {"a": [1, 2, 3], "b": (0.5, 0.1), "c": np.array(["x", "y"])}
    trials = grid_search(objective, grid)
    assert len(trials) == 12
    assert seen == [dict(zip(grid, combination)) for combination in
                    itertools.product([1, 2, 3], [0.5, 0.1], ["x", "y"])]  # the last name fastest
    assert [t.score for t in trials] == sorted(t.score for t in trials)
    assert trials[0].config == {"a": 1, "b": 0.1, "c": "x"}


def test_table_prints_the_ranked_trials():
    trials = random_search(quadratic, SPACE, n_trials=4, seed=0)
    lines = table(trials).splitlines()
    assert lines[0].split() == ["rank", "score", "seconds", "lr", "x", "n", "act"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    assert lines[1].split()[1] == f"{trials[0].score:.4g}"
    assert lines[1].split()[-1] == trials[0].config["act"]
    with pytest.raises(TypeError, match=r"trials\[0\]"):
        table([({"a": 1}, 0.0, 0.0)])


@pytest.mark.parametrize("call, error, words", [
    (lambda: random_search(quadratic, [("lr", uniform(0, 1))]), TypeError, "space must be a dict"),
    (lambda: random_search(quadratic, {}), ValueError, "space must name"),
    (lambda: random_search(quadratic, {"lr": [1e-3, 1e-2]}), TypeError, r"space\['lr'\].*choice"),
    (lambda: random_search(quadratic, {3: uniform(0, 1)}), TypeError, "space's keys"),
    (lambda: random_search(quadratic, SPACE, n_trials=0), ValueError, "n_trials"),
    (lambda: random_search(quadratic, SPACE, refine=-1), ValueError, "refine"),
    (lambda: random_search(quadratic, SPACE, seed=1.5), TypeError, "seed"),
    (lambda: random_search("quadratic", SPACE), TypeError, "objective"),
    (lambda: random_search(quadratic, SPACE, client=object()), TypeError, "client"),
    (lambda: grid_search(quadratic, {"a": 3}), TypeError, r"grid\['a'\]"),
    (lambda: grid_search(quadratic, {"a": "abc"}), TypeError, r"grid\['a'\]"),
    (lambda: grid_search(quadratic, {"a": []}), ValueError, r"grid\['a'\]"),
    (lambda: grid_search(quadratic, None), TypeError, "grid must be a dict"),
])
def test_search_arguments_are_checked(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_tuning_is_reachable_from_engine():
    assert engine.tuning.random_search is random_search


# -------------------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (the dask extra)")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


def test_random_search_on_dask_gives_the_same_trials(client):
    local = random_search(quadratic, SPACE, n_trials=10, seed=4, refine=2)
    remote = random_search(quadratic, SPACE, n_trials=10, seed=4, refine=2, client=client)
    assert [(t.config, t.score) for t in remote] == [(t.config, t.score) for t in local]


def test_grid_search_of_training_runs_on_dask(client):
    """Real trainings of 8 configurations, one per task: the same validation losses as one by one."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.argmax(X @ rng.normal(size=(4, 3)), axis=1)

    def objective(config):
        model = engine.MLP([4, config["hidden"], 3], dropout=config["dropout"], seed=0, backend="numpy",
                           dtype="float64")
        trainer = engine.Trainer(model, optimizer=engine.AdamW(lr=config["lr"]))
        history = trainer.fit(X[:45], y[:45], epochs=3, batch_size=15, validation_data=(X[45:], y[45:]), verbose=0)
        return history.history["val_loss"][-1]

    grid = {"hidden": [4, 16], "lr": [1e-3, 3e-2], "dropout": [0.0, 0.3]}
    remote = grid_search(objective, grid, client=client)
    local = grid_search(objective, grid)
    assert len(remote) == 8
    assert len({t.score for t in local}) == 8  # eight different runs, not one repeated
    assert [(t.config, t.score) for t in remote] == [(t.config, t.score) for t in local]
