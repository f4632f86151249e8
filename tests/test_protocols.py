"""Tests for dct_jax.protocols: golden numbers on hand-built bodies for each dataset's protocol.

At zero pose and zero shape a body model's vertices are its template exactly,
so moving template vertices by hand gives metric values known in advance.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dct_jax import keypoints, protocols, smpl

B = 3


@pytest.fixture(scope="module")
def neutral():
    return smpl.load()  # the free default body (7,272 vertices)


@pytest.fixture(scope="module")
def regressor(neutral):
    """A ``(17, V)`` regressor picking one vertex per joint; joint 0 (pelvis) = mid of the two hips."""
    num_vertices = neutral.num_vertices
    rng = np.random.default_rng(0)
    picks = rng.choice(num_vertices, size=17, replace=False)
    reg = np.zeros((17, num_vertices), np.float32)
    reg[np.arange(17), picks] = 1.0
    reg[0] = 0.5 * (reg[4] + reg[1])  # H36M 4 = right hip, 1 = left hip (J14 indices 2, 3)
    return reg


def _zeros():
    return jnp.zeros((B, 72)), jnp.zeros((B, 10))


def _shifted(model, vertex_ids, offset):
    """``model`` with template vertices ``vertex_ids`` moved by ``offset`` metres."""
    template = np.array(model.v_template)
    template[np.asarray(vertex_ids)] += np.asarray(offset, np.float32)
    return dataclasses.replace(model, v_template=jnp.asarray(template))


def _metrics_fn(fn):
    return jax.jit(fn)


def test_protocol_selection_by_dataset(tmp_path):
    assert protocols.protocol_for("up3d") == "official"
    assert protocols.protocol_for("synthetic") == "official"
    assert protocols.protocol_for("pw3d") == "pw3d"
    assert protocols.protocol_for("h36m") == "h36m"
    assert protocols.protocol_for("coco_densepose") == "dense"
    assert protocols.protocol_for("my_own_dataset") == "official"
    built = tmp_path / "pw3d" / "1.0.0"
    built.mkdir(parents=True)
    assert protocols.protocol_for(str(built)) == "pw3d"  # a built D/NAME/VERSION folder
    assert protocols.protocol_for("up3d", "h36m") == "h36m"
    with pytest.raises(ValueError, match="unknown evaluation protocol 'spin'"):
        protocols.protocol_for("up3d", "spin")


def test_h36m_golden_numbers_with_the_regressor(neutral, regressor):
    bodies = protocols.EvalBodies(neutral=neutral, j_regressor_h36m=jnp.asarray(regressor))
    layout = keypoints.get_layout("cocoplus19", body="default")
    pose, betas = _zeros()
    pred_j14 = (regressor @ np.asarray(neutral.v_template))[list(protocols.H36M_TO_J14)]
    # Ground truth: the prediction translated (pelvis alignment removes it) with the
    # right ankle 14 mm off: MPJPE = 14 mm / 14 joints = 1 mm.
    gt = np.zeros((B, 19, 3), np.float32)
    gt[:, :14] = pred_j14 + [0.3, -0.2, 4.0]
    gt[1, 0, 0] += 0.014
    # Third example: a similarity transform of the prediction: PA-MPJPE 0, MPJPE > 0.
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    gt[2, :14] = 1.3 * pred_j14 @ rot.T + [0.1, 0.2, 3.0]
    fn = jax.jit(protocols.h36m_metrics, static_argnums=1)
    values = {k: np.asarray(v) for k, v in fn(bodies, layout, pose, betas, jnp.asarray(gt)).items()}
    np.testing.assert_allclose(values["mpjpe_mm"][:2], [0.0, 1.0], atol=2e-3)
    assert values["pa_mpjpe_mm"][0] == pytest.approx(0.0, abs=2e-3)
    assert values["pa_mpjpe_mm"][1] > 0.1  # least squares spreads the one error over all joints
    assert values["pa_mpjpe_mm"][2] == pytest.approx(0.0, abs=2e-3)
    assert values["mpjpe_mm"][2] > 50.0


def test_h36m_without_the_regressor_uses_the_body_keypoints(neutral):
    bodies = protocols.EvalBodies(neutral=neutral)
    layout = keypoints.get_layout("cocoplus19", body="default")
    pose, betas = _zeros()
    out = smpl.forward(neutral, pose[:1], betas[:1])
    pred = np.asarray(keypoints.from_body(layout, out.vertices, out.joints))[0]
    gt = np.broadcast_to(pred, (B, 19, 3)).copy()
    gt[1, 5, 1] -= 0.028  # left ankle 28 mm off -> 2 mm over 14 joints
    gt[:, 14:] = 99.0  # face keypoints are not among the 14
    fn = jax.jit(protocols.h36m_metrics, static_argnums=1)
    values = fn(bodies, layout, pose, betas, jnp.asarray(gt))
    np.testing.assert_allclose(np.asarray(values["mpjpe_mm"])[:2], [0.0, 2.0], atol=2e-3)


def test_pw3d_golden_numbers_gendered_and_neutral(neutral, regressor):
    pose, betas = _zeros()
    ankle_vertex = int(np.argmax(regressor[protocols.H36M_TO_J14[0]]))
    # The female model differs from the neutral one in the right-ankle vertex by 14 mm;
    # the male one is the neutral one moved 10 mm (pelvis alignment removes that).
    female = _shifted(neutral, [ankle_vertex], [0.014, 0.0, 0.0])
    male = _shifted(neutral, np.arange(neutral.num_vertices), [0.01, 0.0, 0.0])
    gendered = protocols.EvalBodies(neutral=neutral, male=male, female=female,
                                    j_regressor_h36m=jnp.asarray(regressor))
    gender = jnp.asarray([0, 1, 2])  # neutral/unknown, male, female
    fn = jax.jit(protocols.pw3d_metrics)
    values = {k: np.asarray(v) for k, v in fn(gendered, pose, betas, pose, betas, gender).items()}
    np.testing.assert_allclose(values["mpjpe_mm"], [0.0, 0.0, 1.0], atol=2e-3)
    np.testing.assert_allclose(values["pve_mm"], [0.0, 0.0, 14.0 / neutral.num_vertices], atol=2e-3)
    # PVE-T has no alignment: the male shift counts in full.
    np.testing.assert_allclose(values["pvet_mm"], [0.0, 10.0, 14.0 / neutral.num_vertices], atol=2e-3)
    # Without gendered models every ground truth goes through the neutral model.
    plain = protocols.EvalBodies(neutral=neutral, j_regressor_h36m=jnp.asarray(regressor))
    values = fn(plain, pose, betas, pose, betas, gender)
    np.testing.assert_allclose(np.asarray(values["mpjpe_mm"]), 0.0, atol=2e-3)
    assert protocols.describe("pw3d", gendered)["ground_truth"] == "gendered"
    assert protocols.describe("pw3d", plain)["ground_truth"] == "neutral"
    assert protocols.describe("pw3d", plain)["joints"].startswith("h36m14")


def test_pw3d_keeps_the_global_rotation_and_aligns_the_pelvis(neutral):
    bodies = protocols.EvalBodies(neutral=neutral)  # 24 SMPL joints, pelvis = joint 0
    pose, betas = _zeros()
    turned = pose.at[:, 1].set(np.pi / 2)  # the prediction faces sideways
    fn = jax.jit(protocols.pw3d_metrics)
    values = fn(bodies, turned, betas, pose, betas, jnp.zeros(B, jnp.int32))
    assert np.all(np.asarray(values["mpjpe_mm"]) > 50.0)  # the official protocol would zero it out
    assert np.all(np.asarray(values["pa_mpjpe_mm"]) < 1e-2)  # a rotation: Procrustes undoes it
    assert np.all(np.asarray(values["pvet_mm"]) < 1e-3)  # same shape
    official = protocols.smpl_metrics(neutral, turned, betas, pose, betas)
    np.testing.assert_allclose(np.asarray(official["mpjpe_mm"]), 0.0, atol=1e-3)


def test_example_metrics_say_where_each_metric_is_defined(neutral):
    layout = keypoints.get_layout("cocoplus19", body="default")
    bodies = protocols.EvalBodies(neutral=neutral)
    n = 5
    batch = {
        "smpl_pose": jnp.zeros((B, 72)), "smpl_betas": jnp.zeros((B, 10)), "gender": jnp.zeros(B, jnp.int32),
        "has_smpl": jnp.asarray([1.0, 0.0, 1.0]), "has_dense": jnp.asarray([0.0, 1.0, 0.0]),
        "keypoints3d": jnp.zeros((B, 19, 3)), "has_keypoints3d": jnp.asarray([1.0, 1.0, 0.0]),
        "keypoints3d_weight": jnp.ones((B, 19)).at[1, 4].set(0.0),
        "dense_vertex_ids": jnp.zeros((B, n, 3), jnp.int32), "dense_barycentric": jnp.full((B, n, 3), 1 / 3),
        "dense_weight": jnp.ones((B, n)), "dense_xy": jnp.zeros((B, n, 2)),
    }
    pose, camera = jnp.zeros((B, 24, 3)), jnp.tile(jnp.asarray([1.0, 0.0, 0.0]), (B, 1))
    for protocol in protocols.PROTOCOLS:
        values, rows = protocols.example_metrics(protocol, layout, bodies, pose, jnp.zeros((B, 10)), camera, batch)
        assert set(values) == set(rows)
        np.testing.assert_array_equal(rows["dkd"], [False, True, False])
        if protocol == "h36m":
            # Example 1 lacks a labelled joint among the 14, example 2 has no 3D keypoints.
            assert set(values) == {"mpjpe_mm", "pa_mpjpe_mm", "dkd"}
            np.testing.assert_array_equal(rows["mpjpe_mm"], [True, False, False])
        else:
            assert set(values) == {"pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm", "dkd"}
            np.testing.assert_array_equal(rows["pve_mm"], [True, False, True])


def test_eval_bodies_check_their_files(neutral, regressor, tmp_path):
    path = tmp_path / "J_regressor_h36m.npy"
    np.save(path, regressor)
    bodies = protocols.load_eval_bodies(neutral, j_regressor_h36m_path=str(path))
    np.testing.assert_array_equal(np.asarray(bodies.j_regressor_h36m), regressor)
    np.save(path, regressor[:, :100])
    with pytest.raises(ValueError, match=r"J_regressor_h36m must be a finite float \(17, 7272\)"):
        protocols.load_eval_bodies(neutral, j_regressor_h36m_path=str(path))
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="text.npy: not a numpy .npy array"):
        protocols.load_eval_bodies(neutral, j_regressor_h36m_path=str(tmp_path / "text.npy"))
    with pytest.raises(ValueError, match="needs both smpl_male_path and smpl_female_path"):
        protocols.load_eval_bodies(neutral, smpl_male_path="male.pkl")
