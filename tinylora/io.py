"""Safe files: atomic writes of tensors (safetensors) and JSON, and clear errors for files that cannot be read.

Every file tinylora writes (model weights, adapters, checkpoints) goes through
these rules:

    1. Atomic: write to a temporary file next to the target, then `os.replace`
       it over the target. A crash mid-write leaves the old file (or none),
       never half a file that loads as garbage. A temporary file left behind by
       a killed process is deleted by the next write into the same folder.
    2. Finite: tensors holding NaN or inf are refused before anything is written
       (NonFiniteError names the tensor), so no file tinylora writes holds one.
    3. Loud: a missing, truncated or corrupt file raises an error that names
       the file and what is wrong with it (FileNotFoundError, FileFormatError);
       a full disk raises OSError(ENOSPC) naming the file, whichever library wrote it.
    4. Ordinary permissions: files get the mode the user's umask gives (0644
       under the usual umask 022), like files any other tool writes.

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

import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import struct

import numpy as np

from tinylora.engine.backend import to_host
from tinylora.engine.tensor import Tensor
from tinylora.errors import MissingNameError  # noqa: F401 (importable with the file errors)

# safetensors dtype codes NumPy can hold as they are (all little endian, as the format requires)
_NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit; a bigger N means a corrupt file


class FileFormatError(ValueError):
    """A file exists but is not what it claims to be (truncated, corrupt, or an unsupported variant)."""


class NonFiniteError(FloatingPointError, ValueError):
    """A tensor about to be saved (or a training step about to be applied) holds NaN or inf."""


# ------------------------------------------------------------------ atomic writes
# a temporary file is ".<target name>.<writer's pid>-<random>.tmp", so a later write can tell a
# leftover of a killed process (its pid is gone) from a file another live process is writing
_TEMP = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")


def _temp_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    return True


def remove_stale_temps(folder) -> list:
    """Delete the temporary files and folders in `folder` whose writer process is no longer running.

    These are what a write killed half way (SIGKILL, power loss) leaves behind; a live
    writer's temp files, this process's included, are kept. Returns the removed paths.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMP.match(name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except OSError:
                    continue
            removed.append(path)
    return removed


def temp_path_for(path) -> str:
    """A fresh temporary name next to `path`, in the pattern remove_stale_temps recognises."""
    return _temp_name(os.path.abspath(os.fspath(path)))


def _disk_error(err: BaseException, path: str) -> OSError | None:
    """`err` as an OSError naming `path` if it is an I/O failure (disk full, quota, ...), else None.

    Python's own writes raise OSError; the safetensors library raises its own SafetensorError
    whose message ends in "(os error N)": both become OSError(N, "<reason>", path).
    """
    if isinstance(err, OSError):
        code, reason = err.errno, err.strerror or str(err)
    else:
        found = re.search(r"(?:I/O error|IoError)\W*(.*?)\s*\(os error (\d+)\)", str(err))
        if not found:
            return None
        code, reason = int(found.group(2)), found.group(1).strip(" :") or os.strerror(int(found.group(2)))
    if code is None:
        return None
    return OSError(code, f"cannot write {path}: {reason}" + (" (the disk is full)" if code == errno.ENOSPC else ""))


def _atomic_write(path, write) -> None:
    """Call `write(temp_path)`, then move the finished temp file onto `path` in one step."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder)
    temp = _temp_name(path)
    # created with mode 0666 minus the user's umask (tempfile.mkstemp would make it 0600 whatever the umask)
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = os.stat(temp).st_mode & 0o777
    try:
        write(temp)
        os.chmod(temp, mode)  # the writer may have replaced the file with its own 0600 one (safetensors does)
        with open(temp, "rb") as f:  # make sure the bytes reached the disk before the rename
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException as err:
        if os.path.exists(temp):
            os.remove(temp)
        disk = _disk_error(err, path) if isinstance(err, Exception) else None
        if disk is not None and disk is not err:
            raise disk from err
        raise


def _exchange(a: str, b: str) -> bool:
    """Swap the paths a and b in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without renameat2
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system that cannot exchange
        return False
    raise OSError(code, f"cannot replace {b}: {os.strerror(code)}")


def write_folder_atomic(path, write) -> None:
    """Call `write(temp_folder)`, then make that folder `path` in one rename.

    A new `path` appears complete or not at all. An existing one is swapped with the new folder in
    one atomic exchange, then deleted: a kill at any moment leaves the old folder or the new one,
    never a mix of their files. (Where the system cannot exchange two paths, the old folder is first
    renamed aside: a kill between the two renames leaves no folder at `path`, the old one beside it.)
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temps(parent)
    temp = _temp_name(path)
    os.mkdir(temp)
    try:
        write(temp)
        if not os.path.isdir(path) or not os.listdir(path):
            os.replace(temp, path)  # onto nothing, or onto an empty folder: one rename
        elif _exchange(temp, path):
            shutil.rmtree(temp)  # now the old folder
        else:
            aside = _temp_name(path)
            os.rename(path, aside)
            os.rename(temp, path)
            shutil.rmtree(aside)
    except BaseException as err:
        shutil.rmtree(temp, ignore_errors=True)
        disk = _disk_error(err, path) if isinstance(err, Exception) else None
        if disk is not None and disk is not err:
            raise disk from err
        raise


def check_finite(tensors: dict, what: str) -> None:
    """Raise NonFiniteError naming the first floating tensor of {name: array} that holds NaN or inf."""
    for name, value in tensors.items():
        value = value.data if isinstance(value, Tensor) else value
        array = np.asarray(to_host(value))
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise NonFiniteError(f"{what}: tensor '{name}' holds {bad} NaN/inf value(s) of {array.size}; "
                                 "nothing was written")


def save_tensors(path, tensors: dict, metadata: dict | None = None, allow_nonfinite: bool = False) -> None:
    """Write {name: array} to a safetensors file, atomically.

    Values may be NumPy arrays, CuPy arrays or tinylora Tensors (copied to the
    host). `metadata` is an optional {str: str} dict stored in the header.
    A floating tensor holding NaN or inf is refused (NonFiniteError) before anything is written,
    unless `allow_nonfinite` (for tests that build a broken file on purpose).
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
    if not allow_nonfinite:
        check_finite(host, f"cannot save {os.fspath(path)}")

    def write(temp):
        from safetensors.numpy import save_file

        save_file(host, temp, metadata=metadata)

    _atomic_write(path, write)


def write_json_atomic(path, obj) -> None:
    """Write `obj` as indented, strict JSON (NaN and inf are refused: ValueError), atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"  # serialise first: an error leaves no temp file

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


_JSON_KINDS = {dict: "a JSON object", list: "a JSON list", str: "a JSON string"}


def parse_json(text, source: str, kind=None):
    """Parse JSON `text` read from `source` (a file, or "file:line"); every failure is one FileFormatError
    naming the source: malformed text, nesting too deep for Python's parser, a number with more digits
    than Python converts, or (with `kind`, e.g. dict) a value of another type."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise FileFormatError(f"{source}: not valid JSON ({err})") from None
    except RecursionError:
        raise FileFormatError(f"{source}: JSON nested too deeply to read") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise FileFormatError(f"{source}: unreadable JSON value ({' '.join(str(err).split())[:120]})") from None
    if kind is not None and not isinstance(value, kind):
        raise FileFormatError(f"{source}: expected {_JSON_KINDS.get(kind, kind.__name__)}, "
                              f"got {_JSON_KINDS.get(type(value), type(value).__name__)}")
    return value


def read_json(path, kind=dict):
    """Parse a JSON file that holds `kind` (a JSON object by default; None: anything). A missing,
    malformed or wrongly shaped file raises an error naming it (FileNotFoundError, FileFormatError)."""
    path = _require_file(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path}: not valid JSON (not UTF-8 text: {err.reason} at byte {err.start})") from None
    return parse_json(text, path, kind)


def require_fields(obj: dict, source: str, fields: dict) -> dict:
    """Check that JSON object `obj` (read from `source`) has each of {name: type}; returns `obj`.
    A missing or wrongly typed field is one FileFormatError naming the file and the field."""
    for name, kind in fields.items():
        if name not in obj:
            raise FileFormatError(f"{source}: the field '{name}' is missing")
        if not isinstance(obj[name], kind):
            raise FileFormatError(f"{source}: '{name}' must be {_JSON_KINDS.get(kind, kind.__name__)}, "
                                  f"got {json.dumps(obj[name])[:40]}")
    return obj


def _read_header(f, path: str, file_size: int) -> tuple[dict, int]:
    """Parse and check the header; return (header dict, offset where the data starts)."""
    if file_size < 8:
        raise FileFormatError(f"{path} is not a safetensors file: only {file_size} bytes long")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > _MAX_HEADER_BYTES or 8 + n > file_size:
        raise FileFormatError(f"{path} is not a safetensors file (or is truncated): header claims {n} bytes")
    try:
        text = f.read(n).decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path}: the safetensors header is not valid JSON ({err})") from err
    return parse_json(text, f"{path}: the safetensors header", dict), 8 + n


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(path: str, name: str, entry, data_size: int) -> tuple:
    """(dtype, shape, begin, end) of one header entry, every field checked (a hostile header names its
    tensor and field here, rather than failing later inside NumPy)."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise FileFormatError(f"{path}: header entry for '{name}' is malformed (needs dtype, shape and "
                              f"data_offsets): {str(entry)[:80]}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or (dtype != "BF16" and dtype not in _NUMPY_DTYPES):
        raise FileFormatError(f"{path}: tensor '{name}' has dtype {str(dtype)[:20]}, which tinylora cannot read "
                              f"(supported: BF16, {', '.join(_NUMPY_DTYPES)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise FileFormatError(f"{path}: tensor '{name}' has shape {str(shape)[:60]}; a shape is a list of "
                              "integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise FileFormatError(f"{path}: tensor '{name}' has data_offsets {str(offsets)[:60]}; expected "
                              "[begin, end], two integers >= 0")
    begin, end = offsets
    itemsize = 2 if dtype == "BF16" else np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    if not begin <= end <= data_size:
        raise FileFormatError(f"{path} is truncated or corrupt: tensor '{name}' lies at bytes [{begin}, {end}) "
                              f"but the data section has {data_size} bytes")
    if end - begin != math.prod(shape) * itemsize:  # Python integers: a huge shape cannot overflow here
        raise FileFormatError(f"{path}: tensor '{name}' has shape {tuple(shape)} and dtype {dtype} "
                              f"but occupies {end - begin} bytes")
    return dtype, tuple(shape), begin, end


def _check_entries(path: str, header: dict, data_size: int) -> dict:
    """{name: (dtype, shape, begin, end)} of every tensor in `header`; two tensors may not share bytes."""
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise FileFormatError(f"{path}: the header's __metadata__ must map strings to strings")
    entries = {name: _check_entry(path, name, entry, data_size)
               for name, entry in header.items() if name != "__metadata__"}
    spans = sorted((begin, end, name) for name, (_, _, begin, end) in entries.items() if end > begin)
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise FileFormatError(f"{path} is corrupt: tensors '{first}' and '{second}' overlap in the data section")
    return entries


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
        entries = _check_entries(path, header, file_size - data_start)
        metadata = header.get("__metadata__") or {}
        tensors = {}
        for name, (dtype, shape, begin, end) in entries.items() if with_data else ():
            raw = bytearray(end - begin)
            f.seek(data_start + begin)
            f.readinto(raw)
            tensors[name] = _decode(raw, dtype, shape)
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


# ------------------------------------------------------------------ identity
def digest_tensors(tensors: dict) -> str:
    """A SHA-256 of {name: array} (names, dtypes, shapes and bytes, in name order): one model's weights,
    the same whichever file format or folder they came from. 'sha256:<hex>'."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        array = np.ascontiguousarray(to_host(value.data if isinstance(value, Tensor) else value))
        h.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        h.update(memoryview(array).cast("B"))
    return "sha256:" + h.hexdigest()


def digest_files(paths) -> str:
    """A SHA-256 of the files `paths` (their bytes, in the order given): a data set's identity. 'sha256:<hex>'."""
    h = hashlib.sha256()
    for path in paths:
        h.update(f"{os.path.getsize(path)}\n".encode())  # file boundaries count, names do not
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


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
    entries = _check_entries(path, header, file_size - data_start)
    return {name: (dtype, shape) for name, (dtype, shape, _, _) in entries.items()}
