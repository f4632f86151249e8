"""Training: one jitted train step, the loop around it, checkpoints and summaries.

``train_and_evaluate(config, workdir)`` is the whole job (``run_train.py`` calls
it): it builds the model, the body model and the input pipeline from the
config, restores the latest checkpoint in ``workdir/checkpoints`` if there is
one (parameters, BatchNorm statistics, optimizer state, step and the data
iterator, so a re-run resumes exactly), trains to ``config.num_train_steps``
and evaluates (``dct_jax.evaluate``), writing ``workdir/eval_<split>.json``.

The step itself (:func:`train_step`) is pure: ``(state, batch) -> (state,
metrics)``; jit and sharding are applied where it is called. A non-finite
loss or gradient leaves the state unchanged (the step counter still moves on)
and is reported in the metrics; the loop logs it and stops after
``config.max_consecutive_nonfinite`` such steps in a row.

Data parallelism: the batch is sharded over ``Mesh(jax.devices(), ("data",))``
with ``NamedSharding``; parameters and optimizer state are replicated; each
process feeds its own shard of the data (``make_array_from_process_local_data``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from dct_jax import camera as camera_lib
from dct_jax import distributed
from dct_jax import densepose, geometry, keypoints, losses, smpl, summaries
from dct_jax import state as state_lib
from dct_jax import workdir as workdir_lib
from dct_jax.data import pipeline
from dct_jax.models import regressor as regressor_lib


def loss_weights(config: ml_collections.ConfigDict) -> losses.LossWeights:
    c = config.loss
    return losses.LossWeights(keypoint=float(c.keypoint), smpl=float(c.smpl),
                              joints3d=float(c.joints3d), keypoints3d=float(c.get("keypoints3d", c.joints3d)),
                              dense=float(c.dense))


# ----------------------------------------------------------------------------- the step


def compute_losses(output: regressor_lib.RegressorOutput, batch: Mapping[str, jax.Array],
                   body: smpl.SMPLModel, layout: keypoints.Layout, weights: losses.LossWeights,
                   joints_from_smpl: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The paper's Eq. 5 on one batch: ``(total, {term: value})`` (unweighted terms).

    Terms with weight 0 are not computed. Every term is masked per example
    by ``valid`` and its supervision flag (see ``dct_jax.data.pipeline``).
    The 3D keypoint term compares the predicted cocoplus19 keypoints with the
    records' ``keypoints3d`` (e.g. Human3.6M's motion capture), pelvis-aligned.
    The 3D joint term uses the records' joints (``has_joints``) and, with
    ``joints_from_smpl``, also the joints of the ground-truth SMPL parameters
    of records that have those instead (``has_smpl``).
    """
    batch_size = output.pose.shape[0]
    valid = batch["valid"]
    out = smpl.forward(body, output.pose, output.betas)
    terms = {}
    kp3d = None
    if weights.keypoint or weights.keypoints3d:
        kp3d = keypoints.from_body(layout, out.vertices, out.joints)
    if weights.keypoint:
        kp2d = camera_lib.weak_perspective_project(kp3d, output.camera)
        terms["keypoint"] = losses.keypoint_loss(kp2d, batch["keypoints"], batch["keypoints_weight"], mask=valid)
    if weights.smpl:
        target = geometry.rodrigues(batch["smpl_pose"].reshape(batch_size, 24, 3))
        terms["smpl"] = losses.smpl_loss(out.rotmats, target, output.betas, batch["smpl_betas"],
                                         valid * batch["has_smpl"], batch.get("smpl_pose_weight"),
                                         batch.get("smpl_betas_weight"))
    if weights.joints3d:
        target, mask = batch["joints"], batch["has_joints"]
        if joints_from_smpl:
            gt = jax.lax.stop_gradient(smpl.forward(body, batch["smpl_pose"], batch["smpl_betas"]).joints)
            target = jnp.where(mask[:, None, None] > 0, target, gt)
            mask = jnp.maximum(mask, batch["has_smpl"])
        terms["joints3d"] = losses.joints3d_loss(out.joints, target, valid * mask)
    if weights.keypoints3d and "keypoints3d" in batch:
        terms["keypoints3d"] = losses.keypoints3d_loss(kp3d, batch["keypoints3d"], batch["keypoints3d_weight"],
                                                       valid * batch["has_keypoints3d"])
    if weights.dense:
        points = densepose.SurfacePoints(batch["dense_vertex_ids"], batch["dense_barycentric"],
                                         batch["dense_weight"] > 0)
        pred_xy = densepose.project_surface_points(out.vertices, points, output.camera)
        terms["dense"] = losses.dense_loss(pred_xy, batch["dense_xy"], batch["dense_weight"],
                                           valid * batch["has_dense"])
    return losses.total_loss(terms, weights), terms


