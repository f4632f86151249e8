"""DensePose <-> body-model dense correspondence (DCT paper, Sec. 3.2-3.3).

A *chart* is the DensePose atlas of a body model: 24 body parts, each unrolled
to the unit UV square as a triangle mesh whose corners map to body-model vertex
ids. ``phi`` (:func:`iuv_to_surface`) maps a DensePose point ``(I, U, V)`` to
the chart triangle that contains ``(U, V)`` in part ``I``, returned as three
vertex ids and barycentric coordinates (paper Eq. 3). :func:`refine_iuv` is the
paper's keypoint-guided IUV clean-up, :func:`sample_dense_keypoints` draws
fixed-size dense-keypoint sets for the loss, and
:func:`project_surface_points` puts them on a predicted mesh (paper Eq. 4).

Conventions:
  * Part index ``I`` is 1-24 (0 = background); DensePose part meaning:
    1, 2 torso; 3 right hand; 4 left hand; 5 left foot; 6 right foot; 7, 9
    right upper leg; 8, 10 left upper leg; 11, 13 right lower leg; 12, 14 left
    lower leg; 15, 17 left upper arm; 16, 18 right upper arm; 19, 21 left lower
    arm; 20, 22 right lower arm; 23, 24 head.
  * ``(U, V)`` in ``[0, 1]`` is the point ``(All_U_norm, All_V_norm)`` of the
    chart file as it is, no axis flip (as DensePose's own ``IUV2FBC``).
  * Charts (``load_chart``, from ``dct_jax.chart``) are DensePose's
    ``UV_Processed.mat`` or an ``.npz`` with the same keys. Nothing here
    assumes a vertex count.
  * Pixel coordinates are continuous, pixel ``(row, col)`` covers
    ``[col, col + 1) x [row, row + 1)`` (see ``dct_jax.camera``).

phi, refinement and sampling are host-side numpy preprocessing (they also take
``jax.Array`` inputs, but not tracers); the projector is pure JAX.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from dct_jax import camera as camera_lib

# Chart loading lives in dct_jax.chart; densepose re-exports it as the public entry point.
from dct_jax.chart import CHART_KEYS, NUM_PARTS, Chart, ChartIndex, chart_from_arrays, load_chart

__all__ = [
    "CHART_KEYS", "COCOPLUS19_PARTS", "NUM_PARTS", "Chart", "ChartIndex", "SurfacePoints",
    "chart_from_arrays", "iuv_to_surface", "load_chart", "project_surface_points",
    "refine_iuv", "sample_dense_keypoints",
]


# Barycentric tolerance of the inside test (relative; ~1e-7 of a UV unit).
_INSIDE_EPS = 1e-5
# u, v this far outside [0, 1] are rejected (likely a 0-255 map), nearer ones clipped.
_UV_RANGE_TOL = 1e-2

# Allowed DensePose parts for each of the 19 cocoplus keypoints (paper's 2D
# keypoints, in order). A keypoint at a joint borders the parts on both sides
# of that joint (front and back pair of each), so all of them count as a
# match: ankles -> foot + lower leg, knees -> upper + lower leg, hips -> torso +
# upper leg, wrists -> hand + lower arm, elbows -> upper + lower arm, shoulders
# -> torso + upper arm, neck -> torso + head, face keypoints -> head. A
# left/right swap (the error the paper targets) is never allowed.
COCOPLUS19_PARTS: tuple[tuple[int, ...], ...] = (
    (6, 11, 13),  # 0 right ankle
    (7, 9, 11, 13),  # 1 right knee
    (1, 2, 7, 9),  # 2 right hip
    (1, 2, 8, 10),  # 3 left hip
    (8, 10, 12, 14),  # 4 left knee
    (5, 12, 14),  # 5 left ankle
    (3, 20, 22),  # 6 right wrist
    (16, 18, 20, 22),  # 7 right elbow
    (1, 2, 16, 18),  # 8 right shoulder
    (1, 2, 15, 17),  # 9 left shoulder
    (15, 17, 19, 21),  # 10 left elbow
    (4, 19, 21),  # 11 left wrist
    (1, 2, 23, 24),  # 12 neck
    (23, 24),  # 13 head top
    (23, 24),  # 14 nose
    (23, 24),  # 15 left eye
    (23, 24),  # 16 right eye
    (23, 24),  # 17 left ear
    (23, 24),  # 18 right ear
)


class SurfacePoints(NamedTuple):
    """Points on a body surface: ``sum_k barycentric[..., k] * V[vertex_ids[..., k]]``.

    vertex_ids: ``(..., 3)`` int32 body vertex ids (0 where invalid).
    barycentric: ``(..., 3)`` float32, non-negative, summing to 1 (0 where invalid).
    valid: ``(...)`` bool.
    """

    vertex_ids: np.ndarray
    barycentric: np.ndarray
    valid: np.ndarray


# ----------------------------------------------------------------------------- phi


def _check_chart(chart: Any) -> Chart:
    """``chart`` itself if it is a loaded chart; a name, path or None is a TypeError saying what to pass."""
    if isinstance(chart, Chart) or (hasattr(chart, "index") and hasattr(chart, "face_vertices")):
        return chart
    if isinstance(chart, (str, os.PathLike)):
        name = os.fspath(chart)
        raise TypeError(f"chart must be a loaded Chart, got the name {name!r}: pass densepose.load_chart({name!r})")
    raise TypeError(f"chart must be a Chart, got {type(chart).__name__}: pass densepose.load_chart(name)")


def _host_array(x, name: str) -> np.ndarray:
    if isinstance(x, jax.core.Tracer):
        raise ValueError(f"{name} is a traced value: this is host-side preprocessing, call it outside jit")
    return np.asarray(x)


def _part_indices(i: np.ndarray, name: str = "i") -> np.ndarray:
    """Checks that part indices are integers in 0..24 and returns them as int32."""
    if not np.issubdtype(i.dtype, np.integer) and i.size and not np.all(np.isfinite(i) & (i == np.round(i))):
        raise ValueError(f"{name}: part indices must be integers 0..{NUM_PARTS}")
    if i.size and (i.min() < 0 or i.max() > NUM_PARTS):
        raise ValueError(f"{name}: part index out of range 0..{NUM_PARTS} (got {i.min()}..{i.max()})")
    return i.astype(np.int32)


def _barycentric_in(affine: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Inside flags and barycentrics b1, b2 ``(n,)`` of points in faces with ``affine`` rows ``(n, 6)``."""
    du, dv = u - affine[:, 0], v - affine[:, 1]
    b1 = affine[:, 2] * du + affine[:, 3] * dv
    b2 = affine[:, 4] * du + affine[:, 5] * dv
    return (b1 >= -_INSIDE_EPS) & (b2 >= -_INSIDE_EPS) & (b1 + b2 <= 1.0 + _INSIDE_EPS), b1, b2


