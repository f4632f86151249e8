"""The one record schema of every dct_jax dataset (synthetic and real).

A record is one person in one image. Every builder in ``datasets/`` writes
exactly these fields (:data:`FIELDS`, as TFDS features from :func:`features`),
so pipelines, training and evaluation read all datasets alike. A dataset that
lacks some supervision writes the defaults (zeros / empty) and sets the
field group's flag (:data:`FLAG_GROUPS`) to False; :func:`make_record` does
that and checks the rest.

Frames and units:
  * **Image pixels**: continuous coordinates of the decoded image, x right,
    y down; pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so
    its centre is ``(col + 0.5, row + 0.5)`` (as ``dct_jax.camera``). All 2D
    fields (``bbox``, ``crop_box``, ``keypoints``, and ``dp_x``/``dp_y`` through
    ``bbox``) are in image pixels of *this record's* image.
  * **Crop frame**: ``crop_box = [x0, y0, side]`` is a square of the image;
    normalized crop coordinates ``[-1, 1]`` span it (``-1`` the left/top edge,
    ``+1`` the right/bottom edge): ``u = (x - x0) / side * 2 - 1``
    (:func:`image_to_crop`). The weak-perspective ``camera`` is relative to it,
    and it is the crop that pipelines start from (before augmentation). The
    losses work in normalized crop coordinates; pipelines convert with
    :func:`image_to_crop` after choosing their crop.
  * **Camera/body frame** (3D): metres, x right, y down, the camera looks along
    +Z (``dct_jax.camera``). ``smpl_pose[:3]`` is the global rotation in this
    frame (the HMR mean [pi, 0, 0] is upright, facing the camera);
    ``vertices``/``joints`` are ``smpl.forward(body, smpl_pose, smpl_betas)``
    with no translation, so ``camera.weak_perspective_project(vertices,
    camera)`` lands on the image through ``crop_box``.
  * **Body model**: ``body_model`` (``"smpl"`` or ``"default"``, see
    ``dct_jax.keypoints.BODY_MODELS``) names the body that ``smpl_pose``,
    ``smpl_betas``, ``vertices``, ``joints`` *and* the DensePose chart of
    ``dp_U``/``dp_V``/``iuv`` refer to: ``"smpl"`` is SMPL with DensePose's
    ``UV_Processed.mat`` (COCO-DensePose), ``"default"`` the free default body
    with ``dct_jax/assets/default_chart.npz`` (the synthetic data).

Encoded images (bytes, decode with OpenCV; no TensorFlow needed):
  * ``image``: JPEG or PNG, 8-bit colour; :func:`decode_image` gives RGB.
  * ``iuv``: PNG, ``(H, W, 3)`` uint8 of the same size as ``image``, channels in
    array order (as ``cv2.imdecode`` returns them, the layout Detectron writes):
    I = DensePose part 1-24 (0 = background), U and V as ``round(255 * u)``;
    :func:`decode_iuv`. Empty bytes when ``has_iuv`` is False.
  * ``segmentation``: PNG, ``(H, W)`` uint8 DensePose part 1-24 (0 =
    background); :func:`decode_segmentation`. Empty when ``has_segmentation``
    is False.

Dense keypoints follow COCO-DensePose: ``dp_x``, ``dp_y`` are on a 0-255
scale across ``bbox`` (image x = ``bbox_x + dp_x / 255 * bbox_w``, as
DensePose's notebooks and ``dct_jax.densepose.sample_dense_keypoints``; see
:func:`dense_to_image`), ``dp_I`` the part 1-24, ``dp_U``/``dp_V`` in [0, 1].

Keypoints are the 19 ``cocoplus19`` keypoints (``dct_jax.keypoints.
COCOPLUS19_NAMES``) with COCO visibility levels (:data:`VISIBILITY_*`):
0 = not labelled (or outside the image), 1 = labelled but occluded,
2 = labelled and visible. Training usually weights by ``visibility > 0``.

3D keypoints: ``keypoints3d`` are the same 19 cocoplus19 keypoints in metres in the
camera frame (a dataset's own 3D joints, e.g. Human3.6M's motion capture, where
the record has no SMPL fit); losses and metrics align them at the pelvis (the
mid-point of the hips), so their absolute position does not matter.
``keypoints3d_visibility`` is 0 where a keypoint is not labelled, 2 where it is.

``gender`` (``"male"``, ``"female"``, ``"neutral"`` or ``""`` unknown) says which
SMPL model the ground truth parameters were fitted with (3DPW).

Record ids: ``record_id`` is unique and stable within a dataset (record order in
an array_record file is *not* key order); ``image_id`` names the source image
(records of the people in one image share it; evaluation keeps one result
per record).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import cv2
import numpy as np

from dct_jax import keypoints as keypoints_lib

NUM_KEYPOINTS = len(keypoints_lib.COCOPLUS19_NAMES)
KEYPOINT_LAYOUT = "cocoplus19"
KEYPOINT_NAMES = keypoints_lib.COCOPLUS19_NAMES
NUM_POSE = 72
NUM_BETAS = 10
NUM_JOINTS = 24
NUM_PARTS = 24
BODY_MODELS = keypoints_lib.BODY_MODELS
VISIBILITY_UNLABELLED, VISIBILITY_OCCLUDED, VISIBILITY_VISIBLE = 0, 1, 2

TEXT, BYTES = "text", "bytes"  # field kinds besides numpy arrays


@dataclasses.dataclass(frozen=True)
class Field:
    """One record field.

    Attributes:
      name: key in the record.
      dtype: numpy dtype of the array, or :data:`TEXT` (str, read back as bytes)
        or :data:`BYTES` (encoded data).
      shape: array shape; ``None`` marks a dimension that varies per record.
      doc: meaning, units and frame.
    """

    name: str
    dtype: Any
    shape: tuple[int | None, ...]
    doc: str

    def default(self) -> Any:
        """The value written when the field's data are absent."""
        if self.dtype == TEXT:
            return ""
        if self.dtype == BYTES:
            return b""
        return np.zeros(tuple(0 if d is None else d for d in self.shape), self.dtype)


