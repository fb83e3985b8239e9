"""``python -m engine bench``: the standard workloads, timed as ratios measured in one run.

Training workloads (MLP, ReLU, softmax-CE, AdamW, float32), stepping through 64 distinct
random minibatches (one reused batch is memorised and its gradients turn subnormal):
    S 64-128-10 batch 64, M 784-512-512-10 batch 128, L 1024-4096-4096-1000 batch 256.
Each reports the median time per ``train_step``, GFLOP/s, and its ratio to the GEMM floor:
the same step's GEMMs timed alone into preallocated outputs, in the same run, through the
BLAS the backend calls (numba's may be MKL for large GEMMs, see kernels.cpu.mkl), and
its ratio to NumPy's BLAS floor, the one every provider can be held to. Kernel workloads
report GB/s and their share of the memory roof measured first: the better of the
backend's copy and its in-place axpy (on a GPU, its copy).
PyTorch and JAX are timed on the same steps when they are installed; PyTorch on the GPU
when ``cupy`` is benchmarked and PyTorch sees a device. Device work is timed with CUDA
events (:func:`timer`).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from kernels import spec

from . import backend as backend_module

WORKLOADS = {
    "S": ([64, 128, 10], 64),
    "M": ([784, 512, 512, 10], 128),
    "L": ([1024, 4096, 4096, 1000], 256),
}
N_BATCHES = 64


@dataclass
class Row:
    workload: str
    provider: str
    median_ms: float
    min_ms: float
    max_ms: float
    gflops: float | None = None
    gbps: float | None = None
    ratio: float | None = None  # over the provider's GEMM floor, or the share of the memory roof
    numpy_ratio: float | None = None  # over the GEMM floor through NumPy's BLAS
    notes: dict = field(default_factory=dict)


def _timed(fn, reps, inner, sync=None):
    """Seconds per call of ``fn``: one figure per rep, each the mean over ``inner`` calls.

    ``sync`` waits for work ``fn`` queued on a device (a host step returns when done)."""
    fn()
    sync = sync or (lambda: None)
    samples = []
    for _ in range(reps):
        sync()
        began = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - began) / inner)
    return samples


def _cuda_timed(fn, reps, inner):
    """:func:`_timed` for work on CuPy's current stream, measured by CUDA events (what the
    device spent, without the host's wait for the last event)."""
    import cupy

    fn()
    samples = []
    for _ in range(reps):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, end) / 1e3 / inner)
    return samples


def timer(backend):
    """The timing function for ``backend``'s ops: host clock, or CUDA events for cupy."""
    return _cuda_timed if backend == "cupy" else _timed


def _row(workload, provider, samples, **figures):
    ms = [s * 1e3 for s in samples]
    return Row(workload, provider, statistics.median(ms), min(ms), max(ms), **figures)


def _batches(sizes, batch, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_BATCHES, batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=(N_BATCHES, batch))
    return X, y