def loss_and_grads(state: state_lib.TrainState, batch: Mapping[str, jax.Array], *, model: regressor_lib.Regressor,
                   body: smpl.SMPLModel, layout: keypoints.Layout, weights: losses.LossWeights, inputs: str,
                   joints_from_smpl: bool = False) -> tuple[jax.Array, dict[str, jax.Array], Any, Any]:
    """The forward and backward pass of :func:`train_step`: ``(loss, terms, new batch_stats, grads)``."""
    image, aux = state_lib.encode_inputs(batch, inputs)

    def loss_fn(params):
        output, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                      image, aux, train=True, mutable=["batch_stats"])
        total, terms = compute_losses(output, batch, body, layout, weights, joints_from_smpl)
        return total, (terms, updates["batch_stats"])

    (total, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return total, terms, batch_stats, grads


def train_step(state: state_lib.TrainState, batch: Mapping[str, jax.Array], *, model: regressor_lib.Regressor,
               tx: optax.GradientTransformation, body: smpl.SMPLModel, layout: keypoints.Layout,
               weights: losses.LossWeights, inputs: str,
               joints_from_smpl: bool = False) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
    """One optimizer step. Returns the new state and scalar metrics.

    If the loss or any gradient is not finite the parameters, statistics and
    optimizer state are kept, ``nonfinite_steps`` grows and ``metrics["finite"]``
    is 0.
    """
    total, terms, batch_stats, grads = loss_and_grads(
        state, batch, model=model, body=body, layout=layout, weights=weights, inputs=inputs,
        joints_from_smpl=joints_from_smpl)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = state_lib.TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
    metrics = {"loss": total, "grad_norm": grad_norm, "finite": finite.astype(jnp.float32),
               "valid_examples": jnp.sum(batch["valid"]), "skipped_records": jnp.sum(batch["skipped"])}
    metrics.update({f"loss_{k}": v for k, v in terms.items()})
    return new_state, metrics


# ----------------------------------------------------------------------------- the loop



def mixture_sources(config: ml_collections.ConfigDict) -> list[pipeline.MixtureSource]:
    """The training sources: ``config.train_mixture``'s, or ``config.dataset``'s ``train_split`` alone.

    ``config.train_mixture`` (``"NAME[:SPLIT][=WEIGHT][[LABEL,...]],..."``, see
    ``pipeline.parse_sources``) trains on several datasets at once, each with
    the supervision its labels name; evaluation stays on ``config.dataset``.
    """
    mixture = config.get("train_mixture") or ""
    if not mixture:
        return [pipeline.MixtureSource(config.dataset, config.train_split)]
    return pipeline.parse_sources(mixture, config.train_split)


def load_train_sources(config: ml_collections.ConfigDict) -> tuple[list[Any], list[float] | None]:
    """The data sources of :func:`mixture_sources` and their weights (None for one source)."""
    entries = mixture_sources(config)
    sources = [pipeline.load_source(e.name, data_dir=config.data_dir, split=e.split) for e in entries]
    if not config.get("train_mixture"):
        return sources, None
    logging.info("Training on a mixture: %s", ", ".join(
        f"{entry} ({len(source)} records)" for entry, source in zip(entries, sources)))
    return sources, [e.weight for e in entries]


def is_generated_dataset(name: str) -> bool:
    """Whether ``name`` is a generated dataset (a builder taking ``split_sizes``: synthetic, studio), whose
    records are rendered (exact keypoints and IUV maps), rather than a real one or a built directory."""
    import inspect  # noqa: PLC0415

    import datasets as datasets_lib  # noqa: PLC0415

    if os.path.isdir(name) or name not in datasets_lib.builder_names():
        return False
    return "split_sizes" in inspect.signature(datasets_lib.builder_class(name).__init__).parameters


def generated_datasets(config: ml_collections.ConfigDict) -> list[str]:
    """The generated datasets (:func:`is_generated_dataset`: synthetic, studio) a config reads."""
    names = [config.dataset] + [e.name for e in mixture_sources(config)]
    return [name for name in dict.fromkeys(names) if is_generated_dataset(name)]


def prepare_dataset(config: ml_collections.ConfigDict) -> None:
    """Builds the generated datasets the config reads into ``config.data_dir``, if asked and missing.

    Each gets ``config.build_split_sizes`` (so the studio source has as many
    training records as the synthetic in-the-wild one, as the official code
    sizes Human3.6M to the other training sets).
    """
    if not config.get("build_dataset_if_missing"):
        return
    import datasets as datasets_lib  # noqa: PLC0415
    import importlib  # noqa: PLC0415

    data_dir = os.path.expanduser(config.data_dir)
    for name in generated_datasets(config):
        if datasets_lib.builder_class(name)(data_dir=data_dir).is_prepared():
            continue
        if jax.process_index() == 0:
            logging.info("Building dataset %s into %s", name, data_dir)
            sizes = dict(config.build_split_sizes) if config.get("build_split_sizes") else None
            importlib.import_module("datasets.__main__").build(name, data_dir=data_dir, split_sizes=sizes)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices("dataset built")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from ``workdir``), then evaluates; returns the evaluation report.

    Everything the config names is checked before anything is written
    (``workdir.claim``: a workdir with checkpoints keeps its config); user errors
    raise ``workdir.ConfigError`` / ``WorkdirError`` with one line.

    On SIGTERM (preemption) or SIGINT (Ctrl-C), from the start on, the loop stops
    after the current step on every process, saves a checkpoint of it if this
    run took a step (train state and data iterator), waits for the write, logs
    so and returns ``{"preempted": True, "signal": NAME, "step": N,
    "checkpoint_dir": ...}`` without evaluating; re-running resumes from there.
    A second Ctrl-C aborts at once.
    """
    with distributed.Preemption() as preemption:
        return _train_and_evaluate(config, workdir, preemption)


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What :func:`_setup_checks` built while checking the config."""

    workdir: str
    local_batch: int
    train_sources: list[Any]
    mixture_weights: list[float] | None
    body: smpl.SMPLModel
    layout: keypoints.Layout
    model: regressor_lib.Regressor
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    changes: dict[str, Any]  # the settings changed since the run's last start


