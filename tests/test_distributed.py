"""engine.distributed in one process (world size 1), its errors, kernels.rng.offset_key, and
jobs of two MPI processes started with mpiexec where they must end the job (an error
inside training) or run the demo. The two-rank training tests are
tests/test_distributed_mpi.py, run under ``mpiexec -n 2``."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import engine
import kernels.reference as reference
from engine import distributed
from kernels import rng


# ------------------------------------------------------------------ offset_key
@pytest.mark.parametrize("first_row", [0, 1, 5, 123457])
@pytest.mark.parametrize("seed, step, layer", [(0, 0, 0), (7, 41, 2), (2**40 + 3, 2**33, 5)])
def test_offset_key_draws_the_rows_of_a_taller_batch(first_row, seed, step, layer):
    """Rows first_row.. of one mask drawn under offset_key(key, first_row * width) are the
    rows of the mask of the whole batch, drawn by the reference's hash."""
    width, rows, p = 7, 9, 0.4
    key = rng.dropout_key(seed, step, layer)
    whole = np.empty((first_row + rows, width), np.float32)
    reference.dropout_mask(p, key, whole)
    shard = np.empty((rows, width), np.float32)
    reference.dropout_mask(p, rng.offset_key(key, first_row * width), shard)
    np.testing.assert_array_equal(shard, whole[first_row:])
    assert 0.2 < np.mean(whole == 0) < 0.6  # a mask that drops, not all ones


def test_offset_key_keeps_the_high_half_and_wraps_the_low_one():
    key = (0xDEADBEEF << 32) | 0xFFFFFFFF
    assert rng.offset_key(key, 0) == key
    assert rng.offset_key(key, 1) == (0xDEADBEEF << 32) | ((0xFFFFFFFF + 0x9E3779B1) % 2**32)
    assert rng.offset_key(key, 2**32) == key  # the hash sees the index modulo 2^32


# ------------------------------------------------------------ one process, errors
def test_without_mpi4py_init_says_what_to_install(monkeypatch):
    monkeypatch.setattr(distributed, "_communicator", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "fusedense\[mpi\]"'):
        distributed.init()


def test_data_parallel_needs_init_first(monkeypatch):
    monkeypatch.setattr(distributed, "_communicator", None)
    with pytest.raises(RuntimeError, match=r"engine.distributed.init\(\) first"):
        engine.Trainer(engine.MLP([3, 2], backend="numpy"), data_parallel=True)


def test_data_parallel_must_be_a_bool():
    with pytest.raises(TypeError, match="data_parallel must be True or False"):
        engine.Trainer(engine.MLP([3, 2], backend="numpy"), data_parallel=1)


def test_one_process_is_a_job_of_one_that_trains_as_without_data_parallel():
    pytest.importorskip("mpi4py", reason='mpi4py is not installed (pip install "fusedense[mpi]")')
    assert distributed.init("numpy") == (0, 1)
    assert distributed.init() == (0, 1)  # again: the same job
    data = np.random.default_rng(0)
    X = data.normal(size=(70, 5)).astype(np.float32)
    y = data.integers(0, 3, 70)
    results = []
    for data_parallel in (False, True):
        model = engine.MLP([5, 16, 3], dropout=0.2, seed=1, backend="numpy")
        trainer = engine.Trainer(model, metrics=["accuracy", "f1"], data_parallel=data_parallel)
        history = trainer.fit(X, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0)
        results.append((model.get_weights(), history.history, trainer.evaluate(X, y, batch_size=32)))
        assert trainer.is_main_process
    (weights, logs, scores), (weights_dp, logs_dp, scores_dp) = results
    for w, w_dp in zip(weights, weights_dp):  # world size 1: weight 1, a sum over one rank
        np.testing.assert_array_equal(w_dp, w)
    assert logs_dp == logs and scores_dp == scores


# ------------------------------------------------------------ jobs of two processes
def _mpiexec():
    pytest.importorskip("mpi4py", reason='mpi4py is not installed (pip install "fusedense[mpi]")')
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if found is None:
        pytest.skip('no mpiexec found (the mpi extra installs one: pip install "fusedense[mpi]")')
    return found


def _job(arguments, timeout=240):
    return subprocess.run([_mpiexec(), "-n", "2", sys.executable, *arguments], capture_output=True, text=True,
                          timeout=timeout, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_an_error_inside_training_on_one_rank_ends_the_job_with_its_message():
    script = textwrap.dedent("""
        import numpy as np
        import engine
        from engine import distributed
        rank, _ = distributed.init("numpy")
        X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        y = (X[:, 0] > 0).astype(np.int64)

        def fail_on_rank_1(epoch, logs):
            if rank == 1 and epoch == 1:
                raise OSError("disk full on rank 1")

        trainer = engine.Trainer(engine.MLP([4, 8, 2], seed=0, backend="numpy"), data_parallel=True,
                                 callbacks=[engine.LambdaCallback(on_epoch_end=fail_on_rank_1)])
        trainer.fit(X, y, epochs=50, batch_size=4, verbose=0)
        print("rank", rank, "finished training")
        """)
    job = _job(["-c", script])  # the rank left in an all-reduce would otherwise wait for ever
    assert job.returncode != 0
    assert "rank 1 of 2 failed; aborting the job" in job.stderr
    assert "OSError: disk full on rank 1" in job.stderr
    assert "finished training" not in job.stdout


def test_the_demo_runs_on_two_processes():
    pytest.importorskip("sklearn", reason="the demo needs scikit-learn")
    job = _job(["-m", "engine", "demo", "--distributed", "--epochs", "2", "--quiet", "--backend", "numpy"])
    assert job.returncode == 0, job.stderr
    assert job.stdout.count("test accuracy:") == 1  # rank 0 alone reports
    assert "2 processes" in job.stdout and "32 a process, 64 in all" in job.stdout
