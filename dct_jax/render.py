"""A z-buffered triangle rasterizer in plain numpy (no OpenGL).

Renders a mesh as a shaded RGB image (optionally over a background: the demo
overlay), a DensePose IUV map, a part segmentation or a mask.

Frames and conventions (see ``dct_jax.camera``):
  * Vertices are 3D points in metres, image axes x right, y down. The camera
    looks along +Z: depth is Z, and at a pixel the fragment with the *smallest*
    depth wins the z-test (equal float32 depths: the lower face index wins).
  * The default projection is the weak-perspective (orthographic) camera
    ``(s, tx, ty)``: ``x2d = s * (X[..., :2] + [tx, ty])`` in normalized crop
    coordinates ``[-1, 1]``, mapped to pixels by ``camera.normalized_to_pixels``.
    ``projection="perspective"`` is the official DCT overlay camera instead:
    translation ``(tx, ty, focal / s)`` with ``focal`` (default 5) in normalized
    units, i.e. ``0.5 * size * focal`` pixels; it agrees with the weak
    perspective camera at Z = 0.
  * Pixel ``(i, j)`` (row, column) is covered by a triangle when its centre
    ``(j + 0.5, i + 0.5)`` lies inside it. Centres exactly on an edge follow the
    top-left fill rule, so triangles that share an edge cover every pixel once.
  * Back faces are rendered unless ``cull_backfaces=True`` (occlusion hides
    them on a closed mesh). A face is front-facing when its corners appear
    counter-clockwise on screen (x right, y down), i.e. when its normal
    ``(v1 - v0) x (v2 - v0)`` points towards the camera (negative Z).

The rasterizer groups triangles by the (power-of-two) size of their pixel
bounding boxes and evaluates the three edge functions of all the triangles of a
group over their boxes at once; the nearest fragment per pixel is picked with
one ``np.minimum.at`` over 64-bit keys ``(depth bits, face index)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MODES = ("rgb", "iuv", "seg", "mask")
PROJECTIONS = ("weak_perspective", "perspective")
DEFAULT_COLOR = (0.65, 0.74, 0.86)  # light blue, in the output's channel order
DEFAULT_LIGHT_DIRECTION = (0.3, -0.4, -1.0)  # towards the light: front, up, right

_MAX_GRID = 1 << 18  # candidate (face, pixel) pairs evaluated per numpy call
_NEAR = 1e-3  # perspective near plane (metres); faces reaching closer are dropped
_EMPTY = np.iinfo(np.uint64).max
_OWNER = -np.nextafter(0.0, 1.0)  # `w > _OWNER` is `w >= 0` (edge owns its pixels)

_UV_TOL = 1e-6  # chart uv this far outside [0, 1] is rounding, not a wrong scale
_MAT_KEYS = ("All_FaceIndices", "All_Faces", "All_U_norm", "All_V_norm", "All_vertices")
_CHART_KEYS = ("faces", "uv", "vertex_ids", "parts")
_FACE_CHART_KEYS = ("face_part", "face_uv", "face_vertices")


@dataclasses.dataclass(frozen=True)
class RenderChart:
    """The arrays of a DensePose chart that the renderer needs (all 0-based).

    Attributes:
      faces: ``(Fc, 3)`` int32, chart faces as triples of UV-vertex indices.
      uv: ``(N, 2)`` float32, ``(U, V)`` in ``[0, 1]`` per UV vertex.
      vertex_ids: ``(N,)`` int32, the body-mesh vertex each UV vertex lies on.
      parts: ``(Fc,)`` uint8, part index 1-24 per chart face.
    """

    faces: np.ndarray
    uv: np.ndarray
    vertex_ids: np.ndarray
    parts: np.ndarray

    def __post_init__(self):
        faces = _as_faces(self.faces, "chart faces")
        uv = np.asarray(self.uv, dtype=np.float32)
        vertex_ids, parts = np.ravel(self.vertex_ids), np.ravel(self.parts)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"chart uv must have shape (N, 2), got {uv.shape}")
        bad = uv[~((uv >= -_UV_TOL) & (uv <= 1 + _UV_TOL))]  # NaN is bad too
        if bad.size:
            raise ValueError(f"chart uv must be finite and in [0, 1], got {bad.size} values outside "
                             f"(e.g. {bad[0]:.3g}); divide a 0-255 chart by 255")
        for name, arr, n, top in (("vertex_ids", vertex_ids, len(uv), np.iinfo(np.int32).max),
                                  ("parts", parts, len(faces), 255)):
            valid = arr.shape == (n,) and _is_int(arr)
            if not valid or (n and not 0 <= arr.min() <= arr.max() <= top):
                raise ValueError(f"chart {name} must be {n} integers in [0, {top}], "
                                 f"got shape {arr.shape} dtype {arr.dtype}")
        if faces.size and faces.max() >= len(uv):
            raise ValueError(f"chart faces must index the {len(uv)} UV vertices")
        object.__setattr__(self, "faces", faces)
        object.__setattr__(self, "uv", uv)
        object.__setattr__(self, "vertex_ids", vertex_ids.astype(np.int32))
        object.__setattr__(self, "parts", parts.astype(np.uint8))

    @classmethod
    def from_any(cls, chart: Any) -> RenderChart:
        """Builds a ``RenderChart`` from a chart in one of the accepted forms.

        Accepted: a ``RenderChart``; a ``densepose.Chart`` (or anything with
        ``face_part (F,)``, ``face_uv (F, 3, 2)`` and 0-based ``face_vertices
        (F, 3)``); a mapping or object with the keys or
        attributes ``faces, uv, vertex_ids, parts`` (0-based, as above); or one
        with the ``UV_Processed.mat`` names ``All_FaceIndices, All_Faces,
        All_U_norm, All_V_norm, All_vertices`` (1-based, as in the .mat file,
        e.g. the dict from ``scipy.io.loadmat``). Convert once and reuse the
        result: ``render`` converts (and validates) a non-``RenderChart`` chart
        on every call.

        Errors:
          TypeError: a chart name or path (pass ``densepose.load_chart(name)``).
          ValueError: none of the accepted key sets, or arrays of the wrong
            shape, type or range (e.g. uv outside [0, 1]).
        """
        if isinstance(chart, cls):
            return chart
        if isinstance(chart, (str, os.PathLike)):
            name = os.fspath(chart)
            raise TypeError(f"chart must be chart arrays, got the name {name!r}: "
                            f"pass densepose.load_chart({name!r})")
        get = _getter(chart)
        if all(get(k) is not None for k in _FACE_CHART_KEYS):
            # A per-face chart (``densepose.Chart``): one UV vertex per face corner.
            face_uv = np.asarray(get("face_uv"), dtype=np.float32)
            num_faces = face_uv.shape[0]
            return cls(faces=np.arange(3 * num_faces).reshape(num_faces, 3),
                       uv=face_uv.reshape(-1, 2),
                       vertex_ids=np.asarray(get("face_vertices")).reshape(-1),
                       parts=np.asarray(get("face_part")).reshape(-1))
        if all(get(k) is not None for k in _CHART_KEYS):
            return cls(**{k: get(k) for k in _CHART_KEYS})
        if all(get(k) is not None for k in _MAT_KEYS):
            faces = np.asarray(get("All_Faces")).astype(np.int64)
            vertex_ids = np.asarray(get("All_vertices")).reshape(-1).astype(np.int64)
            if faces.size and faces.min() < 1 or vertex_ids.size and vertex_ids.min() < 1:
                raise ValueError(
                    "All_Faces and All_vertices are 1-based as in UV_Processed.mat; "
                    "pass a RenderChart for 0-based arrays")
            uv = np.stack([np.asarray(get("All_U_norm")).reshape(-1),
                           np.asarray(get("All_V_norm")).reshape(-1)], axis=-1)
            return cls(faces=faces - 1, uv=uv, vertex_ids=vertex_ids - 1,
                       parts=np.asarray(get("All_FaceIndices")).reshape(-1))
        raise ValueError(
            f"chart must be a RenderChart or have the keys/attributes {_CHART_KEYS} "
            f"(0-based) or {_MAT_KEYS} (1-based); got {type(chart).__name__}")


@dataclasses.dataclass(frozen=True)
class Fragments:
    """Per-pixel rasterization buffers of an ``(H, W)`` image.

    Attributes:
      face_ids: ``(H, W)`` int32, index of the visible face into the faces that
        were rasterized (the chart faces for ``iuv``/``seg``), -1 for background.
      depth: ``(H, W)`` float32, depth (Z, camera frame) of the visible
        surface, ``inf`` for background.
      barycentric: ``(H, W, 3)`` float32 barycentric coordinates of the pixel
        centre in the visible face (perspective-correct: these are the weights
        of the 3D corners), zeros for background; ``None`` if not computed.
    """

    face_ids: np.ndarray
    depth: np.ndarray
    barycentric: np.ndarray | None

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool, pixels covered by some face."""
        return self.face_ids >= 0


