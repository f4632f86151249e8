"""TFDS builder of COCO-DensePose: COCO 2014 people with DensePose dense correspondences.

Build (the files come by hand, see :data:`Builder.MANUAL_DOWNLOAD_INSTRUCTIONS`)::

    python -m datasets build coco_densepose --manual_dir=M --data_dir=D [--iuv_dir=DIR]

Read::

    import tensorflow_datasets as tfds
    source = tfds.data_source("coco_densepose", data_dir=D, split="minival")  # no TensorFlow
    record = source[0]   # dict of numpy arrays / bytes, see dct_jax.data.schema

One record per person annotation that carries DensePose data (``dp_*``
fields); the other COCO people are counted, not written. Splits keep
DensePose's names: ``train`` (``train2014`` images), ``valminusminival`` and
``minival`` (``val2014`` images; ``minival`` is DensePose's evaluation split).

What a record holds (fields of ``dct_jax.data.schema``):
  * ``image``: the COCO JPEG file as it is (not re-encoded); ``image_shape``
    as OpenCV decodes it; ``bbox`` the annotation's ``[x, y, w, h]``;
    ``crop_box`` the schema's default square around ``bbox``.
  * ``dp_x``, ``dp_y``, ``dp_I``, ``dp_U``, ``dp_V``: the annotation's values
    unchanged (cast to the schema dtypes); ``body_model = "smpl"`` (the
    DensePose chart of SMPL, ``UV_Processed.mat``).
  * ``keypoints``: COCO's 17 keypoints moved to the 19 ``cocoplus19`` slots by
    name (:data:`COCO17_INDEX`; ``neck`` and ``head_top`` are not in COCO and
    stay unlabelled), plus 0.5 pixel (COCO keypoints are integer pixel indices,
    the schema's frame has pixel centres at ``+0.5``, as detectron2's COCO
    loader); visibility is COCO's ``v``; a labelled keypoint outside the image
    becomes unlabelled (the schema's rule).
  * ``segmentation``: the 14 ``dp_masks`` (RLE over the box), painted in order
    into one label map as DensePose's ``GetDensePoseMask`` (a later part wins
    where masks overlap), resampled nearest-neighbour from their grid over
    ``bbox`` to the image pixels whose centres fall inside ``bbox``. The
    schema's labels are the 24 fine DensePose parts, the masks only know the
    14 coarse parts (each the union of one or two fine parts): coarse part
    ``c`` is written as the first fine part of :data:`COARSE_TO_FINE` ``[c]``,
    so ``FINE_TO_COARSE[segmentation]`` gives the coarse map back exactly.
  * ``iuv`` (with ``iuv_dir``): the image's DensePose IUV map,
    ``DIR/train2014/<image name>_IUV.png`` or ``DIR/<image name>_IUV.png``
    (Detectron's naming; :func:`datasets._common.read_iuv`), shared by the
    image's people; images without one give records with ``has_iuv`` False.

Unusable annotations are skipped, never fatal: an image that is missing,
cannot be decoded or does not have the size the annotation file says
(``kind = "image"``), or an inconsistent annotation (``kind =
"annotation"``: dense fields of different lengths, no points, parts outside
1-24, U/V outside [0, 1], a bad box, keypoints or masks, an unknown image id,
a missing or repeated id), or an IUV map that is not the image's (``kind =
"iuv"``: another size, not 3-channel 8-bit, parts above 24). Each is logged
(absl WARNING) and listed with its reason in the dataset's metadata
(``builder.info.metadata["skipped"][split]``, ``metadata.json`` next to the
data), with counts per split in ``metadata["splits"]``.
A split whose files are missing is left out (``splits=`` / ``--splits`` requires
them), and one whose every example is skipped is not written; both are reported
(``datasets/_real.py``, ``datasets/README.md``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from pycocotools import mask as mask_util
from tqdm import tqdm

from datasets._common import Skip, read_iuv
from datasets._real import Example, RealBuilder, Skipped, SplitFiles
from dct_jax import keypoints as keypoints_lib
from dct_jax.data import schema

SPLITS = ("train", "valminusminival", "minival")
# Image folder of each split (DensePose's valminusminival and minival are COCO val2014 images).
IMAGE_DIRS = {"train": "train2014", "valminusminival": "val2014", "minival": "val2014"}
IMAGE_URLS = {"train2014": "http://images.cocodataset.org/zips/train2014.zip",
              "val2014": "http://images.cocodataset.org/zips/val2014.zip"}
IMAGE_ZIP_SIZES = {"train2014": "13 GB", "val2014": "6.2 GB"}
ANNOTATION_DIR = "annotations"
ANNOTATION_FILES = {split: f"densepose_coco_2014_{split}.json" for split in SPLITS}
# Where DensePose's own download script (DensePoseData/get_DensePose_COCO.sh) fetches them.
ANNOTATION_URL = "https://dl.fbaipublicfiles.com/densepose/"

DENSE_POINT_KEYS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
DENSE_KEYS = (*DENSE_POINT_KEYS, "dp_masks")

# The 14 coarse parts of ``dp_masks``, in their order (detectron2
# projects/DensePose/doc/DENSEPOSE_DATASETS.md), and the fine DensePose parts
# (dp_I, 1-24; dct_jax.densepose) that make up each.
COARSE_PART_NAMES = (
    "torso", "right_hand", "left_hand", "left_foot", "right_foot", "right_upper_leg",
    "left_upper_leg", "right_lower_leg", "left_lower_leg", "left_upper_arm", "right_upper_arm",
    "left_lower_arm", "right_lower_arm", "head",
)
COARSE_TO_FINE = ((1, 2), (3,), (4,), (5,), (6,), (7, 9), (8, 10), (11, 13), (12, 14), (15, 17),
                  (16, 18), (19, 21), (20, 22), (23, 24))
NUM_COARSE_PARTS = len(COARSE_PART_NAMES)
# Fine part (0-24) -> coarse part (0-14); 0 is background in both.
FINE_TO_COARSE = np.zeros(schema.NUM_PARTS + 1, np.uint8)
for _coarse, _fines in enumerate(COARSE_TO_FINE, 1):
    FINE_TO_COARSE[list(_fines)] = _coarse
# Coarse part (0-14) -> the label written into ``segmentation`` (its first fine part).
COARSE_LABEL = np.array([0] + [fines[0] for fines in COARSE_TO_FINE], np.uint8)

# For each cocoplus19 keypoint, its index among COCO's 17 (-1: not annotated in COCO).
COCO17_INDEX = (16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9, -1, -1, 0, 1, 2, 3, 4)
# COCO keypoints are integer pixel indices; the schema's pixel (row, col) has its centre at +0.5.
KEYPOINT_OFFSET = 0.5
# dp_U / dp_V this little outside [0, 1] are clipped; farther out the annotation is inconsistent.
_UV_TOLERANCE = 1e-6
_READ_CHUNK = 1 << 24

CONVENTIONS = {
    "dense": "dp_x, dp_y, dp_I, dp_U, dp_V exactly as in the annotation file (float32 / uint8); "
             "dp_x, dp_y on a 0-255 scale across bbox (dct_jax.data.schema)",
    "keypoints": "COCO's 17 keypoints in the cocoplus19 slots of the same name, +0.5 px (pixel centres); "
                 "neck and head_top unlabelled; labelled keypoints outside the image made unlabelled",
    "segmentation": "dp_masks (14 coarse parts, painted in order as DensePose's GetDensePoseMask) "
                    "resampled nearest-neighbour from their grid over bbox to the image; coarse part c "
                    f"written as fine part {COARSE_LABEL[1:].tolist()}[c - 1]; FINE_TO_COARSE of "
                    "datasets/coco_densepose recovers the coarse map",
    "crop_box": "the square with bbox's centre and side max(w, h)",
}


class UnreadableImage(ValueError):
    """An image that is missing, cannot be decoded or has another size than annotated."""


class InconsistentAnnotation(ValueError):
    """A person annotation whose fields cannot make a valid record."""


# ----------------------------------------------------------------------------- conversions


def _number_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise InconsistentAnnotation(f"{name} must be a list of numbers, got {type(value).__name__}")
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise InconsistentAnnotation(f"{name} must be a list of numbers") from None
    if array.ndim != 1:
        raise InconsistentAnnotation(f"{name} must be a flat list of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InconsistentAnnotation(f"{name} has NaN or inf")
    return array


def annotation_bbox(annotation: Mapping[str, Any]) -> np.ndarray:
    """The annotation's ``[x, y, w, h]`` (float64) with ``w, h > 0``."""
    if "bbox" not in annotation:
        raise InconsistentAnnotation("has no bbox")
    bbox = _number_array(annotation["bbox"], "bbox")
    if bbox.shape != (4,) or bbox[2] <= 0 or bbox[3] <= 0:
        raise InconsistentAnnotation(f"bbox must be [x, y, w, h] with w, h > 0, got {bbox.tolist()}")
    return bbox


