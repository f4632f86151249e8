"""The model and its train state, built from a config; sharding; checkpoints read back.

Everything an entry point needs to hold a network: :func:`create_model`,
:func:`create_optimizer`, :func:`initial_state` / :func:`abstract_state` (what a
checkpoint restores onto), :func:`predict`, the data-parallel mesh and
shardings, the body model, and :func:`restore_newest`, which reads the newest
*usable* checkpoint step (a corrupt newest step is named in one warning and the
previous complete one used). ``train`` (the step and the loop), ``evaluate``,
``inference`` and ``export`` all build on it (only :func:`variables_from_checkpoint`
reads another run through ``inference``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, Mapping, TypeVar

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from dct_jax import keypoints, smpl
from dct_jax.data import pipeline
from dct_jax.models import regressor as regressor_lib

T = TypeVar("T")


class CheckpointError(FileNotFoundError):
    """A path that does not hold a usable dct_jax training checkpoint; says what was expected."""


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; checkpointed whole).

    step: scalar int32. params, batch_stats: the Regressor's variables.
    opt_state: optax state. nonfinite_steps: scalar int32, updates skipped so far.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    nonfinite_steps: jax.Array


# ----------------------------------------------------------------------------- factories


# ``config.model.inputs`` (Table 3's input rows) -> (main input field, auxiliary input field or None).
MODEL_INPUTS: dict[str, tuple[str, str | None]] = {
    "image": ("image", None), "iuv": ("iuv", None), "seg": ("segmentation", None),
    "image_iuv": ("image", "iuv"), "image_seg": ("image", "segmentation")}


def model_inputs(inputs: str) -> tuple[str, str | None]:
    """``config.model.inputs`` -> (main input field, auxiliary input field or None)."""
    if inputs not in MODEL_INPUTS:
        raise ValueError(f"config.model.inputs must be one of {sorted(MODEL_INPUTS)}, got {inputs!r}")
    return MODEL_INPUTS[inputs]


def create_model(model_config: ml_collections.ConfigDict) -> regressor_lib.Regressor:
    """The Regressor that ``config.model`` describes."""
    _, aux = model_inputs(model_config.inputs)
    mean_params = None
    if model_config.get("mean_params_path"):
        mean_params = regressor_lib.load_mean_params(model_config.mean_params_path)
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if model_config.dtype not in dtypes:
        raise ValueError(f"config.model.dtype must be one of {sorted(dtypes)}, got {model_config.dtype!r}")
    return regressor_lib.Regressor(
        encoder="single" if aux is None else "two_branch",
        depth=model_config.depth, aux_depth=model_config.aux_depth, width=model_config.width,
        feature_dim=model_config.feature_dim or None, hidden_dim=model_config.hidden_dim,
        mean_params=mean_params, dtype=dtypes[model_config.dtype])


def iuv_error_model(config: ml_collections.ConfigDict) -> Any:
    """``config.data.iuv_errors`` as a :class:`dct_jax.iuv_errors.IUVErrorModel`; None when all its levels are 0."""
    levels = dict(config.data.get("iuv_errors") or {})
    if not any(levels.values()):
        return None
    from dct_jax import iuv_errors  # noqa: PLC0415

    return iuv_errors.IUVErrorModel(**levels)


def example_spec(config: ml_collections.ConfigDict, *, train: bool) -> pipeline.ExampleSpec:
    """The pipeline's :class:`~dct_jax.data.pipeline.ExampleSpec` for ``config``."""
    main, aux = model_inputs(config.model.inputs)
    inputs = (main,) + ((aux,) if aux else ())
    d = config.data
    spec = pipeline.ExampleSpec(
        image_size=d.image_size, inputs=inputs, num_dense=d.num_dense,
        dense_source=d.dense_source if (config.loss.dense > 0 or not train) else "none",
        refine_iuv=d.refine_iuv, smpl_fraction=d.smpl_fraction if train else 1.0,
        normalize_point_weights=d.get("normalize_point_weights", True),
        dense_keep=d.get("dense_keep", 1.0) if train else 1.0,
        dense_uv_noise=d.get("dense_uv_noise", 0.0) if train else 0.0,
        iuv_errors=iuv_error_model(config),
        scale_jitter=d.scale_jitter, translate_jitter=d.translate_jitter, flip_prob=d.flip_prob,
        smpl_path=config.smpl_path)
    return spec if train else spec.without_augmentation()