def project_vertices(
    vertices: np.ndarray,
    camera: np.ndarray,
    size: int,
    *,
    projection: str = "weak_perspective",
    focal: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Projects vertices to continuous pixel coordinates of a ``size x size`` crop.

    Args:
      vertices: ``(V, 3)`` points in metres (x right, y down, camera looks along +Z).
      camera: ``(3,)`` as ``(s, tx, ty)``.
      size: side of the square crop in pixels.
      projection: ``"weak_perspective"`` (depth = Z) or ``"perspective"`` (the
        official DCT overlay camera: translation ``(tx, ty, focal / s)``,
        depth = Z + focal / s).
      focal: perspective focal length in normalized units (pixels / (size / 2)).

    Returns:
      ``(V, 2)`` float64 pixel coordinates (x, y) and ``(V,)`` float64 depth.

    Errors:
      ValueError: ``vertices`` not ``(V, 3)``, ``camera`` not 3 finite
        numbers, an unknown ``projection``, or (perspective) ``s <= 0`` or
        ``focal`` not a finite positive number.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    camera = np.asarray(camera, dtype=np.float64).reshape(-1)
    if camera.shape != (3,) or not np.all(np.isfinite(camera)):
        raise ValueError(f"camera must be 3 finite numbers (s, tx, ty), got {camera}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    scale, translation = camera[0], camera[1:]
    if projection == "weak_perspective":
        xy = scale * (vertices[:, :2] + translation)
        depth = vertices[:, 2].copy()
    else:
        if not (scale > 0 and 0 < focal < np.inf):  # NaN fails too
            raise ValueError(f"perspective needs s > 0 and focal > 0, got s={scale}, focal={focal}")
        depth = vertices[:, 2] + focal / scale
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = focal * (vertices[:, :2] + translation) / depth[:, None]
    return (xy + 1.0) * (0.5 * size), depth


def rasterize(
    xy: np.ndarray,
    depth: np.ndarray,
    faces: np.ndarray,
    height: int,
    width: int,
    *,
    perspective_correct: bool = False,
    cull_backfaces: bool = False,
    with_barycentric: bool = True,
) -> Fragments:
    """Rasterizes triangles given in pixel coordinates with a z-buffer.

    Args:
      xy: ``(V, 2)`` vertex positions in continuous pixel coordinates (x, y).
      depth: ``(V,)`` vertex depths; the smallest depth wins.
      faces: ``(F, 3)`` int vertex indices.
      height, width: image size in pixels.
      perspective_correct: interpolate 1/depth (perspective projection) instead
        of depth (orthographic), and return perspective-correct barycentrics.
      cull_backfaces: drop faces that appear clockwise on screen (see module doc).
      with_barycentric: also compute ``Fragments.barycentric``.

    Returns:
      ``Fragments`` of the visible faces.

    Errors:
      ValueError: ``xy`` not ``(V, 2)``, ``depth`` not ``(V,)``, bad
        ``faces``, a bad image size, or a face corner with a non-finite
        position or depth (with ``perspective_correct``, corners behind the
        near plane may be non-finite: their faces are dropped).
    """
    xy = np.asarray(xy, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64).reshape(-1)
    faces = _as_faces(faces, "faces")
    height, width = _image_size((height, width))
    if xy.ndim != 2 or xy.shape[1] != 2 or depth.shape != xy.shape[:1]:
        raise ValueError(f"xy must be (V, 2) and depth (V,), got {xy.shape}, {depth.shape}")
    if faces.size and faces.max() >= xy.shape[0]:
        raise ValueError(f"faces reach vertex {faces.max()}, but there are {xy.shape[0]}")
    used = np.zeros(xy.shape[0], bool)
    used[faces.ravel()] = True
    bad = used & ~(np.isfinite(xy).all(-1) & np.isfinite(depth))
    if perspective_correct:
        bad &= ~(depth <= _NEAR)  # dropped by the near plane anyway
    if bad.any():
        raise ValueError(f"{bad.sum()} face corners have a non-finite position or depth "
                         f"(e.g. vertex {np.flatnonzero(bad)[0]})")
    setup = _setup_faces(xy, depth, faces, perspective_correct, cull_backfaces,
                         height, width)
    keys = np.full(height * width, _EMPTY, dtype=np.uint64)
    for pixels, key in _fragments(setup, height, width):
        np.minimum.at(keys, pixels, key)
    covered = np.flatnonzero(keys != _EMPTY)
    local = (keys[covered] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    face_ids = np.full(height * width, -1, dtype=np.int32)
    face_ids[covered] = setup["index"][local]
    depth_map = np.full(height * width, np.inf, dtype=np.float32)
    depth_map[covered] = _depth_from_keys(keys[covered])
    bary = None
    if with_barycentric:
        bary = np.zeros((height * width, 3), dtype=np.float32)
        bary[covered] = _barycentric(setup, local, covered, width, perspective_correct)
        bary = bary.reshape(height, width, 3)
    return Fragments(face_ids=face_ids.reshape(height, width),
                     depth=depth_map.reshape(height, width), barycentric=bary)


def render(
    vertices: np.ndarray,
    faces: np.ndarray | None,
    camera: np.ndarray | None,
    size: int | Sequence[int],
    mode: str = "rgb",
    *,
    chart: Any = None,
    background: np.ndarray | None = None,
    color: Sequence[float] = DEFAULT_COLOR,
    light_direction: Sequence[float] = DEFAULT_LIGHT_DIRECTION,
    ambient: float = 0.4,
    alpha: float = 1.0,
    projection: str = "weak_perspective",
    focal: float = 5.0,
    cull_backfaces: bool = False,
    return_fragments: bool = False,
) -> np.ndarray | tuple[np.ndarray, Fragments]:
    """Renders a mesh as an RGB image, IUV map, part segmentation or mask.

    Args:
      vertices: ``(V, 3)`` vertices in metres (x right, y down, depth Z; the
        camera looks along +Z).
      faces: ``(F, 3)`` int vertex indices; used by ``rgb`` and ``mask``
        (``iuv``/``seg`` rasterize the chart's faces, so may be ``None`` there).
      camera: ``(3,)`` weak-perspective camera ``(s, tx, ty)``, or ``None`` if
        ``vertices[:, :2]`` are already continuous pixel coordinates (then
        ``vertices[:, 2]`` is the depth and ``size`` may be non-square).
      size: ``int`` for a square image, or ``(height, width)`` (square when a
        camera is given, as crop coordinates span [-1, 1] on both axes).
      mode: ``"rgb"``: ``(H, W, 3)`` uint8, Lambertian-shaded mesh (smooth
        vertex normals, two-sided, directional light + ambient) over
        ``background``; ``"iuv"``: ``(H, W, 3)`` uint8 with channel 0 = I (part
        1-24, 0 = background), channel 1 = U and channel 2 = V, each
        ``round(255 * value)`` (the DensePose IUV layout, as Detectron writes and
        ``cv2.imread`` reads it); ``"seg"``: ``(H, W)`` uint8 part index (0 =
        background); ``"mask"``: ``(H, W)`` bool. ``iuv``, ``seg`` and ``mask``
        of one mesh can all be read off one ``iuv`` render
        (``seg = iuv[..., 0]``, ``mask = seg > 0``) if every face is charted.
      chart: for ``iuv``/``seg``: a ``RenderChart`` or anything
        ``RenderChart.from_any`` accepts; its ``vertex_ids`` index ``vertices``.
      background: ``rgb`` only: ``(H, W, 3)`` uint8 image, kept outside the mesh
        (black if ``None``).
      color: ``rgb`` only: base colour, 3 floats in [0, 1] in the output's
        channel order (reverse it for OpenCV's BGR backgrounds).
      light_direction: ``rgb`` only: direction towards the light, camera frame.
      ambient: ``rgb`` only: ambient fraction in [0, 1]; the rest is diffuse.
      alpha: ``rgb`` only: opacity of the mesh over the background, in [0, 1].
      projection: ``"weak_perspective"`` (default) or ``"perspective"`` (the
        official DCT overlay camera; see ``project_vertices``; faces reaching
        closer than 1 mm to the camera are dropped).
      focal: perspective focal length in normalized units.
      cull_backfaces: drop back-facing triangles (see the module docstring).
      return_fragments: also return the ``Fragments`` (face ids, depth,
        barycentrics) of the rasterized faces.

    Returns:
      The image (shape and dtype per ``mode``), and the ``Fragments`` if
      ``return_fragments``.

    Errors:
      ValueError: an unknown ``mode`` or ``projection``; ``vertices`` not a
        finite ``(V, 3)`` array; ``faces`` not ``(F, 3)`` non-negative ints
        below V; a bad ``size`` or ``camera``; ``iuv``/``seg`` without a
        chart, or chart ids beyond the mesh; for ``rgb``: ``background`` not
        an ``(H, W, 3)`` uint8 image, ``color`` not 3 floats in [0, 1] (a
        0-255 colour is an error, not saturated white), ``light_direction``
        non-finite or zero, ``ambient``/``alpha`` outside [0, 1] or NaN.
      TypeError: ``chart`` given as a name (pass ``densepose.load_chart(name)``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    if not np.all(np.isfinite(vertices)):
        raise ValueError("vertices must be finite")
    height, width = _image_size(size)
    num_vertices = vertices.shape[0]

    if mode in ("iuv", "seg"):
        if chart is None:
            raise ValueError(f"mode {mode!r} needs a chart (DensePose chart arrays)")
        chart = RenderChart.from_any(chart)
        if chart.vertex_ids.size and chart.vertex_ids.max() >= num_vertices:
            raise ValueError(
                f"chart vertex_ids reach {chart.vertex_ids.max()}, but the mesh has "
                f"{num_vertices} vertices")
        # Each UV vertex sits on its body vertex; rasterize the chart faces.
        vertices = vertices[chart.vertex_ids]
        raster_faces = chart.faces
    else:
        if faces is None:
            raise ValueError(f"mode {mode!r} needs faces")
        raster_faces = _as_faces(faces, "faces")
        if raster_faces.size and raster_faces.max() >= num_vertices:
            raise ValueError(
                f"faces reach vertex {raster_faces.max()}, but there are {num_vertices}")
    if mode == "rgb":
        if background is not None:
            background = np.asarray(background)
            if background.shape != (height, width, 3) or background.dtype != np.uint8:
                raise ValueError(
                    f"background must be a ({height}, {width}, 3) uint8 image, got "
                    f"{background.shape} {background.dtype}")
        color = np.asarray(color, dtype=np.float64).reshape(-1)
        light = np.asarray(light_direction, dtype=np.float64).reshape(-1)
        if color.shape != (3,) or not np.all((color >= 0) & (color <= 1)):  # NaN fails too
            hint = "; divide 0-255 colours by 255" if color.shape == (3,) and np.all(color <= 255) else ""
            raise ValueError(f"color must be 3 floats in [0, 1], got {color.tolist()}{hint}")
        if light.shape != (3,) or not np.all(np.isfinite(light)) or not np.any(light):
            raise ValueError(f"light_direction must be 3 finite numbers, not all 0, got {light.tolist()}")
        if not (0.0 <= ambient <= 1.0 and 0.0 <= alpha <= 1.0):
            raise ValueError(f"ambient and alpha must lie in [0, 1], got {ambient}, {alpha}")

    if camera is None:
        if projection != "weak_perspective":
            raise ValueError("projection='perspective' needs a camera")
        xy, depth = vertices[:, :2], vertices[:, 2]
    else:
        if height != width:
            raise ValueError(f"with a camera the image must be square, got {(height, width)}")
        xy, depth = project_vertices(vertices, camera, height, projection=projection,
                                     focal=focal)

    need_bary = return_fragments or mode in ("rgb", "iuv")
    frags = rasterize(xy, depth, raster_faces, height, width,
                      perspective_correct=projection == "perspective",
                      cull_backfaces=cull_backfaces, with_barycentric=need_bary)
    face_ids = frags.face_ids.reshape(-1)
    covered = np.flatnonzero(face_ids >= 0)
    fid = face_ids[covered]

    if mode == "mask":
        image = frags.mask
    elif mode == "seg":
        image = np.zeros(height * width, dtype=np.uint8)
        image[covered] = chart.parts[fid]
        image = image.reshape(height, width)
    elif mode == "iuv":
        bary = frags.barycentric.reshape(-1, 3)[covered]
        uv = np.einsum("pk,pkc->pc", bary, chart.uv[chart.faces[fid]])
        image = np.zeros((height * width, 3), dtype=np.uint8)
        image[covered, 0] = chart.parts[fid]
        image[covered, 1:] = np.rint(np.clip(uv, 0.0, 1.0) * 255.0).astype(np.uint8)
        image = image.reshape(height, width, 3)
    else:
        bary = frags.barycentric.reshape(-1, 3)[covered]
        normals = _vertex_normals(vertices, raster_faces)
        n = np.einsum("pk,pkc->pc", bary, normals[raster_faces[fid]])
        # Two-sided lighting: turn normals towards the camera (negative Z).
        n *= np.where(n[:, 2:] > 0, -1.0, 1.0)
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        diffuse = np.maximum(n @ (light / np.linalg.norm(light)), 0.0)
        shade = (ambient + (1.0 - ambient) * diffuse)[:, None] * (255.0 * color)
        if background is None:
            image = np.zeros((height * width, 3), dtype=np.uint8)
        else:
            image = background.reshape(-1, 3).copy()
        if alpha < 1.0:
            shade = alpha * shade + (1.0 - alpha) * image[covered]
        image[covered] = np.clip(np.rint(shade), 0, 255).astype(np.uint8)
        image = image.reshape(height, width, 3)
    return (image, frags) if return_fragments else image


# ---------------------------------------------------------------------------
# Internals.


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer)


def _as_faces(faces: Any, name: str) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not (_is_int(faces) or faces.size == 0):
        raise ValueError(f"{name} must be an (F, 3) integer array, got {faces.shape} {faces.dtype}")
    if faces.size and faces.min() < 0:
        raise ValueError(f"{name} must be non-negative (0-based) indices")
    return faces.astype(np.int64)


def _getter(obj: Any):
    if isinstance(obj, Mapping):
        return obj.get
    return lambda key: getattr(obj, key, None)


def _image_size(size: int | Sequence[int]) -> tuple[int, int]:
    dims = (size, size) if np.ndim(size) == 0 else tuple(size)
    if len(dims) != 2 or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(dims[0]), int(dims[1])


def _setup_faces(xy, depth, faces, perspective_correct, cull_backfaces, height, width):
    """Per-face edge and depth planes, pixel boxes, and the kept faces' indices.

    Arrays are ``(3, F)`` (one row per corner or edge) or ``(F,)``. Edge i
    (opposite corner i, from corner i+1 to i+2) has the function
    ``w_i = a_i x + b_i y + c_i``, signed so that the inside is ``w_i > 0``;
    ``w_i / area2`` is barycentric coordinate i. Swapping an edge's ends negates
    ``a, b, c`` exactly, so neighbours agree on which side a pixel lies.
    """
    corners = faces.T  # (3, F)
    index = np.arange(faces.shape[0])
    if perspective_correct:  # drop faces that reach behind the near plane
        near = depth[corners] > _NEAR
        keep = np.flatnonzero(near[0] & near[1] & near[2])
        corners, index = corners.take(keep, axis=1), index.take(keep)
    x, y = xy[:, 0][corners], xy[:, 1][corners]  # (3, F)
    # Pixel boxes: columns whose centres j + 0.5 lie within [min x, max x].
    with np.errstate(invalid="ignore"):
        col0 = np.maximum(np.ceil(np.minimum(np.minimum(x[0], x[1]), x[2]) - 0.5), 0)
        col1 = np.minimum(np.floor(np.maximum(np.maximum(x[0], x[1]), x[2]) - 0.5), width - 1)
        row0 = np.maximum(np.ceil(np.minimum(np.minimum(y[0], y[1]), y[2]) - 0.5), 0)
        row1 = np.minimum(np.floor(np.maximum(np.maximum(y[0], y[1]), y[2]) - 0.5), height - 1)
        keep = np.flatnonzero((col1 >= col0) & (row1 >= row0))
    x, y, corners, col0, col1, row0, row1, index = (
        arr.take(keep, axis=-1) for arr in (x, y, corners, col0, col1, row0, row1, index))
    xa, ya = x[[1, 2, 0]], y[[1, 2, 0]]  # edge i runs from corner i+1 ...
    xb, yb = x[[2, 0, 1]], y[[2, 0, 1]]  # ... to corner i+2
    a, b, c = ya - yb, xb - xa, xa * yb - ya * xb
    area2 = c[0] + c[1] + c[2]  # twice the signed area; < 0: counter-clockwise (front)
    keep = area2 < 0 if cull_backfaces else area2 != 0
    if not keep.all():
        keep = np.flatnonzero(keep)
        a, b, c, area2, corners, col0, col1, row0, row1, index = (
            arr.take(keep, axis=-1)
            for arr in (a, b, c, area2, corners, col0, col1, row0, row1, index))
    sign = np.sign(area2)
    a, b, c, area2 = a * sign, b * sign, c * sign, area2 * sign
    owner = (a > 0) | ((a == 0) & (b > 0))  # top-left rule: edge owns w == 0 pixels
    q = depth[corners]
    if perspective_correct:
        q = 1.0 / q  # 1/depth is affine in screen space
    plane = np.stack([(u * q).sum(axis=0) for u in (a, b, c)]) / area2  # q = plane.(x, y, 1)
    return {
        "index": index, "a": a, "b": b, "c": c, "area2": area2, "q": q, "plane": plane,
        "threshold": np.where(owner, _OWNER, 0.0),
        "col0": col0.astype(np.int64), "ncols": (col1 - col0).astype(np.int64) + 1,
        "row0": row0.astype(np.int64), "nrows": (row1 - row0).astype(np.int64) + 1,
        "perspective": perspective_correct}


def _next_pow2(n: np.ndarray, cap: int) -> np.ndarray:
    return np.minimum(np.left_shift(1, np.ceil(np.log2(n)).astype(np.int64)), cap)


def _fragments(setup, height, width):
    """Yields ``(pixel index, key)`` for every (face, covered pixel) pair.

    Faces are grouped by box size rounded up to powers of two; each group's
    boxes (moved inside the image where the padding would leave it) are
    evaluated as one ``(faces, box pixels)`` grid.
    """
    if setup["index"].size == 0:
        return
    box_w = _next_pow2(setup["ncols"], width)
    box_h = _next_pow2(setup["nrows"], height)
    col0 = np.minimum(setup["col0"], width - box_w)
    row0 = np.minimum(setup["row0"], height - box_h)
    group = box_h * (width + 1) + box_w
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    a, b, c, thr, plane = (setup[k] for k in ("a", "b", "c", "threshold", "plane"))
    for members in np.split(order, bounds):
        bh, bw = int(box_h[members[0]]), int(box_w[members[0]])
        k = np.arange(bh * bw)
        dy, dx = k // bw, k % bw
        chunk = max(1, _MAX_GRID // (bh * bw))
        for start in range(0, members.size, chunk):
            f = members[start:start + chunk]
            cols = col0[f][:, None] + dx  # (G, K)
            rows = row0[f][:, None] + dy
            px, py = cols + 0.5, rows + 0.5
            ga, gb, gc, gt = (arr.take(f, axis=1)[..., None] for arr in (a, b, c, thr))
            inside = ga[0] * px + gb[0] * py + gc[0] > gt[0]
            inside &= ga[1] * px + gb[1] * py + gc[1] > gt[1]
            inside &= ga[2] * px + gb[2] * py + gc[2] > gt[2]
            hits = np.flatnonzero(inside)
            if hits.size == 0:
                continue
            ff = f.take(hits // (bh * bw))
            x, y = px.take(hits), py.take(hits)
            gp = plane.take(ff, axis=1)
            q = gp[0] * x + gp[1] * y + gp[2]
            z = 1.0 / q if setup["perspective"] else q
            key = (_sortable(z).astype(np.uint64) << np.uint64(32)) | ff.astype(np.uint64)
            yield rows.take(hits) * width + cols.take(hits), key


def _sortable(z: np.ndarray) -> np.ndarray:
    """float -> uint32 whose unsigned order is the float32 order."""
    u = z.astype(np.float32).view(np.uint32)
    return np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000))


def _depth_from_keys(keys: np.ndarray) -> np.ndarray:
    u = (keys >> np.uint64(32)).astype(np.uint32)
    u = np.where(u >> np.uint32(31), u & np.uint32(0x7FFFFFFF), ~u)
    return u.view(np.float32)


def _barycentric(setup, local, pixels, width, perspective_correct):
    """``(P, 3)`` barycentrics of pixel centres ``pixels`` in kept faces ``local``."""
    px = pixels % width + 0.5
    py = pixels // width + 0.5
    a, b, c, q = (setup[k].take(local, axis=1) for k in ("a", "b", "c", "q"))
    bary = np.clip((a * px + b * py + c) / setup["area2"].take(local), 0.0, 1.0)  # (3, P)
    if perspective_correct:
        bary = bary * q  # q = 1 / depth
    return (bary / np.maximum(bary.sum(axis=0), 1e-30)).T


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(V, 3)`` area-weighted vertex normals (not normalized)."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    face_normals = np.cross(v1 - v0, v2 - v0)
    flat = faces.T.ravel()
    return np.stack([np.bincount(flat, np.tile(face_normals[:, d], 3), len(vertices))
                     for d in range(3)], axis=1)
