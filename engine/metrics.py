"""Streaming metrics: aggregated over all updates, not a mean of batch means.

Scores ``y_pred`` (N, K) (or (N,) for one output) are the model's logits unless
``from_logits=False``. Class targets are class indices (N,) or (N, 1), one-hot or
probability rows (N, K), or for one output 0/1 labels (a float label counts as class 1
above 0.5). A class index outside [0, max(K, 2)) (torch's ``ignore_index`` rows, such as
-100) is skipped by every classification metric: it adds nothing to any count. ``update``
takes host arrays. Metrics that a backend op computes (:meth:`Metric.device_kind`) are
kept on the device by the trainer instead, with ``metric_sums`` of :mod:`kernels.spec`,
and :meth:`Metric.absorb` takes the sums it read back; a subclass that overrides
``update`` keeps the host path.
"""
from __future__ import annotations

import numpy as np

from kernels import spec

from .validation import as_numeric_array, number, one_of


class Metric:
    name = ""

    def __init__(self):
        self.reset()

    def reset(self):
        self._total = 0.0
        self._count = 0.0

    def compute(self):
        """The aggregate so far (NaN before any update)."""
        return self._total / self._count if self._count else float("nan")

    def _add(self, total, count):
        self._total += float(total)
        self._count += float(count)

    def device_kind(self, targets):
        """``(kind, threshold)`` for the backend's ``metric_sums`` on checked ``targets``
        (class indices (N,) or rows (N, K)), or None when only ``update`` on host arrays
        computes this metric. The kind belongs to the class whose ``update`` is in effect."""
        owner = next((c for c in type(self).__mro__ if "update" in vars(c)), Metric)
        device = vars(owner).get("_device")
        return None if device is None else device(self, targets)

    def absorb(self, total, count):
        """Add sums that ``metric_sums`` accumulated on the device."""
        self._add(total, count)


class Mean(Metric):
    """The (optionally weighted) mean of every value passed to ``update``."""

    name = "mean"

    def update(self, values, weight=None):
        values = np.asarray(values, dtype=np.float64)
        if weight is None:
            self._add(values.sum(), values.size)
        else:
            weight = np.broadcast_to(np.asarray(weight, dtype=np.float64), values.shape)
            self._add((values * weight).sum(), weight.sum())


def _scores(y_pred, argument="y_pred"):
    """Host scores as a 2-D (N, K) array of their own dtype ((N,) is one output)."""
    scores = as_numeric_array(y_pred, argument)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"{argument} must be scores of shape (N, K) or (N,); got shape {scores.shape}")
    return scores


def _classes(y_true, n, k, argument="y_true"):
    """(class per row (N,) int64, kept (N,) bool) of targets for N rows of K scores.

    Rows (N, K > 1) give their argmax and are all kept. Otherwise the N values are class
    indices, kept when in [0, max(K, 2)); for one output, float values are 0/1 labels
    (class 1 above 0.5) and are all kept."""
    y = as_numeric_array(y_true, argument)
    if y.ndim == 2 and k > 1 and y.shape == (n, k):
        return np.argmax(y, axis=1), np.ones(n, dtype=bool)
    if y.ndim > 2 or y.size != n or (y.ndim == 2 and y.shape[1] != 1):
        raise ValueError(f"{argument} must be class indices ({n},) or ({n}, 1)" + (f" or rows ({n}, {k})" if k > 1 else "")
                         + f" for y_pred of shape ({n}, {k}); got shape {y.shape}")
    y = y.reshape(n)
    if y.dtype.kind == "f":
        if k == 1:
            return (y > 0.5).astype(np.int64), np.ones(n, dtype=bool)
        if not np.array_equal(y, np.round(y)):  # NaN fails too
            raise ValueError(f"{argument} as class indices must hold integers; got fractional or NaN values")
    labels = y.astype(np.int64)
    return labels, (labels >= 0) & (labels < max(k, 2))


