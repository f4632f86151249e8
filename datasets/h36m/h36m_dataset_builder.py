"""TFDS builder of Human3.6M (Ionescu et al., TPAMI 2014) through SPIN's preprocessed ``.npz`` files.

Build (``M`` holds the ``h36m_<split>.npz`` files and the frames at the paths their
``imgname`` give, relative to ``M``; see :data:`MANUAL_DOWNLOAD_INSTRUCTIONS`)::

    python -m datasets build h36m --manual_dir=M --data_dir=D [--smpl_path=SMPL.pkl]

Read::

    source = tfds.data_source("h36m", data_dir=D, split="valid_protocol2")

Each ``M/h36m_<name>.npz`` becomes split ``<name>`` (SPIN's files: ``train``,
``valid_protocol1``, ``valid_protocol2``) and each of its rows one record
(``dct_jax.data.schema``): the frame (its own JPEG bytes), SPIN's crop (the square
of side ``200 * scale`` around ``center``), SPIN's 24 "ground truth" joints (J24)
as cocoplus19 keypoints in 2D (``part``, when the file has it) and 3D (``S``:
metres, camera frame, root-centred), and the SMPL ``pose``/``shape`` exactly as
stored where the file has them (``has_smpl``). Without SMPL fits the records carry
the 3D keypoints only. With ``iuv_dir`` records also hold the frame's DensePose IUV
map, ``DIR/images/<frame>_IUV.png`` or ``DIR/<frame>_IUV.png`` (``<frame>`` the image
name without ``.jpg``). README.md documents the conventions and their sources.

A row whose image cannot be read or whose annotation is inconsistent is skipped;
each one is logged and listed, with the reason, in the dataset's metadata
(``builder.info.metadata["skipped"][split]``).
A split whose files are missing is left out (``splits=`` / ``--splits`` requires
them), and one whose every example is skipped is not written; both are reported
(``datasets/_real.py``, ``datasets/README.md``).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from datasets import is_split_name
from datasets._common import (PosedBody, Skip, fit_weak_perspective, joints_box, read_image, read_iuv,
                              reprojection_error_px, schema_record, some)
from datasets._real import Example, RealBuilder, Skipped, SplitFiles
from dct_jax import npz_files
from dct_jax.data import schema

HOMEPAGE = "http://vision.imar.ro/human3.6m/"
SPIN_URL = "https://github.com/nkolot/SPIN"
FILE_PATTERN = "h36m_*.npz"  # M/h36m_<split>.npz -> split <split>
SPIN_SPLITS = ("train", "valid_protocol1", "valid_protocol2")
BOX_SIDE_PER_SCALE = 200.0  # SPIN: the crop's side is 200 * scale pixels (utils/imutils.get_transform)
MIN_CAMERA_KEYPOINTS = 3  # labelled 2D keypoints needed to fit a weak-perspective camera
MAX_NAMED_SKIPPED = 10_000  # per split in the metadata (the log names every one)

# SPIN's constants.JOINT_NAMES[25:]: the 24 "ground truth" joints (J24) of its .npz files.
SPIN_J24_NAMES = (
    "Right Ankle", "Right Knee", "Right Hip", "Left Hip", "Left Knee", "Left Ankle",
    "Right Wrist", "Right Elbow", "Right Shoulder", "Left Shoulder", "Left Elbow", "Left Wrist",
    "Neck (LSP)", "Top of Head (LSP)", "Pelvis (MPII)", "Thorax (MPII)", "Spine (H36M)", "Jaw (H36M)",
    "Head (H36M)", "Nose", "Left Eye", "Right Eye", "Left Ear", "Right Ear",
)
NUM_J24 = len(SPIN_J24_NAMES)
# cocoplus19 keypoint <- J24 joint(s), the first labelled one wins. The head top is
# Human3.6M's head joint first: SPIN evaluates Human3.6M on J24_TO_J14 = [0, ..., 12, 18]
# (as dct_jax.protocols' first 14 cocoplus19 keypoints), and its Human3.6M files never
# label J24 13 (LSP's head top).
COCOPLUS19_FROM_J24: dict[str, tuple[str, ...]] = {
    "right_ankle": ("Right Ankle",), "right_knee": ("Right Knee",), "right_hip": ("Right Hip",),
    "left_hip": ("Left Hip",), "left_knee": ("Left Knee",), "left_ankle": ("Left Ankle",),
    "right_wrist": ("Right Wrist",), "right_elbow": ("Right Elbow",), "right_shoulder": ("Right Shoulder",),
    "left_shoulder": ("Left Shoulder",), "left_elbow": ("Left Elbow",), "left_wrist": ("Left Wrist",),
    "neck": ("Neck (LSP)",), "head_top": ("Head (H36M)", "Top of Head (LSP)"),
    "nose": ("Nose",), "left_eye": ("Left Eye",), "right_eye": ("Right Eye",),
    "left_ear": ("Left Ear",), "right_ear": ("Right Ear",),
}
# (19, 2): J24 index of each cocoplus19 keypoint's first and second source (-1: none).
J24_SOURCES = np.array([[SPIN_J24_NAMES.index(n) for n in COCOPLUS19_FROM_J24[name]]
                        + [-1] * (2 - len(COCOPLUS19_FROM_J24[name])) for name in schema.KEYPOINT_NAMES], np.int64)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Human3.6M must be downloaded by hand (free for academic use after registration; read its licence):
  1. Register at {HOMEPAGE} and download, per subject, the Videos, the Segments
     "BBoxes MAT" (MySegmentsMat/ground_truth_bb) and the Poses "D3 Positions Mono"
     (MyPoseFeatures/D3_Positions_mono; for training also "D2 Positions"):
     S1, S5, S6, S7, S8 for training, S9 and S11 for validation.
  2. Make the preprocessed files with SPIN's scripts ({SPIN_URL}; SPIN's fetch_data.sh
     does NOT include Human3.6M's files, its licence forbids it):
       datasets/preprocess/h36m.py (`python preprocess_datasets.py --eval_files`) writes
         h36m_valid_protocol1.npz (S9, S11, all 4 cameras) and h36m_valid_protocol2.npz
         (S9, S11, camera 60457274 only) into data/dataset_extras/, and extracts every 5th
         frame to <H36M root>/images/S9_Directions_1.54138969_000001.jpg;
       datasets/preprocess/h36m_train.py writes h36m_train.npz (S1, S5-S8, every 5th frame;
         add pose, shape, has_smpl if you have SMPL fits, e.g. MoSh's, which are not public).
     Keys: imgname (N,), center (N, 2), scale (N,), S (N, 24, 4); optional part (N, 24, 3),
     pose (N, 72), shape (N, 10), has_smpl (N,).
  3. Put them into the manual directory M:
       M/h36m_train.npz, M/h36m_valid_protocol1.npz, M/h36m_valid_protocol2.npz
         (any of them; each M/h36m_<name>.npz becomes split <name>)
       M/images/...  the frames, at the paths the files' imgname give relative to M
         (SPIN's imgname is images/<frame>.jpg: M is SPIN's H36M root)
  4. python -m datasets build h36m --manual_dir=M --data_dir=D [--smpl_path=SMPL.pkl]
"""


