"""TFDS builder of 3DPW (von Marcard et al., ECCV 2018) as distributed: one record per actor and valid frame.

Build (``M`` holds the extracted ``sequenceFiles.zip`` and ``imageFiles.zip``,
see :data:`MANUAL_DOWNLOAD_INSTRUCTIONS`)::

    python -m datasets build pw3d --manual_dir=M --data_dir=D \\
        [--smpl_male_path=basicmodel_m_lbs_10_207_0_v1.0.0.pkl --smpl_female_path=basicModel_f_lbs_10_207_0_v1.0.0.pkl]

Read::

    source = tfds.data_source("pw3d", data_dir=D, split="test")   # train, validation, test

Each record (``dct_jax.data.schema``) holds the frame's JPEG as stored, the
actor's SMPL pose with the global rotation turned into the camera frame
(``R_cam @ R_world``, as SPIN and VIBE) and the other 23 joints unchanged, the
first 10 betas, the actor's gender, the 2D pose (OpenPose's 18 COCO keypoints)
moved by name into cocoplus19, and the crop around the confident keypoints
(1.2 x the longer side of their box, as SPIN). With SMPL models
(``smpl_male_path``/``smpl_female_path``, else the neutral ``smpl_path``) the
records also hold the posed mesh and joints and the weak-perspective camera
of the crop, fitted to the perspective projection of the mesh. With ``iuv_dir``
records also hold the frame's DensePose IUV map,
``DIR/imageFiles/<sequence>/image_NNNNN_IUV.png`` or ``DIR/<sequence>/image_NNNNN_IUV.png``
(Detectron's naming; never a flat folder: frame names repeat across sequences).
README.md documents the conventions and their sources.

Frames the dataset itself marks as unusable (camera pose not valid for the
actor, no 2D pose, fewer than :data:`MIN_KEYPOINTS` confident keypoints) are
not examples; they are counted in ``metadata["invalid_frames"]`` (per reason in
``metadata["invalid_frames_by_reason"]``).
An unreadable image or an inconsistent annotation is skipped instead: logged,
counted and listed with the reason in ``metadata["skipped"][split]``.
A split whose files are missing is left out (``splits=`` / ``--splits`` requires
them), and one whose every example is skipped is not written; both are reported
(``datasets/_real.py``, ``datasets/README.md``).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from datasets._common import (PosedBody, Skip, crop_around, fit_weak_perspective, joints_box, read_body_file,
                              read_image, read_iuv, schema_record, some)
from datasets._real import Example, RealBuilder, Skipped, SplitFiles
from dct_jax.data import schema

HOMEPAGE = "https://virtualhumans.mpi-inf.mpg.de/3DPW/"
LICENSE_URL = "https://virtualhumans.mpi-inf.mpg.de/3DPW/license.html"
SEQUENCE_FOLDER, IMAGE_FOLDER = "sequenceFiles", "imageFiles"
SPLITS = ("train", "validation", "test")
IMAGE_NAME = "image_{:05d}.jpg"
# OpenPose's COCO-18 (BODY_18) order of 3DPW's poses2d (mmhuman3d's PW3D_KEYPOINTS; VIBE's 3dpw names).
OPENPOSE18_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# OpenPose's "neck" is the shoulders' mid-point, not LSP's upper neck (cocoplus19 "neck"): not mapped.
UNMAPPED = ("neck",)
# cocoplus19 index <- OpenPose index, by name.
TO_COCOPLUS19: tuple[tuple[int, int], ...] = tuple(
    (schema.KEYPOINT_NAMES.index(name), index) for index, name in enumerate(OPENPOSE18_NAMES)
    if name not in UNMAPPED)
CONFIDENCE_THRESHOLD = 0.3  # VIBE's VIS_THRESH: a keypoint above it is labelled (visibility 2)
MIN_KEYPOINTS = 6  # 3DPW's readme: poses2d only where at least 6 joints were detected
CROP_SCALE = 1.2  # SPIN's scaleFactor
# OpenPose's keypoints and a pinhole camera's (cx, cy) put pixel centres at integers (OpenCV's
# convention); the schema puts them at +0.5. Added to poses2d and to the projected mesh alike.
PIXEL_OFFSET = 0.5
ROTATION_TOLERANCE = 1e-3
GENDERS = {"m": "male", "f": "female", "male": "male", "female": "female"}
INVALID_REASONS = ("campose_invalid", "no_2d_pose", "few_keypoints")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
3DPW must be downloaded by hand (non-commercial research licence, no redistribution):
  1. At {HOMEPAGE} accept the licence ({LICENSE_URL}) and download
       sequenceFiles.zip (about 280 MB): {HOMEPAGE}sequenceFiles.zip
       imageFiles.zip    (about 4.6 GB): {HOMEPAGE}imageFiles.zip
     (readme_and_demo.zip documents the fields; it is not needed.)
  2. Extract both into the manual directory M so that it holds
       M/{SEQUENCE_FOLDER}/train/<sequence>.pkl        (and validation/, test/: one pickle per sequence)
       M/{IMAGE_FOLDER}/<sequence>/image_00000.jpg ...  (one folder per sequence, every frame)
     (the __MACOSX folders of the archives can be deleted).
  3. python -m datasets build pw3d --manual_dir=M --data_dir=D
     optionally with --smpl_male_path=basicmodel_m_lbs_10_207_0_v1.0.0.pkl
     --smpl_female_path=basicModel_f_lbs_10_207_0_v1.0.0.pkl (SMPL for Python, https://smpl.is.tue.mpg.de)
     to store the ground-truth meshes and a fitted crop camera.
"""


