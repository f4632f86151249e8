"""Training summaries: TensorBoard writer, predicted-mesh pictures, quiet library logs."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from absl import logging

from dct_jax import smpl
from dct_jax.models import regressor as regressor_lib


class _LibraryInfoFilter:
    """Drops INFO logs of chatty libraries (orbax logs every save step by step)."""

    _PATHS = (f"{os.sep}orbax{os.sep}", f"{os.sep}grain{os.sep}", f"{os.sep}tensorflow_datasets{os.sep}",
              f"{os.sep}jax{os.sep}_src{os.sep}")

    def filter(self, record) -> bool:
        return record.levelno > 20 or not any(p in record.pathname for p in self._PATHS)


def quiet_library_logs() -> None:
    """Keeps warnings but hides library INFO chatter from absl's log output (run scripts call it)."""
    logging.get_absl_handler().addFilter(_LibraryInfoFilter())


class SummaryWriter:
    """TensorBoard scalars and images (tensorboardX; no TensorFlow). A no-op off process 0."""

    def __init__(self, logdir: str, enabled: bool = True):
        self._writer = None
        if enabled:
            from tensorboardX import SummaryWriter as _Writer  # noqa: PLC0415

            self._writer = _Writer(logdir)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, float(v), step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def mesh_overlays(batch: Mapping[str, np.ndarray], output: regressor_lib.RegressorOutput,
                  body: smpl.SMPLModel, *, count: int = 4) -> np.ndarray:
    """``(S, count * S, 3)`` uint8: predicted meshes drawn over the first input crops.

    The background is the image crop, or a false-colour view of the IUV /
    segmentation input when the model does not see the image.
    """
    from dct_jax import render  # noqa: PLC0415

    if "image" in batch:
        backgrounds = np.asarray(batch["image"])
    elif "iuv" in batch:
        iuv = np.asarray(batch["iuv"]).astype(np.int32)
        backgrounds = np.stack([iuv[..., 0] * 10, iuv[..., 1], iuv[..., 2]], -1).astype(np.uint8)
    else:
        backgrounds = np.repeat((np.asarray(batch["segmentation"]).astype(np.int32) * 10)[..., None], 3, -1)
        backgrounds = backgrounds.astype(np.uint8)
    count = min(count, backgrounds.shape[0])
    out = smpl.forward(body, output.pose[:count], output.betas[:count])
    vertices, cameras = np.asarray(out.vertices), np.asarray(output.camera[:count])
    faces = np.asarray(body.faces)
    size = backgrounds.shape[1]
    tiles = [render.render(vertices[i], faces, cameras[i], size, "rgb", background=backgrounds[i], alpha=0.7)
             for i in range(count)]
    return np.concatenate(tiles, axis=1)
