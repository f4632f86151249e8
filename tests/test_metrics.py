"""Tests for dct_jax.metrics; references are plain numpy loops over the points."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
