"""A steady-state training step allocates nothing that outlives it."""
import tracemalloc

import numpy as np
import pytest

import engine


SETUPS = {  # (MLP options, Trainer options)
    "plain": ({}, {}),
    "dropout": ({"dropout": 0.3}, {}),
    "batch norm": ({"normalization": "batch", "dropout": 0.3}, {}),
    "layer norm": ({"normalization": "layer"}, {}),
    "penalties": ({}, {"l2": 1e-3, "l1": 1e-4, "l1_update": "proximal", "max_norm": 3.0}),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_train_step_has_no_net_allocation(backend_name, setup):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 32, 20)).astype(np.float32)
    y = rng.integers(0, 5, size=(8, 32))
    model_options, trainer_options = SETUPS[setup]
    model = engine.MLP([20, 24, 16, 5], activation=["gelu", "prelu"], seed=0, backend=backend_name, **model_options)
    trainer = engine.Trainer(model, optimizer=engine.AdamW(), metrics=(), clip_global_norm=1.0, **trainer_options)
    # The first steps compile, allocate workspaces and optimizer state and fill
    # NumPy's and Python's internal caches; the next 100 must add nothing. Python keeps up
    # to 2000 freed tuples of each small size (and fewer dicts, lists, floats) for reuse,
    # which tracemalloc counts as allocated: a call with 20 arguments (an optimizer's) can
    # fill one by a tuple a step, so the warm-up outlasts it (measured: 200 B a step for
    # 1970 steps, then flat; the process's RSS stays flat throughout). It runs before
    # tracemalloc starts, which would slow it several times over: memory allocated before
    # is not traced, whether reused or freed later.
    for i in range(2100):
        trainer.train_step(X[i % 8], y[i % 8])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(100):
            trainer.train_step(X[i % 8], y[i % 8])
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # tracemalloc's own records of the first snapshot are not the step's.
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    growth = [s for s in after.filter_traces(own).compare_to(before.filter_traces(own), "filename")
              if s.size_diff > 0]
    total = sum(s.size_diff for s in growth)
    # Python's own bookkeeping (frame objects, small-int caches) may hold a few hundred bytes;
    # one leaked array per step would hold at least 100 x 32 x 5 x 4 = 64 KB.
    assert total < 4096, "\n".join(str(s) for s in growth[:10])