# ----------------------------------------------------------------------------- finding the files


def sequence_folders(manual_dir: str | os.PathLike, split: str) -> tuple[list[str], list[str]]:
    """The sequence pickles of ``split``, sorted, and what is missing: no ``sequenceFiles/<split>/``
    with a ``.pkl``, no ``imageFiles/``, or no ``imageFiles/<sequence>/`` of a sequence."""
    manual_dir = os.fspath(manual_dir)
    folder, images = os.path.join(manual_dir, SEQUENCE_FOLDER, split), os.path.join(manual_dir, IMAGE_FOLDER)
    names = []
    if os.path.isdir(folder):  # (".": macOS resource forks such as ._name.pkl)
        names = sorted(n for n in os.listdir(folder) if n.endswith(".pkl") and not n.startswith("."))
    problems = [] if names else [f"no sequence pickles in {folder}" if os.path.isdir(folder) else f"no folder {folder}"]
    if not os.path.isdir(images):
        problems.append(f"no folder {images}")
    else:
        without = [sequence_name(n) for n in names if not os.path.isdir(os.path.join(images, sequence_name(n)))]
        if without:
            problems.append(f"no image folder in {images} for {len(without)} sequence(s): {some(without)}")
    return [os.path.join(folder, n) for n in names], problems


@dataclasses.dataclass(frozen=True)
class SplitSequences:
    """A split's readable sequences and its unreadable pickles (skipped, each one entry)."""

    sequences: tuple[SequenceData, ...]
    unreadable: tuple[Skipped, ...]

    def __len__(self) -> int:
        """Actor-frames listed (of the readable sequences)."""
        return sum(s.num_actors * s.num_frames for s in self.sequences)


def find_splits(manual_dir: str | os.PathLike, splits: Sequence[str] | None = None) -> dict[str, SplitFiles]:
    """Each split's sequences (:class:`SplitSequences`, the pickles read), or what it lacks.

    A split lacks its ``sequenceFiles/<split>/`` pickles, ``imageFiles/``, a sequence's image
    folder, or an image of a sequence's frames.
    """
    found = {}
    for split in splits or SPLITS:
        paths, problems = sequence_folders(manual_dir, split)
        if problems:
            found[split] = SplitFiles(missing=tuple(problems))
            continue
        sequences, unreadable, missing = [], [], []
        for path in paths:
            try:
                sequence = read_sequence(path)
            except Skip as err:
                unreadable.append(Skipped(os.path.basename(path), str(err), {
                    "record": f"{sequence_name(path)}/*", "file": os.path.join(SEQUENCE_FOLDER, split,
                                                                                 os.path.basename(path))}))
                continue
            missing += missing_images(os.path.join(manual_dir, IMAGE_FOLDER), sequence)
            sequences.append(sequence)
        found[split] = SplitFiles(source=SplitSequences(tuple(sequences), tuple(unreadable)), missing=(
            f"{len(missing)} image(s) of the sequences' frames are not in {os.path.join(manual_dir, IMAGE_FOLDER)}: "
            f"{some(missing)} (an incomplete extraction of imageFiles.zip?)",) if missing else ())
    return found


