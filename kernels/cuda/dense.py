"""Dense forward/backward, dropout masks and output functions on CUDA (see kernels.spec).

The GEMMs are cuBLAS calls (:mod:`kernels.cuda.gemm`, which a CUDA graph can record) into
the given output arrays, at the precision :mod:`kernels.cuda.precision` selects;
everything elementwise around them is one kernel of ``dense.cu``: bias, activation and
dropout after the forward GEMM; dropout, activation derivative and the column sums ``db``
(and prelu's ``dslope``) before the backward GEMMs (for a frozen layer,
``backward_elements``: dZ alone, then only the GEMM of ``dX``). The dropout mask is never
stored: both passes hash element indices again (``rng.cuh``, the hash of
:mod:`kernels.rng`); the forward epilogue also sets the ``alive`` flags of the diagnostics
where asked. The forward epilogue and the dropout mask move 16 bytes per access (float4 /
double2) where rows are a whole number of such vectors and the arrays start on 16 bytes
(the engine's, from CuPy's pool, do), else one element; both hash each element's own
index, so masks are the same either way.

The column sums are deterministic: rows are cut into chunks whose size depends on the
batch size only (:func:`_row_chunks`), each chunk summed in a fixed order, then the
chunks in order; so results are bitwise equal run to run, whatever the device's size.
A batch of at most ``MIN_CHUNK_ROWS`` rows is one kernel; a larger one adds a second,
tiny kernel over a scratch buffer kept per shape (no allocation in the steady state, as a
CUDA graph capture wants; the scratch assumes that the ops of one device run on one
stream at a time).

Layouts: the GEMM takes strided and transposed operands itself (a transposed C array
reaches cuBLAS as a transposed operand without a copy, other strides are copied) and
computes into a temporary when ``out`` is not C-contiguous. The kernels need C-contiguous
arrays: inputs that are not are copied (:func:`cupy.ascontiguousarray`), outputs that are
not are computed into a temporary and copied back. The engine's arrays are contiguous.
"""
import cupy
import numpy as np

from .. import rng, spec
from .compiler import C_TYPES, VECTOR_BYTES, Source, instances, scalar
from .gemm import matmul

# One 16-byte access (float4 / double2) per array and group of elements, where the
# elementwise kernels can take it.


def _widths(dtype):
    """The elements per group of the kernels templated on one: 1, and a 16-byte vector's."""
    return 1, VECTOR_BYTES // dtype.itemsize


def _grouped_instances(template):
    """The name expressions ``template<T, V>`` for float and double and V of _widths."""
    return tuple(f"{template}<{c_type}, {width}>" for dtype, c_type in C_TYPES.items()
                 for width in _widths(dtype))


_SOURCE = Source("dense.cu", [
    *_grouped_instances("forward_epilogue"),
    *instances("backward_columns"),
    *instances("finish_column_sums"),
    *instances("backward_elements"),
    *_grouped_instances("dropout_mask"),
    *instances("sigmoid_elements"),
    *instances("softmax_rows"),
])

ACTIVATIONS = frozenset((spec.IDENTITY, spec.RELU, spec.LEAKY_RELU, spec.ELU, spec.SELU,
                         spec.GELU, spec.GELU_TANH, spec.SILU, spec.SOFTPLUS, spec.TANH,
                         spec.SIGMOID, spec.PRELU))

# Elementwise kernels: blocks of BLOCK threads, at most MAX_BLOCKS of them (about four
# waves of a large GPU), each thread looping over the elements a grid apart.
BLOCK = 256
MAX_BLOCKS = 4096

# backward_columns: a block is COLUMN_TILE columns (one warp along a row, so reads are
# coalesced) by ROW_LANES threads per column (a power of two, for the tree sum).
COLUMN_TILE = 32
ROW_LANES = 8
# Chunks of rows of the backward column sums: at least MIN_CHUNK_ROWS rows each (so a
# batch up to that size needs no second pass), and at most MAX_CHUNKS of them (so the
# second pass adds few terms per column whatever the batch size).
MIN_CHUNK_ROWS = 64
MAX_CHUNKS = 64

# softmax_rows: threads per row, a power of two from a warp up to this.
MAX_ROW_THREADS = 256
MAX_ROW_BLOCKS = 65536

