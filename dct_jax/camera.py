"""Weak-perspective camera and crop-coordinate conventions.

Frames and units (used everywhere in dct_jax):
  * 3D points are in the body/camera frame in metres, image axes x right, y down
    (the HMR mean global rotation [pi, 0, 0] turns SMPL's y-up body upright in
    this frame).
  * A weak-perspective camera is ``(s, tx, ty)``; a 3D point ``X`` projects to
    ``x2d = s * (X[..., :2] + [tx, ty])`` in *normalized crop coordinates*,
    where the crop spans ``[-1, 1]`` on both axes (the official DCT layout).
  * Pixel coordinates of a ``size x size`` crop are continuous: pixel ``(i, j)``
    covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``;
    normalized -1 is the left/top edge, +1 the right/bottom edge.
"""

from __future__ import annotations

import jax.numpy as jnp


def weak_perspective_project(points: jnp.ndarray, camera: jnp.ndarray) -> jnp.ndarray:
    """Projects 3D points with a weak-perspective camera.

    Args:
      points: ``(..., N, 3)`` points.
      camera: ``(..., 3)`` as ``(s, tx, ty)``; leading dims broadcast with points'.

    Returns:
      ``(..., N, 2)`` normalized crop coordinates.
    """
    scale = camera[..., None, 0:1]
    translation = camera[..., None, 1:3]
    return scale * (points[..., :2] + translation)


def normalized_to_pixels(xy: jnp.ndarray, size: float) -> jnp.ndarray:
    """``(..., 2)`` normalized crop coordinates -> continuous pixel coordinates."""
    return (xy + 1.0) * (0.5 * size)


def pixels_to_normalized(xy: jnp.ndarray, size: float) -> jnp.ndarray:
    """``(..., 2)`` continuous pixel coordinates -> normalized crop coordinates."""
    return xy / (0.5 * size) - 1.0
