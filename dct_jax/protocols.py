"""Evaluation protocols, one per dataset: which body models, joints, alignment and ground truth.

``docs/evaluation.md`` states each protocol in full; in short (all in mm):

* ``"official"`` (UP-3D, the synthetic data): DCT's official code. Prediction
  and ground truth through the neutral body model with the global rotation of
  both zeroed and no other alignment: PVE over all vertices, MPJPE over the 24
  SMPL joints, PA-MPJPE (similarity Procrustes on those joints), PVE-T (both
  shapes in one fixed pose). ``evaluate.smpl_metrics``.
* ``"pw3d"`` (3DPW, SPIN's protocol): global rotations kept (they are in the
  camera frame); 14 joints from a user-supplied ``J_regressor_h36m.npy``
  (``H36M_TO_J14``; the 24 SMPL joints without it), both skeletons moved so
  that their pelvis (regressed joint 0, or SMPL joint 0) is the origin;
  MPJPE, PA-MPJPE, and PVE over the vertices moved by the same pelvis.
  Ground truth through the model of the record's gender when the male and
  female models are given (SPIN's convention), else the neutral one (VIBE's).
* ``"h36m"`` (Human3.6M, protocols 1 and 2 as SPIN): the ground truth is the
  records' 3D keypoints (motion capture, the first 14 cocoplus19 keypoints =
  SPIN's ``J24_TO_J14``), pelvis = mid-point of its hips; the prediction's 14
  joints come from ``J_regressor_h36m`` (pelvis = its joint 0) or, without
  it, from the body's own cocoplus19 keypoints (pelvis = mid-hips). MPJPE
  after pelvis alignment (protocol 1's metric) and PA-MPJPE (protocol 2's;
  evaluate split ``valid_protocol2`` for protocol 2).
* ``"dense"`` (COCO-DensePose): DKD only (people without SMPL labels).

Every protocol also reports DKD on records with dense keypoints.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dct_jax import densepose, metrics, smpl
from dct_jax import keypoints as keypoints_lib

PROTOCOLS = ("official", "pw3d", "h36m", "dense")
DATASET_PROTOCOLS = {"synthetic": "official", "studio": "official", "up3d": "official", "pw3d": "pw3d",
                     "h36m": "h36m", "coco_densepose": "dense"}
# SPIN's constants.py: the 14 LSP-order joints among J_regressor_h36m's 17 (pelvis = 0).
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
H36M_PELVIS = 0
NUM_J14 = 14
HIPS = (2, 3)  # right and left hip in LSP / cocoplus19 order
# Dense keypoint distance is reported in pixels of a 224 x 224 crop (the paper's input
# size): the L1 distance (|dx| + |dy|, Eq. 4) in normalized crop coordinates times 112.
DKD_PIXELS_PER_UNIT = 112.0
# The official PVE-T pose (``tpose[:, 0] = 3.39``): every joint at rest except
# the global rotation, 3.39 rad about x (near pi: upright in image coordinates,
# y down). SMPL rotates about the shape-dependent root joint, so this gives
# slightly different numbers from the all-zero pose.
PVET_GLOBAL_ROTATION = (3.39, 0.0, 0.0)
GENDER_NEUTRAL, GENDER_MALE, GENDER_FEMALE = 0, 1, 2  # dct_jax.data.pipeline.GENDER_CODES


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EvalBodies:
    """The body models and joint regressor of a protocol (a pytree: pass it into jit).

    Attributes:
      neutral: the model the network predicts with (the run's body model).
      male, female: gendered models for 3DPW's ground truth, or None.
      j_regressor_h36m: ``(17, V)`` Human3.6M joint regressor, or None.
    """

    neutral: smpl.SMPLModel
    male: smpl.SMPLModel | None = None
    female: smpl.SMPLModel | None = None
    j_regressor_h36m: jax.Array | None = None

    @property
    def gendered(self) -> bool:
        return self.male is not None and self.female is not None


def dataset_name(dataset: str) -> str:
    """A config's ``dataset`` (a builder name or a built ``D/NAME/VERSION`` folder) -> ``NAME``."""
    path = os.path.normpath(os.path.expanduser(dataset))
    if os.path.isdir(path):
        return os.path.basename(os.path.dirname(path))
    return dataset


def protocol_for(dataset: str, protocol: str = "auto") -> str:
    """The protocol of ``dataset`` (``protocol="auto"``), or ``protocol`` checked.

    Unknown datasets (user-built ones) get ``"official"``.
    """
    if protocol == "auto":
        return DATASET_PROTOCOLS.get(dataset_name(dataset), "official")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected 'auto' or one of {PROTOCOLS}")
    return protocol


def load_eval_bodies(neutral: smpl.SMPLModel, *, smpl_male_path: str | None = None,
                     smpl_female_path: str | None = None,
                     j_regressor_h36m_path: str | None = None) -> EvalBodies:
    """Loads the optional gendered models and ``J_regressor_h36m.npy`` next to ``neutral``.

    Raises:
      ValueError: only one gendered model given, a model or regressor whose
        vertex count differs from ``neutral``'s, or a regressor that is not
        ``(17, V)``; the message names the file.
    """
    if (smpl_male_path is None) != (smpl_female_path is None):
        raise ValueError("gendered ground truth needs both smpl_male_path and smpl_female_path "
                         f"(got male={smpl_male_path!r}, female={smpl_female_path!r})")
    num_vertices = int(neutral.v_template.shape[0])
    male = female = None
    if smpl_male_path is not None:
        male, female = smpl.load(smpl_male_path), smpl.load(smpl_female_path)
        for path, model in ((smpl_male_path, male), (smpl_female_path, female)):
            if int(model.v_template.shape[0]) != num_vertices:
                raise ValueError(f"{path}: {model.v_template.shape[0]} vertices, but the run's body model has "
                                 f"{num_vertices}; pass the SMPL male/female models of the same topology")
    regressor = None
    if j_regressor_h36m_path is not None:
        path = os.path.expanduser(j_regressor_h36m_path)
        try:
            regressor = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a numpy .npy array ({err}); expected SPIN's "
                             "J_regressor_h36m.npy, (17, 6890)") from None
        if (not isinstance(regressor, np.ndarray) or regressor.shape != (17, num_vertices)
                or regressor.dtype.kind != "f" or not np.all(np.isfinite(regressor))):
            raise ValueError(f"{path}: J_regressor_h36m must be a finite float (17, {num_vertices}) array "
                             f"(Human3.6M's 17 joints from the mesh's vertices), got "
                             f"{getattr(regressor, 'dtype', '?')} {getattr(regressor, 'shape', '?')}")
        regressor = jnp.asarray(regressor, neutral.v_template.dtype)
    return EvalBodies(neutral=neutral, male=male, female=female, j_regressor_h36m=regressor)


