"""kernels.cuda's real ops on the CPU: a NumPy stand-in for CuPy, kernels run by gpuocelot.

gpuocelot's PTX emulator (a shared library built apart from this project, named by the
environment variable FUSEDENSE_OCELOT) executes one kernel per call, ``ptx_run(ptx,
n_args, args, block xyz, grid xyz, dynamic shared bytes)``, on host memory: a pointer
argument is a host address. So, while :func:`emulation` is active:

* the ``cupy`` name of kernels.cuda's modules is :data:`FACADE`, whose arrays are NumPy
  arrays (:class:`ndarray`, aligned to 256 bytes as CuPy's allocations are) and whose GEMMs
  are NumPy's;
* ``compiler.Source.function`` returns a :class:`Kernel`: launching it compiles that one
  name expression with NVRTC as CuPy would (compiler.OPTIONS plus CuPy's ``-ftz=true``;
  and the warp shuffles' stand-in, below) and runs the PTX on the arrays given, with the
  ops' own grid, block, shared memory and arguments.

Each launch is checked as a device would check it, and more strictly: the grid and block
sizes, the dynamic shared memory, every argument's C type against the kernel's PTX
parameters (a Python int or float reaching a launch is refused: CuPy would pass it as a
64-bit value whatever the parameter), arrays on the host (NumPy arrays that are not
:class:`ndarray`) and non-contiguous arrays. Every array a kernel gets is staged into a
copy surrounded by guard bytes (0xFF: NaN as float, -1 as integer) at the same address
modulo 256; a kernel that writes outside its arrays fails the launch, one that reads
outside them reads NaN.

The emulator aborts its process on a PTX parse or run-time error, so tests run each case
in a forked child (:func:`run_isolated`). gpuocelot does not execute warp shuffles
(``shfl.sync`` does not parse, the legacy ``shfl`` runs as a no-op), so the kernels are
compiled with ``-DFD_EMULATE_WARP_SHUFFLES``: ``fd::shfl_xor`` of kernels/cuda/common.cuh,
the one function every warp shuffle of the kernels goes through, then exchanges through
shared memory, which is right only because gpuocelot steps all threads of a block through
each instruction together (never on a GPU). A kernel whose PTX still has an instruction
the emulator cannot run (a shuffle outside the seam, ``__syncthreads_count``) skips its
test rather than run wrong.
"""
import contextlib
import ctypes
import hashlib
import os
import pathlib
import re
import select
import signal
import sys
import time
import traceback
import types

import numpy as np
import pytest

import kernels.cuda as cuda_backend
from kernels.cuda import arrays, augment, compiler, decisions, dense, losses, norm, optim

LIBRARY_VARIABLE = "FUSEDENSE_OCELOT"
ALIGNMENT = 256  # bytes: CuPy's allocations are aligned to 256 (its memory pool's unit)
GUARD_BYTES = 16384  # around each staged array: a row or more of every test shape
GUARD_BYTE = 0xFF
ARCH = "compute_75"  # any architecture NVRTC emits works; gpuocelot reads the PTX as sm_35
CUPY_OPTIONS = ("-ftz=true",)  # what CuPy appends to every NVRTC compilation
# The shared-memory stand-in for warp shuffles, right under gpuocelot's lockstep execution
# only (kernels/cuda/common.cuh, fd::shfl_xor); CuPy never compiles with it.
EMULATOR_OPTIONS = ("-DFD_EMULATE_WARP_SHUFFLES",)
CASE_TIMEOUT_S = float(os.environ.get("FUSEDENSE_OCELOT_TIMEOUT", 300))

# PTX instructions gpuocelot cannot run, or runs wrong without a word: skipped, never run.
UNSUPPORTED = {"shfl.": "gpuocelot does not execute warp shuffles (one bypasses fd::shfl_xor)",
               "bar.red.": "gpuocelot does not execute __syncthreads_count/_and/_or",
               "__cudart_sin_cos_coeffs": "gpuocelot's parser misreads the coefficient table of "
                                          "CUDA's sin and cos (array size 128, initializer 120)"}

# Limits every CUDA device of compute capability 7.5 and later has.
MAX_BLOCK_THREADS = 1024
MAX_BLOCK_DIMS = (1024, 1024, 64)
MAX_GRID_DIMS = (2**31 - 1, 65535, 65535)
MAX_DYNAMIC_SHARED = 48 * 1024  # without the opt-in the kernels here never ask for

MODULES_USING_CUPY = (arrays, dense, optim, losses, decisions, norm, augment)


def library_path():
    """The emulator library named by FUSEDENSE_OCELOT, or None."""
    path = os.environ.get(LIBRARY_VARIABLE)
    return path if path and os.path.isfile(path) else None


