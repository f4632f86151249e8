"""Synthetic people: random bodies rendered into records of ``dct_jax.data.schema``.

Every example is one body of a body model (the free default body unless told
otherwise) in a random plausible pose and shape, seen by a random
weak-perspective camera, rendered with random clothing colours and lighting
over a procedural background. It carries every supervision the schema knows:
the RGB crop, its IUV map and part segmentation, the 19 cocoplus keypoints with
visibility, ~100-150 dense keypoints in COCO-DensePose form, the pose, shape,
camera, mesh and joints. Everything is numpy on the host except one jitted
``smpl.forward`` per chunk of bodies; an example is a pure function of
``(seed, split, index)``. Other generated datasets (``dct_jax.studio``) reuse
the renderer and the generation loop: :func:`render_example` takes a fixed
camera, appearance and background, and :func:`generate_examples` any
:class:`Recipe`.

The distributions (all uniform unless said otherwise):

* **Body pose** (joints 1-23, axis-angle in each joint's rest frame, SMPL
  conventions: the body's left is +x, y up, it faces +z): one of the base
  poses :data:`BASE_POSES` (standing, walking, reaching, arms up, sitting,
  crouching, lunging, T-pose; equal odds), mirrored left/right with p = 0.5,
  then every axis of every joint moves by up to ``JITTER_FRACTION`` (20%) of
  that axis's range in :data:`JOINT_LIMITS`, and is clipped to the range.
  The limits are anatomical rather than exact (e.g. hip flexion up to
  115 degrees, knee 0-138 degrees, elbow 0-143 degrees); adding axis-angle
  vectors is a first-order composition, good enough for a prior.
* **Global rotation** (camera frame, x right, y down): the HMR mean
  ``[pi, 0, 0]`` (upright, facing the camera), then a yaw about the vertical
  axis within +-57 degrees (p = 0.85) or any yaw (p = 0.15, side and back
  views), then pitch and roll within +-8.6 degrees.
* **Shape**: betas ~ N(0, 1), clipped to +-2.5 (the default body's shape
  space is scaled so that this is a plausible adult population).
* **Camera**: ``s`` makes the larger side of the body's projected box fill
  60-90% of the crop (p = 0.9) or 90-130% (p = 0.1, truncated bodies);
  ``(tx, ty)`` centre that box, then shift it by up to 10% of the half-crop.
* **Appearance**: skin tone from a palette (shared by head, hands and bare
  limbs), shirt, trousers and shoes of random colours (sleeve and leg lengths
  vary; 30% of garments striped along the chart's U or V), a directional
  light from the camera's half-space with random tint and 30-60% ambient.
* **Background**: a two-colour gradient, low-frequency colour noise, 3-9
  random rectangles, ellipses and lines, sometimes a floor; the composite
  gets mild blur and sensor noise and is stored as JPEG (quality 90).

Annotation rules:

* Keypoint pixels are the projections of the layout's 3D keypoints
  (``dct_jax.keypoints``). Visibility: 0 outside the crop; else 2 (visible)
  when the depth buffer at its pixel shows no surface more than
  :data:`SURFACE_TOLERANCE` (surface keypoints: nose, eyes, ears, head top)
  or :data:`JOINT_TOLERANCE` (joint centres, which lie inside the limb) in
  front of it, or a surface at most :data:`ADJACENT_TOLERANCE` in front
  that belongs to a part adjacent to the joint
  (``densepose.COCOPLUS19_PARTS``); otherwise 1 (occluded).
* Dense keypoints: 100-150 foreground pixel centres drawn uniformly without
  replacement; ``(I, U, V)`` are the exact chart coordinates of the surface
  point that the pixel centre sees (face id + barycentrics of the rasterizer),
  not the 8-bit IUV map. ``bbox`` is the tight box of the rendered mask
  (whole pixels), the frame of ``dp_x``/``dp_y``.
* The image *is* the crop: ``crop_box = [0, 0, size]``.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any, Callable, Iterator, Mapping

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from dct_jax import densepose, keypoints, render, smpl
from dct_jax.data import schema

DEFAULT_IMAGE_SIZE = 224
JITTER_FRACTION = 0.2
SURFACE_TOLERANCE = 0.02  # metres
JOINT_TOLERANCE = 0.04
ADJACENT_TOLERANCE = 0.2  # adjacent surfaces measured <= 0.17 m, other occluders >= 0.28 m
NUM_DENSE_RANGE = (100, 150)
JPEG_QUALITY = 90

_J = {name: i for i, name in enumerate(smpl.SMPL_JOINT_NAMES)}

# Per-joint axis-angle limits (radians) for the body's *left* side and the
# spine/head, as ((lo_x, lo_y, lo_z), (hi_x, hi_y, hi_z)); right joints mirror
# them. Signs (SMPL frame): hip/ankle x < 0 swings the leg forward, knee x > 0
# bends it; spine/neck x > 0 bends forward; left shoulder z < 0 lowers the arm
# (z > 0 raises it), y < 0 swings it forward; left elbow y < 0 bends it.
_LEFT_AND_CENTRE_LIMITS = {
    "left_hip": ((-2.0, -0.5, -0.3), (0.4, 0.7, 0.9)),
    "left_knee": ((0.0, -0.15, -0.1), (2.4, 0.15, 0.1)),
    "left_ankle": ((-0.6, -0.3, -0.3), (0.8, 0.3, 0.3)),
    "left_foot": ((-0.3, -0.2, -0.2), (0.3, 0.2, 0.2)),
    "spine1": ((-0.3, -0.4, -0.3), (0.6, 0.4, 0.3)),
    "spine2": ((-0.2, -0.3, -0.2), (0.4, 0.3, 0.2)),
    "spine3": ((-0.2, -0.3, -0.2), (0.4, 0.3, 0.2)),
    "neck": ((-0.4, -0.5, -0.3), (0.5, 0.5, 0.3)),
    "head": ((-0.3, -0.6, -0.3), (0.4, 0.6, 0.3)),
    "left_collar": ((-0.2, -0.3, -0.3), (0.2, 0.3, 0.4)),
    "left_shoulder": ((-1.0, -1.6, -1.5), (1.0, 0.8, 1.2)),
    "left_elbow": ((-0.3, -2.5, -0.1), (0.3, 0.0, 0.1)),
    "left_wrist": ((-0.6, -0.4, -0.8), (0.6, 0.4, 0.8)),
    "left_hand": ((-0.3, -0.3, -0.3), (0.3, 0.3, 0.3)),
}

# Base poses: {joint: axis-angle}; "left_*" entries also set the mirrored
# "right_*" joint unless the pose gives that joint itself.
_BASE_POSES = {
    "standing": {"left_hip": (0.0, 0.0, 0.05), "left_shoulder": (0.0, 0.0, -1.25),
                 "left_elbow": (0.0, -0.25, 0.0)},
    "walking": {"left_hip": (-0.5, 0.0, 0.0), "right_hip": (0.35, 0.0, 0.0),
                "left_knee": (0.3, 0.0, 0.0), "right_knee": (0.7, 0.0, 0.0),
                "left_shoulder": (0.0, 0.35, -1.25), "right_shoulder": (0.0, 0.35, 1.25),
                "left_elbow": (0.0, -0.3, 0.0), "right_elbow": (0.0, 0.5, 0.0)},
    "reaching": {"spine1": (0.1, 0.0, 0.0), "left_shoulder": (0.0, -0.9, 0.2),
                 "left_elbow": (0.0, -0.3, 0.0)},
    "arms_up": {"left_shoulder": (0.0, 0.0, 1.0), "left_elbow": (0.0, -0.4, 0.0)},
    "sitting": {"left_hip": (-1.5, 0.0, 0.1), "left_knee": (1.5, 0.0, 0.0),
                "left_shoulder": (0.0, -0.4, -1.1), "left_elbow": (0.0, -0.8, 0.0)},
    "crouching": {"left_hip": (-1.9, 0.0, 0.25), "left_knee": (2.2, 0.0, 0.0),
                  "left_ankle": (0.4, 0.0, 0.0), "spine1": (0.3, 0.0, 0.0),
                  "left_shoulder": (0.0, -0.6, -1.0), "left_elbow": (0.0, -1.2, 0.0)},
    "lunging": {"left_hip": (-1.2, 0.0, 0.1), "left_knee": (1.0, 0.0, 0.0),
                "right_hip": (0.3, 0.0, 0.0), "right_knee": (0.3, 0.0, 0.0),
                "left_shoulder": (0.0, 0.0, -0.5)},
    "t_pose": {"left_shoulder": (0.0, 0.0, -0.2)},
}


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def _mirror_axis_angle(aa: np.ndarray) -> np.ndarray:
    """Left/right mirror of axis-angle rotations ``(..., 3)``: ``(x, -y, -z)``."""
    return aa * np.array([1.0, -1.0, -1.0], aa.dtype)


_MIRROR_JOINTS = np.array([_J[_mirror_name(n)] for n in smpl.SMPL_JOINT_NAMES])


def _limits() -> np.ndarray:
    """``(2, 24, 3)`` lower and upper axis-angle limits of every joint."""
    lims = np.zeros((2, 24, 3))
    for name, (lo, hi) in _LEFT_AND_CENTRE_LIMITS.items():
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        lims[:, _J[name]] = lo, hi
        if name.startswith("left_"):
            mlo, mhi = _mirror_axis_angle(lo), _mirror_axis_angle(hi)
            lims[:, _J[_mirror_name(name)]] = np.minimum(mlo, mhi), np.maximum(mlo, mhi)
    return lims


def pose_from_joints(joints: Mapping[str, Any]) -> np.ndarray:
    """``(24, 3)`` axis-angle pose from ``{SMPL joint name: (3,) axis-angle}``, zero elsewhere.

    A ``left_*``/``right_*`` entry also sets its mirror joint (:func:`mirror_pose`'s
    rule) unless ``joints`` gives that joint itself.
    """
    pose = np.zeros((24, 3))
    for name, aa in joints.items():
        pose[_J[name]] = aa
        mirrored = _mirror_name(name)
        if mirrored != name and mirrored not in joints:
            pose[_J[mirrored]] = _mirror_axis_angle(np.asarray(aa, float))
    return pose


JOINT_LIMITS = _limits()  # (2, 24, 3): joint 0 (global) is set separately
BASE_POSES = {name: pose_from_joints(joints) for name, joints in _BASE_POSES.items()}  # joint 0 unused


def mirror_pose(pose: np.ndarray) -> np.ndarray:
    """Left/right mirror of a ``(..., 24, 3)`` SMPL pose (swap sides, negate y, z)."""
    return _mirror_axis_angle(np.asarray(pose)[..., _MIRROR_JOINTS, :])


# ----------------------------------------------------------------------------- sampling


def _axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(aa, np.float64).reshape(3, 1))[0]


def sample_global_rotation(rng: np.random.Generator) -> np.ndarray:
    """``(3,)`` axis-angle: ``[pi, 0, 0]`` turned by a random yaw, pitch and roll."""
    yaw = rng.uniform(-1.0, 1.0) if rng.random() < 0.85 else rng.uniform(-np.pi, np.pi)
    pitch, roll = rng.uniform(-0.15, 0.15, size=2)
    # Camera frame, y down: yaw about y, then pitch about x and roll about z.
    rot = (_axis_angle_to_matrix([0, 0, roll]) @ _axis_angle_to_matrix([pitch, 0, 0])
           @ _axis_angle_to_matrix([0, yaw, 0]) @ _axis_angle_to_matrix([np.pi, 0, 0]))
    return cv2.Rodrigues(rot)[0].reshape(3)


def sample_body_pose(rng: np.random.Generator) -> np.ndarray:
    """``(24, 3)`` axis-angle from the base-pose prior (joint 0 zero)."""
    names = sorted(BASE_POSES)
    pose = BASE_POSES[names[rng.integers(len(names))]]
    if rng.random() < 0.5:
        pose = mirror_pose(pose)
    lo, hi = JOINT_LIMITS
    jitter = JITTER_FRACTION * (hi - lo) * rng.uniform(-1.0, 1.0, size=(24, 3))
    pose = np.clip(pose + jitter, lo, hi)
    pose[0] = 0.0
    return pose


def sample_pose(rng: np.random.Generator) -> np.ndarray:
    """``(72,)`` float32 SMPL pose: global rotation and body pose."""
    pose = sample_body_pose(rng)
    pose[0] = sample_global_rotation(rng)
    return pose.reshape(72).astype(np.float32)


def sample_betas(rng: np.random.Generator, num_betas: int = schema.NUM_BETAS) -> np.ndarray:
    """``(num_betas,)`` float32 shape, N(0, 1) clipped to +-2.5."""
    return np.clip(rng.standard_normal(num_betas), -2.5, 2.5).astype(np.float32)


def frame_camera(vertices: np.ndarray, scale: float, shift: np.ndarray) -> np.ndarray:
    """``(3,)`` float32 camera ``(scale, tx, ty)`` putting the centre of the projected box
    of ``vertices (V, 3)`` at ``shift (2,)`` (normalized crop coordinates)."""
    lo, hi = vertices[:, :2].min(0), vertices[:, :2].max(0)
    translation = shift / scale - 0.5 * (lo + hi)
    return np.array([scale, *translation], np.float32)


def sample_camera(vertices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(3,)`` float32 weak-perspective camera ``(s, tx, ty)`` framing ``vertices (V, 3)``."""
    lo, hi = vertices[:, :2].min(0), vertices[:, :2].max(0)
    fill = rng.uniform(0.6, 0.9) if rng.random() < 0.9 else rng.uniform(0.9, 1.3)
    scale = 2.0 * fill / max(float((hi - lo).max()), 1e-6)
    return frame_camera(vertices, scale, rng.uniform(-0.1, 0.1, size=2))


