"""The public surface of API.md: names, constructor signatures and defaults, backend selection."""
import importlib
import inspect
import os
import subprocess
import sys

import pytest

import engine
from engine import backend as backend_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMPTY = inspect.Parameter.empty

# Every public name of API.md, with the sub-module(s) it may also be reached from.
# API.md names the sub-module for optimizers ("engine.optim.AdamW"); the others are where
# a user looks first, the exceptions in either the module raising them or an errors module.
PUBLIC = {
    "available_backends": ("backend",), "set_backend": ("backend",), "get_backend": ("backend",),
    "BackendUnavailable": ("errors", "backend"), "NonFiniteError": ("errors", "trainer"),
    "MLP": ("model",), "load_model": ("io", "model"),
    "MSE": ("losses",), "Huber": ("losses",), "SoftmaxCrossEntropy": ("losses",), "BinaryCrossEntropy": ("losses",),
    "SGD": ("optim",), "Adagrad": ("optim",), "RMSprop": ("optim",), "Adadelta": ("optim",), "Adam": ("optim",),
    "AdamW": ("optim",), "NAdam": ("optim",), "SGDW": ("optim",),
    "Trainer": ("trainer",), "EarlyStopping": ("callbacks",),
}
SUBMODULES = ["activations", "schedules", "metrics", "optim", "losses", "callbacks"]
SUBMODULE_NAMES = {
    "activations": ["LeakyReLU", "ELU", "PReLU"],
    "metrics": ["Mean", "Accuracy", "MSE", "CrossEntropy"],
}