# ------------------------------------------------------------------ the CuPy stand-in
class ndarray(np.ndarray):
    """A "device" array: NumPy memory, which the emulator reads and writes in place."""

    @property
    def data(self):  # CuPy's MemoryPointer: optim.py reads .data.ptr for alignment
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def get(self):
        return np.array(self)


def empty(shape, dtype=np.float64):
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape).view(ndarray)


def zeros(shape, dtype=np.float64):
    array = empty(shape, dtype)
    array.fill(0)
    return array


def asarray(a, dtype=None, order=None):
    """``a`` itself when it is already a C-contiguous device array of ``dtype``, else a copy
    (host arrays are sent to the "device")."""
    dtype = np.dtype(dtype) if dtype is not None else np.asarray(a).dtype
    if isinstance(a, ndarray) and a.dtype == dtype and a.flags.c_contiguous:
        return a
    copy = empty(np.shape(a), dtype)
    copy[...] = a
    return copy


def _device(a, what):
    if not isinstance(a, ndarray):
        raise TypeError(f"{what}: a {type(a).__name__} where CuPy takes only device arrays")
    return a


def ascontiguousarray(a, dtype=None):
    return asarray(_device(a, "cupy.ascontiguousarray"), dtype)


def asnumpy(a):
    return np.array(_device(a, "cupy.asnumpy")) if isinstance(a, ndarray) else np.asarray(a)


def matmul(a, b, out=None):
    for name, x in (("a", a), ("b", b), ("out", out)):
        if x is not None:
            _device(x, f"cupy.matmul {name}")
    return np.matmul(a, b, out=out)


FACADE = types.SimpleNamespace(
    ndarray=ndarray, empty=empty, zeros=zeros, asarray=asarray,
    ascontiguousarray=ascontiguousarray, asnumpy=asnumpy, matmul=matmul,
    may_share_memory=np.may_share_memory,
    cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0),
                               get_device_id=lambda: 0))


# ------------------------------------------------------------------ compilation
_ptx_cache = {}  # (source path, name expression) -> (ptx, lowered name); per process
cache_dir = None  # a folder where compiled PTX outlives the forked test processes


def _headers_digest():
    """A digest of every header the sources may include."""
    digest = hashlib.sha256()
    for path in sorted(compiler.HERE.glob("*.cuh")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compile_ptx(source, name_expression):
    """(PTX readable by gpuocelot, lowered name) of one name expression of ``source``."""
    from cupy.cuda import nvrtc

    found = _ptx_cache.get((source.path, name_expression))
    if found is not None:
        return found
    options = [*compiler.OPTIONS, *CUPY_OPTIONS, *EMULATOR_OPTIONS,
               f"--gpu-architecture={ARCH}"]
    code = source.code
    key = hashlib.sha256(repr((_headers_digest(), code, name_expression, options)).encode())
    key = key.hexdigest()
    cached = pathlib.Path(cache_dir) / f"{key}.ptx" if cache_dir else None
    if cached is not None and cached.exists():
        name, ptx = cached.read_text().split("\n", 1)
    else:
        program = nvrtc.createProgram(code, source.path.name, [], [])
        try:
            nvrtc.addNameExpression(program, name_expression)
            try:
                nvrtc.compileProgram(program, options)
            except nvrtc.NVRTCError:
                raise RuntimeError(f"NVRTC: {name_expression} of {source.path.name}:\n"
                                   f"{nvrtc.getProgramLog(program)}") from None
            ptx = nvrtc.getPTX(program)
            ptx = (ptx.decode() if isinstance(ptx, bytes) else ptx).rstrip("\0")
            name = nvrtc.getLoweredName(program, name_expression)
        finally:
            nvrtc.destroyProgram(program)
        # gpuocelot's PTX parser knows targets up to sm_35; the instructions are the same.
        ptx = re.sub(r"\.target\s+sm_\d+a?", ".target sm_35", ptx)
        ptx = only_entry(ptx, name)
        if cached is not None:
            partial = cached.with_suffix(f".{os.getpid()}")
            partial.write_text(f"{name}\n{ptx}")
            os.replace(partial, cached)
    found = _ptx_cache[(source.path, name_expression)] = (ptx, name)
    return found


def only_entry(ptx, name):
    """``ptx`` without the kernels other than ``name``. NVRTC emits every kernel that is not
    a template (count_targets, guard_update, ...) whatever the name expression, and
    gpuocelot's ptx_run runs whichever kernel of the module its hash map gives first, with
    the arguments meant for ``name``; CuPy would launch ``name`` by name."""
    kept, position = [], 0
    for entry in re.finditer(r"^[ \t]*(?:\.\w+[ \t]+)*\.entry[ \t]+([\w$]+)", ptx, re.M):
        if entry.group(1) == name:
            continue
        depth, end = 0, ptx.index("{", entry.end())
        for brace in re.finditer(r"[{}]", ptx[end:]):
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                break
        kept.append(ptx[position:entry.start()])
        position = end + brace.end()
    kept.append(ptx[position:])
    ptx = "".join(kept)
    if len(re.findall(r"\.entry[ \t]+[\w$]+", ptx)) != 1:
        raise RuntimeError(f"not one .entry {name} left in the PTX")
    return ptx


def entry_parameters(ptx, name):
    """The kernel's PTX parameters as (kind letter, bits): ("u", 64), ("f", 32), ..."""
    match = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", ptx, re.S)
    if match is None:
        raise RuntimeError(f"no .entry {name} in the PTX")
    return [(kind, int(bits)) for kind, bits in
            re.findall(r"\.param\s+\.([usbf])(\d+)\s+[\w$]+", match.group(1))]


# ------------------------------------------------------------------ launching
_library = None


def _emulator():
    global _library
    if _library is None:
        path = library_path()
        if path is None:
            raise RuntimeError(f"{LIBRARY_VARIABLE} does not name the gpuocelot library")
        _library = ctypes.CDLL(path)
        _library.ptx_run.argtypes = ([ctypes.c_char_p, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_void_p)] + [ctypes.c_int] * 7)
        _library.ptx_run.restype = None
    return _library


