"""Tests for the SMPL evaluation protocol in dct_jax.evaluate.

The reference is the official code's recipe (``src/models/dct_model.py``)
redone step by step with ``smpl.forward`` and numpy distances.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dct_jax import evaluate, metrics, smpl

B = 3


@pytest.fixture(scope="module")
def model():
    return smpl.load()


@pytest.fixture(scope="module")
def smpl_metrics():
    return jax.jit(evaluate.smpl_metrics)


@pytest.fixture(scope="module")
def body(model):
    forward = jax.jit(smpl.forward)
    return lambda pose, betas: forward(model, pose, betas)


def _params(seed):
    rng = np.random.default_rng(seed)
    pose = rng.normal(scale=0.3, size=(B, 72)).astype(np.float32)
    betas = rng.normal(size=(B, 10)).astype(np.float32)
    return pose, betas


def test_matches_official_recipe(model, smpl_metrics, body):
    pred_pose, pred_betas = _params(0)
    gt_pose, gt_betas = _params(1)
    got = smpl_metrics(model, pred_pose, pred_betas, gt_pose, gt_betas)
    assert set(got) == set(evaluate.METRIC_KEYS)
    assert all(v.shape == (B,) for v in got.values())

    zero_root = lambda p: np.concatenate([np.zeros((B, 3), np.float32), p[:, 3:]], axis=1)  # noqa: E731
    pred, gt = body(zero_root(pred_pose), pred_betas), body(zero_root(gt_pose), gt_betas)
    tpose = np.zeros((B, 72), np.float32)
    tpose[:, 0] = 3.39  # the official PVE-T pose
    pred_t, gt_t = body(tpose, pred_betas), body(tpose, gt_betas)
    dist = lambda a, b: 1000 * np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean(-1)  # noqa: E731
    np.testing.assert_allclose(got["pve_mm"], dist(pred.vertices, gt.vertices), rtol=1e-4)
    np.testing.assert_allclose(got["mpjpe_mm"], dist(pred.joints, gt.joints), rtol=1e-4)
    np.testing.assert_allclose(got["pvet_mm"], dist(pred_t.vertices, gt_t.vertices), rtol=1e-4)
    np.testing.assert_allclose(got["pa_mpjpe_mm"], jax.jit(metrics.pa_mpjpe)(pred.joints, gt.joints),
                               rtol=1e-4)
    assert np.all(got["pa_mpjpe_mm"] < got["mpjpe_mm"])
    # The official PVE-T pose is not the all-zero pose: SMPL rotates about the
    # shape-dependent root joint, so the two give (slightly) different numbers.
    tpose[:, 0] = 0.0
    zero_pose = dist(body(tpose, pred_betas).vertices, body(tpose, gt_betas).vertices)
    assert not np.allclose(zero_pose, got["pvet_mm"], rtol=1e-4)
    assert model.num_vertices == 7272  # the default body


def test_zero_for_identical_bodies(model, smpl_metrics):
    pose, betas = _params(2)
    got = smpl_metrics(model, pose, betas, pose, betas)
    for name, value in got.items():
        np.testing.assert_allclose(value, 0.0, atol=1e-3, err_msg=name)


def test_global_rotation_is_ignored(model, smpl_metrics):
    pred_pose, pred_betas = _params(3)
    gt_pose, gt_betas = _params(4)
    base = smpl_metrics(model, pred_pose, pred_betas, gt_pose, gt_betas)
    rng = np.random.default_rng(5)
    pred_rot, gt_rot = pred_pose.copy(), gt_pose.copy()
    pred_rot[:, :3] = rng.normal(scale=2.0, size=(B, 3))
    gt_rot[:, :3] = rng.normal(scale=2.0, size=(B, 3))
    rotated = smpl_metrics(model, pred_rot, pred_betas, gt_rot, gt_betas)
    for name in base:
        np.testing.assert_array_equal(rotated[name], base[name], err_msg=name)


def test_body_joint_changes_posed_metrics_not_pvet(model, smpl_metrics):
    pose, betas = _params(6)
    moved = pose.copy()
    moved[:, 3 * 18:3 * 19] += 0.5  # left elbow
    got = smpl_metrics(model, moved, betas, pose, betas)
    assert np.all(got["pve_mm"] > 1) and np.all(got["mpjpe_mm"] > 1)
    np.testing.assert_allclose(got["pvet_mm"], 0.0, atol=1e-3)


def test_pvet_depends_only_on_betas(model, smpl_metrics):
    pred_pose, pred_betas = _params(7)
    gt_pose, gt_betas = _params(8)
    base = smpl_metrics(model, pred_pose, pred_betas, gt_pose, gt_betas)["pvet_mm"]
    other_pose, _ = _params(9)
    swapped = smpl_metrics(model, other_pose, pred_betas, pred_pose, gt_betas)["pvet_mm"]
    np.testing.assert_allclose(swapped, base, rtol=1e-5)
    assert np.all(base > 1)


def test_shape_errors(model):
    pose, betas = _params(0)
    with pytest.raises(ValueError, match=r"\(B, 72\)"):
        evaluate.smpl_metrics(model, pose[:, :69], betas, pose, betas)
    with pytest.raises(ValueError, match="betas"):
        evaluate.smpl_metrics(model, pose, betas[:2], pose, betas)


def test_dedupe_keeps_first_per_record():
    ids = ["a.jpg", "b.jpg", "a.jpg", "c.jpg", "b.jpg"]
    values = {"pve_mm": np.array([1.0, 2.0, 3.0, 4.0, 5.0]), "idx": np.arange(5)}
    got = evaluate.dedupe_records(ids, values)
    np.testing.assert_array_equal(got["pve_mm"], [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(got["idx"], [0, 1, 3])
    assert evaluate.mean_metrics(got) == {"pve_mm": pytest.approx(7 / 3), "idx": pytest.approx(4 / 3)}
    assert isinstance(evaluate.mean_metrics(got)["pve_mm"], float)
    with pytest.raises(ValueError, match="leading dimension 5"):
        evaluate.dedupe_records(ids, {"pve_mm": np.zeros(4)})
    with pytest.raises(ValueError, match="empty"):
        evaluate.mean_metrics({"pve_mm": np.zeros(0)})
