"""The same work on the frameworks people would use instead: PyTorch (eager, and with
its fused AdamW), JAX (jit, optax's AdamW) and scikit-learn's ``MLPClassifier``.

Each peer runs in a process of its own (:mod:`engine.bench.worker`): two OpenMP runtimes'
thread pools in one process slow whichever runs second (measured here: PyTorch's
fused-AdamW S step 0.67 ms alone, 2.6 ms after fusedense's kernels ran in its process).
"""
from __future__ import annotations

import numpy as np

from .timing import host_timed
from .workloads import N_BATCHES, batches


def _cycling(step_on):
    """A step function over ``N_BATCHES`` batches: ``step_on(i)`` for i = 1, 2, ..."""
    counter = [0]

    def step():
        counter[0] = (counter[0] + 1) % N_BATCHES
        step_on(counter[0])
    return step


def torch_device(on_gpu):
    """Where the PyTorch peer runs: the GPU when one is benchmarked and PyTorch sees it."""
    import torch
    return "cuda" if on_gpu and torch.cuda.is_available() else "cpu"


def _torch_sync(device):
    import torch
    return torch.cuda.synchronize if device == "cuda" else None


def torch_step(sizes, batch, reps, inner, fused, device="cpu"):
    """Seconds per step of the workload's MLP in PyTorch eager with AdamW (``fused``: its
    single-kernel AdamW)."""
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.AdamW(model.parameters(), fused=fused or None)
    Xn, yn = batches(sizes, batch)
    X, y = torch.from_numpy(Xn).to(device), torch.from_numpy(yn).to(device)

    def step_on(i):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(X[i]), y[i]).backward()
        opt.step()

    step = _cycling(step_on)
    for _ in range(3):
        step()
    return host_timed(step, reps, inner, _torch_sync(device))


def jax_step(sizes, batch, reps, inner):
    """Seconds per step of the workload's MLP as one jitted JAX function (optax AdamW)."""
    import jax
    import jax.numpy as jnp
    import optax

    key = jax.random.PRNGKey(0)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (a, b)) * (2.0 / (a + b)) ** 0.5, jnp.zeros(b)))

    def loss_fn(p, x, y):
        for W, b in p[:-1]:
            x = jax.nn.relu(x @ W + b)
        logits = x @ p[-1][0] + p[-1][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt = optax.adamw(1e-3)
    state = [params, opt.init(params)]

    @jax.jit
    def update(p, s, x, y):
        grads = jax.grad(loss_fn)(p, x, y)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    Xn, yn = batches(sizes, batch)
    X, y = jnp.asarray(Xn), jnp.asarray(yn)

    def step_on(i):
        state[0], state[1] = update(state[0], state[1], X[i], y[i])
        jax.block_until_ready(state[0])

    step = _cycling(step_on)
    for _ in range(3):
        step()
    return host_timed(step, reps, inner)


def sklearn_epoch(sizes, batch, reps):
    """Seconds per epoch of scikit-learn's MLPClassifier on the workload's model and data:
    hidden layers ``sizes[1:-1]``, ReLU, Adam at lr 1e-3, minibatches of ``batch`` over
    the ``N_BATCHES`` batches as one data set (``partial_fit``: one epoch a call)."""
    import warnings

    from sklearn.neural_network import MLPClassifier

    X, y = batches(sizes, batch)
    X, y = X.reshape(-1, sizes[0]), y.reshape(-1)
    model = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="adam",
                          alpha=0.0, batch_size=batch, learning_rate_init=1e-3, shuffle=True, random_state=0)
    classes = np.arange(sizes[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partial_fit never converges in one epoch, by design
        return host_timed(lambda: model.partial_fit(X, y, classes=classes), reps, 1)


def torch_kernels(kernel_rows, reps, device):
    """(label, samples) of PyTorch's counterpart of each kernel row (label, op, dims) of
    fusedense that has one: fused AdamW, cross-entropy forward and backward, dropout."""
    import torch

    torch.set_default_device(device)
    sync = _torch_sync(device)
    found = []
    for label, op, dims in kernel_rows:
        if op == "adam":
            p = torch.nn.Parameter(torch.randn(dims["n_params"]) * 1e-2)
            p.grad = torch.randn(dims["n_params"]) * 1e-2
            found.append((label, host_timed(torch.optim.AdamW([p], fused=True).step, reps, 5, sync)))
        elif op == "softmax_cross_entropy":
            logits = torch.randn(dims["batch"], dims["classes"], requires_grad=True)
            targets = torch.randint(0, dims["classes"], (dims["batch"],))

            def forward_backward(logits=logits, targets=targets):
                logits.grad = None
                torch.nn.functional.cross_entropy(logits, targets).backward()

            found.append((label, host_timed(forward_backward, reps, 10, sync)))
        elif op == "dropout_mask":
            x = torch.empty(dims["batch"], dims["fan_out"])
            found.append((label, host_timed(lambda x=x: torch.nn.functional.dropout(x, 0.5, training=True),
                                            reps, 5, sync)))
    torch.set_default_device("cpu")
    return found
