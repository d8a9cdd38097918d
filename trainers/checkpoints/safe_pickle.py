"""Read pickled weight files without letting them run code.

`pickle.load` executes whatever callables a file names, so a weight file from the internet is a
program. Two loaders here never call anything a file asks for beyond an allowlist:

- `load_numpy_pickle`: pickles of numpy arrays in plain containers (the offline LPIPS weights,
  MNIST). Only ndarray/dtype reconstruction and container builders are resolvable; anything
  else (`os.system`, `builtins.eval`, ...) stops the load with `UnsafePickleError`.
- `load_torch_checkpoint`: `torch.save` files such as PyTorch-Lightning `.ckpt`s. torch's own
  `weights_only` unpickler rebuilds tensors; classes Lightning leaves in other entries (callback
  state keyed by class, paths, hyper-parameter containers) become inert `Opaque` placeholders
  that record their arguments and run nothing, so the tensors can still be taken out.

Before torch reads anything, `check_torch_file` bounds what reading can cost: a zip entry may
not inflate past MAX_EXPANSION times its stored size (torch.save stores entries uncompressed; a
1.45 MB zip bomb once inflated data.pkl to 3.1 GB), a pickle may not exceed MAX_PICKLE_BYTES, and
no GLOBAL opcode may name a module or class longer than MAX_GLOBAL_NAME characters (torch matches
regular expressions against error messages quoting the name: a 100 KB name ran for minutes).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sundae_core.checkpoint import existing_file
from sundae_core.errors import CheckpointError


class UnsafePickleError(CheckpointError):
    """A pickle asked for a callable outside the allowlist, or held a non-data object."""


MAX_PICKLE_BYTES = 64 * 2 ** 20  # one pickle of a checkpoint (tensors live outside it: a few MB)
MAX_EXPANSION = 100  # uncompressed / compressed size of one zip entry, beyond 1 MB
MAX_GLOBAL_NAME = 512  # characters of a GLOBAL's "module name" (real ones are under 100)
_LEGACY_PICKLES = 5  # magic number, protocol, system info, the object, the storage keys


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # Ask numpy which callables its own pickles name instead of hard-coding module paths:
    # numpy 1 writes `numpy.core.multiarray`, numpy 2 `numpy._core.multiarray`, and a file may
    # come from either, so both spellings map to this numpy's functions.
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 pickles contiguous arrays this way
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        # protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): _latin1_encode,
    }
    # `__builtin__` is the Python 2 spelling, used by protocol < 3 pickles and Python 2 files.
    for module in ("builtins", "__builtin__"):
        allowed.update({(module, "set"): set, (module, "frozenset"): frozenset, (module, "complex"): complex})
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = frombuffer
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"pickle asked for the codec {encoding!r}; only latin1 is allowed")
    return text.encode("latin1")


class _NumpyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load: the pickle names {module}.{name}, which is not a "
                "numpy array or plain container (a pickle that calls it could run arbitrary code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused to load: the pickle uses persistent ids")


_PLAIN = (str, bytes, int, float, bool, complex, type(None))


def _check_data(obj: Any, source: str) -> None:
    """Belt and braces after the allowlist: only data may come out (and no object arrays).

    Each container is visited once: a pickle can share one list many times over (161 bytes made a
    graph with 2**40 paths), so walking every path would never end. A container that holds itself
    (a cycle) is refused like one nested too deep.
    """
    done, open_ = set(), set()  # ids of containers checked / on the path being walked
    stack = [(obj, 0, False)]
    while stack:
        value, depth, leaving = stack.pop()
        if leaving:
            open_.discard(id(value))
            done.add(id(value))
            continue
        if isinstance(value, _PLAIN) or isinstance(value, np.dtype) and not value.hasobject:
            continue
        if isinstance(value, (np.ndarray, np.generic)):
            if value.dtype.hasobject:
                raise UnsafePickleError(f"{source}: refused to load: a numpy array of Python objects")
            continue
        if not isinstance(value, (dict, list, tuple, set, frozenset)):
            raise UnsafePickleError(f"{source}: refused to load: it holds a {type(value).__name__}, not plain data")
        if id(value) in done:
            continue
        if depth > 100 or id(value) in open_:
            raise UnsafePickleError(f"{source}: refused to load: containers nested over 100 deep or "
                                    "holding themselves")
        open_.add(id(value))
        stack.append((value, depth, True))
        children = [x for pair in value.items() for x in pair] if isinstance(value, dict) else value
        stack.extend((child, depth + 1, False) for child in children)


def loads_numpy_pickle(data: bytes, *, source: str = "pickle", encoding: str = "ASCII") -> Any:
    """Unpickle bytes that may contain only numpy arrays, dtypes, scalars and plain containers.

    `encoding="latin1"` reads Python 2 pickles of numpy arrays (such as MNIST's).
    """
    try:
        obj = _NumpyUnpickler(io.BytesIO(data), source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None
    _check_data(obj, source)
    return obj


def load_numpy_pickle(path: str | Path, *, encoding: str = "ASCII") -> Any:
    """`loads_numpy_pickle` on a file's contents."""
    path = existing_file(path, "pickle")
    return loads_numpy_pickle(path.read_bytes(), source=str(path), encoding=encoding)


class Opaque:
    """Stands in for a class a checkpoint names but we refuse to import; it runs nothing.

    Whatever the pickle passes it (constructor arguments, state) is kept for inspection only.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Opaque":
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualified_name}>"


def _opaque_class(qualified_name: str) -> type[Opaque]:
    module, _, name = qualified_name.rpartition(".")
    # A distinct class per name: torch checks BUILD targets by their type.
    return type(name or "Opaque", (Opaque,), {"qualified_name": qualified_name, "__module__": module})


@dataclass(frozen=True)
class TorchCheckpoint:
    """What `load_torch_checkpoint` found: the object, plus the globals it replaced by `Opaque`."""

    data: Any
    opaque: tuple[str, ...]


def load_torch_checkpoint(path: str | Path) -> TorchCheckpoint:
    """Load a `torch.save` file (e.g. a Lightning `.ckpt`) onto the CPU without running its code.

    Tensors come back as tensors; any class outside torch's `weights_only` allowlist comes back
    as an inert `Opaque` instance and is listed in `.opaque`. Globals from `os`, `sys`, `posix`
    and `nt` are refused outright by torch.
    """
    path = existing_file(path)
    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as f:
        legacy = f.read(2) == b"\x80\x02"  # pre-1.6 torch.save: a protocol-2 pickle stream
    if not (is_zip or legacy):
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (neither a torch.save zip "
                              "archive nor a legacy torch.save file)")
    check_torch_file(path, is_zip)
    try:
        with warnings.catch_warnings():  # torch's multi-line note on protocol 4; the refusal below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return TorchCheckpoint(torch.load(path, map_location="cpu", weights_only=True), ())
    except pickle.UnpicklingError as err:
        reason = _torch_reason(err)
    except Exception as err:  # a corrupt file can fail anywhere inside torch.load
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from None
    if not is_zip:
        raise UnsafePickleError(
            f"{path}: refused to load: {reason} (a legacy-format checkpoint; re-save it with a current "
            "torch in a trusted environment)")
    if reason.startswith("Unsupported operand"):  # e.g. 149, FRAME: torch.save(..., pickle_protocol=4)
        raise CheckpointError(
            f"{path}: torch's safe loader cannot read it ({reason}: the file was saved with pickle protocol 4 "
            "or newer); re-save it with torch.save's default protocol in a trusted environment")
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from None
    stand_ins = [(_opaque_class(name), name) for name in names]
    try:
        with torch.serialization.safe_globals(stand_ins):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(f"{path}: refused to load: {_torch_reason(err)}") from None
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from None
    return TorchCheckpoint(data, tuple(names))


def check_torch_file(path: Path, is_zip: bool) -> None:
    """CheckpointError unless reading `path` costs about its size (see the module docstring):
    entry sizes come from the zip's directory, before anything is inflated; pickles are read
    opcode by opcode without being run."""
    if not is_zip:
        with open(path, "rb") as file:
            for _ in range(_LEGACY_PICKLES):
                if not file.read(1):
                    return  # fewer pickles than a torch.save file: torch.load will say so
                file.seek(-1, io.SEEK_CUR)
                _check_opcodes(file, str(path))
        return
    try:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.infolist():
                where = f"{path}: entry {_shorten(entry.filename)}"
                if entry.file_size > MAX_EXPANSION * entry.compress_size + 2 ** 20:
                    raise CheckpointError(
                        f"{where} would inflate from {entry.compress_size:,} to {entry.file_size:,} bytes "
                        "(a zip bomb?); torch.save stores its entries uncompressed")
                if not entry.filename.endswith(".pkl"):
                    continue
                if entry.file_size > MAX_PICKLE_BYTES:
                    raise CheckpointError(f"{where} is a {entry.file_size:,}-byte pickle, over the "
                                          f"{MAX_PICKLE_BYTES:,} bytes a checkpoint's pickle may have")
                with archive.open(entry) as file:  # at most file_size bytes come out, checked above
                    _check_opcodes(io.BytesIO(file.read(MAX_PICKLE_BYTES)), where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError,
            ValueError) as err:  # a corrupt archive, an unsupported compression or encryption
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from None


def _check_opcodes(file: Any, source: str) -> None:
    """Walk one pickle's opcodes (nothing is built or run) and refuse an overlong GLOBAL name."""
    try:
        for opcode, argument, position in pickletools.genops(file):
            if opcode.name == "GLOBAL" and len(argument) > MAX_GLOBAL_NAME:
                raise UnsafePickleError(
                    f"{source}: refused to load: the pickle names a global of {len(argument):,} characters "
                    f"at byte {position} ({_shorten(argument)}); real module and class names are short")
            if opcode.name == "STOP":
                return
    except UnsafePickleError:
        raise
    except (ValueError, EOFError, struct.error, UnicodeDecodeError) as err:
        raise CheckpointError(f"{source}: not a readable pickle ({_shorten(_first_line(err))})") from None


def _shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters for a message, saying how much was left out."""
    text = repr(text)[1:-1] if isinstance(text, str) else str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _torch_reason(err: Exception) -> str:
    """The one informative line of torch's multi-paragraph weights_only error."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation", "WeightsUnpickler error:")
    lines = [line.strip() for line in str(err).splitlines()]
    useful = [line for line in lines if line and not line.startswith(boiler)]
    return useful[0] if useful else _first_line(err)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
