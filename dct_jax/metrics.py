"""Evaluation metrics: one value per example, masks and weights explicit.

Each function returns per-example values ``(...,)``; the caller averages over
the examples it counts (and drops duplicates). Pure JAX, jit-safe.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp


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
    """
    pred_xy, target_xy, weight = jnp.asarray(pred_xy), jnp.asarray(target_xy), jnp.asarray(weight)
    if pred_xy.shape[-1:] != (2,) or pred_xy.shape != target_xy.shape:
        raise ValueError(f"pred_xy and target_xy must both be (..., N, 2), got {pred_xy.shape}, {target_xy.shape}")
    if weight.shape != pred_xy.shape[:-1]:
        raise ValueError(f"weight must be {pred_xy.shape[:-1]}, got {weight.shape}")
    diff = pred_xy - target_xy
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
