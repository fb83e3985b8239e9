"""Error messages of the public API that no other test triggers (docs/errors.md lists each
with its test): each raises the exception named there, its message naming the argument."""
import importlib
import io
import json
import sys

import numpy as np
import pytest

import engine
from engine import data, demo, ensemble, metrics, optim
from engine.bench import cases, report, worker


def mlp(**kwargs):
    return engine.MLP([3, 4, 2], seed=0, backend="numpy", **kwargs)


def test_train_val_test_split_scalar_y():
    with pytest.raises(ValueError, match=r"y must have one row per row of X \(4\); got a scalar"):
        data.train_val_test_split(np.ones((4, 2)), 3)


def test_train_ensemble_bagging_needs_2d_rows():
    with pytest.raises(ValueError, match=r"X must be a non-empty 2-D array \(n_samples, n_features\); got shape \(6,\)"):
        ensemble.train_ensemble(lambda i: engine.Trainer(mlp()), np.ones(6), np.zeros(6), n_members=2, bagging=True)


def test_init_must_be_a_name():
    with pytest.raises(TypeError, match=r"init must be an initializer name; got float"):
        mlp(init=1.0)


def test_loss_call_needs_2d_logits():
    with pytest.raises(ValueError, match=r"pred must be a non-empty 2-D array of logits; got shape \(0, 2\)"):
        engine.MSE()(np.ones((0, 2)), np.ones((0, 2)))


def test_ignore_index_with_probability_targets():
    trainer = engine.Trainer(mlp(), loss=engine.SoftmaxCrossEntropy(ignore_index=-100))
    with pytest.raises(ValueError, match=r"ignore_index applies to class-index targets only; yb holds class"):
        trainer.train_step(np.ones((2, 3)), np.full((2, 2), 0.5))


def test_loss_of_a_wrong_type():
    with pytest.raises(TypeError, match=r"loss must be a loss name or an engine.losses.Loss; got int"):
        engine.Trainer(mlp(), loss=3)


def test_metric_scores_shape():
    with pytest.raises(ValueError, match=r"y_pred must be scores of shape \(N, K\) or \(N,\); got shape \(2, 2, 2\)"):
        metrics.Accuracy().update(np.zeros(2), np.zeros((2, 2, 2)))


def test_cross_entropy_metric_labels_per_row():
    with pytest.raises(ValueError, match=r"y_true must have one label per row of y_pred \(2\); got shape \(3,\)"):
        metrics.CrossEntropy().update(np.zeros(3), np.array([1.0, -1.0]))  # one output: binary


def test_r2_columns_fixed_by_the_first_update():
    r2 = metrics.R2()
    r2.update(np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"y_pred must have 2 columns, as in the earlier updates; got 3"):
        r2.update(np.zeros((2, 3)), np.ones((2, 3)))


def test_metrics_entries_of_a_wrong_type():
    with pytest.raises(TypeError, match=r"metrics entries must be metric names or engine.metrics.Metric objects; "
                                        r"got int"):
        engine.Trainer(mlp(), metrics=[3])


def test_set_weights_needs_a_list():
    with pytest.raises(TypeError, match=r"weights must be a list of arrays; got str"):
        mlp().set_weights("weights")


def test_one_optimizer_per_model():
    adam = engine.Adam()
    engine.Trainer(mlp(), optimizer=adam)
    with pytest.raises(ValueError, match=r"this optimizer is already bound to another model"):
        engine.Trainer(mlp(), optimizer=adam)


def test_optimizer_load_state_dict_checks_names_and_shapes():
    adam = engine.Adam()
    engine.Trainer(mlp(), optimizer=adam)
    state = adam.state_dict()
    with pytest.raises(ValueError, match=r"optimizer state must hold \['exp_avg', 'exp_avg_sq'\]; got \['exp_avg'\]"):
        adam.load_state_dict({**state, "arrays": {"exp_avg": state["arrays"]["exp_avg"]}})
    wrong = {**state["arrays"], "exp_avg": np.zeros(5)}
    with pytest.raises(ValueError, match=r"optimizer state exp_avg must have shape \(26,\); got \(5,\)"):
        adam.load_state_dict({**state, "arrays": wrong})


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match=r"nesterov needs momentum > 0 and dampening = 0"):
        engine.SGD(0.1, nesterov=True)


def test_optimizer_of_a_wrong_type():
    with pytest.raises(TypeError, match=r"optimizer must be an optimizer name or an engine.optim.Optimizer; got int"):
        optim.get(3)


