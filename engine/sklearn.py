"""scikit-learn estimators on engine's MLP and Trainer: :class:`MLPClassifier` and :class:`MLPRegressor`.

They follow scikit-learn's estimator contract (``get_params``/``set_params``/``clone``,
``fit``/``partial_fit``/``predict``/``score``, ``n_features_in_``, ``feature_names_in_``,
tags) and pass its estimator checks, so they work in pipelines, grid searches and
cross-validation::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from engine.sklearn import MLPClassifier

    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), epochs=30))
    pipe.fit(X_train, y_train).score(X_test, y_test)

The network computes in float32 on ``backend`` (None: :func:`engine.get_backend` when
fitting). Pickling stores the weights, the optimizer state and the shuffling RNG as plain
NumPy arrays and rebuilds the network on unpickling, on the estimator's ``backend`` as
resolved there: with ``backend=None`` an estimator pickled next to a GPU loads on a
CPU-only machine (and ``partial_fit`` goes on exactly where it stopped).
Needs scikit-learn 1.6 or newer.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as error:  # validate_data and the tags API arrived in scikit-learn 1.6
    raise ImportError(f"engine.sklearn needs scikit-learn >= 1.6 ({error})") from error

from . import activations, optim
from . import backend as backend_module
from .callbacks import EarlyStopping
from .model import MLP
from .trainer import Trainer
from .validation import number

_AUTO_BATCH = 200  # batch_size="auto": min(200, n_samples), scikit-learn's rule
_PREDICT_BATCH = 4096  # rows per forward in predict: bounds the activations' memory on large inputs
_SEED_BOUND = 2**31 - 1


class _MLPEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, training, pickling.

    Subclasses define ``_encode_targets`` (the targets the loss trains on, and the output
    layer's width) and the loss and output function of their network.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", optimizer="adamw", learning_rate=1e-3,
                 batch_size=32, epochs=200, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, dropout=0.0, l2=0.0, backend=None, random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.dropout = dropout
        self.l2 = l2
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ parameters
    def _check_params(self):
        """The parameters checked (ValueError/TypeError naming the bad one), as a dict;
        all of them before fit touches the data or the estimator's attributes."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError("hidden_layer_sizes must be an int or a sequence of ints (the width of each hidden "
                            f"layer); got {type(hidden).__name__}")
        hidden = [number(h, f"hidden_layer_sizes[{i}]", low=1, integer=True) for i, h in enumerate(hidden)]
        # engine.MLP checks these two again when it is built, under the same names.
        MLP._per_hidden(self.activation, len(hidden), "activation", activations.get)
        MLP._per_hidden(self.dropout, len(hidden), "dropout",
                        lambda p, argument: number(p, argument, low=0.0, high=1.0, high_open=True))
        if not isinstance(self.optimizer, str):
            raise TypeError(f"optimizer must be one of {', '.join(optim.CLASSES)}; got {type(self.optimizer).__name__}")
        if self.optimizer.lower() not in optim.CLASSES:
            raise ValueError(f"optimizer must be one of {', '.join(optim.CLASSES)} (any case); got {self.optimizer!r}")
        batch_size = self.batch_size
        if not (isinstance(batch_size, str) and batch_size == "auto"):
            if isinstance(batch_size, str):
                raise ValueError(f"batch_size must be 'auto' or an int >= 1; got {batch_size!r}")
            batch_size = number(batch_size, "batch_size", low=1, integer=True)
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise TypeError(f"early_stopping must be True or False; got {type(self.early_stopping).__name__}")
        verbose = int(self.verbose) if isinstance(self.verbose, (bool, np.bool_)) else self.verbose
        if self.backend is not None:
            backend_module.module(self.backend)  # ValueError naming backend, or BackendUnavailable saying why
        try:
            seed_source = check_random_state(self.random_state)
        except ValueError:
            raise ValueError("random_state must be None, an int or a numpy.random.RandomState; "
                             f"got {self.random_state!r}") from None
        return {
            "hidden": hidden,
            "learning_rate": number(self.learning_rate, "learning_rate", low=0.0, high=math.inf, low_open=True,
                                    high_open=True),
            "batch_size": batch_size,
            "epochs": number(self.epochs, "epochs", low=1, integer=True),
            "early_stopping": bool(self.early_stopping),
            "validation_fraction": number(self.validation_fraction, "validation_fraction", low=0.0, high=1.0,
                                          low_open=True, high_open=True),
            "n_iter_no_change": number(self.n_iter_no_change, "n_iter_no_change", low=1, integer=True),
            "tol": number(self.tol, "tol", low=0.0),
            "l2": number(self.l2, "l2", low=0.0, high=math.inf, high_open=True),
            "verbose": number(verbose, "verbose", low=0, high=2, integer=True),
            "seed": int(seed_source.randint(_SEED_BOUND)),
        }

    # ---------------------------------------------------------------- build
    def _build(self, params, n_features, n_outputs):
        """A fresh network and trainer; what rebuilds them after unpickling is kept in
        ``_network_config`` and ``_optimizer_config``."""
        self._network_config = {
            "sizes": [n_features, *params["hidden"], n_outputs], "activation": self.activation,
            "output": self._output, "dropout": self.dropout, "seed": params["seed"],
        }
        self._optimizer_config = {"name": self.optimizer.lower(), "lr": params["learning_rate"],
                                  "weight_decay": params["l2"]}
        self._batch_size, self._verbose = params["batch_size"], params["verbose"]
        self._make_network()

    def _make_network(self):
        config = self._optimizer_config
        self.model_ = MLP(backend=self.backend, **self._network_config)
        # decay_bias=False: the L2 penalty is on the weight matrices only, as scikit-learn's alpha.
        optimizer = optim.CLASSES[config["name"]](lr=config["lr"], weight_decay=config["weight_decay"],
                                               decay_bias=False)
        self._trainer = Trainer(self.model_, loss=self._loss, optimizer=optimizer, metrics=())

    # ----------------------------------------------------------------- train
    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, dtype=np.float32, order="C", multi_output=True,
                             y_numeric=self._numeric_targets)
        if hasattr(y, "toarray"):  # validate_data lets a sparse multilabel y through; the loss takes dense targets
            y = y.toarray()
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # scikit-learn's convention: a column vector is one target
        return X, y

    def _fit(self, X, y):
        params = self._check_params()
        X, y = self._validate(X, y, reset=True)
        targets, n_outputs = self._encode_targets(y, reset=True)
        self._build(params, X.shape[1], n_outputs)
        if params["early_stopping"]:
            # A random (stratified for single-label classes) split, as scikit-learn's: the
            # Trainer's validation_split would take the last rows, biased on sorted data.
            stratify = None if self._numeric_targets or self._multilabel else targets
            X_train, X_val, y_train, y_val = train_test_split(
                X, targets, test_size=params["validation_fraction"], random_state=params["seed"], stratify=stratify)
            validation, monitor = (X_val, y_val), "val_loss"
        else:
            X_train, y_train, validation, monitor = X, targets, None, "loss"
        stopper = EarlyStopping(monitor, patience=params["n_iter_no_change"], min_delta=params["tol"],
                                restore_best_weights=params["early_stopping"])
        history = self._trainer.fit(X_train, y_train, epochs=params["epochs"],
                                    batch_size=self._rows_per_batch(X_train), validation_data=validation,
                                    verbose=self._verbose, callbacks=[stopper])
        self.loss_curve_ = list(history.history["loss"])
        self.n_iter_ = len(self.loss_curve_)
        if params["early_stopping"]:
            self.validation_loss_curve_ = list(history.history["val_loss"])
            self.best_validation_loss_ = stopper.best
            self.best_loss_ = None
        else:
            self.validation_loss_curve_ = None
            self.best_validation_loss_ = None
            self.best_loss_ = stopper.best
        if stopper.stopped_epoch is None:
            warnings.warn(f"{type(self).__name__} trained all epochs={params['epochs']} before {monitor} stopped "
                          f"improving by more than tol={params['tol']} for {params['n_iter_no_change']} epochs in "
                          "a row; it may not have converged (raise epochs or tol)", ConvergenceWarning)
        return self

    def _partial_fit(self, X, y, classes=None):
        first_call = not hasattr(self, "_trainer")
        if first_call:
            params = self._check_params()
        X, y = self._validate(X, y, reset=first_call)
        targets, n_outputs = self._encode_targets(y, reset=first_call, classes=classes)
        if first_call:
            self._build(params, X.shape[1], n_outputs)
            self.loss_curve_, self.n_iter_ = [], 0
            self.best_loss_ = self.best_validation_loss_ = self.validation_loss_curve_ = None
        history = self._trainer.fit(X, targets, epochs=1, batch_size=self._rows_per_batch(X), verbose=self._verbose)
        self.loss_curve_.append(history.history["loss"][0])
        self.n_iter_ += 1
        self.best_loss_ = min(self.loss_curve_)
        return self

    def _rows_per_batch(self, X):
        return min(_AUTO_BATCH, len(X)) if self._batch_size == "auto" else self._batch_size

    def _network_output(self, X):
        """The network's outputs on X (output function applied), float64, after the checks."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32, order="C")
        return self.model_.predict(X, batch_size=_PREDICT_BATCH).astype(np.float64)

    # -------------------------------------------------------------- pickling
    def __getstate__(self):
        # A copy: on Python >= 3.11 the default state is the instance's own __dict__.
        state = dict(super().__getstate__())
        model, trainer = state.pop("model_", None), state.pop("_trainer", None)
        if trainer is not None:
            state["_training_state"] = {"weights": model.get_weights(), "optimizer": trainer.optimizer.state_dict(),
                                        "shuffle_rng": trainer._rng.bit_generator.state}
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.pop("_training_state", None)
        super().__setstate__(state)
        if saved is not None:
            self._make_network()
            self.model_.set_weights(saved["weights"])
            self._trainer.optimizer.load_state_dict(saved["optimizer"])
            self._trainer._rng.bit_generator.state = saved["shuffle_rng"]


_PARAMETERS_DOC = """
    Parameters (stored as given; checked by ``fit``, which raises a ValueError or TypeError
    naming the bad one):

    - ``hidden_layer_sizes``: the width of each hidden layer (an int is one layer; ``()``
      none, a linear model).
    - ``activation``: engine's name for the hidden layers' activation (``relu``, ``tanh``,
      ``sigmoid``, ``gelu``, ...; see :mod:`engine.activations`), or a list with one per
      hidden layer.
    - ``optimizer``: ``sgd``, ``adagrad``, ``rmsprop``, ``adadelta``, ``adam``, ``adamw`` or
      ``nadam`` (any case): engine's optimizer with torch's defaults, ``lr=learning_rate``.
    - ``batch_size``: rows per update, or ``"auto"`` for ``min(200, n_samples)`` (scikit-learn's
      rule); a batch larger than the data is the whole data.
    - ``epochs``: the most passes over the data ``fit`` makes (scikit-learn's ``max_iter``).
    - ``n_iter_no_change``, ``tol``: ``fit`` stops when the monitored loss has not fallen by
      more than ``tol`` for ``n_iter_no_change`` epochs in a row (engine.EarlyStopping); it
      monitors the training loss, or with ``early_stopping=True`` the loss on a random
      ``validation_fraction`` of the training rows (stratified for classes), held out from
      training, and then ends with the weights of its best epoch (the last to lower the
      validation loss by more than ``tol``).
      Reaching ``epochs`` first emits a ConvergenceWarning.
    - ``dropout``: inverted dropout rate on the hidden layers' outputs, in [0, 1).
    - ``l2``: weight decay on the weight matrices (never the biases), the optimizer's own
      ``weight_decay``. For every optimizer but ``adamw`` it is coupled, the L2 penalty
      ``l2 / 2 * sum ||W||^2`` added to the mean loss of a batch (gradient ``+ l2 * W``;
      scikit-learn's ``alpha`` equals ``l2 * batch_size``). For ``adamw`` it is decoupled:
      ``W *= 1 - learning_rate * l2`` before each Adam step (AdamW's rule; note engine.AdamW's
      own default of 0.01 does not apply here, ``l2=0`` means no decay).
    - ``backend``: ``None`` (engine's default when fitting), ``"numpy"``, ``"numba"`` or ``"cupy"``.
    - ``random_state``: None, an int or a RandomState; draws the seed of the initial weights,
      the dropout masks, the shuffling order and the early-stopping split.
    - ``verbose``: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.

    Attributes after fitting: ``model_`` (the engine.MLP), ``n_features_in_``,
    ``feature_names_in_`` (when X has string column names), ``n_outputs_`` (the output
    layer's width), ``n_iter_`` (epochs trained), ``loss_curve_`` (each epoch's mean
    training loss over its batches, as the weights moved; without the ``l2`` term),
    ``best_loss_`` (the lowest of them; None with early stopping), and with early stopping
    ``validation_loss_curve_`` and ``best_validation_loss_`` (else None).

    ``partial_fit`` trains one epoch on the data it is given, continuing the optimizer's
    state; its first call (or ``fit``) reads the hyper-parameters, and it never holds out
    validation rows or stops early.
"""


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    """A multilayer perceptron classifier trained by engine (softmax or sigmoid outputs).

    Labels may be of any type scikit-learn's LabelEncoder sorts (strings, ints, bools):
    ``classes_`` holds them sorted, and the network has one output per class, a softmax
    over them, trained on the mean cross-entropy ``-log p[y]``; two classes also get two
    softmax outputs (a sigmoid of the logits' difference, the same model as one sigmoid
    output). ``predict_proba`` returns the softmax, ``predict`` the class of the largest
    probability, ``score`` the accuracy.

    Multilabel targets (a 0/1 indicator matrix of shape (n_samples, n_labels)) get one
    sigmoid output per label, trained on the mean binary cross-entropy over all elements;
    ``predict_proba`` returns the sigmoids (n_samples, n_labels), ``predict`` the 0/1
    matrix ``p > 0.5`` in the targets' dtype, and ``classes_`` is ``[0, ..., n_labels - 1]``.
"""
    __doc__ += _PARAMETERS_DOC

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    _numeric_targets = False

    @property
    def _loss(self):
        return "binary_cross_entropy" if self._multilabel else "cross_entropy"

    @property
    def _output(self):
        return "sigmoid" if self._multilabel else "softmax"

    def _encode_targets(self, y, reset, classes=None):
        """(the targets the loss trains on, the output layer's width); on ``reset`` it also
        learns the labels, from ``classes`` when given (partial_fit) else from y."""
        check_classification_targets(y)  # "Unknown label type" for continuous targets
        kind = type_of_target(y, input_name="y")
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError("y must hold class labels (n_samples,) or a multilabel indicator matrix "
                             f"(n_samples, n_labels); got {kind} targets")
        multilabel = kind == "multilabel-indicator"
        if reset:
            self._multilabel = multilabel
            if multilabel:
                self._label_dtype = y.dtype
                self.classes_ = np.arange(y.shape[1])
                if classes is not None and not np.array_equal(np.asarray(classes), self.classes_):
                    raise ValueError(f"classes must be the label columns 0..{y.shape[1] - 1} for multilabel y; "
                                     f"got {classes!r}")
            else:
                self._label_encoder = LabelEncoder().fit(y if classes is None else column_or_1d(classes))
                self.classes_ = self._label_encoder.classes_
                if len(self.classes_) < 2:
                    raise ValueError("y must hold at least two classes to train a classifier; got one class, "
                                     f"{self.classes_[0]!r}")
        else:
            if multilabel != self._multilabel:
                raise ValueError(f"y is {kind} but the classifier was fitted on "
                                 f"{'multilabel' if self._multilabel else 'single-label'} targets")
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"classes {classes!r} differ from the classes of the first partial_fit "
                                 f"call, {self.classes_!r}")
        if multilabel:
            if y.shape[1] != len(self.classes_):
                raise ValueError(f"y must have {len(self.classes_)} label columns; got {y.shape[1]}")
            self.n_outputs_ = y.shape[1]
            return y.astype(np.float32), self.n_outputs_
        self.n_outputs_ = len(self.classes_)
        return self._label_encoder.transform(y), self.n_outputs_

    def fit(self, X, y):
        """Train a new network on (X, y) for up to ``epochs`` epochs; returns self."""
        return self._fit(X, y)

    def partial_fit(self, X, y, classes=None):
        """One epoch on (X, y), continuing the current network; ``classes`` (every label
        y may ever hold) is required on the first call, as in scikit-learn."""
        if not hasattr(self, "_trainer") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit (every label y may hold)")
        return self._partial_fit(X, y, classes)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes): softmax outputs, or for multilabel
        targets the independent sigmoid of each label (n_samples, n_labels)."""
        return self._network_output(X)

    def predict(self, X):
        """The most probable class of each row (from ``classes_``); for multilabel targets
        the 0/1 matrix ``predict_proba(X) > 0.5``."""
        probabilities = self.predict_proba(X)
        if self._multilabel:
            return (probabilities > 0.5).astype(self._label_dtype)
        return self.classes_[probabilities.argmax(axis=1)]


class MLPRegressor(RegressorMixin, _MLPEstimator):
    """A multilayer perceptron regressor trained by engine on the mean squared error.

    The output layer is linear, one unit per target: y of shape (n_samples,) gives one
    output and ``predict`` returns (n_samples,); y of shape (n_samples, n_targets) gives
    n_targets outputs (multi-output regression). The loss is ``mean((f(x) - y)^2)`` over all
    elements of a batch; ``score`` is R^2 (uniform average over targets).
"""
    __doc__ += _PARAMETERS_DOC

    _numeric_targets = True
    _loss = "mse"
    _output = "none"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode_targets(self, y, reset, classes=None):
        """(y as (n_samples, n_outputs) float32, n_outputs); the width is learnt on ``reset``."""
        targets = y.reshape(len(y), -1).astype(np.float32)
        if reset:
            self.n_outputs_ = targets.shape[1]
            self._one_dimensional = y.ndim == 1
        elif targets.shape[1] != self.n_outputs_:
            raise ValueError(f"y must have {self.n_outputs_} target column(s), as in the first call; "
                             f"got {targets.shape[1]}")
        return targets, self.n_outputs_

    def fit(self, X, y):
        """Train a new network on (X, y) for up to ``epochs`` epochs; returns self."""
        return self._fit(X, y)

    def partial_fit(self, X, y):
        """One epoch on (X, y), continuing the current network (a new one on the first call)."""
        return self._partial_fit(X, y)

    def predict(self, X):
        """The network's outputs: (n_samples,) for a one-dimensional y, else (n_samples, n_targets)."""
        outputs = self._network_output(X)
        return outputs.ravel() if self._one_dimensional else outputs