def _dims(value, what, limits):
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{what} {value!r}: 1 to 3 dimensions")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(not 1 <= d <= limit for d, limit in zip(dims, limits)):
        raise ValueError(f"{what} {dims}: each dimension in [1, limit {limits}] "
                         "(a 0-sized launch is a CUDA error)")
    return dims


def _argument_bits(index, value, parameter):
    """The 64-bit slot of argument ``index``: a pointer, or the value's bit pattern, after
    checking that its type is the PTX parameter's (kind, bits)."""
    kind, bits = parameter
    where = f"argument {index} (PTX .{kind}{bits})"
    if value is None or isinstance(value, ndarray):
        if (kind, bits) not in (("u", 64), ("b", 64), ("s", 64)):
            raise TypeError(f"{where}: an array or None where the kernel takes a scalar")
        return 0 if value is None else value.data.ptr
    if isinstance(value, np.ndarray):
        raise TypeError(f"{where}: a host NumPy array reaches a kernel")
    if not isinstance(value, (np.integer, np.floating)):  # np.float64 is a float: first
        if isinstance(value, (bool, int, float)):
            raise TypeError(f"{where}: the Python {type(value).__name__} {value!r} reaches a "
                            "launch; CuPy passes it as a 64-bit value whatever the parameter's type")
        raise TypeError(f"{where}: unsupported argument {value!r}")
    if (kind == "f") != isinstance(value, np.floating) or value.dtype.itemsize * 8 != bits:
        raise TypeError(f"{where}: a {value.dtype} scalar ({value!r}) for a .{kind}{bits} "
                        "parameter")
    return int.from_bytes(value.tobytes(), "little")


class _Staging:
    """Copies of a launch's arrays between guard bytes: arrays sharing memory share one
    copy (the kernel sees their aliasing), each copy at its array's address mod ALIGNMENT."""

    def __init__(self, arrays):
        spans = sorted({(a.data.ptr, a.data.ptr + a.nbytes) for a in arrays})
        self.regions = []  # [start, end, copy buffer, offset of start in the copy]
        for start, end in spans:
            if self.regions and start < self.regions[-1][1]:
                self.regions[-1][1] = max(self.regions[-1][1], end)
            else:
                self.regions.append([start, end])
        for region in self.regions:
            start, end = region
            buffer = np.full(GUARD_BYTES + (end - start) + GUARD_BYTES + ALIGNMENT, GUARD_BYTE,
                             np.uint8)
            offset = GUARD_BYTES + (start - buffer.ctypes.data - GUARD_BYTES) % ALIGNMENT
            ctypes.memmove(buffer.ctypes.data + offset, start, end - start)
            region += [buffer, offset]

    def pointer(self, array):
        ptr = array.data.ptr
        for start, end, buffer, offset in self.regions:
            if start <= ptr and ptr + array.nbytes <= end:
                return buffer.ctypes.data + offset + (ptr - start)
        raise AssertionError("unstaged array")

    def finish(self, kernel):
        """Copy the results back; AssertionError when a guard byte was overwritten."""
        for start, end, buffer, offset in self.regions:
            size = end - start
            before = np.flatnonzero(buffer[:offset] != GUARD_BYTE)
            after = np.flatnonzero(buffer[offset + size:] != GUARD_BYTE)
            if before.size or after.size:
                raise AssertionError(
                    f"{kernel} wrote outside the array of {size} bytes at 0x{start:x}: "
                    f"{before.size} bytes before it (nearest {offset - before.max() if before.size else '-'} "
                    f"bytes away), {after.size} after it (nearest "
                    f"{after.min() + 1 if after.size else '-'} bytes away)")
            ctypes.memmove(start, buffer.ctypes.data + offset, size)