_scratch = {}  # (device id, dtype, elements) -> partial column sums of backward_columns


def _ceil_div(a, b):
    return -(-a // b)


def _float_dtype(array, name):
    """``array``'s dtype, or TypeError naming the argument when no kernel takes it."""
    dtype = array.dtype
    if dtype not in C_TYPES:
        raise TypeError(f"{name}: dtype {dtype} is not supported (float32 or float64)")
    return dtype


def _same_dtype(array, dtype, name):
    """TypeError naming ``array`` when a kernel would write it as another dtype."""
    if array.dtype != dtype:
        raise TypeError(f"{name}: dtype {array.dtype} differs from the layer's {dtype}")


def _activation(act):
    if act not in ACTIVATIONS:
        raise ValueError(f"act: unknown activation code {act!r}")
    return int(act)


_NO_DROPOUT = {dtype: (np.int32(0), np.uint32(0), np.uint32(0), np.uint32(0), dtype.type(1.0))
               for dtype in C_TYPES}


def mask_args(dropout_p, key, dtype):
    """(dropout, key_lo, key_hi, threshold, scale) as the kernels' C types
    (int, 3 x unsigned int, T).

    ``scale = 1 / (1 - p)`` is rounded in ``dtype`` as the reference divides its mask
    there, so masks are bitwise the reference's; ``dropout`` is 0 when no element can
    drop and the scale is 1, sparing the hashing (a p > 0 so small that nothing drops
    still scales by 1 / (1 - p)). With p = 0 the key is unused and may be None.
    """
    dtype = np.dtype(dtype)
    if dropout_p == 0:
        return _NO_DROPOUT[dtype]
    p = float(dropout_p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_p: {dropout_p!r} is not in [0, 1)")
    if key is None:
        raise ValueError("key: dropout with p > 0 needs a key (kernels.rng.dropout_key)")
    key_lo, key_hi = rng.split_key(int(key))
    threshold = rng.keep_threshold(p)
    scale = dtype.type(1.0) / dtype.type(1.0 - p)
    return (np.int32(threshold > 0 or scale != 1), np.uint32(key_lo), np.uint32(key_hi),
            np.uint32(threshold), scale)


def _elementwise_grid(total):
    return (min(_ceil_div(total, BLOCK), MAX_BLOCKS),)


def _group_width(dtype, length, arrays):
    """Elements per thread and step of a grouped kernel: a 16-byte vector's when ``length``
    (the row width where a group must lie in one row, else the size) is a multiple of it
    and every array starts on 16 bytes, else 1."""
    width = _widths(dtype)[1]
    if length % width or any(a.data.ptr % VECTOR_BYTES for a in arrays):
        return 1
    return width


def _grouped(template, dtype, width):
    return _SOURCE.function(f"{template}<{C_TYPES[dtype]}, {width}>")


def _writable(array):
    """``array`` when a kernel can write it, else a C-contiguous temporary of its shape."""
    return array if array.flags.c_contiguous else cupy.empty(array.shape, array.dtype)


def _write_back(array, target):
    if target is not array:
        array[...] = target


def _alpha(act_param, dtype):
    """The leaky slope / elu alpha as T (unused by other activations, which may pass None)."""
    return scalar(0.0 if act_param is None else act_param, dtype)


def _alive_flags(alive, m):
    """dense_forward's ``alive`` as the kernel writes it: a C-contiguous uint8 device array
    of m flags (a temporary for one that is not contiguous, copied back after), or None."""
    if alive is None:
        return None
    if not isinstance(alive, cupy.ndarray) or alive.dtype != np.uint8:
        raise TypeError(f"alive must be a uint8 CuPy array; got {type(alive).__name__} "
                        f"{getattr(alive, 'dtype', '')}")
    if alive.shape != (m,):
        raise ValueError(f"alive must have shape ({m},), a flag per unit; got {alive.shape}")
    return alive if alive.flags.c_contiguous else cupy.ascontiguousarray(alive)


def dense_forward(X, W, b, act, act_param, slope, dropout_p, key, Z, Y, alive=None):
    act = _activation(act)
    dtype = _float_dtype(Z, "Z")
    n, m = Z.shape
    if b.shape != (m,):
        raise ValueError(f"b: shape {b.shape} does not match Z's {m} columns")
    if act == spec.PRELU and slope is None:
        raise ValueError("slope: prelu needs its per-unit slopes")
    _same_dtype(Y, dtype, "Y")
    alive_c = _alive_flags(alive, m)
    mask = mask_args(dropout_p, key, dtype)
    Zc = _writable(Z)
    Yc = Zc if Y is Z else _writable(Y)
    matmul(X, W, Zc)
    if n and m:
        b = cupy.ascontiguousarray(b, dtype)
        slope = cupy.ascontiguousarray(slope, dtype) if act == spec.PRELU else b  # b: unread
        width = _group_width(dtype, m, (Zc, Yc, b, slope))
        _grouped("forward_epilogue", dtype, width)(
            _elementwise_grid(n * m // width), (BLOCK,),
            (Zc, Yc, b, slope, np.int64(n * m), np.int64(m), np.int32(act),
             _alpha(act_param, dtype), *mask, alive_c))
    _write_back(Z, Zc)
    if Y is not Z:
        _write_back(Y, Yc)
    if alive is not None:
        _write_back(alive, alive_c)


def _row_chunks(n):
    """(rows per chunk, chunks) of the backward column sums of n > 0 rows: a function of n
    only, so that the order of every sum is too."""
    rows = max(MIN_CHUNK_ROWS, _ceil_div(n, MAX_CHUNKS))
    rows = _ceil_div(rows, ROW_LANES) * ROW_LANES
    return rows, _ceil_div(n, rows)


def _partials(elements, dtype):
    """A scratch buffer of ``elements`` partial sums, one per (device, dtype, size)."""
    key = (cupy.cuda.runtime.getDevice(), dtype, elements)
    buffer = _scratch.get(key)
    if buffer is None:
        buffer = _scratch[key] = cupy.empty(elements, dtype)
    return buffer


def _backward_columns(dY, Z, dZ, slope, act, alpha, mask, db, dslope):
    """dZ and the column sums db, dslope of C-contiguous arrays (n, m > 0): one kernel, and
    a second over the chunks' partial sums when the rows take several chunks."""
    dtype = dZ.dtype
    n, m = dZ.shape
    chunk_rows, chunks = _row_chunks(n)
    if chunks == 1:
        sums, slope_sums = db, dslope
    else:
        partials = _partials(2 * chunks * m, dtype)
        sums, slope_sums = partials[:chunks * m], partials[chunks * m:]
    _SOURCE.function("backward_columns", dtype)(
        (_ceil_div(m, COLUMN_TILE), chunks), (COLUMN_TILE, ROW_LANES),
        (dY, Z, dZ, slope, np.int64(n), np.int64(m), np.int64(chunk_rows), np.int32(act), alpha,
         *mask, sums, slope_sums),
        shared_mem=2 * COLUMN_TILE * ROW_LANES * dtype.itemsize)
    if chunks > 1:
        _SOURCE.function("finish_column_sums", dtype)(
            (_ceil_div(m, BLOCK),), (BLOCK,),
            (partials, np.int64(chunks), np.int64(m), np.int32(act == spec.PRELU), db, dslope))


def _frozen_backward(dY, Z, dZ, slope, act, act_param, dropout_p, key, dX, W):
    """dense_backward of a frozen layer: dZ by backward_elements, then dX = dZ @ W.T when
    asked for; neither column sums nor dW."""
    dtype = _float_dtype(dZ, "dZ")
    n, m = dZ.shape
    prelu = act == spec.PRELU
    if prelu and slope is None:
        raise ValueError("slope: prelu needs its slopes")
    mask = mask_args(dropout_p, key, dtype)
    dY_c = cupy.ascontiguousarray(dY, dtype)  # read before any write, as in dense_backward
    Z_c = cupy.ascontiguousarray(Z, dtype)
    dZ_c = _writable(dZ)
    if n and m:
        slope_c = cupy.ascontiguousarray(slope, dtype) if prelu else dZ_c  # never read
        _SOURCE.function("backward_elements", dtype)(
            _elementwise_grid(n * m), (BLOCK,),
            (dY_c, Z_c, dZ_c, slope_c, np.int64(n * m), np.int64(m), np.int32(act),
             _alpha(act_param, dtype), *mask))
    _write_back(dZ, dZ_c)
    if dX is not None:
        matmul(dZ_c, W.T, dX)


def dense_backward(dY, X, W, Z, act, act_param, slope, dropout_p, key, dZ, dW, db, dslope, dX):
    act = _activation(act)
    if spec.frozen_backward(dW, db, dslope):
        _frozen_backward(dY, Z, dZ, slope, act, act_param, dropout_p, key, dX, W)
        return
    dtype = _float_dtype(dZ, "dZ")
    n, m = dZ.shape
    prelu = act == spec.PRELU
    if prelu and (slope is None or dslope is None):
        raise ValueError("slope, dslope: prelu needs its slopes and an array for their gradient")
    if db.shape != (m,):
        raise ValueError(f"db: shape {db.shape} does not match dZ's {m} columns")
    _same_dtype(db, dtype, "db")
    if prelu:
        _same_dtype(dslope, dtype, "dslope")
    mask = mask_args(dropout_p, key, dtype)
    # Read before any write: dZ may be dY or Z (then the same array, contiguous or a copy).
    dY_c = cupy.ascontiguousarray(dY, dtype)
    Z_c = cupy.ascontiguousarray(Z, dtype)
    dZ_c = _writable(dZ)
    db_c = _writable(db)
    dslope_c = _writable(dslope) if prelu else db_c  # db_c: a stand-in never written
    if n and m:
        slope_c = cupy.ascontiguousarray(slope, dtype) if prelu else db_c  # never read
        _backward_columns(dY_c, Z_c, dZ_c, slope_c, act, _alpha(act_param, dtype), mask, db_c,
                          dslope_c)
    else:  # sums over no rows
        db_c.fill(0)
        dslope_c.fill(0)
    _write_back(dZ, dZ_c)
    _write_back(db, db_c)
    if prelu:
        _write_back(dslope, dslope_c)
    matmul(X.T, dZ_c, dW)
    if dX is not None:
        matmul(dZ_c, W.T, dX)


def dropout_mask(dropout_p, key, out):
    dtype = _float_dtype(out, "out")
    _, key_lo, key_hi, threshold, scale = mask_args(dropout_p, key, dtype)
    target = _writable(out)
    if target.size:
        width = _group_width(dtype, target.size, (target,))
        _grouped("dropout_mask", dtype, width)(
            _elementwise_grid(target.size // width), (BLOCK,),
            (target, np.int64(target.size), key_lo, key_hi, threshold, scale))
    _write_back(out, target)


def _row_threads(k):
    """Threads per softmax row: a power of two, at least a warp, about one per element."""
    threads = 32
    while threads < k and threads < MAX_ROW_THREADS:
        threads *= 2
    return threads


def apply_output(kind, X, out):
    if X.shape != out.shape:
        raise ValueError(f"out: shape {out.shape} differs from X's {X.shape}")
    if kind == spec.OUTPUT_NONE:
        if out is not X:
            out[...] = X
        return
    if kind not in (spec.OUTPUT_SIGMOID, spec.OUTPUT_SOFTMAX):
        raise ValueError(f"kind: unknown output code {kind!r}")
    dtype = _float_dtype(out, "out")
    X_c = cupy.ascontiguousarray(X, dtype)
    target = _writable(out)
    if kind == spec.OUTPUT_SIGMOID:
        if target.size:
            _SOURCE.function("sigmoid_elements", dtype)(
                _elementwise_grid(target.size), (BLOCK,), (X_c, target, np.int64(target.size)))
    else:
        if X.ndim != 2:
            raise ValueError(f"X: softmax takes rows (N, K), got shape {X.shape}")
        n, k = X.shape
        if n and k:
            threads = _row_threads(k)
            _SOURCE.function("softmax_rows", dtype)(
                (min(n, MAX_ROW_BLOCKS),), (threads,), (X_c, target, np.int64(n), np.int64(k)),
                shared_mem=threads * dtype.itemsize)
    _write_back(out, target)