def dense_fields(annotation: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The annotation's ``dp_x, dp_y, dp_I, dp_U, dp_V`` as schema arrays, values unchanged.

    Raises:
      InconsistentAnnotation: a field missing, not a list of finite numbers,
        lengths that differ, no points, ``dp_I`` not an integer in 1-24, or
        ``dp_U``/``dp_V`` outside [0, 1].
    """
    missing = [key for key in DENSE_POINT_KEYS if key not in annotation]
    if missing:
        present = [key for key in DENSE_KEYS if key in annotation]
        raise InconsistentAnnotation(f"has {present} but lacks {missing}")
    arrays = {key: _number_array(annotation[key], key) for key in DENSE_POINT_KEYS}
    lengths = {key: int(array.size) for key, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise InconsistentAnnotation(f"dense fields differ in length: {lengths}")
    if lengths["dp_x"] == 0:
        raise InconsistentAnnotation("has no dense points (empty dp_x)")
    parts = arrays["dp_I"]
    if np.any(parts != np.round(parts)) or parts.min() < 1 or parts.max() > schema.NUM_PARTS:
        raise InconsistentAnnotation(f"dp_I must be integer parts 1-{schema.NUM_PARTS}, "
                                     f"got {parts.min():g}..{parts.max():g}")
    for key in ("dp_U", "dp_V"):
        values = arrays[key]
        if values.min() < -_UV_TOLERANCE or values.max() > 1 + _UV_TOLERANCE:
            raise InconsistentAnnotation(f"{key} must lie in [0, 1], got {values.min():g}..{values.max():g}")
        arrays[key] = np.clip(values, 0.0, 1.0)
    return {key: arrays[key].astype(schema.FIELDS_BY_NAME[key].dtype) for key in DENSE_POINT_KEYS}


def cocoplus19_keypoints(coco_keypoints: Any, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """COCO's 51 numbers ``x, y, v`` -> cocoplus19 ``(19, 2)`` float32 image pixels and ``(19,)`` visibility.

    Unlabelled keypoints (``v = 0``, and ``neck``, ``head_top``) are ``(0, 0)``;
    a labelled keypoint outside the image becomes unlabelled.

    Returns:
      ``(xy, visibility, number of labelled keypoints outside the image)``.

    Raises:
      InconsistentAnnotation: not 51 finite numbers or a ``v`` not 0, 1 or 2.
    """
    values = _number_array(coco_keypoints, "keypoints")
    if values.shape != (3 * len(keypoints_lib.COCO17_NAMES),):
        raise InconsistentAnnotation(f"keypoints must be 51 numbers (x, y, v for 17 keypoints), got {values.size}")
    values = values.reshape(-1, 3)
    visibility = values[:, 2]
    if not np.all(np.isin(visibility, (0, 1, 2))):
        raise InconsistentAnnotation(f"keypoint visibility must be 0, 1 or 2, got {sorted(set(visibility.tolist()))}")
    xy = values[:, :2] + KEYPOINT_OFFSET
    height, width = image_shape
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
    outside = (visibility > 0) & ~inside
    visibility = np.where(outside, 0, visibility).astype(np.uint8)
    xy[visibility == 0] = 0.0
    index = np.asarray(COCO17_INDEX)
    known = index >= 0
    out_xy = np.zeros((schema.NUM_KEYPOINTS, 2), np.float32)
    out_vis = np.zeros((schema.NUM_KEYPOINTS,), np.uint8)
    out_xy[known] = xy[index[known]]
    out_vis[known] = visibility[index[known]]
    return out_xy, out_vis, int(outside.sum())


def decode_dp_masks(dp_masks: Any) -> np.ndarray | None:
    """The 14 RLE part masks -> ``(h, w)`` uint8 coarse label map 0-14 (``None`` if all are empty).

    Painted in order, so where masks overlap the later part wins (DensePose's
    ``GetDensePoseMask``). Empty entries (``[]``, ``{}``) are absent parts.

    Raises:
      InconsistentAnnotation: not a list of 14, an entry that is not an RLE
        pycocotools can decode, or masks of different sizes.
    """
    if not isinstance(dp_masks, (list, tuple)) or len(dp_masks) != NUM_COARSE_PARTS:
        got = len(dp_masks) if isinstance(dp_masks, (list, tuple)) else type(dp_masks).__name__
        raise InconsistentAnnotation(f"dp_masks must be a list of {NUM_COARSE_PARTS} RLE masks, got {got}")
    labels = None
    for part, rle in enumerate(dp_masks, 1):
        if not rle:
            continue
        if not isinstance(rle, Mapping) or "counts" not in rle or "size" not in rle:
            raise InconsistentAnnotation(f"dp_masks[{part - 1}] is not an RLE mask ({{'counts', 'size'}})")
        try:
            mask = mask_util.decode(dict(rle))
        except (TypeError, ValueError) as err:
            raise InconsistentAnnotation(f"dp_masks[{part - 1}] cannot be decoded: {err}") from None
        if mask.ndim != 2 or min(mask.shape) < 1:
            raise InconsistentAnnotation(f"dp_masks[{part - 1}] decodes to shape {mask.shape}")
        if labels is None:
            labels = np.zeros(mask.shape, np.uint8)
        elif mask.shape != labels.shape:
            raise InconsistentAnnotation(f"dp_masks differ in size: {labels.shape} and {mask.shape}")
        labels[mask > 0] = part
    return labels


def paste_parts(coarse: np.ndarray, bbox: Sequence[float], image_shape: Sequence[int]) -> np.ndarray:
    """A coarse label map over ``bbox`` -> ``(H, W)`` uint8 image segmentation (:data:`COARSE_LABEL` values).

    Nearest neighbour: image pixel ``(row, col)`` takes the map cell under its
    centre ``(col + 0.5, row + 0.5)``, i.e. cell ``floor((col + 0.5 - x) / w *
    map_w)`` (likewise rows); pixels whose centres are outside ``bbox`` are 0.
    """
    height, width = (int(v) for v in image_shape)
    x, y, w, h = (float(v) for v in bbox)
    map_h, map_w = coarse.shape
    cols = np.floor((np.arange(width) + 0.5 - x) * (map_w / w)).astype(np.int64)
    rows = np.floor((np.arange(height) + 0.5 - y) * (map_h / h)).astype(np.int64)
    col_ok = (cols >= 0) & (cols < map_w)
    row_ok = (rows >= 0) & (rows < map_h)
    segmentation = np.zeros((height, width), np.uint8)
    segmentation[np.ix_(row_ok, col_ok)] = COARSE_LABEL[coarse[np.ix_(rows[row_ok], cols[col_ok])]]
    return segmentation


@dataclasses.dataclass
class ConvertedAnnotation:
    """One record and what the conversion noticed."""

    record: dict[str, Any]
    keypoints_outside_image: int
    has_segmentation: bool


def convert_annotation(annotation: Mapping[str, Any], *, split: str, image_id: Any, image_bytes: bytes,
                       image_shape: Sequence[int], iuv: bytes | None = None) -> ConvertedAnnotation:
    """One DensePose person annotation (and its decoded image's size, and IUV map if any) -> a schema record.

    Raises:
      InconsistentAnnotation: see :func:`dense_fields`, :func:`annotation_bbox`,
        :func:`cocoplus19_keypoints`, :func:`decode_dp_masks`, or a record the
        schema rejects.
    """
    dense = dense_fields(annotation)
    bbox = annotation_bbox(annotation)
    values: dict[str, Any] = {}
    outside = 0
    if annotation.get("keypoints") is not None:
        xy, visibility, outside = cocoplus19_keypoints(annotation["keypoints"], image_shape)
        values.update(keypoints=xy, keypoints_visibility=visibility, has_keypoints=bool(visibility.any()))
    else:
        values["has_keypoints"] = False
    coarse = decode_dp_masks(annotation["dp_masks"]) if annotation.get("dp_masks") is not None else None
    if coarse is not None:
        values["segmentation"] = schema.encode_segmentation(paste_parts(coarse, bbox, image_shape))
    values["has_segmentation"] = coarse is not None
    try:
        record = schema.make_record(
            record_id=f"coco_densepose/{split}/{annotation['id']}", image_id=str(image_id), body_model="smpl",
            image=image_bytes, image_shape=np.asarray(image_shape, np.int32), bbox=bbox, **dense, has_dense=True,
            iuv=iuv, has_iuv=iuv is not None, **values)
    except ValueError as err:
        raise InconsistentAnnotation(f"makes an invalid record: {err}") from None
    return ConvertedAnnotation(record, outside, coarse is not None)


def read_image(paths: Sequence[str], expected_shape: tuple[int, int] | None) -> tuple[bytes, tuple[int, int], str]:
    """The first existing file of ``paths``: ``(its bytes, decoded (height, width), path)``.

    Raises:
      UnreadableImage: no such file, unreadable, not decodable by OpenCV, or
        decoded to another size than ``expected_shape``.
    """
    path = next((p for p in paths if os.path.isfile(p)), None)
    if path is None:
        raise UnreadableImage(f"image file not found (looked for {', '.join(paths)})")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UnreadableImage(f"cannot read {path}: {err}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise UnreadableImage(f"OpenCV cannot decode {path} ({len(data)} bytes)")
    shape = (int(image.shape[0]), int(image.shape[1]))
    if expected_shape is not None and shape != expected_shape:
        raise UnreadableImage(f"{path} decodes to {shape[0]}x{shape[1]} (height x width), the annotation "
                              f"file says {expected_shape[0]}x{expected_shape[1]}")
    return data, shape, path


# ----------------------------------------------------------------------------- files


def annotation_path(manual_dir: str, split: str) -> str:
    return os.path.join(manual_dir, ANNOTATION_DIR, ANNOTATION_FILES[split])


def missing_files(manual_dir: str, splits: Sequence[str]) -> list[str]:
    """One line per file or folder that ``splits`` need and ``manual_dir`` lacks: what, where from, where to."""
    lines = []
    for split in splits:
        path = annotation_path(manual_dir, split)
        if not os.path.isfile(path):
            name = ANNOTATION_FILES[split]
            misplaced = [p for p in (os.path.join(manual_dir, name), os.path.join(manual_dir, "DensePose_COCO", name))
                         if os.path.isfile(p)]
            hint = f" (found {misplaced[0]}: move it there)" if misplaced else ""
            lines.append(f"{path}: download {ANNOTATION_URL}{name} into {os.path.dirname(path)}/{hint}")
    for folder in sorted({IMAGE_DIRS[split] for split in splits}):
        path = os.path.join(manual_dir, folder)
        if not (os.path.isdir(path) and os.listdir(path)):
            misplaced = os.path.join(manual_dir, "images", folder)
            hint = f" (found {misplaced}: move it there)" if os.path.isdir(misplaced) else ""
            lines.append(f"{path}/: download {IMAGE_URLS[folder]} ({IMAGE_ZIP_SIZES[folder]}) and unzip it "
                         f"in {manual_dir} (the zip holds {folder}/){hint}")
    return lines


def find_splits(manual_dir: str, splits: Sequence[str] | None = None) -> dict[str, SplitFiles]:
    """Each split's annotation file (read when the split is written), or what it lacks (:func:`missing_files`)."""
    return {split: SplitFiles(load=lambda path=annotation_path(manual_dir, split): load_split_annotations(path),
                              missing=tuple(missing_files(manual_dir, (split,))))
            for split in splits or SPLITS}


def missing_files_message(manual_dir: str, lines: Sequence[str]) -> str:
    return (f"coco_densepose: the manual directory {manual_dir} lacks these files (COCO 2014 images, "
            "DensePose-COCO annotations):\n  " + "\n  ".join(lines)
            + f"\nThen run: python -m datasets build coco_densepose --manual_dir={manual_dir} --data_dir=D")


def read_json(path: str) -> Any:
    """Parses a JSON file, with a progress bar while reading it.

    Raises:
      ValueError: not valid JSON (the message names the file and where it comes from).
    """
    size = os.path.getsize(path)
    chunks = []
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, leave=False, dynamic_ncols=True,
                                     desc=f"Reading {os.path.basename(path)}") as bar:
        while chunk := f.read(_READ_CHUNK):
            chunks.append(chunk)
            bar.update(len(chunk))
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); download it again from "
                         f"{ANNOTATION_URL}{os.path.basename(path)}") from None


