"""A DensePose-like error model: exact IUV maps -> "predicted-like" ones.

The synthetic datasets render *exact* DensePose IUV maps; the paper trains on
DensePose-RCNN *predictions*, whose errors its keypoint-guided refinement
(``dct_jax.densepose.refine_iuv``, Sec. 3.2) is there to remove. This module
turns an exact map into a predicted-like one, for the paper's raw-vs-refined
IUV ablation and to train on predicted-like IUV inputs. The errors, applied in
this order (all levels 0: the exact map, unchanged):

1. **Left/right swaps** (``part_swap``): each left/right pair of body
   segments present in the map (:data:`SWAP_SEGMENTS`: hands, feet, upper and
   lower arms, upper and lower legs; a segment is its front and back parts)
   has its labels swapped with this probability, as DensePose's flip
   (``dct_jax.data.flip.DENSEPOSE_PART_FLIP``) swaps them; ``U, V`` move to the
   mirrored surface point when a chart mirror is given. This is the paper's
   example error (a left foot predicted as a right foot). Torso and head are
   never swapped (every torso/head keypoint allows both of their parts, so no
   keypoint could tell).
2. **Boundary shift** (``boundary_shift``): the whole map is resampled
   (nearest neighbour, so ``I, U, V`` move together) through a smooth random
   displacement field: Gaussian displacements of standard deviation
   ``boundary_shift * size`` pixels per axis at control points
   :data:`SHIFT_CELL` ``* size`` apart, bicubically interpolated, where
   ``size`` is the person's size in pixels (the larger side of the exact
   foreground's box: a standing person's height). A pixel changes only if its
   source lies across a boundary, so the errors (wrong parts, and false or
   missed foreground at the silhouette) lie along part boundaries.
3. **Blobs** (``blobs``, ``blob_size``): ``Poisson(blobs)`` false-positive
   ellipses of radius ``~ blob_size * size`` (0.5-1.5x, axes 0.6-1.4x, any
   angle) centred on a background pixel near the person (its box grown by
   :data:`BLOB_MARGIN` ``* size``), painted on background pixels only, each of
   a random part 1-24 and a random constant ``U, V``.
4. **U, V noise** (``uv_noise``): :func:`add_uv_noise` on every foreground pixel.

:data:`DENSEPOSE_LIKE` holds the documented default levels; see
``docs/iuv_errors.md`` for what they produce and what refinement removes.
They are chosen to look like a DensePose-RCNN prediction, not measured
against one.

Maps are the PNG layout of ``dct_jax.data.schema``: ``(H, W, 3)`` uint8, I =
part 0-24 (0 background), U and V 0-255. Everything is host-side numpy/OpenCV
(a few ms per 256x256 map), deterministic given the generator.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import cv2
import numpy as np

from dct_jax.data import flip

__all__ = [
    "BLOB_MARGIN", "DENSEPOSE_LIKE", "IUVErrorModel", "SHIFT_CELL", "SWAP_SEGMENTS",
    "add_annotation_uv_noise", "add_uv_noise", "corrupt_iuv", "part_error_stats", "person_size",
]

NUM_PARTS = flip.NUM_PARTS
# Left/right pairs of body segments (DensePose parts, front and back of both sides) that
# part_swap swaps as a whole, each through DensePose's flip DENSEPOSE_PART_FLIP.
SWAP_SEGMENTS: tuple[tuple[int, ...], ...] = (
    (3, 4),  # hands
    (5, 6),  # feet
    (7, 8, 9, 10),  # upper legs
    (11, 12, 13, 14),  # lower legs
    (15, 16, 17, 18),  # upper arms
    (19, 20, 21, 22),  # lower arms
)
# Control-point spacing of the boundary-shift displacement field, a fraction of the person's size.
SHIFT_CELL = 0.1
# Blob centres lie in the person's box grown by this fraction of its size on every side.
BLOB_MARGIN = 0.2
_BLOB_RADIUS_RANGE = (0.5, 1.5)
_BLOB_AXIS_RANGE = (0.6, 1.4)


@dataclasses.dataclass(frozen=True)
class IUVErrorModel:
    """What goes wrong in a DensePose prediction, and how often (all 0: the exact map).

    Attributes:
      part_swap: probability, per left/right pair of body segments present in
        the map (:data:`SWAP_SEGMENTS`), that the pair's labels (and U, V, as
        DensePose's mirror maps them) are swapped: the paper's example error.
      boundary_shift: standard deviation (per axis, at control points
        :data:`SHIFT_CELL` of the size apart) of a smooth random displacement
        of the part labels (and U, V), a fraction of the person's size: errors
        along part boundaries and the silhouette.
      blobs: expected number of false-positive blobs off the body per map (Poisson).
      blob_size: blob radius, a fraction of the person's size; random part,
        random U, V. Needed (> 0) when ``blobs > 0``.
      uv_noise: standard deviation of Gaussian noise on U, V of foreground
        pixels, 0-255 scale.
    """

    part_swap: float = 0.0
    boundary_shift: float = 0.0
    blobs: float = 0.0
    blob_size: float = 0.0
    uv_noise: float = 0.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"IUVErrorModel.{field.name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"IUVErrorModel.{field.name} must be finite and >= 0, got {value}")
        if self.part_swap > 1:
            raise ValueError(f"IUVErrorModel.part_swap is a probability in [0, 1], got {self.part_swap}")
        if self.blobs > 0 and self.blob_size == 0:
            raise ValueError(f"IUVErrorModel.blobs = {self.blobs} needs blob_size > 0 (a fraction of the "
                             "person's size, e.g. 0.03)")

    @property
    def is_exact(self) -> bool:
        """True when every level is 0 (:func:`corrupt_iuv` returns the map unchanged)."""
        return not any(dataclasses.astuple(self))


# Chosen (not measured against a network) to look like DensePose-RCNN on a person of
# ~100-200 px; docs/iuv_errors.md gives what they produce on the synthetic data.
DENSEPOSE_LIKE = IUVErrorModel(part_swap=0.05, boundary_shift=0.006, blobs=0.5, blob_size=0.03, uv_noise=4.0)


# ----------------------------------------------------------------------------- checks


def _check_iuv(iuv: Any, name: str = "iuv") -> np.ndarray:
    """An ``(H, W, 3)`` uint8 map with I in 0..24, or a ValueError saying what was expected."""
    iuv = np.asarray(iuv)
    if iuv.ndim != 3 or iuv.shape[-1] != 3 or iuv.dtype != np.uint8:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 IUV map (I 0-24, U, V 0-255), "
                         f"got shape {iuv.shape} dtype {iuv.dtype}")
    if iuv.size and iuv[..., 0].max() > NUM_PARTS:
        raise ValueError(f"{name}[..., 0] must be a part index 0-{NUM_PARTS}, got {iuv[..., 0].max()}")
    return iuv


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite standard deviation >= 0 (0-255 scale), got {sigma!r}")
    return float(sigma)


def _generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def person_size(iuv: np.ndarray) -> int:
    """The larger side, in pixels, of the box of an ``(H, W, 3)`` map's foreground (0 if empty)."""
    fg = iuv[..., 0] > 0
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    if not rows.size:
        return 0
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0])) + 1