# Hyperparameter names and defaults of API.md (torch.optim's), in order; decay_bias=True is
# API.md's addition to every optimizer.
OPTIMIZER_SIGNATURES = {
    "SGD": [("lr", EMPTY), ("momentum", 0.0), ("dampening", 0.0), ("nesterov", False), ("weight_decay", 0.0)],
    "SGDW": [("lr", EMPTY), ("momentum", 0.0), ("dampening", 0.0), ("nesterov", False), ("weight_decay", 0.0)],
    "Adagrad": [("lr", 1e-2), ("eps", 1e-10), ("initial_accumulator_value", 0.0), ("weight_decay", 0.0)],
    "RMSprop": [("lr", 1e-2), ("alpha", 0.99), ("eps", 1e-8), ("momentum", 0.0), ("centered", False),
                ("weight_decay", 0.0)],
    "Adadelta": [("lr", 1.0), ("rho", 0.9), ("eps", 1e-6), ("weight_decay", 0.0)],
    "Adam": [("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.0), ("amsgrad", False)],
    "AdamW": [("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 1e-2), ("amsgrad", False)],
    "NAdam": [("lr", 2e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("momentum_decay", 4e-3),
              ("weight_decay", 0.0)],
}

# Other documented signatures: (callable, [(name, default), ...]) in API.md's order.
OTHER_SIGNATURES = {
    "MLP": (lambda: engine.MLP, [("sizes", EMPTY), ("activation", "relu"), ("output", "none"), ("dropout", 0.0),
                                 ("init", "glorot_uniform"), ("bias_init", "zeros"), ("seed", None),
                                 ("backend", None), ("dtype", "float32")]),
    "Trainer": (lambda: engine.Trainer, [("model", EMPTY), ("loss", "cross_entropy")]),
    "Trainer.fit": (lambda: engine.Trainer.fit, [("self", EMPTY), ("X", EMPTY), ("y", EMPTY), ("epochs", 1),
                                                 ("batch_size", 32), ("shuffle", True), ("validation_data", None),
                                                 ("validation_split", 0.0), ("verbose", 1)]),
    "Trainer.evaluate": (lambda: engine.Trainer.evaluate, [("self", EMPTY), ("X", EMPTY), ("y", EMPTY),
                                                           ("batch_size", None)]),
    "MLP.predict": (lambda: engine.MLP.predict, [("self", EMPTY), ("X", EMPTY), ("batch_size", None)]),
    "EarlyStopping": (lambda: engine.EarlyStopping, [("monitor", "val_loss"), ("patience", 3), ("min_delta", 0.0),
                                                     ("restore_best_weights", True)]),
    "Huber": (lambda: engine.Huber, [("delta", 1.0)]),
    "SoftmaxCrossEntropy": (lambda: engine.SoftmaxCrossEntropy, [("label_smoothing", 0.0), ("ignore_index", None)]),
}


@pytest.fixture
def restore_backend(monkeypatch):
    """Undo any set_backend() a test makes (monkeypatch restores the module global)."""
    monkeypatch.setattr(backend_module, "_selected", backend_module._selected)


def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "ENGINE_BACKEND"}
    full_env.update(env)
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=REPO,
                          timeout=300)


# ------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_reachable_from_engine_and_its_submodule(name):
    top = getattr(engine, name)
    found = []
    for sub in PUBLIC[name]:
        module = importlib.import_module(f"engine.{sub}")
        if hasattr(module, name):
            assert getattr(module, name) is top, f"engine.{sub}.{name} is not engine.{name}"
            found.append(sub)
    assert found, f"{name} is in none of engine.{'/'.join(PUBLIC[name])}"


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodules_are_attributes_of_engine(name):
    assert getattr(engine, name) is importlib.import_module(f"engine.{name}")


@pytest.mark.parametrize("module, name", [(m, n) for m, names in SUBMODULE_NAMES.items() for n in names])
def test_submodule_classes(module, name):
    assert inspect.isclass(getattr(getattr(engine, module), name))


def test_metric_and_loss_classes_are_distinct():
    # engine.MSE is the loss; engine.metrics.MSE the streaming metric of the same name.
    assert engine.MSE is engine.losses.MSE
    assert engine.metrics.MSE is not engine.MSE


def test_callback_base_and_schedules():
    assert issubclass(engine.EarlyStopping, engine.callbacks.Callback)
    for name in ("Constant", "StepDecay", "ExponentialDecay", "CosineDecay"):
        assert callable(getattr(engine.schedules, name))


def test_exception_hierarchy():
    assert issubclass(engine.BackendUnavailable, RuntimeError)
    assert issubclass(engine.NonFiniteError, FloatingPointError)


# -------------------------------------------------------------------- signatures
def _leading_parameters(func, n):
    params = list(inspect.signature(func).parameters.values())[:n]
    return [(p.name, p.default) for p in params]


@pytest.mark.parametrize("name", sorted(OPTIMIZER_SIGNATURES))
def test_optimizer_signature_matches_torch(name):
    expected = OPTIMIZER_SIGNATURES[name]
    cls = getattr(engine, name)
    assert cls is getattr(engine.optim, name)
    assert _leading_parameters(cls, len(expected)) == expected
    params = inspect.signature(cls).parameters
    assert "decay_bias" in params and params["decay_bias"].default is True


@pytest.mark.parametrize("name", sorted(OTHER_SIGNATURES))
def test_documented_signature_and_defaults(name):
    get, expected = OTHER_SIGNATURES[name]
    assert _leading_parameters(get(), len(expected)) == expected


def test_trainer_keyword_defaults():
    params = inspect.signature(engine.Trainer).parameters
    assert params["metrics"].default is None  # the loss's default_metrics: tests/test_metrics.py
    for clip in ("clip_value", "clip_norm", "clip_global_norm"):
        assert params[clip].default is None
    assert tuple(params["callbacks"].default) == ()
    for reduction_owner in (engine.MSE, engine.Huber, engine.SoftmaxCrossEntropy, engine.BinaryCrossEntropy):
        assert inspect.signature(reduction_owner).parameters["reduction"].default == "mean"


def test_trainer_default_optimizer_is_adamw():
    model = engine.MLP([2, 2], backend="numpy", seed=0)
    optimizer = engine.Trainer(model).optimizer
    assert type(optimizer) is engine.AdamW


# ---------------------------------------------------------------------- backends
def test_available_backends_contains_numpy():
    names = engine.available_backends()
    assert isinstance(names, list) and "numpy" in names
    assert set(names) <= {"numpy", "numba", "cupy"}


def test_set_get_backend_round_trip(restore_backend):
    for name in engine.available_backends():
        engine.set_backend(name)
        assert engine.get_backend() == name
        assert engine.MLP([2, 1], seed=0).backend == name


def test_auto_resolves_to_a_real_backend(restore_backend):
    engine.set_backend("auto")
    resolved = engine.get_backend()
    available = engine.available_backends()
    assert resolved != "auto" and resolved in available
    # API.md: cupy where a CUDA device works, else numba.
    if "cupy" in available:
        assert resolved == "cupy"
    elif "numba" in available:
        assert resolved == "numba"


def test_default_is_auto_when_nothing_selected(monkeypatch):
    monkeypatch.delenv("ENGINE_BACKEND", raising=False)
    monkeypatch.setattr(backend_module, "_selected", None)
    resolved = engine.get_backend()
    monkeypatch.setattr(backend_module, "_selected", None)
    engine.set_backend("auto")
    assert resolved == engine.get_backend()


@pytest.mark.parametrize("name", ["numpy", "numba", "cupy"])
def test_engine_backend_environment_variable(name):
    available = engine.available_backends()
    result = run_python("import engine; print(engine.get_backend()); print(engine.MLP([2, 1]).backend)",
                        ENGINE_BACKEND=name)
    if name in available:
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [name, name]
    else:
        assert result.returncode != 0
        assert "BackendUnavailable" in result.stderr and name in result.stderr


def test_engine_backend_environment_variable_unknown_name():
    result = run_python("import engine; engine.get_backend()", ENGINE_BACKEND="tensorflow")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "tensorflow" in result.stderr


def test_set_backend_overrides_environment_variable():
    result = run_python("import engine; engine.set_backend('numpy'); print(engine.get_backend())",
                        ENGINE_BACKEND="auto")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


def _has_cuda_device():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_has_cuda_device(), reason="a CUDA device works here: cupy is a legitimate backend")
def test_cupy_unavailable_without_gpu(restore_backend):
    assert "cupy" not in engine.available_backends()
    for ask in (lambda: engine.set_backend("cupy"), lambda: engine.MLP([2, 1], backend="cupy")):
        with pytest.raises(engine.BackendUnavailable) as info:
            ask()
        assert isinstance(info.value, RuntimeError)
        message = str(info.value)
        assert "cupy" in message
        # a reason, not just the name
        assert len(message.replace("cupy", "").strip(" :")) > 10, message
    assert engine.get_backend() != "cupy"


@pytest.mark.parametrize("name", ["tensorflow", "NUMPY", "", "cuda"])
def test_unknown_backend_name_is_value_error(name, restore_backend):
    before = engine.get_backend()
    with pytest.raises(ValueError, match="backend"):
        engine.set_backend(name)
    with pytest.raises(ValueError, match="backend"):
        engine.MLP([2, 1], backend=name)
    assert engine.get_backend() == before


def test_backend_name_must_be_a_string(restore_backend):
    with pytest.raises(TypeError, match="backend"):
        engine.set_backend(3)


def test_model_runs_on_requested_backend(backend_name):
    model = engine.MLP([3, 2], backend=backend_name, seed=0)
    assert model.backend == backend_name


def test_set_num_threads_round_trip():
    if "numba" not in engine.available_backends():
        pytest.skip("the numba backend cannot run here")
    before = engine.get_num_threads()
    try:
        engine.set_num_threads(1)
        assert engine.get_num_threads() == 1
    finally:
        engine.set_num_threads(before)
    assert engine.get_num_threads() == before


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_set_num_threads_rejects_bad_counts(bad, error):
    with pytest.raises(error, match=r"\bn\b"):
        engine.set_num_threads(bad)


def test_cli_unavailable_backend_is_one_line(capsys):
    """A backend that cannot run here ends the command with the reason, not a traceback."""
    from engine import backend as backend_module
    from engine.cli import main

    missing = [name for name in ("cupy", "numba") if name not in backend_module.available_backends()]
    if not missing:
        pytest.skip("every backend runs here")
    for argv in (["demo", "--backend", missing[0]], ["bench", "--backends", missing[0]]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        message = capsys.readouterr().err.strip()
        assert message.count("\n") == 0 and missing[0] in message and "Traceback" not in message