def test_checkpoint_parameter_count(tmp_path):
    trainer = engine.Trainer(mlp(), optimizer=engine.SGD(0.1))
    trainer.save_checkpoint(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as saved:
        meta, params = saved["meta"], saved["params"]
    with open(tmp_path / "c.npz", "wb") as f:
        np.savez(f, meta=meta, params=params[:-1], opt_momentum_buffer=np.zeros(26))
    with pytest.raises(ValueError, match=r"checkpoint has 25 parameters; the model has 26"):
        trainer.load_checkpoint(tmp_path / "c.npz")


def test_sklearn_needs_a_recent_scikit_learn(monkeypatch):
    import sklearn.utils.validation as validation
    monkeypatch.delattr(validation, "validate_data")
    monkeypatch.delitem(sys.modules, "engine.sklearn", raising=False)
    monkeypatch.delattr(engine, "sklearn", raising=False)  # restored, with the module, after the test
    with pytest.raises(ImportError, match=r"engine.sklearn needs scikit-learn >= 1.6"):
        importlib.import_module("engine.sklearn")


@pytest.fixture
def sklearn_estimators():
    from engine.sklearn import MLPClassifier, MLPRegressor
    options = dict(hidden_layer_sizes=(3,), epochs=1, backend="numpy", random_state=0)
    return MLPClassifier(**options), MLPRegressor(**options)


def test_classifier_targets(sklearn_estimators):
    classifier, _ = sklearn_estimators
    X = np.ones((4, 2))
    with pytest.raises(ValueError, match=r"y must hold class labels .* got multiclass-multioutput targets"):
        classifier.fit(X, np.array([[0, 1], [2, 0], [1, 2], [0, 0]]))
    multilabel = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
    with pytest.raises(ValueError, match=r"classes must be the label columns 0..1 for multilabel y; got"):
        classifier.partial_fit(X, multilabel, classes=[1, 2])
    classifier.partial_fit(X, multilabel, classes=[0, 1])
    with pytest.raises(ValueError, match=r"y must have 2 label columns; got 3"):
        classifier.partial_fit(np.ones((4, 2)), np.array([[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match=r"y is binary but the classifier was fitted on multilabel targets"):
        classifier.partial_fit(X, np.array([0, 1, 1, 0]))


def test_regressor_target_columns_fixed(sklearn_estimators):
    _, regressor = sklearn_estimators
    regressor.partial_fit(np.ones((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"y must have 2 target column\(s\), as in the first call; got 3"):
        regressor.partial_fit(np.ones((4, 2)), np.zeros((4, 3)))


def test_demo_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SystemExit, match=r"the demo needs scikit-learn"):
        demo.load_digits_splits(0)


def test_bench_plot_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit, match=r"--plot needs matplotlib"):
        report.plot([], tmp_path / "bench.png")


def test_bench_inputs_of_an_unknown_op():
    with pytest.raises(ValueError, match=r"op must be one of .*; got 'nope'"):
        cases.inputs("nope")


def test_bench_worker_job_kind(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"kind": "tensorflow"})))
    with pytest.raises(ValueError, match=r"job kind must be one of fusedense, torch, jax, sklearn; got 'tensorflow'"):
        worker.main()


def test_sizes_beyond_int64_offsets():
    with pytest.raises(ValueError, match=r"sizes \[10000000000, 10000000000\] make .* parameters, more than int64"):
        engine.MLP([10**10, 10**10], backend="numpy")


def test_sizes_beyond_this_machines_memory(monkeypatch):
    from engine import model as model_module
    monkeypatch.setattr(model_module, "_physical_memory", lambda: 2**20)  # a 1 MiB machine: nothing allocated
    with pytest.raises(ValueError, match=r"sizes \[300, 300\] make 90,300 parameters, which need .* to initialise: "
                                         r"more than this machine's 1 MiB of memory"):
        engine.MLP([300, 300], backend="numpy")


def test_file_entry_of_python_objects(tmp_path):
    path = tmp_path / "objects.npz"
    with open(path, "wb") as f:  # np.savez pickles an object array; loading must not
        np.savez(f, meta=np.array('{"format": "fusedense-model", "version": 1}'), w0=np.array([1, "a"], object))
    with pytest.raises(ValueError, match=r"objects.npz is not a fusedense model file: its entry 'w0.npy' holds "
                                         r"Python objects"):
        engine.load_model(path)


def test_data_parallel_must_be_a_bool():
    with pytest.raises(TypeError, match=r"data_parallel must be True or False; got str"):
        engine.Trainer(mlp(), data_parallel="yes")


def test_data_parallel_needs_init_first(monkeypatch):
    from engine import distributed
    monkeypatch.setattr(distributed, "_communicator", None)
    with pytest.raises(RuntimeError, match=r"data_parallel=True needs engine.distributed.init\(\) first"):
        engine.Trainer(mlp(), data_parallel=True)


def test_data_parallel_backend_must_match_init(monkeypatch):
    from engine import distributed

    class GpuJob:  # what init(backend="cupy") sets up, as far as the check reads it
        on_gpu, backend = True, "cupy"
    monkeypatch.setattr(distributed, "_communicator", GpuJob())
    with pytest.raises(ValueError, match=r"the model is on backend 'numpy', but engine.distributed.init\(\) set the "
                                         r"job up for 'cupy'; pass init\(backend='numpy'\)"):
        engine.Trainer(mlp(), data_parallel=True)


def test_distributed_needs_mpi4py(monkeypatch):
    from engine import distributed
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"engine.distributed needs mpi4py and an MPI library: pip install"):
        distributed._mpi()