def step_flops(sizes, batch):
    """FLOPs of one training step's GEMMs: forward, dW, and dX for all layers but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * batch * i * o for i, o in pairs)
    return 3 * forward - 2 * batch * pairs[0][0] * pairs[0][1]


def _numpy_matmul(a, b, out):
    np.matmul(a, b, out=out)


NUMPY_BLAS = ("NumPy", _numpy_matmul)


def gemm_floor(sizes, batch, reps, inner, matmul=_numpy_matmul, dtype=np.float32, backend="numpy"):
    """Seconds of the step's GEMMs alone through ``matmul(a, b, out)`` (default NumPy's
    BLAS) on ``backend``'s arrays, cycling distinct inputs."""
    k = backend_module.module(backend)
    rng = np.random.default_rng(1)
    Ws = [k.to_device(rng.standard_normal((i, o)), dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    Xs = [k.to_device(rng.standard_normal((4, batch, s)), dtype) for s in sizes]
    outs = [k.empty((batch, o), dtype) for o in sizes[1:]]
    dWs = [k.empty(W.shape, dtype) for W in Ws]
    dXs = [k.empty((batch, i), dtype) for i in sizes[:-1]]
    counter = [0]

    def gemms():
        c = counter[0] = (counter[0] + 1) % 4
        for layer, W in enumerate(Ws):
            matmul(Xs[layer][c], W, outs[layer])
        for layer in reversed(range(len(Ws))):
            matmul(Xs[layer][c].T, Xs[layer + 1][c], dWs[layer])
            if layer:
                matmul(Xs[layer + 1][c], Ws[layer].T, dXs[layer])

    return timer(backend)(gemms, reps, inner)


def engine_step(backend, sizes, batch, reps, inner):
    from .model import MLP
    from .optim import AdamW
    from .trainer import Trainer

    X, y = _batches(sizes, batch)
    trainer = Trainer(MLP(sizes, seed=0, backend=backend), optimizer=AdamW(), metrics=())
    counter = [0]
    if backend == "cupy":
        # A GPU step is timed as fit runs it: the batches already on the device and the
        # loss left there (train_step would add a wait for the device and a copy per step).
        k = backend_module.module(backend)
        X, y = k.to_device(X, np.float32), k.to_device(y, np.int64)
        slot = k.empty(1, np.float64)

        def step():
            i = counter[0] = (counter[0] + 1) % N_BATCHES
            trainer._step(X[i], y[i], slot)
    else:
        def step():
            i = counter[0] = (counter[0] + 1) % N_BATCHES
            trainer.train_step(X[i], y[i])

    for _ in range(3):
        step()
    return timer(backend)(step, reps, inner)


def _torch_sync(device):
    import torch
    return torch.cuda.synchronize if device == "cuda" else None


def torch_step(sizes, batch, reps, inner, fused, device="cpu"):
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.AdamW(model.parameters(), fused=fused or None)
    Xn, yn = _batches(sizes, batch)
    X, y = torch.from_numpy(Xn).to(device), torch.from_numpy(yn).to(device)
    counter = [0]

    def step():
        i = counter[0] = (counter[0] + 1) % N_BATCHES
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(X[i]), y[i]).backward()
        opt.step()

    for _ in range(3):
        step()
    return _timed(step, reps, inner, _torch_sync(device))


def jax_step(sizes, batch, reps, inner):
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

    Xn, yn = _batches(sizes, batch)
    X, y = jnp.asarray(Xn), jnp.asarray(yn)
    counter = [0]

    def step():
        i = counter[0] = (counter[0] + 1) % N_BATCHES
        state[0], state[1] = update(state[0], state[1], X[i], y[i])
        jax.block_until_ready(state[0])

    for _ in range(3):
        step()
    return _timed(step, reps, inner)


def torch_device(backends):
    """Where the PyTorch peer runs: on the GPU when cupy is benchmarked and PyTorch sees
    one (the same device), else on the CPU."""
    import torch
    return "cuda" if "cupy" in backends and torch.cuda.is_available() else "cpu"


def _peers(sizes, batch, reps, inner, backends):
    """(provider, timing function, "cpu" or "cuda") of each installed peer framework."""
    peers = []
    try:
        device = torch_device(backends)
        peers += [("torch eager", lambda: torch_step(sizes, batch, reps, inner, False, device), device),
                  ("torch fused", lambda: torch_step(sizes, batch, reps, inner, True, device), device)]
    except ImportError:
        pass
    if "cupy" not in backends:  # JAX's CPU build only, here
        try:
            import jax  # noqa: F401
            import optax  # noqa: F401
            peers.append(("jax jit", lambda: jax_step(sizes, batch, reps, inner), "cpu"))
        except ImportError:
            pass
    return peers


def _cupy_matmul(a, b, out):
    import cupy
    cupy.matmul(a, b, out=out)


def backend_blas(backend):
    """(name, matmul) of the BLAS whose GEMMs ``backend`` calls: NumPy's, cuBLAS through
    CuPy, or the library the numba backend binds for large GEMMs (MKL where installed)."""
    if backend == "cupy":
        return "cuBLAS", _cupy_matmul
    if backend == "numba":
        from kernels.cpu import blas
        if blas.large_library() not in (None, blas.library()):
            name = os.path.basename(blas.large_library())
            return ("MKL" if "mkl" in name.lower() else name.split(".")[0]), blas.matmul
    return NUMPY_BLAS


def training_rows(workload, backends, reps, with_peers):
    sizes, batch = WORKLOADS[workload]
    inner = {"S": 200, "M": 20, "L": 2}[workload]
    flops = step_flops(sizes, batch)

    def floor_row(provider, matmul=_numpy_matmul, backend="numpy"):
        samples = gemm_floor(sizes, batch, reps, inner, matmul, backend=backend)
        return _row(workload, provider, samples, gflops=flops / statistics.median(samples) / 1e9)

    rows = [floor_row("GEMM floor NumPy")]
    numpy_floor = rows[0].median_ms
    rows[0].ratio = rows[0].numpy_ratio = 1.0
    floors = {}  # the floor of each backend with a BLAS of its own
    for name in backends:
        own = backend_blas(name)
        if own != NUMPY_BLAS:
            rows.append(floor_row(f"GEMM floor {own[0]}", own[1], name))
            floors[name] = rows[-1].median_ms
            rows[-1].ratio, rows[-1].numpy_ratio = 1.0, floors[name] / numpy_floor
    # Each run's ratio is over the floor of the BLAS it calls: a backend's own, NumPy's
    # for the CPU peers, cuBLAS's for peers on the GPU.
    runs = [(name, lambda name=name: engine_step(name, sizes, batch, reps, inner), name == "cupy")
            for name in backends]
    if with_peers:
        runs += [(provider, run, device == "cuda") for provider, run, device in _peers(sizes, batch, reps, inner, backends)]
    for provider, run, on_gpu in runs:
        samples = run()
        ms = statistics.median(samples) * 1e3
        floor = floors["cupy"] if on_gpu else floors.get(provider, numpy_floor)
        rows.append(_row(workload, provider, samples, gflops=flops / ms / 1e6, ratio=ms / floor,
                         numpy_ratio=None if on_gpu else ms / numpy_floor))
    return rows


ROOF_BYTES = 256 << 20


def copy_bandwidth(k, reps=5):
    """Bytes per second of the backend's copy of 256 MB (read + write counted)."""
    src = k.to_device(np.ones(ROOF_BYTES // 4, np.float32), np.float32)
    dst = k.empty(src.shape, np.float32)
    return 2 * ROOF_BYTES / min(timer(k.name)(lambda: k.copy_into(dst, src), reps, 2))


def axpy_bandwidth(k, reps=5):
    """Bytes per second of ``p -= lr g`` in place over 256 MB (the backend's plain SGD
    step: 12 bytes an element). Updates in place touch no line they do not read, where a
    copy's writes to fresh memory are read first (a third of its traffic uncounted): on
    2 cores a copy measured 24-27 GB/s, this 52 GB/s."""
    n = ROOF_BYTES // 4
    params, grads = (k.to_device(np.zeros(n, np.float32), np.float32) for _ in range(2))
    offsets = k.to_device(np.array([0, n]), np.int64)
    scale, decay = (k.to_device(np.array([x]), np.float64) for x in (1.0, 0.0))

    def axpy():
        k.sgd(params, grads, None, offsets, scale, decay, np.inf, 1e-3, 0.0, 0.0, False, False)

    return 12 * n / min(timer(k.name)(axpy, reps, 2))


def kernel_rows(backend, reps):
    """Memory-bound kernels: GB/s, and the share of the better of the two roof figures
    (copy and in-place axpy) measured first in the same run."""
    k = backend_module.module(backend)
    timed = timer(backend)
    roofs = [("copy 256MB", copy_bandwidth(k, reps), 2), ("axpy 256MB in place", axpy_bandwidth(k, reps), 3)]
    # On a GPU a copy reaches the memory's bandwidth (the issue's roof); on a CPU the
    # in-place stream is the truer one (see axpy_bandwidth), so the better of the two.
    bandwidth = roofs[0][1] if backend == "cupy" else max(speed for _, speed, _ in roofs)
    rows = [Row(name, backend, words * ROOF_BYTES / speed * 1e3, 0, 0, gbps=speed / 1e9,
                ratio=speed / bandwidth) for name, speed, words in roofs]
    rng = np.random.default_rng(0)
    for n in (1 << 20, 16 << 20):
        params, grads, m, v = (k.to_device(rng.standard_normal(n).astype(np.float32) * 1e-2, np.float32) for _ in range(4))
        k.copy_into(v, np.abs(k.to_host(v)))
        offsets = k.to_device(np.array([0, n]), np.int64)
        scale, decay = (k.to_device(np.array([x]), np.float64) for x in (1.0, 1e-2))
        step = [0]

        def adamw():
            step[0] += 1
            k.adam(params, grads, m, v, v, offsets, scale, decay, np.inf, 1e-3, 0.9, 0.999, 1e-8, step[0], True, False)

        samples = timed(adamw, reps, 5)
        gbps = 28 * n / statistics.median(samples) / 1e9
        rows.append(_row(f"AdamW {n >> 20}M", backend, samples, gbps=gbps, ratio=gbps * 1e9 / bandwidth))
    for n, classes in ((1024, 10), (1024, 1000), (256, 32000)):
        logits = k.to_device(rng.standard_normal((n, classes)).astype(np.float32), np.float32)
        targets = k.to_device(rng.integers(0, classes, n), np.int64)
        grad = k.empty((n, classes), np.float32)
        total = k.empty(1, np.float64)  # the loss stays on the device, as in a training step
        samples = timed(lambda: k.softmax_cross_entropy(logits, targets, 0.0, spec.NO_IGNORE, spec.MEAN, None, grad,
                                                        total), reps, 10)
        gbps = 8 * n * classes / statistics.median(samples) / 1e9
        rows.append(_row(f"softmax-CE {n}x{classes}", backend, samples, gbps=gbps, ratio=gbps * 1e9 / bandwidth))
    out = k.empty((1024, 4096), np.float32)
    samples = timed(lambda: k.dropout_mask(0.5, 12345, out), reps, 5)
    gbps = 4 * out.size / statistics.median(samples) / 1e9
    rows.append(_row("dropout mask 1024x4096", backend, samples, gbps=gbps, ratio=gbps * 1e9 / bandwidth))
    return rows


def torch_kernel_rows(reps, backends):
    try:
        import torch
    except ImportError:
        return []
    device = torch_device(backends)
    sync = _torch_sync(device)
    torch.set_default_device(device)
    try:
        return _torch_kernel_rows(torch, reps, sync)
    finally:
        torch.set_default_device("cpu")


def _torch_kernel_rows(torch, reps, sync):
    rows = []
    for n in (1 << 20, 16 << 20):
        p = torch.nn.Parameter(torch.randn(n) * 1e-2)
        p.grad = torch.randn(n) * 1e-2
        opt = torch.optim.AdamW([p], fused=True)
        samples = _timed(opt.step, reps, 5, sync)
        rows.append(_row(f"AdamW {n >> 20}M", "torch fused", samples, gbps=28 * n / statistics.median(samples) / 1e9))
    for n, classes in ((1024, 10), (1024, 1000), (256, 32000)):
        logits = torch.randn(n, classes, requires_grad=True)
        targets = torch.randint(0, classes, (n,))

        def fwd_bwd():
            logits.grad = None
            torch.nn.functional.cross_entropy(logits, targets).backward()

        samples = _timed(fwd_bwd, reps, 10, sync)
        rows.append(_row(f"softmax-CE {n}x{classes}", "torch", samples,
                         gbps=8 * n * classes / statistics.median(samples) / 1e9))
    x = torch.empty(1024, 4096)
    samples = _timed(lambda: torch.nn.functional.dropout(x, 0.5, training=True), reps, 5, sync)
    rows.append(_row("dropout mask 1024x4096", "torch", samples, gbps=4 * x.numel() / statistics.median(samples) / 1e9))
    return rows


def _fmt(value, pattern):
    return "" if value is None else format(value, pattern)


def print_table(rows):
    header = (f"{'workload':<24} {'provider':<18} {'median ms':>10} {'min ms':>9} {'max ms':>9} "
              f"{'GFLOP/s':>8} {'GB/s':>7} {'ratio':>7} {'/NumPy':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.workload:<24} {r.provider:<18} {r.median_ms:>10.4f} {r.min_ms:>9.4f} {r.max_ms:>9.4f} "
              f"{_fmt(r.gflops, '.1f'):>8} {_fmt(r.gbps, '.1f'):>7} {_fmt(r.ratio, '.3f'):>7} "
              f"{_fmt(r.numpy_ratio, '.3f'):>7}")


def run(workloads=("S", "M", "L"), backends=None, kernels=True, peers=True, reps=5, as_json=False):
    backends = backends or [b for b in backend_module.available_backends()]
    rows = []
    for workload in workloads:
        rows += training_rows(workload, backends, reps, peers)
    if kernels:
        for backend in backends:
            if backend != "numpy":
                rows += kernel_rows(backend, reps)
        if peers:
            rows += torch_kernel_rows(reps, backends)
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print("ratio: time per step over the GEMM floor through the provider's BLAS, /NumPy: over NumPy's BLAS "
              "floor (training rows); GB/s over the better memory roof, copy or axpy (kernel rows)")
        print_table(rows)
    return rows
