"""The numba backend computes the same bits whether its kernels were compiled in this
process or loaded from numba's disk cache.

A fastmath helper that a kernel calls out of line exists twice: compiled on its own, and
linked into the kernel and optimized again there, where LLVM may fuse other multiply-adds.
A fresh process ran the first copy (loaded first, it took the kernel's call), a process
loading the kernel from the cache the second: AdamW differed in the last bits from its
second step on.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Three steps of SGD with momentum and coupled decay, Adam and AdamW on a flat buffer of
# three segments (serial kernels: under PARALLEL_MIN_WORK elements), then the hash of
# every buffer, and whether each update kernel came from the disk cache.
_UPDATE_AND_REPORT = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    import kernels.cpu as k
    from kernels.cpu import optim

    def digest(*arrays):
        return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()

    sizes = [300, 7, 2000]
    offsets = np.cumsum([0, *sizes]).astype(np.int64)
    n = int(offsets[-1])
    seg_scale, seg_decay = np.ones(3), np.array([0.01, 0.0, 0.01])
    rng = np.random.default_rng(5)
    start = rng.normal(size=n).astype(np.float32)
    grads = [rng.normal(size=n).astype(np.float32) for _ in range(3)]
    report = {}

    params, buf = start.copy(), np.zeros(n, np.float32)
    for step, g in enumerate(grads):
        k.sgd(params, g, buf, offsets, seg_scale, seg_decay, np.inf, None, 0, 0.1, 0.9, 0.0,
              False, False, step == 0)
    report["sgd"] = digest(params, buf)

    for name, decoupled in (("adam", False), ("adamw", True)):
        params, m, v = start.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for step, g in enumerate(grads, 1):
            k.adam(params, g, m, v, None, offsets, seg_scale, seg_decay, np.inf, None, 0, 3e-3,
                   0.9, 0.999, 1e-8, step, decoupled, False)
        report[name] = digest(params, m, v)

    kernels = [optim._UPDATES[kind][0] for kind in (optim._SGD, optim._ADAM)]
    report["from_cache"] = [bool(kernel.stats.cache_hits) for kernel in kernels]
    print(json.dumps(report))
""")


def test_updates_loaded_from_the_cache_give_the_bits_of_a_fresh_compile(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _UPDATE_AND_REPORT], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    fresh, cached = (json.loads(run.stdout.strip().splitlines()[-1]) for run in runs)
    assert fresh.pop("from_cache") == [False, False]  # the first process compiled them
    assert cached.pop("from_cache") == [True, True]   # and the second loaded them
    assert cached == fresh


# Two closures of one ``def`` share numba's index file. Each of two processes compiles one
# of them, and before writing the index waits until the other is about to write it too
# (at most 3 s: a lock that keeps the other out of its save would otherwise deadlock).
_CLOSURES = textwrap.dedent("""
    from numba import njit

    def make(k):
        @njit(cache=True)
        def add_k(x):
            return x + k
        return add_k
""")
_COMPILE_ONE_AT_ONCE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import kernels.cpu.jit  # noqa: F401  (what is tested: it serializes numba's cache saves)
    from numba.core import caching

    folder, which = Path(sys.argv[1]), int(sys.argv[2])
    sys.path.insert(0, str(folder))
    import closures
    save_index = caching.IndexDataCacheFile._save_index

    def save_index_with_the_other(self, overloads):
        (folder / f"saving{which}").touch()
        deadline = time.monotonic() + 3
        while not (folder / f"saving{1 - which}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        save_index(self, overloads)

    caching.IndexDataCacheFile._save_index = save_index_with_the_other
    print(closures.make(which)(1.0))
""")
_LOAD_BOTH = textwrap.dedent("""
    import json, sys
    import kernels.cpu.jit  # noqa: F401
    sys.path.insert(0, sys.argv[1])
    import closures
    functions = [closures.make(k) for k in (0, 1)]
    print(json.dumps([[f(1.0), bool(f.stats.cache_hits)] for f in functions]))
""")


def test_two_processes_compiling_one_function_at_once_leave_a_sound_cache(tmp_path):
    """numba's cache save is not safe across processes (kernels.cpu.jit serializes it):
    each closure must come back from the cache as itself, in a third process."""
    (tmp_path / "closures.py").write_text(_CLOSURES)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    children = [subprocess.Popen([sys.executable, "-c", _COMPILE_ONE_AT_ONCE, str(tmp_path), str(k)], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    for k, child in enumerate(children):
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-3000:]
        assert float(out.split()[-1]) == 1.0 + k
    loaded = subprocess.run([sys.executable, "-c", _LOAD_BOTH, str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == [[1.0, True], [2.0, True]]


def test_stale_cache_is_dropped_under_a_lock_that_keeps_the_lock_files(tmp_path):
    """kernels.cpu.jit._drop_stale_cache on a package of stale cache files: it waits for the
    lock another process holds before it reads the digest (so processes starting together
    delete one at a time, and none deletes what another began to save), then deletes the
    cache entries, keeps the save locks' files, and writes the new digest."""
    fcntl = pytest.importorskip("fcntl")
    package = tmp_path / "kernels" / "cpu"
    cache = package / "__pycache__"
    cache.mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    for name in ("spec.py", "rng.py"):
        (package.parent / name).write_text("")
    entries = [cache / "a.f-1.py311.nbi", cache / "a.f-1.py311.1.nbc"]
    save_lock = cache / "a.f-1.py311.nbi.lock"
    for path in (*entries, save_lock):
        path.write_text("")
    (cache / "numba-sources.sha256").write_text("the digest of other sources")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    code = ("import sys; from pathlib import Path; from kernels.cpu.jit import _drop_stale_cache; "
            "print('ready', flush=True); _drop_stale_cache(Path(sys.argv[1]))")
    with open(cache / "numba-sources.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        child = subprocess.Popen([sys.executable, "-c", code, str(package)], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
        assert all(path.exists() for path in entries)
    assert child.wait(timeout=120) == 0
    assert not any(path.exists() for path in entries)
    assert save_lock.exists()
    assert (cache / "numba-sources.sha256").read_text() != "the digest of other sources"
