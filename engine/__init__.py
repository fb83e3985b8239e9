"""fusedense: train multilayer perceptrons on fused compiled kernels.

    import engine
    model = engine.MLP([64, 128, 10], activation="relu", seed=0)
    trainer = engine.Trainer(model, loss="cross_entropy", optimizer=engine.AdamW(lr=1e-3))
    trainer.fit(X, y, epochs=10, batch_size=32, validation_split=0.1)
"""
from . import activations, callbacks, data, ensemble, initializers, losses, metrics, optim, schedules, transfer, tuning
from .backend import (available_backends, get_backend, get_float32_matmul_precision, get_num_threads, set_backend,
                      set_float32_matmul_precision, set_num_threads)
from .callbacks import Callback, CSVLogger, EarlyStopping, History, LambdaCallback, ModelCheckpoint, ReduceLROnPlateau
from .ensemble import Ensemble, train_ensemble
from .errors import BackendUnavailable, NonFiniteError
from .losses import MSE, BinaryCrossEntropy, Huber, SoftmaxCrossEntropy
from .model import MLP, load_model
from .optim import SGD, SGDW, Adadelta, Adagrad, Adam, AdamW, NAdam, RMSprop
from .trainer import Trainer
from .transfer import pretrain_layerwise

__version__ = "0.1.0"

__all__ = [
    "MLP", "Trainer", "load_model", "available_backends", "set_backend", "get_backend", "set_num_threads",
    "get_num_threads",
    "set_float32_matmul_precision", "get_float32_matmul_precision",
    "BackendUnavailable", "NonFiniteError", "MSE", "Huber", "SoftmaxCrossEntropy", "BinaryCrossEntropy",
    "SGD", "SGDW", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "Callback", "EarlyStopping",
    "ModelCheckpoint", "CSVLogger", "LambdaCallback", "ReduceLROnPlateau",
    "History", "activations", "callbacks", "data", "initializers", "losses", "metrics", "optim", "schedules",
    "tuning", "Ensemble", "train_ensemble", "pretrain_layerwise", "ensemble", "transfer",
]
