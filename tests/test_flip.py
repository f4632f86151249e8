"""Horizontal-flip augmentation (dct_jax.data.flip) is consistent across fields.

The default body is exactly left/right symmetric, so flipping the rendered
inputs of a body must give the inputs rendered from the flipped parameters.
(The SMPL chart's mirror needs a real SMPL template, which cannot ship; it is
built by the same code from the user's model file.)
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from dct_jax import camera as camera_lib
from dct_jax import densepose, keypoints, render, smpl, synthetic
from dct_jax.data import flip

SIZE = 128
# DensePose's left/right part swap, written out.
DENSEPOSE_SWAP = [(1, 1), (2, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
                  (17, 18), (19, 20), (21, 22), (23, 24)]


@pytest.fixture(scope="module")
def model():
    return smpl.load()


@pytest.fixture(scope="module")
def chart():
    return densepose.load_chart("default")


@pytest.fixture(scope="module")
def bm(model, chart):
    return flip.load_body_mirror(model, chart)


@pytest.fixture(scope="module")
def render_chart(chart):
    return render.RenderChart.from_any(chart)


@jax.jit
def _forward(model, pose, betas):
    out = smpl.forward(model, pose, betas)
    return out.vertices, out.joints


def _posed(model, pose, betas):
    """Vertices and joints of ``(4, 72)`` poses (one batch size: one compilation)."""
    vertices, joints = _forward(model, np.asarray(pose, np.float32), np.asarray(betas, np.float32))
    return np.asarray(vertices), np.asarray(joints)


@pytest.fixture(scope="module")
def bodies(model):
    """Four random posed default bodies with framing cameras."""
    rng = np.random.default_rng(0)
    poses = np.stack([synthetic.sample_pose(rng) for _ in range(4)])
    betas = np.stack([synthetic.sample_betas(rng) for _ in range(4)])
    vertices, joints = _posed(model, poses, betas)
    cameras = np.stack([synthetic.sample_camera(v, rng) for v in vertices])
    return poses, betas, vertices, joints, cameras


# ----------------------------------------------------------------------------- mirrors


def test_joint_flip_perm_swaps_names():
    names = smpl.SMPL_JOINT_NAMES
    perm = flip.SMPL_JOINT_FLIP_PERM
    assert len(perm) == 24 and sorted(perm) == list(range(24))
    for k, n in enumerate(names):
        assert names[perm[k]] == n.replace("left_", "@").replace("right_", "left_").replace("@", "right_")


def test_vertex_mirror_of_the_default_body(model):
    mirror = flip.vertex_mirror(model)
    assert mirror.dtype == np.int32 and mirror.shape == (model.num_vertices,)
    shipped = np.load(os.path.join(os.path.dirname(smpl.__file__), "assets", "default_body.npz"))
    np.testing.assert_array_equal(mirror, shipped["mirror_vertex_ids"])
    np.testing.assert_array_equal(mirror[mirror], np.arange(model.num_vertices))


def test_vertex_mirror_rejects_an_asymmetric_body(model):
    shifted = model.replace(v_template=model.v_template + np.array([0.05, 0.0, 0.0], np.float32))
    with pytest.raises(ValueError, match="not left/right symmetric"):
        flip.vertex_mirror(shifted)


def test_part_perm_is_densepose_swap(bm):
    perm = bm.chart_mirror.part_perm
    expected = np.zeros(25, np.int64)
    for a, b in DENSEPOSE_SWAP:
        expected[a], expected[b] = b, a
    np.testing.assert_array_equal(perm, expected)
    assert tuple(perm.tolist()) == flip.DENSEPOSE_PART_FLIP
    cm = bm.chart_mirror
    assert cm.uv_table.shape == (25, 256, 256, 2) and cm.uv_table.dtype == np.uint8
    assert cm.part_agreement == 1.0 and cm.fallback_fraction == 0.0
    assert (cm.face_mirror >= 0).all()
    assert not cm.uv_table[0].any()


def test_chart_mirror_is_cached_and_fast(model, chart):
    import time
    start = time.perf_counter()
    cm = flip.chart_mirror(chart, flip.vertex_mirror(model))
    build = time.perf_counter() - start
    assert build < 4.0, f"chart mirror took {build:.2f} s"  # ~0.9 s measured
    assert flip.load_body_mirror(model, chart) is flip.load_body_mirror(model, chart)
    assert cm.fallback_fraction == 0.0


def test_chart_mirror_rejects_a_wrong_mirror(model, chart):
    with pytest.raises(ValueError, match="not as DensePose does"):
        flip.chart_mirror(chart, np.arange(model.num_vertices))
    with pytest.raises(ValueError, match="mirror"):
        flip.chart_mirror(chart, np.arange(10))


def test_chart_mirror_fallback_for_an_asymmetric_mesh(model, chart, bm):
    """Break the mirror around 20 left-hand vertices: their faces have no mirrored
    face; the 3D fallback still lands on the mirrored surface point."""
    template = np.asarray(model.v_template, np.float64)
    rng = np.random.default_rng(1)
    hand = np.unique(chart.face_vertices[chart.face_part == 4])
    broken = bm.vertex_mirror.copy()
    pick = rng.choice(hand, 20, replace=False)
    broken[pick] = pick
    with pytest.raises(ValueError, match="template"):
        flip.chart_mirror(chart, broken)
    cm = flip.chart_mirror(chart, broken, template=template)
    assert 0.0 < cm.fallback_fraction < 0.01  # 0.35% measured
    np.testing.assert_array_equal(cm.part_perm, bm.chart_mirror.part_perm)
    # Points inside the affected faces, as 8-bit IUV.
    faces = np.flatnonzero(np.isin(chart.face_vertices, pick).any(1))
    bary = rng.dirichlet([3.0] * 3, size=faces.size)
    uv8 = np.rint(np.einsum("nk,nkc->nc", bary, chart.face_uv[faces]) * 255).astype(np.int64)
    part = chart.face_part[faces]

    def surface(i, uv):
        s = densepose.iuv_to_surface(chart, i, uv[:, 0] / 255, uv[:, 1] / 255)
        return np.einsum("nk,nkc->nc", s.barycentric, template[s.vertex_ids])

    mirrored = surface(part, uv8) * [-1, 1, 1]
    got = surface(cm.part_perm[part], cm.uv_table[part, uv8[:, 0], uv8[:, 1]])
    dist = np.linalg.norm(got - mirrored, axis=1)
    assert np.quantile(dist, 0.99) < 0.005 and dist.max() < 0.02, (np.quantile(dist, 0.99), dist.max())


# ----------------------------------------------------------------------------- geometry


def test_flip_pose_mirrors_the_mesh(model, bm):
    rng = np.random.default_rng(2)
    poses = rng.normal(0, 0.5, size=(4, 72)).astype(np.float32)
    poses[:, :3] += [np.pi, 0, 0]
    betas = rng.normal(size=(4, 10)).astype(np.float32)
    vertices, joints = _posed(model, poses, betas)
    flipped_vertices, flipped_joints = _posed(model, flip.flip_pose(poses), betas)
    np.testing.assert_allclose(flipped_vertices, vertices[:, bm.vertex_mirror] * [-1, 1, 1], atol=1e-4)
    np.testing.assert_allclose(flipped_joints, flip.flip_joints3d(joints), atol=1e-4)
    np.testing.assert_allclose(flip.flip_vertices(vertices, bm.vertex_mirror), flipped_vertices, atol=1e-4)
    # 3D keypoints (e.g. motion capture) mirror like the body they belong to.
    layout = keypoints.get_layout("cocoplus19", body="default")
    kp3d = np.asarray(keypoints.from_body(layout, vertices, joints))
    flipped_kp3d = np.asarray(keypoints.from_body(layout, flipped_vertices, flipped_joints))
    weight = np.tile(np.arange(19.0), (4, 1))
    example = flip.flip_example({"keypoints3d": kp3d, "keypoints3d_weight": weight}, bm)
    np.testing.assert_allclose(example["keypoints3d"], flipped_kp3d, atol=1e-4)
    np.testing.assert_array_equal(example["keypoints3d_weight"], weight[:, list(keypoints.COCOPLUS19_FLIP_PERM)])


def test_flip_pose_keeps_shape_and_dtype():
    pose = np.random.default_rng(3).normal(size=(2, 3, 72))
    out = flip.flip_pose(pose)
    assert out.shape == pose.shape and out.dtype == pose.dtype
    np.testing.assert_array_equal(flip.flip_pose(out), pose)
    # Joint 0: axis-angle (x, y, z) -> (x, -y, -z); left hip (1) <-> right hip (2).
    np.testing.assert_array_equal(out[..., :3], pose[..., :3] * [1, -1, -1])
    np.testing.assert_array_equal(out[..., 3:6], pose[..., 6:9] * [1, -1, -1])


def test_flip_camera_and_keypoints_project_consistently(model, bodies):
    """Projected cocoplus keypoints of the flipped parameters are the flipped keypoints."""
    poses, betas, vertices, joints, cameras = bodies
    layout = keypoints.get_layout("cocoplus19", body="default")
    kp = camera_lib.weak_perspective_project(np.asarray(keypoints.from_body(layout, vertices, joints)),
                                             cameras)
    visibility = np.random.default_rng(4).integers(0, 3, size=kp.shape[:-1]).astype(np.uint8)
    flipped_v, flipped_j = _posed(model, flip.flip_pose(poses), betas)
    kp_flipped = camera_lib.weak_perspective_project(
        np.asarray(keypoints.from_body(layout, flipped_v, flipped_j)), flip.flip_camera(cameras))
    xy, vis = flip.flip_keypoints(kp, visibility, layout.flip_perm)
    np.testing.assert_allclose(xy, kp_flipped, atol=1e-4)
    np.testing.assert_array_equal(vis, visibility[:, layout.flip_perm])
    assert layout.flip_perm == keypoints.COCOPLUS19_FLIP_PERM


def test_dense_points_project_consistently(model, bm, bodies):
    poses, betas, vertices, _, cameras = bodies
    rng = np.random.default_rng(5)
    ids = rng.integers(0, model.num_vertices, size=(4, 50, 3))
    bary = rng.dirichlet([1.0] * 3, size=(4, 50)).astype(np.float32)
    xy = densepose.project_surface_points(vertices, densepose.SurfacePoints(ids, bary, None), cameras)
    flipped_v, _ = _posed(model, flip.flip_pose(poses), betas)
    points = densepose.SurfacePoints(flip.flip_surface_points(ids, bm.vertex_mirror), bary, None)
    xy_flipped = densepose.project_surface_points(flipped_v, points, flip.flip_camera(cameras))
    np.testing.assert_allclose(xy_flipped, flip.flip_points2d(np.asarray(xy)), atol=1e-4)


# ----------------------------------------------------------------------------- images


def _iuv(vertices, camera, render_chart):
    return render.render(vertices, None, camera, SIZE, "iuv", chart=render_chart)


def test_flip_iuv_matches_the_render_of_the_flipped_body(model, bm, bodies, render_chart):
    """Measured: I equal and |U, V| <= 1/255 on 100% of the union of foreground pixels."""
    poses, betas, vertices, _, cameras = bodies
    flipped_v, _ = _posed(model, flip.flip_pose(poses), betas)
    for k in range(len(poses)):
        iuv = _iuv(vertices[k], cameras[k], render_chart)
        expected = _iuv(flipped_v[k], flip.flip_camera(cameras[k]), render_chart)
        got = flip.flip_iuv(iuv, bm.chart_mirror)
        union = (got[..., 0] > 0) | (expected[..., 0] > 0)
        assert union.sum() > 500
        uv_err = np.abs(got[..., 1:].astype(int) - expected[..., 1:]).max(-1)
        ok = (got[..., 0] == expected[..., 0]) & (uv_err <= 3)
        assert ok[union].mean() >= 0.95, f"body {k}: {ok[union].mean():.4f}"
        seg = flip.flip_segmentation(iuv[..., 0], bm.chart_mirror)
        assert (seg == expected[..., 0])[union].mean() >= 0.95
        assert not got[~(got[..., 0] > 0)].any()  # background stays all zero


def test_flip_iuv_round_trip(bm, bodies, render_chart):
    """Measured: the U, V round trip is exact (0/255) on every foreground pixel."""
    _, _, vertices, _, cameras = bodies
    for k in range(len(vertices)):
        iuv = _iuv(vertices[k], cameras[k], render_chart)
        back = flip.flip_iuv(flip.flip_iuv(iuv, bm.chart_mirror), bm.chart_mirror)
        np.testing.assert_array_equal(back[..., 0], iuv[..., 0])
        fg = iuv[..., 0] > 0
        err = np.abs(back[..., 1:].astype(int) - iuv[..., 1:]).max(-1)[fg]
        assert (err <= 2).mean() >= 0.99, (err <= 2).mean()


def test_flip_iuv_background_with_stray_uv_becomes_zero(bm):
    iuv = np.zeros((4, 5, 3), np.uint8)
    iuv[..., 1:] = 77
    iuv[1, 0] = (3, 10, 20)
    out = flip.flip_iuv(iuv, bm.chart_mirror)
    assert out[1, 4, 0] == 4
    mask = np.ones((4, 5), bool)
    mask[1, 4] = False
    assert not out[mask].any()


# ----------------------------------------------------------------------------- examples


def _example(model, chart, render_chart, bodies, k=0):
    poses, betas, vertices, joints, cameras = bodies
    rng = np.random.default_rng(6)
    iuv = _iuv(vertices[k], cameras[k], render_chart)
    image = render.render(vertices[k], np.asarray(model.faces), cameras[k], SIZE, "rgb")
    layout = keypoints.get_layout("cocoplus19", body="default")
    kp = camera_lib.weak_perspective_project(
        np.asarray(keypoints.from_body(layout, vertices[k], joints[k])), cameras[k])
    num = int((iuv[..., 0] > 0).sum()) + 20  # every foreground pixel, plus padding
    xy, points, weight = densepose.sample_dense_keypoints(chart, iuv, num=num, rng=rng)
    return {
        "image": image, "iuv": iuv, "segmentation": iuv[..., 0].copy(),
        "keypoints": np.asarray(kp, np.float32),
        "keypoints_visibility": rng.integers(0, 3, 19).astype(np.uint8),
        "keypoints_weight": rng.uniform(size=19).astype(np.float32),
        "smpl_pose": poses[k], "smpl_betas": betas[k], "camera": cameras[k],
        "joints": joints[k], "vertices": vertices[k],
        "dense_xy": camera_lib.pixels_to_normalized(xy, SIZE),
        "dense_vertex_ids": points.vertex_ids, "dense_barycentric": points.barycentric,
        "dense_weight": weight, "record_id": "x",
    }


def test_flip_example_twice_is_the_identity(model, chart, render_chart, bm, bodies):
    example = _example(model, chart, render_chart, bodies)
    assert (example["dense_weight"] == 0).any()  # padding rows too
    once = flip.flip_example(example, bm)
    twice = flip.flip_example(once, bm)
    assert set(twice) == set(example)
    for key, value in example.items():
        if key == "record_id":
            assert twice[key] == value
            continue
        value = np.asarray(value)
        assert twice[key].shape == value.shape and twice[key].dtype == value.dtype, key
        if key == "iuv":
            np.testing.assert_array_equal(twice[key][..., 0], value[..., 0])
            fg = value[..., 0] > 0
            err = np.abs(twice[key][..., 1:].astype(int) - value[..., 1:]).max(-1)[fg]
            assert (err <= 2).mean() >= 0.99
        else:
            np.testing.assert_array_equal(twice[key], value, err_msg=key)
    # The first flip changed what it should and kept the rest.
    assert not np.array_equal(once["image"], example["image"])
    np.testing.assert_array_equal(once["image"], example["image"][:, ::-1])
    np.testing.assert_array_equal(once["smpl_betas"], example["smpl_betas"])
    np.testing.assert_array_equal(once["dense_barycentric"], example["dense_barycentric"])
    perm = list(keypoints.COCOPLUS19_FLIP_PERM)
    np.testing.assert_array_equal(once["keypoints_weight"], example["keypoints_weight"][perm])
    np.testing.assert_array_equal(once["keypoints"], example["keypoints"][perm] * [-1, 1])
    pad = example["dense_weight"] == 0
    np.testing.assert_array_equal(once["dense_vertex_ids"][pad], example["dense_vertex_ids"][pad])


def test_flipped_dense_keypoints_match_the_flipped_iuv(model, chart, render_chart, bm, bodies):
    """A dense keypoint flipped by ids is the surface point the flipped IUV shows there."""
    example = _example(model, chart, render_chart, bodies, k=1)
    once = flip.flip_example(example, bm)
    poses, betas, *_ = bodies
    flipped_v = _posed(model, flip.flip_pose(poses), betas)[0][1]
    np.testing.assert_array_equal(once["smpl_pose"], flip.flip_pose(poses)[1])
    valid = example["dense_weight"] > 0
    points = densepose.SurfacePoints(once["dense_vertex_ids"][valid], once["dense_barycentric"][valid], None)
    projected = np.asarray(densepose.project_surface_points(flipped_v, points, once["camera"]))
    # Within a pixel of the flipped pixel centres (sampling: exact surface points of the 8-bit IUV).
    err = np.abs(projected - once["dense_xy"][valid]) * SIZE / 2
    assert np.quantile(err, 0.95) < 1.0, np.quantile(err, 0.95)


def test_errors_name_the_argument(bm):
    cm = bm.chart_mirror
    cases = [
        (lambda: flip.flip_pose(np.zeros(71)), "pose"),
        (lambda: flip.flip_joints3d(np.zeros((23, 3))), "joints"),
        (lambda: flip.flip_camera(np.zeros(2)), "camera"),
        (lambda: flip.flip_keypoints(np.zeros((19, 3)), np.zeros(19), keypoints.COCOPLUS19_FLIP_PERM), "xy"),
        (lambda: flip.flip_keypoints(np.zeros((19, 2)), np.zeros(18), keypoints.COCOPLUS19_FLIP_PERM),
         "visibility"),
        (lambda: flip.flip_keypoints(np.zeros((19, 2)), np.zeros(19), (0, 1)), "flip_perm"),
        (lambda: flip.flip_iuv(np.zeros((4, 4, 3), np.float32), cm), "iuv"),
        (lambda: flip.flip_iuv(np.full((4, 4, 3), 30, np.uint8), cm), "iuv"),
        (lambda: flip.flip_segmentation(np.zeros((4, 4, 1), np.uint8), cm), "segmentation"),
        (lambda: flip.flip_surface_points(np.zeros((5, 2), np.int32), bm.vertex_mirror), "vertex_ids"),
        (lambda: flip.flip_surface_points(np.zeros((5, 3), np.int32), np.zeros((5, 2), np.int32)), "mirror"),
        (lambda: flip.flip_vertices(np.zeros((10, 3)), bm.vertex_mirror), "vertices"),
        (lambda: flip.flip_image(np.zeros(4)), "image"),
        (lambda: flip.flip_example({"keypoints_weight": np.zeros(18)}, bm), "keypoints_weight"),
        (lambda: flip.flip_example({"keypoints": np.zeros((19, 3))}, bm), "keypoints"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
