"""Input pipeline: dataset records -> fixed-shape training / evaluation examples (grain).

Records (``dct_jax.data.schema``) are read from a TFDS ``array_record`` data
source (no TensorFlow), turned into examples by :class:`ProcessRecord` and
batched by grain. One example (all numpy, fixed shapes; ``S`` the image size,
``N`` the dense keypoints per example):

  ``image``               ``(S, S, 3)`` uint8 RGB crop (zero-padded where the crop leaves the image),
                          if asked for
  ``iuv``                 ``(S, S, 3)`` uint8 IUV crop (I, 255 U, 255 V), if asked for
  ``segmentation``        ``(S, S)`` uint8 part crop, if asked for
  ``keypoints``           ``(19, 2)`` float32 cocoplus19 keypoints, normalized crop coordinates
  ``keypoints_weight``    ``(19,)`` float32: 1 where labelled (visibility > 0)
  ``smpl_pose``           ``(72,)``, ``smpl_betas`` ``(10,)`` float32, ``has_smpl`` float32;
                          ``smpl_pose_weight``, ``smpl_betas_weight`` float32: 1 where that part of the
                          SMPL label supervises (a source labelled ``3d=pose`` or ``3d=shape`` has one 0)
  ``joints``              ``(24, 3)`` float32 posed joints (camera frame), ``has_joints``
  ``keypoints3d``         ``(19, 3)`` float32 cocoplus19 3D keypoints (camera frame, metres),
                          ``keypoints3d_weight`` ``(19,)`` (1 where labelled), ``has_keypoints3d``
  ``gender``              int32 :data:`GENDER_CODES` of the record's ``gender`` (0 unknown/neutral)
  ``camera``              ``(3,)`` float32 weak-perspective camera of *this* crop, ``has_camera``
  ``dense_xy``            ``(N, 2)`` float32 normalized crop coordinates of the dense keypoints
  ``dense_vertex_ids``    ``(N, 3)`` int32, ``dense_barycentric`` ``(N, 3)`` float32: their
                          surface points (phi), ``dense_weight`` ``(N,)`` (0 = padding)
  ``has_dense``           float32
  ``valid``               float32: 0 for a skipped (corrupt) record or eval padding
  ``skipped``             float32: 1 for a record that could not be used
  ``record_index``        int64 index of the record in its split
  ``image_id``            str (the source image; people in one image share it)
  ``error``               str, why a record was skipped ("" otherwise)

The ``has_*`` flags and weights are per example so that one batch mixes
supervision kinds; the losses mask with them.

Augmentation (training): the record's ``crop_box`` is scaled by
``U(1 - scale_jitter, 1 + scale_jitter)`` and shifted by up to
``translate_jitter`` of its side; then with probability ``flip_prob`` every
field is mirrored consistently (``dct_jax.data.flip``). Evaluation uses the
crop box as it is. Given the seed, every example is a pure function of
(seed, position in the stream): grain derives each example's generator.

A record that fails to read, decode or validate does not stop the run: it
becomes an example with ``valid = 0``, ``skipped = 1`` and its ``error``, which
the losses ignore and the trainer counts and logs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import zlib
from typing import Any, Mapping, NamedTuple, Sequence

import cv2
import grain
import numpy as np
from absl import logging

from dct_jax import densepose
from dct_jax import keypoints as keypoints_lib
from dct_jax.data import schema

INPUT_KINDS = ("image", "iuv", "segmentation")
DENSE_SOURCES = ("auto", "annotation", "iuv", "none")
_STR_KEYS = ("image_id", "error")
GENDER_CODES = {"": 0, "neutral": 0, "male": 1, "female": 2}
# Which part of a record's SMPL label supervises (ExampleSpec.smpl_terms).
SMPL_TERMS = ("all", "pose", "shape")
# What bad data raises (a corrupt or inconsistent record); anything else is a bug and propagates.
DATA_ERRORS = (ValueError, KeyError, IndexError, OSError, EOFError, cv2.error)


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What :class:`ProcessRecord` makes.

    Attributes:
      image_size: side ``S`` of the square crops.
      inputs: which image-like fields to decode and crop (``image``, ``iuv``,
        ``segmentation``: what the model takes).
      num_dense: dense keypoints per example ``N`` (official: 400).
      dense_source: ``"annotation"`` (the record's ``dp_*``), ``"iuv"`` (sampled
        from the record's IUV map after the paper's refinement), ``"auto"``
        (annotation if present, else IUV), ``"none"``.
      refine_iuv: refine the IUV map (paper Sec. 3.2, guided by the visible
        keypoints, visibility 2) before using it as input and before sampling
        dense keypoints from it.
      smpl_fraction: keep the 3D labels (``has_smpl``, ``has_joints``,
        ``has_keypoints3d``) on this fraction of records, chosen by record id (stable across runs; Table 3's "20% 3D" is 0.2).
      smpl_terms: which part of the SMPL label supervises: ``"all"``, ``"pose"``
        (the betas term weighs 0) or ``"shape"`` (the pose term weighs 0); with
        ``"pose"`` or ``"shape"`` the 3D joints and 3D keypoints, which carry
        both, are not used (the paper's Table 4).
      scale_jitter, translate_jitter, flip_prob: training augmentation.
      smpl_path: the SMPL model file for records with ``body_model == "smpl"``
        (needed to flip them: the vertex mirror comes from the template).
      use_keypoints: keep the records' 2D keypoints as supervision (else their
        weights are 0; a mixture source without the ``2d`` label).
      keypoint_subset: a name of ``keypoints.COCOPLUS19_SUBSETS``: only those
        keypoints count as labelled (e.g. ``"lsp14"``, UP-3D's 14 joints).
      keypoint_noise: annotation-like noise on the 2D keypoints, in units of
        COCO's annotator standard deviations (:func:`annotation_noise`; 0: exact).
      dense_keep: keep this fraction of a record's dense keypoints (``round(keep * n)``
        of its ``n``, a fixed subset chosen by record id; the paper's Figure 6).
      dense_uv_noise: Gaussian noise of this standard deviation (0-255 scale) on
        the U, V of the dense keypoints' source (an annotation's ``dp_U``,
        ``dp_V`` or the IUV map they are sampled from; not the IUV input), fixed
        per record (the paper's Figure 5).
      iuv_errors: a :class:`dct_jax.iuv_errors.IUVErrorModel` applied to every
        record's IUV map (fixed per record) before refinement, as input and as
        dense source: a DensePose-like prediction from an exact map; None: as stored.
      normalize_point_weights: scale each example's keypoint and dense-point
        weights by (slots / points it has), as the official data loader
        (``data_preprocess.py``): the losses' mean over all slots is then each
        example's mean over its own points, not diluted by missing keypoints or
        by the padding of dense keypoints to ``num_dense``.
    """

    image_size: int = 224
    inputs: tuple[str, ...] = ("image",)
    num_dense: int = 400
    dense_source: str = "auto"
    refine_iuv: bool = True
    smpl_fraction: float = 1.0
    scale_jitter: float = 0.0
    translate_jitter: float = 0.0
    flip_prob: float = 0.0
    smpl_path: str | None = None
    use_keypoints: bool = True
    normalize_point_weights: bool = True
    keypoint_subset: str = "all"
    keypoint_noise: float = 0.0
    smpl_terms: str = "all"
    dense_keep: float = 1.0
    dense_uv_noise: float = 0.0
    iuv_errors: Any = None

    def __post_init__(self):
        unknown = sorted(set(self.inputs) - set(INPUT_KINDS))
        if unknown:
            raise ValueError(f"unknown inputs {unknown}; expected some of {INPUT_KINDS}")
        if self.dense_source not in DENSE_SOURCES:
            raise ValueError(f"dense_source must be one of {DENSE_SOURCES}, got {self.dense_source!r}")
        if self.image_size < 16 or self.num_dense < 1:
            raise ValueError(f"need image_size >= 16 and num_dense >= 1, got {self.image_size}, {self.num_dense}")
        if not 0.0 <= self.smpl_fraction <= 1.0 or not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError("smpl_fraction and flip_prob must be in [0, 1]")
        if not 0.0 <= self.scale_jitter < 1.0 or self.translate_jitter < 0.0:
            raise ValueError("need 0 <= scale_jitter < 1 and translate_jitter >= 0")
        if self.keypoint_subset not in keypoints_lib.COCOPLUS19_SUBSETS:
            raise ValueError(f"keypoint_subset must be one of {sorted(keypoints_lib.COCOPLUS19_SUBSETS)}, "
                             f"got {self.keypoint_subset!r}")
        if not self.keypoint_noise >= 0.0:
            raise ValueError(f"keypoint_noise must be >= 0, got {self.keypoint_noise}")
        if self.smpl_terms not in SMPL_TERMS:
            raise ValueError(f"smpl_terms must be one of {SMPL_TERMS}, got {self.smpl_terms!r}")
        if not 0.0 <= self.dense_keep <= 1.0:
            raise ValueError(f"dense_keep must be in [0, 1], got {self.dense_keep}")
        if not self.dense_uv_noise >= 0.0:
            raise ValueError(f"dense_uv_noise must be >= 0 (a standard deviation, 0-255 scale), "
                             f"got {self.dense_uv_noise}")

    def without_augmentation(self) -> "ExampleSpec":
        return dataclasses.replace(self, scale_jitter=0.0, translate_jitter=0.0, flip_prob=0.0)


