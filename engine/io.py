"""The file codec of models and checkpoints: .npz files, metadata as JSON, arrays as arrays.

The model and the trainer hand this module what they save (:func:`write`) and take back
what a file holds (:func:`read`), checking it against themselves with the helpers here;
it knows neither of them. A file is written under a temporary name and renamed into place,
so its path holds the old file or the new one, never a partial one. Reading never
unpickles: a file this module did not write is a ValueError naming it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import struct
import zipfile
import zlib

import numpy as np

from .validation import check_finite

FORMAT_VERSION = 1  # what write() writes; read() refuses newer ones


def write(path, kind, meta, arrays):
    """Write ``meta`` (JSON-able) and ``arrays`` (name -> NumPy array) to ``path`` as a
    fusedense ``kind`` ("model" or "checkpoint") file of this format version, atomically."""
    meta = {"format": f"fusedense-{kind}", "version": FORMAT_VERSION, **meta}
    path = os.fspath(path)
    # In the target's directory: os.replace is atomic only within one file system.
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL never reuses someone else's file; 0o666 leaves the permissions to the umask,
        # as open(path, "wb") would.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        # Through a file object, so np.savez writes to the name given (no ".npz" appended).
        with open(os.open(temporary, flags, 0o666), "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file at path
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def bad_file(path, kind, why):
    return ValueError(f"{os.fspath(path)} is not a fusedense {kind} file: {why}")


# What a corrupt or truncated archive raises while being read (never a reason to unpickle):
# zipfile's own errors, struct's for a mangled record, OSError for a seek to a corrupt offset, NotImplementedError for an unknown
# compression method, RuntimeError for an entry marked encrypted.
_UNREADABLE = (ValueError, KeyError, EOFError, OverflowError, zipfile.BadZipFile, zlib.error, struct.error,
               NotImplementedError, RuntimeError, RecursionError, OSError)
# The OSErrors that are about the path, not the file's content: the caller's to see.
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _entry_header(archive, info):
    """(shape, dtype, bytes of data stored) of the .npy entry ``info`` of an .npz archive."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        header_size = f.tell()
    return shape, dtype, info.file_size - header_size


def _check_header(name, header, foreign):
    """Refuse an entry that holds objects or promises more data than it stores (a corrupt
    shape must not become a huge allocation)."""
    shape, dtype, stored = header
    if dtype.hasobject:
        raise foreign(f"its entry {name!r} holds Python objects, which a fusedense file never does")
    if math.prod(shape) * dtype.itemsize > stored:
        raise foreign(f"its entry {name!r} is truncated or its header is corrupt (shape {shape}, dtype {dtype})")


def read(path, kind):
    """(meta, arrays) of a file :func:`write` wrote as a fusedense ``kind`` ("model" or
    "checkpoint") of a format version this code reads; anything else is a ValueError
    naming ``path``: a foreign, truncated or corrupt file, or one of a newer version."""
    def foreign(why):
        return bad_file(path, kind, why)

    try:
        data = np.load(path, allow_pickle=False)
    except _PATH_ERRORS:
        raise
    except _UNREADABLE:
        # NumPy's own message for a file it cannot parse suggests allow_pickle=True, which a
        # model file never needs: from None keeps it out of the traceback.
        raise foreign("it is not an .npz archive") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise foreign("it holds a single array (.npy), not an .npz archive")
    with data:
        if "meta" not in data.files:
            raise foreign(f"its archive has no 'meta' entry (entries: {', '.join(data.files) or 'none'})")
        try:
            headers = {info.filename: _entry_header(data.zip, info) for info in data.zip.infolist()}
        except _UNREADABLE:
            raise foreign("an entry's header cannot be read (a truncated or corrupt file)") from None
        for name, header in headers.items():
            _check_header(name, header, foreign)
        try:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
        except _UNREADABLE:
            raise foreign("its 'meta' entry is not JSON or an entry cannot be read without unpickling "
                          "(a truncated or corrupt file)") from None
    if not isinstance(meta, dict) or meta.get("format") != f"fusedense-{kind}":
        found = meta.get("format") if isinstance(meta, dict) else None
        raise foreign(f"its format is {found!r}, not 'fusedense-{kind}'")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise foreign(f"its format version is {version!r}, not a positive integer")
    if version > FORMAT_VERSION:
        raise ValueError(f"{os.fspath(path)} is a fusedense {kind} file of format version {version}, written by a "
                         f"newer fusedense; this one reads versions up to {FORMAT_VERSION}: upgrade fusedense "
                         "to load it")
    return meta, arrays


def model_config(meta, path, kind):
    """The model configuration stored in ``meta``: a dict holding at least ``sizes``."""
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("sizes"), list):
        raise bad_file(path, kind, f"its 'config' is not a model configuration with 'sizes'; got {config!r}")
    return config


def stored_values(arrays):
    """How many values the file's arrays hold: a model configuration needing more is corrupt
    (checked before it allocates anything)."""
    return sum(a.size for a in arrays.values())


def dense_parameters(sizes):
    """W and b of every layer of ``sizes`` (a lower bound on the parameters; PReLU adds slopes)."""
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        return 0  # not sizes at all: MLP says what is wrong with them
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def check_arrays(arrays, expected, bad):
    """``bad(why)`` (a ValueError naming the file) unless ``arrays`` holds exactly the names
    of ``expected`` (name -> shape), each of a real dtype, that shape and finite."""
    if sorted(arrays) != sorted(expected):
        raise bad(f"it stores the arrays {sorted(arrays)}; it should hold {sorted(expected)}")
    for name, shape in expected.items():
        array = arrays[name]
        if array.dtype.kind not in "biuf":
            raise bad(f"its {name!r} has dtype {array.dtype}, not a real number type")
        if array.shape != tuple(shape):
            raise bad(f"its {name!r} has shape {array.shape}; it should be {tuple(shape)}")
        try:
            check_finite(array, f"its {name!r}")
        except ValueError as error:
            raise bad(str(error)) from None