def create_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam with a (warmed-up) cosine decay from ``learning_rate`` to ``end_learning_rate``."""
    steps, warmup = max(int(config.num_train_steps), 1), int(config.warmup_steps)
    if warmup > 0:
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
            decay_steps=max(steps, warmup + 1), end_value=config.end_learning_rate)
    else:
        schedule = optax.cosine_decay_schedule(
            config.learning_rate, steps, alpha=config.end_learning_rate / config.learning_rate)
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    name = config.get("optimizer", "adam")
    if name == "adam":
        optimizer = optax.adam(schedule)
    elif name == "sgd":
        optimizer = optax.sgd(schedule, momentum=config.get("sgd_momentum", 0.9) or None)
    else:
        raise ValueError(f"config.optimizer must be 'adam' or 'sgd', got {name!r}")
    return optax.chain(*parts, optimizer), schedule



def encode_inputs(batch: Mapping[str, jax.Array], inputs: str) -> tuple[jax.Array, jax.Array | None]:
    """The network's inputs from a batch's uint8 crops (encodings of ``regressor``)."""
    main, aux = model_inputs(inputs)

    def encode(field: str) -> jax.Array:
        if field == "image":
            return regressor_lib.encode_image(batch["image"])
        if field == "iuv":
            return regressor_lib.encode_iuv(batch["iuv"])
        return regressor_lib.encode_segmentation(batch["segmentation"])

    return encode(main), (encode(aux) if aux else None)


def initial_state(model: regressor_lib.Regressor, tx: optax.GradientTransformation,
                  config: ml_collections.ConfigDict, rng: jax.Array, *, pretrained: bool = True) -> TrainState:
    """Fresh variables (plus, if ``pretrained``, the ImageNet encoders the config names) and optimizer state."""
    size = config.data.image_size
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    _, aux = model_inputs(config.model.inputs)
    init = jax.jit(functools.partial(model.init, train=False))  # op-by-op init is slow
    variables = init(rng, dummy, dummy if aux else None)
    variables = flax.core.unfreeze(variables)
    for key, name, depth in (("init_image_from", "image_encoder", model.main_depth),
                             ("init_aux_from", "aux_encoder", model.aux_depth)):
        path = config.model.get(key) if pretrained else None
        if path:
            from dct_jax.models import convert  # noqa: PLC0415

            if name == "aux_encoder" and aux is None:
                raise ValueError(f"config.model.{key} is set but the model has no auxiliary branch")
            backbone = convert.load_torchvision(path, depth, width=config.model.width)
            variables = convert.merge_backbone(variables, backbone, name)
            logging.info("Initialized %s from %s", name, path)
    if pretrained and config.get("init_from"):
        variables = variables_from_checkpoint(config.init_from, variables)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), nonfinite_steps=jnp.zeros((), jnp.int32))


def variables_from_checkpoint(path: str, like: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters and BatchNorm statistics of another run's checkpoint (e.g. pretraining).

    ``path`` is anything ``inference.load_checkpoint`` takes (a workdir, its
    ``checkpoints/`` or one step); the network must be the one of ``like``
    (fresh variables of this run), else a ValueError says what differs.
    """
    from dct_jax import inference  # noqa: PLC0415

    loaded = inference.load_checkpoint(path).variables
    loaded = {"params": loaded["params"], "batch_stats": loaded.get("batch_stats", {})}
    expected = {"params": like["params"], "batch_stats": like.get("batch_stats", {})}
    shapes = lambda tree: jax.tree.map(lambda x: tuple(np.shape(x)), tree)  # noqa: E731
    if jax.tree.structure(loaded) != jax.tree.structure(expected) or shapes(loaded) != shapes(expected):
        raise ValueError(f"config.init_from={path} holds another network than this run's "
                         f"(config.model); start from a checkpoint of the same model")
    logging.info("Initialized the network from %s", path)
    return jax.tree.map(np.asarray, loaded)


