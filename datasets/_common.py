"""Helpers the dataset builders share: progress totals, safe readers, crops, camera fits, posing, IUV maps."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from dct_jax import keypoints as keypoints_lib
from dct_jax import smpl_io
from dct_jax.data import schema

CROP_SCALE = 1.2  # crop side = CROP_SCALE * the longer side of the person box (SPIN, GraphCMR)
NAMED = 10  # items a message names before "..."
# Detectron's DensePose (tools/infer_simple.py, detectron/utils/vis.py) writes <image name>_IUV.png per image.
IUV_SUFFIX = "_IUV.png"


def _checked(path: str | os.PathLike | None, exists: Callable[[str], bool], error: type[OSError],
             message: str) -> str | None:
    """``path`` made absolute (None stays None) if ``exists``, else ``error(message.format(path))``."""
    if path is None:
        return None
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not exists(path):
        raise error(message.format(path))
    return path


def model_file(path: str | os.PathLike | None, name: str = "smpl_path") -> str | None:
    """A builder's body-model argument: None, or the absolute path of an existing file.

    Raises:
      FileNotFoundError: ``path`` is not a file (the message names the argument).
    """
    return _checked(path, os.path.isfile, FileNotFoundError, f"{name} {{}} is not a file; pass the SMPL model "
                    "file (.pkl or .npz), e.g. basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")


def iuv_directory(path: str | os.PathLike | None, name: str = "iuv_dir") -> str | None:
    """A builder's ``iuv_dir`` argument: None, or the absolute path of an existing directory.

    Raises NotADirectoryError (naming the argument) when it is not a directory.
    """
    return _checked(path, os.path.isdir, NotADirectoryError,
                    f"{name} {{}} is not a directory; pass the folder of DensePose's <image name>{IUV_SUFFIX} files")


def some(items: Sequence[str], *, sep: str = ", ", total: int | None = None) -> str:
    """The first :data:`NAMED` of ``items`` joined by ``sep``, then ``...`` if there are more (``total`` of them)."""
    more = (len(items) if total is None else total) > NAMED
    return sep.join(items[:NAMED]) + (f"{sep}..." if more else "")


def schema_record(**values: Any) -> dict[str, Any]:
    """``schema.make_record(**values)``.

    Raises:
      Skip: the schema rejects the values (the message says which and why).
    """
    try:
        return schema.make_record(**values)
    except ValueError as err:
        raise Skip(f"inconsistent record: {err}") from None


def reprojection_error_px(points: np.ndarray, camera: np.ndarray, crop_box: np.ndarray,
                          image_xy: np.ndarray) -> np.ndarray:
    """``(N,)`` pixels between ``(N, 3)`` body points seen by the weak-perspective ``camera`` of
    ``crop_box`` (``[x0, y0, side]``) and ``(N, 2)`` image points."""
    projected = (points[:, :2] + camera[1:]) * camera[0]
    return np.linalg.norm((projected + 1.0) * (0.5 * crop_box[2]) + crop_box[:2] - image_xy, axis=1)


class Sized:
    """An iterable with a length, so that TFDS's progress bar shows a total."""

    def __init__(self, iterable: Iterable[Any], length: int):
        self._iterable, self._length = iterable, length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable)


class Skip(ValueError):
    """An example that cannot be used: an unreadable file or an inconsistent annotation."""