FIELDS: tuple[Field, ...] = (
    Field("record_id", TEXT, (), "unique, stable id of the record in its dataset"),
    Field("image_id", TEXT, (), "id of the source image (shared by the people of one image)"),
    Field("body_model", TEXT, (),
          "body model of smpl_*, vertices, joints and of the dense chart: 'smpl' or "
          "'default' ('' if the record has none of those)"),
    Field("image", BYTES, (), "JPEG/PNG encoded 8-bit colour image; decode_image() -> RGB"),
    Field("image_shape", np.int32, (2,), "(height, width) of the decoded image, pixels"),
    Field("bbox", np.float32, (4,), "person box [x, y, w, h], image pixels; frame of dp_x, dp_y"),
    Field("crop_box", np.float32, (3,),
          "square [x0, y0, side], image pixels, that normalized crop coordinates [-1, 1] span; "
          "the frame of camera"),
    Field("keypoints", np.float32, (NUM_KEYPOINTS, 2), "cocoplus19 keypoints (x, y), image pixels"),
    Field("keypoints_visibility", np.uint8, (NUM_KEYPOINTS,),
          "0 unlabelled/outside the image, 1 labelled but occluded, 2 visible (COCO levels)"),
    Field("dp_x", np.float32, (None,), "dense keypoints x, 0-255 across bbox (COCO-DensePose)"),
    Field("dp_y", np.float32, (None,), "dense keypoints y, 0-255 across bbox (COCO-DensePose)"),
    Field("dp_I", np.uint8, (None,), "dense keypoints DensePose part, 1-24"),
    Field("dp_U", np.float32, (None,), "dense keypoints chart U, [0, 1]"),
    Field("dp_V", np.float32, (None,), "dense keypoints chart V, [0, 1]"),
    Field("iuv", BYTES, (), "PNG (H, W, 3) uint8 IUV map, channels I, 255 U, 255 V; decode_iuv()"),
    Field("segmentation", BYTES, (), "PNG (H, W) uint8 DensePose part 0-24; decode_segmentation()"),
    Field("smpl_pose", np.float32, (NUM_POSE,),
          "axis-angle of the 24 joints, joint 0 = global rotation in the camera frame (radians)"),
    Field("smpl_betas", np.float32, (NUM_BETAS,), "shape coefficients of body_model"),
    Field("camera", np.float32, (3,), "weak-perspective (s, tx, ty) onto crop_box's [-1, 1]"),
    Field("vertices", np.float32, (None, 3),
          "posed mesh (V, 3), metres, camera frame, no translation; (0, 3) when absent"),
    Field("joints", np.float32, (NUM_JOINTS, 3), "posed SMPL-order joints, same frame as vertices"),
    Field("keypoints3d", np.float32, (NUM_KEYPOINTS, 3),
          "cocoplus19 keypoints in 3D (x, y, z), metres, camera frame (e.g. motion capture)"),
    Field("keypoints3d_visibility", np.uint8, (NUM_KEYPOINTS,), "0 unlabelled, 2 labelled"),
    Field("gender", TEXT, (), "body model gender of smpl_*: 'male', 'female', 'neutral' or '' unknown"),
    Field("has_keypoints", np.bool_, (), "keypoints, keypoints_visibility are annotated"),
    Field("has_keypoints3d", np.bool_, (), "keypoints3d, keypoints3d_visibility are annotated"),
    Field("has_dense", np.bool_, (), "dp_* hold dense keypoints"),
    Field("has_iuv", np.bool_, (), "iuv holds an IUV map"),
    Field("has_segmentation", np.bool_, (), "segmentation holds a part map"),
    Field("has_smpl", np.bool_, (), "smpl_pose, smpl_betas are ground truth"),
    Field("has_camera", np.bool_, (), "camera is ground truth"),
    Field("has_mesh", np.bool_, (), "vertices, joints are ground truth"),
)
FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