def abstract_state(model: regressor_lib.Regressor, tx: optax.GradientTransformation,
                   config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> TrainState:
    """Shapes, dtypes and shardings (:func:`state_shardings`) of the train state: what a checkpoint restores onto.

    Nothing is computed or read (no ImageNet files: a restored run does not need them).
    """
    shapes = jax.eval_shape(lambda: initial_state(model, tx, config, jax.random.key(0), pretrained=False))
    shardings = state_shardings(shapes, mesh, fsdp=bool(config.get("fsdp", False)))
    return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        shapes, shardings)


def predict(variables: Mapping[str, Any], batch: Mapping[str, jax.Array], *,
            model: regressor_lib.Regressor, inputs: str) -> regressor_lib.RegressorOutput:
    """Inference (BatchNorm in eval mode) on a batch."""
    image, aux = encode_inputs(batch, inputs)
    return model.apply(variables, image, aux, train=False)


# ----------------------------------------------------------------------------- sharding


def data_mesh() -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))


def check_batch_size(batch_size: int, *, name: str = "batch_size") -> int:
    """The per-process batch; a clear error when devices or processes do not divide it."""
    devices, processes = jax.device_count(), jax.process_count()
    if batch_size <= 0 or batch_size % devices:
        raise ValueError(
            f"config.{name}={batch_size} must be a positive multiple of the device count "
            f"({devices}); set --config.{name} to e.g. {max(devices, batch_size // devices * devices or devices)}")
    return batch_size // processes


