r"""Demo: a trained model on a photo, or a posed body model without one.

With a checkpoint (the model's configuration comes from the checkpoint, never from flags)::

    python run_demo.py --checkpoint=WORKDIR --image=PHOTO.jpg [--bbox=x,y,w,h] \
        [--iuv=IUV.png | --segmentation=SEG.png] [--output=demo_out]

  * ``--checkpoint``: a training workdir (``run_train.py --workdir``), its
    ``checkpoints/`` folder (latest step) or one step's folder ``checkpoints/N``.
  * ``--bbox``: the person box in photo pixels (left, top, width, height); without
    it the person is the whole photo. The model sees the square around the box
    (side ``max(w, h)``), zero-padded where it leaves the photo, as in training.
  * ``--iuv``: needed by an IUV-branch checkpoint: DensePose's PNG of the photo
    (same size), channels in array order I (part 0-24), U, V (0-255), as
    DensePose writes it. ``--segmentation``: needed by a segmentation-branch
    checkpoint: a single-channel PNG of part indices 0-24. Given to a checkpoint
    that does not use it, it is ignored with a warning.
  * ``--output``: a directory (default ``demo_out``) that receives
      ``overlay.png``  the photo with the predicted mesh, and the mesh seen from the side;
      ``mesh.obj``     the predicted mesh (metres, x right, y down, z away from the
                       camera: the predicted global rotation, no translation);
      ``params.json``  the 85 parameters by name (camera_s/tx/ty, pose_<joint>_<axis>,
                       betas_<i>), and the camera as a perspective translation in the
                       whole photo with its focal length (``--focal_length``, default
                       SPIN's 5000 px per 224 px scaled to the photo's longer side).
  * Without ``--image``: a test example of the run's dataset (or, if that is not
    built, a freshly generated synthetic one; ``--example`` picks which), shown as
    prediction and ground truth side by side; params.json adds the ground truth
    and the example's PVE/MPJPE.

Without a checkpoint (the original demo, no training needed)::

    python run_demo.py --output=demo.png [--model=SMPL_NEUTRAL.pkl] [--seed=0]

Without --model it uses dct_jax's embedded free default body. The picture shows
random bodies (shape and pose drawn from a mild prior) as shaded meshes and,
when the model has a DensePose chart, as IUV maps. Here ``--output`` is the PNG
to write (default ``demo.png``).

Mistakes in the flags or input files print one line ("run_demo.py: error: ...")
and exit with status 2 before anything heavy runs.
"""

from __future__ import annotations

import os
import sys
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from dct_jax import render, smpl, smpl_io

_OUTPUT = flags.DEFINE_string(
    "output", None, "Without --checkpoint: the PNG to write (default demo.png). With --checkpoint: the "
    "directory for overlay.png, mesh.obj, params.json and viewer.html (default demo_out).")
_MODEL = flags.DEFINE_string(
    "model", None, "SMPL .pkl/.npz; default: the embedded free body. With --checkpoint: the body model "
    "file when the run's config.smpl_path has moved.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed for shapes and poses (no --checkpoint).")
_NUM_BODIES = flags.DEFINE_integer("num_bodies", 4, "How many bodies to draw (no --checkpoint).")
_SIZE = flags.DEFINE_integer("size", 224, "Side of each rendered crop in pixels (no --checkpoint).")

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A training workdir, its checkpoints/ folder (latest step) or one step's folder.")
_STEP = flags.DEFINE_integer("step", None, "With a workdir or checkpoints/: this step instead of the latest.")
_IMAGE = flags.DEFINE_string(
    "image", None, "The photo. Without it: a test example of the run's dataset, prediction beside ground truth.")
_BBOX = flags.DEFINE_string("bbox", None, "Person box x,y,w,h in photo pixels; default: the whole photo.")
_IUV = flags.DEFINE_string(
    "iuv", None, "DensePose IUV PNG of the photo (channels I, U, V in array order, 0-255), for IUV-branch "
    "checkpoints.")
_SEGMENTATION = flags.DEFINE_string(
    "segmentation", None, "Part segmentation PNG of the photo (one channel, part 0-24), for "
    "segmentation-branch checkpoints.")
_FOCAL_LENGTH = flags.DEFINE_float(
    "focal_length", None, "Focal length in photo pixels of params.json's perspective camera; default "
    "5000 / 224 * the photo's longer side (SPIN's focal length, as 4D-Humans' demo scales it).")
_EXAMPLE = flags.DEFINE_integer("example", 0, "Without --image: which test example to show.")

_CHECKPOINT_ONLY = ("image", "bbox", "iuv", "segmentation", "focal_length", "example", "step")
_BODY_ONLY = ("seed", "num_bodies", "size")

# HMR/DCT mean camera and global rotation: upright in the y-down image frame.
_MEAN_CAMERA = np.array([0.9, 0.0, 0.0], np.float32)
_UPRIGHT = np.array([np.pi, 0.0, 0.0], np.float32)


class UserError(Exception):
    """A mistake in the flags or input files: printed as one line, exit status 2."""


def _present(name: str) -> bool:
    return flags.FLAGS[name].present


# ----------------------------------------------------------------------------- trained model