def describe(protocol: str, bodies: EvalBodies) -> dict[str, Any]:
    """What the eval JSON records about how its numbers were made."""
    regressor = bodies.j_regressor_h36m is not None
    if protocol in ("official", "dense"):
        return {"name": protocol, "joints": "smpl24", "ground_truth": "neutral",
                "alignment": "global rotation of prediction and ground truth zeroed; no translation"}
    if protocol == "pw3d":
        return {"name": protocol, "joints": "h36m14 (J_regressor_h36m)" if regressor else "smpl24",
                "ground_truth": "gendered" if bodies.gendered else "neutral",
                "alignment": "pelvis (MPJPE, PVE); similarity Procrustes (PA-MPJPE)"}
    return {"name": protocol,
            "joints": "h36m14 (J_regressor_h36m)" if regressor else "cocoplus19[:14] of the body model",
            "ground_truth": "keypoints3d (motion capture), first 14 cocoplus19",
            "alignment": "pelvis (MPJPE); similarity Procrustes (PA-MPJPE)"}


def smpl_metrics(
    model: smpl.SMPLModel,
    pred_pose: jax.Array,
    pred_betas: jax.Array,
    gt_pose: jax.Array,
    gt_betas: jax.Array,
    *,
    pvet_global_rotation: Sequence[float] = PVET_GLOBAL_ROTATION,
) -> dict[str, jax.Array]:
    """The official protocol's per-example metrics (jit-able; one body-model call for all bodies).

    Args:
      model: the body model for prediction and ground truth alike.
      pred_pose: ``(B, 72)`` predicted axis-angle pose.
      pred_betas: ``(B, NB)`` predicted shape.
      gt_pose: ``(B, 72)`` ground-truth pose.
      gt_betas: ``(B, NB)`` ground-truth shape.
      pvet_global_rotation: axis-angle global rotation of the PVE-T pose
        (``(0, 0, 0)`` for the plain zero pose).

    Returns:
      ``{"pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm"}``, each ``(B,)``.
    """
    pose_dim = 3 * model.num_joints
    pred_pose, gt_pose = jnp.asarray(pred_pose), jnp.asarray(gt_pose)
    pred_betas, gt_betas = jnp.asarray(pred_betas), jnp.asarray(gt_betas)
    if pred_pose.ndim != 2 or pred_pose.shape[1] != pose_dim or gt_pose.shape != pred_pose.shape:
        raise ValueError(f"pred_pose and gt_pose must both be (B, {pose_dim}), got "
                         f"{pred_pose.shape}, {gt_pose.shape}")
    batch = pred_pose.shape[0]
    if pred_betas.ndim != 2 or pred_betas.shape[0] != batch or gt_betas.shape != pred_betas.shape:
        raise ValueError(f"pred_betas and gt_betas must both be ({batch}, NB), got "
                         f"{pred_betas.shape}, {gt_betas.shape}")
    if len(pvet_global_rotation) != 3:
        raise ValueError(f"pvet_global_rotation must have 3 entries, got {pvet_global_rotation!r}")
    dtype = model.v_template.dtype
    posed = jnp.concatenate([pred_pose, gt_pose]).astype(dtype).at[:, :3].set(0.0)
    rest = jnp.zeros_like(posed).at[:, :3].set(jnp.asarray(pvet_global_rotation, dtype))
    betas = jnp.concatenate([pred_betas, gt_betas]).astype(dtype)
    # Rows: posed pred, posed gt, rest pred, rest gt.
    out = smpl.forward(model, jnp.concatenate([posed, rest]), jnp.concatenate([betas, betas]))
    verts = out.vertices.reshape(4, batch, *out.vertices.shape[1:])
    joints = out.joints.reshape(4, batch, *out.joints.shape[1:])
    return {
        "pve_mm": metrics.pve(verts[0], verts[1]),
        "mpjpe_mm": metrics.mpjpe(joints[0], joints[1]),
        "pa_mpjpe_mm": metrics.pa_mpjpe(joints[0], joints[1]),
        "pvet_mm": metrics.pve(verts[2], verts[3]),
    }