def read_body_file(path: str) -> dict[str, Any]:
    """A ``_body.pkl`` (Python 2 pickle, possibly with chumpy arrays) as ``{key: numpy or value}``.

    Uses ``dct_jax.smpl_io``'s restricted unpickler (numpy, chumpy and
    builtins only; nothing else is resolved, so no code can run).

    Raises:
      Skip: not a readable pickle of a dict.
    """
    name = os.path.basename(path)
    with open(path, "rb") as stream:
        try:
            data = smpl_io._RestrictedUnpickler(stream, encoding="latin1").load()  # noqa: SLF001
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, RecursionError, OverflowError, ImportError) as err:
            raise Skip(f"{name} is not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise Skip(f"{name} holds a {type(data).__name__}, expected a dict")
    try:
        return {str(k): smpl_io._to_numpy(v, f"{name}: field {k!r}") for k, v in data.items()}  # noqa: SLF001
    except (smpl_io.ModelFileError, RecursionError) as err:
        raise Skip(str(err)) from None


def read_image(path: str) -> tuple[bytes, tuple[int, int]]:
    """The image's encoded bytes (as stored when 8-bit BGR, else re-encoded as PNG) and ``(H, W)``.

    Raises:
      Skip: OpenCV cannot decode it.
    """
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error:
        array = None
    if array is None:
        raise Skip(f"{os.path.basename(path)} is not a readable image (OpenCV cannot decode its {len(data)} bytes)")
    if not (array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # grey/alpha/16-bit -> 8-bit colour
        ok, buffer = cv2.imencode(".png", bgr)
        if not ok:
            raise Skip(f"{os.path.basename(path)}: could not re-encode it as an 8-bit colour PNG")
        data = buffer.tobytes()
    return data, (int(array.shape[0]), int(array.shape[1]))


def joints_box(xy: np.ndarray, labelled: np.ndarray) -> np.ndarray | None:
    """``[x, y, w, h]`` around the labelled joints, or None (fewer than two, or no extent)."""
    points = xy[labelled]
    if len(points) < 2:
        return None
    low, high = points.min(axis=0), points.max(axis=0)
    if np.max(high - low) <= 0:
        return None
    size = np.maximum(high - low, 1.0)
    return np.array([low[0], low[1], size[0], size[1]], np.float64)


def crop_around(bbox: np.ndarray, scale: float = CROP_SCALE) -> np.ndarray:
    """``[x0, y0, side]``: the square centred on ``bbox`` with side ``scale * max(w, h)``."""
    x, y, w, h = bbox
    side = scale * max(w, h)
    return np.array([x + 0.5 * w - 0.5 * side, y + 0.5 * h - 0.5 * side, side], np.float64)


def fit_weak_perspective(points: np.ndarray, image_xy: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """Least-squares ``(s, tx, ty)`` with ``s (X[:, :2] + t)`` closest to ``image_xy`` in ``crop_box`` coordinates.

    Raises:
      Skip: the fit gives no positive, finite scale.
    """
    points = np.asarray(points, np.float64)
    x0, y0, side = (float(v) for v in crop_box)
    uv = (np.asarray(image_xy, np.float64) - [x0, y0]) * (2.0 / side) - 1.0
    n = len(points)
    design = np.zeros((2 * n, 3))
    design[:n, 0], design[:n, 1] = points[:, 0], 1.0
    design[n:, 0], design[n:, 2] = points[:, 1], 1.0
    (scale, bx, by), *_ = np.linalg.lstsq(design, np.concatenate([uv[:, 0], uv[:, 1]]), rcond=None)
    if not (np.isfinite(scale) and scale > 0):
        raise Skip(f"no weak-perspective camera fits the projected body (scale {scale})")
    return np.array([scale, bx / scale, by / scale], np.float64)


class PosedBody:
    """A body model (``--smpl_path``) that poses fits: vertices and joints, jit-compiled once."""

    def __init__(self, path: str):
        import jax  # noqa: PLC0415  (only builds with --smpl_path need JAX here)

        from dct_jax import smpl  # noqa: PLC0415

        self.path = path
        self.model = smpl.load(path)
        self.body_model = keypoints_lib.body_for_num_vertices(self.model.num_vertices)
        self.layout = keypoints_lib.get_layout(schema.KEYPOINT_LAYOUT, body=self.body_model)
        self._forward = jax.jit(smpl.forward)

    def __call__(self, pose: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(V, 3)`` vertices and ``(24, 3)`` joints (camera frame, no translation), float64."""
        out = self._forward(self.model, np.asarray(pose, np.float32), np.asarray(betas, np.float32))
        return np.asarray(out.vertices, np.float64), np.asarray(out.joints, np.float64)

    def keypoints(self, vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """``(19, 3)`` cocoplus19 keypoints of a posed body."""
        return np.asarray(keypoints_lib.from_body(self.layout, vertices, joints), np.float64)


# ----------------------------------------------------------------------------- DensePose IUV maps


def iuv_paths(iuv_dir: str, relative_image_path: str, *, flat: bool = True) -> list[str]:
    """Where :func:`read_iuv` looks for an image's IUV map, most specific first.

    For ``a/b/name.jpg`` (relative to the dataset's root): ``<iuv_dir>/a/b/name_IUV.png``,
    ``<iuv_dir>/b/name_IUV.png`` and, if ``flat``, ``<iuv_dir>/name_IUV.png`` (Detectron's
    ``--output-dir`` holds one flat folder). Pass ``flat=False`` where file names repeat across
    folders (3DPW's ``image_00000.jpg``), so that no map is attached to the wrong image.

    Raises:
      Skip: ``relative_image_path`` is absolute or leaves its root (``..``).
    """
    relative = os.path.normpath(relative_image_path)
    if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
        raise Skip(f"image path {relative_image_path!r} is not relative to the dataset's root")
    folders, name = os.path.split(relative)
    parts = [p for p in folders.split(os.sep) if p]
    file_name = os.path.splitext(name)[0] + IUV_SUFFIX
    depths = range(len(parts) + (1 if flat else 0))
    return [os.path.join(iuv_dir, *parts[k:], file_name) for k in depths]


def read_iuv(iuv_dir: str | None, relative_image_path: str, image_shape: tuple[int, int], *,
             flat: bool = True) -> bytes | None:
    """The DensePose IUV map of an image, as the schema's ``iuv`` PNG bytes, or None if there is none.

    ``iuv_dir`` None (no ``--iuv_dir``) gives None.

    Looks for ``<stem>_IUV.png`` (:func:`iuv_paths`; ``stem`` the image's file name without its
    extension), the file Detectron's DensePose ``tools/infer_simple.py`` writes per image: ``(H, W,
    3)`` uint8 of the image's size, channels in array order (as ``cv2.imread`` returns them) part
    index I (1-24, 0 background), ``255 U``, ``255 V``. Its pixels are kept as they are and
    re-encoded with ``schema.encode_iuv``.

    Returns:
      PNG bytes, or None when no file exists (e.g. DensePose found nobody in the image: Detectron
      then writes no file).

    Raises:
      Skip: the file is not a readable image, not 3-channel 8-bit, has another size than the
        image (it is another image's map), or has part indices above 24.
    """
    if iuv_dir is None:
        return None
    path = next((p for p in iuv_paths(iuv_dir, relative_image_path, flat=flat) if os.path.isfile(p)), None)
    if path is None:
        return None
    where = os.path.relpath(path, iuv_dir)
    try:
        with open(path, "rb") as stream:
            data = stream.read()
        iuv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except (OSError, cv2.error):
        iuv = None
    if iuv is None:
        raise Skip(f"IUV map {where} is not a readable image")
    if iuv.dtype != np.uint8 or iuv.ndim != 3 or iuv.shape[2] != 3:
        channels = iuv.shape[2] if iuv.ndim == 3 else 1
        raise Skip(f"IUV map {where} has {channels} channel(s) of {iuv.dtype}, expected 3 of uint8 (I, U, V)")
    height, width = (int(v) for v in image_shape)
    if iuv.shape[:2] != (height, width):
        raise Skip(f"IUV map {where} is {iuv.shape[0]}x{iuv.shape[1]} (height x width), the image "
                   f"{height}x{width}: it is not this image's map (DensePose's _IUV.png has the image's size)")
    top = int(iuv[..., 0].max())
    if top > schema.NUM_PARTS:
        raise Skip(f"IUV map {where} has part index {top} in its first channel, expected 0-{schema.NUM_PARTS} "
                   "(channels I, U, V in array order, as cv2.imwrite stores them)")
    return schema.encode_iuv(iuv)


def check_iuv_body(iuv_dir: str | None, body_model: str, what: str = "smpl_path") -> None:
    """DensePose's IUV maps are on SMPL's chart: refuses them with records of another body.

    Raises:
      ValueError: ``iuv_dir`` is given and ``body_model`` is not ``"smpl"``.
    """
    if iuv_dir is not None and body_model != "smpl":
        raise ValueError(f"iuv_dir: DensePose's IUV maps are on SMPL's DensePose chart, but the body model of "
                         f"{what} is {body_model!r}; build with the SMPL model or without iuv_dir")
