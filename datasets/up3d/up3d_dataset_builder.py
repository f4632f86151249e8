"""TFDS builder of UP-3D (Lassner et al., CVPR 2017) as distributed: one record per image.

Build (``M/up-3d/`` is the extracted ``up-3d.zip``, see :data:`MANUAL_DOWNLOAD_INSTRUCTIONS`)::

    python -m datasets build up3d --manual_dir=M --data_dir=D

or from Python, with the SMPL-dependent fields (``vertices``, ``joints``)::

    Builder(data_dir=D, manual_dir=M, smpl_path="basicModel_neutral_lbs_10_207_0_v1.0.0.pkl").download_and_prepare()

With ``--iuv_dir=DIR`` (``Builder(iuv_dir=DIR)``) records also hold the DensePose
IUV map of their image, ``DIR/NNNNN_image_IUV.png`` or ``DIR/up-3d/NNNNN_image_IUV.png``
(:func:`datasets._common.read_iuv`).

Read::

    source = tfds.data_source("up3d", data_dir=D, split="trainval")   # train, val, test, trainval

Each record (``dct_jax.data.schema``) holds the whole ``NNNNN_image.png`` (its
original PNG bytes), the person crop (the fitted body's silhouette box from
``_render_light.png`` scaled by :data:`CROP_SCALE`, as SPIN/GraphCMR), the 14
LSP joints of ``_joints.npy`` as the first 14 cocoplus19 keypoints (the other
five unlabelled), the fitted SMPL ``pose`` and ``betas`` exactly as stored,
and the weak-perspective camera of the crop derived from the fit's perspective
camera. README.md documents the conventions and their sources.

An example whose image does not decode or whose annotation is inconsistent is
skipped; each one is logged and listed, with the reason, in the dataset's
metadata (``builder.info.metadata["skipped"][split]``).
A split whose files are missing is left out (``splits=`` / ``--splits`` requires
them), and one whose every example is skipped is not written; both are reported
(``datasets/_real.py``, ``datasets/README.md``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from datasets._common import (CROP_SCALE, PosedBody, Skip, crop_around, fit_weak_perspective, joints_box,
                              read_body_file, read_image, read_iuv, reprojection_error_px, schema_record, some)
from datasets._real import Example, RealBuilder, Skipped, SplitFiles
from dct_jax.data import schema

HOMEPAGE = "http://files.is.tuebingen.mpg.de/classner/up/"
ARCHIVE_URL = "http://files.is.tuebingen.mpg.de/classner/up/datasets/up-3d.zip"
FOLDER = "up-3d"
SPLITS = ("train", "val", "test", "trainval")
REQUIRED_SUFFIXES = ("_image.png", "_body.pkl", "_joints.npy", "_fit_crop_info.txt")
RENDER_SUFFIX = "_render_light.png"
NUM_LSP = 14  # LSP's joints = the first 14 cocoplus19 keypoints, same order
RT_TOLERANCE = 1e-6  # UP-3D's camera rotation rt is zero; anything else is not supported
_LIST_LINE = re.compile(r"/?(\d+)_image\.png")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
UP-3D must be downloaded by hand (released for research purposes; see the website's licence):
  1. From {HOMEPAGE} (section Datasets) download the UP-3D archive
     up-3d.zip (4.6 GB): {ARCHIVE_URL}
     (upi-s1h.zip, 45 GB, holds 31-part segmentations of the same images and is not needed.)
  2. Extract it into the manual directory M so that M/{FOLDER}/ holds, for every image NNNNN:
       NNNNN_image.png       the image
       NNNNN_body.pkl        the SMPL fit: pose, betas, t, rt, f, trans
       NNNNN_joints.npy      14 LSP joints, (3, 14): x, y, visibility
       NNNNN_fit_crop_info.txt  where the image used for the fit sits in NNNNN_image.png
       NNNNN_render_light.png   the rendered fit (used for the person box; optional)
     and the split lists M/{FOLDER}/train.txt, val.txt, test.txt, trainval.txt.
  3. python -m datasets build up3d --manual_dir=M --data_dir=D
"""


# ----------------------------------------------------------------------------- finding the files


