"""The fused kernels alone, as GB/s over this machine's measured copy bandwidth."""
import numpy as np

from engine import backend as backend_module
from engine import bench
from kernels import spec

from .common import fast_backends


class Kernels:
    params = fast_backends()
    param_names = ["backend"]
    unit = "fraction of copy bandwidth"
    timeout = 300

    def setup_cache(self):
        return {b: {r.workload: r.ratio for r in bench.kernel_rows(b, reps=5)} for b in fast_backends()}

    def track_adamw_16m(self, ratios, backend):
        return ratios[backend]["AdamW 16M"]

    def track_adamw_1m(self, ratios, backend):
        return ratios[backend]["AdamW 1M"]

    def track_dropout_mask(self, ratios, backend):
        return ratios[backend]["dropout mask 1024x4096"]


class SoftmaxCrossEntropy:
    params = ([(1024, 10), (1024, 1000), (256, 32000)], fast_backends())
    param_names = ["shape", "backend"]

    def setup(self, shape, backend):
        k = backend_module.module(backend)
        rng = np.random.default_rng(0)
        self.k = k
        self.logits = k.to_device(rng.standard_normal(shape).astype(np.float32), np.float32)
        self.targets = k.to_device(rng.integers(0, shape[1], shape[0]), np.int64)
        self.grad = k.empty(shape, np.float32)
        self.time_forward_backward(shape, backend)

    def time_forward_backward(self, shape, backend):
        self.k.softmax_cross_entropy(self.logits, self.targets, 0.0, spec.NO_IGNORE, spec.MEAN, None, self.grad)
