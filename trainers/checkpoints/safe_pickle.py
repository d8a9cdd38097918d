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
"""

from __future__ import annotations

import io
import pickle
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
    try:
        return TorchCheckpoint(torch.load(path, map_location="cpu", weights_only=True), ())
    except pickle.UnpicklingError as err:
        reason = _torch_reason(err)
    except Exception as err:  # a corrupt file can fail anywhere inside torch.load
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from None
    if not is_zip:
        raise UnsafePickleError(
            f"{path}: refused to load: {reason} (a legacy-format checkpoint; re-save it with a current "
            "torch in a trusted environment)")
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError, OSError) as err:
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


def _torch_reason(err: Exception) -> str:
    """The one informative line of torch's multi-paragraph weights_only error."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation", "WeightsUnpickler error:")
    lines = [line.strip() for line in str(err).splitlines()]
    useful = [line for line in lines if line and not line.startswith(boiler)]
    return useful[0] if useful else _first_line(err)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
