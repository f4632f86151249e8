"""Synthetic SMPL-format model data for tests (no licensed SMPL file needed).

The arrays have SMPL's sizes (6890 vertices, 24 joints, 10 betas, 207 pose
blend shapes) and structure (normalized sparse joint regressor, skinning
weights with <= 4 bones per vertex, SMPL's kinematic tree) with random values,
so smplx and dct_jax can be compared on identical data.
"""

from __future__ import annotations

import numpy as np

from dct_jax.smpl import SMPL_PARENTS  # noqa: F401 - re-exported for tests
NUM_VERTICES = 6890
NUM_JOINTS = 24


def random_smpl_arrays(seed: int = 0, num_vertices: int = NUM_VERTICES,
                       num_betas: int = 10) -> dict[str, np.ndarray]:
    """Arrays under the names of SMPL's files: v_template, shapedirs,
    posedirs (V, 3, 207), J_regressor, weights, kintree_table, f."""
    rng = np.random.default_rng(seed)
    v = num_vertices
    j = NUM_JOINTS
    # A body-sized cloud: 0.5 m wide, 1.7 m tall, 0.3 m deep.
    v_template = rng.uniform([-0.25, -1.1, -0.15], [0.25, 0.6, 0.15], size=(v, 3))
    shapedirs = rng.normal(scale=0.01, size=(v, 3, num_betas))
    posedirs = rng.normal(scale=0.005, size=(v, 3, 9 * (j - 1)))
    j_regressor = np.zeros((j, v))
    for joint in range(j):
        ids = rng.choice(v, size=12, replace=False)
        j_regressor[joint, ids] = rng.uniform(0.1, 1.0, size=12)
    j_regressor /= j_regressor.sum(axis=1, keepdims=True)
    weights = np.zeros((v, j))
    for bone_slot in range(4):
        weights[np.arange(v), rng.integers(0, j, size=v)] += rng.uniform(0.05, 1.0, size=v)
    weights /= weights.sum(axis=1, keepdims=True)
    kintree = np.stack([np.array(SMPL_PARENTS, dtype=np.int64), np.arange(j)])
    kintree[0, 0] = 4294967295  # as in SMPL's files: the root's parent is uint32 -1
    faces = rng.integers(0, v, size=(2 * v, 3)).astype(np.uint32)
    return {
        "v_template": v_template, "shapedirs": shapedirs, "posedirs": posedirs,
        "J_regressor": j_regressor, "weights": weights, "kintree_table": kintree,
        "f": faces,
    }
