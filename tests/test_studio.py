"""Tests for dct_jax.studio (the Human3.6M stand-in), its TFDS builder, and the
``synthetic`` hooks it uses.

References, each independent of the code under test: ``smpl.forward`` and
``keypoints.from_body`` (3D keypoints, mesh), rotation matrices written out here
(the camera's view of an upright subject), ``synthetic``'s own samplers (the pose
spread of the in-the-wild prior, ``random_background``'s clutter), and the
documented per-example loop of ``synthetic.generate`` (its records are unchanged
by the studio hooks; checked byte for byte against the code before them by hand).
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from dct_jax import keypoints, smpl, studio, synthetic
from dct_jax.data import schema

SIZE = 64
SIZES = {"train": 8, "test": 4}
ID = re.compile(r"studio/(train|test)/S([1-7])/cam([1-4])/(\d{6})")


@pytest.fixture(scope="module")
def body():
    return synthetic.load_body()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from datasets.studio import studio_dataset_builder  # noqa: PLC0415

    builder = studio_dataset_builder.Builder(data_dir=str(tmp_path_factory.mktemp("tfds")),
                                             split_sizes=SIZES, image_size=SIZE)
    builder.download_and_prepare()
    sources = builder.as_data_source()
    return {split: [source[i] for i in range(len(source))] for split, source in sources.items()}


def _samples(split: str, num: int) -> list[studio.Example]:
    return [studio.sample_example(studio.example_rng(0, split, i), split) for i in range(num)]


def _rx(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _off_row_fraction(image: np.ndarray, mask: np.ndarray, tolerance: int = 16) -> float:
    """Fraction of ``mask``'s pixels more than ``tolerance`` from their row's median colour.

    A plain wall-and-floor backdrop (one colour a row) scores ~0 under sensor noise
    and JPEG; objects, oblique gradients or colour noise do not.
    """
    off = total = 0
    for row, keep in zip(image.astype(np.int64), mask):
        pixels = row[keep]
        if len(pixels) >= 4:
            off += int(np.any(np.abs(pixels - np.median(pixels, axis=0)) > tolerance, axis=-1).sum())
            total += len(pixels)
    return off / total


def _background_mask(record) -> np.ndarray:
    """Pixels off the body (part 0), shrunk by 2 px away from its blurred, JPEG-ringing edge."""
    free = (schema.decode_segmentation(record["segmentation"]) == 0).astype(np.uint8)
    return cv2.erode(free, np.ones((5, 5), np.uint8)) > 0


def test_subjects_cameras_and_actions_are_fixed():
    assert set(studio.SUBJECTS) == set(studio.TRAIN_SUBJECTS) | set(studio.TEST_SUBJECTS) == set(range(1, 8))
    assert not set(studio.TRAIN_SUBJECTS) & set(studio.TEST_SUBJECTS)
    assert studio.subjects_of("train") == studio.TRAIN_SUBJECTS
    assert studio.subjects_of("test") == studio.subjects_of("val") == studio.TEST_SUBJECTS
    betas = np.stack([s.betas for s in studio.SUBJECTS.values()])
    assert betas.shape == (7, schema.NUM_BETAS) and betas.dtype == np.float32
    assert np.all(np.abs(betas) <= 2.5) and len(np.unique(betas, axis=0)) == 7
    # Drawn once, from the documented seed, in subject order.
    rng = np.random.default_rng(studio.SUBJECT_SEED)
    np.testing.assert_array_equal(betas, [synthetic.sample_betas(rng) for _ in range(7)])
    assert [round(np.degrees(c.yaw)) for c in studio.CAMERAS] == [45, 135, 225, 315]
    assert all(5 <= np.degrees(c.pitch) <= 15 for c in studio.CAMERAS)
    lo, hi = synthetic.JOINT_LIMITS
    for action in studio.ACTIONS.values():
        for key in (action.start, action.end, studio.action_pose(action, 0.5, True)):
            assert np.all((key[1:] >= lo[1:]) & (key[1:] <= hi[1:])), action.name


def test_sampled_examples_stay_in_the_studio():
    lo, hi = synthetic.JOINT_LIMITS
    for split, own, other in (("train", studio.TRAIN_SUBJECTS, studio.TEST_SUBJECTS),
                              ("test", studio.TEST_SUBJECTS, studio.TRAIN_SUBJECTS)):
        examples = _samples(split, 150)
        assert {e.subject for e in examples} == set(own)
        assert {e.camera for e in examples} == {1, 2, 3, 4}
        for e in examples:
            # Betas exactly the subject's, and no other subject's.
            matches = [n for n, s in studio.SUBJECTS.items() if np.array_equal(e.betas, s.betas)]
            assert matches == [e.subject] and e.subject not in other
            cam = studio.CAMERAS[e.camera - 1]
            assert abs(e.scale / cam.scale - 1.0) <= studio.SCALE_JITTER + 1e-9
            assert np.all(np.abs(e.shift) <= studio.SHIFT_RANGE)
            # The camera's view of an upright subject: R = Rx(pitch) Ry(psi) Rx(pi), so undoing
            # the pitch and the HMR flip leaves a pure yaw psi = heading - camera yaw.
            rotation = cv2.Rodrigues(e.pose[:3].astype(np.float64))[0]
            yaw_only = _rx(-cam.pitch) @ rotation @ _rx(np.pi).T
            psi = np.arctan2(yaw_only[0, 2], yaw_only[0, 0])
            np.testing.assert_allclose(yaw_only, [[np.cos(psi), 0, np.sin(psi)], [0, 1, 0],
                                                  [-np.sin(psi), 0, np.cos(psi)]], atol=1e-5)
            heading = np.angle(np.exp(1j * (psi + cam.yaw)))
            assert abs(heading) <= studio.HEADING_RANGE + 1e-5
            np.testing.assert_allclose(heading, e.heading, atol=1e-5)
            # The body pose is the action's pose at its phase, moved by at most the jitter.
            body_pose = e.pose.reshape(24, 3)[1:]
            key = studio.action_pose(studio.ACTIONS[e.action], e.phase, e.mirrored)[1:]
            assert np.all(np.abs(body_pose - key) <= studio.JITTER_FRACTION * (hi - lo)[1:] + 1e-5)
            assert np.all((body_pose >= lo[1:] - 1e-6) & (body_pose <= hi[1:] + 1e-6))


def test_pose_distribution_is_narrower_than_in_the_wild():
    rng = np.random.default_rng(0)
    wild = np.stack([synthetic.sample_body_pose(rng)[1:] for _ in range(400)])
    lab = np.stack([e.pose.reshape(24, 3)[1:] for e in _samples("train", 400)])
    ratio = lab.std(axis=0) / wild.std(axis=0)  # (23, 3), per joint axis
    # Narrower on almost every axis (a quarter of the spread on most); the elbows' bend
    # spans more (hands to the face when phoning or eating).
    assert np.mean(ratio < 1.0) >= 0.9 and np.median(ratio) < 0.4
    assert lab.var(axis=0).sum() < 0.8 * wild.var(axis=0).sum()


def test_backgrounds_are_plain_walls_and_floors():
    full = np.ones((96, 96), bool)
    for cam in studio.CAMERAS:
        image = studio.background(cam, 96)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert _off_row_fraction(image, full) == 0.0
        assert len(np.unique(image.reshape(-1, 3), axis=0)) <= 96  # a colour per row at most
        assert len(np.unique(image[:, 0], axis=0)) >= 3  # wall, skirting and floor
    # The check fails on in-the-wild backgrounds (shapes, oblique gradients, colour noise).
    cluttered = [_off_row_fraction(synthetic.random_background(np.random.default_rng(s), 96), full)
                 for s in range(20)]
    assert sum(f > 0.02 for f in cluttered) >= 18


def test_built_records_carry_studio_labels(body, built):
    from datasets.studio import studio_dataset_builder  # noqa: PLC0415
    from datasets.synthetic import synthetic_dataset_builder  # noqa: PLC0415

    assert studio_dataset_builder.Builder.DEFAULT_SPLIT_SIZES == synthetic_dataset_builder.DEFAULT_SPLIT_SIZES
    assert {split: len(records) for split, records in built.items()} == SIZES
    layout = keypoints.get_layout(schema.KEYPOINT_LAYOUT, body="default")
    for split, records in built.items():
        indices = set()
        for record in records:
            schema.validate_record(record)
            record_id = record["record_id"].decode()
            match = ID.fullmatch(record_id)
            assert match and match[1] == split and record["image_id"].decode() == record_id
            subject, cam = int(match[2]), studio.CAMERAS[int(match[3]) - 1]
            indices.add(int(match[4]))
            assert subject in studio.subjects_of(split)
            np.testing.assert_array_equal(record["smpl_betas"], studio.SUBJECTS[subject].betas)
            assert abs(record["camera"][0] / cam.scale - 1.0) <= studio.SCALE_JITTER + 1e-6
            for flag in ("has_smpl", "has_keypoints", "has_keypoints3d", "has_iuv", "has_segmentation",
                         "has_camera"):
                assert record[flag], flag
            assert not record["has_dense"] and record["dp_x"].size == 0 and record["dp_I"].size == 0
            assert bool(record["has_mesh"]) == (split == "test")
            assert record["body_model"].decode() == "default"
            assert schema.decode_image(record["image"]).shape == (SIZE, SIZE, 3)
            out = smpl.forward(body.model, record["smpl_pose"], record["smpl_betas"])
            np.testing.assert_allclose(record["keypoints3d"],
                                       keypoints.from_body(layout, out.vertices, out.joints), atol=1e-5)
            assert np.all(record["keypoints3d_visibility"] == schema.VISIBILITY_VISIBLE)
            if record["has_mesh"]:
                np.testing.assert_allclose(record["vertices"], out.vertices, atol=1e-5)
            assert _off_row_fraction(schema.decode_image(record["image"]), _background_mask(record)) < 0.02
        assert indices == set(range(SIZES[split]))


def test_in_the_wild_records_fail_the_plain_background_check(body):
    fractions = [_off_row_fraction(schema.decode_image(r["image"]), _background_mask(r))
                 for _, r in synthetic.generate("train", 4, size=SIZE, body=body, chunk=4)]
    assert min(fractions) > 0.1


def test_records_are_reproducible_and_apart_from_synthetic(body, built):
    by_id = {r["record_id"].decode(): r for r in built["test"]}
    (record_id, again), = studio.generate("test", 1, size=SIZE, body=body, start=2, with_mesh=True)
    assert again["image"] == by_id[record_id]["image"]
    np.testing.assert_array_equal(again["smpl_pose"], by_id[record_id]["smpl_pose"])
    assert studio.example_rng(0, "test", 2).random() != synthetic.example_rng(0, "test", 2).random()


def _differing_fields(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    same = {name: (np.asarray(a[name]).dtype == np.asarray(b[name]).dtype
                   and np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes())
            if isinstance(a[name], np.ndarray) else a[name] == b[name] for name in a}
    return {name for name, equal in same.items() if not equal}


def test_render_example_arguments_stand_in_for_their_draws(body):
    pose = synthetic.sample_pose(np.random.default_rng(1))
    betas = synthetic.sample_betas(np.random.default_rng(2))
    out = smpl.forward(body.model, pose, betas)
    vertices, joints = np.asarray(out.vertices), np.asarray(out.joints)
    render = lambda rng, **kw: synthetic.render_example(  # noqa: E731
        body, pose, betas, vertices, joints, rng, size=32, record_id="r", **kw)
    default = render(np.random.default_rng(7))
    rng = np.random.default_rng(7)  # the documented draw order: camera, appearance, background
    given = render(rng, camera=synthetic.sample_camera(vertices, rng), appearance=synthetic.sample_appearance(rng),
                   background=synthetic.random_background(rng, 32))
    assert _differing_fields(default, given) == set()
    studio_like = render(np.random.default_rng(7), dense=False, keypoints3d=True)
    assert _differing_fields(default, studio_like) == {
        *schema.DENSE_FIELDS, "has_dense", "keypoints3d", "keypoints3d_visibility", "has_keypoints3d"}
    with pytest.raises(ValueError, match="background must be"):
        render(np.random.default_rng(7), background=np.zeros((16, 16, 3), np.uint8))


def test_synthetic_generate_is_its_documented_loop(body):
    # synthetic.generate now runs through generate_examples(SYNTHETIC, ...): the same records as
    # the per-example loop it always was (chunk 1, so posing sees the same shapes).
    for i, (record_id, record) in enumerate(synthetic.generate("val", 3, seed=5, size=32, body=body, chunk=1)):
        rng = synthetic.example_rng(5, "val", i)
        pose = synthetic.sample_pose(rng)
        betas = synthetic.sample_betas(rng)
        vertices, joints = synthetic._posed(body.model, pose[None], betas[None])  # noqa: SLF001
        expected = synthetic.render_example(body, pose, betas, np.asarray(vertices)[0], np.asarray(joints)[0], rng,
                                            size=32, record_id=f"synthetic/val/{i:06d}")
        assert record_id == expected["record_id"]
        assert _differing_fields(record, expected) == set()