def _prepare():
    """Checks flags and input files and reads the run's config (all cheap); raises UserError."""
    from dct_jax import demo, inference
    from dct_jax import state as state_lib

    if _IMAGE.value is None:
        wrong = [f"--{name}" for name in ("bbox", "iuv", "segmentation") if _present(name)]
        if wrong:
            raise UserError(f"{', '.join(wrong)} go(es) with --image=PHOTO; without --image the demo shows a "
                            "synthetic test example")
    if _FOCAL_LENGTH.value is not None and not _FOCAL_LENGTH.value > 0:
        raise UserError(f"--focal_length must be positive, got {_FOCAL_LENGTH.value}")
    try:
        location = inference.locate_checkpoint(_CHECKPOINT.value, step=_STEP.value)
        config = inference.load_config(location.workdir)
        fields = state_lib.model_inputs(config.model.inputs)
    except (inference.CheckpointError, ValueError) as err:
        raise UserError(f"--checkpoint: {err}") from None
    body_path = _MODEL.value or config.get("smpl_path")
    if body_path and not os.path.isfile(os.path.expanduser(body_path)):
        where = "--model" if _MODEL.value else "the run's config.smpl_path"
        raise UserError(f"the body model {body_path} ({where}) does not exist; pass --model=SMPL_FILE "
                        "(the .pkl/.npz the run was trained with)")

    inputs = None
    if _IMAGE.value is not None:
        photo = demo.read_photo(_IMAGE.value)
        bbox = demo.parse_bbox(_BBOX.value) if _BBOX.value is not None else None
        needed = demo.needed_aux_fields(fields)
        maps = {}
        for field, flag in (("iuv", _IUV), ("segmentation", _SEGMENTATION)):
            if field in needed and not flag.value:
                raise UserError(demo.missing_input_message(field, config.model.inputs))
            if flag.value and field not in needed:
                logging.warning("This checkpoint (model inputs %r) does not take %s; ignoring --%s=%s.",
                                config.model.inputs, field, field, flag.value)
                continue
            if flag.value:
                read = demo.read_iuv if field == "iuv" else demo.read_segmentation
                maps[field] = read(flag.value, photo.shape[:2])
        inputs = demo.DemoInputs(image=photo, bbox=bbox, name=_IMAGE.value, **maps)
    output_dir = demo.prepare_output_dir(_OUTPUT.value or "demo_out")
    return location, inputs, output_dir


def checkpoint_main() -> dict[str, str]:
    """The trained-model demo; returns the written paths. Raises UserError (or demo.DemoError)."""
    from dct_jax import demo, inference, summaries

    summaries.quiet_library_logs()
    for name in _BODY_ONLY:
        if _present(name):
            logging.warning("--%s is for the demo without --checkpoint; ignoring it.", name)
    location, inputs, output_dir = _prepare()
    start = time.perf_counter()
    # From the path given (not location.step): an unreadable newest step falls back to the previous one.
    trained = inference.load_checkpoint(_CHECKPOINT.value, step=_STEP.value, smpl_path=_MODEL.value)
    logging.info("Loaded %s step %d (model inputs %s) in %.1f s", location.workdir, trained.step,
                 trained.config.model.inputs, time.perf_counter() - start)
    if inputs is None:
        result = demo.synthetic_example(trained, index=_EXAMPLE.value)
    else:
        result = demo.run(trained, inputs)
    paths = demo.write_outputs(result, output_dir, focal_length=_FOCAL_LENGTH.value)
    summary = f"Wrote {', '.join(paths.values())} (checkpoint step {trained.step}"
    if result.metrics:
        summary += ", " + ", ".join(f"{k} {v:.1f}" for k, v in result.metrics.items())
    print(summary + ")")
    return paths


# ----------------------------------------------------------------------------- posed body model


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


def _check_body_flags() -> str:
    """Checks the body demo's flags before any work; returns the output path. Raises UserError."""
    output = os.path.abspath(os.path.expanduser(_OUTPUT.value or "demo.png"))
    if _NUM_BODIES.value < 1:
        raise UserError(f"--num_bodies must be at least 1, got {_NUM_BODIES.value}")
    if _SIZE.value < 16:
        raise UserError(f"--size must be at least 16 pixels, got {_SIZE.value}")
    if os.path.isdir(output):
        raise UserError(f"--output={_OUTPUT.value} is a directory; give a .png file name")
    if not output.lower().endswith(".png"):
        raise UserError(f"--output={_OUTPUT.value} must be a .png file (the demo without --checkpoint writes a picture)")
    if not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"--output: directory {os.path.dirname(output)} does not exist; create it first")
    if _MODEL.value is not None and not os.path.isfile(os.path.expanduser(_MODEL.value)):
        raise UserError(f"--model={_MODEL.value} is not a file (an SMPL .pkl or .npz; omit --model for the "
                        "free default body)")
    return output


def body_main() -> None:
    """The original demo: random bodies of a body model, rendered into one PNG."""
    output = _check_body_flags()
    try:
        model = smpl.load(_MODEL.value)
    except smpl_io.ModelFileError as err:
        raise UserError(f"--model: {err}") from None
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
    if not cv2.imwrite(output, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {output}")
    heights = np.ptp(np.asarray(forward(model, jnp.zeros((n, 72)), jnp.asarray(betas)).vertices)[..., 1], axis=-1)
    print(f"Wrote {output}: {n} bodies ({'rgb + iuv' if chart is not None else 'rgb'}); "
          f"heights in zero pose {', '.join(f'{h:.2f}' for h in heights)} m")


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str]) -> None:
    from dct_jax import demo

    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; all options are --flags")
    try:
        if _CHECKPOINT.value is None:
            wrong = [f"--{name}" for name in _CHECKPOINT_ONLY if _present(name)]
            if wrong:
                raise UserError(f"{', '.join(wrong)} need(s) --checkpoint=PATH (a trained model)")
            body_main()
        else:
            checkpoint_main()
    except (UserError, demo.DemoError) as err:
        _fail(str(err))


def _fail(message: str) -> None:
    print(f"run_demo.py: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    app.run(main)
