"""Evaluation metrics: one value per example, masks and weights explicit.

Each function returns per-example values ``(...,)``; the caller averages over
the examples it counts (and drops duplicates). Pure JAX, jit-safe.

3D metrics take points in metres and return millimetres: :func:`mpjpe`,
:func:`pve` (no alignment), :func:`pa_mpjpe` (after a similarity Procrustes).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from dct_jax import geometry

_MM_PER_M = 1000.0


def mpjpe(pred: jnp.ndarray, gt: jnp.ndarray) -> jnp.ndarray:
    """Mean per-joint position error, no alignment.

    Args:
      pred: ``(..., N, 3)`` predicted joints, metres.
      gt: ``(..., N, 3)`` ground-truth joints, metres.

    Returns:
      ``(...,)`` mean Euclidean distance in millimetres (NaN if a point is NaN).

    Errors:
      ValueError: ``pred`` and ``gt`` not both ``(..., N, 3)`` of one shape.
    """
    pred, gt = _check_points3d(pred, gt)
    return _mean_distance(pred, gt) * _MM_PER_M


def pve(pred: jnp.ndarray, gt: jnp.ndarray) -> jnp.ndarray:
    """Per-vertex error: :func:`mpjpe` over mesh vertices ``(..., V, 3)`` (metres -> mm)."""
    return mpjpe(pred, gt)


def pa_mpjpe(pred: jnp.ndarray, gt: jnp.ndarray) -> jnp.ndarray:
    """MPJPE after aligning ``pred`` to ``gt`` by a similarity Procrustes.

    SPIN's ``compute_similarity_transform`` (``geometry.procrustes_align``):
    both centred, rotation from the SVD of the cross-covariance with a sign fix
    so ``det R = +1``, scale ``tr(R K) / var(pred)``, then the translation.

    Args:
      pred: ``(..., N, 3)`` predicted joints, metres.
      gt: ``(..., N, 3)`` ground-truth joints, metres.

    Returns:
      ``(...,)`` mean Euclidean distance after alignment, millimetres.

    Errors:
      ValueError: ``pred`` and ``gt`` not both ``(..., N, 3)`` of one shape.
    """
    pred, gt = _check_points3d(pred, gt)
    return _mean_distance(geometry.procrustes_align(pred, gt, scale=True), gt) * _MM_PER_M


def _check_points3d(pred, gt) -> tuple[jnp.ndarray, jnp.ndarray]:
    pred, gt = jnp.asarray(pred), jnp.asarray(gt)
    if pred.ndim < 2 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(f"pred and gt must both be (..., N, 3), got {pred.shape}, {gt.shape}")
    return pred, gt


def _mean_distance(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """``(..., N, 3)`` pairs -> ``(...,)`` mean Euclidean distance (finite gradient at 0)."""
    diff = a - b
    sq = jnp.sum(diff * diff, axis=-1)
    dist = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return jnp.mean(dist, axis=-1)


def dense_keypoint_distance(
    pred_xy: jnp.ndarray,
    target_xy: jnp.ndarray,
    weight: jnp.ndarray,
    *,
    norm: Literal["l1", "l2"] = "l1",
) -> jnp.ndarray:
    """Dense keypoint distance (DKD, paper Eq. 4 and Sec. 4.1), per example.

    The weighted mean over an example's dense keypoints of the distance between
    the projected surface point (``densepose.project_surface_points``) and its
    annotated position. ``norm="l1"`` is Eq. 4's ``|x - x^|_1`` (|dx| + |dy|);
    ``"l2"`` the Euclidean distance. Units are those of the inputs (e.g.
    normalized crop coordinates or pixels).

    Args:
      pred_xy: ``(..., N, 2)`` predicted 2D positions.
      target_xy: ``(..., N, 2)`` annotated 2D positions.
      weight: ``(..., N)`` per-point weights (0 for padding, e.g. from
        ``densepose.sample_dense_keypoints``).
      norm: ``"l1"`` or ``"l2"``.

    Returns:
      ``(...,)`` weighted mean distance; 0 for an example whose weights sum to 0.
      Points of weight 0 are selected out, so NaN/inf there does not leak into
      the value or gradient (a NaN at a point of positive weight does: loud).

    Errors:
      ValueError: shapes not ``(..., N, 2)`` / ``(..., N)``, an unknown
        ``norm``, or (concrete ``weight`` only) a negative or non-finite
        weight. Under ``jit`` the weight cannot be checked: negative and
        non-finite weights then count as 0.
    """
    pred_xy, target_xy, weight = jnp.asarray(pred_xy), jnp.asarray(target_xy), jnp.asarray(weight)
    if pred_xy.shape[-1:] != (2,) or pred_xy.shape != target_xy.shape:
        raise ValueError(f"pred_xy and target_xy must both be (..., N, 2), got {pred_xy.shape}, {target_xy.shape}")
    if weight.shape != pred_xy.shape[:-1]:
        raise ValueError(f"weight must be {pred_xy.shape[:-1]}, got {weight.shape}")
    if not isinstance(weight, jax.core.Tracer):
        concrete = np.asarray(weight)
        if not np.all(np.isfinite(concrete)):
            raise ValueError("weight must be finite (0 masks a point out), found NaN or inf")
        if np.any(concrete < 0):
            raise ValueError(f"weight must be non-negative, got min {concrete.min()}")
    weight = jnp.where(jnp.isfinite(weight) & (weight > 0), weight, 0)
    diff = jnp.where(weight[..., None] > 0, pred_xy - target_xy, 0.0)
    if norm == "l1":
        dist = jnp.sum(jnp.abs(diff), axis=-1)
    elif norm == "l2":
        # sqrt of a clamped square keeps the gradient finite at zero distance.
        sq = jnp.sum(diff * diff, axis=-1)
        dist = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    else:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    total = jnp.sum(weight, axis=-1)
    return jnp.sum(weight * dist, axis=-1) / jnp.where(total > 0, total, 1.0)
