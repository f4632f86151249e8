"""DCT's training losses (the official ``src/models/loss_utils.py``), pure JAX.

Each loss reduces a batch to a scalar exactly as the official code does: the
mean over every element of the batch (masked-out elements count as zeros) times
``B / sum(mask)`` when a per-example ``mask`` selects which examples carry that
kind of supervision, so that a mixed batch weighs each supervised example as a
fully supervised batch would. An all-zero mask gives 0 (the official code's
``+ 1e-8`` is replaced by a guarded division).

Robustness: a point or example with weight/mask 0 is *selected out* with
``jnp.where`` before any arithmetic, so NaN/inf in its prediction or target
changes neither the loss nor the (finite, zero) gradient there. Weights and
masks must be non-negative: concrete negative values raise ``ValueError``;
under ``jit`` (traced values cannot be checked) negatives are clamped to 0.

Units: 2D points in normalized crop coordinates ``[-1, 1]``; 3D points in metres.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

NUM_BODY_JOINTS = 23  # SMPL joints 1..23; joint 0 (global rotation) is not supervised.


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms in :func:`total_loss` (the official defaults).

    Use ``dense=official_dense_weight(has_3d)``: 1 when training with 3D
    supervision, 10 without. Frozen and hashable, so it can be a static argument.
    """

    keypoint: float = 10.0
    smpl: float = 10.0
    joints3d: float = 10.0
    keypoints3d: float = 10.0
    dense: float = 1.0


def official_dense_weight(has_3d: bool) -> float:
    """The official dense-loss weight: 1.0 with 3D supervision, 10.0 without."""
    return 1.0 if has_3d else 10.0


def total_loss(terms: Mapping[str, jnp.ndarray], weights: LossWeights = LossWeights()) -> jnp.ndarray:
    """Weighted sum of loss terms.

    Args:
      terms: scalars keyed by :class:`LossWeights` field names (``keypoint``,
        ``smpl``, ``joints3d``, ``keypoints3d``, ``dense``); absent terms contribute nothing.
      weights: the weight of each term.

    Returns:
      ``()`` the weighted sum.
    """
    names = {f.name for f in dataclasses.fields(LossWeights)}
    unknown = sorted(set(terms) - names)
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown}; expected a subset of {sorted(names)}")
    total = jnp.zeros((), jnp.float32)
    for name, value in terms.items():
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"loss term {name!r} must be a scalar, got shape {value.shape}")
        total = total + getattr(weights, name) * value
    return total