def _predicted(scores, threshold):
    """The predicted class per row: the first maximum (a NaN counting as the maximum, as
    np.argmax) for several outputs, ``score > threshold`` (compared in the scores' dtype)
    for one."""
    if scores.shape[1] > 1:
        return np.argmax(scores, axis=1)
    return (scores[:, 0] > scores.dtype.type(threshold)).astype(np.int64)


class Accuracy(Metric):
    """The fraction of kept rows whose predicted class is the target's:
    ``sum_i [pred_i == y_i] / #kept``.

    Several outputs: the argmax; one output: ``score > threshold`` (0 on logits, 0.5 on
    probabilities). Targets are class indices, one-hot rows or 0/1 labels; a class index
    outside [0, max(K, 2)) (an ``ignore_index`` row) is skipped, not counted as a miss.
    """

    name = "accuracy"

    def __init__(self, from_logits=True):
        self.threshold = 0.0 if from_logits else 0.5
        super().__init__()

    def update(self, y_true, y_pred):
        scores = _scores(y_pred)
        labels, kept = _classes(y_true, *scores.shape)
        predicted = _predicted(scores, self.threshold)
        self._add(np.count_nonzero((predicted == labels) & kept), np.count_nonzero(kept))

    def _device(self, targets):
        return spec.METRIC_ACCURACY, self.threshold


class MSE(Metric):
    """Mean squared error over all elements: ``sum (pred - y)^2 / (N K)``."""

    name = "mse"

    def update(self, y_true, y_pred):
        y_pred = np.asarray(y_pred, dtype=np.float64)
        d = y_pred - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)
        self._add(np.dot(d.ravel(), d.ravel()), d.size)

    def _device(self, targets):
        return (spec.METRIC_SQUARED_ERROR, 0.0) if targets.ndim == 2 else None


class MAE(Metric):
    """Mean absolute error over all elements: ``sum |pred - y| / (N K)`` (scikit-learn's
    mean_absolute_error, uniform over outputs)."""

    name = "mae"

    def update(self, y_true, y_pred):
        y_pred = np.asarray(y_pred, dtype=np.float64)
        self._add(np.abs(y_pred - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)).sum(), y_pred.size)

    def _device(self, targets):
        return (spec.METRIC_ABSOLUTE_ERROR, 0.0) if targets.ndim == 2 else None


# Rows of K > 1 scores taken for probabilities: each in [0, 1] and summing to 1 within this.
_PROBABILITY_ROW_SUM_ATOL = 1e-3


