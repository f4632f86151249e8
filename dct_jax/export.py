r"""Exports a trained regressor with its SMPL forward as a self-contained ``jax.export`` artifact.

    python -m dct_jax.export --checkpoint=/tmp/dct_quickstart --output=model.jax [--step=N]

writes ``model.jax``, the serialized StableHLO of

    uint8 crops (batch b, any size) -> {"params", "pose", "betas", "camera", "vertices", "joints", "keypoints"}

with the network's and the body model's arrays embedded as constants, and the sidecar
``model.jax.json`` that says how to feed it (input names, shapes, dtypes and encodings in
call order, output shapes, the image size, the checkpoint step, joint and keypoint names,
the mesh faces). Reloading needs nothing but jax (and flatbuffers, which jax's serializer
uses), no dct_jax and no flax:

    import jax, json, numpy as np
    info = json.load(open("model.jax.json"))  # inputs in call order: name, shape ("b" = batch), dtype
    exported = jax.export.deserialize(bytearray(open("model.jax", "rb").read()))
    batch = 2  # any batch size; below, zeros stand in for real crops
    crops = [np.zeros([batch if d == "b" else d for d in i["shape"]], i["dtype"]) for i in info["inputs"]]
    out = exported.call(*crops)  # dict: out["params"] (batch, 85), out["vertices"] (batch, V, 3), ...

Inputs, positional, in this order and only those the model was trained on (``info["inputs"]``):
  * ``image``: ``(b, S, S, 3)`` uint8 RGB person crop, zero-padded to a square;
  * ``iuv``: ``(b, S, S, 3)`` uint8 DensePose IUV of the same crop (I = part 0..24, U, V 0..255);
  * ``segmentation``: ``(b, S, S)`` uint8 part index 0..24 (0 = background).
The batch size ``b`` is symbolic: one artifact runs any batch size.

Outputs, a dict of float32 arrays:
  * ``params (b, 85)``: camera, pose, betas concatenated (the official layout);
  * ``camera (b, 3)``: weak perspective ``(s, tx, ty)``, ``x2d = s * (X[:, :2] + [tx, ty])`` in
    ``[-1, 1]`` crop coordinates;
  * ``pose (b, 24, 3)``: axis-angle, joint 0 the global rotation; ``betas (b, 10)``;
  * ``vertices (b, V, 3)``, ``joints (b, 24, 3)``: ``smpl.forward`` of the prediction;
  * ``keypoints (b, 19, 3)``: the cocoplus-19 keypoints of that body (``keypoints.from_body``).

The artifact is lowered for this machine's backend unless ``--platforms=cpu,cuda,tpu`` (one
artifact for several; lowering needs no such device, running it does). Calling it compiles it
for the call's batch size (once per size). It embeds the body model's arrays (and the JSON its
faces): an export of a run on the licensed SMPL model carries SMPL data under SMPL's licence.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dct_jax

SIDECAR_SUFFIX = ".json"
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
OUTPUT_NAMES = ("params", "camera", "pose", "betas", "vertices", "joints", "keypoints")

_INPUT_DESCRIPTIONS = {
    "image": "RGB person crop, 0..255, zero-padded to a square",
    "iuv": "DensePose IUV of the crop: channel 0 the part index I in 0..24 (0 = background), "
           "channels 1, 2 the chart coordinates U, V in 0..255",
    "segmentation": "part index per pixel, 0..24 (0 = background)",
}
_OUTPUT_DESCRIPTIONS = {
    "params": "camera (3), pose (72), betas (10) concatenated, the official DCT/HMR layout",
    "camera": "weak perspective (s, tx, ty): x2d = s * (X[:, :2] + [tx, ty]) in [-1, 1] crop coordinates",
    "pose": "axis-angle per SMPL joint, joint 0 the global rotation",
    "betas": "shape coefficients",
    "vertices": "posed mesh vertices in metres (smpl.forward of pose and betas, no translation)",
    "joints": "posed SMPL joints, names in joint_names",
    "keypoints": "posed cocoplus-19 keypoints (joints or vertices of the body), names in keypoint_names",
}


class ExportError(ValueError):
    """A user error (bad path or option), reported on one line by the command line."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: str  # the serialized artifact
    sidecar: str  # its JSON description
    size_bytes: int
    metadata: dict[str, Any]

    def summary(self) -> str:
        """One line: the file, its size, the inputs and the outputs."""
        def shape(s):
            return "(" + ",".join(str(d) for d in s) + ")"

        inputs = ", ".join(f"{i['name']} {shape(i['shape'])} {i['dtype']}" for i in self.metadata["inputs"])
        outputs = ", ".join(f"{k} {shape(o['shape'])}" for k, o in self.metadata["outputs"].items())
        return (f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB, step {self.metadata['checkpoint_step']}, "
                f"{'/'.join(self.metadata['platforms'])}): {inputs} -> {outputs}; described in {self.sidecar}")


def sidecar_path(output: str | os.PathLike) -> str:
    return os.fspath(output) + SIDECAR_SUFFIX


