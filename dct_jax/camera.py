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

Perspective cameras (full-image overlays, methods that need a pinhole camera):
  * A pinhole camera sits at the origin and looks along +Z (x right, y down),
    with focal length ``f`` and principal point ``c`` in pixels. A body placed
    with translation ``T`` (``(..., 3)``, metres) projects a point ``X`` to
    ``f * (X + T)[:2] / (X + T)[2] + c`` (:func:`perspective_project`).
  * :func:`weak_to_perspective_translation` (SPIN's and 4D-Humans' convention):
    in a ``size x size`` crop with ``c`` at the crop centre ``(size/2, size/2)``,
    ``T = [tx, ty, 2 f / (size * s)]``. Points at ``Z = 0`` (the body frame's
    origin depth) land exactly on their weak-perspective projection; any other
    point moves towards ``c`` by ``Z / (T_z + Z)`` of its offset from ``c``,
    so the difference shrinks like ``1 / f`` (SPIN: f = 5000 px on a 224 crop).
  * :func:`crop_to_full_image_translation` (4D-Humans' ``cam_crop_to_full``):
    the same body seen by a camera of the *full* image, ``c`` at the image
    centre ``(W/2, H/2)``, for the square crop ``crop_box = [x0, y0, side]`` in
    image pixels (the layout of ``dct_jax.data.schema``); ``Z = 0`` lands on
    ``schema.crop_to_image`` of the weak-perspective projection.
  * :func:`official_renderer_translation`: the official DCT overlay camera
    (``render.project_vertices(..., projection="perspective")``): ``f = 5``
    normalized units (``2.5 * size`` pixels), ``T = [tx, ty, 5 / s]``.
  * The scale ``s`` must be positive (the body in front of the camera).
    Concrete inputs (numpy, Python numbers, jax arrays outside a transform)
    are checked and a bad value raises ``ValueError``; under ``jit``/``vmap``/
    ``grad`` the values are tracers and are not checked (then ``s <= 0`` gives
    a camera behind the body and meaningless, possibly infinite, results).
    Shapes are checked in both cases.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

OFFICIAL_RENDERER_FOCAL = 5.0  # official DCT overlay camera, normalized crop units


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


# ----------------------------------------------------------------------------- perspective


def weak_to_perspective_translation(camera: Any, *, focal_length: Any, crop_size: float) -> jnp.ndarray:
    """The perspective translation that matches a weak-perspective camera in its crop.

    Args:
      camera: ``(..., 3)`` weak-perspective ``(s, tx, ty)``, ``s > 0``.
      focal_length: focal length in crop pixels, ``> 0``; a number or a
        ``(...)`` array broadcasting with ``camera``'s leading dims.
      crop_size: side of the square crop in pixels, ``> 0``.

    Returns:
      ``(..., 3)`` translation ``[tx, ty, 2 f / (crop_size * s)]`` for a camera
      with its principal point at the crop centre.
    """
    camera = _as_vectors(camera, 3, "camera", "(s, tx, ty)")
    _check_scale(camera)
    focal_length = _positive(focal_length, "focal_length")
    crop_size = _positive(crop_size, "crop_size")
    tz = 2.0 * focal_length / (crop_size * camera[..., 0])
    return _stack(camera[..., 1], camera[..., 2], tz)


def crop_to_full_image_translation(camera: Any, crop_box: Any, *, focal_length: Any,
                                   image_size: Any) -> jnp.ndarray:
    """The perspective translation of a crop's weak-perspective camera in the full image.

    Args:
      camera: ``(..., 3)`` weak-perspective ``(s, tx, ty)`` of the crop, ``s > 0``.
      crop_box: ``(..., 3)`` the crop as ``[x0, y0, side]`` in full-image pixels
        (top-left corner and side, as ``schema.crop_box``), ``side > 0``.
      focal_length: focal length in full-image pixels, ``> 0``; a number or a
        ``(...)`` array.
      image_size: ``(height, width)`` of the full image in pixels, or a
        ``(..., 2)`` array of them.

    Returns:
      ``(..., 3)`` translation ``[tx + 2 (cx - W/2) / (b s), ty + 2 (cy - H/2)
      / (b s), 2 f / (b s)]`` (``b = side``, ``(cx, cy)`` the box centre) for a
      camera with its principal point at the image centre ``(W/2, H/2)``.
    """
    camera = _as_vectors(camera, 3, "camera", "(s, tx, ty)")
    _check_scale(camera)
    crop_box = _as_vectors(crop_box, 3, "crop_box", "[x0, y0, side]")
    side = _positive(crop_box[..., 2], "crop_box side")
    image_size = _positive(_as_vectors(image_size, 2, "image_size", "(height, width)"), "image_size")
    focal_length = _positive(focal_length, "focal_length")
    box_scale = side * camera[..., 0]  # pixels per metre at Z = 0
    centre = crop_box[..., :2] + 0.5 * side[..., None]
    offset = 2.0 * (centre - 0.5 * image_size[..., ::-1]) / box_scale[..., None]  # (x, y)
    return _stack(camera[..., 1] + offset[..., 0], camera[..., 2] + offset[..., 1],
                  2.0 * focal_length / box_scale)


def official_renderer_translation(camera: Any, focal: float = OFFICIAL_RENDERER_FOCAL) -> jnp.ndarray:
    """The official DCT overlay camera: ``(..., 3)`` ``(s, tx, ty)`` -> ``(..., 3)`` ``[tx, ty, focal / s]``.

    ``focal`` is in normalized crop units (``0.5 * size * focal`` pixels of a
    ``size`` crop), as ``render.project_vertices(..., projection="perspective")``;
    it is :func:`weak_to_perspective_translation` of a crop 2 units wide.
    """
    _positive(focal, "focal")
    return weak_to_perspective_translation(camera, focal_length=focal, crop_size=2.0)


def perspective_project(points: Any, translation: Any, *, focal_length: Any,
                        principal_point: Any) -> jnp.ndarray:
    """Projects 3D points with a pinhole camera looking along +Z.

    Args:
      points: ``(..., N, 3)`` points (body frame, metres).
      translation: ``(..., 3)`` translation added to every point of its batch.
      focal_length: focal length in pixels, ``> 0``; a number or a ``(...)`` array.
      principal_point: ``(2,)`` or ``(..., 2)`` principal point ``(x, y)`` in pixels.

    Returns:
      ``(..., N, 2)`` pixel coordinates ``f * (X + T)[:2] / (X + T)[2] + c``.
      Points at or behind the camera (``(X + T)[2] <= 0``) are not checked:
      their coordinates are meaningless.
    """
    points = _as_vectors(points, 3, "points", "(x, y, z)")
    if points.ndim < 2:
        raise ValueError(f"points must have shape (..., N, 3), got {points.shape}")
    translation = _as_vectors(translation, 3, "translation", "(x, y, z)")
    principal_point = _as_vectors(principal_point, 2, "principal_point", "(x, y)")
    focal_length = _positive(focal_length, "focal_length")
    placed = points + translation[..., None, :]
    return (focal_length[..., None, None] * placed[..., :2] / placed[..., 2:3]
            + principal_point[..., None, :])


def _as_vectors(x: Any, size: int, name: str, layout: str) -> jnp.ndarray:
    """``x`` as a float jnp array whose last axis has ``size`` entries."""
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}) as {layout}, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _concrete(x: jnp.ndarray) -> np.ndarray | None:
    """``x`` as numpy, or ``None`` if it is traced (inside jit/vmap/grad)."""
    return None if isinstance(x, jax.core.Tracer) else np.asarray(x)


def _check_scale(camera: jnp.ndarray) -> None:
    scale = _concrete(camera[..., 0])
    if scale is not None and not np.all(np.isfinite(scale) & (scale > 0)):
        bad = scale[~(np.isfinite(scale) & (scale > 0))]
        raise ValueError(
            "camera scale s (the first entry of (s, tx, ty)) must be finite and > 0 for a perspective "
            f"camera; got {bad.size} bad value(s), e.g. s = {bad.ravel()[0]}")


def _positive(x: Any, name: str) -> jnp.ndarray:
    """``x`` as a float jnp array, checked finite and > 0 when concrete."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    value = _concrete(x)
    if value is not None and not np.all(np.isfinite(value) & (value > 0)):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return x


def _stack(x: jnp.ndarray, y: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
    return jnp.stack(jnp.broadcast_arrays(x, y, z), axis=-1)