# Flag -> the fields it vouches for.
FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    "has_keypoints": ("keypoints", "keypoints_visibility"),
    "has_keypoints3d": ("keypoints3d", "keypoints3d_visibility"),
    "has_dense": ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V"),
    "has_iuv": ("iuv",),
    "has_segmentation": ("segmentation",),
    "has_smpl": ("smpl_pose", "smpl_betas"),
    "has_camera": ("camera",),
    "has_mesh": ("vertices", "joints"),
}
DENSE_FIELDS = FLAG_GROUPS["has_dense"]
GENDERS = ("", "neutral", "male", "female")
# Fields added after datasets were first built: records written before them read as
# absent; upgrade_record() fills them with their defaults.
ADDED_FIELDS = ("keypoints3d", "keypoints3d_visibility", "gender", "has_keypoints3d")
_BODY_FLAGS = ("has_dense", "has_iuv", "has_smpl", "has_mesh")  # need body_model


def features():
    """The schema as a ``tfds.features.FeaturesDict`` (for a builder's ``_info``)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415  (only builders need TFDS)

    def feature(field: Field):
        if field.dtype == TEXT:
            return tfds.features.Text(doc=field.doc)
        if field.dtype == BYTES:
            return tfds.features.Tensor(shape=(), dtype=np.object_, doc=field.doc)
        return tfds.features.Tensor(shape=field.shape, dtype=field.dtype, doc=field.doc)

    return tfds.features.FeaturesDict({f.name: feature(f) for f in FIELDS})


def make_record(**values: Any) -> dict[str, Any]:
    """Builds a complete, validated record from the fields a dataset has.

    Missing fields get their defaults (zeros, empty arrays, ``b""``, ``""``).
    A flag that is not given is True when any field of its group is given.
    ``image_shape`` is read off the image when not given; ``bbox`` defaults to
    the whole image and ``crop_box`` to the square around ``bbox`` with side
    ``max(w, h)``.

    Returns:
      ``{name: value}`` for every field of :data:`FIELDS`, arrays cast to the
      field dtypes.

    Raises:
      ValueError: unknown field, missing ``record_id``/``image``, or a value
        that :func:`validate_record` rejects.
    """
    unknown = sorted(set(values) - set(FIELDS_BY_NAME))
    if unknown:
        raise ValueError(f"unknown record field(s) {unknown}; known: {list(FIELDS_BY_NAME)}")
    for name in ("record_id", "image"):
        if name not in values:
            raise ValueError(f"a record needs {name!r}")
    record = {}
    for flag, group in FLAG_GROUPS.items():
        if flag not in values:
            values[flag] = any(values.get(name) is not None for name in group)
    if "image_shape" not in values:
        values["image_shape"] = decode_image(values["image"]).shape[:2]
    if "image_id" not in values:
        values["image_id"] = values["record_id"]
    height, width = (float(x) for x in np.asarray(values["image_shape"]).reshape(-1)[:2])
    if "bbox" not in values:
        values["bbox"] = (0.0, 0.0, width, height)
    if "crop_box" not in values:
        values["crop_box"] = square_around(values["bbox"])
    for field in FIELDS:
        value = values.get(field.name, None)
        if value is None:
            value = field.default()
        elif field.dtype == TEXT:
            value = value.decode() if isinstance(value, bytes) else str(value)
        elif field.dtype == BYTES:
            value = bytes(value)
        else:
            value = np.asarray(value).astype(field.dtype, copy=False)
        record[field.name] = value
    validate_record(record)
    return record


def validate_record(record: Mapping[str, Any]) -> None:
    """Checks a record (as written, or as read back from TFDS) against the schema.

    Raises:
      ValueError: naming the field: missing or extra keys, a wrong shape or
        dtype kind, inconsistent dense lengths, values out of range, or a
        flag without the data it vouches for.
    """
    missing = [f.name for f in FIELDS if f.name not in record]
    extra = sorted(set(record) - set(FIELDS_BY_NAME))
    if missing or extra:
        raise ValueError(f"record fields: missing {missing}, unknown {extra}")
    rid = record["record_id"]

    def fail(name: str, why: str) -> ValueError:
        return ValueError(f"record {rid!r}: field {name!r} {why}")

    for field in FIELDS:
        value = record[field.name]
        if field.dtype == TEXT:
            if not isinstance(value, (str, bytes)):
                raise fail(field.name, f"must be a string, got {type(value).__name__}")
            continue
        if field.dtype == BYTES:
            if not isinstance(value, bytes):
                raise fail(field.name, f"must be bytes, got {type(value).__name__}")
            continue
        value = np.asarray(value)
        if value.dtype != np.dtype(field.dtype):
            raise fail(field.name, f"must have dtype {np.dtype(field.dtype)}, got {value.dtype}")
        if value.ndim != len(field.shape) or any(
                d is not None and d != n for d, n in zip(field.shape, value.shape)):
            raise fail(field.name, f"must have shape {field.shape}, got {value.shape}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise fail(field.name, "has NaN or inf")

    text = lambda name: _text(record[name])  # noqa: E731
    if not text("record_id"):
        raise fail("record_id", "must not be empty")
    if not record["image"]:
        raise fail("image", "must not be empty")
    body = text("body_model")
    if body and body not in BODY_MODELS:
        raise fail("body_model", f"must be one of {BODY_MODELS} or '', got {body!r}")
    for flag in _BODY_FLAGS:
        if record[flag] and not body:
            raise fail("body_model", f"must be set when {flag} is True")
    if np.any(np.asarray(record["image_shape"]) <= 0):
        raise fail("image_shape", "must be positive")
    if np.any(np.asarray(record["bbox"])[2:] <= 0):
        raise fail("bbox", "must have positive width and height")
    if np.asarray(record["crop_box"])[2] <= 0:
        raise fail("crop_box", "must have a positive side")
    for name in ("keypoints_visibility", "keypoints3d_visibility"):
        if np.any(np.asarray(record[name]) > VISIBILITY_VISIBLE):
            raise fail(name, "must be 0, 1 or 2")
    if text("gender") not in GENDERS:
        raise fail("gender", f"must be one of {GENDERS}, got {text('gender')!r}")

    lengths = {name: np.asarray(record[name]).shape[0] for name in DENSE_FIELDS}
    if len(set(lengths.values())) != 1:
        raise fail("dp_x", f"and the other dense fields differ in length: {lengths}")
    if record["has_dense"]:
        if lengths["dp_x"] == 0:
            raise fail("dp_x", "is empty but has_dense is True")
        parts = np.asarray(record["dp_I"])
        if parts.min() < 1 or parts.max() > NUM_PARTS:
            raise fail("dp_I", f"must be parts 1-{NUM_PARTS}")
        for name in ("dp_U", "dp_V"):
            if not np.all((np.asarray(record[name]) >= 0) & (np.asarray(record[name]) <= 1)):
                raise fail(name, "must lie in [0, 1]")
    for flag, name in (("has_iuv", "iuv"), ("has_segmentation", "segmentation")):
        if record[flag] and not record[name]:
            raise fail(name, f"is empty but {flag} is True")
    if record["has_mesh"]:
        num_vertices = np.asarray(record["vertices"]).shape[0]
        expected = keypoints_lib.NUM_VERTICES[body]
        if num_vertices != expected:
            raise fail("vertices", f"has {num_vertices} vertices; body {body!r} has {expected}")


def upgrade_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record read from a dataset built before :data:`ADDED_FIELDS` existed, completed.

    The added fields (absent, or None as TFDS reads them) get their defaults (and their flags False); other fields
    are left as they are (:func:`validate_record` still checks them).
    """
    record = dict(record)
    for name in ADDED_FIELDS:
        # TFDS reads a field its stored features lack as None.
        if record.get(name) is None:
            record[name] = FIELDS_BY_NAME[name].default()
    return record


