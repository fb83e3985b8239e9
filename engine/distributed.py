"""Data-parallel training across processes started by ``mpirun`` or ``srun``: MPI (mpi4py)
on the CPU backends, NCCL (through CuPy) for the device arrays of ``cupy``.

    rank, world_size = engine.distributed.init()
    trainer = engine.Trainer(model, ..., data_parallel=True)
    trainer.fit(X, y, batch_size=32)   # 32 rows per rank, 32 * world_size per step

Each step's global batch of ``B = batch_size * world_size`` rows (cut from the same
shuffle on every rank, drawn from the model's seed) is split into consecutive shards,
rank ``r`` taking rows ``[r B / W, (r + 1) B / W)`` (floors; a short last batch split as
evenly as possible). Rank r's gradient ``g_r`` and loss ``l_r`` over its ``n_r`` rows are
scaled by ``n_r / B`` and summed over ranks by one in-place all-reduce, which for a loss
with ``reduction="mean"`` gives exactly the gradient and loss of the whole batch:

    sum_r (n_r / B) (1 / n_r) sum_{i in shard r} d l_i = (1 / B) sum_i d l_i.

With ``reduction="sum"`` the shards' sums add up as they are (scale 1). (Cross-entropy's
``ignore_index`` weights by rows, not by kept rows: exact only when each shard keeps the
same share of its rows.) The all-reduce comes before the finite check and the clipping,
so every rank sees the same gradient and loss, takes the same decisions and keeps the
same weights. Dropout masks are drawn per row of the global batch
(:func:`kernels.rng.offset_key`), so two ranks at batch b train as one process at 2b.
A rank whose shard of a last short batch is empty computes on one row of the batch with
weight 0, so that the all-reduce still has every rank.

Calls that communicate (fit, evaluate, train_step) first agree: each rank checks its
arguments alone, then all exchange their verdicts and what they were asked to do
(model configuration, optimizer, batch size, data length...); an error on one rank is
raised on every rank with that rank's message, and a disagreement on every rank with
the differences. An error once training has started (a callback's, an interrupt) can
leave the other ranks inside an all-reduce: the failing rank prints it and aborts the
whole job (``MPI_Abort``).
"""
from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import NamedTuple

import numpy as np

from . import backend as backend_module
from .errors import NonFiniteError

INSTALL_HINT = 'pip install "fusedense[mpi]"'
_communicator = None  # init()'s


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(f"engine.distributed needs mpi4py and an MPI library: {INSTALL_HINT}") from None
    return MPI


class _HostCollectives:
    """All-reduce and broadcast of NumPy arrays (the CPU backends' device arrays) over MPI."""

    def __init__(self, comm):
        self._comm = comm

    def sum_in_place(self, array):
        self._comm.Allreduce(_mpi().IN_PLACE, array)

    def broadcast(self, array):
        self._comm.Bcast(array, root=0)