def find_root(manual_dir: str | os.PathLike | None) -> str:
    """``M/up-3d`` (or ``M`` itself when it is the extracted ``up-3d`` folder)."""
    if manual_dir is None:
        return FOLDER
    manual_dir = os.fspath(manual_dir)
    nested = os.path.join(manual_dir, FOLDER)
    if not os.path.isdir(nested) and os.path.isfile(os.path.join(manual_dir, "trainval.txt")):
        return manual_dir
    return nested


def read_split_list(path: str) -> list[str]:
    """The image numbers (``"00001"``) of a split list of lines ``/00001_image.png``, in order.

    Raises:
      ValueError: a line of another form (naming the file and line).
    """
    ids: list[str] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as stream:
        for number, line in enumerate(stream, 1):
            fields = line.split()
            if not fields:
                continue
            match = _LIST_LINE.fullmatch(fields[0])
            if not match:
                raise ValueError(f"{path}:{number}: expected a line like /00001_image.png, got {line.strip()!r}")
            if match.group(1) not in seen:  # a duplicate would be one record twice
                seen.add(match.group(1))
                ids.append(match.group(1))
    return ids


def find_splits(manual_dir: str | os.PathLike, splits: tuple[str, ...] | None = None) -> dict[str, SplitFiles]:
    """Each split's image numbers (``"00001"``, in list order), or what it lacks.

    A split lacks its list ``M/up-3d/<split>.txt`` or a file of a listed image.

    Raises:
      ValueError: a split list line that names no image.
    """
    root = find_root(manual_dir)
    if not os.path.isdir(root):
        return {split: SplitFiles(missing=(f"there is no folder {root}",)) for split in splits or SPLITS}
    present = set(os.listdir(root))
    found = {}
    for split in splits or SPLITS:
        path = os.path.join(root, f"{split}.txt")
        if not os.path.isfile(path):
            found[split] = SplitFiles(missing=(f"no split list {path}",))
            continue
        ids = read_split_list(path)
        missing = [f"{image_id}{suffix}" for image_id in ids for suffix in REQUIRED_SUFFIXES
                   if f"{image_id}{suffix}" not in present]
        found[split] = SplitFiles(source=ids, missing=(
            f"{len(missing)} file(s) of the images {split}.txt lists are not in {root}: {some(missing)} "
            "(an incomplete extraction?)",) if missing else ())
    return found


# ----------------------------------------------------------------------------- reading one example


@dataclasses.dataclass(frozen=True)
class Fit:
    """The SMPL fit of ``NNNNN_body.pkl``.

    Attributes:
      pose: ``(72,)`` axis-angle, joint 0 the global rotation in the camera frame.
      betas: ``(10,)`` shape coefficients of the neutral SMPL model.
      translation: ``(3,)`` ``t + trans`` in metres: where the body's origin is
        in the camera frame (``rt`` is zero).
      focal: focal length ``f`` in pixels of the fit image.
      j2d: ``(24, 2)`` the fit's own projection of the 24 SMPL joints in fit
        image pixels, if the file has it (``j2d``), else None.
    """

    pose: np.ndarray
    betas: np.ndarray
    translation: np.ndarray
    focal: float
    j2d: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class CropInfo:
    """``NNNNN_fit_crop_info.txt``: ``height width y1 y2 x1 x2``.

    The fit was made on an image of ``height x width`` pixels that is the
    region ``[x1, x2) x [y1, y2)`` of ``NNNNN_image.png`` resized.
    """

    height: int
    width: int
    y1: int
    y2: int
    x1: int
    x2: int

    @property
    def scale(self) -> tuple[float, float]:
        """``(ax, ay)``: image pixels per fit pixel along x and y."""
        return (self.x2 - self.x1) / self.width, (self.y2 - self.y1) / self.height