def square_around(bbox: Any) -> np.ndarray:
    """``[x0, y0, side]``: the square with ``bbox``'s centre and side ``max(w, h)``."""
    x, y, w, h = np.asarray(bbox, np.float64).reshape(4)
    side = max(w, h)
    return np.array([x + 0.5 * (w - side), y + 0.5 * (h - side), side], np.float32)


def image_to_crop(xy: np.ndarray, crop_box: Any) -> np.ndarray:
    """``(..., 2)`` image pixels -> normalized crop coordinates of ``crop_box``."""
    x0, y0, side = np.asarray(crop_box, np.float64).reshape(3)
    return ((np.asarray(xy, np.float64) - [x0, y0]) * (2.0 / side) - 1.0).astype(np.float32)


def crop_to_image(uv: np.ndarray, crop_box: Any) -> np.ndarray:
    """``(..., 2)`` normalized crop coordinates of ``crop_box`` -> image pixels."""
    x0, y0, side = np.asarray(crop_box, np.float64).reshape(3)
    return ((np.asarray(uv, np.float64) + 1.0) * (0.5 * side) + [x0, y0]).astype(np.float32)


def dense_to_image(dp_x: np.ndarray, dp_y: np.ndarray, bbox: Any) -> np.ndarray:
    """COCO-DensePose ``dp_x``, ``dp_y`` (0-255 across ``bbox``) -> ``(N, 2)`` image pixels."""
    x, y, w, h = np.asarray(bbox, np.float64).reshape(4)
    dp_x, dp_y = np.asarray(dp_x, np.float64), np.asarray(dp_y, np.float64)
    return np.stack([x + dp_x / 255.0 * w, y + dp_y / 255.0 * h], -1).astype(np.float32)


