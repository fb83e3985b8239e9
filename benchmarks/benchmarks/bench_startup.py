"""Start-up: what a new process pays before it trains, each sample in a fresh interpreter
(asv's timeraw_ benchmarks time the statement a function returns in a new Python, its
setup code untimed): importing engine, and importing it, building a model and taking
one training step with an empty numba cache, every kernel the step needs compiled.
"""

# Before anything imports numba: a numba cache directory of its own for this process,
# deleted when it exits. With NUMBA_CACHE_DIR set, kernels.cpu.jit leaves the cache
# beside its sources alone (it only empties that one when the sources change) and numba
# reads and writes only this one: nothing is loaded, everything compiles.
_EMPTY_NUMBA_CACHE = """
import atexit, os, shutil, tempfile
cache = tempfile.mkdtemp(prefix="fusedense-asv-cold-")
atexit.register(shutil.rmtree, cache, True)
os.environ["NUMBA_CACHE_DIR"] = cache
"""

_FIRST_STEP = """
import engine
from engine.bench.workloads import WORKLOADS, batches
sizes, batch = WORKLOADS["S"]
X, y = batches(sizes, batch)
trainer = engine.Trainer(engine.MLP(sizes, seed=0, backend="numba"), optimizer=engine.AdamW(), metrics=())
trainer.train_step(X[0], y[0])
"""


def timeraw_import():
    """``import engine`` (it imports NumPy, not numba: the backend loads on first use)."""
    return "import engine"


def timeraw_first_step_cold():
    """Import, an MLP of workload S on numba and one train_step, from an empty numba cache:
    what a user's first run after installing pays (some 10 s on 2 cores, compilation)."""
    return _FIRST_STEP, _EMPTY_NUMBA_CACHE


# Each sample compiles everything (about 10 s here): one call per sample, two samples,
# one round, no warm-up (which would be one more cold compile).
timeraw_first_step_cold.number = 1
timeraw_first_step_cold.repeat = 2
timeraw_first_step_cold.rounds = 1
timeraw_first_step_cold.warmup_time = 0
timeraw_first_step_cold.timeout = 600
