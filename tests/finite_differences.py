"""Central finite differences for the float64 gradient checks of the reference."""
import numpy as np

EPS = 1e-6


def central_diff(f, x, eps=EPS):
    """Numerical gradient of the scalar f() w.r.t. the array x, perturbed in place.

    Truncation error ~eps^2 and rounding error ~1e-16/eps: about 1e-10 relative at 1e-6.
    """
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x)  # perturbations must reach the array f reads
    grad = np.empty(flat.shape, dtype=np.float64)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad.reshape(x.shape)
