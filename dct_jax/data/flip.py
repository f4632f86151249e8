"""Horizontal-flip augmentation, consistent for every field of a training example.

Mirroring the crop image left-right maps pixel column ``j`` to ``W - 1 - j``
and normalized crop x to ``-x``. Everything that describes the person must
follow (``dct_jax.camera`` frames: metres, x right, y down; the body's x is
lateral in SMPL's frame too):

* 2D points in normalized crop coordinates: ``x -> -x``; keypoints also swap
  left/right (a layout's ``flip_perm``).
* 3D points (joints, vertices): ``x -> -x`` and left/right swapped (SMPL
  joints by name, mesh vertices by the body's vertex mirror
  :func:`vertex_mirror`).
* SMPL pose: the mirror ``M = diag(-1, 1, 1)`` conjugates every rotation,
  ``M R M``, which in axis-angle negates y and z; left/right joints swap. This
  holds for joint 0 (the global rotation, camera frame) too, since ``M`` is the
  same reflection in the body and camera frames.
* Weak-perspective camera ``(s, tx, ty)``: ``tx -> -tx``.
* DensePose IUV / part segmentation: left/right parts swap and ``(U, V)`` moves
  to the chart point of the mirrored surface point. No symmetry file ships with
  the chart, so :func:`chart_mirror` derives that map from the body's vertex
  mirror and tabulates it for every 8-bit ``(I, U, V)``.
* Dense keypoints ``(vertex ids, barycentrics)``: ids map through the vertex
  mirror, barycentrics stay.

Usage::

    bm = flip.load_body_mirror(model, densepose.load_chart("default"))  # cached
    flipped = flip.flip_example(example, bm)

Host-side numpy throughout (inputs may be jax arrays, not tracers).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import scipy.spatial

from dct_jax import densepose, keypoints, smpl

NUM_JOINTS = len(smpl.SMPL_JOINT_NAMES)
NUM_POSE = 3 * NUM_JOINTS
NUM_PARTS = densepose.NUM_PARTS
UV_LEVELS = 256  # 8-bit U, V of the IUV PNG layout

# After a flip, joint k is the mirrored joint SMPL_JOINT_FLIP_PERM[k].
SMPL_JOINT_FLIP_PERM: tuple[int, ...] = keypoints.flip_permutation(smpl.SMPL_JOINT_NAMES)
# DensePose's left/right part swap (index: part 0-24, 0 = background).
DENSEPOSE_PART_FLIP: tuple[int, ...] = (0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15,
                                        18, 17, 20, 19, 22, 21, 24, 23)
# Per-keypoint example fields permuted like the keypoints by flip_example.
KEYPOINT_FIELDS = ("keypoints_visibility", "keypoints_weight", "keypoints3d_weight")
# Largest median distance (metres) between a vertex and its mirror partner.
DEFAULT_SYMMETRY_TOLERANCE = 0.01

_MIRROR_XYZ = np.array([-1, 1, 1])
_MIRROR_AXIS_ANGLE = np.array([1, -1, -1])
_MIRROR_XY = np.array([-1, 1])


# ----------------------------------------------------------------------------- parameters


def _host(x: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except Exception as err:  # a tracer, or something that is not an array
        raise ValueError(f"{name} must be a host array (call outside jit), got {type(x).__name__}") from err


def _check_shape(x: np.ndarray, name: str, tail: tuple[int, ...], expected: str) -> None:
    if x.ndim < len(tail) or x.shape[x.ndim - len(tail):] != tail:
        raise ValueError(f"{name} has shape {x.shape}; expected {expected}")


def flip_pose(pose: Any) -> np.ndarray:
    """Mirrors SMPL poses: ``(..., 72)`` axis-angle, joint-major, joint 0 global.

    Joints swap left/right (:data:`SMPL_JOINT_FLIP_PERM`) and every axis-angle
    ``(x, y, z)`` becomes ``(x, -y, -z)``, joint 0 included. Same shape and dtype.
    """
    pose = _host(pose, "pose")
    _check_shape(pose, "pose", (NUM_POSE,), f"(..., {NUM_POSE}) axis-angle")
    per_joint = pose.reshape(*pose.shape[:-1], NUM_JOINTS, 3)
    out = per_joint[..., SMPL_JOINT_FLIP_PERM, :] * _MIRROR_AXIS_ANGLE.astype(pose.dtype)
    return out.reshape(pose.shape)


def flip_joints3d(joints: Any) -> np.ndarray:
    """Mirrors SMPL-order joints ``(..., 24, 3)``: x negated, left/right swapped."""
    joints = _host(joints, "joints")
    _check_shape(joints, "joints", (NUM_JOINTS, 3), f"(..., {NUM_JOINTS}, 3)")
    return joints[..., SMPL_JOINT_FLIP_PERM, :] * _MIRROR_XYZ.astype(joints.dtype)


def flip_vertices(vertices: Any, mirror: Any) -> np.ndarray:
    """Mirrors meshes ``(..., V, 3)``: x negated, vertex ``i`` becomes vertex ``mirror[i]``'s mirror."""
    vertices = _host(vertices, "vertices")
    mirror = _check_mirror(mirror)
    _check_shape(vertices, "vertices", (mirror.size, 3), f"(..., {mirror.size}, 3) (the mirror's V)")
    return vertices[..., mirror, :] * _MIRROR_XYZ.astype(vertices.dtype)


