"""Evaluation: the evaluation loop, per-record deduplication and the report.

``evaluate_checkpoint(config, workdir)`` (``run_eval.py``) restores the latest
checkpoint, runs :func:`evaluate_split` and writes ``workdir/eval_<split>.json``:
``{"checkpoint_step", "num_examples", "split", "dataset", "metrics": {"pve_mm",
"mpjpe_mm", "pa_mpjpe_mm", "pvet_mm", "dkd"}, "baseline_mean_params": {same
keys}, "counts", "protocol"}`` (metrics without ground truth in the split are left out).

The metrics follow the dataset's protocol (``dct_jax.protocols``,
``docs/evaluation.md``): DCT's official one for UP-3D and the synthetic data
(prediction and ground truth through the same body model with the global
rotation of *both* zeroed and no other alignment; PVE over all vertices,
MPJPE over the 24 SMPL joints, PA-MPJPE with a similarity Procrustes on those
joints, PVE-T with both shapes in one fixed pose), SPIN's for 3DPW and
Human3.6M, DKD for COCO-DensePose. All in mm (DKD in pixels of a 224 crop).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from dct_jax import keypoints, protocols, smpl

METRIC_KEYS = ("pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm")
PVET_GLOBAL_ROTATION = protocols.PVET_GLOBAL_ROTATION
smpl_metrics = protocols.smpl_metrics  # the official protocol's per-example metrics


def dedupe_records(record_ids: Sequence[Any], values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keeps the first result per record (the official ``remove_redunc``).

    The official test loop pads the list to whole batches, so a record can be
    evaluated twice; only its first result counts. People sharing an image
    (COCO, 3DPW) are different records and each counts.

    Args:
      record_ids: ``B`` ids (e.g. record indices) in evaluation order.
      values: arrays with leading dimension ``B``.

    Returns:
      ``values`` restricted to the first occurrence of each id, in order.
    """
    ids = list(record_ids)
    for name, array in values.items():
        if np.shape(array)[:1] != (len(ids),):
            raise ValueError(f"values[{name!r}] has shape {np.shape(array)}; expected leading "
                             f"dimension {len(ids)} (one per record id)")
    seen: set[Any] = set()
    keep = []
    for i, record_id in enumerate(ids):
        if record_id not in seen:
            seen.add(record_id)
            keep.append(i)
    keep_idx = np.asarray(keep, dtype=np.int64)
    return {name: np.asarray(array)[keep_idx] for name, array in values.items()}