def _regress(regressor: jax.Array, vertices: jax.Array) -> jax.Array:
    """``(17, V)`` x ``(B, V, 3)`` -> ``(B, 17, 3)``."""
    return jnp.einsum("jv,bvc->bjc", regressor, vertices.astype(regressor.dtype))


def _pelvis_joints(bodies: EvalBodies, vertices: jax.Array, joints: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The protocol's joints ``(B, J, 3)`` and pelvis ``(B, 1, 3)`` of posed bodies."""
    if bodies.j_regressor_h36m is not None:
        h36m = _regress(bodies.j_regressor_h36m, vertices)
        return h36m[:, list(H36M_TO_J14)], h36m[:, H36M_PELVIS, None]
    return joints, joints[:, :1]


def pw3d_metrics(bodies: EvalBodies, pred_pose: jax.Array, pred_betas: jax.Array, gt_pose: jax.Array,
                 gt_betas: jax.Array, gender: jax.Array) -> dict[str, jax.Array]:
    """3DPW per-example metrics (module docstring): ``(B, 72)`` poses, ``(B, 10)`` betas, ``(B,)`` gender."""
    neutral = bodies.neutral
    pred = smpl.forward(neutral, pred_pose, pred_betas)
    gt = smpl.forward(neutral, gt_pose, gt_betas)
    gt_vertices, gt_joints = gt.vertices, gt.joints
    if bodies.gendered:
        male = smpl.forward(bodies.male, gt_pose, gt_betas)
        female = smpl.forward(bodies.female, gt_pose, gt_betas)
        pick = lambda m, f, n: jnp.where((gender == GENDER_MALE)[:, None, None], m,  # noqa: E731
                                         jnp.where((gender == GENDER_FEMALE)[:, None, None], f, n))
        gt_vertices = pick(male.vertices, female.vertices, gt_vertices)
        gt_joints = pick(male.joints, female.joints, gt_joints)
    pred_j, pred_pelvis = _pelvis_joints(bodies, pred.vertices, pred.joints)
    gt_j, gt_pelvis = _pelvis_joints(bodies, gt_vertices, gt_joints)
    values = {
        "pve_mm": metrics.pve(pred.vertices - pred_pelvis, gt_vertices - gt_pelvis),
        "mpjpe_mm": metrics.mpjpe(pred_j - pred_pelvis, gt_j - gt_pelvis),
        "pa_mpjpe_mm": metrics.pa_mpjpe(pred_j, gt_j),
    }
    # PVE-T: shapes alone in the official fixed pose, ground truth through its own model.
    rest = jnp.zeros_like(pred_pose).at[:, :3].set(jnp.asarray(PVET_GLOBAL_ROTATION, pred_pose.dtype))
    pred_t = smpl.forward(neutral, rest, pred_betas).vertices
    gt_t = smpl.forward(neutral, rest, gt_betas).vertices
    if bodies.gendered:
        gt_t = pick(smpl.forward(bodies.male, rest, gt_betas).vertices,
                    smpl.forward(bodies.female, rest, gt_betas).vertices, gt_t)
    values["pvet_mm"] = metrics.pve(pred_t, gt_t)
    return values


def h36m_metrics(bodies: EvalBodies, layout: keypoints_lib.Layout, pred_pose: jax.Array, pred_betas: jax.Array,
                 gt_keypoints3d: jax.Array) -> dict[str, jax.Array]:
    """Human3.6M per-example MPJPE and PA-MPJPE on 14 joints (module docstring).

    Args:
      gt_keypoints3d: ``(B, 19, 3)`` cocoplus19 3D keypoints, metres (the first 14 are used).
    """
    pred = smpl.forward(bodies.neutral, pred_pose, pred_betas)
    if bodies.j_regressor_h36m is not None:
        h36m = _regress(bodies.j_regressor_h36m, pred.vertices)
        pred_j, pred_pelvis = h36m[:, list(H36M_TO_J14)], h36m[:, H36M_PELVIS, None]
    else:
        pred_j = keypoints_lib.from_body(layout, pred.vertices, pred.joints)[:, :NUM_J14]
        pred_pelvis = 0.5 * (pred_j[:, HIPS[0], None] + pred_j[:, HIPS[1], None])
    gt_j = gt_keypoints3d[:, :NUM_J14].astype(pred_j.dtype)
    gt_pelvis = 0.5 * (gt_j[:, HIPS[0], None] + gt_j[:, HIPS[1], None])
    return {"mpjpe_mm": metrics.mpjpe(pred_j - pred_pelvis, gt_j - gt_pelvis),
            "pa_mpjpe_mm": metrics.pa_mpjpe(pred_j, gt_j)}


def example_metrics(protocol: str, layout: keypoints_lib.Layout, bodies: EvalBodies, pose: jax.Array,
                    betas: jax.Array, camera: jax.Array,
                    batch: Mapping[str, jax.Array]) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Per-example metrics of predictions on a batch, and where each is defined.

    Args:
      protocol: one of :data:`PROTOCOLS` (static).
      layout: the cocoplus19 layout of ``bodies.neutral`` (static).
      bodies: the models (a pytree argument).
      pose: ``(B, 24, 3)`` predicted axis-angle; ``betas (B, 10)``; ``camera (B, 3)``.
      batch: the evaluation batch (``dct_jax.data.pipeline`` examples).

    Returns:
      ``(values, rows)``: ``{metric: (B,)}`` and ``{metric: (B,) bool}``, the
      examples whose ground truth defines the metric.
    """
    batch_size = pose.shape[0]
    flat_pose = pose.reshape(batch_size, -1)
    has_smpl = batch["has_smpl"] > 0
    if protocol in ("official", "dense"):
        values = smpl_metrics(bodies.neutral, flat_pose, betas, batch["smpl_pose"], batch["smpl_betas"])
        rows = {key: has_smpl for key in values}
    elif protocol == "pw3d":
        values = pw3d_metrics(bodies, flat_pose, betas, batch["smpl_pose"], batch["smpl_betas"], batch["gender"])
        rows = {key: has_smpl for key in values}
    elif protocol == "h36m":
        values = h36m_metrics(bodies, layout, flat_pose, betas, batch["keypoints3d"])
        labelled = jnp.all(batch["keypoints3d_weight"][:, :NUM_J14] > 0, axis=-1)
        rows = {key: (batch["has_keypoints3d"] > 0) & labelled for key in values}
    else:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {PROTOCOLS}")
    vertices = smpl.forward(bodies.neutral, pose, betas).vertices
    points = densepose.SurfacePoints(batch["dense_vertex_ids"], batch["dense_barycentric"],
                                     batch["dense_weight"] > 0)
    pred_xy = densepose.project_surface_points(vertices, points, camera)
    values["dkd"] = DKD_PIXELS_PER_UNIT * metrics.dense_keypoint_distance(
        pred_xy, batch["dense_xy"], batch["dense_weight"])
    rows["dkd"] = batch["has_dense"] > 0
    return values, rows
