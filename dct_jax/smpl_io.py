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
import operator
import os
import pickle
import sys
import tempfile
import zipfile
import zlib
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


class _Refused(pickle.UnpicklingError):
    """The pickle references something an SMPL model file never holds."""


def _placeholder(module: str, name: str) -> type:
    return type(name, (_PickledObject,), {"source_class": f"{module}.{name}"})


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copy_reg._reconstructor`` restricted to our placeholder classes."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledObject)):
        raise _Refused(f"refusing to reconstruct {cls!r}")
    return cls(state) if state is not None else cls()


def _no_size(constructor: type) -> Any:
    """``bytes``/``bytearray`` from data only: ``bytes(10**12)`` in a crafted
    pickle would allocate that many zero bytes."""

    def make(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise _Refused(f"refusing {constructor.__name__}({args[0]}) (a size, not data)")
        return constructor(*args)

    return make


_NUMPY = {
    ("multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("multiarray", "scalar"): _multiarray.scalar,
    ("numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "list": list,
             "dict": dict, "tuple": tuple, "bytes": _no_size(bytes), "bytearray": _no_size(bytearray)}
_SPARSE_MODULES = ("scipy.sparse",)
_SPARSE_NAMES = ("csc_matrix", "csr_matrix", "coo_matrix")
# Largest sparse matrix made dense (elements): SMPL-format files hold joint
# regressors, (24, 6890) for SMPL and (55, 10475) for SMPL-X.
MAX_SPARSE_ELEMENTS = 2**26
NOT_A_MODEL = "not an SMPL model file (expected .pkl or .npz)"


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
        raise _Refused(
            f"the pickle references {module}.{name}, which is not part of an SMPL "
            "model file (only numpy arrays, chumpy arrays and scipy.sparse matrices "
            "are allowed); refusing to load it"
        )


def _int_vector(state: dict, key: str, fail: Any) -> np.ndarray:
    """``state[key]`` as a 1-D int64 array (sparse index arrays)."""
    if key not in state:
        fail(f"it has no {key!r}")
    try:
        array = np.asarray(state[key])
    except (TypeError, ValueError):
        array = np.empty(0, dtype=object)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        fail(f"{key!r} must be a 1-D integer array, got {array.dtype} of shape {array.shape}")
    return array.astype(np.int64)


def _sparse_to_dense(obj: _PickledObject, where: str, expected_shape: tuple[int, int] | None) -> np.ndarray:
    """The dense array of a pickled scipy.sparse matrix, validated before it is allocated."""
    name = obj.source_class

    def fail(problem: str) -> None:
        raise ModelFileError(f"{where}: malformed {name}: {problem}")

    state = obj.state if isinstance(obj.state, dict) else {}
    kind = name.rsplit(".", 1)[-1][:3]
    shape = state.get("_shape", state.get("shape"))
    try:
        shape = tuple(operator.index(n) for n in shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 2 or min(shape) < 0:
        fail(f"its shape must be two integers >= 0, got {state.get('_shape', state.get('shape'))!r}")
    if expected_shape is not None and shape != expected_shape:
        fail(f"its shape is {shape}, expected {expected_shape} (kintree_table's joints, v_template's vertices)")
    if shape[0] * shape[1] > MAX_SPARSE_ELEMENTS:
        fail(f"its shape {shape} is too large for a body-model matrix "
             f"(more than {MAX_SPARSE_ELEMENTS} elements)")
    if "data" not in state:
        fail("it has no 'data'")
    try:
        data = np.asarray(state["data"])
    except (TypeError, ValueError):
        data = np.empty((), dtype=object)
    if data.ndim != 1 or data.dtype.kind not in "biuf":
        fail(f"'data' must be a 1-D real numeric array, got {data.dtype} of shape {data.shape}")
    if kind == "coo":
        if "coords" in state and "row" not in state:  # scipy >= 1.13
            coords = state["coords"]
            if not (isinstance(coords, (tuple, list)) and len(coords) == 2):
                fail("'coords' must be a (row, col) pair")
            state = dict(state, row=coords[0], col=coords[1])
        rows, cols = _int_vector(state, "row", fail), _int_vector(state, "col", fail)
        if not len(rows) == len(cols) == len(data):
            fail(f"'row', 'col' and 'data' have {len(rows)}, {len(cols)} and {len(data)} entries; "
                 "expected the same number")
    else:
        indices, indptr = _int_vector(state, "indices", fail), _int_vector(state, "indptr", fail)
        major = shape[1] if kind == "csc" else shape[0]
        axis = "columns" if kind == "csc" else "rows"
        if len(indptr) != major + 1:
            fail(f"'indptr' has {len(indptr)} entries, expected {major + 1} (its {major} {axis} + 1)")
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            fail("'indptr' must start at 0 and never decrease")
        if len(indices) != len(data) or indptr[-1] > len(data):
            fail(f"'indices' and 'data' have {len(indices)} and {len(data)} entries; expected the "
                 f"same number, at least indptr[-1] = {indptr[-1]}")
        nnz = int(indptr[-1])
        indices, data = indices[:nnz], data[:nnz]
        outer = np.repeat(np.arange(major), np.diff(indptr))
        rows, cols = (indices, outer) if kind == "csc" else (outer, indices)
    for axis, ids, size in (("row", rows, shape[0]), ("column", cols, shape[1])):
        if ids.size and (ids.min() < 0 or ids.max() >= size):
            fail(f"{axis} indices outside [0, {size})")
    dense = np.zeros(shape, dtype=data.dtype)
    np.add.at(dense, (rows, cols), data)
    return dense


def _to_numpy(obj: Any, where: str, expected_shape: tuple[int, int] | None = None) -> Any:
    """Replaces placeholders (recursively) by the numpy arrays they hold.

    ``where`` names the field in errors; ``expected_shape`` is checked before a
    sparse matrix is made dense.
    """
    if isinstance(obj, _PickledObject):
        name = obj.source_class
        if name.startswith("scipy"):
            return _sparse_to_dense(obj, where, expected_shape)
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" in state:
            try:
                return np.asarray(_to_numpy(state["x"], where))
            except (TypeError, ValueError) as err:
                if isinstance(err, ModelFileError):
                    raise
                raise ModelFileError(f"{where}: malformed {name}: its 'x' is not an array ({err})") from None
        if "a" in state and "idxs" in state:
            return _chumpy_select(state, where, name)
        raise ModelFileError(
            f"{where}: a pickled {name} object holds no array (state keys: "
            f"{sorted(map(str, state))})"
        )
    if isinstance(obj, dict):
        return {k: _to_numpy(v, f"{where}[{k!r}]") for k, v in obj.items()}
    return obj


def _chumpy_select(state: dict, where: str, name: str) -> np.ndarray:
    """A chumpy ``Select``: ``a.ravel()[idxs]``, reshaped to ``preferred_shape`` if any."""
    base = _to_numpy(state["a"], where)
    try:
        base, idxs = np.asarray(base), np.asarray(state["idxs"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{where}: malformed {name}: 'a' or 'idxs' is not an array ({err})") from None
    if idxs.dtype.kind not in "iu":
        raise ModelFileError(f"{where}: malformed {name}: 'idxs' must be integers, got {idxs.dtype}")
    idxs = idxs.ravel()
    if idxs.size and (idxs.min() < -base.size or idxs.max() >= base.size):
        raise ModelFileError(f"{where}: malformed {name}: 'idxs' outside the {base.size} elements of 'a'")
    out = base.ravel()[idxs]
    shape = state.get("preferred_shape")
    if shape is None:
        return out
    try:
        return out.reshape(shape)
    except (TypeError, ValueError):
        raise ModelFileError(f"{where}: malformed {name}: its {out.size} elements do not fit "
                             f"'preferred_shape' {shape!r}") from None


def _sparse_shapes(data: dict[Any, Any], path: str) -> dict[str, tuple[int, int]]:
    """The shape a sparse ``J_regressor`` must have, ``(J, V)`` from ``kintree_table``
    and ``v_template`` (when those are well formed; otherwise :mod:`smpl` reports them)."""
    shapes = {}
    try:
        template = np.asarray(_to_numpy(data.get("v_template"), f"{path}: field 'v_template'"))
        kintree = np.asarray(_to_numpy(data.get("kintree_table"), f"{path}: field 'kintree_table'"))
    except (TypeError, ValueError):
        return shapes
    if template.ndim == 2 and template.shape[1] == 3 and kintree.ndim == 2 and kintree.shape[0] == 2:
        shapes["J_regressor"] = (kintree.shape[1], template.shape[0])
    return shapes


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads an SMPL ``.pkl`` (chumpy or plain) or smplx ``.npz`` into a dict.

    Values are numpy arrays (sparse matrices made dense) or plain Python
    objects. Refuses pickles that reference other classes.

    Errors:
      FileNotFoundError / IsADirectoryError: no file at ``path``.
      ModelFileError: naming the file (and field) for anything else: not a
        pickle or ``.npz`` ("not an SMPL model file (expected .pkl or .npz)"),
        a truncated one, a pickle of other classes, malformed chumpy or sparse
        payloads (sparse index ranges, ``indptr`` length, a ``J_regressor``
        other than ``(J, V)``, all checked before anything is made dense).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; pass the body model file itself "
                                "(e.g. SMPL_NEUTRAL.pkl or basicModel_neutral_lbs_10_207_0_v1.0.0.pkl)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no body model file at {path!r}")
    if zipfile.is_zipfile(path):
        return _read_npz(path)
    with open(path, "rb") as stream:
        magic = stream.read(2)
    if magic == b"PK":
        raise ModelFileError(f"{path}: {NOT_A_MODEL}: a truncated or damaged zip (.npz) file")
    with open(path, "rb") as stream:
        try:
            data = _RestrictedUnpickler(stream, encoding="latin1").load()
        except _Refused as err:
            raise ModelFileError(f"{path}: {err}") from None
        except EOFError:
            raise ModelFileError(f"{path}: {NOT_A_MODEL}: the data ends early (a truncated pickle?)") from None
        except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, RecursionError, OverflowError):
            raise ModelFileError(f"{path}: {NOT_A_MODEL}: it is not a readable pickle") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: {NOT_A_MODEL}: expected a pickled dict of model arrays, "
                             f"got {type(data).__name__}")
    shapes = _sparse_shapes(data, path)
    try:
        return {key: _to_numpy(value, f"{path}: field {key!r}", shapes.get(key))
                for key, value in data.items()}
    except RecursionError:
        raise ModelFileError(f"{path}: {NOT_A_MODEL}: its objects are nested too deeply") from None


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (never unpickling object arrays)."""
    out = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    out[key] = archive[key]
                except ValueError as err:
                    if "allow_pickle" in str(err):
                        raise ModelFileError(f"{path}: field {key!r} is an object array (pickled data); "
                                             "an .npz model must hold plain numeric arrays") from None
                    raise ModelFileError(f"{path}: field {key!r} cannot be read ({err})") from None
                except MemoryError:
                    raise ModelFileError(f"{path}: field {key!r} declares an array too large to read") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(f"{path}: {NOT_A_MODEL}: a damaged .npz ({err})") from None
    return out


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
    data = read_model_file(in_path)
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

    smpl.build_model(v_template=arrays["v_template"], shapedirs=arrays["shapedirs"],
                     posedirs=arrays["posedirs"], J_regressor=arrays["J_regressor"],
                     lbs_weights=arrays["weights"], faces=arrays["f"],
                     parents=smpl.parents_from_kintree(arrays["kintree_table"], source), source=source)


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