def sequence_name(pickle_path: str) -> str:
    """``.../courtyard_arguing_00.pkl`` -> ``courtyard_arguing_00`` (the image folder's name)."""
    return os.path.splitext(os.path.basename(pickle_path))[0]


# ----------------------------------------------------------------------------- reading one sequence


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """The fields of one sequence pickle that the records use (``A`` actors, ``N`` frames).

    Attributes:
      name: sequence name (the pickle's file name without ``.pkl``).
      genders: ``A`` of ``"male"``/``"female"``.
      poses: ``(A, N, 72)`` SMPL axis-angle, joint 0 the global rotation in the world frame.
      betas: ``(A, 10)`` the first 10 shape coefficients.
      trans: ``(A, N, 3)`` root translation, world frame, metres.
      poses2d: ``(A, N, 3, 18)`` rows x, y (image pixels), confidence of OpenPose's 18 keypoints.
      campose_valid: ``(A, N)`` bool: the camera pose is aligned to the image for this actor.
      cam_poses: ``(N, 4, 4)`` world -> camera rigid motions.
      intrinsics: ``(3, 3)`` ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, pixels.
      joint_positions: ``(A, N, 24, 3)`` SMPL joints in the world frame, or None.
    """

    name: str
    genders: tuple[str, ...]
    poses: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    poses2d: np.ndarray
    campose_valid: np.ndarray
    cam_poses: np.ndarray
    intrinsics: np.ndarray
    joint_positions: np.ndarray | None

    @property
    def num_actors(self) -> int:
        return len(self.genders)

    @property
    def num_frames(self) -> int:
        return self.poses.shape[1]