class CrossEntropy(Metric):
    """Mean cross-entropy over the kept rows: softmax ``-log softmax(x_i)[y_i]`` or
    ``-sum_k t_ik log softmax(x_i)_k`` for several outputs, the sigmoid BCE
    ``max(z, 0) - z t + log(1 + exp(-|z|))`` for one; on probabilities (``from_logits=False``)
    ``-log p_i[y_i]`` and ``-(t log p + (1 - t) log(1 - p))``, p clipped to [1e-12, 1 - 1e-12].

    ``from_logits`` not given: the scores are logits (what the model emits and the trainer
    passes), but ``update`` raises ValueError on several outputs whose every row lies in
    [0, 1] and sums to 1: probabilities taken for logits would give a silently wrong
    value (Keras' metrics assume probabilities). Pass ``from_logits=False`` for
    probabilities, or ``from_logits=True`` to take any scores as logits unchecked. One
    output cannot be told apart, and is taken as a logit. Class indices outside
    [0, max(K, 2)) (``ignore_index`` rows) are skipped: the value is then the loss's mean
    over the kept rows.
    """

    name = "cross_entropy"

    def __init__(self, from_logits=None):
        if from_logits is not None and not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be True, False or None; got {type(from_logits).__name__}")
        self.from_logits = from_logits
        super().__init__()

    def update(self, y_true, y_pred):
        raw = _scores(y_pred)
        scores = raw.astype(np.float64)
        n, k = scores.shape
        logits = self.from_logits is not False
        if self.from_logits is None and k > 1 and n and np.all((scores >= 0) & (scores <= 1)) \
                and np.all(np.abs(scores.sum(axis=1) - 1) <= _PROBABILITY_ROW_SUM_ATOL):
            raise ValueError("y_pred rows look like probabilities (each in [0, 1], summing to 1), but "
                             "engine.metrics.CrossEntropy takes logits by default: pass from_logits=False for "
                             "probabilities (model.predict's output), or from_logits=True if these are logits")
        y = as_numeric_array(y_true, "y_true")
        if k == 1:
            z = scores[:, 0]
            if y.size != n:
                raise ValueError(f"y_true must have one label per row of y_pred ({n}); got shape {y.shape}")
            t = y.reshape(n)
            if t.dtype.kind != "f":  # class labels: 0 or 1, others skipped
                kept = (t >= 0) & (t < 2)
                z, t = z[kept], t[kept]
            t = t.astype(np.float64)
            if logits:
                losses = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
            else:
                p = np.clip(z, 1e-12, 1 - 1e-12)
                losses = -(t * np.log(p) + (1 - t) * np.log1p(-p))
        else:
            if logits:
                shifted = scores - scores.max(axis=1, keepdims=True)
                log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            else:
                log_p = np.log(np.clip(scores, 1e-12, None))
            if y.shape == (n, k):
                losses = -(y * log_p).sum(axis=1)
            else:
                labels, kept = _classes(y, n, k)
                losses = -log_p[np.flatnonzero(kept), labels[kept]]
        self._add(losses.sum(), len(losses))

    def _device(self, targets):
        return (spec.METRIC_CROSS_ENTROPY, 0.0) if self.from_logits is not False else None


AVERAGES = ("binary", "macro", "micro")


def _ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's
    zero_division=0)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


_AVERAGING = """
    Per-class true positives, false positives and false negatives are summed over every
    update, then the score is averaged as scikit-learn's ``average``:

    * "binary": the score of class 1 (pos_label=1) alone; one output (``score >
      threshold``, 0 on logits, 0.5 on probabilities) or two (the argmax);
    * "micro": the score of the counts summed over classes (the accuracy, for one label
      per row);
    * "macro": the unweighted mean of the per-class scores over the classes seen in the
      targets or the predictions of any update (scikit-learn's labels=None).

    ``average=None`` is "binary" for one output and "macro" for several. A score whose
    denominator is 0 (a class never predicted, say) is 0 (zero_division=0). Targets as in
    :class:`Accuracy`; class indices outside [0, max(K, 2)) are skipped. NaN before any
    kept row.
    """


class _ClassCounts(Metric):
    __doc__ = "A score of the confusion counts, :meth:`_score` (tp, fp, fn) per class.\n" + _AVERAGING

    def __init__(self, average=None, from_logits=True):
        self.average = None if average is None else one_of(average, AVERAGES, "average")
        self.threshold = 0.0 if from_logits else 0.5
        super().__init__()

    def reset(self):
        self._outputs = None  # K of the first update, which every later one must have
        self._tp = self._fp = self._fn = None
        self._rows = 0

    def _average(self, outputs):
        average = self.average or ("binary" if outputs == 1 else "macro")
        if average == "binary" and outputs > 2:
            raise ValueError(f"average='binary' scores class 1 of one or two outputs; y_pred has {outputs} "
                             "columns: use average='macro' or 'micro'")
        return average

    def update(self, y_true, y_pred):
        scores = _scores(y_pred)
        n, k = scores.shape
        self._average(k)
        if self._outputs is None:
            self._outputs = k
            self._tp, self._fp, self._fn = (np.zeros(max(k, 2), np.int64) for _ in range(3))
        elif k != self._outputs:
            raise ValueError(f"y_pred must have {self._outputs} columns, as in the earlier updates; got {k}")
        labels, kept = _classes(y_true, n, k)
        labels, predicted = labels[kept], _predicted(scores, self.threshold)[kept]
        hit, classes = predicted == labels, self._tp.size
        self._tp += np.bincount(labels[hit], minlength=classes)
        self._fp += np.bincount(predicted[~hit], minlength=classes)
        self._fn += np.bincount(labels[~hit], minlength=classes)
        self._rows += len(labels)

    def compute(self):
        if not self._rows:
            return float("nan")
        tp, fp, fn = self._tp, self._fp, self._fn
        average = self._average(self._outputs)
        if average == "binary":
            return float(self._score(tp[1], fp[1], fn[1]))
        if average == "micro":
            return float(self._score(tp.sum(), fp.sum(), fn.sum()))
        seen = (tp + fp + fn) > 0
        return float(np.mean(self._score(tp[seen], fp[seen], fn[seen])))

    @staticmethod
    def _score(tp, fp, fn):
        raise NotImplementedError