# ----------------------------------------------------------------------------- appearance

_SKIN_TONES = np.array([(0.98, 0.85, 0.75), (0.91, 0.73, 0.60), (0.80, 0.60, 0.45),
                        (0.62, 0.44, 0.32), (0.45, 0.30, 0.22), (0.30, 0.20, 0.15)])
# DensePose parts (1-24) by garment region.
_TORSO, _UPPER_ARMS, _LOWER_ARMS = (1, 2), (15, 16, 17, 18), (19, 20, 21, 22)
_HANDS, _HEAD = (3, 4), (23, 24)
_UPPER_LEGS, _LOWER_LEGS, _FEET = (7, 8, 9, 10), (11, 12, 13, 14), (5, 6)


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Per-part colours (index: DensePose part 0-24) and light of one body.

    ``colors``/``stripe_colors`` ``(25, 3)`` RGB in [0, 1]; ``stripe_freq``
    ``(25,)`` stripes per chart unit (0 = plain) along U (``stripe_axis`` 0) or
    V (1); ``light_direction`` ``(3,)`` towards the light (camera frame),
    ``light_color`` ``(3,)`` RGB tint, ``ambient`` the ambient fraction.
    """

    colors: np.ndarray
    stripe_colors: np.ndarray
    stripe_freq: np.ndarray
    stripe_axis: np.ndarray
    light_direction: np.ndarray
    light_color: np.ndarray
    ambient: float


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(25, 230), rng.uniform(40, 245)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0


def garment_parts(*, long_sleeves: bool, long_legs: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The DensePose parts (1-24) a shirt and trousers cover."""
    return (_TORSO + _UPPER_ARMS + (_LOWER_ARMS if long_sleeves else ()),
            _UPPER_LEGS + (_LOWER_LEGS if long_legs else ()))


