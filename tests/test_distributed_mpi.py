"""Data-parallel training on two MPI processes: run as ``mpiexec -n 2 python -m pytest -q
tests/test_distributed_mpi.py`` (the CI's MPI tier). Every rank runs every test; the
references (one process at the global batch) are computed on each rank alone.

Outside mpiexec (one process) these tests skip, naming the command.
"""
import json
import os

import numpy as np
import pytest

import engine
from engine import distributed

MPI = pytest.importorskip("mpi4py.MPI", reason='mpi4py is not installed (pip install "fusedense[mpi]")')
RANK, WORLD = distributed.init("numpy")
pytestmark = pytest.mark.skipif(WORLD != 2, reason="run under MPI with 2 processes: "
                                                   "mpiexec -n 2 python -m pytest tests/test_distributed_mpi.py")
COMM = MPI.COMM_WORLD

BATCH = 8  # per rank; the single process trains at 2 * BATCH
# 5 epochs of 10 global batches = 50 steps; the last global batch has 11 rows (5 and 6 a rank)
N_ROWS = 155
EPOCHS = 5


def data(seed=0, n=N_ROWS, n_in=6, n_out=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)).astype(np.float32)
    y = np.argmax(X @ rng.normal(size=(n_in, n_out)), axis=1)
    return X, y


def mlp(backend, dropout=0.0, seed=3, sizes=(6, 32, 16, 3)):
    return engine.MLP(list(sizes), activation="relu", dropout=dropout, seed=seed, backend=backend)


def same_on_every_rank(arrays):
    """Every rank's arrays equal rank 0's, bit for bit."""
    gathered = COMM.allgather([np.asarray(a) for a in arrays])
    return all(np.array_equal(a, b) for other in gathered[1:] for a, b in zip(gathered[0], other))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_two_ranks_at_batch_b_train_as_one_process_at_2b(backend, dropout):
    X, y = data()
    single = engine.Trainer(mlp(backend, dropout), optimizer=engine.AdamW(lr=1e-2))
    single_history = single.fit(X, y, epochs=EPOCHS, batch_size=2 * BATCH, verbose=0)
    parallel = engine.Trainer(mlp(backend, dropout), optimizer=engine.AdamW(lr=1e-2), data_parallel=True)
    history = parallel.fit(X, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    assert parallel.step == single.step == 50
    weights, expected = parallel.model.get_weights(), single.model.get_weights()
    assert same_on_every_rank(weights)
    # float32 rounding: the shards' gradients are summed in another order than one GEMM over
    # 2b rows sums them (relative 1e-7 a step), and Adam's normalised steps of lr = 1e-2
    # carry such differences on for 50 steps (measured: at most 7e-7 here); 5e-6 is still
    # far below one step's size (1e-2).
    for w, e in zip(weights, expected):
        np.testing.assert_allclose(w, e, rtol=0, atol=5e-6)
    # The epoch's loss is the mean over every row, and accuracy counts every rank's rows.
    np.testing.assert_allclose(history.history["loss"], single_history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["accuracy"], single_history.history["accuracy"], rtol=1e-6)


def test_sum_reduction_adds_the_shards():
    """With reduction="sum" the whole batch's loss is the sum of the shards' sums."""
    X, y = data(1)
    target = np.eye(3, dtype=np.float32)[y]
    loss = engine.MSE(reduction="sum")
    single = engine.Trainer(mlp("numpy"), loss=loss, optimizer=engine.SGD(lr=1e-3))
    single.fit(X, target, epochs=2, batch_size=2 * BATCH, verbose=0)
    parallel = engine.Trainer(mlp("numpy"), loss=loss, optimizer=engine.SGD(lr=1e-3), data_parallel=True)
    parallel.fit(X, target, epochs=2, batch_size=BATCH, verbose=0)
    for w, e in zip(parallel.model.get_weights(), single.model.get_weights()):
        np.testing.assert_allclose(w, e, rtol=1e-4, atol=1e-6)  # float32 rounding, as above


def test_train_step_on_each_ranks_batch_is_a_step_on_their_concatenation():
    X, y = data(2, n=2 * BATCH + 3)  # rank 0 takes 8 rows, rank 1 the other 11
    single = engine.Trainer(mlp("numpy", dropout=0.3), optimizer=engine.Adam(lr=1e-2))
    expected_loss = single.train_step(X, y)
    parallel = engine.Trainer(mlp("numpy", dropout=0.3), optimizer=engine.Adam(lr=1e-2), data_parallel=True)
    mine = slice(0, BATCH) if RANK == 0 else slice(BATCH, None)
    loss = parallel.train_step(X[mine], y[mine])
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    for w, e in zip(parallel.model.get_weights(), single.model.get_weights()):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-7)


