"""The NumPy reference backend: every op of :mod:`kernels.spec`, written for clarity.

It is the oracle every other backend is tested against, not a fast path.
"""
from .arrays import all_finite, capture, copy_into, empty, take_rows, to_device, to_host, zeros
from .augment import gaussian_noise, mix_class_targets, mix_rows
from .constraints import max_norm
from .decisions import guard_update, metric_sums
from .dense import apply_output, dense_backward, dense_forward, dropout_mask, matmul
from .losses import binary_cross_entropy, huber, mse, softmax_cross_entropy
from .norm import norm_backward, norm_forward
from .optim import adadelta, adagrad, adam, grad_sq_norms, nadam, rmsprop, sgd

name = "numpy"
gemm_library = "NumPy"
