"""Rotations, kinematic chains and rigid alignment (pure functions, any batch dims).

Conventions: axis-angle vectors ``(..., 3)`` (direction = axis, norm = angle in
radians); rotation matrices ``(..., 3, 3)`` act on column vectors; 4x4
transforms are ``[[R, t], [0, 1]]``.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

# Below this squared angle, Rodrigues' coefficients use their Taylor series.
# float32 epsilon is ~1.2e-7; at theta^2 < 1e-6 the series' truncation error
# (theta^4 / 120 for sin(theta)/theta) is ~1e-14, far below float precision.
_SMALL_ANGLE_SQ = 1e-6


def skew(v: jnp.ndarray) -> jnp.ndarray:
    """``(..., 3)`` vectors -> ``(..., 3, 3)`` cross-product matrices ``[v]_x``."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], axis=-1),
            jnp.stack([z, zero, -x], axis=-1),
            jnp.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )


def rodrigues(axis_angle: jnp.ndarray) -> jnp.ndarray:
    """Axis-angle ``(..., 3)`` -> rotation matrices ``(..., 3, 3)``.

    ``R = I + a [r]_x + b [r]_x^2`` with ``a = sin(t)/t`` and
    ``b = (1 - cos(t))/t^2`` for ``t = |r|``, written with the unnormalized
    ``r`` so that no division by the angle occurs. Near zero the coefficients
    come from their Taylor series (the double-``where`` keeps the unused
    branch's gradient finite), so values and gradients are exact and finite at
    ``r = 0``. Agrees with smplx's ``batch_rodrigues`` (which adds 1e-8 to the
    vector before normalizing) to float precision.
    """
    theta_sq = jnp.sum(axis_angle * axis_angle, axis=-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_theta_sq = jnp.where(small, 1.0, theta_sq)
    safe_theta = jnp.sqrt(safe_theta_sq)
    a = jnp.where(small, 1.0 - theta_sq / 6.0, jnp.sin(safe_theta) / safe_theta)
    b = jnp.where(small, 0.5 - theta_sq / 24.0, (1.0 - jnp.cos(safe_theta)) / safe_theta_sq)
    k = skew(axis_angle)
    eye = jnp.eye(3, dtype=axis_angle.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotmat_to_axis_angle(rotmat: jnp.ndarray) -> jnp.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> axis-angle ``(..., 3)``, angle in [0, pi].

    Goes through a unit quaternion (Shepperd's method: the largest of the four
    candidate components is computed from the diagonal, the rest from
    off-diagonal sums), which is stable for every angle including 0 and pi.
    """
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    trace = m00 + m11 + m22
    # Four candidate (w, x, y, z) quaternions scaled by 4*component; pick the one
    # whose leading component is largest.
    candidates = jnp.stack(
        [
            jnp.stack([1.0 + trace, m21 - m12, m02 - m20, m10 - m01], axis=-1),
            jnp.stack([m21 - m12, 1.0 + m00 - m11 - m22, m01 + m10, m02 + m20], axis=-1),
            jnp.stack([m02 - m20, m01 + m10, 1.0 - m00 + m11 - m22, m12 + m21], axis=-1),
            jnp.stack([m10 - m01, m02 + m20, m12 + m21, 1.0 - m00 - m11 + m22], axis=-1),
        ],
        axis=-2,
    )
    leading = jnp.stack([1.0 + trace, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22,
                         1.0 - m00 - m11 + m22], axis=-1)
    best = jnp.argmax(leading, axis=-1)
    quat = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    quat = quat / jnp.linalg.norm(quat, axis=-1, keepdims=True)
    quat = jnp.where(quat[..., :1] < 0, -quat, quat)  # w >= 0 -> angle in [0, pi]
    return quaternion_to_axis_angle(quat)


def quaternion_to_axis_angle(quat: jnp.ndarray) -> jnp.ndarray:
    """Unit quaternions ``(..., 4)`` as ``(w, x, y, z)`` -> axis-angle ``(..., 3)``."""
    w = quat[..., 0]
    xyz = quat[..., 1:]
    sin_half_sq = jnp.sum(xyz * xyz, axis=-1)
    small = sin_half_sq < _SMALL_ANGLE_SQ
    sin_half = jnp.sqrt(jnp.where(small, 1.0, sin_half_sq))
    angle = 2.0 * jnp.arctan2(sin_half, w)
    # angle / sin(angle/2) -> 2 / w (1 + ...) as the angle -> 0.
    scale = jnp.where(small, 2.0 / w, angle / sin_half)
    return xyz * scale[..., None]


def rigid_transform_chain(
    rotmats: jnp.ndarray, joints: jnp.ndarray, parents: Sequence[int]
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Poses a kinematic tree (smplx's ``batch_rigid_transform``).

    Args:
      rotmats: ``(..., J, 3, 3)`` local rotation of each joint.
      joints: ``(..., J, 3)`` rest-pose joint locations.
      parents: ``J`` static parent indices, ``parents[0] = -1``, each parent
        before its children. Static, so the chain unrolls under jit.

    Returns:
      ``posed_joints (..., J, 3)`` and ``relative (..., J, 3, 4)``: for each joint
      the rigid transform that maps a rest-pose point skinned to it to its posed
      location (the world transform composed with the inverse rest offset).
    """
    _check_parents(parents, rotmats.shape[-3])
    parent_idx = jnp.asarray([0] + list(parents[1:]))
    offsets = joints - jnp.where(
        (jnp.arange(len(parents)) > 0)[:, None], joints[..., parent_idx, :], 0.0
    )
    world_rot = [rotmats[..., 0, :, :]]
    world_pos = [joints[..., 0, :]]
    for j in range(1, len(parents)):
        p = parents[j]
        world_rot.append(world_rot[p] @ rotmats[..., j, :, :])
        world_pos.append(world_pos[p] + jnp.einsum("...ik,...k->...i", world_rot[p], offsets[..., j, :]))
    rot = jnp.stack(world_rot, axis=-3)
    posed_joints = jnp.stack(world_pos, axis=-2)
    # A rest point x skinned to joint j moves to R_j (x - J_j) + posed_J_j.
    translation = posed_joints - jnp.einsum("...jik,...jk->...ji", rot, joints)
    relative = jnp.concatenate([rot, translation[..., None]], axis=-1)
    return posed_joints, relative


def _check_parents(parents: Sequence[int], num_joints: int) -> None:
    if len(parents) != num_joints:
        raise ValueError(f"parents has {len(parents)} entries but there are {num_joints} joints")
    if parents[0] != -1:
        raise ValueError(f"parents[0] must be -1 (the root), got {parents[0]}")
    for j, p in enumerate(parents[1:], start=1):
        if not 0 <= p < j:
            raise ValueError(f"parents[{j}] = {p}: each parent must come before its child")


def procrustes_align(source: jnp.ndarray, target: jnp.ndarray, *, scale: bool = True) -> jnp.ndarray:
    """Aligns ``source`` to ``target`` by a similarity (or rigid) transform.

    Solves ``min_{s,R,t} |s R source + t - target|^2`` in closed form (Umeyama
    1991): SVD of the cross-covariance, with a sign fix so ``R`` is a proper
    rotation.

    Args:
      source: ``(..., N, 3)`` points to move.
      target: ``(..., N, 3)`` reference points.
      scale: estimate the scale (PA-MPJPE's convention) or keep ``s = 1``.

    Returns:
      ``(..., N, 3)`` the aligned source.
    """
    mu_s = source.mean(axis=-2, keepdims=True)
    mu_t = target.mean(axis=-2, keepdims=True)
    xs = source - mu_s
    xt = target - mu_t
    cov = jnp.einsum("...ni,...nj->...ij", xt, xs)
    u, sigma, vt = jnp.linalg.svd(cov)
    det = jnp.linalg.det(u @ vt)
    d = jnp.concatenate([jnp.ones_like(sigma[..., :2]), jnp.sign(det)[..., None]], axis=-1)
    rot = u @ (d[..., :, None] * vt)
    if scale:
        var_s = jnp.sum(xs * xs, axis=(-2, -1))
        s = jnp.sum(sigma * d, axis=-1) / var_s
    else:
        s = jnp.ones_like(sigma[..., 0])
    aligned = s[..., None, None] * jnp.einsum("...ij,...nj->...ni", rot, xs)
    return aligned + mu_t