def image_to_dense(xy: np.ndarray, bbox: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2)`` image pixels -> COCO-DensePose ``(dp_x, dp_y)`` (0-255 across ``bbox``)."""
    x, y, w, h = np.asarray(bbox, np.float64).reshape(4)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    dp_x = (xy[:, 0] - x) * (255.0 / w)
    dp_y = (xy[:, 1] - y) * (255.0 / h)
    return dp_x.astype(np.float32), dp_y.astype(np.float32)


# ----------------------------------------------------------------------------- codecs


def encode_image(rgb: np.ndarray, *, ext: str = ".jpg", quality: int = 90) -> bytes:
    """``(H, W, 3)`` uint8 RGB -> JPEG (``ext=".jpg"``) or PNG (``".png"``) bytes."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    return _encode(ext, rgb[..., ::-1], params)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded ``image`` bytes -> ``(H, W, 3)`` uint8 RGB."""
    if hasattr(cv2, "IMREAD_COLOR_RGB"):  # recent OpenCV: RGB straight from the decoder, the same pixels
        return _decode(data, cv2.IMREAD_COLOR_RGB, "image")
    bgr = _decode(data, cv2.IMREAD_COLOR, "image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_iuv(iuv: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 IUV map (I, 255 U, 255 V) -> PNG bytes (array channel order)."""
    iuv = np.asarray(iuv)
    if iuv.ndim != 3 or iuv.shape[2] != 3 or iuv.dtype != np.uint8:
        raise ValueError(f"iuv must be (H, W, 3) uint8, got {iuv.shape} {iuv.dtype}")
    return _encode(".png", iuv, [])


def decode_iuv(data: bytes) -> np.ndarray:
    """``iuv`` PNG bytes -> ``(H, W, 3)`` uint8, channels I, 255 U, 255 V."""
    iuv = _decode(data, cv2.IMREAD_UNCHANGED, "iuv")
    if iuv.ndim != 3 or iuv.shape[2] != 3:
        raise ValueError(f"iuv must decode to (H, W, 3), got {iuv.shape}")
    return iuv


def encode_segmentation(seg: np.ndarray) -> bytes:
    """``(H, W)`` uint8 part map -> PNG bytes."""
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.dtype != np.uint8:
        raise ValueError(f"segmentation must be (H, W) uint8, got {seg.shape} {seg.dtype}")
    return _encode(".png", seg, [])


def decode_segmentation(data: bytes) -> np.ndarray:
    """``segmentation`` PNG bytes -> ``(H, W)`` uint8 part 0-24."""
    seg = _decode(data, cv2.IMREAD_UNCHANGED, "segmentation")
    if seg.ndim != 2:
        raise ValueError(f"segmentation must decode to (H, W), got {seg.shape}")
    return seg


def _encode(ext: str, array: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(array), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {array.shape} array as {ext}")
    return buf.tobytes()


def _decode(data: bytes, flags: int, name: str) -> np.ndarray:
    if not data:
        raise ValueError(f"{name}: no encoded data (the record lacks it)")
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if array is None:
        raise ValueError(f"{name}: OpenCV could not decode {len(data)} bytes")
    return array


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
