"""Evaluation: DCT's SMPL protocol, per-image deduplication, the evaluation loop and report.

``evaluate_checkpoint(config, workdir)`` (``run_eval.py``) restores the latest
checkpoint, runs :func:`evaluate_split` and writes ``workdir/eval_<split>.json``:
``{"checkpoint_step", "num_examples", "split", "dataset", "metrics": {"pve_mm",
"mpjpe_mm", "pa_mpjpe_mm", "pvet_mm", "dkd"}, "baseline_mean_params": {same
keys}, "counts"}`` (metrics without ground truth in the split are left out).

The protocol follows the official code (``src/models/dct_model.py``,
``src/util/evaluator.py``): prediction and ground truth go through the same
body model with the global rotation (``pose[:3]``) of *both* set to zero and no
other alignment (no translation, no pelvis alignment). PVE is over all
vertices, MPJPE over the 24 SMPL joints; PA-MPJPE (what later work reports)
adds a similarity Procrustes on those joints; PVE-T compares the shapes alone,
both bodies in one fixed pose (:data:`PVET_GLOBAL_ROTATION`). All in mm.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dct_jax import densepose, metrics, smpl

# The official PVE-T pose (``tpose[:, 0] = 3.39``): every joint at rest except
# the global rotation, 3.39 rad about x (near pi: upright in image coordinates,
# y down). SMPL rotates about the shape-dependent root joint, so this gives
# slightly different numbers from the all-zero pose.
PVET_GLOBAL_ROTATION = (3.39, 0.0, 0.0)

METRIC_KEYS = ("pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm")


def smpl_metrics(
    model: smpl.SMPLModel,
    pred_pose: jnp.ndarray,
    pred_betas: jnp.ndarray,
    gt_pose: jnp.ndarray,
    gt_betas: jnp.ndarray,
    *,
    pvet_global_rotation: Sequence[float] = PVET_GLOBAL_ROTATION,
) -> dict[str, jax.Array]:
    """DCT's per-example SMPL metrics (jit-able; one body-model call for all bodies).

    Args:
      model: the body model for prediction and ground truth alike.
      pred_pose: ``(B, 72)`` predicted axis-angle pose.
      pred_betas: ``(B, NB)`` predicted shape.
      gt_pose: ``(B, 72)`` ground-truth pose.
      gt_betas: ``(B, NB)`` ground-truth shape.
      pvet_global_rotation: axis-angle global rotation of the PVE-T pose
        (``(0, 0, 0)`` for the plain zero pose).

    Returns:
      ``{"pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm"}``, each ``(B,)``.
    """
    pose_dim = 3 * model.num_joints
    pred_pose, gt_pose = jnp.asarray(pred_pose), jnp.asarray(gt_pose)
    pred_betas, gt_betas = jnp.asarray(pred_betas), jnp.asarray(gt_betas)
    if pred_pose.ndim != 2 or pred_pose.shape[1] != pose_dim or gt_pose.shape != pred_pose.shape:
        raise ValueError(f"pred_pose and gt_pose must both be (B, {pose_dim}), got "
                         f"{pred_pose.shape}, {gt_pose.shape}")
    batch = pred_pose.shape[0]
    if pred_betas.ndim != 2 or pred_betas.shape[0] != batch or gt_betas.shape != pred_betas.shape:
        raise ValueError(f"pred_betas and gt_betas must both be ({batch}, NB), got "
                         f"{pred_betas.shape}, {gt_betas.shape}")
    if len(pvet_global_rotation) != 3:
        raise ValueError(f"pvet_global_rotation must have 3 entries, got {pvet_global_rotation!r}")
    dtype = model.v_template.dtype
    posed = jnp.concatenate([pred_pose, gt_pose]).astype(dtype).at[:, :3].set(0.0)
    rest = jnp.zeros_like(posed).at[:, :3].set(jnp.asarray(pvet_global_rotation, dtype))
    betas = jnp.concatenate([pred_betas, gt_betas]).astype(dtype)
    # Rows: posed pred, posed gt, rest pred, rest gt.
    out = smpl.forward(model, jnp.concatenate([posed, rest]), jnp.concatenate([betas, betas]))
    verts = out.vertices.reshape(4, batch, *out.vertices.shape[1:])
    joints = out.joints.reshape(4, batch, *out.joints.shape[1:])
    return {
        "pve_mm": metrics.pve(verts[0], verts[1]),
        "mpjpe_mm": metrics.mpjpe(joints[0], joints[1]),
        "pa_mpjpe_mm": metrics.pa_mpjpe(joints[0], joints[1]),
        "pvet_mm": metrics.pve(verts[2], verts[3]),
    }


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

# Dense keypoint distance is reported in pixels of a 224 x 224 crop (the paper's input
# size): the L1 distance (|dx| + |dy|, Eq. 4) in normalized crop coordinates times 112.
DKD_PIXELS_PER_UNIT = 112.0
REPORT_KEYS = ("pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm", "dkd")


def example_metrics(model: smpl.SMPLModel, pose: jax.Array, betas: jax.Array, camera: jax.Array,
                    batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """All per-example metrics of predictions ``pose (B, 24, 3)``, ``betas``, ``camera`` on a batch.

    The SMPL metrics use the batch's ground-truth parameters (meaningful where
    ``has_smpl``); ``dkd`` projects the batch's dense keypoints onto the
    predicted mesh (with its global rotation) through the predicted camera
    (meaningful where ``has_dense``).
    """
    batch_size = pose.shape[0]
    values = smpl_metrics(model, pose.reshape(batch_size, -1), betas, batch["smpl_pose"], batch["smpl_betas"])
    vertices = smpl.forward(model, pose, betas).vertices
    points = densepose.SurfacePoints(batch["dense_vertex_ids"], batch["dense_barycentric"],
                                     batch["dense_weight"] > 0)
    pred_xy = densepose.project_surface_points(vertices, points, camera)
    values["dkd"] = DKD_PIXELS_PER_UNIT * metrics.dense_keypoint_distance(
        pred_xy, batch["dense_xy"], batch["dense_weight"])
    return values


_example_metrics_jit = jax.jit(example_metrics)  # the body model is an argument: compiled once


def evaluate_split(config, variables: Mapping[str, Any], *, model, body: smpl.SMPLModel,
                   split: str, step: int, predict_fn=None, mesh=None) -> dict[str, Any]:
    """Evaluates ``variables`` on ``split`` of ``config.dataset`` (official protocol).

    Every record is evaluated once without augmentation (one result per
    record, however the batches are padded); 3D metrics average over records with SMPL ground
    truth, DKD over records with dense keypoints. The mean-parameter baseline
    (the network's mean output, i.e. what an untrained model predicts) is
    evaluated on the same records.

    Returns ``{"checkpoint_step",
    "num_examples", "split", "dataset", "metrics": {...}, "baseline_mean_params":
    {...}, "counts": {...}}``.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from dct_jax import train  # noqa: PLC0415
    from dct_jax.data import pipeline  # noqa: PLC0415
    from dct_jax.models import regressor as regressor_lib  # noqa: PLC0415

    mesh = train.data_mesh() if mesh is None else mesh
    if predict_fn is None:
        predict_fn = jax.jit(functools.partial(train.predict, model=model, inputs=config.model.inputs))
    local_batch = train.check_batch_size(config.eval_batch_size, name="eval_batch_size")
    source = pipeline.load_source(config.dataset, data_dir=config.data_dir, split=split)
    ds = pipeline.eval_dataset(source, train.example_spec(config, train=False), batch_size=local_batch,
                               shard_index=jax.process_index(), shard_count=jax.process_count())
    metric_fn = functools.partial(_example_metrics_jit, body)
    mean = np.asarray(model.mean_params if model.mean_params is not None
                      else regressor_lib.default_mean_params(), np.float32)
    mean_pose = np.broadcast_to(mean[regressor_lib.POSE].reshape(24, 3), (local_batch, 24, 3))
    mean_betas = np.broadcast_to(mean[regressor_lib.BETAS], (local_batch, 10))
    mean_camera = np.broadcast_to(mean[regressor_lib.CAMERA], (local_batch, 3))
    baseline = train.to_global({"pose": mean_pose, "betas": mean_betas, "camera": mean_camera}, mesh)

    columns: dict[str, list[np.ndarray]] = {}
    skipped = 0
    iterator = pipeline.make_iterator(ds, prefetch_threads=config.data.get("threads", 4))
    for host_batch in tqdm(iterator, total=len(ds), desc=f"eval {split}", unit="batch",
                           disable=jax.process_index() != 0, leave=False, dynamic_ncols=True):
        device_batch, host = pipeline.split_host_fields(host_batch)
        skipped += pipeline.log_skipped(host)
        batch = train.to_global(device_batch, mesh)
        output = predict_fn(variables, batch)
        ours = metric_fn(output.pose, output.betas, output.camera, batch)
        base = metric_fn(baseline["pose"], baseline["betas"], baseline["camera"], batch)
        row = {f"model/{k}": v for k, v in ours.items()}
        row.update({f"baseline/{k}": v for k, v in base.items()})
        for key in ("valid", "has_smpl", "has_dense"):
            row[key] = batch[key]
        row["record_index"] = np.asarray(host["record_index"], np.int64)
        row = {k: _allgather(v) for k, v in row.items()}
        for k, v in row.items():
            columns.setdefault(k, []).append(np.asarray(v))
    values = {k: np.concatenate(v) for k, v in columns.items()}
    keep = values["valid"] > 0
    values = {k: v[keep] for k, v in values.items()}
    values = dedupe_records(values["record_index"].tolist(), values)
    has_smpl, has_dense = values["has_smpl"] > 0, values["has_dense"] > 0
    report = {"checkpoint_step": int(step), "num_examples": int(len(values["valid"])), "split": split,
              "dataset": config.dataset, "metrics": {}, "baseline_mean_params": {},
              "counts": {"with_smpl": int(has_smpl.sum()), "with_dense": int(has_dense.sum()),
                         "skipped_records": skipped}}
    for key in REPORT_KEYS:
        rows = has_dense if key == "dkd" else has_smpl
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


_LABELS = {"pve_mm": "PVE (mm)", "mpjpe_mm": "MPJPE (mm)", "pa_mpjpe_mm": "PA-MPJPE (mm)",
           "pvet_mm": "PVE-T (mm)", "dkd": "DKD (px @224)"}


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a text table: metric, model, mean-parameter baseline, ratio."""
    lines = [f"Evaluation of step {report['checkpoint_step']} on {report.get('dataset', '?')} "
             f"{report['split']}: {report['num_examples']} examples "
             f"({report.get('counts', {}).get('with_smpl', '?')} with SMPL ground truth; "
             "official protocol: global rotation zeroed)",
             f"{'metric':<15}{'model':>10}{'mean params':>13}{'ratio':>8}"]
    for key, value in report["metrics"].items():
        base = report["baseline_mean_params"].get(key, float("nan"))
        ratio = value / base if base else float("nan")
        lines.append(f"{_LABELS.get(key, key):<15}{value:>10.1f}{base:>13.1f}{ratio:>8.2f}")
    if not report["metrics"]:
        lines.append("(no example has ground truth for any metric)")
    return "\n".join(lines)


def evaluate_checkpoint(config, workdir: str, *, split: str | None = None) -> dict[str, Any]:
    """Evaluates the latest checkpoint in ``workdir/checkpoints`` and writes ``eval_<split>.json``."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    from dct_jax import train  # noqa: PLC0415

    workdir = os.path.abspath(os.path.expanduser(workdir))
    split = split or config.eval_split
    directory = os.path.join(workdir, "checkpoints")
    manager = ocp.CheckpointManager(directory) if os.path.isdir(directory) else None
    step = manager.latest_step() if manager is not None else None
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}; train first with "
                                f"`python run_train.py --config=... --workdir={workdir}`")
    model = train.create_model(config.model)
    tx, _ = train.create_optimizer(config)
    body, _ = train.load_body(config)
    mesh = train.data_mesh()
    abstract = train.abstract_state(model, tx, config, mesh)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    manager.close()
    state = restored["state"]
    report = evaluate_split(config, {"params": state.params, "batch_stats": state.batch_stats},
                            model=model, body=body, split=split, step=step, mesh=mesh)
    if jax.process_index() == 0:
        write_report(report, workdir)
    return report
