"""Property-based robustness of the public API (hypothesis).

Random shapes, dtypes, memory layouts and values go to MLP, Trainer.train_step / fit /
evaluate, predict, set_weights, save/load and the engine.sklearn estimators. Each case is
either a good input, which must train or answer correctly, or a good input with one
defect injected (NaN, Inf, a value overflowing the model's dtype, object, complex or
string arrays, wrong shapes, empty arrays, out-of-range labels, bad arguments), which
must raise the expected ValueError or TypeError naming the argument and change nothing:
weights, optimizer state and the step count are compared before and after.

Every case runs in a child process (tests/robustness_cases.py) with a timeout, so that a
segfault or a hang is reported with the case, not fatal to the run. The default run is a
few hundred cases in well under a minute on 2 cores; FUSEDENSE_HYPOTHESIS=long runs ten
times as many. ``pytest --hypothesis-show-statistics`` counts them.
"""
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robustness_cases import HIDDEN, N_IN, OUT, run_case

SCALE = 10 if os.environ.get("FUSEDENSE_HYPOTHESIS") == "long" else 1
FIRST_CASE_TIMEOUT, CASE_TIMEOUT = 300, 60  # the first compiles (or loads) the kernels


def examples(n):
    return settings(max_examples=n * SCALE, deadline=None, database=None, derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


class ChildRunner:
    """One worker process running cases; a crash or a hang fails the case and the next
    case gets a fresh worker."""

    def __init__(self):
        self.pool, self.cases = None, 0

    def __call__(self, case):
        first = self.pool is None
        if first:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        future = self.pool.submit(run_case, case)
        self.cases += 1
        try:
            return future.result(timeout=FIRST_CASE_TIMEOUT if first else CASE_TIMEOUT)
        except BrokenProcessPool:
            self.pool = None
            pytest.fail(f"the child process died (a crash) on the case {describe(case)}")
        except FutureTimeout:
            self.close(kill=True)
            pytest.fail(f"the case hung (no answer in {CASE_TIMEOUT} s): {describe(case)}")

    def close(self, kill=False):
        if self.pool is not None:
            if kill:
                for process in list(self.pool._processes.values()):
                    process.kill()
            self.pool.shutdown(wait=not kill, cancel_futures=True)
            self.pool = None


@pytest.fixture(scope="module")
def child():
    runner = ChildRunner()
    yield runner
    runner.close()


def describe(case):
    def short(value):
        if isinstance(value, np.ndarray):
            return f"array(shape={value.shape}, dtype={value.dtype}, strides={value.strides})"
        if isinstance(value, list) and len(value) > 4:
            return f"list(len={len(value)})"
        return repr(value)
    return "{" + ", ".join(f"{k}: {short(v)}" for k, v in case.items()) + "}"


# ------------------------------------------------------------ strategies
SETUPS = st.fixed_dictionaries({"backend": st.sampled_from(["numpy", "numba"]),
                                "dtype": st.sampled_from(["float32", "float64"]),
                                "loss": st.sampled_from(sorted(OUT))})
INPUT_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int8", "uint8", "bool"]
LAYOUTS = ["c", "fortran", "strided", "transposed", "reversed", "readonly", "list"]


def _elements(dtype, huge):
    if dtype == "bool":
        return st.booleans()
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        bound = int(info.max) if huge else 10**4  # int64's extremes make logits overflow
        return st.integers(max(int(info.min), -bound), min(int(info.max), bound))
    width = {"float16": 16, "float32": 32, "float64": 64}[dtype]
    limit = float(np.float32(1e30)) if huge and width > 16 else 1e4  # exact in every width used
    # tiny values included: subnormals of float64 become 0 in float32, which is fine
    return st.floats(-limit, limit, allow_nan=False, allow_infinity=False, width=width)


def laid_out(array, layout):
    """``array``'s values in another memory layout (the values stay the same)."""
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "strided":
        wide = np.zeros((array.shape[0] * 2,) + tuple(2 * s for s in array.shape[1:]), array.dtype)
        wide[(slice(None, None, 2),) * array.ndim] = array
        return wide[(slice(None, None, 2),) * array.ndim]
    if layout == "transposed":
        return np.ascontiguousarray(array.T).T
    if layout == "reversed":
        return np.ascontiguousarray(array[::-1])[::-1]
    if layout == "readonly":
        array = array.copy()
        array.setflags(write=False)
        return array
    if layout == "list":
        return array.tolist()
    return np.ascontiguousarray(array)


@st.composite
def features(draw, n_rows, n_cols=N_IN, huge=False):
    dtype = draw(st.sampled_from(INPUT_DTYPES))
    array = draw(hnp.arrays(dtype, (n_rows, n_cols), elements=_elements(dtype, huge)))
    return laid_out(array, draw(st.sampled_from(LAYOUTS)))


@st.composite
def targets(draw, loss, n_rows):
    if loss == "cross_entropy":
        form = draw(st.sampled_from(["int64", "int8", "float", "column", "probabilities", "list"]))
        labels = draw(hnp.arrays(np.int64, n_rows, elements=st.integers(0, OUT[loss] - 1)))
        if form == "probabilities":
            raw = draw(hnp.arrays(np.float64, (n_rows, OUT[loss]), elements=st.floats(0, 1)))
            return raw
        return {"int64": labels, "int8": labels.astype(np.int8), "float": labels.astype(np.float64),
                "column": labels[:, None], "list": labels.tolist()}[form]
    if loss == "binary_cross_entropy":
        y = draw(hnp.arrays(np.float64, n_rows, elements=st.floats(0, 1)))
        return y[:, None] if draw(st.booleans()) else y
    return draw(hnp.arrays(np.float64, (n_rows, OUT[loss]), elements=st.floats(-1e3, 1e3)))


def _as_float(x):
    return np.array(x, dtype=np.float64)


def _poke(x, value, g):
    x = _as_float(x)
    if x.size:
        x.flat[g.integers(x.size)] = value
    return x


# Defects of the features: (name, how, exception). ``how(X, setup, g)`` returns the bad X.
X_DEFECTS = {
    "nan": (lambda X, s, g: _poke(X, np.nan, g), ValueError),
    "inf": (lambda X, s, g: _poke(X, np.inf, g), ValueError),
    "-inf": (lambda X, s, g: _poke(X, -np.inf, g), ValueError),
    "overflows_dtype": (lambda X, s, g: _poke(X, 1e39 if s["dtype"] == "float32" else np.inf, g), ValueError),
    "object": (lambda X, s, g: _as_float(X).astype(object), TypeError),
    "complex": (lambda X, s, g: _as_float(X) + 1j, TypeError),
    "strings": (lambda X, s, g: _as_float(X).astype(str), TypeError),
    "datetime": (lambda X, s, g: np.zeros(np.shape(X), "datetime64[s]"), TypeError),
    "none": (lambda X, s, g: None, TypeError),
    "ragged": (lambda X, s, g: [[1.0] * N_IN, [1.0]], TypeError),
    "1d": (lambda X, s, g: _as_float(X)[0], ValueError),
    "3d": (lambda X, s, g: _as_float(X)[..., None], ValueError),
    "0d": (lambda X, s, g: np.float64(1.0), ValueError),
    "extra_column": (lambda X, s, g: np.hstack([_as_float(X), np.ones((len(_as_float(X)), 1))]), ValueError),
    "missing_column": (lambda X, s, g: _as_float(X)[:, 1:], ValueError),
}


def _y_defects(loss):
    """(name, how(y, n_rows, g), exception) defects of the targets for ``loss``."""
    defects = {
        "nan": (lambda y, n, g: _poke(y, np.nan, g), ValueError),
        "object": (lambda y, n, g: np.asarray(y).astype(object), TypeError),
        "strings": (lambda y, n, g: np.asarray(y).astype(str), TypeError),
        "complex": (lambda y, n, g: _as_float(y) + 1j, TypeError),
        "missing_row": (lambda y, n, g: np.asarray(y)[:-1], ValueError),
        "3d": (lambda y, n, g: _as_float(y).reshape(n, -1)[..., None], ValueError),
        "none": (lambda y, n, g: None, TypeError),
    }
    if loss == "cross_entropy":
        defects.update({
            "label_too_big": (lambda y, n, g: _label(n, OUT[loss], g), ValueError),
            "label_negative": (lambda y, n, g: _label(n, -1, g), ValueError),
            "label_fraction": (lambda y, n, g: _label(n, 0.5, g), TypeError),
            "label_huge": (lambda y, n, g: _label(n, 2**62, g), ValueError),
            "wrong_classes": (lambda y, n, g: np.full((n, OUT[loss] + 1), 0.25), ValueError),
        })
    elif loss == "binary_cross_entropy":
        defects.update({
            "above_one": (lambda y, n, g: _poke(y, 1.5, g), ValueError),
            "below_zero": (lambda y, n, g: _poke(y, -0.1, g), ValueError),
            "two_columns": (lambda y, n, g: np.zeros((n, 2)), ValueError),
        })
    else:
        defects.update({
            "inf": (lambda y, n, g: _poke(y, np.inf, g), ValueError),
            "wrong_columns": (lambda y, n, g: np.zeros((n, OUT[loss] + 1)), ValueError),
            "flat": (lambda y, n, g: np.zeros(n * OUT[loss]), ValueError),
        })
    return defects


def _label(n, bad, g):
    y = np.zeros(n, dtype=np.int64 if float(bad).is_integer() else np.float64)
    y[g.integers(n)] = bad
    return y


@st.composite
def data_case(draw, huge=False):
    """A setup, good (X, y), and at most one defect: (case, argument defect or None)."""
    setup = draw(SETUPS)
    n = draw(st.integers(1, 12))
    X = draw(features(n, huge=huge))
    y = draw(targets(setup["loss"], n))
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    which = draw(st.sampled_from(["none", "none", "X", "y", "empty"]))
    defect = None
    if which == "X":
        name = draw(st.sampled_from(sorted(X_DEFECTS)))
        how, error = X_DEFECTS[name]
        X, defect = how(X, setup, g), ("X", name, error)
    elif which == "y":
        defects = _y_defects(setup["loss"])
        name = draw(st.sampled_from(sorted(defects)))
        how, error = defects[name]
        y, defect = how(y, n, g), ("y", name, error)
    elif which == "empty":
        X, y, defect = _as_float(X)[:0], np.asarray(y)[:0], ("X", "empty", ValueError)
    return {**setup, "X": X, "y": y}, defect


def check_outcome(report, case, defect, argument_names, allow_non_finite=False):
    """The properties every case has: a refused call raised the expected exception naming
    the argument and changed nothing; an accepted one answered with finite values."""
    if defect is not None:
        argument, name, error = defect
        assert report["outcome"] == "error", f"defect {name} of {argument} accepted: {report}, {describe(case)}"
        assert report["type"] == error.__name__, f"defect {name} of {argument}: {report}"
        named = argument_names[argument]
        assert re.search(rf"(?<![\w\[]){re.escape(named)}(?!\w)", report["message"]), \
            f"defect {name}: the message does not name {named!r}: {report['message']!r}"
        assert not report["changed"], f"a refused call changed the weights or state: {report}"
        return False
    if report["outcome"] == "error":
        if allow_non_finite and report["type"] == "NonFiniteError":
            assert not report["changed"], report
            return False
        pytest.fail(f"good input refused: {report['type']}: {report['message']} for {describe(case)}")
    assert report.get("finite", True), f"non-finite answer to good input: {report}, {describe(case)}"
    return True


def _huge(case, defect):
    """Whether good features are large enough for the logits or loss to overflow."""
    return defect is None and np.abs(_as_float(case["X"])).max(initial=0) > 1e15


# ------------------------------------------------------------------ tests
@examples(150)
@given(data_case(huge=True))
def test_train_step(child, drawn):
    case, defect = drawn
    case["op"] = "train_step"
    report = child(case)
    if check_outcome(report, case, defect, {"X": "xb", "y": "yb"}, allow_non_finite=_huge(case, defect)):
        assert report["steps"] == 1 and report["changed"]


FIT_ARGUMENT_DEFECTS = {
    "batch_size_zero": ({"batch_size": 0}, ValueError), "batch_size_float": ({"batch_size": 2.5}, TypeError),
    "batch_size_string": ({"batch_size": "8"}, TypeError), "batch_size_bool": ({"batch_size": True}, TypeError),
    "epochs_negative": ({"epochs": -1}, ValueError), "validation_split_one": ({"validation_split": 1.0}, ValueError),
    "validation_split_nan": ({"validation_split": float("nan")}, ValueError),
    "verbose_three": ({"verbose": 3}, ValueError),
}


@examples(80)
@given(data_case(), st.integers(0, 2), st.integers(1, 10), st.booleans(), st.sampled_from([None, *FIT_ARGUMENT_DEFECTS]))
def test_fit(child, drawn, epochs, batch_size, shuffle, bad_argument):
    case, defect = drawn
    kwargs = {"epochs": epochs, "batch_size": batch_size, "shuffle": shuffle}
    if bad_argument is not None and defect is None:
        bad, error = FIT_ARGUMENT_DEFECTS[bad_argument]
        kwargs.update(bad)
        defect = (next(iter(bad)), bad_argument, error)
    case.update(op="fit", kwargs=kwargs)
    report = child(case)
    names = {"X": "X", "y": "y", **{k: k for k in kwargs}}
    if check_outcome(report, case, defect, names, allow_non_finite=_huge(case, defect)):
        n_rows = len(case["y"])
        assert report["steps"] == epochs * -(-n_rows // batch_size)


@examples(80)
@given(data_case(), st.sampled_from([None, 1, 4, 100, 0, -2, 1.5]))
def test_evaluate(child, drawn, batch_size):
    case, defect = drawn
    if defect is None and batch_size is not None and (isinstance(batch_size, float) or batch_size < 1):
        defect = ("batch_size", "bad", TypeError if isinstance(batch_size, float) else ValueError)
    case.update(op="evaluate", kwargs={"batch_size": batch_size})
    report = child(case)
    assert not report["changed"], report
    if check_outcome(report, case, defect, {"X": "X", "y": "y", "batch_size": "batch_size"}):
        assert report["keys"][0] == "loss" or "loss" in report["keys"]


@examples(100)
@given(data_case(), st.sampled_from([None, 1, 3, 1000, 0, "2"]))
def test_predict(child, drawn, batch_size):
    case, defect = drawn
    if defect is not None and defect[0] == "y":
        defect = None  # predict takes no targets
    if defect is None and batch_size is not None and (isinstance(batch_size, str) or batch_size < 1):
        defect = ("batch_size", "bad", TypeError if isinstance(batch_size, str) else ValueError)
    case.update(op="predict", kwargs={"batch_size": batch_size})
    report = child(case)
    assert not report["changed"], report
    if check_outcome(report, case, defect, {"X": "X", "batch_size": "batch_size"}):
        assert report["shape"] == (np.asarray(case["X"]).shape[0], OUT[case["loss"]])


def _weight_shapes(loss):
    return [(N_IN, HIDDEN), (HIDDEN,), (HIDDEN, OUT[loss]), (OUT[loss],)]


WEIGHT_DEFECTS = {
    "one_missing": (lambda w, g: w[:-1], ValueError, "weights"),
    "one_extra": (lambda w, g: w + [np.zeros(3)], ValueError, "weights"),
    "transposed": (lambda w, g: [np.asarray(w[0]).T] + w[1:], ValueError, "weights[0]"),
    "nan": (lambda w, g: w[:1] + [_poke(w[1], np.nan, g)] + w[2:], ValueError, "weights[1]"),
    "inf": (lambda w, g: w[:2] + [_poke(w[2], -np.inf, g)] + w[3:], ValueError, "weights[2]"),
    "object": (lambda w, g: w[:3] + [np.asarray(w[3]).astype(object)], TypeError, "weights[3]"),
    "strings": (lambda w, g: [np.asarray(w[0]).astype(str)] + w[1:], TypeError, "weights[0]"),
    "not_a_list": (lambda w, g: {"W": w[0]}, TypeError, "weights"),
    "array_of_arrays": (lambda w, g: np.zeros(4), TypeError, "weights"),
    "none_inside": (lambda w, g: w[:1] + [None] + w[2:], TypeError, "weights[1]"),
}


@examples(100)
@given(SETUPS, st.data(), st.sampled_from([None, *WEIGHT_DEFECTS]))
def test_set_weights(child, setup, data, bad):
    weights = []
    for shape in _weight_shapes(setup["loss"]):
        dtype = data.draw(st.sampled_from(["float64", "float32", "int32", "float16"]))
        array = data.draw(hnp.arrays(dtype, shape, elements=_elements(dtype, huge=False)))
        weights.append(laid_out(array, data.draw(st.sampled_from(LAYOUTS))))
    defect = None
    if bad is not None:
        how, error, argument = WEIGHT_DEFECTS[bad]
        weights = how(weights, np.random.default_rng(data.draw(st.integers(0, 1000))))
        defect = (argument, bad, error)
    case = {**setup, "op": "set_weights", "weights": weights}
    report = child(case)
    if check_outcome(report, case, defect, {a: a for a in ("weights", "weights[0]", "weights[1]", "weights[2]",
                                                            "weights[3]")}):
        assert report["shape"] == (sum(int(np.prod(s)) for s in _weight_shapes(setup["loss"])),)


@examples(60)
@given(SETUPS, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
       st.one_of(st.none(), st.integers(0, 4000)))
def test_save_and_load_survive_corruption(child, setup, edits, cut):
    """Saved, then bytes overwritten and/or cut, then loaded: the file's own values or a
    ValueError naming it; never another exception, never a half-loaded trainer."""
    case = {**setup, "op": "save_load", "edits": edits, "cut": cut}
    report = child(case)
    assert not report["changed"], report
    if report["outcome"] == "error":
        assert report["type"] == "ValueError", report
        assert re.search(r"(model|checkpoint)\.npz (is not a fusedense|is a fusedense)", report["message"]), report


MLP_DEFECTS = {
    "sizes": [[], [3], [0, 2], [3, -1], [3, 2.5], ["3", 2], [3, True], 7, "3,2", [10**12, 10**12], None],
    "activation": ["swish9", 3, ["relu", "relu", "relu"], None],
    "dropout": [1.0, -0.1, float("nan"), "0.1", [0.1] * 5],
    "dtype": ["float16", "int32", 3, "float"],
    "init": ["glorot", 1.0],
    "output": ["tanh", None],
    "seed": [-1, 1.5, "0"],
}


@examples(80)
@given(st.sampled_from(["numpy", "numba"]), st.integers(1, 4), st.lists(st.integers(1, 6), max_size=2),
       st.sampled_from(["relu", "tanh", "prelu", "gelu", "elu"]), st.sampled_from([0.0, 0.3]),
       st.sampled_from(["float32", "float64"]), st.sampled_from([None, *MLP_DEFECTS]), st.data())
def test_mlp_constructor(child, backend, n_in, hidden, activation, dropout, dtype, bad, data):
    kwargs = {"sizes": [n_in, *hidden, 2], "activation": activation, "dropout": dropout, "dtype": dtype, "seed": 1}
    defect = None
    if bad is not None:
        value = data.draw(st.sampled_from(MLP_DEFECTS[bad]))
        kwargs[bad] = value
        defect = (bad, repr(value), None)
    case = {"backend": backend, "dtype": "float32", "loss": "mse", "op": "mlp", "kwargs": kwargs}
    report = child(case)
    if defect is not None:
        # lists whose length does not match the hidden layers, and 'sizes' given as a
        # string, are ValueError or TypeError by their nature; either names the argument
        assert report["outcome"] == "error" and report["type"] in ("ValueError", "TypeError"), (report, kwargs)
        assert re.search(rf"\b{bad}\b", report["message"]), (report, kwargs)
        return
    assert report["outcome"] == "ok" and report["finite"] and report["shape"] == (2, 2), (report, kwargs)


@examples(40)
@given(st.sampled_from(["numpy", "numba"]), st.sampled_from(["classifier", "regressor"]), st.integers(4, 12),
       st.sampled_from([None, "nan", "inf", "object_strings", "3d", "empty"]), st.data())
def test_sklearn_estimators(child, backend, estimator, n, bad, data):
    """The estimators on random data: fitted and predicting finite values, or refusing a
    defect with scikit-learn's ValueError (its messages name X for NaN and Inf)."""
    X = _as_float(data.draw(features(n)))
    if estimator == "classifier":
        y = data.draw(st.sampled_from([np.arange(n) % 2, np.array(["a", "b"] * n)[:n], np.arange(n) % 3 * 1.0]))
    else:
        y = data.draw(hnp.arrays(np.float64, n, elements=st.floats(-100, 100)))
    pokes = {"nan": np.nan, "inf": np.inf}
    if bad in pokes:
        X = _poke(X, pokes[bad], np.random.default_rng(n))
    elif bad == "object_strings":
        X = X.astype(str).astype(object)
        X[0, 0] = "not a number"
    elif bad == "3d":
        X = X[..., None]
    elif bad == "empty":
        X, y = X[:0], y[:0]
    case = {"backend": backend, "dtype": "float32", "loss": "mse", "op": "sklearn", "estimator": estimator,
            "X": X, "y": y}
    report = child(case)
    if bad is None:
        assert report["outcome"] == "ok" and report["finite"], (report, describe(case))
        return
    assert report["outcome"] == "error" and report["type"] == "ValueError", (report, describe(case))
    if bad in pokes:
        assert re.search(r"\bX\b", report["message"]), report


def test_a_crash_in_the_child_is_reported_not_fatal(child):
    """The harness itself: a case that kills its process fails with the case named, and the
    next case runs in a fresh process."""
    runner = ChildRunner()
    try:
        with pytest.raises(pytest.fail.Exception, match="the child process died"):
            runner({"op": "crash", "backend": "numpy", "dtype": "float32", "loss": "mse"})
        good = runner({"op": "predict", "backend": "numpy", "dtype": "float32", "loss": "mse",
                       "X": np.ones((2, N_IN)), "kwargs": {}})
        assert good["outcome"] == "ok" and good["shape"] == (2, OUT["mse"])
    finally:
        runner.close()