class Kernel:
    """A name expression of a Source, launched as ``cupy.RawKernel`` is:
    ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, source, name_expression):
        self.source, self.name_expression = source, name_expression

    def __call__(self, grid, block, args, shared_mem=0):
        grid = _dims(grid, "grid", MAX_GRID_DIMS)
        block = _dims(block, "block", MAX_BLOCK_DIMS)
        if block[0] * block[1] * block[2] > MAX_BLOCK_THREADS:
            raise ValueError(f"block {block}: more than {MAX_BLOCK_THREADS} threads")
        if not isinstance(shared_mem, (int, np.integer)) or not 0 <= shared_mem <= MAX_DYNAMIC_SHARED:
            raise ValueError(f"shared_mem {shared_mem!r}: not in [0, {MAX_DYNAMIC_SHARED}]")
        ptx, name = compile_ptx(self.source, self.name_expression)
        for instruction, reason in UNSUPPORTED.items():
            if instruction in ptx:
                pytest.skip(f"{reason} ({self.name_expression} of {self.source.path.name} "
                            f"has {instruction}*)")
        parameters = entry_parameters(ptx, name)
        args = tuple(args)
        if len(args) != len(parameters):
            raise TypeError(f"{self.name_expression}: {len(args)} arguments for "
                            f"{len(parameters)} parameters")
        device_arrays = [a for a in args if isinstance(a, ndarray)]
        for array in device_arrays:
            if not array.flags.c_contiguous:
                raise ValueError(f"{self.name_expression}: a non-contiguous array "
                                 f"{array.shape} {array.strides} reaches the kernel")
        bits = [_argument_bits(i, a, p) for i, (a, p) in enumerate(zip(args, parameters))]
        staging = _Staging(device_arrays)
        for i, value in enumerate(args):
            if isinstance(value, ndarray):
                bits[i] = staging.pointer(value)
        slots = (ctypes.c_void_p * len(bits))(*bits)
        _emulator().ptx_run(ptx.encode(), len(bits), slots, *block, *grid, int(shared_mem))
        staging.finish(self.name_expression)


def _function(source, template, dtype=None):
    """compiler.Source.function on the emulator."""
    name = template if dtype is None else f"{template}<{compiler.C_TYPES[np.dtype(dtype)]}>"
    if name not in source.name_expressions:
        raise KeyError(f"{name} is not among the name expressions of {source.path.name}, "
                       "so CuPy's RawModule cannot give it")
    return Kernel(source, name)


@contextlib.contextmanager
def emulation():
    """kernels.cuda on the NumPy stand-in and the emulator, for the ``with`` block."""
    with pytest.MonkeyPatch.context() as patch:
        for module in MODULES_USING_CUPY:
            patch.setattr(module, "cupy", FACADE)
        patch.setattr(compiler.Source, "function", _function)
        patch.setattr(dense, "matmul", matmul)  # dense's GEMMs, which call cuBLAS itself
        # Scratch buffers cached per device would otherwise outlive the stand-in's arrays.
        for module, name in ((dense, "_scratch"), (optim, "_partials"), (losses, "_SCRATCH")):
            patch.setattr(module, name, {})
        yield cuda_backend


# ------------------------------------------------------------------ isolation
def run_isolated(function, *args, **kwargs):
    """``function(*args, **kwargs)`` under :func:`emulation` in a forked child process; its
    failure (or skip) is raised here, and a crash of the emulator becomes a failure."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        os.close(read)
        code = 0
        try:
            with emulation():
                function(*args, **kwargs)
            report = ""
        except pytest.skip.Exception as skip:
            code, report = 2, str(skip.msg)
        except BaseException:
            code, report = 1, traceback.format_exc()
        try:
            data = report.encode()
            while data:
                data = data[os.write(write, data):]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    deadline = time.monotonic() + CASE_TIMEOUT_S
    chunks = []
    with os.fdopen(read, "rb") as pipe:  # drained while waiting: a long report fills it
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the emulated case ran past {CASE_TIMEOUT_S:.0f} s "
                                     "(a kernel that never ends?); killed")
            if select.select([pipe], [], [], 0.05)[0]:
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:  # the child has exited or closed the pipe
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    report = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        raise AssertionError(
            f"the emulator process died of {signal.Signals(os.WTERMSIG(status)).name}: a PTX "
            "parse or run-time error of gpuocelot (its message is in the captured output), "
            "or a kernel access outside all memory")
    code = os.WEXITSTATUS(status)
    if code == 2:
        pytest.skip(report)
    if code:
        raise AssertionError(f"in the emulated process:\n{report}")
