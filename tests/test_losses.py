"""Tests for dct_jax.losses.

Reference values come from plain numpy transcriptions of the official PyTorch
``src/models/loss_utils.py`` (mean over every element, times B / sum(mask)).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dct_jax import losses

B, K, N, J = 4, 19, 30, 24


@functools.lru_cache(maxsize=None)
def _cached_batch(seed):
    rng = np.random.default_rng(seed)
    rotmats = lambda: Rotation.from_rotvec(rng.normal(scale=0.5, size=(B * J, 3))).as_matrix()  # noqa: E731
    return dict(
        kp_pred=rng.normal(size=(B, K, 2)).astype(np.float32),
        kp_target=rng.normal(size=(B, K, 2)).astype(np.float32),
        kp_weight=(rng.random((B, K)) < 0.8).astype(np.float32),
        rot_pred=rotmats().reshape(B, J, 3, 3).astype(np.float32),
        rot_target=rotmats().reshape(B, J, 3, 3).astype(np.float32),
        betas_pred=rng.normal(size=(B, 10)).astype(np.float32),
        betas_target=rng.normal(size=(B, 10)).astype(np.float32),
        j_pred=rng.normal(size=(B, J, 3)).astype(np.float32),
        j_target=rng.normal(size=(B, J, 3)).astype(np.float32),
        kp3d_pred=rng.normal(size=(B, K, 3)).astype(np.float32),
        kp3d_target=rng.normal(size=(B, K, 3)).astype(np.float32),
        kp3d_weight=np.where(np.isin(np.arange(K), [2, 3]), 1.0, rng.random((B, K)) < 0.8).astype(np.float32),
        dp_pred=rng.normal(size=(B, N, 2)).astype(np.float32),
        dp_target=rng.normal(size=(B, N, 2)).astype(np.float32),
        dp_weight=(rng.random((B, N)) < 0.7).astype(np.float32),
        mask=np.array([1.0, 0.0, 1.0, 1.0], np.float32),
    )


def _batch(seed=0):
    return {k: v.copy() for k, v in _cached_batch(seed).items()}


# Each loss as f(pred, target, b, mask) so that the generic tests run over all;
# called through jax.jit (b is a pytree argument), which also keeps the tests fast.
_LOSSES = {
    "keypoint": (lambda p, t, b, m: losses.keypoint_loss(p, t, b["kp_weight"], mask=m),
                 "kp_pred", "kp_target"),
    "smpl_rot": (lambda p, t, b, m: losses.smpl_loss(p, t, b["betas_pred"], b["betas_target"], m),
                 "rot_pred", "rot_target"),
    "smpl_betas": (lambda p, t, b, m: losses.smpl_loss(b["rot_pred"], b["rot_target"], p, t, m),
                   "betas_pred", "betas_target"),
    "joints3d": (lambda p, t, b, m: losses.joints3d_loss(p, t, m), "j_pred", "j_target"),
    "keypoints3d": (lambda p, t, b, m: losses.keypoints3d_loss(p, t, b["kp3d_weight"], m),
                    "kp3d_pred", "kp3d_target"),
    "dense": (lambda p, t, b, m: losses.dense_loss(p, t, b["dp_weight"], m), "dp_pred", "dp_target"),
}
LOSSES = {name: (jax.jit(fn), p, t) for name, (fn, p, t) in _LOSSES.items()}
GRADS = {name: jax.jit(jax.grad(fn)) for name, (fn, _, _) in _LOSSES.items()}


# Numpy transcriptions of the official reductions.
def _ref_keypoint(p, t, w, mask=None):
    if mask is None:
        return np.mean(np.abs(p - t) * w[..., None])
    return np.mean(np.abs(p - t) * (w * mask[:, None])[..., None]) * len(mask) / mask.sum()


def _ref_smpl(rp, rt, bp, bt, mask):
    pred = np.concatenate([rp[:, 1:].reshape(len(rp), -1), bp], axis=1)
    target = np.concatenate([rt[:, 1:].reshape(len(rt), -1), bt], axis=1)
    assert pred.shape[1] == 217
    return np.mean((pred - target) ** 2 * mask[:, None]) * len(mask) / mask.sum()


def _ref_joints3d(p, t, mask):
    p = p - p[:, :1]
    t = t - t[:, :1]
    return np.mean((p - t) ** 2 * mask[:, None, None]) * len(mask) / mask.sum()


def _ref_keypoints3d(p, t, w, mask):
    p = p - 0.5 * (p[:, 2:3] + p[:, 3:4])
    t = t - 0.5 * (t[:, 2:3] + t[:, 3:4])
    mask = mask * (w[:, 2] > 0) * (w[:, 3] > 0)
    return np.mean((p - t) ** 2 * (w * mask[:, None])[..., None]) * len(mask) / mask.sum()


def _ref_dense(p, t, w, mask):
    return np.mean(np.abs(p - t) * w[..., None] * mask[:, None, None]) * len(mask) / mask.sum()


def test_official_reductions():
    b = _batch()
    m = b["mask"]
    jit = jax.jit
    np.testing.assert_allclose(
        jit(losses.keypoint_loss)(b["kp_pred"], b["kp_target"], b["kp_weight"]),
        _ref_keypoint(b["kp_pred"], b["kp_target"], b["kp_weight"]), rtol=1e-5)
    np.testing.assert_allclose(
        LOSSES["keypoint"][0](b["kp_pred"], b["kp_target"], b, m),
        _ref_keypoint(b["kp_pred"], b["kp_target"], b["kp_weight"], m), rtol=1e-5)
    np.testing.assert_allclose(
        jit(losses.smpl_loss)(b["rot_pred"], b["rot_target"], b["betas_pred"], b["betas_target"], m),
        _ref_smpl(b["rot_pred"], b["rot_target"], b["betas_pred"], b["betas_target"], m), rtol=1e-5)
    np.testing.assert_allclose(
        jit(losses.joints3d_loss)(b["j_pred"], b["j_target"], m),
        _ref_joints3d(b["j_pred"], b["j_target"], m), rtol=1e-5)
    np.testing.assert_allclose(
        jit(losses.keypoints3d_loss)(b["kp3d_pred"], b["kp3d_target"], b["kp3d_weight"], m),
        _ref_keypoints3d(b["kp3d_pred"], b["kp3d_target"], b["kp3d_weight"], m), rtol=1e-5)
    np.testing.assert_allclose(
        jit(losses.dense_loss)(b["dp_pred"], b["dp_target"], b["dp_weight"], m),
        _ref_dense(b["dp_pred"], b["dp_target"], b["dp_weight"], m), rtol=1e-5)


def test_hand_computed_cases():
    # keypoint: B=1, K=2; |d| = (1, 2), (3, 4); weights (1, 0) -> (1 + 2) / (1*2*2).
    pred = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    target = np.zeros((1, 2, 2))
    got = jax.jit(losses.keypoint_loss)(pred, target, np.array([[1.0, 0.0]]))
    assert float(got) == pytest.approx(0.75)
    # dense: B=2, N=1, second example masked: mean over 2*1*2 = (1 + 2) / 4, times 2 / 1.
    pred = np.array([[[1.0, -2.0]], [[5.0, 5.0]]])
    target = np.zeros((2, 1, 2))
    got = jax.jit(losses.dense_loss)(pred, target, np.ones((2, 1)), np.array([1.0, 0.0]))
    assert float(got) == pytest.approx(1.5)
    # joints3d: root-aligned, joint 1 off by (0, 0, 2) -> 4 / (1*2*3); unaligned (3 + 11) / 6.
    pj = np.array([[[1.0, 1.0, 1.0], [1.0, 1.0, 3.0]]])
    tj = np.zeros((1, 2, 3))
    joints3d = jax.jit(losses.joints3d_loss, static_argnames="root")
    assert float(joints3d(pj, tj, np.ones(1))) == pytest.approx(4 / 6)
    assert float(joints3d(pj, tj, np.ones(1), root=None)) == pytest.approx((3 + 11) / 6)
    # keypoints3d: K=4, hips 2 and 3; the target is the prediction shifted by 5 (no loss
    # after pelvis alignment) plus keypoint 0 off by (0, 3, 0) -> 9 / (1*4*3); unlabelled
    # keypoint 1 (off by 100) does not count; an example with an unlabelled hip does not count.
    pk = np.arange(12.0).reshape(1, 4, 3)
    tk = pk + 5.0
    tk[0, 0, 1] += 3.0
    tk[0, 1] += 100.0
    keypoints3d = jax.jit(losses.keypoints3d_loss)
    assert float(keypoints3d(pk, tk, np.array([[1.0, 0.0, 1.0, 1.0]]), np.ones(1))) == pytest.approx(9 / 12)
    assert float(keypoints3d(pk, tk, np.array([[1.0, 0.0, 0.0, 1.0]]), np.ones(1))) == 0.0
    # smpl: one beta off by 3 -> 9 / 217; the global rotation (flipped here) does not count.
    eye = np.broadcast_to(np.eye(3), (1, 24, 3, 3)).copy()
    flipped = eye.copy()
    flipped[:, 0] = -np.eye(3)
    betas = np.zeros((1, 10))
    pred_betas = betas.copy()
    pred_betas[0, 4] = 3.0
    got = jax.jit(losses.smpl_loss)(flipped, eye, pred_betas, betas, np.ones(1))
    assert float(got) == pytest.approx(9 / 217)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_at_target(name):
    fn, pred_key, target_key = LOSSES[name]
    b = _batch()
    b_same = dict(b, **{"betas_pred": b["betas_target"], "rot_pred": b["rot_target"]})
    assert float(fn(b[target_key], b[target_key], b_same, b["mask"])) == 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_matches_finite_differences(name):
    fn, pred_key, target_key = LOSSES[name]
    with jax.enable_x64(True):
        b = {k: np.asarray(v, np.float64) for k, v in _batch(1).items()}
        pred, target = jnp.asarray(b[pred_key]), jnp.asarray(b[target_key])
        loss = lambda p: fn(p, target, b, b["mask"])  # noqa: E731
        grad = np.asarray(jax.jit(jax.grad(loss))(pred))
        rng = np.random.default_rng(2)
        eps = 1e-6
        for _ in range(5):
            direction = rng.normal(size=pred.shape)
            numeric = (loss(pred + eps * direction) - loss(pred - eps * direction)) / (2 * eps)
            np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_masked_example_is_ignored_even_if_nan(name, bad):
    fn, pred_key, target_key = LOSSES[name]
    b = _batch()
    masked = int(np.flatnonzero(b["mask"] == 0)[0])
    reference = fn(b[pred_key], b[target_key], b, b["mask"])
    pred = b[pred_key].copy()
    pred[masked] = bad
    target = b[target_key].copy()
    target[masked] = -bad
    assert float(fn(pred, target, b, b["mask"])) == float(reference)
    grad = GRADS[name](pred, target, b, b["mask"])
    assert np.all(np.isfinite(grad))
    assert np.all(grad[masked] == 0)


@pytest.mark.parametrize("name", ["keypoint", "keypoints3d", "dense"])
def test_zero_weight_point_is_ignored_even_if_nan(name):
    fn, pred_key, target_key = LOSSES[name]
    b = _batch()
    weight_key = {"keypoint": "kp_weight", "keypoints3d": "kp3d_weight", "dense": "dp_weight"}[name]
    i, j = np.argwhere((b[weight_key] == 0) & (b["mask"][:, None] > 0))[0]
    pred = b[pred_key].copy()
    pred[i, j] = np.nan
    np.testing.assert_allclose(fn(pred, b[target_key], b, b["mask"]),
                               fn(b[pred_key], b[target_key], b, b["mask"]), rtol=0)
    grad = GRADS[name](pred, b[target_key], b, b["mask"])
    assert np.all(np.isfinite(grad)) and np.all(grad[i, j] == 0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_masked_batch_equals_unmasked_half(name):
    fn, pred_key, target_key = LOSSES[name]
    b = _batch(3)
    mask = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    keep = mask > 0
    half = {k: v[keep] for k, v in b.items()}
    full = fn(b[pred_key], b[target_key], b, mask)
    alone = fn(half[pred_key], half[target_key], half, np.ones(2, np.float32))
    np.testing.assert_allclose(full, alone, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_masked_is_zero(name):
    fn, pred_key, target_key = LOSSES[name]
    b = _batch()
    zeros = np.zeros(B, np.float32)
    assert float(fn(b[pred_key], b[target_key], b, zeros)) == 0.0
    assert np.all(GRADS[name](b[pred_key], b[target_key], b, zeros) == 0)


def test_negative_weights():
    b = _batch()
    neg = b["mask"].copy()
    neg[0] = -1.0
    with pytest.raises(ValueError, match="non-negative"):
        losses.dense_loss(b["dp_pred"], b["dp_target"], b["dp_weight"], neg)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        losses.keypoint_loss(b["kp_pred"], b["kp_target"], -b["kp_weight"])
    # Under jit the values are not known: negatives are clamped to 0.
    got = jax.jit(losses.joints3d_loss)(b["j_pred"], b["j_target"], neg)
    clamped = np.maximum(neg, 0)
    np.testing.assert_allclose(got, _ref_joints3d(b["j_pred"], b["j_target"], clamped), rtol=1e-5)


def test_shape_errors():
    b = _batch()
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        losses.keypoint_loss(b["kp_pred"], b["kp_target"][:, :3], b["kp_weight"])
    with pytest.raises(ValueError, match=r"weight must be \(B, K\)"):
        losses.keypoint_loss(b["kp_pred"], b["kp_target"], b["kp_weight"][:, :3])
    with pytest.raises(ValueError, match=r"mask must be \(B,\)"):
        losses.dense_loss(b["dp_pred"], b["dp_target"], b["dp_weight"], b["mask"][:2])
    with pytest.raises(ValueError, match=r"\(B, 24, 3, 3\)"):
        losses.smpl_loss(b["rot_pred"][:, 1:], b["rot_target"][:, 1:], b["betas_pred"],
                         b["betas_target"], b["mask"])
    with pytest.raises(ValueError, match="betas"):
        losses.smpl_loss(b["rot_pred"], b["rot_target"], b["betas_pred"][:, :5],
                         b["betas_target"], b["mask"])
    with pytest.raises(ValueError, match="root"):
        losses.joints3d_loss(b["j_pred"], b["j_target"], b["mask"], root=24)
    with pytest.raises(ValueError, match=r"\(B, J, 3\)"):
        losses.joints3d_loss(b["j_pred"][..., :2], b["j_target"][..., :2], b["mask"])


def test_total_loss_and_weights():
    weights = losses.LossWeights()
    assert (weights.keypoint, weights.smpl, weights.joints3d, weights.dense) == (10.0, 10.0, 10.0, 1.0)
    assert losses.official_dense_weight(True) == 1.0
    assert losses.official_dense_weight(False) == 10.0
    terms = {"keypoint": jnp.asarray(1.0), "dense": jnp.asarray(2.0)}
    assert float(jax.jit(losses.total_loss, static_argnums=1)(terms, weights)) == 12.0
    no_3d = losses.LossWeights(dense=losses.official_dense_weight(False))
    assert float(losses.total_loss(terms, no_3d)) == 30.0
    with pytest.raises(ValueError, match="unknown loss term"):
        losses.total_loss({"kp": jnp.asarray(1.0)}, weights)
    with pytest.raises(ValueError, match="scalar"):
        losses.total_loss({"dense": jnp.ones(2)}, weights)