# ----------------------------------------------------------------------------- U, V noise


def add_uv_noise(iuv: np.ndarray, sigma: float, rng: Any) -> np.ndarray:
    """Gaussian noise on U and V of the foreground (the paper's Figure 5).

    Args:
      iuv: ``(H, W, 3)`` uint8 IUV map.
      sigma: standard deviation, 0-255 scale.
      rng: numpy Generator or int seed; one ``(n, 2)`` float32 standard normal
        draw for the ``n`` foreground pixels in row-major order (none if
        ``sigma`` is 0).

    Returns:
      ``(H, W, 3)`` uint8: ``U, V + N(0, sigma^2)``, rounded and clipped to
      0..255, on pixels with ``I > 0``; I and the background unchanged.
    """
    iuv = _check_iuv(iuv)
    sigma = _check_sigma(sigma)
    rng = _generator(rng)
    out = iuv.copy()
    if sigma == 0:
        return out
    fg = np.flatnonzero(iuv[..., 0].reshape(-1))
    if not fg.size:
        return out
    flat = out.reshape(-1, 3)
    noisy = flat[fg, 1:] + rng.standard_normal((fg.size, 2), dtype=np.float32) * np.float32(sigma)
    flat[fg, 1:] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


def add_annotation_uv_noise(u: Any, v: Any, sigma: float, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """The same noise on dense-keypoint annotations (COCO-DensePose ``dp_U``, ``dp_V``).

    Args:
      u, v: ``(N,)`` chart coordinates in [0, 1] (same shape).
      sigma: standard deviation on the 0-255 scale, as :func:`add_uv_noise`.
      rng: numpy Generator or int seed; one ``(2, N)`` normal draw.

    Returns:
      ``u, v`` ``(N,)`` plus ``N(0, (sigma / 255)^2)``, clipped to [0, 1]; float
      inputs keep their dtype (others become float32); NaN stays NaN.
    """
    u, v = np.asarray(u), np.asarray(v)
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {u.shape} and {v.shape}")
    sigma = _check_sigma(sigma)
    rng = _generator(rng)
    dtype = u.dtype if np.issubdtype(u.dtype, np.floating) else np.float32
    if sigma == 0 or not u.size:
        return u.astype(dtype), v.astype(dtype)
    noise = rng.normal(0.0, sigma / 255.0, (2,) + u.shape)
    return (np.clip(u + noise[0], 0.0, 1.0).astype(dtype), np.clip(v + noise[1], 0.0, 1.0).astype(dtype))


# ----------------------------------------------------------------------------- the error model


def _swap_parts(iuv: np.ndarray, probability: float, rng: np.random.Generator,
                mirror: flip.ChartMirror | None) -> np.ndarray:
    """Swaps each present segment pair of :data:`SWAP_SEGMENTS` with ``probability`` (6 uniform draws)."""
    draws = rng.random(len(SWAP_SEGMENTS))
    present = np.bincount(iuv[..., 0].reshape(-1), minlength=NUM_PARTS + 1) > 0
    lut = np.arange(256, dtype=np.uint8)
    for segment, draw in zip(SWAP_SEGMENTS, draws):
        if draw < probability and present[list(segment)].any():
            lut[list(segment)] = [flip.DENSEPOSE_PART_FLIP[p] for p in segment]
    if np.array_equal(lut, np.arange(256)):
        return iuv
    part = iuv[..., 0]
    out = iuv.copy()
    out[..., 0] = cv2.LUT(part, lut)
    if mirror is not None:  # U, V of the swapped pixels move to the mirrored surface point.
        rows, cols = np.nonzero(lut[part] != part)
        old = part[rows, cols]
        out[rows, cols, 1:] = mirror.uv_table[old, iuv[rows, cols, 1], iuv[rows, cols, 2]]
    return out


def _shift_boundaries(iuv: np.ndarray, amplitude: float, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Resamples ``iuv`` (nearest) at ``x + d(x)``, ``d`` a smooth field of std ``amplitude`` px per axis."""
    height, width = iuv.shape[:2]
    grid_h, grid_w = max(2, round(height / cell) + 1), max(2, round(width / cell) + 1)
    control = rng.standard_normal((2, grid_h, grid_w)).astype(np.float32) * np.float32(amplitude)
    dx = cv2.resize(control[0], (width, height), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(control[1], (width, height), interpolation=cv2.INTER_CUBIC)
    dx += np.arange(width, dtype=np.float32)[None, :]
    dy += np.arange(height, dtype=np.float32)[:, None]
    return cv2.remap(iuv, dx, dy, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


def _add_blobs(iuv: np.ndarray, exact: np.ndarray, expected: float, radius: float, margin: float,
               rng: np.random.Generator) -> np.ndarray:
    """Paints ``Poisson(expected)`` random ellipses (random part, U, V) on background pixels near the person."""
    count = int(rng.poisson(expected))
    if not count:
        return iuv
    height, width = iuv.shape[:2]
    fg = exact[..., 0] > 0
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    r0, r1 = max(0, int(rows[0] - margin)), min(height, int(rows[-1] + 1 + margin))
    c0, c1 = max(0, int(cols[0] - margin)), min(width, int(cols[-1] + 1 + margin))
    out = iuv.copy()
    for _ in range(count):
        background = np.flatnonzero(out[r0:r1, c0:c1, 0] == 0)
        if not background.size:
            break
        row, col = np.divmod(background[rng.integers(background.size)], c1 - c0)
        size = radius * rng.uniform(*_BLOB_RADIUS_RANGE)
        axes = size * rng.uniform(*_BLOB_AXIS_RANGE, size=2)
        angle = rng.uniform(0.0, 180.0)
        value = np.array([rng.integers(1, NUM_PARTS + 1), *rng.integers(0, 256, size=2)], np.uint8)
        # Drawn in a window around the centre; sub-pixel axes in OpenCV's fixed point (shift=4: 1/16 px).
        reach = int(math.ceil(axes.max())) + 1
        row, col = r0 + int(row), c0 + int(col)
        top, left = max(0, row - reach), max(0, col - reach)
        window = out[top:row + reach + 1, left:col + reach + 1]
        mask = np.zeros(window.shape[:2], np.uint8)
        cv2.ellipse(mask, ((col - left) * 16, (row - top) * 16),
                    (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16)))), angle, 0, 360, 1, -1,
                    lineType=cv2.LINE_8, shift=4)
        window[(mask > 0) & (window[..., 0] == 0)] = value
    return out


def corrupt_iuv(iuv: np.ndarray, model: IUVErrorModel, rng: Any, *,
                mirror: flip.ChartMirror | flip.BodyMirror | None = None) -> np.ndarray:
    """An exact IUV map -> a DensePose-prediction-like one (see the module docstring).

    Args:
      iuv: ``(H, W, 3)`` uint8 exact map (I 0-24, U, V 0-255).
      model: the error levels.
      rng: numpy Generator or int seed; the output is a pure function of
        ``(iuv, model, rng state, mirror)``. Draws, in order: 6 uniforms
        (swaps, if ``part_swap``), the displacement field (if
        ``boundary_shift``), the blobs (if ``blobs``), the U, V noise (if
        ``uv_noise``).
      mirror: the chart's mirror (``flip.load_body_mirror(model, chart)`` or its
        ``chart_mirror``): swapped pixels then take the U, V of the mirrored
        surface point. Without it they keep their U, V, which for the default
        body's chart is the mirror within ~2.5 units on average (its left and
        right parts share one layout); DensePose's SMPL chart needs the mirror.

    Returns:
      ``(H, W, 3)`` uint8 map, a new array. An empty map (no foreground) or
      an all-zero model gives an unchanged copy.

    Errors:
      ValueError: ``iuv`` not ``(H, W, 3)`` uint8 with I in 0..24.
      TypeError: ``model`` not an :class:`IUVErrorModel`, ``rng`` not a
        Generator or int, ``mirror`` not a chart or body mirror.
    """
    iuv = _check_iuv(iuv)
    if not isinstance(model, IUVErrorModel):
        raise TypeError(f"model must be an IUVErrorModel, got {type(model).__name__}")
    rng = _generator(rng)
    if isinstance(mirror, flip.BodyMirror):
        mirror = mirror.chart_mirror
    if mirror is not None and not isinstance(mirror, flip.ChartMirror):
        raise TypeError(f"mirror must be a flip.ChartMirror or flip.BodyMirror, got {type(mirror).__name__}")
    size = person_size(iuv)
    if model.is_exact or not size:
        return iuv.copy()
    out = iuv
    if model.part_swap:
        out = _swap_parts(out, model.part_swap, rng, mirror)
    if model.boundary_shift:
        out = _shift_boundaries(out, model.boundary_shift * size, max(SHIFT_CELL * size, 2.0), rng)
    if model.blobs:
        out = _add_blobs(out, iuv, model.blobs, model.blob_size * size, BLOB_MARGIN * size, rng)
    if model.uv_noise:
        out = add_uv_noise(out, model.uv_noise, rng)
    return out.copy() if out is iuv else out


# ----------------------------------------------------------------------------- statistics


def part_error_stats(iuv: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """Statistics of a map against the exact one.

    Args:
      iuv: ``(H, W, 3)`` uint8 map (e.g. corrupted, or corrupted and refined).
      exact: ``(H, W, 3)`` uint8 exact map.

    Returns:
      Fractions of the exact foreground (``exact I > 0``; NaN if it is empty):
        * ``right_part``: foreground with the exact part;
        * ``wrong_part``: foreground with a different part (nonzero);
        * ``missed``: foreground that is background in ``iuv``
          (``right_part + wrong_part + missed = 1``);
        * ``false_positive``: pixels that are foreground in ``iuv`` but
          background in ``exact``, per exact foreground pixel;
      and ``u_error``, ``v_error``: mean ``|U - U_exact|``, ``|V - V_exact|``
      (0-255) over the pixels with the right part (NaN if none).
    """
    iuv, exact = _check_iuv(iuv), _check_iuv(exact, "exact")
    if iuv.shape != exact.shape:
        raise ValueError(f"iuv and exact must have the same shape, got {iuv.shape} and {exact.shape}")
    part, true = iuv[..., 0], exact[..., 0]
    fg, pred_fg = true > 0, part > 0
    num_fg = int(np.count_nonzero(fg))
    right = fg & (part == true)
    num_right = int(np.count_nonzero(right))
    denominator = num_fg if num_fg else np.nan
    if num_right:
        err = np.abs(iuv[right][:, 1:].astype(np.int16) - exact[right][:, 1:].astype(np.int16)).mean(0)
    else:
        err = np.full(2, np.nan)
    return {
        "right_part": num_right / denominator,
        "wrong_part": int(np.count_nonzero(fg & pred_fg & (part != true))) / denominator,
        "missed": int(np.count_nonzero(fg & ~pred_fg)) / denominator,
        "false_positive": int(np.count_nonzero(pred_fg & ~fg)) / denominator,
        "u_error": float(err[0]),
        "v_error": float(err[1]),
    }