# ----------------------------------------------------------------------------- the .npz files


@dataclasses.dataclass(frozen=True)
class Annotations:
    """The rows of one ``h36m_<split>.npz`` (``N`` rows; SPIN's field names).

    Attributes:
      path: the file.
      imgname: ``N`` image paths relative to the manual directory.
      center: ``(N, 2)`` crop centre, image pixels.
      scale: ``(N,)`` crop side / 200.
      S: ``(N, 24, 4)`` J24 3D joints (metres, camera frame) and confidence.
      part: ``(N, 24, 3)`` J24 2D joints (image pixels) and visibility, or None.
      pose: ``(N, 72)`` SMPL axis-angle, or None; ``shape`` ``(N, 10)`` betas, or None.
      has_smpl: ``(N,)`` bool, which rows' ``pose``/``shape`` hold a fit (all without
        ``has_smpl`` in the file), or None without ``pose``.
    """

    path: str
    imgname: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    S: np.ndarray  # noqa: N815  (SPIN's name)
    part: np.ndarray | None
    pose: np.ndarray | None
    shape: np.ndarray | None
    has_smpl: np.ndarray | None

    def __len__(self) -> int:
        return len(self.imgname)

    @property
    def keys(self) -> list[str]:
        """The file's fields that this builder reads."""
        optional = {"part": self.part, "pose": self.pose, "shape": self.shape, "has_smpl": self.has_smpl}
        return ["imgname", "center", "scale", "S"] + [k for k, v in optional.items() if v is not None]