def keypoint_loss(
    pred_xy: jnp.ndarray,
    target_xy: jnp.ndarray,
    weight: jnp.ndarray,
    *,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Visibility-weighted L1 on 2D keypoints (official ``_keypoint_2d_loss``).

    ``mean over B*K*2 of |pred - target| * weight``. With ``mask`` the weight is
    multiplied by ``mask[:, None]`` and the mean rescaled by ``B / sum(mask)``.

    Args:
      pred_xy: ``(B, K, 2)`` predicted keypoints, normalized crop coordinates.
      target_xy: ``(B, K, 2)`` annotated keypoints.
      weight: ``(B, K)`` visibility weights (0 for missing keypoints).
      mask: optional ``(B,)`` per-example mask.

    Returns:
      ``()`` the loss.
    """
    pred_xy, target_xy = _check_points(pred_xy, target_xy, 2, "pred_xy", "target_xy", "K")
    weight = _check_weight(weight, pred_xy.shape[:2], "weight", "(B, K)")
    rescale = 1.0
    if mask is not None:
        mask = _check_weight(mask, pred_xy.shape[:1], "mask", "(B,)")
        weight = weight * mask[:, None]
        rescale = _batch_rescale(mask)
    abs_diff = jnp.abs(_select(weight[..., None] > 0, pred_xy - target_xy))
    return jnp.mean(abs_diff * weight[..., None]) * rescale


def smpl_loss(
    pred_rotmats: jnp.ndarray,
    target_rotmats: jnp.ndarray,
    pred_betas: jnp.ndarray,
    target_betas: jnp.ndarray,
    mask: jnp.ndarray,
    pose_weight: jnp.ndarray | None = None,
    betas_weight: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Squared error on SMPL parameters (official ``_smpl_params_loss``).

    Per example the 23 * 9 rotation-matrix entries of joints 1..23 (the global
    rotation, joint 0, is excluded) and the betas, 217 values for 10 betas;
    ``mean over B*217 of sq * mask[:, None]`` times ``B / sum(mask)``.
    ``pose_weight`` and ``betas_weight`` further weigh each example's rotation
    and betas entries (the paper's Table 4: a pose-only label has betas weight 0);
    the normalization is unchanged, so a weight of 0 removes exactly that term.

    Args:
      pred_rotmats: ``(B, 24, 3, 3)`` predicted local joint rotations
        (``geometry.rodrigues`` of the axis-angle pose).
      target_rotmats: ``(B, 24, 3, 3)`` ground-truth rotations.
      pred_betas: ``(B, NB)`` predicted shape; target_betas: ``(B, NB)``.
      mask: ``(B,)`` 1 for examples with SMPL ground truth.
      pose_weight, betas_weight: ``(B,)`` or None (1).

    Returns:
      ``()`` the loss.
    """
    pred_rotmats, target_rotmats = jnp.asarray(pred_rotmats), jnp.asarray(target_rotmats)
    pred_betas, target_betas = jnp.asarray(pred_betas), jnp.asarray(target_betas)
    if pred_rotmats.ndim != 4 or pred_rotmats.shape[1:] != (NUM_BODY_JOINTS + 1, 3, 3) \
            or target_rotmats.shape != pred_rotmats.shape:
        raise ValueError("pred_rotmats and target_rotmats must both be (B, 24, 3, 3), got "
                         f"{pred_rotmats.shape}, {target_rotmats.shape}")
    batch = pred_rotmats.shape[0]
    if pred_betas.ndim != 2 or pred_betas.shape[0] != batch or target_betas.shape != pred_betas.shape:
        raise ValueError(f"pred_betas and target_betas must both be ({batch}, NB), got "
                         f"{pred_betas.shape}, {target_betas.shape}")
    mask = _check_weight(mask, (batch,), "mask", "(B,)")
    diff = jnp.concatenate([
        (pred_rotmats[:, 1:] - target_rotmats[:, 1:]).reshape(batch, -1),
        pred_betas - target_betas,
    ], axis=1)
    weight = mask[:, None]
    if pose_weight is not None or betas_weight is not None:
        ones = jnp.ones((batch,), diff.dtype)
        pose_weight = ones if pose_weight is None else _check_weight(pose_weight, (batch,), "pose_weight", "(B,)")
        betas_weight = ones if betas_weight is None else _check_weight(betas_weight, (batch,), "betas_weight", "(B,)")
        num_pose = diff.shape[1] - pred_betas.shape[1]
        weight = weight * jnp.concatenate([jnp.broadcast_to(pose_weight[:, None], (batch, num_pose)),
                                           jnp.broadcast_to(betas_weight[:, None], pred_betas.shape)], axis=1)
    diff = _select(weight > 0, diff)
    return jnp.mean(diff * diff * weight) * _batch_rescale(mask)


def joints3d_loss(
    pred_joints: jnp.ndarray,
    target_joints: jnp.ndarray,
    mask: jnp.ndarray,
    *,
    root: int | None = 0,
) -> jnp.ndarray:
    """Squared error of root-aligned 3D joints.

    Joint ``root`` is subtracted from both skeletons (``None``: no alignment);
    ``mean over B*J*3 of sq * mask`` times ``B / sum(mask)``.

    Args:
      pred_joints: ``(B, J, 3)`` predicted joints, metres.
      target_joints: ``(B, J, 3)`` ground-truth joints.
      mask: ``(B,)`` 1 for examples with 3D joints.
      root: index of the joint to align, or ``None``.

    Returns:
      ``()`` the loss.
    """
    pred_joints, target_joints = _check_points(pred_joints, target_joints, 3, "pred_joints",
                                               "target_joints", "J")
    num_joints = pred_joints.shape[1]
    if root is not None:
        if not -num_joints <= root < num_joints:
            raise ValueError(f"root = {root} is not a joint index for {num_joints} joints")
        pred_joints = pred_joints - pred_joints[:, root, None]
        target_joints = target_joints - target_joints[:, root, None]
    mask = _check_weight(mask, pred_joints.shape[:1], "mask", "(B,)")
    diff = _select(mask[:, None, None] > 0, pred_joints - target_joints)
    return jnp.mean(diff * diff * mask[:, None, None]) * _batch_rescale(mask)


def keypoints3d_loss(
    pred_keypoints: jnp.ndarray,
    target_keypoints: jnp.ndarray,
    keypoint_weight: jnp.ndarray,
    mask: jnp.ndarray,
    *,
    hips: tuple[int, int] = (2, 3),
) -> jnp.ndarray:
    """Squared error of pelvis-aligned 3D keypoints (HMR/SPIN's ``keypoint_3d_loss``).

    Both skeletons are moved so that the mid-point of their ``hips`` (cocoplus19:
    right hip 2, left hip 3) is the origin; ``mean over B*K*3 of sq * weight *
    mask`` times ``B / sum(mask)``.

    Args:
      pred_keypoints: ``(B, K, 3)`` predicted keypoints, metres.
      target_keypoints: ``(B, K, 3)`` labelled keypoints (e.g. motion capture).
      keypoint_weight: ``(B, K)`` 1 where labelled; both hips must be labelled
        for an example to count (its pelvis is undefined otherwise).
      mask: ``(B,)`` 1 for examples with 3D keypoints.

    Returns:
      ``()`` the loss.
    """
    pred_keypoints, target_keypoints = _check_points(pred_keypoints, target_keypoints, 3, "pred_keypoints",
                                                     "target_keypoints", "K")
    keypoint_weight = _check_weight(keypoint_weight, pred_keypoints.shape[:2], "keypoint_weight", "(B, K)")
    mask = _check_weight(mask, pred_keypoints.shape[:1], "mask", "(B,)")
    right, left = hips
    mask = mask * (keypoint_weight[:, right] > 0) * (keypoint_weight[:, left] > 0)
    pred = pred_keypoints - 0.5 * (pred_keypoints[:, right, None] + pred_keypoints[:, left, None])
    target = target_keypoints - 0.5 * (target_keypoints[:, right, None] + target_keypoints[:, left, None])
    weight = keypoint_weight * mask[:, None]
    diff = _select(weight[..., None] > 0, pred - target)
    return jnp.mean(diff * diff * weight[..., None]) * _batch_rescale(mask)


def dense_loss(
    pred_xy: jnp.ndarray,
    target_xy: jnp.ndarray,
    point_weight: jnp.ndarray,
    mask: jnp.ndarray,
) -> jnp.ndarray:
    """Weighted L1 on dense keypoints (official ``_densepose_align_loss``).

    ``mean over B*N*2 of |pred - target| * point_weight * mask`` times
    ``B / sum(mask)``; ``pred_xy`` is the barycentric mix of the projected
    vertices of each keypoint's face (``densepose.project_surface_points``).

    Args:
      pred_xy: ``(B, N, 2)`` predicted dense keypoints, normalized crop coordinates.
      target_xy: ``(B, N, 2)`` annotated positions.
      point_weight: ``(B, N)`` per-point weights (0 for padding).
      mask: ``(B,)`` 1 for examples with dense keypoints.

    Returns:
      ``()`` the loss.
    """
    pred_xy, target_xy = _check_points(pred_xy, target_xy, 2, "pred_xy", "target_xy", "N")
    point_weight = _check_weight(point_weight, pred_xy.shape[:2], "point_weight", "(B, N)")
    mask = _check_weight(mask, pred_xy.shape[:1], "mask", "(B,)")
    weight = point_weight * mask[:, None]
    abs_diff = jnp.abs(_select(weight[..., None] > 0, pred_xy - target_xy))
    return jnp.mean(abs_diff * weight[..., None]) * _batch_rescale(mask)


def _select(keep: jnp.ndarray, values: jnp.ndarray) -> jnp.ndarray:
    """``values`` where ``keep``, else 0: NaN/inf outside ``keep`` stay out of
    both the value and the gradient (multiplying by 0 would keep NaN)."""
    return jnp.where(keep, values, jnp.zeros((), values.dtype))


def _batch_rescale(mask: jnp.ndarray) -> jnp.ndarray:
    """``B / sum(mask)``, or 0 when the mask is all zero."""
    total = jnp.sum(mask)
    return jnp.where(total > 0, mask.shape[0] / jnp.where(total > 0, total, 1.0), 0.0)


def _check_points(pred, target, dim: int, pred_name: str, target_name: str, n: str):
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.ndim != 3 or pred.shape[-1] != dim or target.shape != pred.shape:
        raise ValueError(f"{pred_name} and {target_name} must both be (B, {n}, {dim}), got "
                         f"{pred.shape}, {target.shape}")
    return pred, target


def _check_weight(weight, shape: tuple[int, ...], name: str, expected: str) -> jnp.ndarray:
    """Checks shape and sign; returns a float array with negatives clamped to 0."""
    if not isinstance(weight, jax.core.Tracer):
        concrete = np.asarray(weight)
        if concrete.shape != tuple(shape):
            raise ValueError(f"{name} must be {expected} = {tuple(shape)}, got {concrete.shape}")
        if np.any(concrete < 0):
            raise ValueError(f"{name} must be non-negative, got min {concrete.min()}")
    elif weight.shape != tuple(shape):
        raise ValueError(f"{name} must be {expected} = {tuple(shape)}, got {weight.shape}")
    weight = jnp.asarray(weight)
    if not jnp.issubdtype(weight.dtype, jnp.floating):
        weight = weight.astype(jnp.float32)
    return jnp.maximum(weight, 0)
