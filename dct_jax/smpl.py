"""A pure-JAX, differentiable SMPL body model.

Usage::

    from dct_jax import smpl
    model = smpl.load("basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")  # or smpl.load()
    out = smpl.forward(model, pose, betas)   # pose (..., 72), betas (..., 10)
    out.vertices  # (..., 6890, 3)
    out.joints    # (..., 24, 3)

The model is an immutable pytree of arrays (:class:`SMPLModel`) made once by
:func:`load`; :func:`forward` is a pure function of it, jit-, grad- and
vmap-safe, with any number of leading batch dimensions. Semantics follow the
public SMPL definition as implemented by smplx's ``lbs``, step by step:

1. shape blend shapes: ``v_shaped = v_template + shapedirs . betas``
2. joints regressed from the shaped template: ``J = J_regressor @ v_shaped``
   (as ``J_regressor @ v_template + (J_regressor @ shapedirs) . betas``),
   reading only the vertices the regressor weighs
3. pose blend shapes from ``(R[1:] - I)`` flattened joint-major (skipped for
   a body without them, e.g. the free default body)
4. the 4x4 kinematic chain over the static ``parents``
5. linear blend skinning with ``lbs_weights``.

Units: metres; SMPL's frame (y up, the body faces +z).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import numbers
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dct_jax import geometry
from dct_jax.smpl_io import ModelFileError, read_model_file

DEFAULT_MODEL_FILE = "default_body.npz"

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
# SMPL's kinematic tree (parent of each joint in SMPL_JOINT_NAMES; -1: root).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)



@struct.dataclass
class SMPLModel:
    """SMPL-format body model arrays (smplx's names and layouts).

    Read as smplx's buffers:
      v_template: ``(V, 3)`` rest-pose mean-shape vertices.
      shapedirs: ``(V, 3, NB)`` shape blend shapes.
      posedirs: ``(V, 3, P)`` pose blend shapes, ``P = 9 * (J - 1)`` over the
        pose feature ``(R[1:] - I)`` flattened joint-major (the layout of SMPL's
        files; smplx keeps the transpose ``(P, V * 3)``); zeros for a body
        without pose correctives (a property: see below).
      J_regressor: ``(J, V)`` joint regressor, dense (a property: see below).
      lbs_weights: ``(V, J)`` skinning weights.
      faces: ``(F, 3)`` int32 triangle vertex ids.
      parents: static tuple of ``J`` parent ids, ``parents[0] = -1``.

    Two of smplx's buffers are stored in a form whose structure is static (a
    jit-time fact, part of the pytree's structure), so that :func:`forward`
    skips work that cannot change its result:

      pose_correctives: ``(V, 3, P)`` pose blend shapes, or ``None``: the body
        has none (e.g. the free default body), and the pose feature x posedirs
        product and its gradient are skipped; the result equals computing with
        zeros, bit for bit (:func:`build_model` drops an all-zero ``posedirs``).
      regressor_weights: ``(J, U)`` the columns of ``J_regressor`` at
        ``regressor_vertices``; the joints read only those vertices.
      regressor_vertices: static sorted tuple of ``U`` vertex ids holding every
        non-zero column of ``J_regressor``, or ``None``: all ``V`` (dense).

    ``posedirs`` and ``J_regressor`` are derived from these fields, never
    stored beside them, so nothing can go stale: whatever replaces, maps
    (``jax.tree.map``) or differentiates the arrays, the model is what its
    fields say (an absent ``pose_correctives`` has no leaf to change, and
    ``regressor_vertices`` only says where ``regressor_weights`` sit).
    ``model.replace(posedirs=..., J_regressor=...)`` takes smplx's dense
    arrays (``posedirs=None``: no pose correctives) and derives the fields: a
    concrete ``J_regressor`` is stored over its non-zero columns (dense when
    those are more than half), a traced one (under jit or grad) densely.
    ``dataclasses.replace`` and the constructor take the stored fields only.

    Gradients with respect to the model's arrays work too (e.g. to fit a
    template); since ``faces`` is an integer leaf, differentiate a function of
    the whole model with ``jax.grad(..., allow_int=True)``. They are
    gradients of the stored fields: ``regressor_weights`` (the regressor's
    support is fixed; ``replace(regressor_weights=W, regressor_vertices=None)``
    with a dense ``(J, V)`` ``W`` fits every column) and, only if present,
    ``pose_correctives`` (``replace(posedirs=jnp.zeros_like(model.posedirs))``
    makes them zeros to fit).
    """

    v_template: jnp.ndarray
    shapedirs: jnp.ndarray
    pose_correctives: jnp.ndarray | None
    regressor_weights: jnp.ndarray
    lbs_weights: jnp.ndarray
    faces: jnp.ndarray
    parents: tuple[int, ...] = struct.field(pytree_node=False)
    regressor_vertices: tuple[int, ...] | None = struct.field(pytree_node=False, default=None)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def posedirs(self) -> jnp.ndarray:
        """``(V, 3, P)`` pose blend shapes (zeros when the body has none)."""
        if self.pose_correctives is not None:
            return self.pose_correctives
        return jnp.zeros((self.num_vertices, 3, 9 * (self.num_joints - 1)), self.v_template.dtype)

    @property
    def J_regressor(self) -> jnp.ndarray:  # noqa: N802 - smplx's name
        """``(J, V)`` dense joint regressor."""
        if self.regressor_vertices is None:
            return self.regressor_weights
        weights = self.regressor_weights
        dense = jnp.zeros((weights.shape[0], self.num_vertices), weights.dtype)
        return dense.at[:, np.asarray(self.regressor_vertices, np.int32)].set(
            weights, indices_are_sorted=True, unique_indices=True)


def _replace_model(self: SMPLModel, **updates: Any) -> SMPLModel:
    """Returns a new model with fields replaced; besides the stored fields,
    ``posedirs`` (an array or ``None``) and a dense ``J_regressor`` (see
    :class:`SMPLModel`)."""
    if "posedirs" in updates:
        updates["pose_correctives"] = updates.pop("posedirs")
    if "J_regressor" in updates:
        weights, vertices = _sparse_regressor(updates.pop("J_regressor"))
        updates.update(regressor_weights=weights, regressor_vertices=vertices)
    return dataclasses.replace(self, **updates)


# After the decorator, which sets a plain ``dataclasses.replace`` (flax's
# state-dict restore calls it with stored field names, which pass through).
SMPLModel.replace = _replace_model


def _sparse_regressor(J_regressor: Any) -> tuple[jnp.ndarray, tuple[int, ...] | None]:  # noqa: N803
    """``(J, V)`` regressor -> ``regressor_weights`` and ``regressor_vertices``:
    its columns holding any non-zero (or NaN) entry when it is concrete and
    they are at most half of them (gathering more costs more than reading
    all), else the whole array (dense)."""
    if isinstance(J_regressor, jax.core.Tracer):
        return J_regressor, None
    try:
        values = np.asarray(J_regressor)
    except Exception:  # noqa: BLE001 - e.g. arrays not addressable from this process
        return J_regressor, None
    if values.ndim != 2 or values.dtype == object:
        return J_regressor, None
    columns = np.flatnonzero(np.any(values != 0, axis=0))
    if 2 * columns.size > values.shape[1]:
        return jnp.asarray(J_regressor), None
    return jnp.asarray(J_regressor)[:, columns], tuple(int(c) for c in columns)


@struct.dataclass
class SMPLOutput:
    """Result of :func:`forward`.

    Attributes:
      vertices: ``(..., V, 3)`` posed mesh vertices.
      joints: ``(..., J, 3)`` posed joints (J = 24 for SMPL).
      rotmats: ``(..., J, 3, 3)`` local joint rotations used.
    """

    vertices: jnp.ndarray
    joints: jnp.ndarray
    rotmats: jnp.ndarray


def build_model(
    *,
    v_template: Any,
    shapedirs: Any,
    posedirs: Any,
    J_regressor: Any,
    lbs_weights: Any,
    faces: Any,
    parents: Sequence[int],
    num_betas: int | None = None,
    dtype: Any = jnp.float32,
    source: str = "arrays",
) -> SMPLModel:
    """Validates SMPL arrays and makes an :class:`SMPLModel`.

    ``posedirs`` may be ``(V, 3, P)`` (the layout of SMPL's files) or
    ``(P, V * 3)`` (smplx's buffer); it is kept as ``(V, 3, P)``, or dropped
    when it is all zeros or ``None`` (a body without pose correctives, whose
    forward pass skips them; see :class:`SMPLModel`). ``J_regressor`` is kept
    over its non-zero columns. ``source`` names the origin in errors.
    ``num_betas`` and ``dtype`` are as in :func:`load` (``None``: every shape
    component).

    Errors:
      ModelFileError (a ValueError) naming ``source`` and the field: an array
        of the wrong shape, not real-valued, or with NaN/inf; no vertices or no
        shape components; ``faces`` with non-integer values or vertex ids out
        of range; ``parents`` that are not a tree listed parents-first
        (``parents[0] == -1``, ``0 <= parents[j] < j``).
      TypeError / ValueError: ``num_betas`` not an integer >= 1, ``dtype``
        not a floating dtype JAX provides (float64 needs ``jax_enable_x64``).
    """
    num_betas = _check_num_betas(num_betas)
    dtype = _check_dtype(dtype)
    v_template = _as_array(v_template, "v_template", source)
    num_vertices = v_template.shape[0] if v_template.ndim == 2 else -1
    _expect(v_template.ndim == 2 and v_template.shape[1] == 3, source, "v_template", "(V, 3)", v_template)
    if num_vertices == 0:
        raise ModelFileError(f"{source}: field 'v_template' has no vertices")
    parents = _as_array(parents, "kintree_table", source, integer=True)
    _expect(parents.ndim == 1 and parents.size >= 1, source, "kintree_table",
            "(2, J) with J >= 1 (parents: a sequence of J ints)", parents)
    parents = tuple(int(p) for p in parents)
    num_joints = len(parents)
    try:
        geometry._check_parents(parents, num_joints)
    except ValueError as err:
        raise ModelFileError(f"{source}: field 'kintree_table' (parents) is not a kinematic tree "
                             f"listed parents-first: {err}") from None

    shapedirs = _as_array(shapedirs, "shapedirs", source)
    _expect(shapedirs.ndim == 3 and shapedirs.shape[:2] == (num_vertices, 3), source,
            "shapedirs", f"({num_vertices}, 3, NB)", shapedirs)
    if shapedirs.shape[2] == 0:
        raise ModelFileError(f"{source}: field 'shapedirs' has no shape components (shape {shapedirs.shape})")
    if num_betas is not None:
        if num_betas > shapedirs.shape[2]:
            logging.info("%s has %d shape components; using those instead of %d",
                         source, shapedirs.shape[2], num_betas)
        shapedirs = shapedirs[:, :, :num_betas]

    num_pose = 9 * (num_joints - 1)
    if posedirs is not None:
        posedirs = _as_array(posedirs, "posedirs", source)
        if posedirs.shape == (num_pose, num_vertices * 3):
            posedirs = posedirs.T.reshape(num_vertices, 3, num_pose)
        _expect(posedirs.shape == (num_vertices, 3, num_pose), source, "posedirs",
                f"({num_vertices}, 3, {num_pose}) or ({num_pose}, {num_vertices * 3})", posedirs)

    J_regressor = _as_array(J_regressor, "J_regressor", source)
    _expect(J_regressor.shape == (num_joints, num_vertices), source, "J_regressor",
            f"({num_joints}, {num_vertices})", J_regressor)
    lbs_weights = _as_array(lbs_weights, "weights", source)
    _expect(lbs_weights.shape == (num_vertices, num_joints), source, "weights",
            f"({num_vertices}, {num_joints})", lbs_weights)
    faces = _as_array(faces, "f", source, integer=True)
    _expect(faces.ndim == 2 and faces.shape[1] == 3, source, "f", "(F, 3)", faces)
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ModelFileError(f"{source}: field 'f' has vertex ids outside [0, {num_vertices})")
    for name, array in (("v_template", v_template), ("shapedirs", shapedirs),
                        ("posedirs", posedirs), ("J_regressor", J_regressor),
                        ("weights", lbs_weights)):
        if array is not None and not np.all(np.isfinite(array)):
            raise ModelFileError(f"{source}: field {name!r} contains NaN or inf")

    cast = lambda a: jnp.asarray(a, dtype=dtype)  # noqa: E731
    regressor_weights, regressor_vertices = _sparse_regressor(cast(J_regressor))
    return SMPLModel(
        v_template=cast(v_template),
        shapedirs=cast(shapedirs),
        pose_correctives=cast(posedirs) if posedirs is not None and np.any(posedirs) else None,
        regressor_weights=regressor_weights,
        lbs_weights=cast(lbs_weights),
        faces=jnp.asarray(faces, dtype=jnp.int32),
        parents=parents,
        regressor_vertices=regressor_vertices,
    )


def parents_from_kintree(kintree_table: Any, source: str = "arrays") -> list[int]:
    """Parent ids from SMPL's ``kintree_table (2, J)``: row 1 the joint ids
    ``0..J-1``, row 0 their parents (the root's, e.g. uint32 ``-1``, is ignored).

    Errors:
      ModelFileError naming ``source``: not ``(2, J)`` integers, or row 1 is
        not ``0..J-1`` (other joint numberings are not supported).
    """
    kintree = _as_array(kintree_table, "kintree_table", source, integer=True)
    _expect(kintree.ndim == 2 and kintree.shape[0] == 2 and kintree.shape[1] >= 1, source,
            "kintree_table", "(2, J)", kintree)
    if not np.array_equal(kintree[1], np.arange(kintree.shape[1])):
        raise ModelFileError(f"{source}: field 'kintree_table' row 1 must be the joint ids "
                             f"0..{kintree.shape[1] - 1} in order, got {kintree[1].tolist()}")
    return [-1] + [int(p) for p in kintree[0, 1:]]


def load(path: str | os.PathLike | None = None, *, num_betas: int | None = 10,
         dtype: Any = jnp.float32) -> SMPLModel:
    """Loads an SMPL-format model.

    Args:
      path: an original SMPL ``.pkl`` (chumpy inside is fine: chumpy is not
        needed), a chumpy-free ``.pkl`` or a smplx-style ``.npz``. ``None``
        loads dct_jax's embedded free default body.
      num_betas: shape components to keep, an int >= 1 (at most what the
        file has: a file with fewer gives those, logged); ``None``: all.
      dtype: a floating dtype for the arrays (``jnp.float32``, ``jnp.bfloat16``,
        ...; ``jnp.float64`` needs ``jax_enable_x64``).

    Errors (arguments are checked before the file is read):
      TypeError: ``num_betas`` not an int, ``dtype`` not a floating dtype
        (an integer model would pose every body to zeros).
      ValueError: ``num_betas < 1``; ``jnp.float64`` without ``jax_enable_x64``
        (JAX would silently make float32 arrays).
      FileNotFoundError / IsADirectoryError: no file at ``path`` (or no
        embedded default body).
      ModelFileError (a ValueError), naming the file and the field: not a
        ``.pkl``/``.npz`` model file ("not an SMPL model file (expected .pkl
        or .npz)"); a pickle of anything but model arrays (it is then not
        unpickled further); a missing, ill-shaped, non-numeric or non-finite
        field; malformed chumpy or sparse payloads; non-integer faces;
        a ``kintree_table`` that is not a tree. See :func:`build_model`.
    """
    num_betas = _check_num_betas(num_betas)
    dtype = _check_dtype(dtype)
    if path is None:
        path = resources.files("dct_jax") / "assets" / DEFAULT_MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"the embedded default body {path} is missing from this installation. "
                "Pass the path of an SMPL model instead: register at "
                "https://smpl.is.tue.mpg.de, download 'SMPL for Python' and use e.g. "
                "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl (or SMPL_NEUTRAL.pkl from smplx)."
            )
    try:
        source = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a file path (str or os.PathLike) or None, "
                        f"got {type(path).__name__}") from None
    data = read_model_file(source)
    missing = [k for k in ("v_template", "shapedirs", "posedirs", "J_regressor",
                           "weights", "kintree_table", "f") if k not in data]
    if missing:
        raise ModelFileError(f"{source}: missing field(s) {missing}; found {sorted(map(str, data))}")
    return build_model(
        v_template=data["v_template"], shapedirs=data["shapedirs"],
        posedirs=data["posedirs"], J_regressor=data["J_regressor"],
        lbs_weights=data["weights"], faces=data["f"],
        parents=parents_from_kintree(data["kintree_table"], source),
        num_betas=num_betas, dtype=dtype, source=source,
    )


def forward(model: SMPLModel, pose: jnp.ndarray, betas: jnp.ndarray, *,
            transl: jnp.ndarray | None = None) -> SMPLOutput:
    """Poses and shapes the body.

    Args:
      model: from :func:`load` / :func:`build_model`.
      pose: axis-angle ``(..., J * 3)`` or ``(..., J, 3)``, or rotation
        matrices ``(..., J, 3, 3)``; joint 0 is the global rotation. Rotation
        matrices must be proper rotations (orthonormal, determinant +1): a
        concrete array is checked (to 1e-3), a traced one (under jit, grad or
        vmap) is not, and anything else skins the body with shears/scales.
      betas: ``(..., K)`` shape coefficients, ``K <= model.num_betas``
        (missing ones are zero). Leading dims broadcast with pose's.
      transl: optional ``(..., 3)`` translation added to vertices and joints;
        its leading dims broadcast with pose's and betas'.

    Any leading dims work, including empty batches (``(0, 72)`` gives
    ``(0, V, 3)`` vertices). Integer inputs are cast to the model's dtype.

    Returns:
      :class:`SMPLOutput` with ``vertices (..., V, 3)``, ``joints (..., J, 3)``
      and ``rotmats (..., J, 3, 3)``, in the model's dtype.

    Errors (from shapes and dtypes only, so nothing is added to a jitted call):
      TypeError: ``model`` not an :class:`SMPLModel`; ``pose``/``betas``/
        ``transl`` not real numeric arrays (e.g. strings, complex, bool).
      ValueError: ``pose`` of none of the shapes above; ``betas`` a scalar or
        longer than ``model.num_betas``; ``transl`` not ``(..., 3)``; leading
        dims that do not broadcast; concrete rotation matrices that are not
        rotations.
    """
    if not isinstance(model, SMPLModel):
        raise TypeError(f"model must be an SMPLModel (from smpl.load), got {type(model).__name__}")
    num_joints = model.num_joints
    dtype = model.v_template.dtype
    pose = _real_input(pose, "pose", dtype)
    betas = _real_input(betas, "betas", dtype)
    if pose.shape[-3:] == (num_joints, 3, 3):
        _check_rotations(pose)
        rotmats = pose
    elif pose.shape[-2:] == (num_joints, 3):
        rotmats = geometry.rodrigues(pose)
    elif pose.ndim >= 1 and pose.shape[-1] == num_joints * 3:
        rotmats = geometry.rodrigues(pose.reshape(*pose.shape[:-1], num_joints, 3))
    else:
        raise ValueError(
            f"pose has shape {pose.shape}; expected (..., {num_joints * 3}) or "
            f"(..., {num_joints}, 3) axis-angle, or (..., {num_joints}, 3, 3) rotation matrices"
        )
    if betas.ndim == 0 or betas.shape[-1] > model.num_betas:
        raise ValueError(f"betas has shape {betas.shape}; expected (..., K) with K <= "
                         f"{model.num_betas} (the model's shape components)")
    batch_shapes = {"pose": rotmats.shape[:-3], "betas": betas.shape[:-1]}
    if transl is not None:
        transl = _real_input(transl, "transl", dtype)
        if transl.ndim == 0 or transl.shape[-1] != 3:
            raise ValueError(f"transl has shape {transl.shape}; expected (..., 3)")
        batch_shapes["transl"] = transl.shape[:-1]
    try:
        batch_shape = jnp.broadcast_shapes(*batch_shapes.values())
    except ValueError:
        raise ValueError("the leading (batch) dimensions of " + ", ".join(
            f"{name} {shape}" for name, shape in batch_shapes.items()) + " do not broadcast") from None
    if betas.shape[-1] < model.num_betas:
        pad = [(0, 0)] * (betas.ndim - 1) + [(0, model.num_betas - betas.shape[-1])]
        betas = jnp.pad(betas, pad)
    rotmats = jnp.broadcast_to(rotmats, (*batch_shape, num_joints, 3, 3))
    betas = jnp.broadcast_to(betas, (*batch_shape, model.num_betas))

    flat_rot = rotmats.reshape(-1, num_joints, 3, 3)
    flat_betas = betas.reshape(-1, model.num_betas)
    vertices, joints = lbs(model, flat_rot, flat_betas)
    vertices = vertices.reshape(*batch_shape, model.num_vertices, 3)
    joints = joints.reshape(*batch_shape, num_joints, 3)
    if transl is not None:
        transl = transl[..., None, :]
        vertices = vertices + transl
        joints = joints + transl
    return SMPLOutput(vertices=vertices, joints=joints, rotmats=rotmats)


def _check_num_betas(num_betas: Any) -> int | None:
    if num_betas is None:
        return None
    if isinstance(num_betas, bool) or not isinstance(num_betas, numbers.Integral):
        raise TypeError(f"num_betas must be an int >= 1 (or None: all), got {num_betas!r}")
    if num_betas < 1:
        raise ValueError(f"num_betas must be >= 1 (shape components to keep), got {num_betas}")
    return int(num_betas)


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32, got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype (jnp.float32, jnp.float64, jnp.bfloat16, "
                        f"...), got {dtype}")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(f"dtype {dtype} needs jax_enable_x64 (jax.config.update('jax_enable_x64', True) "
                         f"or `with jax.enable_x64(True):`); without it JAX would make "
                         f"{jax.dtypes.canonicalize_dtype(dtype)} arrays")
    return dtype


def _real_input(value: Any, name: str, dtype: Any) -> jnp.ndarray:
    """``value`` as an array of ``dtype``, refusing what is not real numbers
    (from the dtype alone: no work is added under jit)."""
    if not hasattr(value, "dtype"):  # lists, scalars
        try:
            value = np.asarray(value)
        except (TypeError, ValueError):
            try:
                value = jnp.asarray(value)  # e.g. a list of traced scalars
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}") from None
    if not (np.dtype(value.dtype).kind in "iu" or jnp.issubdtype(value.dtype, jnp.floating)):
        raise TypeError(f"{name} must hold real numbers (a float or int array), got dtype {value.dtype}")
    return jnp.asarray(value, dtype)


# Largest |R^T R - I| and |det R - 1| accepted for a concrete rotation-matrix pose.
_ROTATION_TOLERANCE = 1e-3


def _check_rotations(rotmats: jnp.ndarray) -> None:
    """Checks concrete ``(..., 3, 3)`` matrices are rotations (skipped for tracers:
    forward adds no work to a jitted computation)."""
    if isinstance(rotmats, jax.core.Tracer) or rotmats.size == 0:
        return
    try:
        r = np.asarray(rotmats, dtype=np.float64)
    except Exception:  # noqa: BLE001 - e.g. arrays not addressable from this process
        return
    orthonormality = np.abs(np.einsum("...ki,...kj->...ij", r, r) - np.eye(3)).max(axis=(-2, -1))
    det_error = np.abs(np.linalg.det(r) - 1.0)
    tolerance = max(_ROTATION_TOLERANCE, 10 * float(jnp.finfo(rotmats.dtype).eps))
    bad = (orthonormality > tolerance) | (det_error > tolerance)
    if np.any(bad):
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"pose holds rotation matrices (shape {rotmats.shape}) but pose{list(index)} is not a rotation "
            f"(|R^T R - I| = {orthonormality[index]:.2g}, det = {np.linalg.det(r[index]):.3g}); "
            "pass proper rotations (orthonormal, det +1) or axis-angle"
        )


def lbs(model: SMPLModel, rotmats: jnp.ndarray, betas: jnp.ndarray
        ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Linear blend skinning for a flat batch.

    Args:
      model: the body model.
      rotmats: ``(N, J, 3, 3)`` local joint rotations.
      betas: ``(N, NB)`` shape coefficients.

    Returns:
      ``vertices (N, V, 3)`` and ``joints (N, J, 3)``.
    """
    n, num_joints = rotmats.shape[:2]
    num_vertices = model.num_vertices
    if n == 0:  # an empty batch (static shape): nothing to pose
        return (jnp.zeros((0, num_vertices, 3), rotmats.dtype), jnp.zeros((0, num_joints, 3), rotmats.dtype))
    # Pose feature (R[1:] - I), flattened joint-major as SMPL's posedirs expect;
    # None (static) without pose correctives: their product is skipped.
    posedirs = model.pose_correctives
    pose_feature = None
    if posedirs is not None:
        pose_feature = (rotmats[:, 1:] - jnp.eye(3, dtype=rotmats.dtype)).reshape(n, -1)
    rest_joints = _regress_joints(model, betas)
    # Kinematic chain: per joint a (3, 4) transform from rest to posed space,
    # laid out (J, 3 * 4 * N) so that skinning is one 2D matmul per chunk.
    joints, transforms = geometry.rigid_transform_chain(rotmats, rest_joints, model.parents)
    per_joint = transforms.transpose(1, 2, 3, 0).reshape(num_joints, 12 * n)

    # The skinning runs over chunks of vertices so that each chunk's (C, 3, 4,
    # N) blended transforms stay in cache (backward; forward only above
    # _WHOLE_FORWARD_ELEMENTS: below, the whole body at once is faster). Small
    # batches compute the blend shapes over all vertices at once first (each
    # model array read in place, once forward and once backward; sliced per
    # chunk, XLA copies posedirs' chunks, which costs more than the blend at
    # these sizes).
    chunk = _vertex_chunk_size(num_vertices, n)
    forward_chunk = _forward_chunk_size(num_vertices, n)
    if n <= _WHOLE_BLEND_MAX_BATCH or forward_chunk == num_vertices:
        v_posed = _blend_shapes(pose_feature, betas, model.v_template, model.shapedirs, posedirs)
        vertices = _skin_points(v_posed, per_joint, model.lbs_weights, forward_chunk, chunk)
    else:
        # Larger batches: the blend shapes too per chunk, in cache with the skinning.
        def one_chunk(start, mask):
            return (_blend_and_skin(start, chunk, pose_feature, betas, per_joint, model.v_template,
                                    model.shapedirs, posedirs, model.lbs_weights),), ()

        (vertices,), _ = _chunk_map(one_chunk, chunk, num_vertices)
    return vertices.transpose(2, 0, 1), joints


def _regress_joints(model: SMPLModel, betas: jnp.ndarray) -> jnp.ndarray:
    """``(N, J, 3)`` rest joints ``J_regressor @ (v_template + shapedirs . betas)``.

    Only the regressor's ``U`` static ``regressor_vertices`` are read (all
    ``V`` for a dense one): ``regressor_weights (J, U)`` times the template
    and shape directions gathered there. The map is linear, so for larger
    batches the regressor is applied to the template and each shape direction
    once (``J * U * 3 * (NB + 1)`` work per call) instead of to every shaped
    body (``J * U * 3`` plus the blend per example); small batches do the
    latter, which is cheaper for them. Nothing is precomputed, so the result
    always follows the model's current arrays.
    """
    n, num_betas = betas.shape
    weights = model.regressor_weights
    v_template, shapedirs = model.v_template, model.shapedirs
    if model.regressor_vertices is not None:
        # Static sorted unique ids: a gather whose gradient is a plain scatter.
        ids = np.asarray(model.regressor_vertices, np.int32)
        v_template = v_template.at[ids].get(mode="promise_in_bounds", indices_are_sorted=True,
                                            unique_indices=True)
        shapedirs = shapedirs.at[ids].get(mode="promise_in_bounds", indices_are_sorted=True,
                                          unique_indices=True)
    if n * (num_betas + model.num_joints) < model.num_joints * (num_betas + 1):
        # Vertex-major (U, 3, N) so both steps are plain 2D matmuls.
        v_shaped = ((shapedirs.reshape(-1, num_betas) @ betas.T).reshape(-1, 3, n)
                    + v_template[:, :, None])
        return jnp.einsum("jv,vkn->njk", weights, v_shaped)
    joint_template = weights @ v_template
    joint_shapedirs = jnp.einsum("jv,vkb->jkb", weights, shapedirs)
    return joint_template + jnp.einsum("nb,jkb->njk", betas, joint_shapedirs)


# Vertices x examples per chunk: the chunk's (C, 3, 4, N) float32 transforms
# then take 3 MB, which stays in this CPU's L2/L3 (measured in
# benchmarks/smpl_speed.py: twice as fast as one pass over all vertices).
_CHUNK_ELEMENTS = 65536


# Batches up to this size blend all vertices before skinning in chunks; larger
# ones blend and skin per chunk (benchmarks/smpl_speed.py: 1.5x faster forward
# and backward at batch 16, the per-chunk blend faster from batch 64 up).
_WHOLE_BLEND_MAX_BATCH = 32


# Up to this many vertices x examples the whole body is one chunk: the chunked
# loop's slicing and stacking cost more than the cache misses (batch 16 of
# SMPL's 6,890 vertices: 1.3-1.4x faster forward, 1.4-1.6x forward+backward in
# benchmarks/smpl_speed.py; at 32 and above chunks win).
_WHOLE_BODY_ELEMENTS = 131072


# The forward pass skins the whole body at once up to this many vertices x
# examples (76 SMPL bodies), the backward pass keeps the chunks above: one
# matmul and one fused pass over all vertices beat the chunk loop forward
# (benchmarks/smpl_speed.py, 2026-12-07: forward at 32 bodies 11.4 -> 7.6 ms,
# at 64 22.0 -> 13.2 ms; at 128 the chunks win, 50.7 against 58.9 ms).
_WHOLE_FORWARD_ELEMENTS = 524288


def _forward_chunk_size(num_vertices: int, batch: int) -> int:
    if num_vertices * batch <= _WHOLE_FORWARD_ELEMENTS:
        return num_vertices
    return _vertex_chunk_size(num_vertices, batch)


def _vertex_chunk_size(num_vertices: int, batch: int) -> int:
    if num_vertices * batch <= _WHOLE_BODY_ELEMENTS:
        return num_vertices
    return int(min(num_vertices, max(256, _CHUNK_ELEMENTS // max(batch, 1))))


def _chunk_starts(num_vertices: int, chunk: int) -> list[int]:
    num_chunks = -(-num_vertices // chunk)
    return [min(i * chunk, num_vertices - chunk) for i in range(num_chunks)]


def _blend_shapes(pose_feature, betas, v_template, shapedirs, posedirs):
    """``(C, 3, N)`` template plus shape and pose blend shapes of C vertices,
    each one ``(C * 3, K) @ (K, N)`` matmul; ``posedirs`` and ``pose_feature``
    ``None``: no pose blend shapes (the same values as a zero ``posedirs``).

    The optimization barriers keep XLA from fusing the sum into the matmuls:
    on CPU the fused kernel is up to 2x slower than the plain matmul.
    """
    c = v_template.shape[0]
    shaped = jax.lax.optimization_barrier(shapedirs.reshape(c * 3, -1) @ betas.T)
    if posedirs is not None:
        shaped = shaped + jax.lax.optimization_barrier(posedirs.reshape(c * 3, -1) @ pose_feature.T)
    return shaped.reshape(c, 3, -1) + v_template[:, :, None]


def _blend_transforms(lbs_weights, per_joint):
    """``(C, 3, 4, N)``: each vertex's transform, the skinning-weighted sum of
    its joints' ``per_joint (J, 12 N)`` transforms."""
    return (lbs_weights @ per_joint).reshape(lbs_weights.shape[0], 3, 4, -1)


def _apply_transforms(blended: jnp.ndarray, v_posed: jnp.ndarray) -> jnp.ndarray:
    """``(C, 3, 4, N)`` transforms applied to ``(C, 3, N)`` points -> ``(C, 3, N)``.

    Four broadcast multiply-adds, which XLA fuses into one pass (a batched 3x3
    einsum is several times slower on CPU).
    """
    return (blended[:, :, 0] * v_posed[:, None, 0] + blended[:, :, 1] * v_posed[:, None, 1]
            + blended[:, :, 2] * v_posed[:, None, 2] + blended[:, :, 3])


def _apply_transforms_vjp(grad, blended, v_posed):
    """Cotangents of :func:`_apply_transforms`: ``(C, 12 N)`` for the
    transforms (laid out like ``per_joint``) and ``(C, 3, N)`` for the points,
    each one fused elementwise pass."""
    c, _, n = grad.shape
    # out[r] = sum_k blended[r, k] * v_posed_h[k] with v_posed_h = (v_posed, 1).
    grad_blended = jnp.stack([grad * v_posed[:, None, 0], grad * v_posed[:, None, 1],
                              grad * v_posed[:, None, 2], grad], axis=2).reshape(c, 12 * n)
    grad_v_posed = (grad[:, 0:1] * blended[:, 0, :3] + grad[:, 1:2] * blended[:, 1, :3]
                    + grad[:, 2:3] * blended[:, 2, :3])
    return grad_blended, grad_v_posed


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _blend_and_skin(start, chunk, pose_feature, betas, per_joint, v_template, shapedirs,
                    posedirs, lbs_weights):
    """Blend shapes and skinning of the ``chunk`` vertices from ``start``.

    Args:
      start: int32 scalar, first vertex of the chunk; chunk: static chunk size C.
      pose_feature: ``(N, P)``, or ``None`` with ``posedirs``; betas: ``(N, NB)``.
      per_joint: ``(J, 3 * 4 * N)`` per-joint transforms, laid out (J, 3, 4, N).
      v_template, shapedirs, posedirs, lbs_weights: the model's whole arrays
        (sliced here, so that the VJP's residuals are loop-invariant and a
        ``lax.map`` over chunks stacks only the chunk's posed template);
        ``posedirs`` ``None``: no pose blend shapes.

    Returns:
      ``(C, 3, N)`` skinned vertices (examples innermost, so the elementwise
      work vectorizes over the batch).
    """
    v_posed, blended = _chunk_intermediates(start, chunk, pose_feature, betas, per_joint,
                                            v_template, shapedirs, posedirs, lbs_weights)
    return _apply_transforms(blended, v_posed)


def _take(array, start, chunk):
    if array is None:
        return None
    return jax.lax.dynamic_slice_in_dim(array, start, chunk, axis=0)


def _chunk_intermediates(start, chunk, pose_feature, betas, per_joint, v_template, shapedirs,
                         posedirs, lbs_weights):
    """``v_posed (C, 3, N)`` and ``blended (C, 3, 4, N)`` of a chunk."""
    v_posed = _blend_shapes(pose_feature, betas, _take(v_template, start, chunk),
                            _take(shapedirs, start, chunk), _take(posedirs, start, chunk))
    return v_posed, _blend_transforms(_take(lbs_weights, start, chunk), per_joint)


def _blend_and_skin_fwd(start, chunk, *args):
    v_posed, blended = _chunk_intermediates(start, chunk, *args)
    return _apply_transforms(blended, v_posed), (start, v_posed, *args)


def _blend_and_skin_bwd(chunk, residuals, grad):
    """Hand-written VJP: keeps the chunk's posed template ``(C, 3, N)`` (small;
    recomputing it would read posedirs again), recomputes the blended
    transforms (12x larger, cheap to recompute) and keeps every step a matmul
    or a fused elementwise pass."""
    start, v_posed, pose_feature, betas, per_joint, v_template, shapedirs, posedirs, lbs_weights = residuals
    weights_chunk = _take(lbs_weights, start, chunk)
    blended = _blend_transforms(weights_chunk, per_joint)
    n = grad.shape[-1]
    grad_blended, grad_v_posed = _apply_transforms_vjp(grad, blended, v_posed)
    grad_flat = grad_v_posed.reshape(chunk * 3, n)

    def scatter(full, chunk_grad):
        # Cotangent of a model array: the chunk's gradient at its rows (XLA drops
        # this when nobody differentiates with respect to the model).
        return jax.lax.dynamic_update_slice_in_dim(
            jnp.zeros_like(full), chunk_grad.reshape(chunk, *full.shape[1:]), start, axis=0)

    if posedirs is None:  # no pose blend shapes: no cotangents for them
        grad_pose_feature = grad_posedirs = None
    else:
        grad_pose_feature = grad_flat.T @ _take(posedirs, start, chunk).reshape(chunk * 3, -1)
        grad_posedirs = scatter(posedirs, grad_flat @ pose_feature)
    return (
        None,                                                                      # start
        grad_pose_feature,
        grad_flat.T @ _take(shapedirs, start, chunk).reshape(chunk * 3, -1),      # betas
        weights_chunk.T @ grad_blended,                                           # per_joint
        scatter(v_template, grad_v_posed.sum(axis=-1)),
        scatter(shapedirs, grad_flat @ betas),
        grad_posedirs,
        scatter(lbs_weights, grad_blended @ per_joint.T),
    )


_blend_and_skin.defvjp(_blend_and_skin_fwd, _blend_and_skin_bwd)


def _chunk_map(fn, chunk: int, num_vertices: int, *arrays):
    """``fn`` over vertex chunks ``[start, start + chunk)`` of ``arrays`` (each ``(V, ...)``).

    ``fn(start, mask, *array_chunks)`` returns a tuple of per-vertex ``(C, ...)``
    arrays, joined back into ``(V, ...)``, and of per-chunk arrays, summed.
    ``start`` is the chunk's first vertex (an int32 scalar); ``mask (C,)`` is
    False on the rows of the last chunk that its predecessor already covers
    (the last chunk is shifted back to end at V, so nothing is padded); the
    joined rows there come from the predecessor.
    """
    starts = _chunk_starts(num_vertices, chunk)
    owned = jnp.asarray([i * chunk for i in range(len(starts))], jnp.int32)
    starts_array = jnp.asarray(starts, jnp.int32)

    def one(start_and_owned):
        start, first_owned = start_and_owned
        mask = start + jnp.arange(chunk) >= first_owned
        return fn(start, mask, *(_take(a, start, chunk) for a in arrays))

    if len(starts) == 1:
        return fn(0, jnp.ones((chunk,), bool), *arrays)
    per_vertex, per_chunk = jax.lax.map(one, (starts_array, owned))
    overlap = len(starts) * chunk - num_vertices
    joined = tuple(jnp.concatenate([x[:-1].reshape(-1, *x.shape[2:]), x[-1, overlap:]], axis=0)
                   for x in per_vertex)
    return joined, tuple(x.sum(axis=0) for x in per_chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _skin_points(v_posed, per_joint, lbs_weights, chunk, grad_chunk):
    """Skinning of posed-template points ``(V, 3, N)`` with weights ``(V, J)``
    and ``per_joint (J, 12 N)`` transforms -> ``(V, 3, N)``, over chunks of
    ``chunk`` vertices forward and ``grad_chunk`` backward (examples innermost,
    so the elementwise work vectorizes over the batch)."""
    def skin(start, mask, v_posed, lbs_weights):
        return (_apply_transforms(_blend_transforms(lbs_weights, per_joint), v_posed),), ()

    return _chunk_map(skin, chunk, v_posed.shape[0], v_posed, lbs_weights)[0][0]


def _skin_points_fwd(v_posed, per_joint, lbs_weights, chunk, grad_chunk):
    return _skin_points(v_posed, per_joint, lbs_weights, chunk, grad_chunk), (v_posed, per_joint, lbs_weights)


def _skin_points_bwd(chunk, grad_chunk, residuals, grad):
    """Hand-written VJP: recomputes each chunk's blended transforms (cheaper
    than storing them) and keeps every step a matmul or a fused elementwise pass."""
    v_posed, per_joint, lbs_weights = residuals

    def chunk_grads(start, mask, grad, v_posed, lbs_weights):
        grad = jnp.where(mask[:, None, None], grad, 0)
        blended = _blend_transforms(lbs_weights, per_joint)
        grad_blended, grad_v_posed = _apply_transforms_vjp(grad, blended, v_posed)
        # Per vertex: points and skinning weights; per chunk: the joints' transforms.
        return (grad_v_posed, grad_blended @ per_joint.T), (lbs_weights.T @ grad_blended,)

    (grad_v_posed, grad_weights), (grad_per_joint,) = _chunk_map(
        chunk_grads, grad_chunk, v_posed.shape[0], grad, v_posed, lbs_weights)
    return grad_v_posed, grad_per_joint, grad_weights


_skin_points.defvjp(_skin_points_fwd, _skin_points_bwd)


def _as_array(value: Any, field: str, source: str, integer: bool = False) -> np.ndarray:
    """``value`` as a float64 (or, with ``integer``, int64) numpy array; anything but
    real numbers, or non-integer values for an integer field, is a ModelFileError."""
    try:
        array = np.asarray(value)
        if array.dtype == object:
            array = array.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{source}: field {field!r} is not a numeric array ({err})") from None
    if array.dtype.kind not in "biuf":
        raise ModelFileError(f"{source}: field {field!r} is not a real numeric array (dtype {array.dtype})")
    if not integer:
        return array.astype(np.float64)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ModelFileError(f"{source}: field {field!r} must hold integers (vertex or joint ids), "
                                 "but has non-integer values")
    elif array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ModelFileError(f"{source}: field {field!r} has ids too large for int64")
    return array.astype(np.int64)


def _expect(ok: bool, source: str, field: str, expected: str, array: np.ndarray) -> None:
    if not ok:
        raise ModelFileError(f"{source}: field {field!r} has shape {array.shape}, expected {expected}")
