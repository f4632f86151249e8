"""Tests for dct_jax.metrics; references are plain numpy loops over the points."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dct_jax import metrics


def _reference_dkd(pred, target, weight, norm):
    out = np.zeros(pred.shape[0])
    for b in range(pred.shape[0]):
        total = distance = 0.0
        for n in range(pred.shape[1]):
            d = pred[b, n] - target[b, n]
            dist = np.abs(d).sum() if norm == "l1" else np.sqrt((d * d).sum())
            distance += weight[b, n] * dist
            total += weight[b, n]
        out[b] = distance / total if total else 0.0
    return out


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_dense_keypoint_distance_matches_loop(norm):
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 3, 50, 2))
    weight = (rng.random((3, 50)) < 0.7).astype(np.float32)
    weight[2] = 0  # An example without dense keypoints.
    got = jax.jit(lambda p, t, w: metrics.dense_keypoint_distance(p, t, w, norm=norm))(pred, target, weight)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, _reference_dkd(pred, target, weight, norm), rtol=1e-5)
    assert got[2] == 0


def test_dense_keypoint_distance_padding_and_errors():
    pred = jnp.array([[[1.0, 2.0], [5.0, 5.0], [0.0, 0.0]]])
    target = jnp.array([[[1.0, 1.0], [2.0, 1.0], [9.0, 9.0]]])
    weight = jnp.array([[1.0, 1.0, 0.0]])  # The padded third point must not count.
    np.testing.assert_allclose(metrics.dense_keypoint_distance(pred, target, weight), [(1 + 7) / 2])
    np.testing.assert_allclose(metrics.dense_keypoint_distance(pred, target, weight, norm="l2"), [(1 + 5) / 2])
    grad = jax.grad(lambda p: metrics.dense_keypoint_distance(p, pred, weight, norm="l2").sum())(pred)
    assert np.all(np.isfinite(grad))  # Finite at zero distance.
    with pytest.raises(ValueError, match="norm"):
        metrics.dense_keypoint_distance(pred, target, weight, norm="l3")
    with pytest.raises(ValueError, match="weight"):
        metrics.dense_keypoint_distance(pred, target, weight[:, :2])
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 2\)"):
        metrics.dense_keypoint_distance(pred[..., :1], target[..., :1], weight)


def test_dense_keypoint_distance_ignores_nan_at_zero_weight():
    pred = np.array([[[1.0, 2.0], [np.nan, np.inf], [0.0, 0.0]]])
    target = np.array([[[1.0, 1.0], [2.0, 1.0], [3.0, 4.0]]])
    weight = np.array([[1.0, 0.0, 1.0]])
    for norm in ("l1", "l2"):
        dkd = jax.jit(lambda p: metrics.dense_keypoint_distance(p, target, weight, norm=norm).sum())
        expected = (1 + 7) / 2 if norm == "l1" else (1 + 5) / 2
        np.testing.assert_allclose(dkd(pred), expected)
        assert np.all(np.isfinite(jax.grad(dkd)(pred)))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.dense_keypoint_distance(pred, target, -weight)


def test_dense_keypoint_distance_masked_points_never_poison():
    # Issue case 2: NaN at weight 0 is ignored; a NaN or negative weight is an error when concrete
    # and counts as 0 under jit (never a NaN or negative distance).
    pred = np.array([[[1.0, 2.0], [np.nan, np.nan], [0.0, 0.0]]])
    target = np.array([[[1.0, 1.0], [np.nan, 1.0], [3.0, 4.0]]])
    clean = metrics.dense_keypoint_distance(pred, target, np.array([[1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(clean, [(1 + 7) / 2])
    for weight in ([[1.0, np.nan, 1.0]], [[1.0, np.inf, 1.0]]):
        with pytest.raises(ValueError, match="weight must be finite"):
            metrics.dense_keypoint_distance(pred, target, np.array(weight))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.dense_keypoint_distance(pred, target, np.array([[1.0, 0.0, -1.0]]))
    jitted = jax.jit(metrics.dense_keypoint_distance)
    for weight in ([[1.0, np.nan, 1.0]], [[1.0, -3.0, 1.0]], [[1.0, np.inf, 1.0]]):
        np.testing.assert_allclose(jitted(pred, target, np.array(weight)), clean)
    assert jitted(pred, target, np.array([[-1.0, -1.0, -1.0]])) == 0


# An independent transcription of SPIN's compute_similarity_transform
# (points as 3 x N columns, SVD of K = X1 X2^T, R = V Z U^T).
def _spin_similarity_transform(s1, s2):
    s1, s2 = s1.T, s2.T
    mu1, mu2 = s1.mean(axis=1, keepdims=True), s2.mean(axis=1, keepdims=True)
    x1, x2 = s1 - mu1, s2 - mu2
    var1 = np.sum(x1 ** 2)
    k = x1 @ x2.T
    u, _, vt = np.linalg.svd(k)
    v = vt.T
    z = np.eye(3)
    z[-1, -1] *= np.sign(np.linalg.det(u @ v.T))
    r = v @ z @ u.T
    scale = np.trace(r @ k) / var1
    t = mu2 - scale * (r @ mu1)
    return (scale * r @ s1 + t).T


def test_mpjpe_and_pve_hand_cases():
    gt = np.zeros((2, 3, 3))
    pred = np.zeros((2, 3, 3))
    pred[0, 0] = [0.003, 0.004, 0.0]  # 5 mm
    pred[0, 2] = [0.0, 0.0, -0.01]  # 10 mm
    pred[1] = 0.001  # sqrt(3) mm everywhere
    got = jax.jit(metrics.mpjpe)(pred, gt)
    np.testing.assert_allclose(got, [15 / 3, np.sqrt(3)], rtol=1e-5)
    np.testing.assert_allclose(jax.jit(metrics.pve)(pred, gt), got)
    assert jax.jit(metrics.mpjpe)(pred[0], gt[0]).shape == ()
    grad = jax.jit(jax.grad(lambda p: metrics.mpjpe(p, gt).sum()))(pred)
    assert np.all(np.isfinite(grad))  # Finite at zero distance.
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 3\)"):
        metrics.mpjpe(pred[..., :2], gt[..., :2])
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 3\)"):
        metrics.pa_mpjpe(pred, gt[:, :2])


def test_pa_mpjpe_invariant_to_similarity():
    rng = np.random.default_rng(0)
    gt = rng.normal(scale=0.3, size=(3, 24, 3))
    rot = Rotation.random(3, random_state=1).as_matrix()
    pred = 1.7 * np.einsum("bij,bnj->bni", rot, gt) + rng.normal(size=(3, 1, 3))
    pa_mpjpe = jax.jit(metrics.pa_mpjpe)
    np.testing.assert_allclose(pa_mpjpe(pred, gt), 0.0, atol=1e-2)  # mm
    assert np.all(jax.jit(metrics.mpjpe)(pred, gt) > 10)
    # A reflection is not a rotation: the proper-rotation fix must not undo it.
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert np.all(pa_mpjpe(mirrored, gt) > 10)


def test_pa_mpjpe_matches_spin_reference():
    rng = np.random.default_rng(1)
    gt = rng.normal(scale=0.3, size=(4, 14, 3))
    pred = gt + rng.normal(scale=0.05, size=gt.shape)
    pred[1] = pred[1] * np.array([-1.0, 1.0, 1.0])  # Needs the det = +1 sign fix.
    expected = [1000 * np.linalg.norm(_spin_similarity_transform(p, g) - g, axis=-1).mean()
                for p, g in zip(pred, gt)]
    np.testing.assert_allclose(jax.jit(metrics.pa_mpjpe)(pred, gt), expected, rtol=1e-4)
    with jax.enable_x64(True):  # Tighter in float64.
        np.testing.assert_allclose(jax.jit(metrics.pa_mpjpe)(pred, gt), expected, rtol=1e-10)