def _field(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    raise Skip(f"no {keys[0]!r} (it has {sorted(data)})")


def _per_actor(value: Any, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim >= 1):
        return list(value)
    raise Skip(f"{key!r} is a {type(value).__name__}, expected a list with one entry per actor")


def _numbers(value: Any, shape: tuple[int | None, ...], what: str, *, flatten: bool = False) -> np.ndarray:
    """``value`` (flattened first if ``flatten``) as float64 of ``shape`` (``None``: any size)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # e.g. ragged nested lists
        array = np.empty(0, object)
    if array.dtype.kind not in "biuf":
        raise Skip(f"{what} is not numeric ({array.dtype})")
    if flatten:
        array = array.reshape(-1)
    if array.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape, array.shape, strict=True)):
        expected = "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
        raise Skip(f"{what} has shape {array.shape}, expected {expected}")
    return array.astype(np.float64)


def parse_sequence(data: Mapping[str, Any], name: str) -> SequenceData:
    """Checks a sequence pickle's fields and returns what the records need.

    Frame-level values (NaN in one frame, a bad camera pose) are checked per
    record, not here.

    Raises:
      Skip: a missing field, per-actor lists of different lengths, arrays of
        the wrong shape or number of frames, betas with fewer than 10 values,
        an unknown gender, or intrinsics without positive finite focal lengths.
    """
    poses = _per_actor(_field(data, "poses"), "poses")
    if not poses:
        raise Skip("'poses' lists no actor")
    num_actors, num_frames = len(poses), _numbers(poses[0], (None, schema.NUM_POSE), "poses[0]").shape[0]
    if num_frames < 1:
        raise Skip("poses[0] has no frames")
    per_actor = {key: _per_actor(_field(data, *keys), keys[0]) for key, keys in (
        ("betas", ("betas",)), ("trans", ("trans",)), ("poses2d", ("poses2d", "poses2D")),
        ("campose_valid", ("campose_valid",)), ("genders", ("genders", "gender")))}
    for key, values in per_actor.items():
        if len(values) != num_actors:
            raise Skip(f"{key!r} has {len(values)} entries but 'poses' {num_actors} actors")
    n = num_frames
    genders = []
    for k, gender in enumerate(per_actor["genders"]):
        gender = gender.decode("latin1") if isinstance(gender, bytes) else gender
        if not isinstance(gender, str) or gender.strip().lower() not in GENDERS:
            raise Skip(f"genders[{k}] is {gender!r}, expected 'm' or 'f'")
        genders.append(GENDERS[gender.strip().lower()])
    betas = []
    for k, value in enumerate(per_actor["betas"]):
        value = _numbers(value, (None,), f"betas[{k}]", flatten=True)
        if value.size < schema.NUM_BETAS:
            raise Skip(f"betas[{k}] has {value.size} values, expected at least {schema.NUM_BETAS}")
        betas.append(value[:schema.NUM_BETAS])
    valid = [_numbers(v, (n,), f"campose_valid[{k}]") != 0 for k, v in enumerate(per_actor["campose_valid"])]
    joint_positions = None
    if "jointPositions" in data:
        joints = _per_actor(data["jointPositions"], "jointPositions")
        if len(joints) != num_actors:
            raise Skip(f"'jointPositions' has {len(joints)} entries but 'poses' {num_actors} actors")
        joint_positions = np.stack([_numbers(v, (n, 3 * schema.NUM_JOINTS), f"jointPositions[{k}]")
                                    for k, v in enumerate(joints)]).reshape(num_actors, n, schema.NUM_JOINTS, 3)
    if "img_frame_ids" in data and np.size(data["img_frame_ids"]) != n:
        raise Skip(f"'img_frame_ids' has {np.size(data['img_frame_ids'])} entries, expected one per frame ({n})")
    intrinsics = _numbers(_field(data, "cam_intrinsics"), (3, 3), "cam_intrinsics")
    if not (np.all(np.isfinite(intrinsics)) and intrinsics[0, 0] > 0 and intrinsics[1, 1] > 0):
        raise Skip(f"cam_intrinsics {intrinsics.tolist()} has no positive focal lengths")
    return SequenceData(
        name=name, genders=tuple(genders),
        poses=np.stack([_numbers(v, (n, schema.NUM_POSE), f"poses[{k}]") for k, v in enumerate(poses)]),
        betas=np.stack(betas),
        trans=np.stack([_numbers(v, (n, 3), f"trans[{k}]") for k, v in enumerate(per_actor["trans"])]),
        poses2d=np.stack([_numbers(v, (n, 3, len(OPENPOSE18_NAMES)), f"poses2d[{k}]")
                          for k, v in enumerate(per_actor["poses2d"])]),
        campose_valid=np.stack(valid),
        cam_poses=_numbers(_field(data, "cam_poses"), (n, 4, 4), "cam_poses"),
        intrinsics=intrinsics, joint_positions=joint_positions)


def read_sequence(path: str) -> SequenceData:
    """One ``sequenceFiles/<split>/<sequence>.pkl`` (a Python 2 pickle, ``encoding="latin1"``).

    Read with ``dct_jax.smpl_io``'s restricted unpickler (numpy arrays and
    builtins only; nothing else is resolved, so no code can run).

    Raises:
      Skip: not a readable pickle of a dict, or :func:`parse_sequence`'s reasons.
    """
    data = read_body_file(path)
    try:
        return parse_sequence(data, sequence_name(path))
    except Skip as err:
        raise Skip(f"{os.path.basename(path)}: {err}") from None


def missing_images(image_root: str, sequence: SequenceData) -> list[str]:
    """The ``imageFiles/<sequence>/image_NNNNN.jpg`` of the sequence's frames that are not there."""
    folder = os.path.join(image_root, sequence.name)
    present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return [os.path.join(IMAGE_FOLDER, sequence.name, IMAGE_NAME.format(i))
            for i in range(sequence.num_frames) if IMAGE_NAME.format(i) not in present]


