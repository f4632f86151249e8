"""Tests for dct_jax.synthetic and the synthetic TFDS builder.

References, each independent of the code under test: ``smpl.forward`` and
``camera.weak_perspective_project`` (keypoints, mesh), DensePose's phi
(``densepose.iuv_to_surface`` on the default chart) projected on the stored mesh
(dense keypoints), the stored IUV map, and front/back views whose nose
visibility is known.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from dct_jax import camera, densepose, keypoints, smpl, synthetic
from dct_jax.data import schema

SIZE = 128


@pytest.fixture(scope="module")
def body():
    return synthetic.load_body()


@pytest.fixture(scope="module")
def records(body):
    return dict(synthetic.generate("test", 4, seed=3, size=SIZE, body=body))


def test_pose_prior_respects_the_limits_and_stands_upright():
    lo, hi = synthetic.JOINT_LIMITS
    rng = np.random.default_rng(0)
    for name, base in synthetic.BASE_POSES.items():
        assert np.all((base[1:] >= lo[1:]) & (base[1:] <= hi[1:])), name
    for _ in range(200):
        pose = synthetic.sample_pose(rng).reshape(24, 3)
        assert np.all((pose[1:] >= lo[1:] - 1e-6) & (pose[1:] <= hi[1:] + 1e-6))
        up = synthetic._axis_angle_to_matrix(pose[0]) @ [0.0, 1.0, 0.0]
        assert up[1] < -0.95  # SMPL's up (+y) points up the image (-y): pitch/roll are small
    # Mirroring swaps sides and is an involution; symmetric base poses are their own mirror.
    pose = synthetic.sample_body_pose(rng)
    np.testing.assert_allclose(synthetic.mirror_pose(synthetic.mirror_pose(pose)), pose)
    standing = synthetic.BASE_POSES["standing"]
    np.testing.assert_allclose(synthetic.mirror_pose(standing), standing)
    np.testing.assert_allclose(lo[17], synthetic.mirror_pose(np.stack([lo, hi]))[:, 17].min(0))


def test_camera_frames_the_body():
    rng = np.random.default_rng(1)
    vertices = rng.uniform(-0.3, 0.3, (100, 3)) + [0.2, -0.5, 0.0]
    for _ in range(50):
        cam = synthetic.sample_camera(vertices, rng)
        xy = np.asarray(camera.weak_perspective_project(vertices, cam))
        extent = (xy.max(0) - xy.min(0)).max() / 2.0  # fraction of the crop
        assert 0.6 - 1e-4 <= extent <= 1.3 + 1e-4
        assert np.all(np.abs((xy.max(0) + xy.min(0)) / 2.0) <= 0.1 + 1e-4)


def test_keypoint_visibility_rule():
    depth = np.full((4, 4), np.inf, np.float32)
    depth[1, 1] = 1.0
    parts = np.zeros((4, 4), np.uint8)
    parts[1, 1] = 11  # right lower leg: adjacent to the right ankle (0) and knee (1)
    k = 19
    xy = np.full((k, 2), 1.5)
    z = np.full(k, 1.0)
    is_surface = np.zeros(k, bool)
    # 0: 10 cm behind an adjacent part -> visible; 1: 30 cm behind it -> occluded;
    # 2: right hip, 10 cm behind a non-adjacent part -> occluded; 3: 3 cm behind
    # -> visible (joint tolerance); 14: nose (surface), 3 cm behind -> occluded;
    # 15: 1 cm -> visible; 16: on the background -> visible; 17: outside -> 0.
    z[[0, 1, 2, 3, 14, 15]] = [1.10, 1.30, 1.10, 1.03, 1.03, 1.01]
    is_surface[[14, 15, 16]] = True
    xy[16] = [3.5, 3.5]
    xy[17] = [4.0, 1.0]
    vis = synthetic.keypoint_visibility(xy, z, is_surface, depth, parts)
    assert vis.dtype == np.uint8
    assert vis[[0, 1, 2, 3, 14, 15, 16, 17]].tolist() == [2, 1, 1, 2, 1, 2, 2, 0]


def test_records_validate_and_are_reproducible(body, records):
    assert list(records) == [f"synthetic/test/{i:06d}" for i in range(4)]
    for record in records.values():
        schema.validate_record(record)
        # Every kind of label, except motion-capture 3D keypoints (the SMPL labels say more).
        assert all(record[flag] for flag in schema.FLAG_GROUPS if flag != "has_keypoints3d")
        assert not record["has_keypoints3d"] and record["gender"] == ""
        assert schema.decode_image(record["image"]).shape == (SIZE, SIZE, 3)
        assert record["vertices"].shape == (body.model.num_vertices, 3)
        assert synthetic.NUM_DENSE_RANGE[0] <= record["dp_x"].size <= synthetic.NUM_DENSE_RANGE[1]
        np.testing.assert_array_equal(record["crop_box"], [0, 0, SIZE])
    (key, again), = synthetic.generate("test", 1, seed=3, size=SIZE, body=body, start=2)
    assert again["image"] == records[key]["image"]
    np.testing.assert_array_equal(again["dp_U"], records[key]["dp_U"])
    (_, other), = synthetic.generate("test", 1, seed=4, size=SIZE, body=body, start=2)
    assert other["image"] != records[key]["image"]


def test_mesh_and_keypoints_match_the_body_model(body, records):
    layout = keypoints.get_layout("cocoplus19", body="default")
    stack = lambda name: np.stack([r[name] for r in records.values()])  # noqa: E731
    out = smpl.forward(body.model, stack("smpl_pose"), stack("smpl_betas"))
    np.testing.assert_allclose(stack("vertices"), out.vertices, atol=1e-5)
    np.testing.assert_allclose(stack("joints"), out.joints, atol=1e-5)
    kp3d = keypoints.from_body(layout, out.vertices, out.joints)
    uv = camera.weak_perspective_project(kp3d, stack("camera"))
    expected = camera.normalized_to_pixels(np.asarray(uv), SIZE)
    np.testing.assert_allclose(stack("keypoints"), expected, atol=1e-3)
    inside = np.all((expected >= 0) & (expected < SIZE), axis=-1)
    np.testing.assert_array_equal(stack("keypoints_visibility") > 0, inside)


def test_dense_keypoints_lie_on_the_surface_they_name(records):
    chart = densepose.load_chart("default")
    for record in records.values():
        xy = schema.dense_to_image(record["dp_x"], record["dp_y"], record["bbox"])
        points = densepose.iuv_to_surface(chart, record["dp_I"], record["dp_U"], record["dp_V"])
        assert points.valid.all()
        projected = densepose.project_surface_points(record["vertices"], points, record["camera"])
        np.testing.assert_allclose(camera.normalized_to_pixels(np.asarray(projected), SIZE), xy,
                                   atol=0.02)
        iuv = schema.decode_iuv(record["iuv"])
        col, row = np.floor(xy).astype(int).T
        np.testing.assert_array_equal(iuv[row, col, 0], record["dp_I"])
        np.testing.assert_allclose(iuv[row, col, 1] / 255.0, record["dp_U"], atol=0.5 / 255 + 1e-6)
        seg = schema.decode_segmentation(record["segmentation"])
        np.testing.assert_array_equal(seg, iuv[..., 0])
        np.testing.assert_array_equal(synthetic.mask_bbox(seg > 0), record["bbox"])


def test_nose_is_visible_from_the_front_and_hidden_from_the_back(body):
    nose = keypoints.COCOPLUS19_NAMES.index("nose")
    pose = np.zeros(72, np.float32)
    pose[3 * 16 + 2], pose[3 * 17 + 2] = -1.2, 1.2  # arms down
    betas = np.zeros(10, np.float32)
    visibility = {}
    for view, global_rotation in (("front", (np.pi, 0, 0)), ("back", (0, 0, np.pi))):
        pose[:3] = global_rotation
        out = smpl.forward(body.model, pose, betas)
        record = synthetic.render_example(body, pose, betas, out.vertices, out.joints,
                                          np.random.default_rng(0), size=SIZE, record_id=view)
        visibility[view] = record["keypoints_visibility"]
    assert visibility["front"][nose] == schema.VISIBILITY_VISIBLE
    assert visibility["back"][nose] == schema.VISIBILITY_OCCLUDED
    limbs = [keypoints.COCOPLUS19_NAMES.index(n) for n in ("left_ankle", "right_knee", "left_wrist")]
    assert np.all(visibility["back"][limbs] == schema.VISIBILITY_VISIBLE)


def test_builder_writes_array_record_readable_without_tensorflow(tmp_path):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from datasets.synthetic import synthetic_dataset_builder  # noqa: PLC0415

    builder = synthetic_dataset_builder.Builder(
        data_dir=str(tmp_path), split_sizes={"train": 6, "test": 2}, image_size=SIZE)
    builder.download_and_prepare()
    assert os.path.isdir(tmp_path / "synthetic" / "1.0.0")
    sources = builder.as_data_source()
    assert {s: len(src) for s, src in sources.items()} == {"train": 6, "test": 2}
    for split, source in sources.items():
        ids = set()
        for i in range(len(source)):
            record = source[i]
            schema.validate_record(record)
            for field in schema.FIELDS:  # the schema's shapes, variable dims as written
                if field.dtype not in (schema.TEXT, schema.BYTES):
                    shape = np.shape(record[field.name])  # bool scalars come back as bool
                    assert len(shape) == len(field.shape), field.name
                    assert all(d is None or d == n for d, n in zip(field.shape, shape)), field.name
            assert schema.decode_image(record["image"]).shape == (SIZE, SIZE, 3)
            assert bool(record["has_mesh"]) == (split == "test")
            ids.add(record["record_id"].decode())
        assert ids == {f"synthetic/{split}/{i:06d}" for i in range(len(source))}
    by_dir = tfds.builder_from_directory(str(tmp_path / "synthetic" / "1.0.0"))
    by_name = tfds.data_source("synthetic", data_dir=str(tmp_path), split="test")
    first = by_dir.as_data_source(split="test")[0]
    assert first["record_id"] == by_name[0]["record_id"]
    assert "tensorflow" not in sys.modules


def test_parallel_generation_gives_the_same_records(body):
    serial = list(synthetic.generate("val", 10, size=32, body=body, chunk=2))
    parallel = list(synthetic.generate("val", 10, size=32, body=body, chunk=2, workers=2))
    assert [rid for rid, _ in parallel] == [rid for rid, _ in serial]
    for (_, a), (_, b) in zip(serial, parallel):
        for key in a:
            if isinstance(a[key], np.ndarray):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            else:
                assert a[key] == b[key], key