def outfit_colors(skin: Any, shirt: Any, trousers: Any, shoes: Any, *, long_sleeves: bool,
                  long_legs: bool) -> np.ndarray:
    """``(25, 3)`` per-part RGB (index: DensePose part 0-24) of a body in plain clothes.

    Skin (head, hands, bare limbs, and row 0: a pixel the chart misses is skin,
    not black), the shirt and trousers over :func:`garment_parts`, shoes on the feet.
    """
    colors = np.zeros((25, 3))
    colors[:] = skin
    for parts, color in zip(garment_parts(long_sleeves=long_sleeves, long_legs=long_legs),
                            (shirt, trousers)):
        colors[list(parts)] = color
    colors[list(_FEET)] = shoes
    return colors


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Random skin tone, shirt, trousers, shoes and light."""
    stripe_colors = np.zeros((25, 3))
    stripe_freq = np.zeros(25)
    stripe_axis = np.zeros(25, np.int64)
    skin = np.clip(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-0.04, 0.04, 3), 0, 1)
    shirt, trousers, shoes = (_random_color(rng) for _ in range(3))
    long_sleeves, long_legs = rng.random() < 0.4, rng.random() < 0.7
    colors = outfit_colors(skin, shirt, trousers, shoes, long_sleeves=long_sleeves, long_legs=long_legs)
    for parts in garment_parts(long_sleeves=long_sleeves, long_legs=long_legs):
        if rng.random() < 0.3:
            stripe_colors[list(parts)] = _random_color(rng)
            stripe_freq[list(parts)] = rng.uniform(4.0, 12.0)
            stripe_axis[list(parts)] = rng.integers(2)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.3), -rng.uniform(0.5, 1.5)])
    return Appearance(colors=colors, stripe_colors=stripe_colors, stripe_freq=stripe_freq,
                      stripe_axis=stripe_axis, light_direction=light,
                      light_color=1.0 + rng.uniform(-0.1, 0.1, 3), ambient=rng.uniform(0.3, 0.6))


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 RGB procedural background."""
    c0, c1 = _random_color(rng), _random_color(rng)
    angle = rng.uniform(0, 2 * np.pi)
    grid = (np.arange(size) + 0.5) / size - 0.5
    t = np.clip(0.5 + np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None], 0, 1)
    image = (c0 + t[..., None] * (c1 - c0)) * 255.0
    noise = rng.uniform(-1, 1, size=(rng.integers(3, 9),) * 2 + (3,)).astype(np.float32)
    image += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(0, 40)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # a floor below a horizon
        horizon = int(rng.uniform(0.5, 0.85) * size)
        image[horizon:] = (0.6 * image[horizon:] + 0.4 * 255 * _random_color(rng)).astype(np.uint8)
    for _ in range(rng.integers(3, 10)):
        color = tuple(int(c) for c in 255 * _random_color(rng))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(-size // 4, size + size // 4, 4))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(image, (x0, y0), (x1, y1), color, -1 if rng.random() < 0.7 else 3)
        elif kind == 1:
            axes = (max(abs(x1 - x0) // 2, 2), max(abs(y1 - y0) // 2, 2))
            cv2.ellipse(image, (x0, y0), axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            cv2.line(image, (x0, y0), (x1, y1), color, int(rng.integers(1, 8)))
    return image


def shade(iuv: np.ndarray, shading: np.ndarray, appearance: Appearance) -> np.ndarray:
    """``(H, W, 3)`` float RGB (0-255) of the body: part albedo x ``shading`` (0-1)."""
    part = iuv[..., 0].astype(np.int64)
    albedo = appearance.colors[part]
    freq = appearance.stripe_freq[part]
    coord = np.where(appearance.stripe_axis[part] == 0, iuv[..., 1], iuv[..., 2]) / 255.0
    striped = (freq > 0) & (np.mod(coord * freq, 1.0) < 0.5)
    albedo = np.where(striped[..., None], appearance.stripe_colors[part], albedo)
    return 255.0 * albedo * shading[..., None] * appearance.light_color


# ----------------------------------------------------------------------------- annotation


def keypoint_visibility(xy: np.ndarray, depth: np.ndarray, is_surface: np.ndarray,
                        depth_map: np.ndarray, part_map: np.ndarray) -> np.ndarray:
    """COCO visibility (0/1/2) of projected 3D keypoints (see the module docstring).

    Args:
      xy: ``(K, 2)`` continuous pixel coordinates; depth: ``(K,)`` their depth.
      is_surface: ``(K,)`` bool, True for surface (vertex) keypoints.
      depth_map: ``(H, W)`` rendered depth (inf on background).
      part_map: ``(H, W)`` DensePose part per pixel (0 on background).

    Returns:
      ``(K,)`` uint8.
    """
    height, width = depth_map.shape
    col = np.floor(xy[:, 0]).astype(np.int64)
    row = np.floor(xy[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    col, row = np.clip(col, 0, width - 1), np.clip(row, 0, height - 1)
    in_front = depth - depth_map[row, col]  # how far the seen surface is in front
    part = part_map[row, col]
    adjacent = np.array([part[k] in densepose.COCOPLUS19_PARTS[k] for k in range(len(xy))])
    visible = np.where(
        is_surface, in_front <= SURFACE_TOLERANCE,
        (in_front <= JOINT_TOLERANCE) | (adjacent & (in_front <= ADJACENT_TOLERANCE)))
    return np.where(inside, np.where(visible, schema.VISIBILITY_VISIBLE, schema.VISIBILITY_OCCLUDED),
                    schema.VISIBILITY_UNLABELLED).astype(np.uint8)


def mask_bbox(mask: np.ndarray) -> np.ndarray:
    """``[x, y, w, h]`` float32: the whole-pixel box of a non-empty ``(H, W)`` mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise ValueError("the mask is empty")
    return np.array([cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]], np.float32)


def dense_keypoints(fragments: render.Fragments, chart: render.RenderChart, num: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples dense keypoints exactly on the visible surface.

    Args:
      fragments: of an ``iuv`` render (face ids index the chart's faces).
      chart: that render's chart.
      num: points wanted (fewer if fewer pixels are covered).
      rng: random generator.

    Returns:
      ``xy (N, 2)`` float32 pixel centres, ``parts (N,)`` uint8 1-24 and
      ``uv (N, 2)`` float32 chart coordinates of the surface point each sees.
    """
    covered = np.flatnonzero(fragments.face_ids.reshape(-1) >= 0)
    pick = np.sort(rng.choice(covered, size=min(num, covered.size), replace=False))
    width = fragments.face_ids.shape[1]
    xy = np.stack([pick % width + 0.5, pick // width + 0.5], -1).astype(np.float32)
    face = fragments.face_ids.reshape(-1)[pick]
    bary = fragments.barycentric.reshape(-1, 3)[pick].astype(np.float64)
    uv = np.einsum("nk,nkc->nc", bary, chart.uv[chart.faces[face]].astype(np.float64))
    return xy, chart.parts[face], np.clip(uv, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- bodies


@dataclasses.dataclass(frozen=True, eq=False)
class Body:
    """A body model with what rendering and annotation need.

    Attributes:
      name: ``"default"`` or ``"smpl"`` (``schema.BODY_MODELS``).
      model: the ``smpl.SMPLModel``.
      faces: ``(F, 3)`` the model's faces, on the host.
      chart: its DensePose chart as a ``render.RenderChart``.
      layout: its cocoplus19 ``keypoints.Layout``.
    """

    name: str
    model: smpl.SMPLModel
    faces: np.ndarray
    chart: render.RenderChart
    layout: keypoints.Layout


def default_chart_path() -> str:
    """Path of the default body's chart (``UV_Processed.mat`` layout, ``.npz``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "default_chart.npz")


def load_body(model_path: str | None = None, chart: Any = None) -> Body:
    """Loads a body for rendering: the free default body and chart by default.

    Args:
      model_path: an SMPL-format model for ``smpl.load`` (``None``: the default body).
      chart: anything ``render.RenderChart.from_any`` takes (e.g. the dict of
        ``UV_Processed.mat`` for SMPL); ``None``: the default body's chart.
    """
    model = smpl.load(model_path)
    name = "default" if model_path is None else keypoints.body_for_num_vertices(model.num_vertices)
    if chart is None:
        if name != "default":
            raise ValueError("pass the chart of a body other than the default one")
        with np.load(default_chart_path()) as npz:
            chart = dict(npz)
    return Body(name=name, model=model, faces=np.asarray(model.faces),
                chart=render.RenderChart.from_any(chart),
                layout=keypoints.get_layout(schema.KEYPOINT_LAYOUT, body=name))


@jax.jit
def _posed(model: smpl.SMPLModel, pose: jnp.ndarray, betas: jnp.ndarray):
    out = smpl.forward(model, pose, betas)
    return out.vertices, out.joints


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of example ``index`` of ``split``: examples are independent."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def render_example(body: Body, pose: np.ndarray, betas: np.ndarray, vertices: np.ndarray,
                   joints: np.ndarray, rng: np.random.Generator, *, size: int, record_id: str,
                   with_mesh: bool = True, camera: np.ndarray | None = None,
                   appearance: Appearance | None = None, background: np.ndarray | None = None,
                   dense: bool = True, keypoints3d: bool = False) -> dict[str, Any]:
    """Frames, renders and annotates one posed body into a schema record.

    ``rng`` draws, in this order: the camera, the appearance and the background
    (each only when not given), blur and sensor noise, and the dense keypoints
    (only if ``dense``). With the defaults this is the synthetic dataset's example.

    Args:
      body: from :func:`load_body`.
      pose, betas: ``(72,)``, ``(10,)`` the body's parameters.
      vertices, joints: ``(V, 3)``, ``(24, 3)`` its posed mesh and joints.
      rng: this example's generator.
      size: crop side in pixels.
      record_id: the record's id (also its ``image_id``).
      with_mesh: store ``vertices``/``joints`` (``has_mesh``).
      camera: ``(3,)`` weak-perspective ``(s, tx, ty)``; default :func:`sample_camera`.
      appearance: default :func:`sample_appearance`.
      background: ``(size, size, 3)`` uint8 RGB; default :func:`random_background`.
      dense: sample dense keypoints (``has_dense``); else the ``dp_*`` fields stay empty.
      keypoints3d: store the cocoplus19 3D keypoints (``has_keypoints3d``, all labelled).
    """
    vertices = np.asarray(vertices, np.float32)
    joints = np.asarray(joints, np.float32)
    cam = sample_camera(vertices, rng) if camera is None else np.asarray(camera, np.float32).reshape(3)
    appearance = sample_appearance(rng) if appearance is None else appearance
    background = random_background(rng, size) if background is None else np.asarray(background)
    if background.shape != (size, size, 3) or background.dtype != np.uint8:
        raise ValueError(f"{record_id}: background must be ({size}, {size}, 3) uint8, got "
                         f"{background.shape} {background.dtype}")

    light_image, frags = render.render(
        vertices, body.faces, cam, size, "rgb", color=(1.0, 1.0, 1.0),
        light_direction=appearance.light_direction, ambient=appearance.ambient,
        return_fragments=True)
    iuv, iuv_frags = render.render(vertices, None, cam, size, "iuv", chart=body.chart,
                                   return_fragments=True)
    mask = frags.mask
    if not mask.any():
        raise ValueError(f"{record_id}: the body is outside the crop (camera {cam})")
    body_rgb = shade(iuv, light_image[..., 0] / 255.0, appearance)
    image = np.where(mask[..., None], body_rgb, background.astype(np.float64))
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    image = image + rng.normal(0.0, rng.uniform(0.0, 5.0), image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    kp3d = np.asarray(keypoints.from_body(body.layout, vertices, joints))
    kp_xy, kp_depth = render.project_vertices(kp3d, cam, size)
    visibility = keypoint_visibility(kp_xy, kp_depth, np.asarray(body.layout.is_vertex),
                                     frags.depth, iuv[..., 0])
    bbox = mask_bbox(mask)
    labels = dict(vertices=vertices, joints=joints) if with_mesh else {}
    if dense:
        dense_xy, dense_parts, dense_uv = dense_keypoints(
            iuv_frags, body.chart, int(rng.integers(NUM_DENSE_RANGE[0], NUM_DENSE_RANGE[1] + 1)), rng)
        dp_x, dp_y = schema.image_to_dense(dense_xy, bbox)
        labels.update(dp_x=dp_x, dp_y=dp_y, dp_I=dense_parts, dp_U=dense_uv[:, 0], dp_V=dense_uv[:, 1])
    if keypoints3d:
        labels.update(keypoints3d=kp3d,
                      keypoints3d_visibility=np.full(len(kp3d), schema.VISIBILITY_VISIBLE, np.uint8))
    return schema.make_record(
        record_id=record_id, image_id=record_id, body_model=body.name,
        image=schema.encode_image(image, quality=JPEG_QUALITY), image_shape=(size, size),
        bbox=bbox, crop_box=(0.0, 0.0, float(size)),
        keypoints=kp_xy, keypoints_visibility=visibility,
        iuv=schema.encode_iuv(iuv), segmentation=schema.encode_segmentation(iuv[..., 0]),
        smpl_pose=pose, smpl_betas=betas, camera=cam, has_mesh=with_mesh, **labels)


# ----------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a generated dataset makes its examples (:func:`generate_examples`).

    Every attribute is a module-level function, so that a recipe pickles into
    worker processes.

    Attributes:
      rng: ``(seed, split, index) -> np.random.Generator`` of one example.
      sample: ``(rng, split, num_betas) -> (pose (72,), betas (num_betas,), params)``:
        what is drawn before the body is posed; ``params`` is passed on.
      record_id: ``(split, index, params) -> str``.
      render: ``(body, pose, betas, vertices, joints, rng, params, *, size,
        record_id, with_mesh) -> record``, drawing the rest from ``rng``.
    """

    rng: Callable[[int, str, int], np.random.Generator]
    sample: Callable[[np.random.Generator, str, int], tuple[np.ndarray, np.ndarray, Any]]
    record_id: Callable[[str, int, Any], str]
    render: Callable[..., dict[str, Any]]


def _sample_synthetic(rng: np.random.Generator, split: str, num_betas: int):
    del split  # every split has the same distribution
    return sample_pose(rng), sample_betas(rng, num_betas), None


def _synthetic_record_id(split: str, index: int, params: None) -> str:
    del params
    return f"synthetic/{split}/{index:06d}"


def _render_synthetic(body: Body, pose, betas, vertices, joints, rng, params, **kwargs):
    del params
    return render_example(body, pose, betas, vertices, joints, rng, **kwargs)


SYNTHETIC = Recipe(rng=example_rng, sample=_sample_synthetic, record_id=_synthetic_record_id,
                   render=_render_synthetic)


def generate(split: str, num_examples: int, *, seed: int = 0, size: int = DEFAULT_IMAGE_SIZE,
             body: Body | None = None, with_mesh: bool = True, start: int = 0,
             chunk: int = 16, workers: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(record_id, record)`` for examples ``start .. start + num_examples - 1``.

    Example ``i`` depends only on ``(seed, split, i)`` (:func:`example_rng`), so
    any range of a split can be made independently. Bodies are posed ``chunk``
    at a time with one jitted ``smpl.forward``.

    Args:
      split: split name (part of the ids and of the seed).
      num_examples: how many.
      seed: dataset seed.
      size: crop side in pixels.
      body: from :func:`load_body` (default: the free default body).
      with_mesh: store vertices and joints.
      start: index of the first example.
      chunk: bodies posed per ``smpl.forward`` call (padded to this size).
      workers: processes rendering in parallel (blocks of ``4 * chunk``
        examples, yielded in order); the records do not depend on it.
    """
    return generate_examples(SYNTHETIC, split, num_examples, seed=seed, size=size, body=body,
                             with_mesh=with_mesh, start=start, chunk=chunk, workers=workers)


def generate_examples(recipe: Recipe, split: str, num_examples: int, *, seed: int, size: int,
                      body: Body | None, with_mesh: bool, start: int, chunk: int,
                      workers: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """:func:`generate` for any :class:`Recipe` (same arguments, same contract).

    Per example: ``recipe.rng``, then ``recipe.sample`` for every example of a
    chunk, one ``smpl.forward`` of the chunk, then ``recipe.render`` with the
    same generator.
    """
    if num_examples < 0 or size < 16:
        raise ValueError(f"need num_examples >= 0 and size >= 16, got {num_examples}, {size}")
    body = load_body() if body is None else body
    if workers > 1 and num_examples > 4 * chunk:
        yield from _generate_parallel(recipe, split, num_examples, seed=seed, size=size, body=body,
                                      with_mesh=with_mesh, start=start, chunk=chunk, workers=workers)
        return
    num_betas = body.model.num_betas
    for first in range(start, start + num_examples, chunk):
        indices = range(first, min(first + chunk, start + num_examples))
        rngs = [recipe.rng(seed, split, i) for i in indices]
        poses, betas, params = zip(*(recipe.sample(r, split, num_betas) for r in rngs))
        poses, betas = np.stack(poses), np.stack(betas)
        pad = chunk - len(rngs)
        vertices, joints = _posed(body.model, np.pad(poses, ((0, pad), (0, 0))),
                                  np.pad(betas, ((0, pad), (0, 0))))
        vertices, joints = np.asarray(vertices), np.asarray(joints)
        for k, (i, rng) in enumerate(zip(indices, rngs)):
            record_id = recipe.record_id(split, i, params[k])
            yield record_id, recipe.render(body, poses[k], betas[k], vertices[k], joints[k], rng,
                                           params[k], size=size, record_id=record_id,
                                           with_mesh=with_mesh)


_WORKER_BODY: Body | None = None


def _init_worker(body: Body) -> None:
    global _WORKER_BODY
    _WORKER_BODY = body


def _generate_block(task: tuple) -> list[tuple[str, dict[str, Any]]]:
    recipe, split, first, count, seed, size, with_mesh, chunk = task
    return list(generate_examples(recipe, split, count, seed=seed, size=size, body=_WORKER_BODY,
                                  with_mesh=with_mesh, start=first, chunk=chunk, workers=1))


def _generate_parallel(recipe: Recipe, split: str, num_examples: int, *, seed: int, size: int,
                       body: Body, with_mesh: bool, start: int, chunk: int,
                       workers: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """:func:`generate_examples` over ``workers`` spawned processes; same records, same order."""
    import multiprocessing  # noqa: PLC0415

    block = 4 * chunk  # a multiple of chunk: bodies are posed in the same groups as serially
    tasks = [(recipe, split, first, min(block, start + num_examples - first), seed, size, with_mesh,
              chunk) for first in range(start, start + num_examples, block)]
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                   initargs=(body,)) as pool:
        for records in pool.imap(_generate_block, tasks):
            yield from records
