"""Tests for dct_jax.geometry against SciPy's rotations and closed-form cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dct_jax import geometry


def _random_axis_angle(n, seed=0, max_angle=np.pi):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return (axis * rng.uniform(0, max_angle, size=(n, 1))).astype(np.float32)


def test_rodrigues_matches_scipy():
    rotvec = _random_axis_angle(500)
    ours = jax.jit(geometry.rodrigues)(rotvec)
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rotvec).as_matrix(), atol=2e-6)


def test_rodrigues_small_angles_and_zero():
    rotvec = np.array([[0, 0, 0], [1e-9, 0, 0], [0, 3e-4, -2e-4], [1e-3, 1e-3, 0]], np.float64)
    with jax.enable_x64(True):
        ours = np.asarray(geometry.rodrigues(jnp.asarray(rotvec)))
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-14)


def test_rodrigues_gradient_finite_and_exact_at_zero():
    # d R / d r at r = 0 is the skew generator: dR[i, j]/dr_k = -eps_ijk.
    jac = jax.jacfwd(geometry.rodrigues)(jnp.zeros(3))
    expected = np.zeros((3, 3, 3))
    for k in range(3):
        e = np.zeros(3)
        e[k] = 1
        expected[:, :, k] = np.asarray(geometry.skew(jnp.asarray(e)))
    np.testing.assert_allclose(jac, expected, atol=1e-7)
    grad = jax.grad(lambda r: geometry.rodrigues(r).sum())(jnp.zeros(3))
    assert np.all(np.isfinite(grad))


def test_rotmat_to_axis_angle_roundtrip_including_pi():
    rotvec = _random_axis_angle(500, seed=1, max_angle=np.pi - 1e-3)
    near_pi = np.array([[np.pi - 1e-6, 0, 0], [0, 0, np.pi], [0, 0, 0], [1e-7, 0, 0]], np.float32)
    rotvec = np.concatenate([rotvec, near_pi])
    matrices = Rotation.from_rotvec(rotvec).as_matrix().astype(np.float32)
    back = np.asarray(jax.jit(geometry.rotmat_to_axis_angle)(matrices))
    # Compare as rotations: angle and axis are ambiguous (sign) only at pi.
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), matrices, atol=2e-5)
    np.testing.assert_allclose(back[:500], rotvec[:500], atol=2e-4)
    assert np.all(np.linalg.norm(back, axis=1) <= np.pi + 1e-5)


def test_rigid_chain_two_links():
    # A two-bone arm: root at origin, child at (1, 0, 0); rotating the root by
    # 90 deg about z moves the child joint to (0, 1, 0).
    rot = geometry.rodrigues(jnp.array([[0, 0, np.pi / 2], [0, 0, 0]], jnp.float32))
    joints = jnp.array([[0.0, 0, 0], [1.0, 0, 0]])
    posed, rel = geometry.rigid_transform_chain(rot, joints, (-1, 0))
    np.testing.assert_allclose(posed, [[0, 0, 0], [0, 1, 0]], atol=1e-6)
    # A rest point at the child joint + (1, 0, 0), skinned to the child, goes to (0, 2, 0).
    point = jnp.array([2.0, 0, 0, 1.0])
    np.testing.assert_allclose(rel[1] @ point, [0, 2, 0], atol=1e-6)


@pytest.mark.parametrize("parents", [(0, 0), (-1, 1), (-1, 2, 0)])
def test_rigid_chain_rejects_bad_parents(parents):
    n = len(parents)
    with pytest.raises(ValueError, match="parent"):
        geometry.rigid_transform_chain(jnp.tile(jnp.eye(3), (n, 1, 1)), jnp.zeros((n, 3)), parents)


def test_procrustes_recovers_similarity():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(4, 24, 3)).astype(np.float32)
    rot = Rotation.random(4, random_state=4).as_matrix().astype(np.float32)
    source = 0.7 * np.einsum("bij,bnj->bni", rot, target) + rng.normal(size=(4, 1, 3)).astype(np.float32)
    aligned = jax.jit(geometry.procrustes_align)(source, target)
    np.testing.assert_allclose(aligned, target, atol=1e-4)


def test_procrustes_handles_reflection_and_no_scale():
    rng = np.random.default_rng(5)
    target = rng.normal(size=(30, 3))
    mirrored = target * np.array([-1.0, 1, 1])  # best proper rotation can't undo a reflection
    aligned = np.asarray(geometry.procrustes_align(mirrored, target, scale=False))
    centered = aligned - aligned.mean(0)
    # Rigid alignment keeps the shape's spread and yields a proper rotation.
    np.testing.assert_allclose(np.linalg.norm(centered), np.linalg.norm(mirrored - mirrored.mean(0)), rtol=1e-5)
    cov = (target - target.mean(0)).T @ (mirrored - mirrored.mean(0))
    u, _, vt = np.linalg.svd(cov)
    d = np.diag([1, 1, np.sign(np.linalg.det(u @ vt))])
    expected = (mirrored - mirrored.mean(0)) @ (u @ d @ vt).T + target.mean(0)
    np.testing.assert_allclose(aligned, expected, atol=1e-5)