class Precision(_ClassCounts):
    __doc__ = "Precision ``tp / (tp + fp)``.\n" + _AVERAGING
    name = "precision"

    @staticmethod
    def _score(tp, fp, fn):
        return _ratio(tp, tp + fp)


class Recall(_ClassCounts):
    __doc__ = "Recall ``tp / (tp + fn)``.\n" + _AVERAGING
    name = "recall"

    @staticmethod
    def _score(tp, fp, fn):
        return _ratio(tp, tp + fn)


class F1(_ClassCounts):
    __doc__ = "F1 ``2 tp / (2 tp + fp + fn)``, the harmonic mean of precision and recall.\n" + _AVERAGING
    name = "f1"

    @staticmethod
    def _score(tp, fp, fn):
        return _ratio(2 * tp, 2 * tp + fp + fn)


def _average_ranks(values):
    """1-based ranks of ``values``, ties sharing their mean rank (a NaN ranks above every
    number and ties nothing)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(first) - 1]
    return ranks


class AUC(Metric):
    """Binary ROC AUC over every score of every update (scikit-learn's roc_auc_score):
    the Mann-Whitney statistic ``(sum of the positives' ranks - P (P + 1) / 2) / (P N)``
    with tied scores sharing their mean rank (a tie counts one half), P positives and N
    negatives.

    One output: its score; two: ``x_1 - x_0``, which orders rows as the probability of
    class 1 does on logits (and on probabilities, ``2 p_1 - 1``), so logits and
    probabilities give the same AUC. Targets as in :class:`Accuracy` (class 1 is the
    positive class); class indices outside [0, 2) are skipped. Every kept score and label
    is kept until ``reset``, so the value is exact over all updates. NaN before any update
    or while only one class has been seen (scikit-learn's value).
    """

    name = "auc"

    def reset(self):
        self._scores, self._positive = [], []

    def update(self, y_true, y_pred):
        scores = _scores(y_pred)
        n, k = scores.shape
        if k > 2:
            raise ValueError(f"auc is the binary ROC AUC: y_pred must have 1 or 2 columns; got {k}")
        labels, kept = _classes(y_true, n, k)
        x = scores.astype(np.float64)
        score = x[:, 0] if k == 1 else x[:, 1] - x[:, 0]
        self._scores.append(score[kept])
        self._positive.append(labels[kept] == 1)

    def compute(self):
        if not self._scores:
            return float("nan")
        scores, positive = np.concatenate(self._scores), np.concatenate(self._positive)
        p = np.count_nonzero(positive)
        q = len(positive) - p
        if p == 0 or q == 0:
            return float("nan")
        return float((_average_ranks(scores)[positive].sum() - p * (p + 1) / 2) / (p * q))


class R2(Metric):
    """Coefficient of determination over every row of every update, uniform over outputs
    (scikit-learn's r2_score): per output ``1 - sum (y - pred)^2 / sum (y - mean(y))^2``,
    1 where both sums are 0 and 0 where only the denominator is (force_finite); NaN
    before two rows. The spread of y is merged across updates exactly in exact
    arithmetic (Chan et al.: ``M2 = M2_a + M2_b + d^2 n_a n_b / n``, d the difference of
    the means), so no update's mean is averaged and no large sums cancel.
    """

    name = "r2"

    def reset(self):
        self._rows = 0
        self._mean = self._m2 = self._sse = None

    def update(self, y_true, y_pred):
        pred = _scores(y_pred).astype(np.float64)
        y = as_numeric_array(y_true, "y_true").astype(np.float64)
        if y.size != pred.size:
            raise ValueError(f"y_true must have the shape of y_pred {pred.shape}; got {y.shape}")
        y = y.reshape(pred.shape)
        n_b = len(y)
        if n_b == 0:
            return
        if self._mean is not None and self._mean.size != pred.shape[1]:
            raise ValueError(f"y_pred must have {self._mean.size} columns, as in the earlier updates; got "
                             f"{pred.shape[1]}")
        mean_b = y.mean(axis=0)
        m2_b = np.square(y - mean_b).sum(axis=0)
        sse_b = np.square(y - pred).sum(axis=0)
        if self._mean is None:
            self._rows, self._mean, self._m2, self._sse = n_b, mean_b, m2_b, sse_b
            return
        n_a = self._rows
        n = n_a + n_b
        d = mean_b - self._mean
        self._mean = self._mean + d * (n_b / n)
        self._m2 = self._m2 + m2_b + d * d * (n_a * n_b / n)
        self._sse = self._sse + sse_b
        self._rows = n

    def compute(self):
        if self._rows < 2:
            return float("nan")
        r2 = np.where(self._sse == 0, 1.0, 0.0)
        spread = self._m2 != 0
        r2[spread] = 1 - self._sse[spread] / self._m2[spread]
        return float(r2.mean())


class TopKAccuracy(Metric):
    """The fraction of kept rows whose target class is among the ``k`` highest scores:
    ``[#{j : x_ij > x_iy} < k]``, so a tie at the k-th place counts as a hit (Keras'
    top_k_categorical_accuracy, tf.math.in_top_k; scikit-learn's top_k_accuracy_score,
    which breaks ties by class index, agrees wherever there are none). Needs several
    outputs; ``k >= K`` makes every row a hit. Targets as in :class:`Accuracy`; class
    indices outside [0, K) are skipped.
    """

    name = "top_k_accuracy"

    def __init__(self, k=5):
        self.k = number(k, "k", low=1, integer=True)
        super().__init__()

    def update(self, y_true, y_pred):
        scores = _scores(y_pred)
        n, k = scores.shape
        if k < 2:
            raise ValueError("top_k_accuracy needs scores of several classes; y_pred has 1 column")
        labels, kept = _classes(y_true, n, k)
        scores, labels = scores[kept], labels[kept]
        target = scores[np.arange(len(labels)), labels]
        above = np.count_nonzero(scores > target[:, None], axis=1)
        self._add(np.count_nonzero(above < self.k), len(labels))


_METRICS = (Accuracy, MSE, MAE, CrossEntropy, Precision, Recall, F1, AUC, R2, TopKAccuracy)
_ALIASES = {"acc": Accuracy}
_CLASSES = {**{cls.name: cls for cls in _METRICS}, **_ALIASES}
NAMES = tuple(_CLASSES)


def get(metric, argument="metrics"):
    """A fresh Metric from a name, or the Metric object itself."""
    if isinstance(metric, Metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"{argument} entries must be metric names or engine.metrics.Metric objects; got {type(metric).__name__}")
    if metric not in _CLASSES:
        raise ValueError(f"{argument} entries must be one of {', '.join(NAMES)}; got {metric!r}")
    return _CLASSES[metric]()