def input_names(trained) -> tuple[str, ...]:
    """The exported function's positional inputs: the main field, then the auxiliary one if any."""
    main, aux = trained.inputs
    return (main,) if aux is None else (main, aux)


def input_specs(trained, batch: Any = None) -> list[jax.ShapeDtypeStruct]:
    """``ShapeDtypeStruct`` per input (uint8 crops of the run's image size); ``batch`` defaults to symbolic ``b``."""
    if batch is None:
        (batch,) = jax.export.symbolic_shape("b")
    size = trained.image_size
    return [jax.ShapeDtypeStruct((batch, size, size) if name == "segmentation" else (batch, size, size, 3),
                                 jnp.uint8) for name in input_names(trained)]


def inference_function(trained) -> Callable[..., dict[str, jax.Array]]:
    """``f(*crops) -> outputs``: the regressor, then the body model, variables closed over (constants).

    ``crops`` come in the order of :func:`input_names`. The body model runs under ``vmap`` (one body
    at a time, batched by vmap): ``smpl.forward`` picks its algorithm from the concrete batch size,
    which a symbolic batch does not have; the result is the same.
    """
    from dct_jax import keypoints, smpl
    from dct_jax import state as state_lib

    names = input_names(trained)
    variables = jax.tree.map(jnp.asarray, trained.variables)
    model, inputs, body, layout = trained.model, trained.config.model.inputs, trained.body, trained.layout

    def one_body(pose, betas):
        out = smpl.forward(body, pose, betas)
        return out.vertices, out.joints

    def fn(*crops):
        if len(crops) != len(names):
            raise TypeError(f"expected {len(names)} inputs {names}, got {len(crops)}")
        out = state_lib.predict(variables, dict(zip(names, crops)), model=model, inputs=inputs)
        vertices, joints = jax.vmap(one_body)(out.pose, out.betas)
        return {
            "params": out.params,
            "camera": out.camera,
            "pose": out.pose,
            "betas": out.betas,
            "vertices": vertices,
            "joints": joints,
            "keypoints": keypoints.from_body(layout, vertices, joints),
        }

    return fn


def export_model(trained, *, platforms: Sequence[str] | None = None) -> jax.export.Exported:
    """Traces and lowers :func:`inference_function` with a symbolic batch for ``platforms`` (default: this backend)."""
    fn = jax.jit(inference_function(trained))
    return jax.export.export(fn, platforms=None if platforms is None else tuple(platforms))(*input_specs(trained))


def _shape(aval) -> list[int | str]:
    return [d if isinstance(d, int) else str(d) for d in aval.shape]


def metadata(trained, exported: jax.export.Exported, *, artifact: str) -> dict[str, Any]:
    """The sidecar's content: how to call ``exported`` and what it returns."""
    from dct_jax import keypoints

    names = input_names(trained)
    outputs = jax.tree.unflatten(exported.out_tree, exported.out_avals)
    body = trained.body
    return {
        "format": "jax.export serialized Exported (StableHLO); load with jax.export.deserialize",
        "artifact": os.path.basename(artifact),
        "call": f"jax.export.deserialize(bytearray(open(path, 'rb').read())).call({', '.join(names)})",
        "jax_version": jax.__version__,
        "dct_jax_version": dct_jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "platforms": list(exported.platforms),
        "checkpoint": trained.location.workdir,
        "checkpoint_step": int(trained.step),
        "model_inputs": str(trained.config.model.inputs),
        "image_size": trained.image_size,
        "inputs": [{"name": name, "shape": _shape(aval), "dtype": str(aval.dtype),
                    "description": _INPUT_DESCRIPTIONS[name]} for name, aval in zip(names, exported.in_avals)],
        "outputs": {name: {"shape": _shape(outputs[name]), "dtype": str(outputs[name].dtype),
                           "description": _OUTPUT_DESCRIPTIONS[name]} for name in OUTPUT_NAMES},
        "joint_names": list(keypoints.SMPL24_NAMES),
        "keypoint_names": list(trained.layout.names),
        "body": {"num_vertices": int(body.num_vertices), "num_joints": int(body.num_joints),
                 "num_faces": int(np.asarray(body.faces).shape[0]), "keypoint_layout": trained.layout.name},
        # Last (and on one line), so that the rest stays readable.
        "faces": np.asarray(body.faces).astype(int).tolist(),
    }


def _dump_metadata(meta: Any, indent: str = "") -> str:
    """JSON with one key per line, but each list that holds no dict on one line (shapes, names, faces)."""
    if isinstance(meta, dict):
        inner = indent + "  "
        items = [f"{inner}{json.dumps(k)}: {_dump_metadata(v, inner)}" for k, v in meta.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(meta, list) and any(isinstance(v, dict) for v in meta):
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + _dump_metadata(v, inner) for v in meta) + f"\n{indent}]"
    return json.dumps(meta, separators=(", ", ": ") if isinstance(meta, list) and len(meta) < 100 else (",", ":"))


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def check_output(output: str | os.PathLike) -> str:
    """The absolute output path; :class:`ExportError` if it cannot be written."""
    if not os.fspath(output):
        raise ExportError("--output is required: the file to write, e.g. --output=model.jax")
    path = os.path.abspath(os.path.expanduser(os.fspath(output)))
    parent = os.path.dirname(path)
    if os.path.isdir(path):
        raise ExportError(f"--output={output} is a directory; give a file name, e.g. {os.path.join(path, 'model.jax')}")
    if not os.path.isdir(parent):
        raise ExportError(f"output directory {parent} does not exist; create it first or choose another --output")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"output directory {parent} is not writable")
    return path


