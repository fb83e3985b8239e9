"""The NVRTC tier: every CUDA source of kernels/cuda compiles, warning-free, on machines
without a GPU.

Each ``.cu`` file is compiled through CuPy's NVRTC bindings, as ``cupy.RawModule`` would
at the first launch, with the options and name expressions of its
:class:`kernels.cuda.compiler.Source`, for the oldest and the newest architectures the
backend targets. Every name expression must resolve to a lowered name, so every template
instance that can be launched has been compiled. Tests that need CuPy or libnvrtc skip,
saying which, where they cannot be loaded.
"""
import pathlib
import re

import pytest

CUDA_DIR = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "cuda"
CU_FILES = sorted(path.name for path in CUDA_DIR.glob("*.cu"))
ARCHS = ["compute_75", "compute_80", "compute_90"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def import_cupy():
    try:
        import cupy
    except ImportError as error:
        pytest.skip(f"CuPy cannot be imported here ({error}); pip install 'fusedense[cuda12]'")
    return cupy


@pytest.fixture(scope="module")
def nvrtc():
    """CuPy's NVRTC bindings, with libnvrtc loaded."""
    import_cupy()
    from cupy.cuda import nvrtc

    try:
        nvrtc.getVersion()
    except Exception as error:  # CuPy raises its own error types when libnvrtc is missing
        pytest.skip(f"libnvrtc cannot be loaded here ({error}); pip install nvidia-cuda-nvrtc-cu12")
    return nvrtc


@pytest.fixture(scope="module")
def compiler():
    """kernels.cuda.compiler once the package is imported (importing registers every Source)."""
    import_cupy()
    import kernels.cuda  # noqa: F401
    from kernels.cuda import compiler

    return compiler


def test_every_cu_file_is_a_source(compiler):
    """No .cu file of the folder is left uncompiled, none registered twice or elsewhere."""
    registered = [source.path for source in compiler.SOURCES]
    assert CU_FILES, f"no .cu file in {CUDA_DIR}"
    assert len(registered) == len(set(registered)), registered
    assert sorted(registered) == [CUDA_DIR / name for name in CU_FILES]


def test_every_header_is_included_by_a_cu_file():
    """Every .cuh is reached from some .cu, directly or through another header."""
    reached, pending = set(), list(CU_FILES)
    while pending:
        for name in INCLUDE.findall((CUDA_DIR / pending.pop()).read_text()):
            if name not in reached and (CUDA_DIR / name).exists():
                reached.add(name)
                pending.append(name)
    headers = {path.name for path in CUDA_DIR.glob("*.cuh")}
    assert headers <= reached, f"included by no .cu file: {sorted(headers - reached)}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", CU_FILES)
def test_source_compiles_without_warnings(nvrtc, compiler, filename, arch):
    sources = {source.path.name: source for source in compiler.SOURCES}
    assert filename in sources, f"{filename} is not registered as a Source"
    source = sources[filename]
    assert source.name_expressions, f"{filename} has no name expressions"
    options = list(compiler.OPTIONS) + [f"--gpu-architecture={arch}"]
    program = nvrtc.createProgram(source.code, filename, (), ())
    try:
        for expression in source.name_expressions:
            nvrtc.addNameExpression(program, expression)
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError as error:
            pytest.fail(f"{filename} ({arch}): {error}\n{nvrtc.getProgramLog(program)}")
        log = nvrtc.getProgramLog(program).strip("\0 \n")
        assert not log, f"{filename} ({arch}) compiled with this log:\n{log}"
        for expression in source.name_expressions:
            assert nvrtc.getLoweredName(program, expression), expression
    finally:
        nvrtc.destroyProgram(program)


def test_imports_without_a_device_and_names_the_missing_piece():
    """Importing kernels.cuda needs CuPy only; without a device, unavailable_reason says
    which piece is missing, found here independently through CuPy's runtime."""
    cupy = import_cupy()
    import kernels.cuda

    runtime = cupy.cuda.runtime
    try:
        missing = "driver" if runtime.driverGetVersion() == 0 else None
    except Exception:  # CuPy's CUDARuntimeError where no driver library loads
        missing = "driver"
    if missing is None:
        try:
            missing = "device" if runtime.getDeviceCount() == 0 else None
        except Exception:
            missing = "device"
    if missing is None:
        pytest.skip("a CUDA device answers here: this checks a machine without one")
    reason = kernels.cuda.unavailable_reason()
    assert isinstance(reason, str) and missing in reason, (missing, reason)
