"""The multilayer perceptron: parameters in one flat buffer, workspaces per batch size."""
from __future__ import annotations

import numbers
import os
from collections import OrderedDict, namedtuple

import numpy as np

from kernels import spec
from kernels.rng import dropout_key, offset_key

from . import activations as activations_module
from . import backend as backend_module
from . import initializers, io
from .layers import Dense, NormalizedDense
from .params import Layout
from .validation import as_numeric_array, check_features, check_finite, number, one_of

OUTPUTS = {"none": spec.OUTPUT_NONE, "sigmoid": spec.OUTPUT_SIGMOID, "softmax": spec.OUTPUT_SOFTMAX}
DTYPES = ("float32", "float64")
_MAX_WORKSPACES = 4  # batch sizes kept: training, a last partial batch, evaluation...

# Consecutive segments of trained (not frozen) layers, which an optimizer updates in one
# call: ``elements`` and ``segments`` slice the flat buffers and the per-segment arrays,
# ``offsets`` (a backend int64 array) are the run's segment offsets counted from its start.
TrainedRun = namedtuple("TrainedRun", ["elements", "segments", "offsets"])


def _describe(activation):
    """An activation's name, with its parameters when it has any: ``leaky_relu(negative_slope=0.2)``."""
    options = {k: v for k, v in activation.config().items() if k != "name"}
    return activation.name + (f"({', '.join(f'{k}={v:g}' for k, v in options.items())})" if options else "")


def _bytes(n):
    """``n`` bytes in B, KiB, MiB or GiB, four significant digits."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} GiB"


def _physical_memory():
    """Bytes of RAM on this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits_in_memory(sizes, n_parameters, dtype):
    """Refuse sizes whose parameters (the float64 initial values, the parameters and their
    gradients) cannot fit in this machine's memory, before allocating any: a ValueError,
    not an allocation the operating system kills the process for."""
    needed = n_parameters * (8 + 2 * dtype.itemsize)
    memory = _physical_memory()
    if memory is not None and needed > memory:
        raise ValueError(f"sizes {sizes} make {n_parameters:,} parameters, which need {_bytes(needed)} to "
                         f"initialise: more than this machine's {_bytes(memory)} of memory")


def _check_normalization(value, argument):
    if value is not None and value not in NormalizedDense.KINDS:
        raise ValueError(f"{argument} must be None, 'batch' or 'layer'; got {value!r}")
    return value


def dropout_mask_key(seed, step, layer, first_element=0):
    """The key of the dropout mask of layer ``layer`` (0-based) at update ``step`` of a
    model seeded ``seed``, for a batch (or a data-parallel shard) whose first mask element
    is element ``first_element`` of the step's whole batch: what the model draws its
    masks with, and engine.compiled_steps' runs of whole batches too."""
    return offset_key(dropout_key(seed, step, layer), first_element)


class _Workspace:
    """Every array one forward/backward at batch size ``n`` needs, allocated once: each
    layer's (engine.layers.LayerWorkspace; the last one's ``dY`` receives the loss
    gradient) and the output function's."""

    def __init__(self, k, n, layers, dtype):
        self.layers = [layer.workspace(k, n, dtype) for layer in layers]
        self.output = k.empty((n, layers[-1].fan_out), dtype)