# ----------------------------------------------------------------------------- body assets


@dataclasses.dataclass(frozen=True, eq=False)
class BodyAssets:
    """What examples of one body model need: its chart (phi) and mirror (flip)."""

    chart: densepose.Chart
    mirror: Any  # dct_jax.data.flip.BodyMirror, built on first use


_BODY_ASSETS_LOCK = threading.Lock()


def body_assets(body_model: str, smpl_path: str | None = None, with_mirror: bool = True) -> BodyAssets:
    """The chart and mirror of ``body_model`` (cached per process).

    Thread-safe: grain's read threads that meet their first records together
    wait for one load instead of each building the mirror (seconds of CPU),
    and never run ``np.load`` concurrently (whose header parsing can fail in
    CPython 3.11: "AST constructor recursion depth mismatch").
    """
    with _BODY_ASSETS_LOCK:
        return _load_body_assets(body_model, smpl_path, with_mirror)


@functools.lru_cache(maxsize=4)
def _load_body_assets(body_model: str, smpl_path: str | None, with_mirror: bool) -> BodyAssets:
    chart = densepose.load_chart(body_model)
    mirror = None
    if with_mirror:
        from dct_jax import smpl  # noqa: PLC0415
        from dct_jax.data import flip  # noqa: PLC0415

        if body_model == "smpl" and smpl_path is None:
            raise ValueError("flipping SMPL records needs the SMPL model: set config.smpl_path "
                             "(or config.data.flip_prob = 0)")
        model = smpl.load(smpl_path if body_model == "smpl" else None)
        mirror = flip.load_body_mirror(model, chart)
    return BodyAssets(chart=chart, mirror=mirror)


# ----------------------------------------------------------------------------- geometry


def jitter_crop_box(crop_box: np.ndarray, rng: np.random.Generator, *, scale_jitter: float,
                    translate_jitter: float) -> np.ndarray:
    """``[x0, y0, side]`` -> a randomly scaled and shifted square (same centre without jitter)."""
    x0, y0, side = (float(v) for v in crop_box)
    cx, cy = x0 + 0.5 * side, y0 + 0.5 * side
    if scale_jitter:
        side *= rng.uniform(1.0 - scale_jitter, 1.0 + scale_jitter)
    if translate_jitter:
        cx += rng.uniform(-translate_jitter, translate_jitter) * side
        cy += rng.uniform(-translate_jitter, translate_jitter) * side
    return np.array([cx - 0.5 * side, cy - 0.5 * side, side], np.float64)