def flip_camera(camera: Any) -> np.ndarray:
    """Mirrors weak-perspective cameras ``(..., 3)`` ``(s, tx, ty)``: ``tx -> -tx``."""
    camera = _host(camera, "camera")
    _check_shape(camera, "camera", (3,), "(..., 3) as (s, tx, ty)")
    return camera * np.array([1, -1, 1], camera.dtype)


def _check_perm(perm: Any, num: int, name: str) -> np.ndarray:
    perm = np.asarray(perm)
    if perm.shape != (num,) or not np.issubdtype(perm.dtype, np.integer) or \
            not np.array_equal(np.sort(perm), np.arange(num)):
        raise ValueError(f"{name} must be a permutation of 0..{num - 1}, got {perm.tolist()}")
    return perm.astype(np.int64)


def flip_keypoints(xy: Any, visibility: Any, flip_perm: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mirrors 2D keypoints in normalized crop coordinates.

    Args:
      xy: ``(..., K, 2)`` normalized crop coordinates.
      visibility: ``(..., K)``.
      flip_perm: ``K`` ids, the layout's flip permutation (``Layout.flip_perm``).

    Returns:
      ``xy (..., K, 2)`` with x negated and ``visibility (..., K)``, both
      permuted: keypoint ``k`` is the mirrored keypoint ``flip_perm[k]``.
    """
    xy, visibility = _host(xy, "xy"), _host(visibility, "visibility")
    if xy.ndim < 2 or xy.shape[-1] != 2:
        raise ValueError(f"xy has shape {xy.shape}; expected (..., K, 2)")
    if visibility.shape != xy.shape[:-1]:
        raise ValueError(f"visibility has shape {visibility.shape}; expected {xy.shape[:-1]} (xy's (..., K))")
    perm = _check_perm(flip_perm, xy.shape[-2], "flip_perm")
    return xy[..., perm, :] * _MIRROR_XY.astype(xy.dtype), visibility[..., perm]


def flip_points2d(xy: Any) -> np.ndarray:
    """``(..., 2)`` normalized crop coordinates -> x negated, order kept (e.g. dense keypoints)."""
    xy = _host(xy, "xy")
    _check_shape(xy, "xy", (2,), "(..., 2)")
    return xy * _MIRROR_XY.astype(xy.dtype)


def flip_image(image: Any) -> np.ndarray:
    """Mirrors an ``(H, W)`` or ``(H, W, C)`` image left-right (column ``j -> W - 1 - j``)."""
    image = _host(image, "image")
    if image.ndim not in (2, 3):
        raise ValueError(f"image has shape {image.shape}; expected (H, W) or (H, W, C)")
    if image.size and image.dtype in (np.uint8, np.float32) and (image.ndim == 2 or 2 <= image.shape[2] <= 4):
        return cv2.flip(image, 1)  # the same pixels, ~25x faster than numpy's reversed copy
    return np.ascontiguousarray(image[:, ::-1])


# ----------------------------------------------------------------------------- mesh


def _check_mirror(mirror: Any, num_vertices: int | None = None) -> np.ndarray:
    mirror = _host(mirror, "mirror")
    if mirror.ndim != 1 or not np.issubdtype(mirror.dtype, np.integer) or not mirror.size:
        raise ValueError(f"mirror must be (V,) integer vertex ids, got shape {mirror.shape} "
                         f"dtype {mirror.dtype}")
    if mirror.min() < 0 or mirror.max() >= mirror.size:
        raise ValueError(f"mirror has vertex ids outside [0, {mirror.size})")
    if num_vertices is not None and mirror.size < num_vertices:
        raise ValueError(f"mirror has {mirror.size} vertices; the chart needs at least {num_vertices}")
    return mirror


def vertex_mirror(model: smpl.SMPLModel, *, tolerance: float = DEFAULT_SYMMETRY_TOLERANCE) -> np.ndarray:
    """Each vertex's left/right mirror partner, ``(V,)`` int32.

    The nearest template vertex to the template reflected through ``x -> -x``
    (SMPL's body frame: x lateral, the body centred on ``x = 0``). Exact for
    the default body; for SMPL's nearly symmetric mesh a few partners may not
    be mutual.

    Raises:
      ValueError: the template is not near-symmetric: the median distance from
        a reflected vertex to its partner exceeds ``tolerance`` metres.
    """
    return _template_mirror(np.asarray(model.v_template, np.float64), tolerance)


def _template_mirror(template: np.ndarray, tolerance: float) -> np.ndarray:
    dist, idx = scipy.spatial.cKDTree(template).query(template * _MIRROR_XYZ)
    median = float(np.median(dist))
    if median > tolerance:
        raise ValueError(
            f"the body template is not left/right symmetric about x = 0: the median distance from a "
            f"reflected vertex to the nearest vertex is {median * 100:.2f} cm "
            f"(max {dist.max() * 100:.2f} cm; tolerance {tolerance * 100:.2f} cm)")
    return idx.astype(np.int32)


def flip_surface_points(vertex_ids: Any, mirror: Any) -> np.ndarray:
    """Mirrors surface points ``(vertex ids (..., 3), barycentrics)``: ids -> ``mirror[ids]``.

    The barycentrics are unchanged (vertex ``k`` of the point moves to its partner).
    """
    vertex_ids = _host(vertex_ids, "vertex_ids")
    mirror = _check_mirror(mirror)
    if vertex_ids.ndim < 1 or vertex_ids.shape[-1] != 3 or not np.issubdtype(vertex_ids.dtype, np.integer):
        raise ValueError(f"vertex_ids must be (..., 3) integers, got shape {vertex_ids.shape} "
                         f"dtype {vertex_ids.dtype}")
    if vertex_ids.size and (vertex_ids.min() < 0 or vertex_ids.max() >= mirror.size):
        raise ValueError(f"vertex_ids outside [0, {mirror.size}) (the mirror's vertex count)")
    return mirror[vertex_ids].astype(vertex_ids.dtype)


# ----------------------------------------------------------------------------- chart


@dataclasses.dataclass(frozen=True, eq=False)
class ChartMirror:
    """The left/right mirror of a DensePose chart (from :func:`chart_mirror`).

    Attributes:
      part_perm: ``(25,)`` int32, part ``I`` becomes ``part_perm[I]`` (0 -> 0);
        equals :data:`DENSEPOSE_PART_FLIP`.
      uv_table: ``(25, 256, 256, 2)`` uint8: 8-bit ``(U, V)`` of part ``I``
        become ``uv_table[I, U, V]`` (row 0, background, is all zero).
      face_mirror: ``(F,)`` int32, the chart face with the mirrored vertex set
        of each chart face, -1 if there is none.
      part_agreement: fraction of the chart faces whose mirrored face lies in
        part ``part_perm[part]`` (1 for a symmetric chart).
      fallback_fraction: fraction of the table's foreground entries (parts 1-24)
        whose mirror had no matching chart face in the right part and was
        placed by the nearest-face fallback.
    """

    part_perm: np.ndarray
    uv_table: np.ndarray
    face_mirror: np.ndarray
    part_agreement: float
    fallback_fraction: float


def _face_keys(face_vertices: np.ndarray, num_vertices: int) -> np.ndarray:
    """``(..., 3)`` vertex ids -> ``(...)`` int64 keys of the sorted triples."""
    s = np.sort(face_vertices.astype(np.int64), axis=-1)
    return (s[..., 0] * num_vertices + s[..., 1]) * num_vertices + s[..., 2]


def _lookup_faces(keys: np.ndarray, sorted_keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Chart face of each key (-1 if none) given the chart's sorted face keys."""
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return np.where(sorted_keys[pos] == keys, order[pos], -1)


def _closest_on_faces(points: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate closest points of ``(..., 3)`` points on triangles ``(..., 3, 3)``.

    The point projected to each triangle's plane, its barycentrics clipped to
    the triangle (and renormalized). Returns barycentrics ``(..., 3)`` and
    distances ``(...)``.
    """
    origin = corners[..., 0, :]
    e1, e2, d = corners[..., 1, :] - origin, corners[..., 2, :] - origin, points - origin
    a, b, c = (e1 * e1).sum(-1), (e1 * e2).sum(-1), (e2 * e2).sum(-1)
    p, q = (d * e1).sum(-1), (d * e2).sum(-1)
    det = np.where(np.abs(a * c - b * b) > 1e-30, a * c - b * b, 1e-30)
    b1, b2 = (c * p - b * q) / det, (a * q - b * p) / det
    bary = np.maximum(np.stack([1.0 - b1 - b2, b1, b2], -1), 0.0)
    bary /= np.maximum(bary.sum(-1, keepdims=True), 1e-12)
    dist = np.linalg.norm(np.einsum("...k,...kc->...c", bary, corners) - points, axis=-1)
    return bary, dist


def _fallback_uv(points: np.ndarray, target: np.ndarray, chart: densepose.Chart,
                 template: np.ndarray, candidates: int = 8) -> np.ndarray:
    """``(n, 2)`` UV of the nearest chart face of part ``target (n,)`` to 3D ``points (n, 3)``."""
    corners = template[chart.face_vertices]  # (F, 3, 3)
    centroids = corners.mean(1)
    uv = np.zeros((len(points), 2))
    for part in np.unique(target):  # <= 24 parts, each vectorized over its points
        rows = np.flatnonzero(target == part)
        faces = np.flatnonzero(chart.face_part == part)
        if not faces.size:
            raise ValueError(f"chart {chart.source} has no faces in part {part}")
        k = min(candidates, faces.size)
        _, cand = scipy.spatial.cKDTree(centroids[faces]).query(points[rows], k=k)
        cand = faces[cand.reshape(len(rows), k)]
        bary, dist = _closest_on_faces(points[rows, None], corners[cand])
        best = np.argmin(dist, 1)
        pick = np.arange(len(rows))
        uv[rows] = np.einsum("nk,nkc->nc", bary[pick, best], chart.face_uv[cand[pick, best]])
    return uv


def chart_mirror(chart: densepose.Chart, mirror: Any, *, template: Any = None) -> ChartMirror:
    """Derives the left/right mirror of a DensePose chart from the body's vertex mirror.

    Each chart face ``(a, b, c)`` mirrors to the chart face with vertex set
    ``{m(a), m(b), m(c)}``. ``part_perm`` is the majority part of the mirrored
    faces of each part. For every 8-bit ``(I, U, V)``, phi
    (``densepose.iuv_to_surface``) gives a face and barycentrics; the mirrored
    point is the same barycentric mix (reordered to its corners) of the
    mirrored face's UV corners. Where no mirrored face exists in part
    ``part_perm[I]`` (an asymmetric mesh), the mirrored 3D point of the
    ``template`` is placed on the nearest chart face of that part.

    Args:
      chart: from ``densepose.load_chart``.
      mirror: ``(V,)`` vertex mirror (:func:`vertex_mirror`).
      template: ``(V, 3)`` body template (x lateral); only needed if some face
        has no mirror.

    Raises:
      ValueError: ``mirror``/``template`` ill-shaped, the derived part swap is
        not DensePose's (the mirror or the chart is wrong), or some face has
        no mirror and no ``template`` was given.
    """
    face_vertices = chart.face_vertices
    mirror = _check_mirror(mirror, int(face_vertices.max()) + 1).astype(np.int64)
    num_vertices = mirror.size
    keys = _face_keys(face_vertices, num_vertices)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    mirrored_ids = mirror[face_vertices]  # (F, 3)
    face_mirror = _lookup_faces(_face_keys(mirrored_ids, num_vertices), sorted_keys, order)

    # Majority vote of the mirrored faces' parts.
    found = face_mirror >= 0
    votes = np.zeros((NUM_PARTS + 1, NUM_PARTS + 1), np.int64)
    np.add.at(votes, (chart.face_part[found], chart.face_part[face_mirror[found]]), 1)
    part_perm = votes.argmax(1).astype(np.int32)
    part_perm[0] = 0
    voted = votes[1:].sum(1) > 0
    if not voted.all() or tuple(part_perm.tolist()) != DENSEPOSE_PART_FLIP:
        missing = [p + 1 for p in np.flatnonzero(~voted)]
        raise ValueError(
            f"the vertex mirror swaps chart {chart.source}'s parts as {part_perm.tolist()} "
            f"(parts without any mirrored face: {missing}), not as DensePose does "
            f"{list(DENSEPOSE_PART_FLIP)}: the mirror does not belong to this chart's body")
    target_part = part_perm[chart.face_part]
    good = found & (chart.face_part[np.maximum(face_mirror, 0)] == target_part)
    part_agreement = float(good.mean())

    # Per face f: the UV corners of its mirrored face g, ordered like f's corners
    # (corner k of f mirrors to the corner of g holding vertex m(f[k])).
    g = np.maximum(face_mirror, 0)
    match = mirrored_ids[:, :, None] == face_vertices[g][:, None, :]  # (F, k of f, j of g)
    corner = np.argmax(match, axis=2)
    good &= match.any(2).all(1)
    mirrored_uv = np.take_along_axis(chart.face_uv[g], corner[..., None], axis=1)  # (F, 3, 2)

    # Every 8-bit (I, U, V) of parts 1-24: phi, then the mirrored face's UV.
    levels = np.arange(UV_LEVELS, dtype=np.float32) / (UV_LEVELS - 1)
    part = np.repeat(np.arange(1, NUM_PARTS + 1, dtype=np.int32), UV_LEVELS * UV_LEVELS)
    u = np.tile(np.repeat(levels, UV_LEVELS), NUM_PARTS)
    v = np.tile(levels, NUM_PARTS * UV_LEVELS)
    surface = densepose.iuv_to_surface(chart, part, u, v)
    if not surface.valid.all():
        raise ValueError(f"chart {chart.source}: phi found no face for some part (empty part?)")
    face = _lookup_faces(_face_keys(surface.vertex_ids, num_vertices), sorted_keys, order)
    bary = surface.barycentric.astype(np.float64)
    # phi's vertex order is the face's own (face_vertices[face]).
    new_uv = np.einsum("nk,nkc->nc", bary, mirrored_uv[face])
    fallback = ~good[face]
    if fallback.any():
        if template is None:
            raise ValueError(
                f"{int((~good).sum())} chart faces have no mirrored face in the mirrored part "
                "(an asymmetric mesh): pass template= to place their points by 3D nearest face")
        template = _host(template, "template").astype(np.float64)
        if template.shape != (num_vertices, 3):
            raise ValueError(f"template has shape {template.shape}; expected ({num_vertices}, 3)")
        rows = np.flatnonzero(fallback)
        points = np.einsum("nk,nkc->nc", bary[rows], template[surface.vertex_ids[rows]]) * _MIRROR_XYZ
        new_uv[rows] = _fallback_uv(points, part_perm[part[rows]], chart, template)
    uv_table = np.zeros((NUM_PARTS + 1, UV_LEVELS, UV_LEVELS, 2), np.uint8)
    uv_table[1:] = np.clip(np.rint(new_uv * (UV_LEVELS - 1)), 0, UV_LEVELS - 1).astype(np.uint8).reshape(
        NUM_PARTS, UV_LEVELS, UV_LEVELS, 2)
    return ChartMirror(part_perm=part_perm, uv_table=uv_table, face_mirror=face_mirror.astype(np.int32),
                       part_agreement=part_agreement, fallback_fraction=float(fallback.mean()))


def flip_iuv(iuv: Any, cm: ChartMirror) -> np.ndarray:
    """Mirrors an ``(H, W, 3)`` uint8 IUV map (DensePose PNG layout).

    Pixels move left-right; ``I -> part_perm[I]``, ``(U, V) -> uv_table[I, U, V]``;
    background (``I = 0``) comes out all zero.
    """
    iuv = _host(iuv, "iuv")
    if iuv.ndim != 3 or iuv.shape[-1] != 3 or iuv.dtype != np.uint8:
        raise ValueError(f"iuv must be (H, W, 3) uint8 (I, 255 U, 255 V), got shape {iuv.shape} "
                         f"dtype {iuv.dtype}")
    height, width = iuv.shape[:2]
    if not iuv.size:
        return np.zeros(iuv.shape, np.uint8)
    # OpenCV mirrors and splits the planes; the table lookup runs on foreground
    # pixels only, one 16-bit (U, V) entry per pixel (5x faster than indexing
    # the (25, 256, 256, 2) table with three full-size index arrays).
    part, u, v = cv2.split(cv2.flip(np.ascontiguousarray(iuv), 1))
    if part.max() > NUM_PARTS:
        raise ValueError(f"iuv[..., 0] has part index {part.max()} > {NUM_PARTS}")
    fg = np.flatnonzero(part > 0)
    key = part.ravel()[fg].astype(np.uint32)
    key <<= 8
    key |= u.ravel()[fg]
    key <<= 8
    key |= v.ravel()[fg]
    uv = np.zeros(height * width, np.uint16)  # background: (U, V) = (0, 0)
    uv[fg] = np.ascontiguousarray(cm.uv_table, np.uint8).view(np.uint16).reshape(-1)[key]
    uv = uv.view(np.uint8).reshape(height, width, 2)  # the table's byte pairs, (U, V) in order
    part_lut = np.zeros(256, np.uint8)
    part_lut[: cm.part_perm.size] = cm.part_perm
    return cv2.merge([cv2.LUT(part, part_lut), uv[..., 0], uv[..., 1]])


def flip_segmentation(seg: Any, cm: ChartMirror) -> np.ndarray:
    """Mirrors an ``(H, W)`` part segmentation (0-24): pixels left-right, ``I -> part_perm[I]``."""
    seg = _host(seg, "segmentation")
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"segmentation must be (H, W) integers, got shape {seg.shape} dtype {seg.dtype}")
    if seg.size and (seg.min() < 0 or seg.max() > NUM_PARTS):
        raise ValueError(f"segmentation has part indices outside 0..{NUM_PARTS}")
    return cm.part_perm[seg[:, ::-1]].astype(seg.dtype)


# ----------------------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True, eq=False)
class BodyMirror:
    """Everything :func:`flip_example` needs for one body model and chart.

    Attributes:
      vertex_mirror: ``(V,)`` int32 (:func:`vertex_mirror`).
      chart_mirror: the chart's :class:`ChartMirror`.
      keypoint_flip_perm: 19 ids, the cocoplus flip permutation.
    """

    vertex_mirror: np.ndarray
    chart_mirror: ChartMirror
    keypoint_flip_perm: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _CacheKey:
    """Hashes a (model, chart) pair by content; the arrays ride along uncompared."""

    digest: str
    tolerance: float
    template: np.ndarray = dataclasses.field(compare=False, hash=False)
    chart: densepose.Chart = dataclasses.field(compare=False, hash=False)


@functools.lru_cache(maxsize=8)
def _load_body_mirror(key: _CacheKey) -> BodyMirror:
    mirror = _template_mirror(key.template, key.tolerance)
    return BodyMirror(vertex_mirror=mirror,
                      chart_mirror=chart_mirror(key.chart, mirror, template=key.template),
                      keypoint_flip_perm=keypoints.COCOPLUS19_FLIP_PERM)


def load_body_mirror(model: smpl.SMPLModel, chart: densepose.Chart, *,
                     tolerance: float = DEFAULT_SYMMETRY_TOLERANCE) -> BodyMirror:
    """The :class:`BodyMirror` of a body model and its chart (~1 s; cached by content).

    Raises:
      ValueError: the body is not near-symmetric (:func:`vertex_mirror`) or
        its mirror does not fit the chart (:func:`chart_mirror`).
    """
    template = np.asarray(model.v_template, np.float64)
    digest = hashlib.blake2b(digest_size=16)
    for array in (template, chart.face_part, chart.face_uv, chart.face_vertices):
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return _load_body_mirror(_CacheKey(digest.hexdigest(), float(tolerance), template, chart))


def flip_example(example: Mapping[str, Any], bm: BodyMirror) -> dict[str, Any]:
    """Mirrors a training example left-right; returns a new dict.

    Flips whichever of these keys are present; all others are copied as they are:
      * ``image (S, S, 3)``: mirrored; ``iuv (S, S, 3)`` uint8: :func:`flip_iuv`;
        ``segmentation (S, S)``: :func:`flip_segmentation`.
      * ``keypoints (19, 2)`` normalized crop coordinates: :func:`flip_keypoints`;
        per-keypoint ``keypoints_visibility (19,)`` and ``keypoints_weight (19,)``
        (:data:`KEYPOINT_FIELDS`): permuted alike.
      * ``smpl_pose (72,)``: :func:`flip_pose`; ``smpl_betas``: unchanged.
      * ``camera (3,)``: :func:`flip_camera`; ``joints (24, 3)``: :func:`flip_joints3d`;
        ``keypoints3d (19, 3)``: x negated, left/right keypoints swapped (``keypoints3d_weight`` alike);
        ``vertices (V, 3)``: :func:`flip_vertices` (an empty ``(0, 3)`` stays).
      * ``dense_xy (N, 2)`` normalized crop coordinates: x negated, order kept;
        ``dense_vertex_ids (N, 3)``: :func:`flip_surface_points`, except rows of
        zero ``dense_weight`` (padding, invalid), which stay as they are;
        ``dense_barycentric``, ``dense_weight``: unchanged.
    Raw-record fields in image pixels (``bbox``, ``crop_box``, ``dp_*``) are
    not flipped: flip after converting them to the crop frame.
    """
    cm, mirror, perm = bm.chart_mirror, bm.vertex_mirror, bm.keypoint_flip_perm

    def permute_keypoint_field(value: Any) -> np.ndarray:
        value = _host(value, "value")
        if value.shape[-1:] != (len(perm),):
            raise ValueError(f"shape {value.shape}; expected (..., {len(perm)})")
        return value[..., perm]

    def flip_dense_ids(ids: Any) -> np.ndarray:
        ids = _host(ids, "dense_vertex_ids")
        flipped = flip_surface_points(ids, mirror)
        if "dense_weight" not in example:
            return flipped
        weight = _host(example["dense_weight"], "dense_weight")
        if weight.shape != ids.shape[:-1]:
            raise ValueError(f"dense_weight has shape {weight.shape}; expected {ids.shape[:-1]}")
        return np.where((weight > 0)[..., None], flipped, ids)

    flippers = {
        "image": flip_image,
        "iuv": lambda x: flip_iuv(x, cm),
        "segmentation": lambda x: flip_segmentation(x, cm),
        "keypoints": lambda x: flip_keypoints(x, np.zeros(np.shape(x)[:-1], bool), perm)[0],
        **{key: permute_keypoint_field for key in KEYPOINT_FIELDS},
        "smpl_pose": flip_pose,
        "camera": flip_camera,
        "joints": flip_joints3d,
        "keypoints3d": lambda x: np.swapaxes(permute_keypoint_field(np.swapaxes(_host(x, "keypoints3d"), -1, -2)),
                                             -1, -2) * _MIRROR_XYZ.astype(np.asarray(x).dtype),
        "vertices": lambda x: x if np.shape(x)[-2:-1] == (0,) else flip_vertices(x, mirror),
        "dense_xy": flip_points2d,
        "dense_vertex_ids": flip_dense_ids,
    }
    out = dict(example)
    for key, fn in flippers.items():
        if key in example:
            try:
                out[key] = fn(example[key])
            except ValueError as err:
                raise ValueError(f"example[{key!r}]: {err}") from err
    return out