class MLP:
    """A multilayer perceptron ``f_L(... f_1(X @ W1 + b1) ...)`` on row batches X.

    Parameters follow API.md: ``sizes`` [n_in, hidden..., n_out]; ``activation`` one name
    (or Activation) for all hidden layers or a list with one per hidden layer;
    ``output`` "none" | "sigmoid" | "softmax" applied by :meth:`predict` only; ``dropout``
    a float or a per-hidden-layer list (inverted dropout on hidden outputs, training
    only); ``normalization`` None, "batch" or "layer" for all hidden layers or a list with
    one per hidden layer (engine.layers.NormalizedDense: ``act(gamma * norm(X @ W + b) +
    beta)``, PyTorch BatchNorm1d / LayerNorm semantics); ``init``/``bias_init`` initializer
    names; ``seed`` fixes init, dropout and the
    order ``fit`` shuffles in; ``backend`` None for :func:`engine.get_backend`.
    """

    def __init__(self, sizes, activation="relu", output="none", dropout=0.0,
                 init="glorot_uniform", bias_init="zeros", seed=None, backend=None,
                 dtype="float32", normalization=None):
        self.sizes = self._check_sizes(sizes)
        n_hidden = len(self.sizes) - 2
        self.activations = self._per_hidden(activation, n_hidden, "activation", activations_module.get)
        self.dropout = self._per_hidden(dropout, n_hidden, "dropout",
                                        lambda p, arg: number(p, arg, low=0.0, high=1.0, high_open=True))
        self.normalization = self._per_hidden(normalization, n_hidden, "normalization", _check_normalization)
        self.output = one_of(output, tuple(OUTPUTS), "output")
        self.init = initializers.check(init, "init")
        self.bias_init = initializers.check(bias_init, "bias_init")
        if seed is not None:
            seed = number(seed, "seed", low=0, integer=True)
        self.seed = seed
        self._seed = seed if seed is not None else int(np.random.SeedSequence().entropy) % 2**63
        dtype_name = np.dtype(dtype).name if isinstance(dtype, (np.dtype, type)) else dtype
        self.dtype = np.dtype(one_of(dtype_name, DTYPES, "dtype"))
        self._k = backend_module.module(backend_module.get_backend() if backend is None else backend)
        self.backend = self._k.name

        # The output layer is linear; its output function belongs to predict.
        self._layers = [Dense(fan_in, fan_out, act, p) if norm is None else NormalizedDense(fan_in, fan_out, act, p, norm)
                        for fan_in, fan_out, act, p, norm in
                        zip(self.sizes[:-1], self.sizes[1:], [*self.activations, activations_module.Identity()],
                            [*self.dropout, 0.0], [*self.normalization, None])]
        self._layout = Layout([layer.segments() for layer in self._layers], f"sizes {self.sizes}")
        _check_fits_in_memory(self.sizes, self._layout.size + self._layout.state_size, self.dtype)
        params, state = self._initial_values()
        self._params = self._k.to_device(params, self.dtype)
        self._state = self._k.to_device(state, self.dtype)
        self._grads = self._k.zeros(self._layout.size, self.dtype)
        self._offsets = self._k.to_device(self._layout.offsets, np.int64)
        for layer, views, grads in zip(self._layers, self._layout.layer_views(self._params, self._state),
                                       self._layout.layer_grad_views(self._grads)):
            layer.bind(views, grads)
        self._workspaces = OrderedDict()
        self._frozen = frozenset()  # see freeze()
        self._first_trained = 0  # the lowest layer not frozen
        self._trained_runs = None  # None while nothing is frozen, else a tuple of TrainedRun

    # ------------------------------------------------------------ construction
    @staticmethod
    def _check_sizes(sizes):
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes must be a list of layer widths [n_in, ..., n_out]; got {type(sizes).__name__}")
        if len(sizes) < 2:
            raise ValueError(f"sizes must have at least two entries [n_in, n_out]; got {list(sizes)}")
        return [number(s, f"sizes[{i}]", low=1, integer=True) for i, s in enumerate(sizes)]

    @staticmethod
    def _per_hidden(value, n_hidden, argument, convert):
        if isinstance(value, (list, tuple)):
            if len(value) != n_hidden:
                raise ValueError(f"{argument} must have one entry per hidden layer ({n_hidden}); got {len(value)}")
            return [convert(v, f"{argument}[{i}]") for i, v in enumerate(value)]
        one = convert(value, argument)
        return [one] * n_hidden

    def _initial_values(self):
        """(parameters, state): the flat buffers' initial values, drawn in segment order."""
        rng = np.random.default_rng(self._seed)
        buffers = {True: np.empty(self._layout.size), False: np.empty(self._layout.state_size)}
        for segment in self._layout.segments:
            drawn = self._layers[segment.layer].initial_value(segment.kind, rng, self.init, self.bias_init)
            buffers[segment.trained][segment.offset:segment.offset + segment.size] = drawn.ravel()
        return buffers[True], buffers[False]

    def config(self):
        """The constructor arguments, as plain data (what save/load_model store)."""
        return {
            "sizes": self.sizes, "activation": [a.config() for a in self.activations],
            "output": self.output, "dropout": self.dropout, "normalization": self.normalization, "init": self.init,
            "bias_init": self.bias_init, "seed": self.seed, "dtype": self.dtype.name,
        }

    def __repr__(self):
        acts = ", ".join(repr(a) for a in self.activations)
        return (f"MLP({self.sizes}, activation=[{acts}], output={self.output!r}, dropout={self.dropout}, "
                f"backend={self.backend!r}, dtype={self.dtype.name!r}, parameters={self.num_parameters})")

    @property
    def num_parameters(self):
        return self._layout.size

    def summary(self, print_fn=print):
        """Print a table of the layers, as Keras's ``model.summary()`` does: each dense layer's
        input and output shapes (None: the batch dimension), parameters (W, b and any PReLU
        slope), activation and dropout, then the total parameters and their memory, the
        output function, the backend and the dtype. ``print_fn`` receives each line (e.g.
        ``lines.append`` or a logger's method). Returns None."""
        per_layer = [0] * len(self._layers)
        for segment in self._layout.segments:
            per_layer[segment.layer] += segment.size
        rows = [("Layer", "Input shape", "Output shape", "Parameters", "Activation", "Dropout")]
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            hidden = i < len(self.dropout)  # the output layer has neither activation nor dropout
            norm = self.normalization[i] if hidden else None
            rows.append((f"dense_{i + 1}", f"(None, {fan_in})", f"(None, {fan_out})", f"{per_layer[i]:,}",
                         (f"{norm} norm, " if norm else "") + _describe(self._layers[i].activation) if hidden
                         else "- (logits)",
                         f"{self.dropout[i]:g}" if hidden else "-"))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        # Parameter counts right-aligned, like the numbers they are.
        lines = ["  ".join(cell.rjust(w) if c == 3 else cell.ljust(w)
                           for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
        rule = "=" * max(map(len, lines))
        size = self.num_parameters * self.dtype.itemsize
        state = self._layout.state_size
        print_fn(f"MLP on backend {self.backend!r}, dtype {self.dtype.name}")
        for line in [rule, lines[0], rule, *lines[1:], rule,
                     f"Total parameters: {self.num_parameters:,} ({_bytes(size)})"
                     + (f", and {state:,} running statistics (not trained)" if state else ""),
                     f"Output function (applied by predict only): {self.output}", rule]:
            print_fn(line)

    # ----------------------------------------------------------------- weights
    def get_weights(self):
        """Host copies of the parameters and state, per layer: W, b, then with normalization
        gamma, beta and batch norm's running_mean, running_var, then a PReLU slope."""
        return [self._k.to_host(v).copy() for v in self._layout.views(self._params, self._state)]

    def set_weights(self, weights):
        """Replace every parameter; shapes and count are checked before anything is written."""
        segments = self._layout.segments
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"weights must be a list of arrays; got {type(weights).__name__}")
        if len(weights) != len(segments):
            raise ValueError(f"weights must have {len(segments)} arrays; got {len(weights)}")
        checked = []
        for i, (w, segment) in enumerate(zip(weights, segments)):
            w = as_numeric_array(w, f"weights[{i}]")
            if w.shape != segment.shape:
                raise ValueError(f"weights[{i}] ({segment.kind} of layer {segment.layer}) must have shape {segment.shape}; got {w.shape}")
            check_finite(w, f"weights[{i}]")
            checked.append(w)
        for view, w in zip(self._layout.views(self._params, self._state), checked):
            self._k.copy_into(view, w)

    def __getstate__(self):
        """What pickling keeps (a Dask worker returning a trained model, say): the
        configuration, the backend's name, the seed in use and the weights as host arrays;
        never the backend module or device arrays. Workspaces and frozen layers are not
        kept (freezing is training set-up, see freeze())."""
        return {"config": self.config(), "backend": self.backend, "seed": self._seed, "weights": self.get_weights()}

    def __setstate__(self, state):
        self.__init__(backend=state["backend"], **state["config"])
        self._seed = state["seed"]
        self.set_weights(state["weights"])

    def save(self, path):
        """Write the configuration and weights to ``path`` (an .npz file; :func:`load_model`
        reads it back)."""
        io.write(path, "model", {"config": self.config()}, {f"w{i}": w for i, w in enumerate(self.get_weights())})

    # ---------------------------------------------------------------- transfer
    @property
    def frozen_layers(self):
        """The indices of the frozen dense layers (0 is the first, ``dense_1`` in summary()),
        in increasing order."""
        return tuple(sorted(self._frozen))

    def freeze(self, layers):
        """Freeze dense layers: ``layers`` an int k (the first k layers) or a list of layer
        indices (0 the first; negative ones count from the output layer, -1). Added to those
        already frozen.

        A frozen layer's parameters (W, b and a PReLU slope) get no update: its backward
        computes neither ``dW = X.T @ dZ`` (the weight-gradient GEMM) nor the column sums of
        ``db``, the optimizer neither steps, decays nor changes its state there, its
        gradients are 0 for clipping and norms, and below the lowest trained layer nothing
        is back-propagated at all. Gradients still flow through a frozen layer to the
        trained layers under it. Takes effect at the next step, with the same Trainer.

        Freezing is training set-up, not model state (as torch's ``requires_grad``): neither
        :meth:`save` nor checkpoints record it; freeze again after loading.
        """
        self._set_frozen(self._frozen | frozenset(self._layer_indices(layers, "layers")))

    def unfreeze(self, layers=None):
        """Make layers trainable again: all with ``layers=None``, else as in :meth:`freeze`.
        Their optimizer state is where it was when they were frozen."""
        if layers is None:
            self._set_frozen(frozenset())
        else:
            self._set_frozen(self._frozen - frozenset(self._layer_indices(layers, "layers")))

    def _layer_indices(self, layers, argument):
        """The layer indices (0 .. L - 1) ``layers`` names: an int k (the first k) or a list."""
        n = len(self.sizes) - 1
        if isinstance(layers, (list, tuple, range, np.ndarray)):
            indices = []
            for i, layer in enumerate(layers):
                if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
                    raise TypeError(f"{argument}[{i}] must be a layer index (an int); got {type(layer).__name__}")
                if not -n <= layer < n:
                    raise ValueError(f"{argument}[{i}] must be a layer index in [{-n}, {n - 1}] (the model has {n} "
                                     f"dense layers); got {layer}")
                indices.append(int(layer) % n)
            return indices
        if isinstance(layers, bool) or not isinstance(layers, numbers.Integral):
            raise TypeError(f"{argument} must be an int (the first k layers) or a list of layer indices; "
                            f"got {type(layers).__name__}")
        return range(number(layers, f"{argument} (a count of first layers)", low=0, high=n, integer=True))

    def _set_frozen(self, frozen):
        """Freeze exactly the layers ``frozen``: their gradients zeroed (no backward writes
        them any more), the lowest trained layer and the runs of trained segments found."""
        k, layout = self._k, self._layout
        for segment, view in zip(layout.trained, layout.trained_views(self._grads)):
            if segment.layer in frozen - self._frozen:
                k.copy_into(view, np.zeros(segment.shape))
        self._frozen = frozen
        n_layers = len(self.sizes) - 1
        self._first_trained = min((i for i in range(n_layers) if i not in frozen), default=n_layers)
        if not frozen:
            self._trained_runs = None
            return
        runs, start = [], None
        for s, segment in enumerate(layout.trained + (None,)):
            trained = segment is not None and segment.layer not in frozen
            if trained and start is None:
                start = s
            elif not trained and start is not None:
                first, end = layout.offsets[start], layout.offsets[s]
                runs.append(TrainedRun(slice(int(first), int(end)), slice(start, s),
                                       k.to_device(layout.offsets[start:s + 1] - first, np.int64)))
                start = None
        self._trained_runs = tuple(runs)

    def copy_layers_from(self, other, n_layers):
        """Copy the parameters of the first ``n_layers`` dense layers of the MLP ``other``
        into this model (transfer learning: reuse trained hidden layers, then train the
        rest, e.g. after :meth:`freeze`). Those layers must have the same shapes in both:
        ``sizes[:n_layers + 1]`` equal and the same parameters per layer (a PReLU slope in
        both or in neither). Values are cast to this model's dtype and may come from
        another backend. Everything is checked before anything is written; the other
        layers, the optimizer state and the frozen layers are left as they are.
        """
        if not isinstance(other, MLP):
            raise TypeError(f"other must be an engine.MLP; got {type(other).__name__}")
        n_max = min(len(self.sizes), len(other.sizes)) - 1
        n_layers = number(n_layers, "n_layers", low=1, high=n_max, integer=True)
        if self.sizes[:n_layers + 1] != other.sizes[:n_layers + 1]:
            raise ValueError(f"n_layers={n_layers}: the layers copied must have the same sizes; this model's sizes "
                             f"begin {self.sizes[:n_layers + 1]}, other's {other.sizes[:n_layers + 1]}")
        mine = [(s, view) for s, view in zip(self._layout.segments, self._layout.views(self._params, self._state))
                if s.layer < n_layers]
        theirs = [s for s in other._layout.segments if s.layer < n_layers]
        for layer in range(n_layers):
            kinds = [s.kind for s, _ in mine if s.layer == layer]
            other_kinds = [s.kind for s in theirs if s.layer == layer]
            if kinds != other_kinds:
                raise ValueError(f"n_layers={n_layers}: layer {layer} has the parameters {', '.join(kinds)} here but "
                                 f"{', '.join(other_kinds)} in other (a prelu activation in one model only)")
        for (_, view), value in zip(mine, other.get_weights()):
            self._k.copy_into(view, value)

    # ----------------------------------------------------------------- compute
    def _workspace(self, n):
        ws = self._workspaces.get(n)
        if ws is None:
            if len(self._workspaces) >= _MAX_WORKSPACES:
                self._workspaces.popitem(last=False)
            ws = _Workspace(self._k, n, self._layers, self.dtype)
            self._workspaces[n] = ws
        return ws

    def _forward(self, X, training, step, alive=None, first_row=0):
        """Logits of the device batch X; dropout masks keyed by (seed, step, layer).
        ``alive``: None, or per layer dense_forward's flags of the units that fired (or None).
        ``first_row``: X's first row is that row of the step's whole batch (a data-parallel
        shard), whose masks it draws (kernels.rng.offset_key)."""
        k, ws = self._k, self._workspace(X.shape[0])
        A = X
        for i, (layer, layer_ws) in enumerate(zip(self._layers, ws.layers)):
            key = 0
            if training and layer.dropout > 0.0:
                key = dropout_mask_key(self._seed, step, i, first_row * layer.fan_out)
            layer.forward(k, A, layer_ws, training, key, None if alive is None else alive[i])
            A = layer_ws.Y
        return A

    def _constrain_max_norm(self, max_norm, status):
        """Keras MaxNorm on the W of every trained layer, after an update (none where
        ``status`` says the update was skipped)."""
        for i, layer in enumerate(self._layers):
            if i not in self._frozen:
                layer.constrain_max_norm(self._k, max_norm, status)

    @property
    def min_training_rows(self):
        """The smallest training batch every layer can take: 2 with batch norm, else 1."""
        return max(layer.min_training_rows for layer in self._layers)

    def _loss_gradient_buffer(self, n):
        """Where the loss writes d loss / d logits for the next :meth:`_backward`."""
        return self._workspace(n).layers[-1].dY

    def _backward(self, X):
        """Gradients of every trained parameter into the flat gradient buffer (after
        _forward(training)): down to the lowest trained layer, frozen layers above it
        passing dX alone on (see freeze)."""
        k, ws, first = self._k, self._workspace(X.shape[0]).layers, self._first_trained
        for i in reversed(range(first, len(self._layers))):
            self._layers[i].backward(k, X if i == 0 else ws[i - 1].Y, ws[i], i not in self._frozen,
                                     None if i == first else ws[i - 1].dY)

    def _device_batches(self, X, batch_size):
        """(start, stop, device batch) over the rows of host array X."""
        n = X.shape[0]
        step = n if batch_size is None else batch_size
        for start in range(0, n, step):
            stop = min(start + step, n)
            yield start, stop, self._k.to_device(X[start:stop], self.dtype)

    def logits(self, X, batch_size=None, to_host=True):
        """The last layer's outputs before the output function: a host array, or the
        backend's array with ``to_host=False``."""
        return self._infer(X, batch_size, spec.OUTPUT_NONE, to_host)

    def predict(self, X, batch_size=None, to_host=True):
        """The model's outputs with its output function applied: a host array, or the
        backend's array (kept on the device on ``cupy``) with ``to_host=False``."""
        return self._infer(X, batch_size, OUTPUTS[self.output], to_host)

    def _infer(self, X, batch_size, output_code, to_host):
        X = check_features(X, self.sizes[0], self.dtype, all_finite=self._k.all_finite)
        if batch_size is not None:
            batch_size = number(batch_size, "batch_size", low=1, integer=True)
        if not isinstance(to_host, bool):
            raise TypeError(f"to_host must be True or False; got {type(to_host).__name__}")
        k, shape = self._k, (X.shape[0], self.sizes[-1])
        out = np.empty(shape, dtype=self.dtype) if to_host else k.empty(shape, self.dtype)
        for start, stop, Xd in self._device_batches(X, batch_size):
            logits = self._forward(Xd, training=False, step=0)
            ws = self._workspace(stop - start)
            k.apply_output(output_code, logits, ws.output)
            if to_host:
                out[start:stop] = k.to_host(ws.output)
            else:
                k.copy_into(out[start:stop], ws.output)
        return out

    __call__ = predict


def load_model(path, backend=None):
    """The MLP saved at ``path`` by ``model.save`` (on ``backend``, default the current one).
    A file that is not a complete fusedense model of a version this code reads is a
    ValueError naming it."""
    if backend is not None:
        backend_module.module(backend)  # a bad backend is the caller's error, not the file's
    meta, arrays = io.read(path, "model")
    config = io.model_config(meta, path, "model")
    if io.dense_parameters(config["sizes"]) > io.stored_values(arrays):
        raise io.bad_file(path, "model", f"its sizes {config['sizes']} need more parameters than it stores "
                                         f"({io.stored_values(arrays)})")
    try:
        model = MLP(backend=backend, **config)
    except (TypeError, ValueError) as error:
        raise io.bad_file(path, "model", f"its configuration is not valid ({error})") from None
    expected = [f"w{i}" for i in range(len(model._layout.segments))]
    if sorted(arrays) != sorted(expected):
        raise io.bad_file(path, "model", f"it stores the arrays {sorted(arrays)}; its configuration needs "
                                         f"{expected}")
    try:
        model.set_weights([arrays[name] for name in expected])
    except (TypeError, ValueError) as error:
        raise io.bad_file(path, "model", f"its weights do not fit its configuration ({error})") from None
    return model
