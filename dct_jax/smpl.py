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
   (as ``J_regressor @ v_template + (J_regressor @ shapedirs) . betas``)
3. pose blend shapes from ``(R[1:] - I)`` flattened joint-major
4. the 4x4 kinematic chain over the static ``parents``
5. linear blend skinning with ``lbs_weights``.

Units: metres; SMPL's frame (y up, the body faces +z).
"""

from __future__ import annotations

import functools
import logging
import os
from importlib import resources
from typing import Any, Sequence

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

    Attributes:
      v_template: ``(V, 3)`` rest-pose mean-shape vertices.
      shapedirs: ``(V, 3, NB)`` shape blend shapes.
      posedirs: ``(V, 3, P)`` pose blend shapes, ``P = 9 * (J - 1)`` over the
        pose feature ``(R[1:] - I)`` flattened joint-major (the layout of SMPL's
        files; smplx keeps the transpose ``(P, V * 3)``).
      J_regressor: ``(J, V)`` joint regressor (dense).
      lbs_weights: ``(V, J)`` skinning weights.
      faces: ``(F, 3)`` int32 triangle vertex ids.
      parents: static tuple of ``J`` parent ids, ``parents[0] = -1``.

    Gradients with respect to the model's arrays work too (e.g. to fit a
    template); since ``faces`` is an integer leaf, differentiate a function of
    the whole model with ``jax.grad(..., allow_int=True)``.
    """

    v_template: jnp.ndarray
    shapedirs: jnp.ndarray
    posedirs: jnp.ndarray
    J_regressor: jnp.ndarray
    lbs_weights: jnp.ndarray
    faces: jnp.ndarray
    parents: tuple[int, ...] = struct.field(pytree_node=False)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]


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
    ``(P, V * 3)`` (smplx's buffer); it is kept as ``(V, 3, P)``. ``source``
    names the origin in errors.
    """
    v_template = _as_array(v_template, "v_template", source)
    num_vertices = v_template.shape[0] if v_template.ndim == 2 else -1
    _expect(v_template.ndim == 2 and v_template.shape[1] == 3, source, "v_template", "(V, 3)", v_template)
    parents = tuple(int(p) for p in parents)
    num_joints = len(parents)
    try:
        geometry._check_parents(parents, num_joints)
    except ValueError as err:
        raise ModelFileError(f"{source}: field 'kintree_table' (parents): {err}") from None

    shapedirs = _as_array(shapedirs, "shapedirs", source)
    _expect(shapedirs.ndim == 3 and shapedirs.shape[:2] == (num_vertices, 3), source,
            "shapedirs", f"({num_vertices}, 3, NB)", shapedirs)
    if num_betas is not None:
        if num_betas > shapedirs.shape[2]:
            logging.info("%s has %d shape components; using those instead of %d",
                         source, shapedirs.shape[2], num_betas)
        shapedirs = shapedirs[:, :, :num_betas]

    posedirs = _as_array(posedirs, "posedirs", source)
    num_pose = 9 * (num_joints - 1)
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
    faces = _as_array(faces, "f", source, dtype=np.int64)
    _expect(faces.ndim == 2 and faces.shape[1] == 3, source, "f", "(F, 3)", faces)
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ModelFileError(f"{source}: field 'f' has vertex ids outside [0, {num_vertices})")
    for name, array in (("v_template", v_template), ("shapedirs", shapedirs),
                        ("posedirs", posedirs), ("J_regressor", J_regressor),
                        ("weights", lbs_weights)):
        if not np.all(np.isfinite(array)):
            raise ModelFileError(f"{source}: field {name!r} contains NaN or inf")

    cast = lambda a: jnp.asarray(a, dtype=dtype)  # noqa: E731
    return SMPLModel(
        v_template=cast(v_template),
        shapedirs=cast(shapedirs),
        posedirs=cast(posedirs),
        J_regressor=cast(J_regressor),
        lbs_weights=cast(lbs_weights),
        faces=jnp.asarray(faces, dtype=jnp.int32),
        parents=parents,
    )


def load(path: str | os.PathLike | None = None, *, num_betas: int = 10,
         dtype: Any = jnp.float32) -> SMPLModel:
    """Loads an SMPL-format model.

    Args:
      path: an original SMPL ``.pkl`` (chumpy inside is fine: chumpy is not
        needed), a chumpy-free ``.pkl`` or a smplx-style ``.npz``. ``None``
        loads dct_jax's embedded free default body.
      num_betas: shape components to keep (at most what the file has).
      dtype: float dtype of the arrays (``jnp.float64`` needs ``jax_enable_x64``).

    Raises:
      FileNotFoundError: no file at ``path`` (or no embedded default body).
      ModelFileError: a field is missing or ill-shaped, or the pickle holds
        anything but model arrays (it is then not unpickled further).
    """
    if path is None:
        path = resources.files("dct_jax") / "assets" / DEFAULT_MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"the embedded default body {path} is missing from this installation. "
                "Pass the path of an SMPL model instead: register at "
                "https://smpl.is.tue.mpg.de, download 'SMPL for Python' and use e.g. "
                "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl (or SMPL_NEUTRAL.pkl from smplx)."
            )
    source = os.fspath(path)
    data = read_model_file(source)
    missing = [k for k in ("v_template", "shapedirs", "posedirs", "J_regressor",
                           "weights", "kintree_table", "f") if k not in data]
    if missing:
        raise ModelFileError(f"{source}: missing field(s) {missing}; found {sorted(data)}")
    kintree = _as_array(data["kintree_table"], "kintree_table", source, dtype=np.int64)
    _expect(kintree.ndim == 2 and kintree.shape[0] == 2, source, "kintree_table", "(2, J)", kintree)
    parents = [-1] + [int(p) for p in kintree[0, 1:]]
    return build_model(
        v_template=data["v_template"], shapedirs=data["shapedirs"],
        posedirs=data["posedirs"], J_regressor=data["J_regressor"],
        lbs_weights=data["weights"], faces=data["f"], parents=parents,
        num_betas=num_betas, dtype=dtype, source=source,
    )


def forward(model: SMPLModel, pose: jnp.ndarray, betas: jnp.ndarray, *,
            transl: jnp.ndarray | None = None) -> SMPLOutput:
    """Poses and shapes the body.

    Args:
      model: from :func:`load` / :func:`build_model`.
      pose: axis-angle ``(..., J * 3)`` or ``(..., J, 3)``, or rotation
        matrices ``(..., J, 3, 3)``; joint 0 is the global rotation.
      betas: ``(..., K)`` shape coefficients, ``K <= model.num_betas``
        (missing ones are zero). Leading dims broadcast with pose's.
      transl: optional ``(..., 3)`` translation added to vertices and joints.

    Returns:
      :class:`SMPLOutput` with ``vertices (..., V, 3)``, ``joints (..., J, 3)``
      and ``rotmats (..., J, 3, 3)``, in the model's dtype.
    """
    num_joints = model.num_joints
    dtype = model.v_template.dtype
    pose = jnp.asarray(pose, dtype)
    betas = jnp.asarray(betas, dtype)
    if pose.shape[-3:] == (num_joints, 3, 3):
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
    if betas.shape[-1] < model.num_betas:
        pad = [(0, 0)] * (betas.ndim - 1) + [(0, model.num_betas - betas.shape[-1])]
        betas = jnp.pad(betas, pad)
    batch_shape = jnp.broadcast_shapes(rotmats.shape[:-3], betas.shape[:-1])
    rotmats = jnp.broadcast_to(rotmats, (*batch_shape, num_joints, 3, 3))
    betas = jnp.broadcast_to(betas, (*batch_shape, model.num_betas))

    flat_rot = rotmats.reshape(-1, num_joints, 3, 3)
    flat_betas = betas.reshape(-1, model.num_betas)
    vertices, joints = lbs(model, flat_rot, flat_betas)
    vertices = vertices.reshape(*batch_shape, model.num_vertices, 3)
    joints = joints.reshape(*batch_shape, num_joints, 3)
    if transl is not None:
        transl = jnp.asarray(transl, dtype)[..., None, :]
        vertices = vertices + transl
        joints = joints + transl
    return SMPLOutput(vertices=vertices, joints=joints, rotmats=rotmats)


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
    # Pose feature (R[1:] - I), flattened joint-major as SMPL's posedirs expect.
    eye = jnp.eye(3, dtype=rotmats.dtype)
    pose_feature = (rotmats[:, 1:] - eye).reshape(n, -1)
    rest_joints = _regress_joints(model, betas)
    # Kinematic chain: per joint a (3, 4) transform from rest to posed space,
    # laid out (J, 3 * 4 * N) so that skinning is one 2D matmul per chunk.
    joints, transforms = geometry.rigid_transform_chain(rotmats, rest_joints, model.parents)
    per_joint = transforms.transpose(1, 2, 3, 0).reshape(num_joints, 12 * n)

    # Blend shapes and skinning are independent per vertex. They run over
    # chunks of vertices so that each chunk's (C, 3, 4, N) blended transforms
    # stay in cache; the last chunk is shifted back to end at V (overlapping
    # its predecessor) so that no model array is padded or copied.
    chunk = _vertex_chunk_size(num_vertices, n)
    starts = jnp.asarray(_chunk_starts(num_vertices, chunk), jnp.int32)

    def one_chunk(start):
        return _blend_and_skin(start, chunk, pose_feature, betas, per_joint, model.v_template,
                               model.shapedirs, model.posedirs, model.lbs_weights)

    if len(starts) == 1:
        # One chunk: the blend shapes outside the skinning VJP, so that XLA can
        # run them concurrently with the joint regression and the chain.
        v_posed = _blend_shapes(pose_feature, betas, model.v_template, model.shapedirs,
                                model.posedirs)
        chunks = _skin_points(v_posed, per_joint, model.lbs_weights)[None]
    else:
        chunks = jax.lax.map(one_chunk, starts)  # (num_chunks, C, 3, N)
    overlap = len(starts) * chunk - num_vertices
    vertices = jnp.concatenate([chunks[:-1].reshape(-1, 3, n), chunks[-1, overlap:]], axis=0)
    return vertices.transpose(2, 0, 1), joints


def _regress_joints(model: SMPLModel, betas: jnp.ndarray) -> jnp.ndarray:
    """``(N, J, 3)`` rest joints ``J_regressor @ (v_template + shapedirs . betas)``.

    The map is linear, so for larger batches the regressor is applied to the
    template and each shape direction once (``J * V * 3 * (NB + 1)`` work per
    call) instead of to every shaped body (``J * V * 3`` plus the blend per
    example); small batches do the latter, which is cheaper for them. Nothing
    is precomputed, so the result always follows the model's current arrays.
    """
    n, num_betas = betas.shape
    if n * (num_betas + model.num_joints) < model.num_joints * (num_betas + 1):
        # Vertex-major (V, 3, N) so both steps are plain 2D matmuls.
        v_shaped = ((model.shapedirs.reshape(-1, num_betas) @ betas.T).reshape(-1, 3, n)
                    + model.v_template[:, :, None])
        return jnp.einsum("jv,vkn->njk", model.J_regressor, v_shaped)
    joint_template = model.J_regressor @ model.v_template
    joint_shapedirs = jnp.einsum("jv,vkb->jkb", model.J_regressor, model.shapedirs)
    return joint_template + jnp.einsum("nb,jkb->njk", betas, joint_shapedirs)


# Vertices x examples per chunk: the chunk's (C, 3, 4, N) float32 transforms
# then take 3 MB, which stays in this CPU's L2/L3 (measured in
# benchmarks/smpl_speed.py: twice as fast as one pass over all vertices).
_CHUNK_ELEMENTS = 65536


def _vertex_chunk_size(num_vertices: int, batch: int) -> int:
    return int(min(num_vertices, max(256, _CHUNK_ELEMENTS // max(batch, 1))))


def _chunk_starts(num_vertices: int, chunk: int) -> list[int]:
    num_chunks = -(-num_vertices // chunk)
    return [min(i * chunk, num_vertices - chunk) for i in range(num_chunks)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _blend_and_skin(start, chunk, pose_feature, betas, per_joint, v_template, shapedirs,
                    posedirs, lbs_weights):
    """Blend shapes and skinning of the ``chunk`` vertices from ``start``.

    Args:
      start: int32 scalar, first vertex of the chunk; chunk: static chunk size C.
      pose_feature: ``(N, P)``; betas: ``(N, NB)``.
      per_joint: ``(J, 3 * 4 * N)`` per-joint transforms, laid out (J, 3, 4, N).
      v_template, shapedirs, posedirs, lbs_weights: the model's whole arrays
        (sliced here, so that the VJP's residuals are loop-invariant and a
        ``lax.map`` over chunks stacks nothing).

    Returns:
      ``(C, 3, N)`` skinned vertices (examples innermost, so the elementwise
      work vectorizes over the batch).
    """
    v_posed, blended = _chunk_intermediates(start, chunk, pose_feature, betas, per_joint,
                                            v_template, shapedirs, posedirs, lbs_weights)
    return _apply_transforms(blended, v_posed)


def _apply_transforms(blended: jnp.ndarray, v_posed: jnp.ndarray) -> jnp.ndarray:
    """``(C, 3, 4, N)`` transforms applied to ``(C, 3, N)`` points -> ``(C, 3, N)``.

    Four broadcast multiply-adds, which XLA fuses into one pass (a batched 3x3
    einsum is several times slower on CPU).
    """
    return (blended[:, :, 0] * v_posed[:, None, 0] + blended[:, :, 1] * v_posed[:, None, 1]
            + blended[:, :, 2] * v_posed[:, None, 2] + blended[:, :, 3])


def _take(array, start, chunk):
    return jax.lax.dynamic_slice_in_dim(array, start, chunk, axis=0)


def _chunk_intermediates(start, chunk, pose_feature, betas, per_joint, v_template, shapedirs,
                         posedirs, lbs_weights):
    """``v_posed (C, 3, N)`` and ``blended (C, 3, 4, N)`` of a chunk."""
    v_posed = _blend_shapes(pose_feature, betas, _take(v_template, start, chunk),
                            _take(shapedirs, start, chunk), _take(posedirs, start, chunk))
    return v_posed, _blend_transforms(_take(lbs_weights, start, chunk), per_joint)


def _blend_shapes(pose_feature, betas, v_template, shapedirs, posedirs):
    """``(C, 3, N)`` template plus shape and pose blend shapes of C vertices,
    each one ``(C * 3, K) @ (K, N)`` matmul."""
    c = v_template.shape[0]
    return ((shapedirs.reshape(c * 3, -1) @ betas.T + posedirs.reshape(c * 3, -1) @ pose_feature.T
             ).reshape(c, 3, -1) + v_template[:, :, None])


def _blend_transforms(lbs_weights, per_joint):
    """``(C, 3, 4, N)``: each vertex's transform, the skinning-weighted sum of
    its joints' ``per_joint (J, 12 N)`` transforms."""
    return (lbs_weights @ per_joint).reshape(lbs_weights.shape[0], 3, 4, -1)


def _blend_and_skin_fwd(start, chunk, *args):
    return _blend_and_skin(start, chunk, *args), (start, *args)


def _blend_and_skin_bwd(chunk, residuals, grad):
    """Hand-written VJP: recomputes the chunk's intermediates (cheaper than
    storing them) and keeps every step a matmul or a fused elementwise pass."""
    start, pose_feature, betas, per_joint, v_template, shapedirs, posedirs, lbs_weights = residuals
    v_posed, blended = _chunk_intermediates(start, chunk, *residuals[1:])
    n = grad.shape[-1]
    grad_blended, grad_v_posed = _apply_transforms_vjp(grad, blended, v_posed)
    grad_flat = grad_v_posed.reshape(chunk * 3, n)
    weights_chunk = _take(lbs_weights, start, chunk)

    def scatter(full, chunk_grad):
        # Cotangent of a model array: the chunk's gradient at its rows (XLA drops
        # this when nobody differentiates with respect to the model).
        return jax.lax.dynamic_update_slice_in_dim(
            jnp.zeros_like(full), chunk_grad.reshape(chunk, *full.shape[1:]), start, axis=0)

    return (
        None,                                                                      # start
        grad_flat.T @ _take(posedirs, start, chunk).reshape(chunk * 3, -1),       # pose_feature
        grad_flat.T @ _take(shapedirs, start, chunk).reshape(chunk * 3, -1),      # betas
        weights_chunk.T @ grad_blended,                                           # per_joint
        scatter(v_template, grad_v_posed.sum(axis=-1)),
        scatter(shapedirs, grad_flat @ betas),
        scatter(posedirs, grad_flat @ pose_feature),
        scatter(lbs_weights, grad_blended @ per_joint.T),
    )


_blend_and_skin.defvjp(_blend_and_skin_fwd, _blend_and_skin_bwd)


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


@jax.custom_vjp
def _skin_points(v_posed, per_joint, lbs_weights):
    """Skinning of posed-template points ``(C, 3, N)`` with weights ``(C, J)``
    and ``per_joint (J, 12 N)`` transforms -> ``(C, 3, N)`` (the one-chunk path)."""
    return _apply_transforms(_blend_transforms(lbs_weights, per_joint), v_posed)


def _skin_points_fwd(v_posed, per_joint, lbs_weights):
    return _skin_points(v_posed, per_joint, lbs_weights), (v_posed, per_joint, lbs_weights)


def _skin_points_bwd(residuals, grad):
    v_posed, per_joint, lbs_weights = residuals
    blended = _blend_transforms(lbs_weights, per_joint)
    grad_blended, grad_v_posed = _apply_transforms_vjp(grad, blended, v_posed)
    return grad_v_posed, lbs_weights.T @ grad_blended, grad_blended @ per_joint.T


_skin_points.defvjp(_skin_points_fwd, _skin_points_bwd)


def _as_array(value: Any, field: str, source: str, dtype: Any = np.float64) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{source}: field {field!r} is not a numeric array ({err})") from None


def _expect(ok: bool, source: str, field: str, expected: str, array: np.ndarray) -> None:
    if not ok:
        raise ModelFileError(f"{source}: field {field!r} has shape {array.shape}, expected {expected}")