def check_platforms(platforms: Sequence[str] | None) -> tuple[str, ...] | None:
    if not platforms:
        return None
    unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if unknown:
        raise ExportError(f"unknown platform(s) {unknown}; choose from {list(KNOWN_PLATFORMS)}")
    return tuple(platforms)


def export_trained(trained, output: str | os.PathLike, *,
                   platforms: Sequence[str] | None = None) -> ExportResult:
    """Exports a loaded :class:`~dct_jax.inference.TrainedModel` to ``output`` and its sidecar."""
    path = check_output(output)
    exported = export_model(trained, platforms=check_platforms(platforms))
    data = bytes(exported.serialize())
    meta = metadata(trained, exported, artifact=path)
    _write_atomically(path, data)
    _write_atomically(sidecar_path(path), (_dump_metadata(meta) + "\n").encode())
    return ExportResult(path=path, sidecar=sidecar_path(path), size_bytes=len(data), metadata=meta)


def check_arguments(checkpoint: str | os.PathLike | None, output: str | os.PathLike | None, *,
                    smpl_path: str | None = None, platforms: Sequence[str] | None = None) -> None:
    """Cheap checks of the command line's paths and options (no import of the model's libraries)."""
    if not checkpoint:
        raise ExportError("--checkpoint is required: a training workdir, its checkpoints/ folder or one step's folder")
    if not os.path.exists(os.path.expanduser(os.fspath(checkpoint))):
        raise ExportError(f"checkpoint path {checkpoint} does not exist; pass a training workdir "
                          "(run_train.py --workdir), its checkpoints/ folder or one step's folder")
    check_output(output or "")
    check_platforms(platforms)
    if smpl_path is not None and not os.path.isfile(os.path.expanduser(smpl_path)):
        raise ExportError(f"--smpl_path={smpl_path} is not a file")


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, step: int | None = None,
                      smpl_path: str | None = None, platforms: Sequence[str] | None = None) -> ExportResult:
    """Loads a checkpoint (a workdir, its ``checkpoints/`` or one step's folder) and exports it.

    Arguments are checked before the (slow) restore and lowering: a bad path or option raises
    :class:`ExportError` or :class:`~dct_jax.inference.CheckpointError`.
    """
    check_arguments(checkpoint, output, smpl_path=smpl_path, platforms=platforms)
    from dct_jax import inference

    inference.locate_checkpoint(checkpoint, step=step)
    trained = inference.load_checkpoint(checkpoint, step=step, smpl_path=smpl_path)
    return export_trained(trained, output, platforms=platforms)


# ----------------------------------------------------------------------------- command line


def _define_flags():
    from absl import flags

    return {
        "checkpoint": flags.DEFINE_string(
            "checkpoint", None, "A training workdir, its checkpoints/ folder or one step's folder."),
        "output": flags.DEFINE_string("output", None, "The artifact to write, e.g. model.jax (+ model.jax.json)."),
        "step": flags.DEFINE_integer("step", None, "The step to export (default: the latest)."),
        "smpl_path": flags.DEFINE_string("smpl_path", None, "The body model, if the run's smpl_path has moved."),
        "platforms": flags.DEFINE_list(
            "platforms", None, f"Platforms to lower for, of {','.join(KNOWN_PLATFORMS)} (default: this machine's)."),
    }


def _error(message: str) -> None:
    print(f"python -m dct_jax.export: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str], flag_values: dict[str, Any]) -> None:
    if len(argv) > 1:
        _error(f"unexpected arguments {argv[1:]}")
    values = {k: v.value for k, v in flag_values.items()}
    try:  # before the slow imports
        check_arguments(values["checkpoint"], values["output"], smpl_path=values["smpl_path"],
                        platforms=values["platforms"])
    except ExportError as err:
        _error(str(err))
    from dct_jax import inference, summaries

    summaries.quiet_library_logs()
    try:
        result = export_checkpoint(values["checkpoint"], values["output"], step=values["step"],
                                   smpl_path=values["smpl_path"], platforms=values["platforms"])
    except (ExportError, inference.CheckpointError) as err:
        _error(str(err))
    except FileNotFoundError as err:  # e.g. the run's body model has moved
        _error(f"{err} (pass --smpl_path if the body model has moved)")
    print(result.summary())


if __name__ == "__main__":
    from absl import app

    _FLAGS = _define_flags()
    app.run(lambda argv: main(argv, _FLAGS))
