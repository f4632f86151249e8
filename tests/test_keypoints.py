"""Tests for dct_jax.keypoints.

References: the paper's / HMR's cocoplus flip permutation, smplx's
``vertex_ids.py`` table (an independent copy of SMPL's face vertex ids), direct
indexing of joints and vertices, and the geometry of the default body.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dct_jax import keypoints, smpl

BODY_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "dct_jax", "assets", "default_body.npz")


@pytest.mark.parametrize("name", keypoints.LAYOUT_NAMES)
@pytest.mark.parametrize("body", keypoints.BODY_MODELS)
def test_flip_perm_is_an_involution_swapping_left_and_right(name, body):
    layout = keypoints.get_layout(name, body=body)
    perm = np.asarray(layout.flip_perm)
    assert sorted(perm.tolist()) == list(range(len(layout)))
    np.testing.assert_array_equal(perm[perm], np.arange(len(layout)))
    for k, n in enumerate(layout.names):
        mirrored = layout.names[perm[k]]
        if n.startswith("left_"):
            assert mirrored == "right_" + n[5:]
        elif n.startswith("right_"):
            assert mirrored == "left_" + n[6:]
        else:
            assert mirrored == n


def test_layout_sizes_and_the_papers_cocoplus_perm():
    assert len(keypoints.get_layout("smpl24")) == 24
    assert len(keypoints.get_layout("coco17")) == 17
    layout = keypoints.get_layout("cocoplus19")
    assert len(layout) == 19
    assert layout.flip_perm == (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 16, 15, 18, 17)
    assert layout.flip_perm == keypoints.COCOPLUS19_FLIP_PERM
    assert keypoints.SMPL24_NAMES == smpl.SMPL_JOINT_NAMES
    with pytest.raises(ValueError, match="no mirrored counterpart"):
        keypoints.flip_permutation(("left_eye", "nose"))
    with pytest.raises(ValueError, match="unknown keypoint layout"):
        keypoints.get_layout("h37m")
    with pytest.raises(ValueError, match="unknown body model"):
        keypoints.get_layout("coco17", body="smplx")


def test_smpl_vertex_ids_match_smplx_table():
    vertex_ids = pytest.importorskip("smplx.vertex_ids").vertex_ids["smplh"]
    for name, ours in (("nose", "nose"), ("reye", "right_eye"), ("leye", "left_eye"),
                       ("rear", "right_ear"), ("lear", "left_ear")):
        assert keypoints.SMPL_VERTEX_IDS[ours] == vertex_ids[name]


def test_default_vertex_ids_match_the_body_file():
    with np.load(BODY_PATH) as npz:
        stored = npz["keypoint_vertex_ids"].tolist()
        num_vertices = npz["v_template"].shape[0]
    names = ("nose", "right_eye", "left_eye", "right_ear", "left_ear", "head_top")
    assert [keypoints.DEFAULT_VERTEX_IDS[n] for n in names] == stored
    assert keypoints.NUM_VERTICES["default"] == num_vertices
    assert keypoints.body_for_num_vertices(num_vertices) == "default"
    assert keypoints.body_for_num_vertices(6890) == "smpl"
    with pytest.raises(ValueError):
        keypoints.body_for_num_vertices(100)


@pytest.mark.parametrize("body", keypoints.BODY_MODELS)
def test_from_body_gathers_joints_and_vertices_under_jit(body):
    layout = keypoints.get_layout("cocoplus19", body=body)
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(2, 3, layout.num_vertices, 3)).astype(np.float32)
    joints = rng.normal(size=(2, 3, 24, 3)).astype(np.float32)
    got = np.asarray(jax.jit(keypoints.from_body, static_argnums=0)(layout, vertices, joints))
    assert got.shape == (2, 3, 19, 3)
    vertex_table = keypoints.SMPL_VERTEX_IDS if body == "smpl" else keypoints.DEFAULT_VERTEX_IDS
    for k, name in enumerate(layout.names):
        if name in vertex_table:
            np.testing.assert_array_equal(got[..., k, :], vertices[..., vertex_table[name], :])
        else:
            np.testing.assert_array_equal(got[..., k, :], joints[..., smpl.SMPL_JOINT_NAMES.index(name), :])
    smpl24 = keypoints.from_body(keypoints.get_layout("smpl24", body=body), vertices, joints)
    np.testing.assert_array_equal(np.asarray(smpl24), joints)
    with pytest.raises(ValueError, match="needs"):
        keypoints.from_body(layout, vertices[..., :10, :], joints)
    with pytest.raises(ValueError, match="24, 3"):
        keypoints.from_body(layout, vertices, joints[..., :17, :])


def test_from_body_has_gradients():
    layout = keypoints.get_layout("coco17", body="default")
    vertices = jnp.ones((layout.num_vertices, 3))
    joints = jnp.ones((24, 3))
    grad = jax.grad(lambda v, j: keypoints.from_body(layout, v, j).sum(), argnums=(0, 1))(vertices, joints)
    assert float(grad[0].sum()) == 3 * 5 and float(grad[1].sum()) == 3 * 12


def test_default_body_face_keypoints_are_where_they_belong():
    model = smpl.load()
    out = jax.jit(smpl.forward)(model, np.zeros(72, np.float32), np.zeros(10, np.float32))
    layout = keypoints.get_layout("coco17", body=keypoints.body_for_num_vertices(model.num_vertices))
    kp = dict(zip(layout.names, np.asarray(keypoints.from_body(layout, out.vertices, out.joints))))
    head = np.asarray(out.joints)[smpl.SMPL_JOINT_NAMES.index("head")]
    # The body faces +z; its left is +x.
    assert kp["nose"][2] > kp["left_eye"][2] > kp["left_ear"][2]
    assert kp["nose"][2] > kp["right_eye"][2] > kp["right_ear"][2]
    assert abs(kp["nose"][0]) < 0.01
    assert kp["left_eye"][0] > 0.015 and kp["right_eye"][0] < -0.015
    assert kp["left_ear"][0] > 0.05 and kp["right_ear"][0] < -0.05
    assert kp["nose"][1] > head[1] and kp["left_eye"][1] > kp["nose"][1]
    top = np.asarray(out.vertices)[keypoints.DEFAULT_VERTEX_IDS["head_top"]]
    assert top[1] == pytest.approx(np.asarray(out.vertices)[:, 1].max())
