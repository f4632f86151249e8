"""A trained regressor on one photo: inputs, crop, prediction, pictures and files (``run_demo.py``).

    photo = demo.read_photo("person.jpg")
    inputs = demo.DemoInputs(photo, bbox=demo.parse_bbox("120,40,200,380"))
    result = demo.run(trained, inputs)          # trained: inference.load_checkpoint(...)
    demo.write_outputs(result, "demo_out/")     # overlay.png, mesh.obj, params.json, viewer.html

The crop is the one training and evaluation use (``dct_jax.data.pipeline``): the
square around the person box with side ``max(w, h)`` (``schema.square_around``),
zero-padded where it leaves the photo, resized to the model's input size
(bilinear for the photo, nearest for IUV maps and part segmentations).
Without a box the person is the whole photo.

Errors a user can make (a missing or unreadable file, a malformed box, an IUV
map that does not fit the photo, a missing input the checkpoint needs) raise
:class:`DemoError` with a one-line message; ``run_demo.py`` prints it and
exits with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import jax
import numpy as np

from dct_jax import camera as camera_lib
from dct_jax import render, smpl, synthetic
from dct_jax.data import pipeline, schema

NUM_PARTS = schema.NUM_PARTS
# SPIN's focal length: 5000 px for a 224 px crop. Scaled to the photo's longer side
# (as 4D-Humans' demo does) it is the default focal length of params.json's camera.
SPIN_FOCAL_LENGTH, SPIN_CROP_SIZE = 5000.0, 224

IUV_HELP = ("a DensePose IUV map of the photo: a PNG of the photo's size whose channels in array order "
            "(as DensePose/Detectron write it and cv2.imread reads it) are I (part 1-24, 0 = background), "
            "U and V (0-255)")
SEGMENTATION_HELP = ("a DensePose part segmentation of the photo: a single-channel 8-bit PNG of the photo's "
                     "size holding the part index 1-24 per pixel (0 = background)")
_FLAG_OF = {"iuv": "--iuv", "segmentation": "--segmentation"}
_HELP_OF = {"iuv": IUV_HELP, "segmentation": SEGMENTATION_HELP}
_WHAT_OF = {"iuv": "a DensePose IUV map", "segmentation": "a part segmentation"}

_PRED_COLOR = (0.65, 0.74, 0.86)  # light blue
_GT_COLOR = (0.62, 0.85, 0.62)  # light green
_SIDE_BACKGROUND = 40
_OVERLAY_ALPHA = 0.85
_MAX_PICTURE_SIDE = 1024  # overlay panels are drawn at most this large
_MIN_PICTURE_HEIGHT = 256  # and at least this tall (tiny synthetic images are upscaled)


class DemoError(ValueError):
    """A user error (bad flag value or input file); the message is one line."""


# ----------------------------------------------------------------------------- reading inputs


def parse_bbox(text: str) -> np.ndarray:
    """``"x,y,w,h"`` (pixels of the photo) -> ``(4,)`` float64; ``DemoError`` when malformed."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not np.all(np.isfinite(values)):
        raise DemoError(f"--bbox must be four numbers x,y,w,h (pixels: left, top, width, height), got {text!r}")
    if values[2] <= 0 or values[3] <= 0:
        raise DemoError(f"--bbox width and height must be positive, got w={values[2]:g}, h={values[3]:g}")
    return np.asarray(values, np.float64)


def _check_file(path: str, flag: str) -> str:
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise DemoError(f"{flag}: no such file: {path}")
    if not os.path.isfile(path):
        raise DemoError(f"{flag}: not a file: {path}")
    return path