def read_annotations(path: str) -> Annotations:
    """Reads and checks one ``h36m_<split>.npz`` (never unpickles anything).

    Raises:
      ValueError: naming the file and field: not a readable ``.npz``, a missing
        required field (``imgname``, ``center``, ``scale``, ``S``), a field of
        another shape than SPIN's (rows counted by ``imgname``), ``pose`` without
        ``shape`` or the reverse, or image names that are not strings.
    """
    name = os.path.basename(path)
    keys = ("imgname", "center", "scale", "S", "part", "pose", "shape", "has_smpl")
    try:
        data = npz_files.read_arrays(path, keys, where=name)
    except ValueError as err:
        hint = (" (save image names as a string array: np.savez(..., imgname=np.asarray(names, str)))"
                if "'imgname'" in str(err) else "")
        raise ValueError(f"{err}{hint}") from None
    missing = [k for k in ("imgname", "center", "scale", "S") if k not in data]
    if missing:
        raise ValueError(f"{name} has no {missing} (it has {sorted(data)} of the fields read); "
                         "expected SPIN's imgname, center, scale, S")
    names = data["imgname"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise ValueError(f"{name}: 'imgname' must be a 1-D array of strings, got {names.dtype} {names.shape}")
    try:
        imgname = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: 'imgname' is not UTF-8 ({err})") from None
    n = len(imgname)

    def field(key: str, shape: tuple[int, ...], required: bool = False) -> np.ndarray | None:
        if key not in data:
            return None
        value = data[key]
        if key == "scale" and value.shape == (n, 1):
            value = value[:, 0]
        if value.shape != (n, *shape) or value.dtype.kind not in "biuf":
            raise ValueError(f"{name}: {key!r} has shape {value.shape} ({value.dtype}), expected numbers "
                             f"of shape {(n, *shape)} (N = {n} rows as 'imgname')")
        return value.astype(np.float64)

    pose, betas = field("pose", (schema.NUM_POSE,)), field("shape", (schema.NUM_BETAS,))
    if (pose is None) != (betas is None):
        raise ValueError(f"{name} has {'pose' if betas is None else 'shape'} but not "
                         f"{'shape' if betas is None else 'pose'}; SMPL fits need both")
    has_smpl = None
    if pose is not None:
        flags = field("has_smpl", ())
        has_smpl = np.ones(n, bool) if flags is None else flags > 0
    return Annotations(path=path, imgname=imgname, center=field("center", (2,)), scale=field("scale", ()),
                       S=field("S", (NUM_J24, 4)), part=field("part", (NUM_J24, 3)), pose=pose, shape=betas,
                       has_smpl=has_smpl)


def find_split_files(root: str) -> dict[str, str]:
    """``{split: path}`` of the ``h36m_<split>.npz`` files in ``root``.

    Raises:
      ValueError: a file name whose ``<split>`` TFDS cannot read back.
    """
    files = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(root), FILE_PATTERN))):
        split = os.path.basename(path)[len("h36m_"):-len(".npz")]
        if not is_split_name(split):
            raise ValueError(f"{path}: split name {split!r} must be lowercase letters, digits and _, starting "
                             "with a letter (and not 'all'); rename the file, e.g. h36m_train.npz")
        files[split] = path
    return files


def image_path(root: str, imgname: str) -> str:
    """``root/imgname``; ``imgname`` must stay inside ``root``.

    Raises:
      Skip: an empty, absolute or escaping (``..``) name.
    """
    relative = os.path.normpath(imgname) if imgname else ""
    if not imgname or os.path.isabs(imgname) or relative == ".." or relative.startswith(".." + os.sep):
        raise Skip(f"image name {imgname!r} is not a path inside the manual directory")
    return os.path.join(root, relative)