class _NcclCollectives:
    """All-reduce and broadcast of CuPy arrays through NCCL, on the current stream (the one
    the cupy backend queues its kernels on). The NCCL unique id travels over MPI; each
    rank uses the GPU of its rank among the processes of its node (MPI's shared-memory
    split), so that ``srun --gpus-per-node=G`` with G ranks a node gives each its own."""

    def __init__(self, comm):
        import cupy
        from cupy.cuda import nccl
        node = comm.Split_type(_mpi().COMM_TYPE_SHARED)
        local_rank = node.Get_rank()
        node.Free()
        cupy.cuda.Device(local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = comm.bcast(nccl.get_unique_id() if comm.Get_rank() == 0 else None, root=0)
        self._nccl, self._cupy = nccl, cupy
        self._comm = nccl.NcclCommunicator(comm.Get_size(), unique_id, comm.Get_rank())
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def sum_in_place(self, array):
        pointer = array.data.ptr
        self._comm.allReduce(pointer, pointer, array.size, self._types[array.dtype], self._nccl.NCCL_SUM,
                             self._cupy.cuda.get_current_stream().ptr)

    def broadcast(self, array):
        self._comm.bcast(array.data.ptr, array.size, self._types[array.dtype], 0,
                         self._cupy.cuda.get_current_stream().ptr)


class Communicator:
    """The processes of the job (MPI's COMM_WORLD) and the collectives on one backend's
    arrays: NCCL for ``cupy``, MPI otherwise; host values always over MPI."""

    def __init__(self, comm, backend):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.backend = backend
        self.on_gpu = backend == "cupy"
        self.device = _NcclCollectives(comm) if self.on_gpu else _HostCollectives(comm)

    def sum_on_host(self, values):
        """The element-wise sum over ranks of the float64 host array ``values`` (a new array)."""
        values = np.ascontiguousarray(values, dtype=np.float64).copy()
        self.comm.Allreduce(_mpi().IN_PLACE, values)
        return values

    def abort(self, error):
        """Print ``error`` as this rank's and end every rank of the job."""
        message = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        print(f"engine.distributed: rank {self.rank} of {self.size} failed; aborting the job\n{message}",
              file=sys.stderr, flush=True)
        self.comm.Abort(1)


def init(backend=None):
    """Join the job's processes; returns ``(rank, world_size)``.

    Called once per process before any model is built (on ``cupy`` it selects the GPU,
    by the rank among the processes of the node). ``backend``: the backend the models
    will train on (None: :func:`engine.get_backend`); ``cupy`` all-reduces with NCCL,
    the CPU backends with MPI. Started without ``mpirun``/``srun``, the job is this one
    process: ``(0, 1)``. Needs mpi4py and an MPI (``pip install "fusedense[mpi]"``).
    Calling it again returns the same pair.
    """
    global _communicator
    if _communicator is None:
        MPI = _mpi()
        name = backend_module.module(backend_module.get_backend() if backend is None else backend).name
        _communicator = Communicator(MPI.COMM_WORLD, name)
    return _communicator.rank, _communicator.size


def communicator():
    """init()'s Communicator; a RuntimeError before init()."""
    if _communicator is None:
        raise RuntimeError("data_parallel=True needs engine.distributed.init() first, in every process of the "
                           "job (started by mpirun or srun)")
    return _communicator


class Shard(NamedTuple):
    """A rank's part of one global batch: rows ``start:stop`` of the data (in the epoch's
    order) computed on, the first of them ``first_row`` of the global batch, ``owned`` of
    them this rank's (0 for the one row an empty shard borrows), the gradient's ``weight``
    in the sum over ranks."""

    start: int
    stop: int
    first_row: int
    owned: int
    weight: float


def whole_batch(start, stop):
    """The Shard of one process: the batch itself, weight 1."""
    return Shard(start, stop, 0, stop - start, 1.0)


def split(start, stop, rank, size):
    """Rows ``[lo, hi)`` of rank ``rank``'s share of rows ``start:stop``: consecutive, in
    rank order, sizes differing by at most one."""
    n = stop - start
    return start + rank * n // size, start + (rank + 1) * n // size


# The stages of a collective call (DataParallel.call): checking its arguments alone,
# agreeing with the other ranks, then communicating.
_CHECKING, _AGREEING, _TRAINING = "checking", "agreeing", "training"


def collective(method):
    """A Trainer method that communicates under data parallelism: see DataParallel.call."""
    @functools.wraps(method)
    def run(trainer, *args, **kwargs):
        if trainer._parallel is None:
            return method(trainer, *args, **kwargs)
        return trainer._parallel.call(method, trainer, *args, **kwargs)
    return run


class DataParallel:
    """A Trainer's side of data parallelism: adopts rank 0's seed and weights, cuts shards,
    reduces gradients and sums, and keeps the ranks agreed (see the module docstring)."""

    def __init__(self, model):
        self.comm = communicator()
        if (model.backend == "cupy") != self.comm.on_gpu:
            raise ValueError(f"data_parallel=True: the model is on backend {model.backend!r}, but "
                             f"engine.distributed.init() set the job up for {self.comm.backend!r}; pass "
                             f"init(backend={model.backend!r})")
        self.rank, self.size = self.comm.rank, self.comm.size
        self._stages = []  # per collective call under way: _CHECKING, _AGREEING or _TRAINING
        # The same layers on every rank, before their weights are broadcast.
        self._exchange(None, {"model": model.config(), "backend": model.backend})
        # Seeds drawn per process (seed=None) differ: rank 0's shuffles and drops for all.
        model._seed = self.comm.comm.bcast(model._seed, root=0)
        self.broadcast_weights(model)

    @property
    def is_main(self):
        return self.rank == 0

    def broadcast_weights(self, model):
        self.comm.device.broadcast(model._params)

    # ------------------------------------------------------------- agreement
    def call(self, method, trainer, *args, **kwargs):
        """Run ``method``, which calls :meth:`agree` once its arguments are checked. An
        error before that is sent to the other ranks, whose ``agree`` raises it; one after
        it, but for a NonFiniteError (which every rank raises at the same step), aborts
        the job when there are other ranks."""
        self._stages.append(_CHECKING)
        try:
            return method(trainer, *args, **kwargs)
        except NonFiniteError:
            raise
        except BaseException as error:
            if self._stages[-1] == _CHECKING:
                self._exchange(error, None)
            elif self._stages[-1] == _TRAINING and self.size > 1:
                self.comm.abort(error)
            raise  # _AGREEING: every rank raises it alike
        finally:
            self._stages.pop()

    def agree(self, what):
        """Every rank's verdict and ``what`` (a dict of plain values each rank must share):
        a RuntimeError on every rank when one failed its checks, a ValueError naming the
        differences when the ranks disagree."""
        self._stages[-1] = _AGREEING
        self._exchange(None, what)
        self._stages[-1] = _TRAINING

    def _exchange(self, error, what):
        """The collective under agree(): (this rank's error message or None, what) gathered."""
        message = None if error is None else f"{type(error).__name__}: {error}"
        gathered = self.comm.comm.allgather((message, None if what is None else json.dumps(what, default=str)))
        failed = [(rank, m) for rank, (m, _) in enumerate(gathered) if m is not None]
        if failed:
            if error is not None:
                return  # the caller raises its own
            rank, m = failed[0]
            raise RuntimeError(f"rank {rank} of {self.size} failed before training, so every rank stops: {m}")
        shared = [json.loads(w) for _, w in gathered]
        differences = [f"{key}: " + ", ".join(f"rank {r} {s[key]!r}" for r, s in enumerate(shared))
                       for key in shared[0] if any(s.get(key) != shared[0][key] for s in shared)]
        if differences:
            raise ValueError("data_parallel=True: the ranks must train the same model on the same kind of data; "
                             "they differ in " + "; ".join(differences))

    # ---------------------------------------------------------------- shards
    def shard(self, start, stop, reduction):
        """This rank's Shard of the global batch ``start:stop``; its gradient weighs
        ``n_r / B`` for a mean loss, 1 for a sum (0 for an empty shard's borrowed row)."""
        lo, hi = split(start, stop, self.rank, self.size)
        if hi == lo:  # more ranks than rows: compute on the batch's last row, counted for nothing
            return Shard(stop - 1, stop, stop - 1 - start, 0, 0.0)
        owned = hi - lo
        return Shard(lo, hi, lo - start, owned, owned / (stop - start) if reduction == "mean" else 1.0)

    def own_batch(self, n_rows, reduction):
        """The Shard of train_step's batch of ``n_rows``: this rank's rows after those of
        the ranks before it, in a global batch of all ranks' rows."""
        counts = self.comm.comm.allgather(n_rows)
        first, total = sum(counts[:self.rank]), sum(counts)
        return Shard(0, n_rows, first, n_rows, n_rows / total if reduction == "mean" else 1.0)

    def reduce_step(self, grads, loss_slot, weight):
        """The flat gradient and the step's loss (a one-value device array) weighted by this
        rank's share and summed over ranks, in place."""
        if weight != 1.0:
            grads *= weight
            loss_slot *= weight
        self.comm.device.sum_in_place(grads)
        self.comm.device.sum_in_place(loss_slot)

    def sum_on_host(self, values):
        return self.comm.sum_on_host(values)

    def gather_rows(self, *arrays):
        """Each host array concatenated over ranks, in rank order (every rank gets all)."""
        gathered = self.comm.comm.allgather(arrays)
        return tuple(np.concatenate(parts) for parts in zip(*gathered))