def _numbers(body: dict[str, Any], key: str, size: int, name: str, *, required: bool = True) -> np.ndarray | None:
    if key not in body:
        if required:
            raise Skip(f"{name} has no {key!r} (it has {sorted(body)})")
        return None
    try:
        value = np.asarray(body[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise Skip(f"{name}: {key!r} is not numeric") from None
    if value.size != size:
        raise Skip(f"{name}: {key!r} has {value.size} values, expected {size}")
    if not np.all(np.isfinite(value)):
        raise Skip(f"{name}: {key!r} has NaN or inf")
    return value


def parse_fit(body: dict[str, Any], name: str = "_body.pkl") -> Fit:
    """Checks a ``_body.pkl``'s fields and returns the fit.

    Raises:
      Skip: a missing or ill-shaped field, non-finite numbers, ``t_z + trans_z <= 0``
        (body behind the camera), ``f <= 0``, or a nonzero ``rt``.
    """
    pose = _numbers(body, "pose", schema.NUM_POSE, name)
    betas = _numbers(body, "betas", schema.NUM_BETAS, name)
    t = _numbers(body, "t", 3, name)
    focal = _numbers(body, "f", 1, name)[0]
    rt = _numbers(body, "rt", 3, name, required=False)
    trans = _numbers(body, "trans", 3, name, required=False)
    if rt is not None and np.max(np.abs(rt)) > RT_TOLERANCE:
        raise Skip(f"{name}: camera rotation rt = {rt.tolist()} is not zero (UP-3D's fits have rt = 0; "
                   "a rotated camera is not supported)")
    translation = t + (trans if trans is not None else 0.0)
    if focal <= 0:
        raise Skip(f"{name}: focal length f = {focal} is not positive")
    if translation[2] <= 0:
        raise Skip(f"{name}: the body is not in front of the camera (t + trans = {translation.tolist()})")
    j2d = None
    if "j2d" in body:
        try:
            points = np.asarray(body["j2d"], dtype=np.float64)
        except (TypeError, ValueError):
            points = np.zeros((0,))
        if points.ndim == 2 and points.shape[0] >= schema.NUM_JOINTS and points.shape[1] == 2:
            j2d = points[:schema.NUM_JOINTS]
    return Fit(pose=pose, betas=betas, translation=translation, focal=float(focal), j2d=j2d)


def read_joints(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``_joints.npy`` -> ``(14, 2)`` image pixels and ``(14,)`` visibility/confidence.

    Raises:
      Skip: unreadable, not ``(3, 14)`` numbers, or non-finite.
    """
    name = os.path.basename(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise Skip(f"{name} is not a readable .npy ({err})") from None
    if not isinstance(array, np.ndarray) or array.shape != (3, NUM_LSP) or array.dtype.kind not in "biuf":
        shape = getattr(array, "shape", None)
        raise Skip(f"{name} has shape {shape}, expected (3, {NUM_LSP}) rows x, y, visibility")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise Skip(f"{name} has NaN or inf")
    return array[:2].T, array[2]


def read_crop_info(path: str) -> CropInfo:
    """``_fit_crop_info.txt`` -> :class:`CropInfo`.

    Raises:
      Skip: not six integers, or an empty size or region.
    """
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            values = [int(v) for v in stream.read().split()]
    except ValueError:
        values = []
    if len(values) != 6:
        raise Skip(f"{name}: expected six integers 'height width y1 y2 x1 x2'")
    info = CropInfo(*values)
    if info.height <= 0 or info.width <= 0 or info.y2 <= info.y1 or info.x2 <= info.x1:
        raise Skip(f"{name}: empty fit image or region {values}")
    return info


def silhouette_box(path: str, image_shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """``[x, y, w, h]`` of the non-white pixels of ``_render_light.png`` (SPIN), or ``(None, why not)``."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        return None, f"no {name}"
    try:
        render = cv2.imread(path, cv2.IMREAD_COLOR)
    except cv2.error:
        render = None
    if render is None:
        return None, f"{name} is not a readable image"
    if render.shape[:2] != tuple(image_shape):
        return None, f"{name} is {render.shape[:2]}, the image {tuple(image_shape)}"
    ys, xs = np.nonzero(render.min(axis=2) < 255)
    if xs.size == 0:
        return None, f"{name} is blank"
    x0, y0 = xs.min(), ys.min()
    return np.array([x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0], np.float64), ""


# ----------------------------------------------------------------------------- cameras


@dataclasses.dataclass(frozen=True)
class FitCamera:
    """UP-3D's pinhole camera, mapped into ``NNNNN_image.png`` pixels.

    A body-frame point ``X`` (SMPL output without translation; metres, x
    right, y down, +Z forward) lands in the fit image at ``f (X + T)[:2] /
    (X + T)[2] + c``, ``c = (width // 2, height // 2)`` (the fit code's image
    centre, Python 2 integer division), and that point of the fit image at
    ``(x1 + ax u, y1 + ay v)`` in ``NNNNN_image.png``.
    """

    focal: float
    translation: np.ndarray
    crop: CropInfo

    @property
    def principal_point(self) -> np.ndarray:
        return np.array([self.crop.width // 2, self.crop.height // 2], np.float64)

    def project_fit(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` body-frame points -> ``(N, 2)`` fit-image pixels."""
        placed = np.asarray(points, np.float64) + self.translation
        return self.focal * placed[:, :2] / placed[:, 2:3] + self.principal_point

    def fit_to_image(self, uv: np.ndarray) -> np.ndarray:
        """``(N, 2)`` fit-image pixels -> ``NNNNN_image.png`` pixels."""
        return np.asarray(uv, np.float64) * np.array(self.crop.scale) + [self.crop.x1, self.crop.y1]

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` body-frame points -> ``(N, 2)`` image pixels (full perspective)."""
        return self.fit_to_image(self.project_fit(points))

    def weak_perspective(self, crop_box: np.ndarray) -> np.ndarray:
        """``(s, tx, ty)`` of ``crop_box`` that matches the perspective camera at the body origin's depth.

        ``s = 2 a f / (side T_z)`` (``a`` the mean of ``ax``, ``ay``) and
        ``(tx, ty) = T[:2] + o / s``, ``o`` the crop coordinates of the
        principal point: exact for points at depth ``T_z``; a point ``dz``
        nearer or farther is off by ``dz / T_z`` of its distance from the
        principal point's ray (UP-3D: ``f = 5000`` px, ``T_z`` about 50 m).
        """
        x0, y0, side = (float(v) for v in crop_box)
        pixels_per_fit_pixel = float(np.mean(self.crop.scale))
        scale = 2.0 * pixels_per_fit_pixel * self.focal / (side * self.translation[2])
        centre = self.fit_to_image(self.principal_point[None])[0]
        offset = (centre - [x0, y0]) * (2.0 / side) - 1.0
        return np.array([scale, self.translation[0] + offset[0] / scale,
                         self.translation[1] + offset[1] / scale], np.float64)


# ----------------------------------------------------------------------------- one record


@dataclasses.dataclass
class Notes:
    """What the build log and metadata report about an example besides its record."""

    box_from_joints: str = ""  # why the silhouette box was not used ("" when it was)
    j2d_error_px: float | None = None  # median |our projection - the file's j2d| over 24 joints, fit pixels
    keypoint_error_px: float | None = None  # median |camera projection - labelled LSP joint|, image pixels


def convert_example(root: str, image_id: str, body: PosedBody | None = None,
                    iuv_dir: str | None = None) -> tuple[dict[str, Any], Notes]:
    """The record of image ``image_id`` (``"00001"``) of the UP-3D folder ``root``.

    With ``iuv_dir`` the record holds the image's DensePose IUV map if
    ``iuv_dir`` has one (:func:`read_iuv` of ``up-3d/NNNNN_image.png``).

    Raises:
      Skip: an unreadable image or file, an IUV map of the wrong size or
        format, or an inconsistent annotation.
    """
    prefix = os.path.join(root, image_id)
    notes = Notes()
    image, (height, width) = read_image(prefix + "_image.png")
    # <iuv_dir>/up-3d/NNNNN_image_IUV.png (mirroring the manual directory) or <iuv_dir>/NNNNN_image_IUV.png
    iuv = read_iuv(iuv_dir, f"{FOLDER}/{image_id}_image.png", (height, width))
    fit = parse_fit(read_body_file(prefix + "_body.pkl"), f"{image_id}_body.pkl")
    xy, visibility = read_joints(prefix + "_joints.npy")
    camera = FitCamera(focal=fit.focal, translation=fit.translation, crop=read_crop_info(prefix + "_fit_crop_info.txt"))

    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
    labelled = (visibility > 0) & inside
    bbox, why = silhouette_box(prefix + RENDER_SUFFIX, (height, width))
    if bbox is None:
        bbox = joints_box(xy, labelled)
        if bbox is None:
            raise Skip(f"no person box: {why} and fewer than two labelled joints in the image")
        notes.box_from_joints = why
    crop_box = crop_around(bbox)

    keypoints = np.zeros((schema.NUM_KEYPOINTS, 2), np.float64)
    keypoints[:NUM_LSP] = xy
    keypoint_visibility = np.zeros((schema.NUM_KEYPOINTS,), np.uint8)
    keypoint_visibility[:NUM_LSP] = np.where(labelled, schema.VISIBILITY_VISIBLE, schema.VISIBILITY_UNLABELLED)

    mesh = {}
    if body is None:
        weak = camera.weak_perspective(crop_box)
        body_model = "smpl"
    else:
        vertices, joints = body(fit.pose, fit.betas)
        weak = fit_weak_perspective(vertices, camera.project(vertices), crop_box)
        body_model = body.body_model
        mesh = {"vertices": vertices, "joints": joints}
        if fit.j2d is not None:
            notes.j2d_error_px = float(np.median(np.linalg.norm(camera.project_fit(joints) - fit.j2d, axis=1)))
        if labelled.any():
            errors = reprojection_error_px(body.keypoints(vertices, joints)[:NUM_LSP], weak, crop_box, xy)
            notes.keypoint_error_px = float(np.median(errors[labelled]))
    record = schema_record(
        record_id=f"up3d/{image_id}", image_id=f"{image_id}_image.png", body_model=body_model,
        image=image, image_shape=(height, width), bbox=bbox, crop_box=crop_box,
        keypoints=keypoints, keypoints_visibility=keypoint_visibility,
        smpl_pose=fit.pose, smpl_betas=fit.betas, camera=weak, iuv=iuv, has_iuv=iuv is not None, **mesh)
    return record, notes


# ----------------------------------------------------------------------------- builder


class Builder(RealBuilder):
    """UP-3D: LSP/MPII images with SMPL fits, 14 LSP joints and a weak-perspective crop camera.

    ``smpl_path``: the SMPL model UP-3D was fitted with (the neutral
    ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``); records then also hold ``vertices`` and
    ``joints`` and the camera is fitted to the projected mesh. ``iuv_dir``: maps
    ``NNNNN_image_IUV.png`` in ``up-3d/`` or the folder itself.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: one record per image of up-3d.zip; pose and betas as fitted; "
                 "LSP joints as cocoplus19 keypoints; silhouette-box crop; weak-perspective camera.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DATASET, HOMEPAGE, SOURCE, SPLITS = "UP-3D", HOMEPAGE, ARCHIVE_URL, SPLITS
    MEASURES = ("j2d_error_px", "keypoint_error_px")
    UNIT = "images"

    def _find_splits(self, manual_dir: str, splits: tuple[str, ...] | None) -> dict[str, SplitFiles]:
        return find_splits(manual_dir, splits)

    def _metadata(self, splits: Mapping[str, SplitFiles]) -> dict[str, Any]:
        body = self.posed_body(self.model_paths["smpl_path"])
        logging.info("up3d: reading %s (%s)", find_root(self.manual_dir),
                     ", ".join(f"{split} {len(files.source)}" for split, files in splits.items()))
        return {"body_model": body.body_model if body else "smpl",
                "camera": ("least squares on the perspective projection of the mesh" if body else
                           "the perspective camera at the body origin's depth"),
                "crop_scale": CROP_SCALE, "box_from_joints": {}}

    def _examples(self, split: str, source: list[str]) -> Iterator[Example | Skipped]:
        root, body = find_root(self.manual_dir), self.posed_body(self.model_paths["smpl_path"])
        from_joints = []
        for image_id in source:
            name = f"{image_id}_image.png"
            try:
                record, notes = convert_example(root, image_id, body, self.iuv_dir)
            except Skip as err:
                yield Skipped(name, str(err), {"image": name})
                continue
            if notes.box_from_joints:
                from_joints.append({"image": name, "reason": notes.box_from_joints})
            yield Example(image_id, record, notes)
        self.record_split(split, box_from_joints=from_joints)
        if from_joints:
            logging.warning("up3d %s: %d person box(es) from the labelled joints instead of the rendered fit",
                            split, len(from_joints))