def read_photo(path: str, flag: str = "--image") -> np.ndarray:
    """A photo -> ``(H, W, 3)`` uint8 RGB (8-bit colour; grey and alpha are converted)."""
    path = _check_file(path, flag)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoError(f"{flag}: OpenCV cannot read {path} as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_iuv(path: str, shape: Sequence[int], flag: str = "--iuv") -> np.ndarray:
    """A DensePose IUV PNG -> ``(H, W, 3)`` uint8 (I, U, V in array order, no channel swap).

    Args:
      path: the file.
      shape: ``(H, W)`` of the photo it belongs to.
    """
    path = _check_file(path, flag)
    iuv = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if iuv is None:
        raise DemoError(f"{flag}: OpenCV cannot read {path}; it must be {IUV_HELP}")
    if iuv.dtype != np.uint8 or iuv.ndim != 3 or iuv.shape[2] != 3:
        raise DemoError(f"{flag}: {path} is {iuv.dtype} of shape {iuv.shape}; it must be {IUV_HELP}")
    _check_size(iuv, shape, flag, path)
    if iuv[..., 0].max() > NUM_PARTS:
        raise DemoError(f"{flag}: {path} has I (channel 0) up to {iuv[..., 0].max()}, above {NUM_PARTS}; "
                        f"it must be {IUV_HELP} (is it an RGB visualization?)")
    return iuv


def read_segmentation(path: str, shape: Sequence[int], flag: str = "--segmentation") -> np.ndarray:
    """A part segmentation PNG -> ``(H, W)`` uint8 part 0-24 (3 equal channels are accepted)."""
    path = _check_file(path, flag)
    seg = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if seg is None:
        raise DemoError(f"{flag}: OpenCV cannot read {path}; it must be {SEGMENTATION_HELP}")
    if seg.ndim == 3 and seg.shape[2] in (3, 4) and np.all(seg[..., 1:3] == seg[..., :1]):
        seg = seg[..., 0]
    if seg.dtype != np.uint8 or seg.ndim != 2:
        raise DemoError(f"{flag}: {path} is {seg.dtype} of shape {seg.shape}; it must be {SEGMENTATION_HELP}")
    _check_size(seg, shape, flag, path)
    if seg.max() > NUM_PARTS:
        raise DemoError(f"{flag}: {path} has values up to {seg.max()}, above {NUM_PARTS}; "
                        f"it must be {SEGMENTATION_HELP}")
    return np.ascontiguousarray(seg)


def _check_size(array: np.ndarray, shape: Sequence[int], flag: str, path: str) -> None:
    height, width = (int(v) for v in shape[:2])
    if array.shape[:2] != (height, width):
        raise DemoError(f"{flag}: {path} is {array.shape[1]}x{array.shape[0]} pixels but the photo is "
                        f"{width}x{height}; it must be computed on the photo itself")


def missing_input_message(field: str, inputs: str) -> str:
    """The error for a checkpoint taking ``field`` (``iuv``/``segmentation``) without its flag."""
    return (f"this checkpoint (model inputs {inputs!r}) also takes {_WHAT_OF[field]}: "
            f"pass {_FLAG_OF[field]}=FILE, {_HELP_OF[field]}")


def needed_aux_fields(model_inputs: Sequence[str | None]) -> tuple[str, ...]:
    """Which of ``iuv``/``segmentation`` a model with ``(main, aux)`` input fields takes."""
    return tuple(f for f in model_inputs if f in ("iuv", "segmentation"))


@dataclasses.dataclass
class DemoInputs:
    """One person in one photo, with the DensePose maps a checkpoint may need.

    Attributes:
      image: ``(H, W, 3)`` uint8 RGB photo.
      bbox: ``(4,)`` person box ``[x, y, w, h]`` in photo pixels (default: the IUV or segmentation
        map's person, the tight box of its foreground as in training; without a map the whole photo).
      iuv: ``(H, W, 3)`` uint8 IUV map of the photo, or None.
      segmentation: ``(H, W)`` uint8 part map of the photo, or None.
      crop_box: the square ``[x0, y0, side]`` the model sees (default: around ``bbox``).
      name: where the photo came from (for params.json).
    """

    image: np.ndarray
    bbox: np.ndarray | None = None
    iuv: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    crop_box: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        height, width = self.image.shape[:2]
        person, flag = None, None
        if self.iuv is not None:
            person, flag = np.asarray(self.iuv)[..., 0] > 0, "--iuv"
        elif self.segmentation is not None:
            person, flag = np.asarray(self.segmentation) > 0, "--segmentation"
        if person is not None and not person.any():
            raise DemoError(f"{flag}: the map has no person in it (every pixel is background, 0); give the "
                            "map DensePose made for this photo")
        if self.bbox is None:
            self.bbox = (synthetic.mask_bbox(person) if person is not None
                         else np.array([0.0, 0.0, width, height], np.float64))
        self.bbox = np.asarray(self.bbox, np.float64).reshape(4)
        if self.crop_box is None:
            self.crop_box = schema.square_around(self.bbox)
        self.crop_box = np.asarray(self.crop_box, np.float64).reshape(3)
        x, y, w, h = self.bbox
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise DemoError(f"--bbox {x:g},{y:g},{w:g},{h:g} lies outside the {width}x{height} photo")
        if person is not None:
            inside = person[max(int(y), 0):max(int(np.ceil(y + h)), 0), max(int(x), 0):max(int(np.ceil(x + w)), 0)]
            if not inside.any():
                px, py, pw, ph = synthetic.mask_bbox(person)
                raise DemoError(f"--bbox {x:g},{y:g},{w:g},{h:g}: the {flag} map's person is not in it (the "
                                f"person is at {px:g},{py:g},{pw:g},{ph:g}); fix --bbox or leave it out")


def crops(inputs: DemoInputs, fields: Sequence[str], size: int) -> dict[str, np.ndarray]:
    """The model's input crops of ``inputs`` (batch of one), cropped exactly as in evaluation."""
    batch = {}
    for field in fields:
        if field == "image":
            crop = pipeline.crop_image(inputs.image, inputs.crop_box, size)
        else:
            full = getattr(inputs, field)
            if full is None:
                raise DemoError(missing_input_message(field, "+".join(fields)))
            crop = pipeline.crop_image(full, inputs.crop_box, size, nearest=True)
        batch[field] = crop[None]
    return batch


# ----------------------------------------------------------------------------- prediction


@dataclasses.dataclass(frozen=True)
class Body:
    """One body: parameters, weak-perspective camera (of the crop) and posed mesh."""

    camera: np.ndarray  # (3,) s, tx, ty in normalized coordinates of the crop box
    pose: np.ndarray  # (24, 3) axis-angle, joint 0 the global rotation (camera frame)
    betas: np.ndarray  # (NB,)
    vertices: np.ndarray  # (V, 3) metres, camera frame (x right, y down), no translation
    joints: np.ndarray  # (J, 3)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What :func:`run` returns and :func:`write_outputs` writes."""

    inputs: DemoInputs
    prediction: Body
    faces: np.ndarray
    info: Mapping[str, Any]  # checkpoint and photo facts for params.json
    ground_truth: Body | None = None
    metrics: Mapping[str, float] | None = None


def pose_body(model: smpl.SMPLModel, camera: Any, pose: Any, betas: Any) -> Body:
    """The posed mesh of one body's parameters (numpy in, numpy out)."""
    pose = np.asarray(pose, np.float32).reshape(-1, 3)
    betas = np.asarray(betas, np.float32).reshape(-1)
    out = _forward(model, pose[None], betas[None])
    return Body(camera=np.asarray(camera, np.float64).reshape(3), pose=pose, betas=betas,
                vertices=np.asarray(out.vertices[0], np.float64), joints=np.asarray(out.joints[0], np.float64))


# Jitted once per process (eager jax ops would compile one small kernel per operation).
_forward = jax.jit(smpl.forward)
_full_image_translation = jax.jit(camera_lib.crop_to_full_image_translation)


def checkpoint_info(trained) -> dict[str, Any]:
    return {"checkpoint": trained.location.workdir, "step": int(trained.step),
            "model_inputs": str(trained.config.model.inputs), "input_size": int(trained.image_size),
            "body_model": trained.layout.body}


def run(trained, inputs: DemoInputs) -> DemoResult:
    """Predicts the body in ``inputs`` with a ``inference.TrainedModel``."""
    fields = tuple(f for f in trained.inputs if f is not None)
    output = trained.predict(crops(inputs, fields, trained.image_size))
    prediction = pose_body(trained.body, output.camera[0], output.pose[0], output.betas[0])
    info = checkpoint_info(trained)
    info["image"] = inputs.name
    return DemoResult(inputs=inputs, prediction=prediction, faces=np.asarray(trained.body.faces), info=info)


# ----------------------------------------------------------------------------- synthetic example


def synthetic_example(trained, *, index: int = 0) -> DemoResult:
    """Prediction and ground truth on test example ``index`` of the checkpoint's dataset.

    The record comes from the run's ``config.dataset`` (split ``config.eval_split``)
    when it is built; otherwise from ``dct_jax.synthetic.generate`` (split ``test``).
    It goes through the evaluation pipeline, so the crops are exactly evaluation's.
    """
    from absl import logging

    from dct_jax import state as state_lib

    config = trained.config
    split = config.get("eval_split", "test")
    record, source_name = None, None
    if index < 0:
        raise DemoError(f"--example={index}: example numbers start at 0")
    try:
        source = pipeline.load_source(config.dataset, data_dir=config.data_dir, split=split)
    except (ValueError, OSError) as err:  # not built here (or moved): generate an example instead
        logging.info("The run's dataset is not readable (%s); generating a synthetic example.", err)
        source = None
    if source is not None and len(source):
        if index >= len(source):
            raise DemoError(f"--example={index}: {config.dataset} {split} has {len(source)} records "
                            f"(0 to {len(source) - 1})")
        record = source[index]
        source_name = f"{config.dataset} {split} record {index}"
    if record is None:
        record = _generated_record(trained, index, config.get("seed", 0))
        source_name = f"dct_jax.synthetic.generate test example {index}"
    spec = dataclasses.replace(state_lib.example_spec(config, train=False), dense_source="none")
    example = pipeline.ProcessRecord(spec, train=False).process(record, np.random.default_rng(0))
    fields = tuple(f for f in trained.inputs if f is not None)
    output = trained.predict({f: example[f][None] for f in fields})
    prediction = pose_body(trained.body, output.camera[0], output.pose[0], output.betas[0])

    image = schema.decode_image(record["image"])
    inputs = DemoInputs(image=image, bbox=np.asarray(record["bbox"]), crop_box=np.asarray(record["crop_box"]),
                        name=source_name)
    ground_truth = metrics = None
    if bool(record["has_smpl"]):
        camera = np.asarray(record["camera"]) if bool(record["has_camera"]) else prediction.camera
        ground_truth = pose_body(trained.body, camera, record["smpl_pose"], record["smpl_betas"])
        metrics = protocol_errors(trained.body, prediction, ground_truth)
    info = checkpoint_info(trained)
    info.update(image=source_name, synthetic=True)
    return DemoResult(inputs=inputs, prediction=prediction, faces=np.asarray(trained.body.faces), info=info,
                      ground_truth=ground_truth, metrics=metrics)


def protocol_errors(model: smpl.SMPLModel, prediction: Body, ground_truth: Body) -> dict[str, float]:
    """PVE and MPJPE in mm as ``evaluate.smpl_metrics`` (official protocol: global rotations zeroed).

    Computed here from the (already compiled) single-body forward pass: compiling
    ``smpl_metrics`` costs more than the whole demo on a small CPU.
    """
    zeroed = [pose_body(model, body.camera, np.concatenate([np.zeros((1, 3)), body.pose[1:]]), body.betas)
              for body in (prediction, ground_truth)]

    def distance(a, b):
        return float(1000.0 * np.linalg.norm(a - b, axis=-1).mean())

    return {"pve_mm": distance(zeroed[0].vertices, zeroed[1].vertices),
            "mpjpe_mm": distance(zeroed[0].joints, zeroed[1].joints)}


def _generated_record(trained, index: int, seed: int) -> dict[str, Any]:
    from dct_jax import densepose, synthetic

    smpl_path = trained.config.get("smpl_path")
    if smpl_path:
        body = synthetic.load_body(smpl_path, chart=densepose.load_chart("smpl"))
    else:
        body = synthetic.load_body()
    size = max(int(trained.image_size), synthetic.DEFAULT_IMAGE_SIZE)
    (_, record), = synthetic.generate("test", 1, seed=seed, size=size, body=body, start=index, chunk=1)
    return record


# ----------------------------------------------------------------------------- pictures


def picture_scale(height: int, width: int) -> float:
    """Pixels of the overlay panels per photo pixel (big photos shrink, tiny ones grow)."""
    return float(min(_MAX_PICTURE_SIDE / max(height, width), max(1.0, _MIN_PICTURE_HEIGHT / height)))


def project_to_photo(vertices: np.ndarray, camera: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """Weak-perspective projection through the crop, in photo pixels: ``(V, 2)``."""
    s, tx, ty = (float(v) for v in camera)
    uv = s * (np.asarray(vertices, np.float64)[:, :2] + [tx, ty])
    x0, y0, side = (float(v) for v in crop_box)
    return (uv + 1.0) * (0.5 * side) + [x0, y0]


def _draw(vertices: np.ndarray, faces: np.ndarray, camera: np.ndarray, crop_box: np.ndarray,
          background: np.ndarray, scale: float, color, alpha: float = 1.0) -> np.ndarray:
    xy = project_to_photo(vertices, camera, crop_box) * scale
    # Depth along +Z (the camera's viewing direction); only the order matters.
    screen = np.concatenate([xy, np.asarray(vertices, np.float64)[:, 2:]], axis=1)
    return render.render(screen, faces, None, background.shape[:2], "rgb", background=background,
                         color=color, alpha=alpha)


def side_vertices(vertices: np.ndarray) -> np.ndarray:
    """The mesh turned 90 degrees about the vertical (y) axis through its centre (seen from its right side)."""
    vertices = np.asarray(vertices, np.float64)
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    v = vertices - centre
    # x' = -z, z' = x: the camera now looks at the body's side.
    turned = np.stack([-v[:, 2], v[:, 1], v[:, 0]], axis=1)
    return turned + centre


def panels(inputs: DemoInputs, body: Body, faces: np.ndarray, *, color=_PRED_COLOR) -> list[np.ndarray]:
    """``[photo with the mesh, side view]`` at :func:`picture_scale`, RGB uint8."""
    height, width = inputs.image.shape[:2]
    scale = picture_scale(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    photo = cv2.resize(inputs.image, (size[1], size[0]),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    front = _draw(body.vertices, faces, body.camera, inputs.crop_box, photo, scale, color, _OVERLAY_ALPHA)
    grey = np.full_like(photo, _SIDE_BACKGROUND)
    side = _draw(side_vertices(body.vertices), faces, body.camera, inputs.crop_box, grey, scale, color)
    return [front, side]


def _label(image: np.ndarray, text: str) -> np.ndarray:
    image = image.copy()
    scale = max(0.4, image.shape[0] / 600)
    thickness = max(1, round(scale * 1.5))
    origin = (6, 6 + round(22 * scale))
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def overlay_picture(result: DemoResult) -> np.ndarray:
    """The overlay: photo with the predicted mesh and its side view (and the same for ground truth)."""
    tiles = panels(result.inputs, result.prediction, result.faces)
    if result.ground_truth is None and not result.info.get("synthetic"):
        return np.concatenate(tiles, axis=1)
    tiles = [_label(tiles[0], "prediction"), _label(tiles[1], "prediction, side")]
    if result.ground_truth is not None:
        gt = panels(result.inputs, result.ground_truth, result.faces, color=_GT_COLOR)
        tiles += [_label(gt[0], "ground truth"), _label(gt[1], "ground truth, side")]
    return np.concatenate(tiles, axis=1)


# ----------------------------------------------------------------------------- files


def parameter_names(num_joints: int = 24, num_betas: int = 10) -> list[str]:
    """Names of the 85 parameters in the official order: camera, pose (axis-angle), betas."""
    joints = list(smpl.SMPL_JOINT_NAMES[:num_joints]) + [f"joint{j}" for j in range(len(smpl.SMPL_JOINT_NAMES),
                                                                                       num_joints)]
    names = ["camera_s", "camera_tx", "camera_ty"]
    names += [f"pose_{joint}_{axis}" for joint in joints for axis in "xyz"]
    names += [f"betas_{i}" for i in range(num_betas)]
    return names


def named_parameters(body: Body) -> dict[str, float]:
    values = np.concatenate([body.camera, body.pose.reshape(-1), body.betas]).astype(np.float64)
    names = parameter_names(body.pose.shape[0], body.betas.shape[0])
    return {name: float(v) for name, v in zip(names, values)}


def default_focal_length(height: int, width: int) -> float:
    """SPIN's 5000 px for a 224 px crop, scaled to the photo's longer side (4D-Humans' convention)."""
    return SPIN_FOCAL_LENGTH / SPIN_CROP_SIZE * max(height, width)


def full_image_camera(body: Body, crop_box: np.ndarray, image_shape: Sequence[int],
                      focal_length: float | None = None) -> dict[str, Any]:
    """params.json's camera: the crop's weak perspective as a perspective camera of the whole photo."""
    height, width = (int(v) for v in image_shape[:2])
    focal = default_focal_length(height, width) if focal_length is None else float(focal_length)
    box = np.asarray(crop_box, np.float64)
    if body.camera[0] > 0:
        translation = _full_image_translation(
            np.asarray(body.camera, np.float32), box.astype(np.float32), focal_length=np.float32(focal),
            image_size=np.array([height, width], np.float32))
        translation = [float(v) for v in np.asarray(translation).reshape(3)]
    else:  # an untrained or broken model: no camera in front of the body
        translation = None
    return {
        "translation": translation,
        "focal_length": focal,
        "principal_point": [0.5 * width, 0.5 * height],
        "image_size": [height, width],
        "weak_perspective": {"s": float(body.camera[0]), "tx": float(body.camera[1]), "ty": float(body.camera[2])},
        "crop_box": [float(v) for v in box],
        "convention": (
            "a vertex X of mesh.obj (metres; x right, y down, z away from the camera) is seen at pixel "
            "focal_length * (X + translation)[:2] / (X + translation)[2] + principal_point of the photo "
            "(pixel (row i, column j) covers [j, j+1) x [i, i+1)). The network predicts the weak-perspective "
            "camera: s * (X[:2] + [tx, ty]) in [-1, 1] coordinates of crop_box ([x0, y0, side] in photo "
            "pixels); translation is that camera made perspective (4D-Humans' cam_crop_to_full: "
            "tz = 2 focal_length / (side s)). The focal length is free (the network cannot see it); the "
            "default is SPIN's 5000 px for a 224 px crop scaled to the photo's longer side. translation is null "
            "when the predicted s is not positive."),
    }


def params_json(result: DemoResult, *, focal_length: float | None = None) -> dict[str, Any]:
    inputs = result.inputs
    height, width = inputs.image.shape[:2]
    payload: dict[str, Any] = dict(result.info)
    payload.update({
        "image_size": [int(height), int(width)],
        "bbox": [float(v) for v in inputs.bbox],
        "crop_box": [float(v) for v in inputs.crop_box],
        "parameters": named_parameters(result.prediction),
        "camera": full_image_camera(result.prediction, inputs.crop_box, (height, width), focal_length),
        "mesh": {"file": "mesh.obj", "num_vertices": int(result.prediction.vertices.shape[0]),
                 "num_faces": int(result.faces.shape[0])},
    })
    if result.ground_truth is not None:
        payload["ground_truth"] = {"parameters": named_parameters(result.ground_truth)}
    if result.metrics is not None:
        payload["metrics"] = dict(result.metrics)
    return payload


def write_obj(path: str, vertices: np.ndarray, faces: np.ndarray, *, comment: str = "") -> None:
    """A Wavefront OBJ of the mesh (faces 1-based)."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64) + 1
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"f {a} {b} {c}" for a, b, c in faces]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def prepare_output_dir(path: str) -> str:
    """Creates the output directory; ``DemoError`` when that is impossible."""
    path = os.path.expanduser(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DemoError(f"--output: {path} exists and is not a directory (with --checkpoint, --output is a "
                        "directory for overlay.png, mesh.obj, params.json and viewer.html)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise DemoError(f"--output: cannot create directory {path}: {err.strerror or err}") from None
    if not os.access(path, os.W_OK):
        raise DemoError(f"--output: directory {path} is not writable")
    return path


def write_outputs(result: DemoResult, output_dir: str, *, focal_length: float | None = None) -> dict[str, str]:
    """Writes ``overlay.png``, ``mesh.obj``, ``params.json`` and ``viewer.html`` (the meshes over the photo
    in a self-contained page to turn with the mouse: ``dct_jax.viewer``) into ``output_dir``; returns their
    paths."""
    from dct_jax import viewer  # viewer imports this module

    paths = {name: os.path.join(output_dir, name)
             for name in ("overlay.png", "mesh.obj", "params.json", "viewer.html")}
    picture = overlay_picture(result)
    if not cv2.imwrite(paths["overlay.png"], cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {paths['overlay.png']}")
    write_obj(paths["mesh.obj"], result.prediction.vertices, result.faces,
              comment=(f"dct_jax prediction of {result.info.get('checkpoint')} step {result.info.get('step')}\n"
                       "metres; x right, y down, z away from the camera (the predicted global rotation); "
                       "no translation: see params.json camera.translation"))
    with open(paths["params.json"], "w") as f:
        json.dump(params_json(result, focal_length=focal_length), f, indent=2)
        f.write("\n")
    viewer.write_viewer(result, paths["viewer.html"])
    return paths