def image_problems(root: str, ann: Annotations) -> list[str]:
    """What is missing of the images ``ann`` names: folders they point into, or every one of them."""
    folders: dict[str, set[str] | None] = {}
    present = 0
    for imgname in ann.imgname:
        try:
            path = image_path(root, imgname)
        except Skip:
            continue
        folder = os.path.dirname(path)
        if folder not in folders:
            folders[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else None
        present += folders[folder] is not None and os.path.basename(path) in folders[folder]
    missing = sorted(f for f, names in folders.items() if names is None)
    file = os.path.basename(ann.path)
    if missing:
        return [f"the image folder(s) that {file} names are missing: {some(missing)}"]
    if present == 0 and len(ann):
        return [f"none of the {len(ann)} images that {file} names is there (e.g. {os.path.join(root, ann.imgname[0])})"]
    return []


def find_splits(manual_dir: str | os.PathLike, splits: tuple[str, ...] | None = None) -> dict[str, SplitFiles]:
    """Each split's annotations (:class:`Annotations`, the ``.npz`` read), or what it lacks.

    A split lacks its ``h36m_<split>.npz``, the folders its image names point into, or all of its
    images. Without ``splits``: the split of each file (SPIN's when there is none).

    Raises:
      ValueError: a malformed ``.npz`` file (:func:`read_annotations`) or file name (:func:`find_split_files`).
    """
    root = os.fspath(manual_dir)
    files = find_split_files(root)
    found = {}
    for split in splits or tuple(files) or SPIN_SPLITS:
        if split not in files:
            found[split] = SplitFiles(missing=(f"there is no h36m_{split}.npz in {root}" if splits else
                                               f"there is no {FILE_PATTERN} file in {root} (e.g. h36m_valid_protocol2.npz)",))
            continue
        ann = read_annotations(files[split])
        found[split] = SplitFiles(source=ann, missing=tuple(image_problems(root, ann)))
    return found


# ----------------------------------------------------------------------------- one record


def map_j24(points: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """J24 joints -> cocoplus19 keypoints (:data:`COCOPLUS19_FROM_J24`).

    Args:
      points: ``(..., 24, D)`` J24 coordinates.
      confidence: ``(..., 24)`` J24 confidence/visibility; > 0 is labelled.

    Returns:
      ``(..., 19, D)`` keypoints (zeros where unlabelled) and ``(..., 19)`` bool labelled.
    """
    points, confidence = np.asarray(points), np.asarray(confidence)
    out = np.zeros((*points.shape[:-2], len(J24_SOURCES), points.shape[-1]), points.dtype)
    labelled = np.zeros((*points.shape[:-2], len(J24_SOURCES)), bool)
    for choice in reversed(range(J24_SOURCES.shape[1])):  # the first source overrides the second
        for k, j in enumerate(J24_SOURCES[:, choice]):
            if j < 0:
                continue
            take = confidence[..., j] > 0
            out[..., k, :] = np.where(take[..., None], points[..., j, :], out[..., k, :])
            labelled[..., k] |= take
    return out, labelled


def crop_box_of(center: np.ndarray, scale: float) -> np.ndarray:
    """SPIN's crop ``[x0, y0, side]``: the square of side ``200 * scale`` around ``center``."""
    side = BOX_SIDE_PER_SCALE * float(scale)
    return np.array([center[0] - 0.5 * side, center[1] - 0.5 * side, side], np.float64)


def _finite(value: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(value)):
        raise Skip(f"{what} has NaN or inf")
    return value


@dataclasses.dataclass
class Notes:
    """What the build log and metadata report about a row besides its record."""

    keypoint_error_px: float | None = None  # median |camera projection - labelled 2D keypoint|, pixels


def convert_row(root: str, split: str, index: int, ann: Annotations,
                body: PosedBody | None = None, iuv_dir: str | None = None) -> tuple[dict[str, Any], Notes]:
    """The record of row ``index`` of split ``split``, with the frame's IUV map if ``iuv_dir`` has one.

    Raises:
      Skip: an unsafe, missing or unreadable image, an IUV map of the wrong
        size or format, or an inconsistent row (non-finite numbers, ``scale <=
        0``, no labelled 3D joint, a camera that does not fit).
    """
    imgname = ann.imgname[index]
    path = image_path(root, imgname)
    center = _finite(ann.center[index], "'center'")
    scale = float(_finite(ann.scale[index], "'scale'"))
    if scale <= 0:
        raise Skip(f"'scale' = {scale} is not positive")
    joints3d = _finite(ann.S[index], "'S'")
    keypoints3d, labelled3d = map_j24(joints3d[:, :3], joints3d[:, 3])
    if not labelled3d.any():
        raise Skip("no cocoplus19 joint of 'S' is labelled (confidence all 0)")
    part = None if ann.part is None else _finite(ann.part[index], "'part'")
    has_smpl = ann.pose is not None and bool(ann.has_smpl[index])
    if has_smpl:
        pose, betas = _finite(ann.pose[index], "'pose'"), _finite(ann.shape[index], "'shape'")
    if not os.path.isfile(path):
        raise Skip(f"no image {path}")
    image, (height, width) = read_image(path)
    iuv = read_iuv(iuv_dir, os.path.relpath(path, root), (height, width))

    crop_box = crop_box_of(center, scale)
    values: dict[str, Any] = {}
    if iuv is not None:  # DensePose's chart is SMPL's, with or without a fit
        values.update(iuv=iuv, has_iuv=True, body_model="smpl")
    visible = np.zeros(schema.NUM_KEYPOINTS, bool)
    if part is not None:
        keypoints, labelled = map_j24(part[:, :2], part[:, 2])
        inside = ((keypoints[:, 0] >= 0) & (keypoints[:, 0] <= width)
                  & (keypoints[:, 1] >= 0) & (keypoints[:, 1] <= height))
        visible = labelled & inside
        values.update(keypoints=keypoints, has_keypoints=bool(visible.any()),
                      keypoints_visibility=np.where(visible, schema.VISIBILITY_VISIBLE, schema.VISIBILITY_UNLABELLED))
    bbox = joints_box(values["keypoints"], visible) if part is not None else None
    if bbox is None:
        bbox = np.array([crop_box[0], crop_box[1], crop_box[2], crop_box[2]])

    notes = Notes()
    if has_smpl:
        values.update(smpl_pose=pose, smpl_betas=betas, has_smpl=True, body_model=body.body_model if body else "smpl")
        if body is not None:
            vertices, joints = body(pose, betas)
            values.update(vertices=vertices, joints=joints, has_mesh=True)
            if visible.sum() >= MIN_CAMERA_KEYPOINTS:
                points, target = body.keypoints(vertices, joints)[visible], values["keypoints"][visible]
                camera = fit_weak_perspective(points, target, crop_box)
                notes.keypoint_error_px = float(np.median(reprojection_error_px(points, camera, crop_box, target)))
                values.update(camera=camera, has_camera=True)
    record = schema_record(
        record_id=f"h36m/{split}/{index:07d}/{imgname}", image_id=imgname, image=image,
        image_shape=(height, width), bbox=bbox, crop_box=crop_box,
        keypoints3d=keypoints3d, has_keypoints3d=True,
        keypoints3d_visibility=np.where(labelled3d, schema.VISIBILITY_VISIBLE, schema.VISIBILITY_UNLABELLED),
        **{"has_keypoints": False, "has_smpl": False, "has_camera": False, "has_mesh": False, **values})
    return record, notes


# ----------------------------------------------------------------------------- builder


class Builder(RealBuilder):
    """Human3.6M frames with 3D joints (and SMPL fits where given), from SPIN's .npz files.

    ``smpl_path``: records with SMPL fits also hold ``vertices`` and ``joints``, and a
    weak-perspective camera fitted to their 2D keypoints. ``iuv_dir``: maps ``<frame>_IUV.png``
    (the image name without ``.jpg``) in ``images/`` or the folder itself. Splits: one per
    ``M/h36m_<split>.npz``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: one record per row of each h36m_<split>.npz (SPIN's layout); J24 joints "
                 "as cocoplus19 keypoints in 2D and 3D; SPIN's crop; SMPL pose and shape where stored.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DATASET, HOMEPAGE = "Human3.6M", HOMEPAGE
    SOURCE = f"{HOMEPAGE} through SPIN's preprocessed .npz files ({SPIN_URL})"
    MEASURES = ("keypoint_error_px",)
    UNIT = "rows"
    MAX_LISTED_SKIPS = MAX_NAMED_SKIPPED

    def _find_splits(self, manual_dir: str, splits: tuple[str, ...] | None) -> dict[str, SplitFiles]:
        return find_splits(manual_dir, splits)

    def _metadata(self, splits: Mapping[str, SplitFiles]) -> dict[str, Any]:
        annotations = {split: files.source for split, files in splits.items()}
        body = self.posed_body(self.model_paths["smpl_path"])
        logging.info("h36m: reading %s (%s)", self.manual_dir, ", ".join(
            f"{split} {len(a)} rows, fields {a.keys}" for split, a in annotations.items()))
        return {"files": {split: os.path.basename(a.path) for split, a in annotations.items()},
                "keys": {split: a.keys for split, a in annotations.items()},
                "rows": {split: len(a) for split, a in annotations.items()},
                "with_smpl": {split: int(a.has_smpl.sum()) if a.has_smpl is not None else 0
                              for split, a in annotations.items()},
                "body_model": body.body_model if body else "smpl",
                "crop": "SPIN's: the square of side 200 * scale around center"}

    def _examples(self, split: str, source: Annotations) -> Iterator[Example | Skipped]:
        body = self.posed_body(self.model_paths["smpl_path"])
        for index in range(len(source)):
            try:
                record, notes = convert_row(self.manual_dir, split, index, source, body, self.iuv_dir)
            except Skip as err:
                yield Skipped(f"row {index} ({source.imgname[index]})", str(err),
                              {"row": index, "image": source.imgname[index]})
                continue
            yield Example(index, record, notes)
