"""Safe files: atomic writes of tensors (safetensors) and JSON, and clear errors for files that cannot be read.

Every file tinylora writes (model weights, adapters, checkpoints) goes through
two rules:

    1. Atomic: write to a temporary file next to the target, then `os.replace`
       it over the target. A crash mid-write leaves the old file (or none),
       never half a file that loads as garbage.
    2. Loud: a missing, truncated or corrupt file raises an error that names
       the file and what is wrong with it (FileNotFoundError, FileFormatError).

Tensors are stored as safetensors. The format is simple enough to read by hand,
which is what `load_tensors` does (the `safetensors` package cannot hand
bfloat16 tensors to NumPy, and Hugging Face checkpoints often are bfloat16):

    bytes 0..8          N, the header length (unsigned 64-bit, little endian)
    bytes 8..8+N        a JSON header:
                          {"name": {"dtype": "F32", "shape": [d0, d1], "data_offsets": [begin, end]},
                           ...,
                           "__metadata__": {"key": "value"}}      (optional, strings only)
    bytes 8+N..         the data; tensor "name" is bytes [begin, end) of it, row-major, little endian

This is host-side code (file I/O), so it uses NumPy directly.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np

from tinylora.engine.backend import to_host
from tinylora.engine.tensor import Tensor

# safetensors dtype codes NumPy can hold as they are (all little endian, as the format requires)
_NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit; a bigger N means a corrupt file


class FileFormatError(ValueError):
    """A file exists but is not what it claims to be (truncated, corrupt, or an unsupported variant)."""


# ------------------------------------------------------------------ atomic writes
def _atomic_write(path, write) -> None:
    """Call `write(temp_path)`, then move the finished temp file onto `path` in one step."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(handle)
    try:
        write(temp)
        with open(temp, "rb") as f:  # make sure the bytes reached the disk before the rename
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write {name: array} to a safetensors file, atomically.

    Values may be NumPy arrays, CuPy arrays or tinylora Tensors (copied to the
    host). `metadata` is an optional {str: str} dict stored in the header.
    """
    if metadata is not None:
        bad = {k: type(v).__name__ for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise TypeError(f"save_tensors: metadata keys and values must be strings; not strings: {bad}")
    host = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save_tensors: tensor names must be strings, got {name!r}")
        value = value.data if isinstance(value, Tensor) else value
        host[name] = np.asarray(to_host(value), order="C")  # row-major, as the format stores it

    def write(temp):
        from safetensors.numpy import save_file

        save_file(host, temp, metadata=metadata)

    _atomic_write(path, write)


def write_json_atomic(path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2) + "\n"  # serialise first: a TypeError must not leave a temp file

    def write(temp):
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(path, write)


# ------------------------------------------------------------------ reading
def _require_file(path, what: str) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} expected a file but {path} is a directory")
    return path


def read_json(path) -> dict:
    """Parse a JSON file; a missing or malformed file raises an error naming it."""
    path = _require_file(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FileFormatError(f"{path} is not valid JSON: {err}") from err


def _read_header(f, path: str, file_size: int) -> tuple[dict, int]:
    """Parse and check the header; return (header dict, offset where the data starts)."""
    if file_size < 8:
        raise FileFormatError(f"{path} is not a safetensors file: only {file_size} bytes long")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > _MAX_HEADER_BYTES or 8 + n > file_size:
        raise FileFormatError(f"{path} is not a safetensors file (or is truncated): header claims {n} bytes")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(f"{path}: the safetensors header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise FileFormatError(f"{path}: the safetensors header is not a JSON object")
    return header, 8 + n


def _check_entry(path: str, name: str, entry, data_size: int) -> None:
    try:
        dtype, shape, (begin, end) = entry["dtype"], [int(d) for d in entry["shape"]], entry["data_offsets"]
    except (KeyError, TypeError, ValueError) as err:
        raise FileFormatError(f"{path}: header entry for '{name}' is malformed: {entry!r}") from err
    if dtype != "BF16" and dtype not in _NUMPY_DTYPES:
        raise FileFormatError(f"{path}: tensor '{name}' has dtype {dtype}, which tinylora cannot read "
                              f"(supported: BF16, {', '.join(_NUMPY_DTYPES)})")
    itemsize = 2 if dtype == "BF16" else np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    if not 0 <= begin <= end <= data_size:
        raise FileFormatError(f"{path} is truncated or corrupt: tensor '{name}' lies at bytes [{begin}, {end}) "
                              f"but the data section has {data_size} bytes")
    if end - begin != int(np.prod(shape, dtype=np.int64)) * itemsize:
        raise FileFormatError(f"{path}: tensor '{name}' has shape {tuple(shape)} and dtype {dtype} "
                              f"but occupies {end - begin} bytes")


def _decode(raw: bytearray, dtype: str, shape) -> np.ndarray:
    if dtype == "BF16":  # bfloat16 is the top half of a float32: shift it back up (exact)
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        return (halves << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=_NUMPY_DTYPES[dtype]).reshape(shape)


def _read(path, with_data: bool = True) -> tuple[dict, dict]:
    path = _require_file(path, "tensor file")
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        header, data_start = _read_header(f, path, file_size)
        metadata = header.pop("__metadata__", None) or {}
        data_size = file_size - data_start
        tensors = {}
        for name, entry in header.items():
            _check_entry(path, name, entry, data_size)
            if not with_data:
                continue
            begin, end = entry["data_offsets"]
            raw = bytearray(end - begin)
            f.seek(data_start + begin)
            f.readinto(raw)
            tensors[name] = _decode(raw, entry["dtype"], tuple(entry["shape"]))
    return tensors, metadata


def load_tensors(path) -> dict:
    """Read a safetensors file into {name: NumPy array} (host memory).

    dtypes are kept, except bfloat16 (which NumPy lacks): it is widened to
    float32, which is exact. Raises FileNotFoundError for a missing file and
    FileFormatError for a truncated, corrupt or unsupported one.
    """
    return _read(path)[0]


def load_metadata(path) -> dict:
    """The {str: str} metadata stored in a safetensors file's header ({} if none)."""
    return _read(path, with_data=False)[1]


def tensor_shapes(path) -> dict:
    """{name: (dtype code, shape)} of a safetensors file, from its header alone (no tensor data is read).

    What a loader checks against a config before it allocates anything: a
    config that claims n_embd=4096 next to a file of 32-wide tensors fails here,
    in microseconds, instead of after building a 7 GB model.
    """
    path = _require_file(path, "tensor file")
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        header, data_start = _read_header(f, path, file_size)
    header.pop("__metadata__", None)
    for name, entry in header.items():
        _check_entry(path, name, entry, file_size - data_start)
    return {name: (entry["dtype"], tuple(int(d) for d in entry["shape"])) for name, entry in header.items()}