def _setup_checks(config: ml_collections.ConfigDict, workdir: str) -> _Setup:
    """Every check that needs no compilation; then the workdir claims the config (config.json written)."""
    try:
        workdir_lib.validate(config)
        workdir = workdir_lib.check_workdir(workdir)
        local_batch = state_lib.check_batch_size(config.batch_size)
        prepare_dataset(config)
        train_sources, mixture_weights = load_train_sources(config)
        pipeline.load_source(config.dataset, data_dir=config.data_dir, split=config.eval_split)  # fail early
        body, layout = state_lib.load_body(config)
        for source in train_sources:
            _check_body_matches(source, layout.body)
        model = state_lib.create_model(config.model)
        tx, schedule = state_lib.create_optimizer(config)
    except (workdir_lib.ConfigError, workdir_lib.WorkdirError):
        raise
    except ValueError as error:  # the setup's ValueErrors are about the config (dataset, split, body, ...)
        raise workdir_lib.ConfigError(str(error)) from error
    changes = workdir_lib.claim(config, workdir, write=jax.process_index() == 0)
    return _Setup(workdir=workdir, local_batch=local_batch, train_sources=train_sources,
                  mixture_weights=mixture_weights, body=body, layout=layout, model=model, tx=tx,
                  schedule=schedule, changes=changes)