def _locate(index: ChartIndex, part0: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Face ``(n,)`` (-1: none) and barycentrics ``(n, 3)`` for 0-based parts and u, v in [0, 1].

    Loops over the candidate slots of the rasters (a few dozen at most), each
    step vectorized over the points still unresolved; no per-point Python.
    """
    # 1) The first face of the cell's list that contains the point: slot 0
    # densely for all points (most end there), later slots for the rest.
    g = index.grid
    cell = (part0 * g + np.minimum((v * g).astype(np.int32), g - 1)) * g + np.minimum((u * g).astype(np.int32), g - 1)
    start = index.cell_start[cell]
    count = index.cell_start[cell + 1] - start
    f = index.cell_faces[np.minimum(start, index.cell_faces.size - 1)]
    inside, b1, b2 = _barycentric_in(index.face_affine[f], u, v)
    inside &= count > 0
    face = np.where(inside, f, -1)
    active, k = np.flatnonzero(~inside & (count > 1)), 1
    while active.size:
        f = index.cell_faces[start[active] + k]
        inside, c1, c2 = _barycentric_in(index.face_affine[f], u[active], v[active])
        face[active] = np.where(inside, f, -1)  # All active points are unresolved.
        b1[active], b2[active] = c1, c2
        k += 1
        active = active[~inside & (count[active] > k)]
    b1 = np.clip(b1, 0.0, 1.0)
    b2 = np.clip(b2, 0.0, 1.0)
    b0 = np.maximum(1.0 - b1 - b2, 0.0)
    norm = b0 + b1 + b2
    bary = np.stack([b0 / norm, b1 / norm, b2 / norm], -1)

    # 2) Otherwise the nearest point of the part's boundary edges.
    missing = np.flatnonzero(face < 0)
    if missing.size:
        g = index.fallback_grid
        mu, mv = u[missing], v[missing]
        cell = (part0[missing] * g + np.minimum((mv * g).astype(np.int32), g - 1)) * g
        cell += np.minimum((mu * g).astype(np.int32), g - 1)
        start = index.fallback_start[cell]
        count = index.fallback_start[cell + 1] - start
        best = np.full(missing.size, np.inf, u.dtype)
        best_edge = np.full(missing.size, -1, np.int32)
        best_s = np.zeros(missing.size, u.dtype)
        active, k = np.flatnonzero(count > 0), 0
        while active.size:
            e = index.fallback_edges[start[active] + k]
            geo = index.edge_geometry[e]
            pu, pv = mu[active] - geo[:, 0], mv[active] - geo[:, 1]
            s = np.clip((pu * geo[:, 2] + pv * geo[:, 3]) * geo[:, 4], 0.0, 1.0)
            dist = np.square(pu - s * geo[:, 2]) + np.square(pv - s * geo[:, 3])
            better = dist < best[active]
            upd = active[better]
            best[upd], best_edge[upd], best_s[upd] = dist[better], e[better], s[better]
            k += 1
            active = active[count[active] > k]
        ok = best_edge >= 0
        rows, e, s = missing[ok], best_edge[ok], best_s[ok]
        face[rows] = index.edge_face[e]
        corners = index.edge_corners[e]
        bary[rows] = 0.0
        bary[rows, corners[:, 0]] = 1.0 - s
        bary[rows, corners[:, 1]] = s
    return face, bary


def iuv_to_surface(chart: Chart, i, u, v) -> SurfacePoints:
    """phi (paper Eq. 3): DensePose points -> chart triangle and barycentrics.

    The triangle of part ``i`` whose UV footprint contains ``(u, v)``; if none
    does, the nearest triangle of that part, at its point nearest to
    ``(u, v)`` (DensePose's ``IUV2FBC`` takes the nearest vertex instead). If
    several contain it (overlapping faces; in the SMPL chart only points on a
    shared edge), the one covering most of the point's raster cell wins.
    Computed in float32: barycentrics are within ~1e-4 even on the smallest
    SMPL-chart faces.

    Args:
      chart: from :func:`load_chart`.
      i: part index 1-24, 0 = background (invalid); integer-valued, any batch shape.
      u, v: in ``[0, 1]`` (values within 0.01 outside are clipped); NaN ->
        invalid. ``i``, ``u``, ``v`` broadcast together.

    Returns:
      SurfacePoints with ``(..., 3)`` vertex ids / barycentrics and ``(...)``
      valid; numpy arrays, or jax arrays if any input is a ``jax.Array``.

    Errors:
      TypeError: ``chart`` is not a loaded chart (e.g. the name ``"smpl"`` or
        None: pass ``load_chart(name)``).
      ValueError: part index not an integer in 0..24, u, v outside ``[0, 1]``
        (e.g. a 0-255 map: divide by 255 first), shapes that do not
        broadcast, or a traced (jit) input.
    """
    chart = _check_chart(chart)
    to_jax = any(isinstance(x, jax.Array) for x in (i, u, v))
    i, u, v = (_host_array(x, name) for x, name in ((i, "i"), (u, "u"), (v, "v")))
    try:
        i, u, v = np.broadcast_arrays(i, u, v)
    except ValueError as err:
        raise ValueError(f"i, u, v shapes do not broadcast: {i.shape}, {u.shape}, {v.shape}") from err
    shape = i.shape
    part = _part_indices(i.reshape(-1))
    u = u.reshape(-1).astype(np.float32)
    v = v.reshape(-1).astype(np.float32)
    valid = (part > 0) & np.isfinite(u) & np.isfinite(v)
    if not valid.all():  # Invalid points are looked up as (1, 0, 0) and dropped.
        part, u, v = np.where(valid, part, 1), np.where(valid, u, 0), np.where(valid, v, 0)
    if u.size and (min(u.min(), v.min()) < -_UV_RANGE_TOL or max(u.max(), v.max()) > 1 + _UV_RANGE_TOL):
        raise ValueError(
            f"u, v must be in [0, 1] (got {min(u.min(), v.min()):.3g}..{max(u.max(), v.max()):.3g}); "
            "for a 0-255 IUV map divide U and V by 255"
        )
    face, bary = _locate(chart.index, part - 1, np.clip(u, 0, 1), np.clip(v, 0, 1))
    valid &= face >= 0
    vertex_ids, barycentric = chart.face_vertices[face], bary.astype(np.float32, copy=False)
    if not valid.all():
        vertex_ids[~valid], barycentric[~valid] = 0, 0.0
    out = SurfacePoints(vertex_ids.reshape(shape + (3,)), barycentric.reshape(shape + (3,)), valid.reshape(shape))
    return SurfacePoints(*map(jnp.asarray, out)) if to_jax else out


# ----------------------------------------------------------------------------- refinement


def _keypoint_pixels(keypoints, visibility, shape, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, cols and usable-mask ``(K,)`` of keypoints ``(K, 2)`` (x, y pixels)."""
    keypoints = _host_array(keypoints, "keypoints").astype(np.float64)
    visibility = _host_array(visibility, "visibility")
    if keypoints.shape != (num, 2):
        raise ValueError(f"keypoints must be ({num}, 2) pixel (x, y), got {keypoints.shape}")
    if visibility.shape != (num,):
        raise ValueError(f"visibility must be ({num},), got {visibility.shape}")
    usable = (visibility > 0) & np.all(np.isfinite(keypoints), -1)
    xy = np.floor(np.where(usable[:, None], keypoints, -1)).astype(np.int64)
    usable &= (xy[:, 0] >= 0) & (xy[:, 0] < shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < shape[0])
    return xy[:, 1], xy[:, 0], usable


def refine_iuv(
    iuv,
    keypoints,
    visibility,
    *,
    keypoint_parts: Sequence[Sequence[int]] = COCOPLUS19_PARTS,
    strict: bool = False,
) -> np.ndarray:
    """The paper's keypoint-guided IUV refinement (Sec. 3.2 "Sampling Strategy").

    For each visible keypoint, the part label ``L`` is the majority of ``I``
    over the 3x3 pixels around it (background does not vote; ties go to a part
    the keypoint allows, then to the lower index). The keypoint is *correct*
    if ``keypoint_parts`` allows ``L`` for it, otherwise *wrong*. The paper
    then erases, from each wrong keypoint, recursively every pixel of label
    ``L`` in the 3x3 grid of an erased pixel, starting with the keypoint. That
    set is exactly the 8-connected component of ``{I == L}`` holding the
    keypoint pixel (relabelled ``L``), so instead of a recursion each needed
    label is split into 8-connected components once (OpenCV) and whole
    components are dropped:
      * a component reached from a wrong keypoint is dropped unless a correct
        keypoint of the same label lies in it too (nothing connected to a
        correct keypoint is lost);
      * ``strict=True`` keeps *only* components holding a correct keypoint of
        their label (every other foreground pixel is dropped; note that parts
        without any keypoint, e.g. a hand whose wrist votes for the forearm,
        then vanish).
    A keypoint pixel whose own ``I`` differs from its majority label takes
    that label for connectivity and becomes background in the output (its
    U, V belong to another part).

    Args:
      iuv: ``(H, W, 3)`` DensePose IUV map, I in 0-24; U, V as 0-255 or 0-1:
        either works, U and V are only copied (dropped pixels get all zeros).
      keypoints: ``(K, 2)`` pixel coordinates (x, y) in the map, pixel
        ``(row, col)`` covering ``[col, col + 1) x [row, row + 1)``.
      visibility: ``(K,)``; keypoints with ``visibility > 0`` inside the map are used.
      keypoint_parts: allowed parts per keypoint (default: cocoplus-19).
      strict: see above.

    Returns:
      ``(H, W, 3)`` refined IUV map, same dtype.

    Errors:
      ValueError: ``iuv`` not ``(H, W, 3)`` or I not an integer in 0..24,
        ``keypoints``/``visibility`` not ``(K, 2)``/``(K,)`` with ``K =
        len(keypoint_parts)``, a part outside 1..24 in ``keypoint_parts``, or
        a traced (jit) input. Non-finite keypoints are unused, like invisible ones.
    """
    iuv = _host_array(iuv, "iuv")
    if iuv.ndim != 3 or iuv.shape[-1] != 3:
        raise ValueError(f"iuv must be (H, W, 3), got {iuv.shape}")
    labels = iuv[..., 0]
    if labels.dtype == np.uint8:  # The PNG layout: no converted copy needed, only the range check.
        if labels.size and labels.max() > NUM_PARTS:
            _part_indices(labels, "iuv[..., 0]")  # Raises, naming the range.
    else:
        labels = _part_indices(labels, "iuv[..., 0]")
    rows, cols, usable = _keypoint_pixels(keypoints, visibility, labels.shape, len(keypoint_parts))
    rows, cols = rows[usable], cols[usable]
    allowed = np.zeros((len(keypoint_parts), NUM_PARTS + 1), bool)
    for k, parts in enumerate(keypoint_parts):
        if not all(1 <= p <= NUM_PARTS for p in parts):
            raise ValueError(f"keypoint_parts[{k}] = {parts}: parts must be in 1..{NUM_PARTS}")
        allowed[k, list(parts)] = True
    allowed = allowed[usable]
    if not rows.size:
        return iuv.copy()

    # 3x3 majority vote (background, and the outside of the map, excluded); ties -> allowed part, lower index.
    height, width = labels.shape
    dr, dc = np.divmod(np.arange(9), 3)
    r, c = rows[:, None] + dr - 1, cols[:, None] + dc - 1
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    window = np.where(inside, labels[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)], 0)
    votes = np.zeros((rows.size, NUM_PARTS + 1), np.int32)
    np.add.at(votes, (np.arange(rows.size)[:, None], window), 1)
    votes[:, 0] = 0
    score = votes * 2 + allowed  # Tie-break; the allowed bonus never beats a vote.
    label = np.where(votes.max(-1) > 0, score.argmax(-1), 0)
    correct = allowed[np.arange(rows.size), label]

    voted = label > 0
    need = np.unique(label[voted] if strict else label[voted & ~correct])
    if not (need.size or strict):
        out = iuv.copy()
    else:
        work = labels.copy()
        work[rows[voted], cols[voted]] = label[voted]
        drop = np.zeros(labels.shape, bool)
        for part in need:
            # 8-connected components (OpenCV's, several times faster than scipy.ndimage.label;
            # only which pixels share a component matters, not the numbering).
            num, comp = cv2.connectedComponents((work == part).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
            mine = voted & (label == part)
            # Per component: dropped? Component 0 (other labels) never is.
            lookup = np.zeros(num, bool)
            lookup[comp[rows[mine & ~correct], cols[mine & ~correct]]] = True
            if strict:
                lookup[1:] = True
            lookup[comp[rows[mine & correct], cols[mine & correct]]] = False
            lookup[0] = False
            dropped = np.flatnonzero(lookup)
            if dropped.size > 4:
                drop |= lookup[comp]
            else:  # Usually one component: comparisons beat a gather over the whole map.
                for component in dropped:
                    drop |= comp == component
        if strict:  # Parts that no keypoint voted for are dropped as well.
            drop |= ~np.isin(work, need) & (work > 0)
        if iuv.dtype == np.uint8:  # OpenCV's masked copy: 6x faster than out[drop] = 0.
            out = cv2.copyTo(iuv, (~drop).view(np.uint8), np.zeros(iuv.shape, np.uint8))
        else:
            out = iuv.copy()
            out[drop] = 0
    # A keypoint pixel whose own label is not its majority label becomes background.
    off = voted & (labels[rows, cols] != label)
    out[rows[off], cols[off]] = 0
    return out


# ----------------------------------------------------------------------------- sampling


def _generator(rng) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed or a JAX PRNG key (typed or raw)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    if isinstance(rng, (jax.Array, np.ndarray)):
        data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
        return np.random.default_rng(_host_array(data, "rng").astype(np.uint64).ravel().tolist())
    raise TypeError(f"rng must be a numpy Generator, an int seed or a JAX PRNG key, got {type(rng).__name__}")


def _pad(num: int, xy: np.ndarray, points: SurfacePoints) -> tuple[np.ndarray, SurfacePoints, np.ndarray]:
    """Pads ``n <= num`` dense keypoints to ``num``; padding and invalid points weigh 0."""
    n = xy.shape[0]

    def pad(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.zeros((num - n,) + x.shape[1:], x.dtype)])

    weight = pad(points.valid.astype(np.float32))
    return pad(xy.astype(np.float32)), SurfacePoints(*map(pad, points)), weight


def _iuv_uv(iuv: np.ndarray, rows: np.ndarray, cols: np.ndarray, uv_max) -> tuple[np.ndarray, np.ndarray]:
    """U, V in [0, 1] of foreground pixels; a map that cannot be in the ``uv_max`` scale is a ValueError."""
    if uv_max is None:
        if not np.issubdtype(iuv.dtype, np.integer):
            raise ValueError("uv_max is required for a float IUV map: 255 for U, V in 0-255, 1 for 0-1")
        uv_max = 255
    if isinstance(uv_max, bool) or uv_max not in (1, 255):
        raise ValueError(f"uv_max must be 255 or 1, got {uv_max!r}")
    uv = iuv[rows, cols, 1:].astype(np.float64)
    finite = uv[np.isfinite(uv)]  # NaN U, V only invalidate their point (phi).
    if finite.size:
        lo, hi = finite.min(), finite.max()
        if lo < -_UV_RANGE_TOL * uv_max or hi > (1 + _UV_RANGE_TOL) * uv_max:
            hint = "; a 0-255 map needs uv_max=255" if uv_max == 1 and hi <= 255 else ""
            raise ValueError(f"IUV map U, V must be in [0, uv_max={uv_max}], got {lo:.3g}..{hi:.3g}{hint}")
        if uv_max == 255 and hi <= 1 and np.any(finite != np.round(finite)):
            raise ValueError(
                f"uv_max=255, but every foreground U, V is in [0, 1] with fractions ({lo:.3g}..{hi:.3g}): "
                "a 0-1 map needs uv_max=1"
            )
    return uv[:, 0] / uv_max, uv[:, 1] / uv_max


def _annotation_points(source: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """xy ``(n, 2)`` (NaN where not finite) and i, u, v of a COCO-DensePose annotation."""
    missing = [k for k in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V", "bbox") if k not in source]
    if missing:
        raise ValueError(f"COCO-DensePose annotation lacks {missing}")
    fields = [np.asarray(source[k], np.float64).reshape(-1) for k in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")]
    if len({f.size for f in fields}) != 1:
        raise ValueError(f"dp_x, dp_y, dp_I, dp_U, dp_V differ in length: {[f.size for f in fields]}")
    bbox = np.asarray(source["bbox"], np.float64).reshape(-1)
    if bbox.shape != (4,):
        raise ValueError(f"bbox must be [x, y, w, h], got {source['bbox']!r}")
    if np.any(bbox[2:] < 0):
        raise ValueError(f"bbox [x, y, w, h] needs w, h >= 0, got {bbox.tolist()}")
    x, y, i, u, v = fields
    i = _part_indices(i, "dp_I")
    uv = np.concatenate([u, v])
    uv = uv[np.isfinite(uv)]
    if uv.size and (uv.min() < -_UV_RANGE_TOL or uv.max() > 1 + _UV_RANGE_TOL):
        raise ValueError(f"dp_U, dp_V must be in [0, 1] (COCO-DensePose's scale), got {uv.min():.3g}..{uv.max():.3g}")
    xy = np.stack([bbox[0] + x / 255.0 * bbox[2], bbox[1] + y / 255.0 * bbox[3]], -1)
    return xy, i, u, v


def sample_dense_keypoints(
    chart: Chart,
    source,
    *,
    num: int = 400,
    rng,
    uv_max: float | None = None,
) -> tuple[np.ndarray, SurfacePoints, np.ndarray]:
    """Draws a fixed-size, weighted set of dense keypoints from an IUV map or annotation.

    Args:
      chart: from :func:`load_chart` (for phi).
      source: either an ``(H, W, 3)`` IUV map (refine it first with
        :func:`refine_iuv`): every foreground pixel is a candidate at its
        centre ``(col + 0.5, row + 0.5)``; or a COCO-DensePose annotation
        (mapping with ``dp_x``, ``dp_y`` (bbox-relative, 0-255 across the
        box), ``dp_I``, ``dp_U``, ``dp_V`` (0-1) and ``bbox`` ``[x, y, w, h]``
        in image pixels): point ``x = bbox_x + dp_x / 255 * bbox_w`` (as
        DensePose's own notebooks), likewise y.
      num: output size N; more candidates are subsampled uniformly without
        replacement (kept in their original order), fewer are padded.
      rng: ``np.random.Generator``, int seed or JAX PRNG key; the result is
        deterministic given it.
      uv_max: scale of U, V in an IUV map: 255 (0-255) or 1 (0-1). Defaults to
        255 for integer maps; required for float maps.

    Returns:
      ``xy (N, 2)`` float32 pixel coordinates (the IUV map's, or the image's
      for an annotation; ``camera.pixels_to_normalized`` turns crop pixels into
      the loss frame), SurfacePoints ``(N, 3)``/``(N,)``, and ``weight (N,)``
      float32: 1 for a real point, 0 for padding, a point phi rejects (e.g. NaN
      U, V) or an annotation point whose position is not finite (NaN in
      ``bbox``, ``dp_x`` or ``dp_y``; its ``xy`` is then 0, never NaN).

    Errors:
      TypeError: ``chart`` not a loaded chart (pass ``load_chart(name)``),
        ``num`` not an int, or a bad ``rng``.
      ValueError: ``num < 1``; an IUV map not ``(H, W, 3)``, I not in 0..24,
        ``uv_max`` missing for a float map or not 1 / 255, or U, V that cannot
        be in the ``uv_max`` scale (outside ``[0, uv_max]``, or ``uv_max=255``
        with every U, V a fraction in ``[0, 1]``); an annotation lacking a
        field, with fields of different lengths, a ``bbox`` that is not
        ``[x, y, w, h]`` with w, h >= 0, ``dp_I`` not in 0..24 or ``dp_U``,
        ``dp_V`` outside ``[0, 1]``.
    """
    chart = _check_chart(chart)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)):
        raise TypeError(f"num must be an int, got {type(num).__name__}")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    gen = _generator(rng)
    if isinstance(source, Mapping):
        xy, i, u, v = _annotation_points(source)
    else:
        iuv = _host_array(source, "iuv")
        if iuv.ndim != 3 or iuv.shape[-1] != 3:
            raise ValueError(f"iuv must be (H, W, 3) or a COCO-DensePose annotation, got shape {iuv.shape}")
        rows, cols = np.nonzero(_part_indices(iuv[..., 0], "iuv[..., 0]"))
        xy = np.stack([cols + 0.5, rows + 0.5], -1)
        i = iuv[rows, cols, 0]
        u, v = _iuv_uv(iuv, rows, cols, uv_max)
    if xy.shape[0] > num:
        keep = np.sort(gen.choice(xy.shape[0], num, replace=False))
        xy, i, u, v = xy[keep], i[keep], u[keep], v[keep]
    finite = np.all(np.isfinite(xy), -1)
    if not finite.all():  # As background: weight 0, and xy 0 so no NaN leaks through a product.
        xy, i = np.where(finite[:, None], xy, 0.0), np.where(finite, i, 0)
    return _pad(num, xy, iuv_to_surface(chart, i, u, v))


# ----------------------------------------------------------------------------- projection


def project_surface_points(vertices: jnp.ndarray, points: SurfacePoints, camera: jnp.ndarray) -> jnp.ndarray:
    """Projects surface points of a (predicted) mesh with a weak-perspective camera.

    The 3D point is the barycentric mix of its triangle's vertices, then
    projected: the same as the paper's Eq. 4 (mix of projected vertices), as
    the projection is affine. Pure JAX; jit-, grad- and vmap-safe.

    Args:
      vertices: ``(..., V, 3)`` mesh vertices (e.g. ``smpl.forward(...).vertices``).
      points: SurfacePoints with ``(..., N, 3)`` ids / barycentrics; batch dims
        broadcast with ``vertices``'. Ids beyond ``V`` give NaN (loud, not clipped).
      camera: ``(..., 3)`` weak-perspective ``(s, tx, ty)``.

    Returns:
      ``(..., N, 2)`` normalized crop coordinates.

    Errors:
      ValueError: ``vertices`` not ``(..., V, 3)``, ids / barycentrics not
        both ``(..., N, 3)``, or ``camera`` not ``(..., 3)`` (shape checks
        only, so it stays jit-safe; NaN inputs give NaN outputs).
    """
    vertices = jnp.asarray(vertices)
    ids = jnp.asarray(points.vertex_ids)
    bary = jnp.asarray(points.barycentric, vertices.dtype)
    if vertices.ndim < 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (..., V, 3), got {vertices.shape}")
    if ids.ndim < 2 or ids.shape[-1] != 3 or bary.shape != ids.shape:
        raise ValueError(f"vertex_ids and barycentric must both be (..., N, 3), got {ids.shape}, {bary.shape}")
    if jnp.shape(camera)[-1:] != (3,):
        raise ValueError(f"camera must be (..., 3), got {jnp.shape(camera)}")
    batch = jnp.broadcast_shapes(vertices.shape[:-2], ids.shape[:-2])
    vertices = jnp.broadcast_to(vertices, batch + vertices.shape[-2:])
    flat_ids = jnp.broadcast_to(ids, batch + ids.shape[-2:]).reshape(batch + (-1, 1))
    corners = jnp.take_along_axis(vertices, flat_ids, axis=-2, mode="fill")
    corners = corners.reshape(batch + ids.shape[-2:] + (3,))  # (..., N, corner, xyz)
    surface = jnp.einsum("...nk,...nkc->...nc", jnp.broadcast_to(bary, batch + bary.shape[-2:]), corners)
    return camera_lib.weak_perspective_project(surface, camera)