def test_evaluate_splits_the_rows_and_adds_the_sums():
    X, y = data(4, n=101)  # batches of 2 x 16 rows, the last of 5 split 2 and 3
    model = mlp("numpy")
    single = engine.Trainer(model, metrics=["accuracy", "f1", "top_k_accuracy"])
    expected = single.evaluate(X, y, batch_size=2 * 16)
    result = engine.Trainer(model, metrics=["accuracy", "f1", "top_k_accuracy"], data_parallel=True).evaluate(X, y, 16)
    assert result.keys() == expected.keys()
    for name in expected:
        assert result[name] == pytest.approx(expected[name], rel=1e-6), name


def test_rank_0_alone_writes_files_and_shows_progress(capsys):
    X, y = data(5)
    directory = COMM.bcast(str(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fusedense-mpi-{os.getpid()}")))
    os.makedirs(directory, exist_ok=True)
    log, checkpoint = os.path.join(directory, "log.csv"), os.path.join(directory, "model-{epoch}.npz")
    trainer = engine.Trainer(mlp("numpy"), data_parallel=True,
                             callbacks=[engine.CSVLogger(log), engine.ModelCheckpoint(checkpoint, monitor="loss")])
    trainer.fit(X, y, epochs=2, batch_size=BATCH, verbose=2)
    trainer.save_checkpoint(os.path.join(directory, "last.npz"))
    printed = capsys.readouterr().out
    COMM.Barrier()
    with open(log) as f:
        rows = f.read().splitlines()
    assert len(rows) == 3  # the header and two epochs: one writer, not two
    assert sorted(os.listdir(directory)) == ["last.npz", "log.csv", "model-1.npz", "model-2.npz"]
    assert ("Epoch 2/2" in printed) == (RANK == 0)
    assert trainer.is_main_process == (RANK == 0)


def test_bad_input_on_one_rank_stops_every_rank_with_its_message():
    X, y = data(6)
    trainer = engine.Trainer(mlp("numpy"), data_parallel=True)
    if RANK == 1:
        y = y[:-1]
    expected = ValueError if RANK == 1 else RuntimeError
    with pytest.raises(expected, match="y must be" if RANK == 1 else r"rank 1 of 2 failed.*ValueError: y must be"):
        trainer.fit(X, y, epochs=1, batch_size=BATCH, verbose=0)
    assert trainer.step == 0
    # The job goes on: the next collective call works on both.
    trainer.fit(X, data(6)[1], epochs=1, batch_size=BATCH, verbose=0)
    assert same_on_every_rank(trainer.model.get_weights())


def test_ranks_that_disagree_are_refused_on_every_rank():
    X, y = data(7)
    with pytest.raises(ValueError, match=r"differ in model: rank 0 .*16.*rank 1 .*24"):
        engine.Trainer(mlp("numpy", sizes=(6, 16 if RANK == 0 else 24, 3)), data_parallel=True)
    trainer = engine.Trainer(mlp("numpy"), data_parallel=True)
    with pytest.raises(ValueError, match="differ in batch_size: rank 0 8, rank 1 9"):
        trainer.fit(X, y, batch_size=BATCH + RANK, verbose=0)
    n = N_ROWS - RANK
    with pytest.raises(ValueError, match=f"differ in rows: rank 0 {N_ROWS}, rank 1 {N_ROWS - 1}"):
        trainer.fit(X[:n], y[:n], batch_size=BATCH, verbose=0)
    assert trainer.step == 0


def test_construction_adopts_rank_0s_seed_and_weights():
    model = engine.MLP([6, 8, 3], seed=None, dropout=0.2, backend="numpy")  # a seed drawn per process
    engine.Trainer(model, data_parallel=True)
    assert same_on_every_rank(model.get_weights())
    assert len(set(COMM.allgather(json.dumps(model._seed)))) == 1
