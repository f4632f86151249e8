"""Reading SMPL-format model files into plain numpy arrays, with no chumpy.

The original SMPL ``.pkl`` files were written by Python 2 and pickle
``chumpy.ch.Ch`` objects (array in the object state under ``'x'``), chumpy
expressions such as ``Select`` (state ``'a'``, ``'idxs'``, maybe
``'preferred_shape'``: the array is ``a.ravel()[idxs]``) and old
``scipy.sparse`` matrices. :func:`read_model_file` unpickles them with a
restricted unpickler that knows exactly those classes (plus the numpy and
builtin helpers a pickle needs) and refuses anything else, so a crafted file
cannot run code. smplx-style ``.npz`` files are read too.

Command line: ``python -m dct_jax.smpl_io convert IN.pkl OUT.npz`` writes the
model as a plain ``.npz`` (:func:`convert`) that any SMPL code reads without
chumpy or pickle (``np.load(OUT, allow_pickle=False)``).
"""

from __future__ import annotations

import argparse
import codecs
import os
import pickle
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from typing import Any, NamedTuple

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


# ----------------------------------------------------------------------------- conversion

SMPL_FIELDS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class Conversion(NamedTuple):
    """What :func:`convert` wrote."""

    path: str
    num_vertices: int
    num_joints: int
    num_betas: int
    fields: tuple[str, ...]  # names in the .npz
    dropped: tuple[str, ...]  # input fields that are not plain arrays (not written)


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike) -> Conversion:
    """Writes an SMPL model file (chumpy ``.pkl``, plain ``.pkl`` or ``.npz``) as a plain ``.npz``.

    The ``.npz`` has smplx's field names: ``v_template (V, 3)``, ``shapedirs
    (V, 3, NB)``, ``posedirs (V, 3, 9 (J - 1))``, ``J_regressor (J, V)``
    (dense), ``weights (V, J)``, ``kintree_table (2, J)``, ``f (F, 3)``, plus
    the input's other numeric or string fields (e.g. ``J``, ``bs_style``);
    fields that are neither (dicts, lists, None) are dropped. Values and dtypes
    are kept as read, so ``smpl.load`` of the output equals ``smpl.load`` of
    the input, and ``np.load(out_path, allow_pickle=False)`` reads it. The model
    is validated as ``smpl.load`` does before anything is written; the output
    is replaced atomically.

    Raises:
      FileNotFoundError: no file at ``in_path``.
      ValueError: ``out_path`` does not end in ``.npz`` or its directory is missing.
      ModelFileError: ``in_path`` is not an SMPL-format model.
    """
    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    if not os.path.isfile(in_path):
        raise FileNotFoundError(f"no SMPL model file at {in_path!r}")
    if not out_path.lower().endswith(".npz"):
        raise ValueError(f"the output {out_path!r} must end in .npz")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise ValueError(f"the output directory {out_dir!r} does not exist")
    try:
        data = read_model_file(in_path)
    except ModelFileError as err:
        raise ModelFileError(f"not an SMPL model file: {err}") from None
    arrays, dropped = _plain_arrays(data, in_path)
    _validate(arrays, in_path)
    fd, tmp_path = tempfile.mkstemp(prefix=".smpl_convert_", suffix=".npz", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as stream, zipfile.ZipFile(stream, "w", allowZip64=True) as archive:
            for key, array in arrays.items():  # as np.savez, but refusing object arrays
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        os.replace(tmp_path, out_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    num_vertices, num_betas = arrays["shapedirs"].shape[0], arrays["shapedirs"].shape[2]
    return Conversion(path=out_path, num_vertices=num_vertices,
                      num_joints=arrays["J_regressor"].shape[0], num_betas=num_betas,
                      fields=tuple(arrays), dropped=dropped)


def _plain_arrays(data: dict[Any, Any], source: str) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The model fields as non-object numpy arrays (SMPL fields first), and the names dropped."""
    missing = [k for k in SMPL_FIELDS if k not in data]
    if missing:
        raise ModelFileError(f"{source}: not an SMPL model: missing field(s) {missing}; "
                             f"found {sorted(map(str, data))}")
    arrays: dict[str, np.ndarray] = {}
    dropped = []
    for key in list(SMPL_FIELDS) + sorted((k for k in data if k not in SMPL_FIELDS), key=str):
        try:
            array = np.asarray(data[key])
        except ValueError:  # ragged sequences
            array = np.empty((), dtype=object)
        plain = isinstance(key, str) and key.isidentifier() and array.dtype.kind in "biufcUS"
        if key in SMPL_FIELDS and (not plain or array.dtype.kind in "US"):
            raise ModelFileError(f"{source}: field {key!r} is not a numeric array "
                                 f"(got {type(data[key]).__name__} of dtype {array.dtype})")
        if plain:
            arrays[key] = array
        else:
            dropped.append(str(key))
    if not np.issubdtype(arrays["J_regressor"].dtype, np.floating):
        arrays["J_regressor"] = arrays["J_regressor"].astype(np.float64)
    # smplx's own buffers keep posedirs as (P, V * 3); SMPL files and smplx's loader use (V, 3, P).
    num_vertices, posedirs = len(arrays["v_template"]), arrays["posedirs"]
    if posedirs.ndim == 2 and posedirs.shape[1] == 3 * num_vertices:
        arrays["posedirs"] = posedirs.T.reshape(num_vertices, 3, posedirs.shape[0])
    return arrays, tuple(dropped)


def _validate(arrays: dict[str, np.ndarray], source: str) -> None:
    """Checks the SMPL fields as ``smpl.load`` does (shapes, tree, finiteness)."""
    from dct_jax import smpl  # imports jax: only when converting.

    kintree = arrays["kintree_table"]
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        raise ModelFileError(f"{source}: field 'kintree_table' has shape {kintree.shape}, expected (2, J)")
    smpl.build_model(v_template=arrays["v_template"], shapedirs=arrays["shapedirs"],
                     posedirs=arrays["posedirs"], J_regressor=arrays["J_regressor"],
                     lbs_weights=arrays["weights"], faces=arrays["f"],
                     parents=[-1] + [int(p) for p in kintree[0, 1:]], source=source)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dct_jax.smpl_io convert IN OUT.npz``; returns the exit code (2: user error)."""
    parser = argparse.ArgumentParser(prog="python -m dct_jax.smpl_io",
                                     description="Tools for SMPL-format body model files.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser(
        "convert", help="write an SMPL .pkl (chumpy inside is fine) as a plain .npz",
        description=("Write an SMPL model (.pkl, chumpy inside is fine, or .npz) as a plain .npz with "
                     "smplx's field names, readable with np.load(..., allow_pickle=False)."))
    convert_parser.add_argument("input", help="SMPL model file, e.g. basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")
    convert_parser.add_argument("output", help="the .npz to write (replaced if it exists)")
    args = parser.parse_args(argv)
    try:
        done = convert(args.input, args.output)
    except (OSError, ValueError) as err:  # ModelFileError is a ValueError
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    note = f"; dropped non-array field(s) {', '.join(done.dropped)}" if done.dropped else ""
    print(f"wrote {done.path}: {done.num_vertices} vertices, {done.num_joints} joints, "
          f"{done.num_betas} betas, {len(done.fields)} fields{note}")
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, so that its ModelFileError is the
    # one dct_jax.smpl raises.
    from dct_jax.smpl_io import main as _main

    sys.exit(_main())