def crop_camera(camera: np.ndarray, old_box: np.ndarray, new_box: np.ndarray) -> np.ndarray:
    """A weak-perspective camera of crop ``old_box`` re-expressed for crop ``new_box``.

    A point at normalized ``u`` of the old crop is at ``u * k + c`` of the new
    one (``k = side / side'``, ``c = (side + 2 (x0 - x0')) / side' - 1``), so
    ``s' = s k`` and ``t' = t + c / (s k)`` per axis.
    """
    s, tx, ty = (float(v) for v in camera)
    x0, y0, side = (float(v) for v in old_box)
    nx0, ny0, nside = (float(v) for v in new_box)
    k = side / nside
    cx = (side + 2.0 * (x0 - nx0)) / nside - 1.0
    cy = (side + 2.0 * (y0 - ny0)) / nside - 1.0
    scale = s * k
    if abs(scale) < 1e-12:
        raise ValueError(f"camera scale {s} is zero")
    return np.array([scale, tx + cx / scale, ty + cy / scale], np.float32)


def crop_image(image: np.ndarray, crop_box: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """The square ``crop_box`` of ``image`` resized to ``size`` pixels, zero outside the image.

    Pixel centres follow ``dct_jax.camera`` (pixel ``j`` covers ``[j, j + 1)``).
    Bilinear (box-filtered first when shrinking by more than 1.5x) or nearest.
    """
    x0, y0, side = (float(v) for v in crop_box)
    scale = size / side
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    if not nearest and scale < 1.0 / 1.5:
        # Cut at native resolution, then area-average down (no aliasing).
        native = max(int(np.ceil(side)), size)
        image = _warp(image, x0, y0, native / side, native, cv2.INTER_LINEAR)
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return _warp(image, x0, y0, scale, size, interpolation)


def _warp(image: np.ndarray, x0: float, y0: float, scale: float, size: int, interpolation: int) -> np.ndarray:
    # Continuous out = scale * (in - x0); OpenCV samples at integer indices (pixel centres).
    offset = 0.5 * scale - 0.5
    matrix = np.array([[scale, 0.0, offset - scale * x0], [0.0, scale, offset - scale * y0]], np.float64)
    rgb = image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and interpolation == cv2.INTER_LINEAR
    if rgb:  # OpenCV's bilinear warp is ~1.7x faster on 4 channels; the same values per channel.
        image = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    out = cv2.warpAffine(image, matrix, (size, size), flags=interpolation,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB) if rgb else out


def in_smpl_subset(record_id: str, fraction: float) -> bool:
    """Whether a record keeps its 3D labels when only ``fraction`` of records do (by id)."""
    if fraction >= 1.0:
        return True
    return (zlib.crc32(record_id.encode()) % 10_000) < round(fraction * 10_000)


def annotation_noise(record_id: str, bbox: np.ndarray, multiplier: float) -> np.ndarray:
    """``(19, 2)`` float32 pixel offsets like human annotators' errors, fixed per record.

    Each coordinate of keypoint ``k`` is ``N(0, (multiplier * sigma_k * scale)^2)``
    with ``sigma_k`` COCO's annotator standard deviation of that keypoint
    (``keypoints.COCOPLUS19_ANNOTATION_SIGMAS``) and ``scale`` the square root of
    the area of the person's box ``bbox = [x, y, w, h]``. The draw depends only on
    the record id, as an annotation is made once, not anew every epoch.
    """
    sigmas = np.asarray(keypoints_lib.COCOPLUS19_ANNOTATION_SIGMAS, np.float64)
    width, height = (float(v) for v in np.asarray(bbox, np.float64)[2:4])
    scale = np.sqrt(max(width * height, 0.0))
    rng = record_rng(record_id, _ANNOTATION_NOISE)
    return (rng.standard_normal((sigmas.size, 2)) * (multiplier * scale * sigmas)[:, None]).astype(np.float32)


# Streams of record_rng: each a record's fixed draw for one purpose.
_ANNOTATION_NOISE, _IUV_ERRORS, _UV_NOISE, _DENSE_KEEP = 2, 3, 4, 5


def record_rng(record_id: str, stream: int) -> np.random.Generator:
    """A generator fixed by the record id (and the purpose ``stream``): the same every epoch and run,
    as a label made once (an annotation, a DensePose prediction) is."""
    return np.random.default_rng([zlib.crc32(record_id.encode()), stream])


def keep_fraction(weight: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``(N,)`` weights with all but ``round(fraction * n)`` of the ``n`` nonzero ones set to 0 (chosen by ``rng``)."""
    weight = np.array(weight, np.float32)
    points = np.flatnonzero(weight)
    dropped = rng.permutation(points)[int(round(fraction * points.size)):]
    weight[dropped] = 0.0
    return weight


def per_example_mean_weights(weight: np.ndarray) -> np.ndarray:
    """``(N,)`` point weights times ``N / (number of nonzero weights)`` (unchanged if all are 0).

    The official loader's normalization (``data_preprocess.py``: keypoints x K /
    visible, dense points x dp_num_max / valid): a loss that averages over all
    ``N`` slots then averages over the example's own points.
    """
    weight = np.asarray(weight, np.float32)
    count = np.count_nonzero(weight)
    return weight * np.float32(weight.size / count) if count else weight


# ----------------------------------------------------------------------------- transforms


def empty_example(spec: ExampleSpec) -> dict[str, Any]:
    """An all-zero example with ``valid = 0`` (the shape every example has)."""
    s, n = spec.image_size, spec.num_dense
    example = {
        "keypoints": np.zeros((schema.NUM_KEYPOINTS, 2), np.float32),
        "keypoints_weight": np.zeros((schema.NUM_KEYPOINTS,), np.float32),
        "smpl_pose": np.zeros((schema.NUM_POSE,), np.float32),
        "smpl_betas": np.zeros((schema.NUM_BETAS,), np.float32),
        "has_smpl": np.float32(0),
        "smpl_pose_weight": np.float32(1),  # weigh the SMPL term where has_smpl (3d=pose|shape: one is 0)
        "smpl_betas_weight": np.float32(1),
        "joints": np.zeros((schema.NUM_JOINTS, 3), np.float32),
        "has_joints": np.float32(0),
        "keypoints3d": np.zeros((schema.NUM_KEYPOINTS, 3), np.float32),
        "keypoints3d_weight": np.zeros((schema.NUM_KEYPOINTS,), np.float32),
        "has_keypoints3d": np.float32(0),
        "gender": np.int32(0),
        "camera": np.zeros((3,), np.float32),
        "has_camera": np.float32(0),
        "dense_xy": np.zeros((n, 2), np.float32),
        "dense_vertex_ids": np.zeros((n, 3), np.int32),
        "dense_barycentric": np.zeros((n, 3), np.float32),
        "dense_weight": np.zeros((n,), np.float32),
        "has_dense": np.float32(0),
        "valid": np.float32(0),
        "skipped": np.float32(0),
        "record_index": np.int64(-1),
        "image_id": "",
        "error": "",
    }
    if "image" in spec.inputs:
        example["image"] = np.zeros((s, s, 3), np.uint8)
    if "iuv" in spec.inputs:
        example["iuv"] = np.zeros((s, s, 3), np.uint8)
    if "segmentation" in spec.inputs:
        example["segmentation"] = np.zeros((s, s), np.uint8)
    return example


class IndexedSource:
    """A data source whose items are ``(index, record or exception text)``: reading never raises."""

    def __init__(self, source: Any):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        index = int(index)
        try:
            return index, self._source[index]
        except Exception as err:  # noqa: BLE001  (a corrupt record must not stop the run)
            return index, f"unreadable record: {type(err).__name__}: {err}"


def _record_text(record: Mapping[str, Any], name: str) -> str:
    """A text field of a record (str, or bytes as TFDS reads it back)."""
    value = record[name]
    return value.decode() if isinstance(value, bytes) else str(value)


# Record fields holding encoded images: PreparedRecord holds them decoded instead.
_ENCODED_FIELDS = ("image", "iuv", "segmentation")


class PreparedRecord(NamedTuple):
    """A record checked and decoded for one :class:`ExampleSpec` (:meth:`ProcessRecord.prepare`).

    ``fields`` are the record's fields but the encoded images, whose decoded
    arrays (None where the spec does not use them) follow: ``image`` ``(H, W, 3)``
    RGB, ``iuv`` ``(H, W, 3)`` (a DensePose-like prediction and refined, as the
    spec says), ``segmentation`` ``(H, W)``; ``keypoints_px`` ``(19, 2)`` with the
    spec's annotation noise, ``visibility`` ``(19,)`` restricted to its subset.
    """

    fields: dict[str, Any]
    record_id: str
    body_model: str
    image: np.ndarray | None
    iuv: np.ndarray | None
    segmentation: np.ndarray | None
    keypoints_px: np.ndarray
    visibility: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes held by its arrays (what a cache of it costs)."""
        arrays = [self.image, self.iuv, self.segmentation, self.keypoints_px, self.visibility]
        arrays += list(self.fields.values())
        return sum(a.nbytes if isinstance(a, np.ndarray) else len(a) if isinstance(a, bytes) else 8 for a in arrays)


class PreparedSource:
    """A data source whose items are ``(index, PreparedRecord)``, kept in memory up to ``cache_bytes``.

    A training run reads each record once per epoch; reading, checking and
    decoding it is the same work every time (on the quickstart's synthetic
    data 60% of the input pipeline's time: 2.7 of 4.4 ms per example). This
    source does it once per record and process, and keeps the result while the
    cache has room (first come, first kept; each worker process has its own).
    A record that cannot be read is ``(index, reason)``; one that fails
    :meth:`ProcessRecord.prepare` is passed on as read (not kept), so that
    :meth:`ProcessRecord.random_map` skips it with its reason, as it would
    without the cache.
    """

    def __init__(self, source: Any, process: "ProcessRecord", *, cache_bytes: int):
        self._source = IndexedSource(source)
        self._process = process
        self._cache_bytes = int(cache_bytes)
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: dict[int, PreparedRecord] = {}
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # to worker processes: without the cache and its lock
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_cached_bytes", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def __len__(self) -> int:
        return len(self._source)

    @property
    def cached_records(self) -> int:
        return len(self._cache)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        index = int(index)
        prepared = self._cache.get(index)
        if prepared is not None:
            return index, prepared
        index, record = self._source[index]
        if isinstance(record, str):
            return index, record
        try:
            prepared = self._process.prepare(record)
        except DATA_ERRORS:
            return index, record  # ProcessRecord.random_map says why
        size = prepared.nbytes
        with self._lock:
            if index not in self._cache and self._cached_bytes + size <= self._cache_bytes:
                self._cache[index] = prepared
                self._cached_bytes += size
        return index, prepared


class ProcessRecord(grain.transforms.RandomMap):
    """``(index, record)`` -> example (see the module docstring); never raises on bad data."""

    def __init__(self, spec: ExampleSpec, *, train: bool):
        self.spec = spec if train else spec.without_augmentation()
        self.train = train

    def random_map(self, item: tuple[int, Any], rng: np.random.Generator) -> dict[str, Any]:
        index, record = item
        try:
            if isinstance(record, str):
                raise ValueError(record)
            return self.process(record, rng, index=index)
        except DATA_ERRORS as err:
            example = empty_example(self.spec)
            rid = (record.record_id if isinstance(record, PreparedRecord)
                   else record.get("record_id", b"?") if isinstance(record, Mapping) else b"?")
            rid = rid.decode(errors="replace") if isinstance(rid, bytes) else str(rid)
            example.update(skipped=np.float32(1), record_index=np.int64(index),
                           error=f"record {index} ({rid}): {type(err).__name__}: {err}")
            return example

    def prepare(self, record: Mapping[str, Any]) -> "PreparedRecord":
        """The part of :meth:`process` that depends on the record alone: checked and decoded.

        Upgrades and validates the record, decodes the images the spec uses and
        makes the IUV map a DensePose-like prediction and refines it if asked.
        The result is the same every time (what :class:`PreparedSource` caches);
        its arrays are read-only.

        Raises:
          ValueError (or another of :data:`DATA_ERRORS`): a bad record.
        """
        spec = self.spec
        record = {k: (v.item() if isinstance(v, np.ndarray) and v.dtype == object and v.ndim == 0 else v)
                  for k, v in record.items()}
        record = schema.upgrade_record(record)
        schema.validate_record(record)
        record_id, body_model = _record_text(record, "record_id"), _record_text(record, "body_model")
        height, width = (int(v) for v in np.asarray(record["image_shape"]))

        image = None
        if "image" in spec.inputs:
            image = schema.decode_image(record["image"])
            if image.shape[:2] != (height, width):
                raise ValueError(f"image decodes to {image.shape[:2]}, record says {(height, width)}")

        has_kp = bool(record["has_keypoints"])
        keypoints_px = np.asarray(record["keypoints"], np.float32)
        visibility = np.asarray(record["keypoints_visibility"])
        if spec.keypoint_subset != "all":  # a dataset that labels only these keypoints
            labelled = np.zeros(visibility.shape, bool)
            labelled[list(keypoints_lib.COCOPLUS19_SUBSETS[spec.keypoint_subset])] = True
            visibility = np.where(labelled, visibility, 0)
        if has_kp and spec.keypoint_noise:  # as annotators would have placed them
            keypoints_px = keypoints_px + annotation_noise(record_id, record["bbox"], spec.keypoint_noise)

        iuv_full = None
        # Decoded (and refined) only if used: as an input, or as the dense keypoints' source
        # (see _dense: "auto" prefers a record's annotation).
        iuv_for_dense = bool(body_model) and (spec.dense_source == "iuv" or (
            spec.dense_source == "auto" and not record["has_dense"]))
        if record["has_iuv"] and ("iuv" in spec.inputs or iuv_for_dense):
            iuv_full = schema.decode_iuv(record["iuv"])
            if iuv_full.shape[:2] != (height, width):
                raise ValueError(f"iuv is {iuv_full.shape[:2]}, image {(height, width)}")
            if spec.iuv_errors is not None:  # as a DensePose prediction would be, made once per record
                from dct_jax import iuv_errors  # noqa: PLC0415

                # Swapped parts take mirrored U, V where the body's mirror can be had (SMPL needs its file).
                mirror = (body_assets(body_model, spec.smpl_path).mirror
                          if body_model and (body_model != "smpl" or spec.smpl_path) else None)
                iuv_full = iuv_errors.corrupt_iuv(iuv_full, spec.iuv_errors, record_rng(record_id, _IUV_ERRORS),
                                                  mirror=mirror)
            if spec.refine_iuv and has_kp:
                # "For each visible 2D keypoint" (Sec. 3.2): an occluded one lies on the part in front of it.
                visible = np.where(visibility >= schema.VISIBILITY_VISIBLE, visibility, 0)
                iuv_full = densepose.refine_iuv(iuv_full, keypoints_px, visible)
        if "iuv" in spec.inputs and iuv_full is None:
            raise ValueError("the model takes an IUV input but the record has none (has_iuv False)")
        segmentation = None
        if "segmentation" in spec.inputs:
            if not record["has_segmentation"]:
                raise ValueError("the model takes a segmentation input but the record has none")
            segmentation = schema.decode_segmentation(record["segmentation"])

        fields = {k: v for k, v in record.items() if k not in _ENCODED_FIELDS}  # decoded above
        arrays = [image, iuv_full, segmentation, keypoints_px, visibility] + list(fields.values())
        for array in arrays:
            if isinstance(array, np.ndarray):
                array.flags.writeable = False  # shared by every use of a cached record
        return PreparedRecord(fields, record_id, body_model, image, iuv_full, segmentation, keypoints_px, visibility)

    def process(self, record: "Mapping[str, Any] | PreparedRecord", rng: np.random.Generator, *,
                index: int = -1) -> dict[str, Any]:
        """One record (raw or :meth:`prepare`-d) -> one example (raises ``ValueError`` on a bad record)."""
        spec = self.spec
        prepared = record if isinstance(record, PreparedRecord) else self.prepare(record)
        record, record_id, body_model = prepared.fields, prepared.record_id, prepared.body_model

        box = np.asarray(record["crop_box"], np.float64)
        if self.train:
            box = jitter_crop_box(box, rng, scale_jitter=spec.scale_jitter,
                                  translate_jitter=spec.translate_jitter)
        size = spec.image_size
        example = empty_example(spec)
        example.update(valid=np.float32(1), record_index=np.int64(index), image_id=_record_text(record, "image_id"))
        if prepared.image is not None:
            example["image"] = crop_image(prepared.image, box, size)

        has_kp = bool(record["has_keypoints"])
        if has_kp and spec.use_keypoints:
            example["keypoints"] = schema.image_to_crop(prepared.keypoints_px, box)
            example["keypoints_weight"] = self._point_weights(prepared.visibility > 0)

        iuv_full = prepared.iuv
        if "iuv" in spec.inputs:
            example["iuv"] = crop_image(iuv_full, box, size, nearest=True)
        if prepared.segmentation is not None:
            example["segmentation"] = crop_image(prepared.segmentation, box, size, nearest=True)

        keep_3d = in_smpl_subset(record_id, spec.smpl_fraction)
        if record["has_smpl"] and keep_3d:
            example.update(smpl_pose=np.asarray(record["smpl_pose"], np.float32),
                           smpl_betas=np.asarray(record["smpl_betas"], np.float32), has_smpl=np.float32(1),
                           smpl_pose_weight=np.float32(spec.smpl_terms != "shape"),
                           smpl_betas_weight=np.float32(spec.smpl_terms != "pose"))
        keep_3d_points = keep_3d and spec.smpl_terms == "all"  # joints carry pose and shape
        if record["has_mesh"] and keep_3d_points:
            example.update(joints=np.asarray(record["joints"], np.float32), has_joints=np.float32(1))
        if record["has_keypoints3d"] and keep_3d_points:
            example.update(keypoints3d=np.asarray(record["keypoints3d"], np.float32),
                           keypoints3d_weight=(np.asarray(record["keypoints3d_visibility"]) > 0).astype(np.float32),
                           has_keypoints3d=np.float32(1))
        example["gender"] = np.int32(GENDER_CODES[_record_text(record, "gender")])
        if record["has_camera"]:
            example.update(camera=crop_camera(record["camera"], record["crop_box"], box),
                           has_camera=np.float32(1))

        dense = self._dense(record, iuv_full, body_model, rng, record_id)
        if dense is not None:
            xy, points, weight = dense
            if spec.dense_keep < 1.0:
                weight = keep_fraction(weight, spec.dense_keep, record_rng(record_id, _DENSE_KEEP))
            example.update(dense_xy=schema.image_to_crop(xy, box),
                           dense_vertex_ids=points.vertex_ids.astype(np.int32),
                           dense_barycentric=points.barycentric.astype(np.float32),
                           dense_weight=self._point_weights(weight),
                           has_dense=np.float32(weight.sum() > 0))

        if self.train and spec.flip_prob and rng.random() < spec.flip_prob:
            from dct_jax.data import flip  # noqa: PLC0415

            # A record without a body model (e.g. Human3.6M motion capture without SMPL fits)
            # has no vertices, surface points or IUV: the default body's mirror flips the rest
            # (keypoints by name, part labels by DensePose's left/right swap).
            mirror = body_assets(body_model or "default", spec.smpl_path).mirror
            example = flip.flip_example(example, mirror)
        return example

    def _point_weights(self, weight: np.ndarray) -> np.ndarray:
        """``(N,)`` float32 point weights, normalized per example if the spec says so."""
        weight = np.asarray(weight, np.float32)
        return per_example_mean_weights(weight) if self.spec.normalize_point_weights else weight

    def _dense(self, record, iuv_full, body_model: str, rng: np.random.Generator, record_id: str):
        source = self.spec.dense_source
        if source == "none" or not body_model:
            return None
        use_annotation = bool(record["has_dense"]) and source in ("annotation", "auto")
        use_iuv = not use_annotation and iuv_full is not None and source in ("iuv", "auto")
        if not (use_annotation or use_iuv):
            return None
        chart = body_assets(body_model, self.spec.smpl_path, with_mirror=False).chart
        sigma = self.spec.dense_uv_noise
        if sigma:
            from dct_jax import iuv_errors  # noqa: PLC0415
        if use_annotation:
            annotation = {k: record[k] for k in schema.DENSE_FIELDS}
            annotation["bbox"] = record["bbox"]
            if sigma:
                annotation["dp_U"], annotation["dp_V"] = iuv_errors.add_annotation_uv_noise(
                    annotation["dp_U"], annotation["dp_V"], sigma, record_rng(record_id, _UV_NOISE))
            return densepose.sample_dense_keypoints(chart, annotation, num=self.spec.num_dense, rng=rng)
        if sigma:
            iuv_full = iuv_errors.add_uv_noise(iuv_full, sigma, record_rng(record_id, _UV_NOISE))
        return densepose.sample_dense_keypoints(chart, iuv_full, num=self.spec.num_dense, rng=rng)


# ----------------------------------------------------------------------------- datasets


def load_source(dataset: str, *, data_dir: str | None, split: str):
    """The TFDS ``array_record`` data source of ``dataset``'s ``split`` (no TensorFlow).

    ``dataset`` is a builder name of ``datasets/`` or a built directory
    (``D/NAME/VERSION``).

    Raises:
      ValueError: unknown dataset, not built, or no such split; the message
        says what to do.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415

    if os.path.isdir(dataset):
        builder = tfds.builder_from_directory(dataset)
    else:
        import datasets as datasets_lib  # noqa: PLC0415  (registers the builders)

        builder_cls = datasets_lib.builder_class(dataset)  # ValueError lists the names
        kwargs = {} if data_dir is None else {"data_dir": os.path.expanduser(data_dir)}
        builder = builder_cls(**kwargs)
        if not builder.is_prepared():
            raise ValueError(
                f"dataset {dataset!r} is not built in {builder.data_dir}; build it with "
                f"`python -m datasets build {dataset} --data_dir={data_dir or '~/tensorflow_datasets'}`")
    splits = sorted(builder.info.splits.keys())
    if split not in splits:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; it has {splits}")
    return builder.as_data_source(split=split)


def train_dataset(source: Any, spec: ExampleSpec | Sequence[ExampleSpec], *, batch_size: int, seed: int,
                  shard_index: int = 0, shard_count: int = 1,
                  weights: Sequence[float] | None = None, cache_bytes: int = 0) -> grain.MapDataset:
    """Shuffled (every epoch anew), repeated, augmented batches: one process's rows of each global batch.

    The example stream (order and augmentation) is a function of ``seed``
    alone; it is cut into batches of ``batch_size`` (the per-process batch) and
    process ``shard_index`` of ``shard_count`` takes every ``shard_count``-th of
    them, so global batch ``k`` is the ``k``-th ``shard_count * batch_size``
    examples of the stream whatever the number of processes (each process
    reads and decodes only its own rows).

    ``source`` is one data source or a sequence of them (a mixture, e.g. UP-3D +
    COCO-DensePose + Human3.6M); each is shuffled and repeated on its own and
    examples are drawn from them in proportion to ``weights`` (default equal),
    so one batch mixes supervision kinds (the ``has_*`` flags per example).
    ``spec`` is one spec for every source or one per source
    (:meth:`MixtureSource.example_spec`: what each source supervises).
    Each source keeps up to ``cache_bytes`` of its records checked and decoded
    in memory (:class:`PreparedSource`; per process, worker processes each
    their own); the examples do not depend on it.
    """
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec] * len(sources)
    if len(specs) != len(sources):
        raise ValueError(f"{len(specs)} example specs for {len(sources)} sources")
    if weights is not None and len(weights) != len(sources):
        raise ValueError(f"{len(weights)} mixture weights for {len(sources)} sources")
    if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"mixture weights must be non-negative with a positive sum, got {list(weights)}")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in [0, {shard_count})")
    parts = []
    for i, part in enumerate(sources):
        process = ProcessRecord(specs[i], train=True)
        ds = grain.MapDataset.source(PreparedSource(part, process, cache_bytes=cache_bytes))
        if len(ds) == 0:
            raise ValueError(f"the training split of source {i} is empty")
        ds = ds.shuffle(seed=seed + i).repeat(None)
        parts.append(ds.random_map(process, seed=seed + i))
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, None if weights is None else list(weights))
    ds = ds.batch(batch_size, drop_remainder=True, batch_fn=stack_examples)
    return ds[shard_index::shard_count] if shard_count > 1 else ds


# Labels a mixture source can supervise with (``NAME[:SPLIT][=WEIGHT][LABELS]``).
MIXTURE_LABELS = ("2d", "3d", "dense")


@dataclasses.dataclass(frozen=True)
class MixtureSource:
    """One source of a training mixture: which records, how often, and what they supervise.

    Attributes:
      name: a builder name of ``datasets/`` or a built directory.
      split: its split.
      weight: relative sampling weight (>= 0).
      labels: the supervision its records contribute, a subset of
        :data:`MIXTURE_LABELS` (``2d`` keypoints; ``3d``: SMPL pose and shape,
        3D joints and 3D keypoints; ``dense`` keypoints), each used where a
        record has it; ``None``: every label the records have, with
        ``config.data.smpl_fraction`` (the form without brackets).
      fraction_3d: with ``3d``, the fraction of records (a fixed subset chosen
        by record id, :func:`in_smpl_subset`) that keep their 3D labels (``3d=F``).
      smpl_terms: with ``3d``, which part of the SMPL label supervises
        (``3d=pose``, ``3d=shape``; :attr:`ExampleSpec.smpl_terms`).
      keypoint_subset: with ``2d``, the keypoints labelled (``2d=lsp14``).
      keypoint_noise: annotation-like noise on the 2D keypoints (``2d_noise=M``;
        :func:`annotation_noise`).
    """

    name: str
    split: str
    weight: float = 1.0
    labels: tuple[str, ...] | None = None
    fraction_3d: float = 1.0
    keypoint_subset: str = "all"
    keypoint_noise: float = 0.0
    smpl_terms: str = "all"

    def __str__(self) -> str:
        text = f"{self.name}:{self.split}={self.weight:g}"
        if self.labels is None:
            return text
        items = []
        for label in self.labels:
            if label == "3d" and self.fraction_3d < 1:
                items.append(f"3d={self.fraction_3d:g}")
            elif label == "3d" and self.smpl_terms != "all":
                items.append(f"3d={self.smpl_terms}")
            elif label == "2d" and self.keypoint_subset != "all":
                items.append(f"2d={self.keypoint_subset}")
            else:
                items.append(label)
            if label == "2d" and self.keypoint_noise:
                items.append(f"2d_noise={self.keypoint_noise:g}")
        return text + "[" + ",".join(items) + "]"

    def example_spec(self, spec: ExampleSpec) -> ExampleSpec:
        """``spec`` restricted to this source's labels (unchanged without a label list)."""
        if self.labels is None:
            return spec
        return dataclasses.replace(
            spec, use_keypoints="2d" in self.labels,
            dense_source=spec.dense_source if "dense" in self.labels else "none",
            smpl_fraction=self.fraction_3d if "3d" in self.labels else 0.0, smpl_terms=self.smpl_terms,
            keypoint_subset=self.keypoint_subset, keypoint_noise=self.keypoint_noise)


def _split_top_level(text: str) -> list[str]:
    """Splits on commas outside square brackets."""
    items, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _number(item: str, label: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not low <= number <= high:
        raise ValueError(f"mixture entry {item!r}: {label}={value} is not a number in [{low:g}, {high:g}]")
    return number


def _parse_labels(item: str, text: str) -> dict[str, Any]:
    """``"2d=lsp14,2d_noise=1,3d=0.2"`` -> the :class:`MixtureSource` fields they set."""
    labels, options = [], {}
    for label in (part.strip() for part in text.split(",")):
        if not label:
            continue
        name, sep, value = (part.strip() for part in label.partition("="))
        if name == "2d_noise" and sep:
            options["keypoint_noise"] = _number(item, name, value, 0.0, float("inf"))
            continue
        if name not in MIXTURE_LABELS or (sep and name == "dense"):
            raise ValueError(f"mixture entry {item!r}: unknown label {label!r}; labels are 2d, 2d=SUBSET "
                             f"({'|'.join(keypoints_lib.COCOPLUS19_SUBSETS)}), 2d_noise=M, dense, 3d, "
                             "3d=FRACTION and 3d=pose|shape (e.g. [2d=lsp14,dense,3d=0.2])")
        if name in labels:
            raise ValueError(f"mixture entry {item!r}: label {name!r} is given twice")
        labels.append(name)
        if sep and name == "3d" and value in SMPL_TERMS[1:]:
            options["smpl_terms"] = value
        elif sep and name == "3d":
            options["fraction_3d"] = _number(item, name, value, 0.0, 1.0)
        elif sep:
            if value not in keypoints_lib.COCOPLUS19_SUBSETS:
                raise ValueError(f"mixture entry {item!r}: 2d={value} is not a keypoint subset; expected one "
                                 f"of {sorted(keypoints_lib.COCOPLUS19_SUBSETS)}")
            options["keypoint_subset"] = value
    if "keypoint_noise" in options and "2d" not in labels:
        raise ValueError(f"mixture entry {item!r}: 2d_noise needs the 2d label")
    return dict(options, labels=tuple(labels))


def parse_sources(text: str, default_split: str) -> list[MixtureSource]:
    """``"synthetic:train=1[2d,dense],studio:train=1[2d,3d]"`` -> :class:`MixtureSource` list.

    Each entry is ``NAME[:SPLIT][=WEIGHT][[LABEL,...]]``; the split defaults to
    ``default_split``, the weight to 1, the labels to all (see
    :class:`MixtureSource`). ``[]`` is a source that supervises nothing.
    """
    entries = []
    for item in (part.strip() for part in _split_top_level(text)):
        if not item:
            continue
        head, options = item, {}
        if "[" in item or "]" in item:
            head, sep, rest = item.partition("[")
            if not sep or not rest.endswith("]") or "[" in rest or rest.count("]") != 1:
                raise ValueError(f"mixture entry {item!r}: expected NAME[:SPLIT][=WEIGHT][LABEL,...] "
                                 "with one bracketed label list at the end, e.g. synthetic:train=1[2d,dense]")
            options = _parse_labels(item, rest[:-1])
        name_split, _, weight_text = head.partition("=")
        name, _, split = name_split.partition(":")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise ValueError(f"mixture entry {item!r}: weight {weight_text!r} is not a number "
                             "(expected NAME[:SPLIT][=WEIGHT], e.g. up3d:trainval=2)") from None
        if not name.strip() or weight < 0:
            raise ValueError(f"mixture entry {item!r}: expected NAME[:SPLIT][=WEIGHT] with a weight >= 0")
        entries.append(MixtureSource(name.strip(), split.strip() or default_split, weight, **options))
    if not entries:
        raise ValueError(f"empty mixture {text!r}; expected e.g. 'up3d:trainval=1,coco_densepose:train=1'")
    if sum(e.weight for e in entries) <= 0:
        raise ValueError(f"mixture {text!r}: the weights sum to 0")
    return entries


def parse_mixture(text: str, default_split: str) -> list[tuple[str, str, float]]:
    """``"up3d:trainval=2,coco_densepose=1"`` -> ``[(name, split, weight), ...]`` (labels: :func:`parse_sources`)."""
    return [(e.name, e.split, e.weight) for e in parse_sources(text, default_split)]


def eval_dataset(source: Any, spec: ExampleSpec, *, batch_size: int, shard_index: int = 0,
                 shard_count: int = 1) -> grain.MapDataset:
    """Every record once, in order, no augmentation; the last batch padded with ``valid = 0``."""
    # Mapped before sharding: each record's generator (dense keypoint sampling) follows its
    # index in the split, so an example is the same whatever the number of processes.
    ds = grain.MapDataset.source(IndexedSource(source)).random_map(ProcessRecord(spec, train=False), seed=0)
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    pad = (-len(ds)) % batch_size
    if pad:
        blank = empty_example(spec.without_augmentation())
        ds = grain.MapDataset.concatenate([ds, grain.MapDataset.source([blank] * pad)])
    return ds.batch(batch_size, drop_remainder=False, batch_fn=stack_examples)


def make_iterator(ds: grain.MapDataset, *, workers: int = 0, prefetch_threads: int = 0):
    """A checkpointable iterator over ``ds``; ``workers > 0`` uses worker processes.

    The sequence does not depend on ``workers`` (grain's ``mp_prefetch``).
    Worker processes run OpenCV single-threaded (:func:`init_worker`).
    """
    read = grain.ReadOptions(num_threads=max(prefetch_threads, 0), prefetch_buffer_size=max(prefetch_threads, 0))
    it_ds = ds.to_iter_dataset(read)
    if workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=init_worker)
    return iter(it_ds)


def init_worker(worker_index: int, worker_count: int) -> None:
    """Set-up of a grain worker process: OpenCV without its own thread pool.

    The workers are the parallelism; OpenCV's threads (one per core) inside
    each of them only add contention: on 2 cores, 2 workers of ours_dc's
    pipeline spend 22% less CPU time per example without them
    (``benchmarks/data_speed.py``).
    """
    del worker_index, worker_count
    cv2.setNumThreads(0)


def stack_examples(examples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Batches examples: arrays stacked, strings into numpy str arrays."""
    first = examples[0]
    return {key: (np.array([e[key] for e in examples]) if key in _STR_KEYS
                  else np.stack([np.asarray(e[key]) for e in examples]))
            for key in first}


def split_host_fields(batch: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``batch`` -> (arrays for the device, host-only fields: ids and errors)."""
    device = {k: v for k, v in batch.items() if k not in _STR_KEYS and k != "record_index"}
    host = {k: batch[k] for k in (*_STR_KEYS, "record_index") if k in batch}
    return device, host


def log_skipped(host: Mapping[str, np.ndarray]) -> int:
    """Logs a warning per skipped record of a batch's host fields; returns how many there were."""
    errors = [error for error in host["error"] if error]
    for error in errors:
        logging.warning("Skipped %s", error)
    return len(errors)