# ----------------------------------------------------------------------------- one record


def invalid_reason(sequence: SequenceData, frame: int, actor: int) -> str:
    """Why 3DPW itself marks ``(frame, actor)`` unusable (one of :data:`INVALID_REASONS`), or ``""``."""
    if not sequence.campose_valid[actor, frame]:
        return "campose_invalid"
    pose2d = sequence.poses2d[actor, frame]
    if not np.any(pose2d):
        return "no_2d_pose"
    if np.count_nonzero(pose2d[2] > CONFIDENCE_THRESHOLD) < MIN_KEYPOINTS:
        return "few_keypoints"
    return ""


def rotation_to_camera(cam_rotation: np.ndarray, global_rotation: np.ndarray) -> np.ndarray:
    """Axis-angle ``(3,)`` of ``cam_rotation @ rodrigues(global_rotation)`` (SPIN's, VIBE's alignment)."""
    world = cv2.Rodrigues(np.asarray(global_rotation, np.float64).reshape(3, 1))[0]
    return cv2.Rodrigues(np.asarray(cam_rotation, np.float64) @ world)[0].reshape(3)


def _camera_pose(sequence: SequenceData, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of ``cam_poses[frame]``, checked to be a rigid motion."""
    pose = sequence.cam_poses[frame]
    rotation, translation = pose[:3, :3], pose[:3, 3]
    if not np.all(np.isfinite(pose)):
        raise Skip(f"cam_poses[{frame}] has NaN or inf")
    if (np.max(np.abs(rotation @ rotation.T - np.eye(3))) > ROTATION_TOLERANCE
            or abs(np.linalg.det(rotation) - 1.0) > ROTATION_TOLERANCE):
        raise Skip(f"cam_poses[{frame}] is not a rigid motion (its 3x3 block is not a rotation)")
    return rotation, translation


@dataclasses.dataclass
class Notes:
    """What the build log and metadata report about a record besides the record."""

    keypoint_error_px: float | None = None  # median |camera projection - labelled keypoint|, image pixels
    joint_position_error_mm: float | None = None  # mean |model joints - the pickle's jointPositions|, mm


def convert_record(sequence: SequenceData, frame: int, actor: int, image: bytes, image_shape: tuple[int, int],
                   body: PosedBody | None = None, iuv: bytes | None = None) -> tuple[dict[str, Any], Notes]:
    """The record of ``actor`` in ``frame`` (a valid one, see :func:`invalid_reason`), with the frame's IUV map.

    Raises:
      Skip: an inconsistent annotation (NaN, a camera pose that is not a
        rigid motion, fewer than two confident keypoints in the image, the
        body behind the camera, no weak-perspective camera).
    """
    notes = Notes()
    height, width = image_shape
    pose = sequence.poses[actor, frame]
    if not np.all(np.isfinite(pose)):
        raise Skip(f"poses[{actor}][{frame}] has NaN or inf")
    rotation, translation = _camera_pose(sequence, frame)
    pose_camera = pose.copy()
    pose_camera[:3] = rotation_to_camera(rotation, pose[:3])
    betas = sequence.betas[actor]
    if not np.all(np.isfinite(betas)):
        raise Skip(f"betas[{actor}] has NaN or inf")

    xy = sequence.poses2d[actor, frame, :2].T + PIXEL_OFFSET  # (18, 2), schema pixels
    confidence = sequence.poses2d[actor, frame, 2]
    confident = confidence > CONFIDENCE_THRESHOLD
    if not np.all(np.isfinite(xy[confident])):
        raise Skip(f"poses2d[{actor}][{frame}] has NaN or inf at confident keypoints")
    inside = np.zeros_like(confident)
    inside[confident] = ((xy[confident] >= 0) & (xy[confident] <= [width, height])).all(axis=1)
    labelled = confident & inside
    bbox = joints_box(xy, labelled)
    if bbox is None:
        raise Skip(f"no person box: fewer than two distinct confident keypoints inside the {width}x{height} image")
    crop_box = crop_around(bbox, CROP_SCALE)
    keypoints = np.zeros((schema.NUM_KEYPOINTS, 2), np.float64)
    visibility = np.zeros((schema.NUM_KEYPOINTS,), np.uint8)
    for target, source in TO_COCOPLUS19:
        if labelled[source]:
            keypoints[target] = xy[source]
            visibility[target] = schema.VISIBILITY_VISIBLE

    mesh: dict[str, Any] = {}
    body_model = "smpl"
    if body is not None:
        trans = sequence.trans[actor, frame]
        if not np.all(np.isfinite(trans)):
            raise Skip(f"trans[{actor}][{frame}] has NaN or inf")
        vertices, joints = body(pose_camera, betas)
        root = joints[0]  # the root joint's rest position: the global rotation turns about it
        # World: V_w = R0 (v - root) + root + trans; camera: R V_w + t = V_c + offset.
        offset = rotation @ (root + trans) + translation - root
        placed = vertices + offset
        if np.any(placed[:, 2] <= 0):
            raise Skip("the body is not in front of the camera")
        k = sequence.intrinsics
        image_xy = placed[:, :2] / placed[:, 2:3] * [k[0, 0], k[1, 1]] + [k[0, 2], k[1, 2]] + PIXEL_OFFSET
        mesh = {"vertices": vertices, "joints": joints,
                "camera": fit_weak_perspective(vertices, image_xy, crop_box)}
        body_model = body.body_model
        camera = mesh["camera"]
        if visibility.any():
            projected = schema.crop_to_image(camera[0] * (body.keypoints(vertices, joints)[:, :2] + camera[1:]),
                                             crop_box)
            errors = np.linalg.norm(projected - keypoints, axis=1)[visibility > 0]
            notes.keypoint_error_px = float(np.median(errors))
        if sequence.joint_positions is not None:
            world = (joints + offset - translation) @ rotation  # R^T (X - t), row vectors
            error = np.linalg.norm(world - sequence.joint_positions[actor, frame], axis=1)
            notes.joint_position_error_mm = float(1000.0 * np.mean(error))
    image_id = f"{sequence.name}/{os.path.splitext(IMAGE_NAME.format(frame))[0]}"
    record = schema_record(
        record_id=f"{image_id}/actor{actor}", image_id=image_id, body_model=body_model,
        image=image, image_shape=(height, width), bbox=bbox, crop_box=crop_box,
        keypoints=keypoints, keypoints_visibility=visibility,
        smpl_pose=pose_camera, smpl_betas=betas, gender=sequence.genders[actor],
        iuv=iuv, has_iuv=iuv is not None, **mesh)
    return record, notes


# ----------------------------------------------------------------------------- builder


class Builder(RealBuilder):
    """3DPW: in-the-wild video frames with IMU-based SMPL ground truth (gendered) and OpenPose 2D poses.

    Body models: ``smpl_male_path`` (3DPW's ground truth for ``'m'`` actors,
    ``basicmodel_m_lbs_10_207_0_v1.0.0.pkl``), ``smpl_female_path``
    (``basicModel_f_lbs_10_207_0_v1.0.0.pkl``), and a neutral ``smpl_path`` for a gender without
    its own; records of the actors a model covers also hold ``vertices``, ``joints`` and a fitted
    ``camera``. ``iuv_dir``: maps ``image_NNNNN_IUV.png`` in ``imageFiles/<sequence>/`` or
    ``<sequence>/`` (never a flat folder: frame names repeat across sequences).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: one record per actor and valid frame of 3DPW; global rotation in the camera "
                 "frame; gender; OpenPose 2D poses as cocoplus19 keypoints; crop from the confident keypoints; "
                 "meshes and a fitted crop camera when SMPL models are given.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DATASET, HOMEPAGE, SPLITS = "3DPW", HOMEPAGE, SPLITS
    BODY_MODELS = ("smpl_path", "smpl_male_path", "smpl_female_path")
    MEASURES = ("keypoint_error_px", "joint_position_error_mm")

    def mesh_models(self) -> dict[str, str | None]:
        """Which model file poses each gender's meshes (None: no meshes for that gender)."""
        paths = self.model_paths
        return {"male": paths["smpl_male_path"] or paths["smpl_path"],
                "female": paths["smpl_female_path"] or paths["smpl_path"]}

    def _find_splits(self, manual_dir: str, splits: tuple[str, ...] | None) -> dict[str, SplitFiles]:
        return find_splits(manual_dir, splits)

    def _metadata(self, splits: Mapping[str, SplitFiles]) -> dict[str, Any]:
        logging.info("pw3d: reading %s (%s records listed)", self.manual_dir,
                     ", ".join(f"{split} {len(files.source)}" for split, files in splits.items()))
        return {"mesh_model": self.mesh_models(),
                "camera": ("least squares on the perspective projection of the mesh (cam_intrinsics, cam_poses, "
                           "trans) where a model poses the actor; none (has_camera False) elsewhere"),
                "crop_scale": CROP_SCALE, "confidence_threshold": CONFIDENCE_THRESHOLD, "min_keypoints": MIN_KEYPOINTS,
                "sequences": {split: [s.name for s in files.source.sequences] for split, files in splits.items()},
                "invalid_frames": {}, "invalid_frames_by_reason": {}, "meshes": {}}

    def _examples(self, split: str, source: SplitSequences) -> Iterator[Example | Skipped]:
        yield from source.unreadable
        bodies = {gender: self.posed_body(path) for gender, path in self.mesh_models().items()}
        invalid: collections.Counter[str] = collections.Counter({reason: 0 for reason in INVALID_REASONS})
        meshes: collections.Counter[str] = collections.Counter()
        for sequence in source.sequences:
            for frame in range(sequence.num_frames):
                image_file = os.path.join(IMAGE_FOLDER, sequence.name, IMAGE_NAME.format(frame))
                image: tuple[bytes, tuple[int, int], bytes | None] | Skip | None = None
                for actor in range(sequence.num_actors):
                    reason = invalid_reason(sequence, frame, actor)
                    if reason:
                        invalid[reason] += 1
                        continue
                    record_id = f"{sequence.name}/{os.path.splitext(IMAGE_NAME.format(frame))[0]}/actor{actor}"
                    if image is None:
                        image = _read_frame(os.path.join(self.manual_dir, image_file), self.iuv_dir, image_file)
                    body = bodies.get(sequence.genders[actor])
                    try:
                        if isinstance(image, Skip):
                            raise image
                        record, notes = convert_record(sequence, frame, actor, image[0], image[1], body, image[2])
                    except Skip as err:
                        yield Skipped(record_id, str(err), {"record": record_id, "file": image_file})
                        continue
                    meshes[sequence.genders[actor] if body is not None else "none"] += 1
                    yield Example(record_id, record, notes)
        self.record_split(split, invalid_frames=sum(invalid.values()), invalid_frames_by_reason=dict(invalid),
                          meshes={key: meshes[key] for key in ("male", "female", "none")})
        logging.info("pw3d %s: %d actor-frames not valid in 3DPW (%s)", split, sum(invalid.values()),
                     ", ".join(f"{k} {v}" for k, v in invalid.items()))


def _read_frame(path: str, iuv_dir: str | None,
                relative_path: str) -> tuple[bytes, tuple[int, int], bytes | None] | Skip:
    """``read_image``'s result and the frame's IUV map (:func:`read_iuv`, in a sequence folder of
    ``iuv_dir``, never flat), or the :class:`Skip` saying why it failed (shared by a frame's actors)."""
    try:
        image, shape = read_image(path)
        return image, shape, read_iuv(iuv_dir, relative_path, shape, flat=False)
    except Skip as err:
        return err
    except OSError as err:
        return Skip(f"{os.path.basename(path)} cannot be read ({err})")
