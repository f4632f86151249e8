"""A trained regressor loaded back from a training run's checkpoint, ready to predict.

    trained = inference.load_checkpoint("/tmp/dct_quickstart")   # a workdir,
    trained = inference.load_checkpoint("/tmp/dct_quickstart/checkpoints")      # its checkpoints,
    trained = inference.load_checkpoint("/tmp/dct_quickstart/checkpoints/1200") # or one step
    output = trained.predict({"iuv": iuv_crops})  # (B, S, S, 3) uint8 crops of the config's size

The model's configuration comes from the run (``WORKDIR/config.json``, written by
``run_train.py``), never from flags, so a checkpoint is always rebuilt as it was trained.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from dct_jax import keypoints, smpl
from dct_jax import state as state_lib
from dct_jax.models import regressor as regressor_lib


CheckpointError = state_lib.CheckpointError  # a path without a usable checkpoint; says what was expected


@dataclasses.dataclass(frozen=True)
class CheckpointLocation:
    workdir: str  # holds config.json
    directory: str  # WORKDIR/checkpoints, the orbax CheckpointManager's directory
    step: int
    requested: bool = False  # the step was asked for (``step=`` or a step's folder): no fallback


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A regressor with its restored variables, its config and the body model it predicts."""

    config: ml_collections.ConfigDict
    model: regressor_lib.Regressor
    variables: Mapping[str, Any]  # {"params": ..., "batch_stats": ...}
    body: smpl.SMPLModel
    layout: keypoints.Layout
    location: CheckpointLocation

    @property
    def step(self) -> int:
        return self.location.step

    @property
    def inputs(self) -> tuple[str, str | None]:
        """(main input field, auxiliary input field or None), e.g. ``("image", "iuv")``."""
        return state_lib.model_inputs(self.config.model.inputs)

    @property
    def image_size(self) -> int:
        return int(self.config.data.image_size)

    def predict(self, batch: Mapping[str, Any]) -> regressor_lib.RegressorOutput:
        """``batch`` holds the input fields (uint8 ``(B, S, S, 3)`` crops; segmentation ``(B, S, S)``)."""
        return _predict_jit(self.variables, {k: np.asarray(v) for k, v in batch.items()},
                            model=self.model, inputs=self.config.model.inputs)


_predict_jit = jax.jit(state_lib.predict, static_argnames=("model", "inputs"))


def locate_checkpoint(path: str | os.PathLike, *, step: int | None = None) -> CheckpointLocation:
    """Resolves a workdir, its ``checkpoints/`` folder or one step's folder to a checkpoint.

    Without ``step`` a workdir or ``checkpoints/`` resolves to the latest complete step
    (orbax ignores a save left half-written by a kill; :func:`load_checkpoint` then
    falls back to an older one if that step is unreadable).
    """
    import orbax.checkpoint as ocp  # noqa: PLC0415

    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint path {path} does not exist; pass a training workdir "
                              "(run_train.py --workdir), its checkpoints/ folder or one step's folder")
    name = os.path.basename(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        workdir, directory = path, os.path.join(path, "checkpoints")
    elif name == "checkpoints":
        workdir, directory = os.path.dirname(path), path
    elif name.isdigit() and os.path.basename(os.path.dirname(path)) == "checkpoints":
        directory = os.path.dirname(path)
        workdir = os.path.dirname(directory)
        if step is not None and step != int(name):
            raise CheckpointError(f"{path} is step {name} but step={step} was asked for")
        step = int(name)
    else:
        raise CheckpointError(
            f"{path} is not a dct_jax checkpoint: expected a training workdir holding checkpoints/ "
            "and config.json, its checkpoints/ folder, or one step's folder checkpoints/N")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise CheckpointError(f"{workdir} has no config.json (run_train.py writes it beside checkpoints/); "
                              "cannot tell which model the checkpoint holds")
    manager = ocp.CheckpointManager(directory)
    steps = sorted(manager.all_steps())
    manager.close()
    if not steps:
        raise CheckpointError(f"no complete checkpoint in {directory}")
    requested = step is not None
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"no complete checkpoint of step {step} in {directory}; steps there: {steps}")
    return CheckpointLocation(workdir=workdir, directory=directory, step=int(step), requested=requested)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with (``WORKDIR/config.json``); a one-line error if it is unreadable."""
    from dct_jax import workdir as workdir_lib  # noqa: PLC0415

    try:
        return workdir_lib.load_config(workdir)
    except workdir_lib.WorkdirError as error:
        raise CheckpointError(str(error)) from None


def load_checkpoint(path: str | os.PathLike, *, step: int | None = None,
                    smpl_path: str | None = None) -> TrainedModel:
    """Loads the regressor saved at ``path`` (see :func:`locate_checkpoint`).

    Args:
      path: a workdir, its ``checkpoints/`` folder or ``checkpoints/N``.
      step: a step to load instead of the latest.
      smpl_path: the body model, when the run's ``config.smpl_path`` has moved.
    """
    location = locate_checkpoint(path, step=step)
    config = load_config(location.workdir)
    if smpl_path is not None:
        config.smpl_path = smpl_path
    model = state_lib.create_model(config.model)
    tx, _ = state_lib.create_optimizer(config)
    body, layout = state_lib.load_body(config)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    abstract = state_lib.abstract_state(model, tx, config, mesh)
    # The newest usable step (a corrupt newest one is named in a warning), or exactly the one asked for.
    restored_step, variables = state_lib.restore_variables(
        location.directory, abstract, step=location.step if location.requested else None)
    location = dataclasses.replace(location, step=restored_step)
    return TrainedModel(config=config, model=model, variables=variables, body=body, layout=layout,
                        location=location)