@dataclasses.dataclass
class SplitAnnotations:
    """A split's annotation file, grouped for generation."""

    path: str
    images: dict[Any, Mapping[str, Any]]
    by_image: dict[Any, list[Mapping[str, Any]]]  # DensePose annotations per image id, file order
    num_annotations: int
    num_densepose: int
    malformed: list[tuple[Any, str]]  # (annotation id or None, why) of entries that cannot be grouped

    def __len__(self) -> int:
        """DensePose annotations (the progress bar's total)."""
        return self.num_densepose


def load_split_annotations(path: str) -> SplitAnnotations:
    """Reads a DensePose-COCO annotation file; people without ``dp_*`` fields are only counted.

    Raises:
      ValueError: not JSON, or no ``images`` / ``annotations`` lists.
    """
    data = read_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(  # noqa: TRY004  (a file's content, not an argument's type)
            f"{path} is not a COCO annotation file (no 'images' and 'annotations' lists)")
    images = {image["id"]: image for image in data["images"]
              if isinstance(image, Mapping) and isinstance(image.get("id"), (int, str))}
    by_image: dict[Any, list[Mapping[str, Any]]] = collections.defaultdict(list)
    malformed = []
    num_densepose = 0
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, Mapping):
            malformed.append((None, f"annotations[{index}] is not an object"))
            continue
        if any(key in annotation for key in DENSE_KEYS):
            image_id = annotation.get("image_id")
            if not isinstance(image_id, (int, str)):
                malformed.append((annotation.get("id"), f"has no usable image_id (got {image_id!r})"))
                continue
            num_densepose += 1
            by_image[image_id].append(annotation)
    return SplitAnnotations(path=path, images=images, by_image=dict(by_image),
                            num_annotations=len(data["annotations"]),
                            num_densepose=num_densepose + len(malformed), malformed=malformed)


