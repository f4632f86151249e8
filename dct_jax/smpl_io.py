"""Reading SMPL-format model files into plain numpy arrays, with no chumpy.

The original SMPL ``.pkl`` files were written by Python 2 and pickle
``chumpy.ch.Ch`` objects (array in the object state under ``'x'``), chumpy
expressions such as ``Select`` (state ``'a'``, ``'idxs'``, maybe
``'preferred_shape'``: the array is ``a.ravel()[idxs]``) and old
``scipy.sparse`` matrices. :func:`read_model_file` unpickles them with a
restricted unpickler that knows exactly those classes (plus the numpy and
builtin helpers a pickle needs) and refuses anything else, so a crafted file
cannot run code. smplx-style ``.npz`` files are read too.
"""

from __future__ import annotations

import codecs
import os
import pickle
import zipfile
from typing import Any

import numpy as np

try:  # numpy >= 2 renamed numpy.core to numpy._core.
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


class ModelFileError(ValueError):
    """A body-model file that cannot be read: says which file and which field."""


class _PickledObject:
    """Stands in for a chumpy or scipy.sparse object; keeps its pickled state."""

    source_class = "?"

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _placeholder(module: str, name: str) -> type:
    return type(name, (_PickledObject,), {"source_class": f"{module}.{name}"})


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copy_reg._reconstructor`` restricted to our placeholder classes."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledObject)):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    return cls(state) if state is not None else cls()


_NUMPY = {
    ("multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("multiarray", "scalar"): _multiarray.scalar,
    ("numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "list": list,
             "dict": dict, "tuple": tuple, "bytes": bytes, "bytearray": bytearray}
_SPARSE_MODULES = ("scipy.sparse",)
_SPARSE_NAMES = ("csc_matrix", "csr_matrix", "coo_matrix")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the classes an SMPL-format pickle legitimately uses."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "_codecs" and name == "encode":
            return codecs.encode
        if module.startswith("numpy"):
            key = (module.rsplit(".", 1)[-1], name)
            if key in _NUMPY:
                return _NUMPY[key]
        if module == "chumpy" or module.startswith("chumpy."):
            return _placeholder(module, name)
        if module.startswith(_SPARSE_MODULES) and name in _SPARSE_NAMES:
            return _placeholder(module, name)
        raise pickle.UnpicklingError(
            f"the pickle references {module}.{name}, which is not part of an SMPL "
            "model file (only numpy arrays, chumpy arrays and scipy.sparse matrices "
            "are allowed); refusing to load it"
        )


def _sparse_to_dense(obj: _PickledObject, where: str) -> np.ndarray:
    state = obj.state if isinstance(obj.state, dict) else {}
    kind = obj.source_class.rsplit(".", 1)[-1][:3]
    try:
        shape = tuple(int(n) for n in state.get("_shape", state.get("shape")))
        data = np.asarray(state["data"])
        if kind == "coo":
            rows, cols = np.asarray(state["row"]), np.asarray(state["col"])
        else:
            indices = np.asarray(state["indices"]).astype(np.int64)
            indptr = np.asarray(state["indptr"]).astype(np.int64)
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if kind == "csc" else (major, indices)
    except (KeyError, TypeError) as err:
        raise ModelFileError(f"{where}: malformed {obj.source_class} ({err!r} missing)") from None
    dense = np.zeros(shape, dtype=data.dtype)
    np.add.at(dense, (rows, cols), data)
    return dense


def _to_numpy(obj: Any, where: str) -> Any:
    """Replaces placeholders (recursively) by the numpy arrays they hold."""
    if isinstance(obj, _PickledObject):
        name = obj.source_class
        if name.startswith("scipy"):
            return _sparse_to_dense(obj, where)
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" in state:
            return np.asarray(_to_numpy(state["x"], where))
        if "a" in state and "idxs" in state:
            base = np.asarray(_to_numpy(state["a"], where))
            out = base.ravel()[np.asarray(state["idxs"]).ravel()]
            shape = state.get("preferred_shape")
            return out.reshape(shape) if shape is not None else out
        raise ModelFileError(
            f"{where}: a pickled {name} object holds no array (state keys: "
            f"{sorted(state)})"
        )
    if isinstance(obj, dict):
        return {k: _to_numpy(v, f"{where}[{k!r}]") for k, v in obj.items()}
    return obj


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads an SMPL ``.pkl`` (chumpy or plain) or smplx ``.npz`` into a dict.

    Values are numpy arrays (sparse matrices made dense) or plain Python
    objects. Raises :class:`ModelFileError` naming the file for anything that
    is not such a model file, and refuses pickles that reference other classes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no body model file at {path!r}")
    if zipfile.is_zipfile(path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except ValueError as err:
            raise ModelFileError(f"{path}: cannot read .npz ({err})") from None
    with open(path, "rb") as stream:
        try:
            data = _RestrictedUnpickler(stream, encoding="latin1").load()
        except pickle.UnpicklingError as err:
            raise ModelFileError(f"{path}: {err}") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise ModelFileError(f"{path}: not a readable SMPL model pickle ({err!r})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a pickled dict of model arrays, got {type(data).__name__}")
    return _to_numpy(data, path)