def eval_batch_size(batch_size: int) -> int:
    """The per-process evaluation batch: ``batch_size`` rounded up to a multiple of the device count.

    Evaluation runs on any device count: the extra rows are padding (``valid = 0``)
    that the metrics drop, so the results are those of one device.
    """
    if batch_size <= 0:
        raise ValueError(f"config.eval_batch_size={batch_size} must be positive")
    devices = jax.device_count()
    return -(-batch_size // devices) * devices // jax.process_count()


def to_global(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """A process-local batch -> global arrays sharded over the mesh's ``data`` axis."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


FSDP_MIN_SIZE = 2**14  # arrays smaller than this stay replicated under FSDP


def state_shardings(tree: Any, mesh: jax.sharding.Mesh, *, fsdp: bool = False,
                    min_size: int = FSDP_MIN_SIZE) -> Any:
    """A ``NamedSharding`` per leaf of ``tree`` (arrays or shape structs).

    Replicated, or with ``fsdp`` (fully sharded data parallel, big_vision's
    "fsdp" rule) every array of at least ``min_size`` elements split over the
    mesh's ``data`` axis along its largest dimension that the device count
    divides; XLA gathers the parameters where the step needs them. Each
    device then holds about ``1 / devices`` of the parameters and Adam's
    moments; the step computes the same numbers.
    """
    devices = mesh.shape["data"]
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def sharding(leaf: Any) -> jax.sharding.NamedSharding:
        shape = tuple(np.shape(leaf))
        if not fsdp or devices == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
            return replicated
        for axis in sorted(range(len(shape)), key=lambda a: (-shape[a], a)):
            if shape[axis] % devices == 0:
                spec = [None] * len(shape)
                spec[axis] = "data"
                return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        return replicated

    return jax.tree.map(sharding, tree)


def load_body(config: ml_collections.ConfigDict) -> tuple[smpl.SMPLModel, keypoints.Layout]:
    """The body model the dataset is annotated on, and its cocoplus19 keypoint layout."""
    body = smpl.load(config.smpl_path)
    name = keypoints.body_for_num_vertices(body.num_vertices)
    return body, keypoints.get_layout("cocoplus19", body=name)


# ----------------------------------------------------------------------------- checkpoints


def _reason(error: BaseException, limit: int = 160) -> str:
    """The first line of an exception, shortened (tensorstore errors run over many lines)."""
    text = (str(error).strip().splitlines() or [""])[0] or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def restore_newest(directory: str, restore: Callable[[Any, int], T], *,
                   step: int | None = None) -> tuple[int, T, list[int]]:
    """Restores the newest usable step of the orbax checkpoints in ``directory``.

    ``restore(manager, step)`` does the reading. A step whose reading fails (a
    file deleted or truncated, garbled metadata or iterator state) is named in
    one warning and the next older complete step is tried; with ``step`` given,
    only that step is tried.

    Returns:
      (the restored step, what ``restore`` returned, the newer steps that failed).

    Raises:
      CheckpointError: no complete step, or none usable (one line naming each failure).
    """
    import orbax.checkpoint as ocp  # noqa: PLC0415

    manager = ocp.CheckpointManager(directory) if os.path.isdir(directory) else None
    try:
        steps = sorted(manager.all_steps(), reverse=True) if manager is not None else []
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {directory}")
        if step is not None:
            if step not in steps:
                raise CheckpointError(f"no complete checkpoint of step {step} in {directory}; "
                                      f"steps there: {sorted(steps)}")
            steps = [step]
        failed: list[tuple[int, str]] = []
        for candidate in steps:
            try:
                return candidate, restore(manager, candidate), [s for s, _ in failed]
            except Exception as error:  # noqa: BLE001  (any unreadable step: try the previous one)
                failed.append((candidate, _reason(error)))
                older = [s for s in steps if s < candidate]
                logging.warning("Checkpoint step %d in %s is unusable (%s)%s", candidate, directory,
                                failed[-1][1], f"; trying step {older[0]}" if older else "")
        raise CheckpointError(f"no usable checkpoint in {directory}: " + "; ".join(
            f"step {s}: {reason}" for s, reason in failed))
    finally:
        if manager is not None:
            manager.close()


def has_checkpoints(directory: str) -> bool:
    """Whether ``directory`` holds any finalized orbax checkpoint step (usable or not).

    A plain listing (a step is a folder named by its number; a save in progress is
    ``N.orbax-checkpoint-tmp-...``), not an orbax CheckpointManager: in multi-process
    runs making one is collective, and this is asked before every process has
    created the folder.
    """
    if not os.path.isdir(directory):
        return False
    return any(name.isdigit() and os.path.isdir(os.path.join(directory, name)) for name in os.listdir(directory))


def restore_variables(directory: str, abstract: Any, *, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """``(step, {"params", "batch_stats"})`` of the newest usable step (see :func:`restore_newest`)."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    def read(manager: Any, candidate: int) -> Any:
        return manager.restore(candidate, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))

    restored_step, restored, _ = restore_newest(directory, read, step=step)
    state = restored["state"]
    return restored_step, {"params": state.params, "batch_stats": state.batch_stats}


def set_aside(directory: str, steps: list[int]) -> list[str]:
    """Moves unusable checkpoint steps out of ``directory`` into ``<directory>_unusable/`` (nothing deleted)."""
    moved = []
    for step in steps:
        source = os.path.join(directory, str(step))
        if not os.path.isdir(source):
            continue
        target = os.path.join(directory + "_unusable", str(step))
        suffix = 1
        while os.path.exists(target):
            target = os.path.join(directory + "_unusable", f"{step}.{suffix}")
            suffix += 1
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(source, target)
        moved.append(target)
    return moved
