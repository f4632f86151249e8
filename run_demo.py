r"""Demo: pose a body model, render it and write a picture.

    python run_demo.py --output=demo.png [--model=SMPL_NEUTRAL.pkl] [--seed=0]

Without --model it uses dct_jax's embedded free default body. The picture shows
random bodies (shape and pose drawn from a mild prior) as shaded meshes and,
when the model has a DensePose chart, as IUV maps.
"""

from __future__ import annotations

import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from dct_jax import render, smpl

_OUTPUT = flags.DEFINE_string("output", "demo.png", "Where to write the picture (PNG).")
_MODEL = flags.DEFINE_string("model", None, "SMPL .pkl/.npz; default: the embedded free body.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed for shapes and poses.")
_NUM_BODIES = flags.DEFINE_integer("num_bodies", 4, "How many bodies to draw.")
_SIZE = flags.DEFINE_integer("size", 224, "Side of each rendered crop in pixels.")

# HMR/DCT mean camera and global rotation: upright in the y-down image frame.
_MEAN_CAMERA = np.array([0.9, 0.0, 0.0], np.float32)
_UPRIGHT = np.array([np.pi, 0.0, 0.0], np.float32)


def _chart_for(model: smpl.SMPLModel, model_path: str | None):
    """The DensePose chart matching the model, or None if there is none."""
    try:
        from dct_jax import densepose
    except ImportError:
        return None
    name = "default" if model_path is None else ("smpl" if model.num_vertices == 6890 else None)
    if name is None:
        return None
    try:
        return render.RenderChart.from_any(densepose.load_chart(name))
    except (FileNotFoundError, ValueError) as err:
        logging.warning("No DensePose chart for this model (%s); skipping IUV.", err)
        return None


def main(argv: list[str]) -> None:
    del argv
    model = smpl.load(_MODEL.value)
    logging.info("Loaded %s: %d vertices, %d joints, %d betas",
                 _MODEL.value or "the default body", model.num_vertices,
                 model.num_joints, model.num_betas)
    rng = np.random.default_rng(_SEED.value)
    n = _NUM_BODIES.value
    pose = np.zeros((n, 24, 3), np.float32)
    pose[:, 0] = _UPRIGHT + rng.normal(0, [0.05, 0.6, 0.05], size=(n, 3))
    pose[:, 1:] = rng.normal(0, 0.2, size=(n, 23, 3))
    betas = rng.normal(0, 1, size=(n, model.num_betas)).astype(np.float32)

    forward = jax.jit(smpl.forward)
    out = forward(model, jnp.asarray(pose), jnp.asarray(betas))
    start = time.perf_counter()
    out = jax.block_until_ready(forward(model, jnp.asarray(pose), jnp.asarray(betas)))
    logging.info("smpl.forward of %d bodies: %.2f ms (jitted)", n, 1e3 * (time.perf_counter() - start))

    chart = _chart_for(model, _MODEL.value)
    faces = np.asarray(model.faces)
    size = _SIZE.value
    rows = []
    for vertices in np.asarray(out.vertices):
        # Centre the body in the crop: the camera translation cancels the mean.
        camera = _MEAN_CAMERA.copy()
        camera[1:] = -vertices[:, :2].mean(axis=0)
        background = np.full((size, size, 3), 40, np.uint8)
        tiles = [render.render(vertices, faces, camera, size, "rgb", background=background)]
        if chart is not None:
            iuv = render.render(vertices, None, camera, size, "iuv", chart=chart)
            # I as hue-like colour for viewing; U, V as they are.
            tiles.append(np.stack([iuv[..., 0] * 10, iuv[..., 1], iuv[..., 2]], axis=-1))
        rows.append(np.concatenate(tiles, axis=1))
    picture = np.concatenate(rows, axis=0)
    if not cv2.imwrite(_OUTPUT.value, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {_OUTPUT.value}")
    heights = np.ptp(np.asarray(forward(model, jnp.zeros((n, 72)), jnp.asarray(betas)).vertices)[..., 1], axis=-1)
    print(f"Wrote {_OUTPUT.value}: {n} bodies ({'rgb + iuv' if chart is not None else 'rgb'}); "
          f"heights in zero pose {', '.join(f'{h:.2f}' for h in heights)} m")


if __name__ == "__main__":
    app.run(main)
