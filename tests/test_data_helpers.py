"""engine.data: Standardizer (against scikit-learn), PCAWhitening (against a NumPy SVD) and
train_val_test_split (stratification, reproducibility, argument checks)."""
import numpy as np
import pytest

from engine.data import PCAWhitening, Standardizer, standardize, train_val_test_split


def correlated(n=400, d=5, seed=0, decades=4):
    """Rows with correlated columns of scales ``decades`` apart and a non-zero mean."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.logspace(-decades / 2, decades / 2, d)
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) * 10


# ---------------------------------------------------------------------- Standardizer
def test_standardizer_matches_sklearn_standard_scaler():
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    X = correlated()
    X[:, 2] = 0.1  # a constant column (0.1 has no exact binary value: its deviation is rounding)
    train, other = X[:300], correlated(seed=1)
    ours, theirs = Standardizer().fit(train), preprocessing.StandardScaler().fit(train)
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-13)
    np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-13)
    np.testing.assert_allclose(ours.transform(other), theirs.transform(other), rtol=1e-12, atol=1e-12)
    z = ours.transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), [1, 1, 0, 1, 1], atol=1e-12)


def test_standardizer_fits_on_the_training_rows_only():
    train, test = correlated(n=100), correlated(n=50, seed=3) + 5
    scaler = Standardizer().fit(train)
    np.testing.assert_allclose(scaler.transform(test), (test - train.mean(0)) / train.std(0), rtol=1e-12)
    np.testing.assert_allclose(scaler.fit_transform(test).mean(axis=0), 0, atol=1e-12)  # refit: test's own


def test_standardizer_inverse_transform_and_dtypes():
    X = correlated()
    scaler = Standardizer().fit(X)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(X)), X, rtol=1e-12, atol=1e-10)
    assert scaler.transform(X.astype(np.float32)).dtype == np.float32
    assert scaler.transform(np.rint(X).astype(np.int64)).dtype == np.float64


def test_standardize_helper_is_the_standardizer():
    a, b = correlated(n=60), correlated(n=20, seed=2)
    scaler = Standardizer().fit(a)
    for got, expected in zip(standardize(a, b), (scaler.transform(a), scaler.transform(b))):
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------- PCAWhitening
def test_pca_whitening_matches_numpy_svd():
    X = correlated()
    whitening = PCAWhitening(eps=1e-5).fit(X)
    centred = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variance = s**2 / len(X)
    np.testing.assert_allclose(whitening.mean_, X.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(whitening.explained_variance_, variance, rtol=1e-9)
    signs = np.sign(np.sum(whitening.components_ * vt, axis=1))  # axes agree up to their sign
    np.testing.assert_allclose(whitening.components_, vt * signs[:, None], atol=1e-9)
    expected = centred @ vt.T * signs / np.sqrt(variance + 1e-5)
    np.testing.assert_allclose(whitening.transform(X), expected, rtol=1e-8, atol=1e-10)


def test_pca_whitened_covariance_is_the_identity_within_eps():
    X = correlated(decades=1)
    for eps in (0.0, 1e-5, 1.0):
        whitening = PCAWhitening(eps=eps).fit(X)
        z = whitening.transform(X)
        covariance = z.T @ z / len(z)
        variance = whitening.explained_variance_
        np.testing.assert_allclose(covariance, np.diag(variance / (variance + eps)), atol=1e-9)
        if eps <= 1e-5:
            assert variance.min() > 0.01  # so eps takes at most 1e-3 off a unit variance
            np.testing.assert_allclose(covariance, np.eye(X.shape[1]), atol=1e-3)
    assert np.all(np.diag(covariance) < 0.99)  # eps=1 shrinks every axis


def test_pca_whitening_axes_are_ordered_and_signed():
    whitening = PCAWhitening().fit(correlated())
    assert np.all(np.diff(whitening.explained_variance_) <= 0)
    largest = whitening.components_[np.arange(5), np.argmax(np.abs(whitening.components_), axis=1)]
    assert np.all(largest > 0)
    np.testing.assert_allclose(whitening.components_ @ whitening.components_.T, np.eye(5), atol=1e-12)


def test_pca_whitening_keeps_eps_from_blowing_up_a_flat_direction():
    X = correlated(d=4)
    X = np.column_stack([X, X[:, 0] - X[:, 1]])  # rank 4 in 5 columns
    whitening = PCAWhitening(eps=1e-5).fit(X)
    z = whitening.transform(X)
    assert whitening.explained_variance_[-1] < 1e-9
    assert np.abs(z[:, -1]).max() < 1e-3
    np.testing.assert_allclose(whitening.inverse_transform(z), X, rtol=1e-9, atol=1e-8)


def test_pca_whitening_fits_on_the_training_rows_only():
    train, test = correlated(), correlated(n=30, seed=5)
    whitening = PCAWhitening().fit(train)
    expected = (test - train.mean(0)) @ whitening.components_.T / np.sqrt(whitening.explained_variance_ + 1e-5)
    np.testing.assert_allclose(whitening.transform(test), expected, rtol=1e-12)
    assert whitening.transform(test.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("transformer", [Standardizer, PCAWhitening])
def test_transformers_check_their_input(transformer):
    with pytest.raises(ValueError, match="not fitted"):
        transformer().transform(np.ones((3, 2)))
    fitted = transformer().fit(correlated(d=3))
    with pytest.raises(ValueError, match="X must have 3 columns"):
        fitted.transform(np.ones((4, 2)))
    with pytest.raises(ValueError, match="X must be 2-D"):
        transformer().fit(np.ones(5))
    with pytest.raises(ValueError, match="X must be finite"):
        transformer().fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(TypeError, match="X must be an array of real numbers"):
        transformer().fit(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="X must not be empty"):
        transformer().fit(np.ones((0, 3)))


def test_pca_whitening_eps_is_checked():
    with pytest.raises(ValueError, match="eps"):
        PCAWhitening(eps=-1.0)
    with pytest.raises(TypeError, match="eps"):
        PCAWhitening(eps="small")


# ------------------------------------------------------------- train_val_test_split
def labelled(counts, d=3):
    """X whose column 0 is the row number, and y the class of each row (``counts[c]`` of class c)."""
    y = np.repeat(np.arange(len(counts)), counts)
    X = np.column_stack([np.arange(len(y)), np.zeros((len(y), d - 1))])
    return X, y


@pytest.mark.parametrize("counts", [[50, 50], [90, 10], [17, 3, 40, 8, 2, 29], [5] * 13])
@pytest.mark.parametrize("val, test", [(0.2, 0.2), (0.1, 0.3), (0.15, 0.05), (0.33, 0.33)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_is_proportional_within_one_row(counts, val, test, seed):
    X, y = labelled(counts)
    X_train, X_val, X_test, y_train, y_val, y_test = train_val_test_split(X, y, val=val, test=test, seed=seed)
    n = len(y)
    assert (len(y_val), len(y_test)) == (np.ceil(val * n), np.ceil(test * n))
    rows = np.concatenate([X_train[:, 0], X_val[:, 0], X_test[:, 0]]).astype(int)
    assert sorted(rows) == list(range(n))  # a partition
    for X_part, y_part in ((X_train, y_train), (X_val, y_val), (X_test, y_test)):
        np.testing.assert_array_equal(y[X_part[:, 0].astype(int)], y_part)  # X and y rows stay paired
        share = len(y_part) * np.asarray(counts) / n
        assert np.all(np.abs(np.bincount(y_part, minlength=len(counts)) - share) < 1), (share, y_part)


def test_split_returns_sklearns_order_and_shuffles():
    X, y = labelled([30, 30, 40])
    parts = train_val_test_split(X, y)
    assert [len(p) for p in parts] == [60, 20, 20, 60, 20, 20]
    assert not np.all(np.diff(parts[0][:, 0]) > 0)  # training rows come shuffled


def test_split_is_reproducible_by_seed():
    X, y = labelled([40, 25, 35])
    a, b, c = (train_val_test_split(X, y, seed=s) for s in (7, 7, 8))
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x, z)
    assert not np.array_equal(a[0], c[0])


def test_split_small_classes_are_not_favoured():
    """The extra rows of classes whose share is fractional go to random classes: over seeds,
    every class of three rows reaches the test split about as often."""
    X, y = labelled([3] * 10)
    tested = np.zeros(10)
    for seed in range(200):
        tested += np.bincount(train_val_test_split(X, y, val=0.1, test=0.1, seed=seed)[5], minlength=10)
    assert tested.min() > 0.5 * tested.mean()


def test_unstratified_split_takes_continuous_targets():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 2)), rng.normal(size=50)
    X_train, X_val, X_test, y_train, y_val, y_test = train_val_test_split(X, y, stratify=False, seed=3)
    assert (len(X_train), len(X_val), len(X_test)) == (30, 10, 10)
    assert sorted(np.concatenate([y_train, y_val, y_test])) == sorted(y)
    with pytest.raises(ValueError, match="stratify=False"):
        train_val_test_split(X, y)


def test_split_stratifies_one_hot_targets():
    _, labels = labelled([40, 10])
    X = np.arange(50)[:, None]
    y = np.eye(2)[labels]
    y_test = train_val_test_split(X, y, seed=1)[5]
    np.testing.assert_array_equal(y_test.sum(axis=0), [8, 2])


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(val=0.0), ValueError, "val must be in"),
    (dict(val=1.0), ValueError, "val must be in"),
    (dict(test=-0.1), ValueError, "test must be in"),
    (dict(test=1.5), ValueError, "test must be in"),
    (dict(val=0.5, test=0.5), ValueError, r"val \+ test must be < 1"),
    (dict(val="0.2"), TypeError, "val must be a number"),
    (dict(test=None), TypeError, "test must be a number"),
    (dict(val=0.45, test=0.45), ValueError, "no row for training"),
    (dict(stratify="yes"), TypeError, "stratify"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_split_arguments_are_checked(kwargs, error, words):
    X, y = labelled([6, 4])
    with pytest.raises(error, match=words):
        train_val_test_split(X, y, **kwargs)


def test_split_checks_rows_and_classes():
    X, y = labelled([6, 4])
    with pytest.raises(ValueError, match="y must have one row per row of X"):
        train_val_test_split(X, y[:-1])
    with pytest.raises(ValueError, match="at least 2 rows of every class"):
        train_val_test_split(*labelled([6, 1]))
    with pytest.raises(ValueError, match="X must be an array of rows"):
        train_val_test_split(np.ones((0, 2)), np.ones(0))