def mean_metrics(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Averages per-example metrics over examples: ``{name: (B, ...)} -> {name: float}``."""
    result = {}
    for name, array in values.items():
        array = np.asarray(array, dtype=np.float64)
        if array.size == 0:
            raise ValueError(f"values[{name!r}] is empty; there is nothing to average")
        result[name] = float(array.mean())
    return result


# ----------------------------------------------------------------------------- the evaluation loop

DKD_PIXELS_PER_UNIT = protocols.DKD_PIXELS_PER_UNIT
REPORT_KEYS = ("pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm", "dkd")


@functools.partial(jax.jit, static_argnames=("protocol", "layout"))
def _example_metrics_jit(bodies, pose, betas, camera, batch, *, protocol, layout):
    # The body models are arguments: compiled once per protocol and batch shape.
    return protocols.example_metrics(protocol, layout, bodies, pose, betas, camera, batch)


def eval_bodies(config, body: smpl.SMPLModel) -> protocols.EvalBodies:
    """The protocol's body models: the run's ``body`` plus ``config.eval``'s optional files."""
    options = config.get("eval") or {}
    return protocols.load_eval_bodies(body, smpl_male_path=options.get("smpl_male_path"),
                                      smpl_female_path=options.get("smpl_female_path"),
                                      j_regressor_h36m_path=options.get("j_regressor_h36m_path"))


def evaluate_split(config, variables: Mapping[str, Any], *, model, body: smpl.SMPLModel,
                   split: str, step: int, predict_fn=None, mesh=None,
                   bodies: protocols.EvalBodies | None = None) -> dict[str, Any]:
    """Evaluates ``variables`` on ``split`` of ``config.dataset`` with the dataset's protocol.

    The protocol is ``config.eval.protocol`` (``"auto"``: by dataset, see
    ``dct_jax.protocols``); ``bodies`` defaults to :func:`eval_bodies`. Every
    record is evaluated once without augmentation (one result per record,
    however the batches are padded); each metric averages over the records
    whose ground truth defines it (SMPL, 3D keypoints or dense keypoints). The mean-parameter baseline
    (the network's mean output, i.e. what an untrained model predicts) is
    evaluated on the same records.

    Returns ``{"checkpoint_step",
    "num_examples", "split", "dataset", "metrics": {...}, "baseline_mean_params":
    {...}, "counts": {...}}``.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from dct_jax import state as state_lib  # noqa: PLC0415
    from dct_jax.data import pipeline  # noqa: PLC0415
    from dct_jax.models import regressor as regressor_lib  # noqa: PLC0415

    mesh = state_lib.data_mesh() if mesh is None else mesh
    if predict_fn is None:
        predict_fn = jax.jit(functools.partial(state_lib.predict, model=model, inputs=config.model.inputs))
    local_batch = state_lib.eval_batch_size(config.eval_batch_size)  # any device count: padded
    source = pipeline.load_source(config.dataset, data_dir=config.data_dir, split=split)
    ds = pipeline.eval_dataset(source, state_lib.example_spec(config, train=False), batch_size=local_batch,
                               shard_index=jax.process_index(), shard_count=jax.process_count())
    protocol = protocols.protocol_for(config.dataset, (config.get("eval") or {}).get("protocol", "auto"))
    bodies = eval_bodies(config, body) if bodies is None else bodies
    layout = keypoints.get_layout("cocoplus19", body=keypoints.body_for_num_vertices(body.num_vertices))
    metric_fn = functools.partial(_example_metrics_jit, bodies, protocol=protocol, layout=layout)
    mean = np.asarray(model.mean_params if model.mean_params is not None
                      else regressor_lib.default_mean_params(), np.float32)
    mean_pose = np.broadcast_to(mean[regressor_lib.POSE].reshape(24, 3), (local_batch, 24, 3))
    mean_betas = np.broadcast_to(mean[regressor_lib.BETAS], (local_batch, 10))
    mean_camera = np.broadcast_to(mean[regressor_lib.CAMERA], (local_batch, 3))
    baseline = state_lib.to_global({"pose": mean_pose, "betas": mean_betas, "camera": mean_camera}, mesh)

    columns: dict[str, list[np.ndarray]] = {}
    skipped = 0
    iterator = pipeline.make_iterator(ds, prefetch_threads=config.data.get("threads", 4))
    for host_batch in tqdm(iterator, total=len(ds), desc=f"eval {split}", unit="batch",
                           disable=jax.process_index() != 0, leave=False, dynamic_ncols=True):
        device_batch, host = pipeline.split_host_fields(host_batch)
        skipped += pipeline.log_skipped(host)
        batch = state_lib.to_global(device_batch, mesh)
        output = predict_fn(variables, batch)
        ours, rows = metric_fn(output.pose, output.betas, output.camera, batch)
        base, _ = metric_fn(baseline["pose"], baseline["betas"], baseline["camera"], batch)
        row = {f"model/{k}": v for k, v in ours.items()}
        row.update({f"baseline/{k}": v for k, v in base.items()})
        row.update({f"rows/{k}": v for k, v in rows.items()})
        for key in ("valid", "has_smpl", "has_dense", "has_keypoints3d"):
            row[key] = batch[key]
        row["record_index"] = np.asarray(host["record_index"], np.int64)
        row = {k: _allgather(v) for k, v in row.items()}
        for k, v in row.items():
            columns.setdefault(k, []).append(np.asarray(v))
    values = {k: np.concatenate(v) for k, v in columns.items()}
    keep = values["valid"] > 0
    values = {k: v[keep] for k, v in values.items()}
    values = dedupe_records(values["record_index"].tolist(), values)
    report = {"checkpoint_step": int(step), "num_examples": int(len(values["valid"])), "split": split,
              "dataset": config.dataset, "metrics": {}, "baseline_mean_params": {},
              "counts": {"with_smpl": int((values["has_smpl"] > 0).sum()),
                         "with_dense": int((values["has_dense"] > 0).sum()),
                         "with_keypoints3d": int((values["has_keypoints3d"] > 0).sum()),
                         "skipped_records": skipped},
              "protocol": protocols.describe(protocol, bodies)}
    for key in REPORT_KEYS:
        if f"rows/{key}" not in values:
            continue
        rows = values[f"rows/{key}"] > 0
        report["counts"][f"{key}_examples"] = int(rows.sum())
        if rows.any():
            report["metrics"][key] = float(np.mean(values[f"model/{key}"][rows]))
            report["baseline_mean_params"][key] = float(np.mean(values[f"baseline/{key}"][rows]))
    return report


def _allgather(array: Any) -> np.ndarray:
    """A global array (or a process's host rows) -> the full numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(array)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def write_report(report: Mapping[str, Any], workdir: str) -> str:
    """Writes ``workdir/eval_<split>.json``; returns its path."""
    path = os.path.join(workdir, f"eval_{report['split']}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)
    return path


def append_history(report: Mapping[str, Any], workdir: str) -> str:
    """Appends ``report`` as one line to ``workdir/eval_<split>_history.jsonl`` (every evaluation of a run)."""
    path = os.path.join(workdir, f"eval_{report['split']}_history.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps(report) + "\n")
    return path


_LABELS = {"pve_mm": "PVE (mm)", "mpjpe_mm": "MPJPE (mm)", "pa_mpjpe_mm": "PA-MPJPE (mm)",
           "pvet_mm": "PVE-T (mm)", "dkd": "DKD (px @224)"}


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a text table: metric, model, mean-parameter baseline, ratio."""
    protocol = report.get("protocol") or {"name": "official", "joints": "smpl24", "ground_truth": "neutral",
                                          "alignment": "global rotation zeroed"}
    counts = report.get("counts", {})
    lines = [f"Evaluation of step {report['checkpoint_step']} on {report.get('dataset', '?')} "
             f"{report['split']}: {report['num_examples']} examples "
             f"({counts.get('with_smpl', '?')} with SMPL ground truth, "
             f"{counts.get('with_keypoints3d', 0)} with 3D keypoints, {counts.get('with_dense', '?')} with dense)",
             f"protocol {protocol['name']}: joints {protocol['joints']}, ground truth {protocol['ground_truth']}, "
             f"alignment: {protocol['alignment']}",
             f"{'metric':<15}{'model':>10}{'mean params':>13}{'ratio':>8}"]
    for key, value in report["metrics"].items():
        base = report["baseline_mean_params"].get(key, float("nan"))
        ratio = value / base if base else float("nan")
        lines.append(f"{_LABELS.get(key, key):<15}{value:>10.1f}{base:>13.1f}{ratio:>8.2f}")
    if not report["metrics"]:
        lines.append("(no example has ground truth for any metric)")
    return "\n".join(lines)


def evaluate_checkpoint(config, workdir: str, *, split: str | None = None,
                        overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluates the newest usable checkpoint in ``workdir/checkpoints`` and writes ``eval_<split>.json``.

    ``config`` is the run's (``workdir.evaluation_config``); ``overrides`` (the
    evaluation settings that differ from the run's) are recorded in the report.
    """
    from dct_jax import state as state_lib  # noqa: PLC0415
    from dct_jax import workdir as workdir_lib  # noqa: PLC0415
    from dct_jax.data import pipeline  # noqa: PLC0415

    workdir = os.path.abspath(os.path.expanduser(workdir))
    split = split or config.eval_split
    try:
        pipeline.load_source(config.dataset, data_dir=config.data_dir, split=split)  # before any compilation
    except ValueError as error:
        raise workdir_lib.ConfigError(str(error)) from error
    directory = os.path.join(workdir, "checkpoints")
    if not state_lib.has_checkpoints(directory):
        raise state_lib.CheckpointError(f"no checkpoint in {directory}; train first with "
                                        f"`python run_train.py --config=... --workdir={workdir}`")
    model = state_lib.create_model(config.model)
    tx, _ = state_lib.create_optimizer(config)
    body, _ = state_lib.load_body(config)
    mesh = state_lib.data_mesh()
    abstract = state_lib.abstract_state(model, tx, config, mesh)
    step, variables = state_lib.restore_variables(directory, abstract)
    report = evaluate_split(config, variables, model=model, body=body, split=split, step=step, mesh=mesh)
    if overrides:
        report["overrides"] = dict(overrides)
    if jax.process_index() == 0:
        write_report(report, workdir)
    return report