def _current_report(workdir: str, config: ml_collections.ConfigDict, step: int,
                    changes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's evaluation report if it is of ``step`` with today's evaluation settings, else None."""
    path = os.path.join(workdir, f"eval_{config.eval_split}.json")
    if any(workdir_lib.is_eval_field(name) for name in changes) or not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    same = (report.get("checkpoint_step") == step and report.get("dataset") == config.dataset
            and report.get("split") == config.eval_split)
    return report if same else None


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        preemption: distributed.Preemption) -> dict[str, Any]:
    import grain  # noqa: PLC0415
    import orbax.checkpoint as ocp  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from dct_jax import evaluate  # noqa: PLC0415

    is_main = jax.process_index() == 0
    setup = _setup_checks(config, workdir)
    workdir, local_batch, body, layout = setup.workdir, setup.local_batch, setup.body, setup.layout
    train_sources, mixture_weights, changes = setup.train_sources, setup.mixture_weights, setup.changes
    model, tx, schedule = setup.model, setup.tx, setup.schedule
    weights = loss_weights(config)
    mesh = state_lib.data_mesh()
    abstract = state_lib.abstract_state(model, tx, config, mesh)
    num_params = sum(x.size for x in jax.tree.leaves(abstract.params))
    logging.info("Model: %s inputs, %s encoder, %.2fM parameters; %d devices, %d processes, "
                 "batch %d (%d per process)", config.model.inputs, model.encoder, num_params / 1e6,
                 jax.device_count(), jax.process_count(), config.batch_size, local_batch)

    spec = state_lib.example_spec(config, train=True)
    ds = pipeline.train_dataset(train_sources, [e.example_spec(spec) for e in mixture_sources(config)],
                                batch_size=local_batch,
                                seed=config.seed, shard_index=jax.process_index(),
                                shard_count=jax.process_count(), weights=mixture_weights,
                                cache_bytes=int(config.data.get("cache_mb", 0) * 2**20))
    data_iter = pipeline.make_iterator(ds, workers=config.data.workers, prefetch_threads=config.data.threads)

    directory = os.path.join(workdir, "checkpoints")

    def restore(manager: Any, step: int) -> state_lib.TrainState:
        data_state = translate_data_state(os.path.join(directory, str(step), "data"))
        if data_state is None:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(data_iter)))
        else:  # saved by another number of processes: the global batches continue all the same
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            data_iter.set_state(data_state)
        return restored["state"]

    state = None
    if state_lib.has_checkpoints(directory):
        latest, state, unusable = state_lib.restore_newest(directory, restore)
        if unusable:  # later saves reuse these step numbers: move the broken ones aside (nothing is deleted)
            if is_main:
                moved = state_lib.set_aside(directory, unusable)
                logging.warning("Moved the unusable checkpoint steps aside: %s", ", ".join(moved))
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils  # noqa: PLC0415

                multihost_utils.sync_global_devices("unusable checkpoints moved aside")
        logging.info("Resumed from step %d in %s", latest, directory)
    manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=config.max_checkpoints_to_keep, create=True))
    if state is None:
        state = jax.device_put(state_lib.initial_state(model, tx, config, jax.random.key(config.seed)),
                               jax.tree.map(lambda x: x.sharding, abstract))
    elif int(state.step) >= int(config.num_train_steps):
        report = _current_report(workdir, config, int(state.step), changes)
        if report is not None:  # a finished run: nothing to train or evaluate again
            manager.close()
            logging.info("The run is complete (step %d) and eval_%s.json is current: nothing to do",
                         int(state.step), config.eval_split)
            if is_main:
                print(evaluate.format_report(report))
            return report

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step_fn = jax.jit(functools.partial(train_step, model=model, tx=tx, body=body, layout=layout,
                                        weights=weights, inputs=config.model.inputs,
                                        joints_from_smpl=config.loss.joints3d_from_smpl),
                      out_shardings=(jax.tree.map(lambda x: x.sharding, abstract), replicated),
                      donate_argnums=(0,))
    predict_fn = jax.jit(functools.partial(state_lib.predict, model=model, inputs=config.model.inputs))
    writer = summaries.SummaryWriter(workdir, enabled=is_main)

    def save(step: int) -> None:
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter)))

    def run_eval(step: int) -> dict[str, Any]:
        report = evaluate.evaluate_split(config, {"params": state.params, "batch_stats": state.batch_stats},
                                         model=model, body=body, split=config.eval_split,
                                         step=step, predict_fn=predict_fn, mesh=mesh)
        writer.scalars(step, {f"eval/{k}": v for k, v in report["metrics"].items()})
        if is_main:
            evaluate.write_report(report, workdir)
            evaluate.append_history(report, workdir)
        return report

    step = start_step = int(state.step)
    total_steps = int(config.num_train_steps)
    consecutive_nonfinite, records_seen, records_skipped = 0, 0, 0
    window_start, window_images = time.perf_counter(), 0
    bar = None  # made after the first step, so that its ETA leaves the compilation out

    def progress(metrics: Mapping[str, Any]) -> None:
        nonlocal bar
        if bar is None:
            logging.info("Step %d done, the train step compiled (%.0f s)", step, time.perf_counter() - started)
            bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not is_main,
                       dynamic_ncols=True)
        else:
            bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)

    if step < total_steps:
        logging.info("Compiling the train step (about a minute on a CPU) ...")
    started = time.perf_counter()
    preempted = False
    try:
        # A signal during the setup or the first compilations stops before any step.
        preempted = preemption.should_stop()
        while not preempted and step < total_steps:
            host_batch = next(data_iter)
            device_batch, host = pipeline.split_host_fields(host_batch)
            records_seen += len(host["error"])
            records_skipped += pipeline.log_skipped(host)
            if records_skipped > config.max_skipped_fraction * max(records_seen, 2 * local_batch):
                raise RuntimeError(
                    f"{records_skipped} of the {records_seen} records read so far could not be used "
                    f"(more than config.max_skipped_fraction={config.max_skipped_fraction}); last: "
                    f"{next((e for e in host['error'] if e), 'see the log')}")
            batch = state_lib.to_global(device_batch, mesh)
            state, metrics = step_fn(state, batch)
            step += 1
            window_images += config.batch_size
            metrics = jax.device_get(metrics)
            if not metrics["finite"]:
                consecutive_nonfinite += 1
                logging.error("Step %d: non-finite loss or gradient (loss %s); update skipped (%d in a row)",
                              step, metrics["loss"], consecutive_nonfinite)
                if consecutive_nonfinite >= config.max_consecutive_nonfinite:
                    raise FloatingPointError(
                        f"{consecutive_nonfinite} non-finite steps in a row up to step {step}; stopping "
                        "(lower the learning rate or check the data)")
            else:
                consecutive_nonfinite = 0
            progress(metrics)
            if step % config.log_every_steps == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                scalars = {f"train/{k}": v for k, v in metrics.items() if k != "finite"}
                scalars.update({"train/learning_rate": schedule(step - 1), "train/images_per_second":
                                window_images / max(elapsed, 1e-9),
                                "train/skipped_records_total": records_skipped,
                                "train/nonfinite_steps_total": int(state.nonfinite_steps)})
                writer.scalars(step, scalars)
                logging.info("step %d: %s", step, ", ".join(f"{k.split('/')[1]} {float(v):.4g}"
                                                            for k, v in sorted(scalars.items())))
                window_start, window_images = time.perf_counter(), 0
            if config.image_summary_every_steps and step % config.image_summary_every_steps == 0 and is_main:
                output = predict_fn({"params": state.params, "batch_stats": state.batch_stats}, batch)
                local = {k: np.asarray(v) for k, v in device_batch.items()}
                writer.image(step, "train/predicted_meshes", summaries.mesh_overlays(local, jax.device_get(output), body))
            if step % config.checkpoint_every_steps == 0 or step == total_steps:
                save(step)
            if config.eval_every_steps and step % config.eval_every_steps == 0 and step != total_steps:
                run_eval(step)
                window_start, window_images = time.perf_counter(), 0
            if preemption.should_stop():  # collective in multi-process runs: all stop at the same step
                preempted = True
                break
        preempted = preempted or (step < total_steps) or preemption.should_stop()
        if manager.latest_step() != step and (step > start_step or not preempted):
            save(step)  # (a signal before any step of this run saves nothing)
        manager.wait_until_finished()
        preemption.__exit__()
        if preempted and step == start_step:
            logging.warning("Stopped (%s) before the first step of this run, at step %d: nothing new to save; "
                            "re-run the same command to start", preemption.signal_name, step)
        elif preempted:
            logging.warning("Preempted (%s) at step %d: checkpoint saved in %s; re-run the same command "
                            "to resume", preemption.signal_name, step, manager.directory)
        if preempted:
            return {"preempted": True, "signal": preemption.signal_name, "step": step,
                    "checkpoint_dir": str(manager.directory)}
        report = run_eval(step)
    finally:
        if bar is not None:
            bar.close()
        manager.close()
        writer.close()
    if is_main:
        print(evaluate.format_report(report))
    return report


def translate_data_state(data_dir: str) -> dict[str, Any] | None:
    """The data iterator state to resume with when a checkpoint was saved by another number of processes.

    grain saves one ``process_I-of-N.json`` per process and restores only the
    same file. The training stream does not depend on the process count
    (``pipeline.train_dataset``: process ``I`` takes every ``N``-th batch of
    one global stream), so a state that is only a position (``next_index``,
    the number of steps taken, the same in every process) carries over to any
    process count.

    Returns:
      None when this process's own file is there (restore it as usual), else
      the state to ``set_state``.

    Raises:
      ValueError: the saved states are not plain positions (e.g. with
        ``config.data.workers``) or disagree; the message says what to do.
    """
    expected = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if not os.path.isdir(data_dir) or os.path.exists(os.path.join(data_dir, expected)):
        return None
    found = sorted(n for n in os.listdir(data_dir) if n.startswith("process_") and n.endswith(".json"))
    states = []
    for name in found:
        try:
            with open(os.path.join(data_dir, name)) as f:
                states.append(json.load(f))
        except (OSError, ValueError):
            states.append(None)
    positions = {s.get("next_index") if isinstance(s, dict) and set(s) == {"next_index"} else None for s in states}
    if not found:
        raise state_lib.CheckpointError(f"{data_dir} holds no data iterator state (process_*.json)")
    if None in positions or len(positions) != 1:
        raise ValueError(
            f"the checkpoint {os.path.dirname(data_dir)} holds the data iterator state of another number of "
            f"processes ({', '.join(found) or 'none'}; this run has {jax.process_count()}) that does not carry "
            "over (worker-process state, or processes at different positions): resume with the same number of "
            "processes (the device count may change), see docs/scaling.md")
    (position,) = positions
    logging.info("Resuming the data stream of a %s-process checkpoint on %d processes at batch %d",
                 found[0].rsplit("-of-", 1)[-1][:-5], jax.process_count(), position)
    return {"next_index": int(position)}


def _check_body_matches(source: Any, body_name: str) -> None:
    """A clear error when the records are of another body model than the one loaded."""
    for index in range(min(len(source), 8)):
        try:
            record = source[index]
        except Exception:  # noqa: BLE001  (a corrupt record is the pipeline's business)
            continue
        name = record["body_model"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name and name != body_name:
            hint = ("set --config.smpl_path to your SMPL model file" if name == "smpl"
                    else "unset config.smpl_path to use the default body")
            raise ValueError(f"the dataset's records are annotated on body model {name!r} but the loaded "
                             f"body model is {body_name!r}: {hint}")
        return