# ----------------------------------------------------------------------------- builder


def _instructions() -> str:
    lines = ["Download into the manual directory M (`--manual_dir=M`), keeping the archives' layout:", ""]
    for folder, url in IMAGE_URLS.items():
        lines.append(f"  M/{folder}/   COCO 2014 images: {url} ({IMAGE_ZIP_SIZES[folder]}), unzipped in M")
    for split in SPLITS:
        lines.append(f"  M/{ANNOTATION_DIR}/{ANNOTATION_FILES[split]}   {ANNOTATION_URL}{ANNOTATION_FILES[split]}")
    lines += ["", "train uses train2014/, valminusminival and minival use val2014/."]
    return "\n".join(lines)


class Builder(RealBuilder):
    """COCO-DensePose: COCO 2014 people with DensePose points, part masks and keypoints.

    ``splits=("minival",)`` needs only ``val2014/`` and its annotation file. ``iuv_dir``: maps
    ``<image name>_IUV.png`` in ``train2014/``, ``val2014/`` or the folder itself, shared by the
    image's people.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: one record per DensePose person; dp_* as annotated, cocoplus19 keypoints, "
                 "coarse part segmentation from dp_masks; skipped annotations in the metadata.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions()
    DATASET, HOMEPAGE, SPLITS = "COCO-DensePose", "http://densepose.org", SPLITS
    BODY_MODELS = ()
    UNIT = "DensePose annotations"

    def missing_message(self, problems: Sequence[str]) -> str:
        manual_dir = self.manual_dir or "M"
        if not os.path.isdir(manual_dir):  # list all a build needs
            problems = [*problems, *missing_files(manual_dir, self.requested_splits or SPLITS)]
        return missing_files_message(manual_dir, problems)

    def _find_splits(self, manual_dir: str, splits: tuple[str, ...] | None) -> dict[str, SplitFiles]:
        return find_splits(manual_dir, splits)

    def _metadata(self, splits: Mapping[str, SplitFiles]) -> dict[str, Any]:
        return {"conventions": CONVENTIONS, "splits": {}}

    def _examples(self, split: str, source: SplitAnnotations) -> Iterator[Example | Skipped]:
        manual_dir = self.manual_dir
        folders = [IMAGE_DIRS[split]] + sorted(set(IMAGE_DIRS.values()) - {IMAGE_DIRS[split]})
        counts = collections.Counter()

        def skip(kind: str, annotation_id: Any, image: Mapping[str, Any] | None, reason: str) -> Skipped:
            image = image or {}
            counts[f"skipped_{kind}"] += 1
            return Skipped(f"annotation {annotation_id} (image {image.get('file_name') or image.get('id')})", reason,
                           {"annotation_id": annotation_id, "image_id": image.get("id"),
                            "file_name": image.get("file_name"), "kind": kind})

        for annotation_id, reason in source.malformed:
            yield skip("annotation", annotation_id, None, reason)
        seen: set[int] = set()
        for image_id, people in source.by_image.items():
            image = source.images.get(image_id)
            if image is None:
                for annotation in people:
                    yield skip("annotation", annotation.get("id"), None,
                               f"image_id {image_id!r} is not among the file's images")
                continue
            try:
                file_name = image.get("file_name")
                if not isinstance(file_name, str) or not file_name:
                    raise UnreadableImage("the image entry has no file_name")
                expected = (image.get("height"), image.get("width"))
                expected = expected if all(isinstance(v, int) for v in expected) else None
                data, shape, path = read_image([os.path.join(manual_dir, f, file_name) for f in folders], expected)
            except UnreadableImage as err:
                for annotation in people:
                    yield skip("image", annotation.get("id"), image, str(err))
                continue
            try:
                iuv = read_iuv(self.iuv_dir, os.path.relpath(path, manual_dir), shape)
            except Skip as err:
                for annotation in people:
                    yield skip("iuv", annotation.get("id"), image, str(err))
                continue
            for annotation in people:
                annotation_id = annotation.get("id")
                if isinstance(annotation_id, bool) or not isinstance(annotation_id, int):
                    yield skip("annotation", annotation_id, image, "has no integer id")
                    continue
                if annotation_id in seen:
                    yield skip("annotation", annotation_id, image, "repeats an earlier annotation's id")
                    continue
                seen.add(annotation_id)
                try:
                    converted = convert_annotation(annotation, split=split, image_id=image_id, image_bytes=data,
                                                   image_shape=shape, iuv=iuv)
                except InconsistentAnnotation as err:
                    yield skip("annotation", annotation_id, image, str(err))
                    continue
                counts["records"] += 1
                counts["keypoints_outside_image"] += converted.keypoints_outside_image
                counts["records_without_segmentation"] += not converted.has_segmentation
                yield Example(annotation_id, converted.record)

        summary = {
            "annotation_file": os.path.relpath(source.path, manual_dir),
            "annotations": source.num_annotations,
            "densepose_annotations": source.num_densepose,
            "not_densepose": source.num_annotations - source.num_densepose,
            **{key: counts[key] for key in ("records", "skipped_image", "skipped_annotation", "skipped_iuv",
                                            "keypoints_outside_image", "records_without_segmentation")},
        }
        self.record_split(split, splits=summary)
        logging.info("coco_densepose %s: %d records from %d DensePose annotations (%d people without DensePose "
                     "data not used); skipped %d for their image, %d inconsistent, %d for their IUV map (listed in "
                     "the dataset's metadata.json)", split, summary["records"], summary["densepose_annotations"],
                     summary["not_densepose"], summary["skipped_image"], summary["skipped_annotation"],
                     summary["skipped_iuv"])
