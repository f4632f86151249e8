"""Tests for the 3DPW builder (datasets/pw3d) on a tiny fake 3DPW folder.

The fake folder has the release's layout and formats: ``sequenceFiles/{train,
validation,test}/<sequence>.pkl`` (Python 2 style pickles, ``encoding="latin1"``,
with the real field names, shapes and dtypes) and ``imageFiles/<sequence>/
image_NNNNN.jpg`` (JPEGs written by OpenCV, one of them corrupt). Bodies are
posed in a world frame and seen by a moving camera (``cam_poses`` world ->
camera, ``cam_intrinsics``); ``jointPositions`` are the world joints of each
actor's gendered model, as in the release. Random SMPL-sized models from
``smpl_fixtures`` stand in for the licensed male and female SMPL files.
"""

from __future__ import annotations

import os
import shutil
import sys

import cv2
import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from smpl_fixtures import random_smpl_arrays
from test_up3d import write_body_pickle

import datasets
from datasets import __main__ as cli
from datasets.pw3d import pw3d_dataset_builder as pw3d
from dct_jax import smpl
from dct_jax.data import pipeline, schema

IMAGE_SHAPE = (48, 64)  # (H, W)
# 12 px per metre at 20 m (a far camera keeps the weak-perspective approximation within a fraction of a pixel).
INTRINSICS = np.array([[240.0, 0.0, 32.0], [0.0, 242.0, 24.0], [0.0, 0.0, 1.0]])
DEPTH = 20.0
# 3DPW's poses2d order (OpenPose COCO-18; mmhuman3d's PW3D_KEYPOINTS), written out independently of the builder.
OPENPOSE = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
            "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
            "right_eye", "left_eye", "right_ear", "left_ear")
# A stick figure (x, y) in pixels, one point per OpenPose keypoint.
FIGURE = np.array([[32, 8], [32, 13], [27, 13], [25, 19], [24, 25], [37, 13], [39, 19], [40, 25], [29, 26],
                   [29, 34], [29, 42], [35, 26], [35, 34], [35, 42], [31, 7], [33, 7], [30, 8], [34, 8]], float)
CONFIDENCE = np.full(18, 0.9)
CONFIDENCE[OPENPOSE.index("left_ear")] = 0.2    # below the threshold: unlabelled
CONFIDENCE[OPENPOSE.index("right_ear")] = 0.31  # just above: labelled
CORRUPT = ("courtyard_fake_00", 4)
OUTSIDE = ("courtyard_fake_00", 3, 1)  # right ankle below the image
# split -> {record id: ...} of the records a build keeps.
KEPT = {
    "train": ["courtyard_fake_00/image_00000/actor0", "courtyard_fake_00/image_00000/actor1",
              "courtyard_fake_00/image_00001/actor1", "courtyard_fake_00/image_00002/actor0",
              "courtyard_fake_00/image_00003/actor1"],
    "validation": [f"downtown_fake_00/image_{i:05d}/actor0" for i in range(3)],
    "test": [f"flat_fake_00/image_{i:05d}/actor0" for i in range(2)],
}

_forward = jax.jit(smpl.forward)


# ----------------------------------------------------------------------------- fake 3DPW files


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``{"male": (path, SMPLModel), "female": ..., "neutral": ...}``: SMPL-sized random models."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for seed, gender in enumerate(("male", "female", "neutral"), 1):
        path = folder / f"SMPL_{gender.upper()}.npz"
        np.savez(path, **random_smpl_arrays(seed=seed))
        out[gender] = (str(path), smpl.load(str(path)))
    return out


def posed(model, pose, betas) -> tuple[np.ndarray, np.ndarray]:
    """``(V, 3)`` vertices and ``(24, 3)`` joints of ``smpl.forward`` (one jit signature for the whole file)."""
    out = _forward(model, np.asarray(pose, np.float32), np.asarray(betas[:10], np.float32))
    return np.asarray(out.vertices, np.float64), np.asarray(out.joints, np.float64)


def world_body(models, gender, pose, betas, trans) -> tuple[np.ndarray, np.ndarray]:
    """An actor's world-frame vertices and joints: its gendered model posed, plus ``trans``."""
    vertices, joints = posed(models["male" if gender == "m" else "female"][1], pose, betas)
    return vertices + trans, joints + trans


def _rx(angle: float) -> np.ndarray:
    return Rotation.from_rotvec([angle, 0.0, 0.0]).as_matrix()


def make_sequence(manual_dir, split, name, genders, betas_sizes, num_frames, rng, models, *, how="py2",
                  edit=None, corrupt_frames=()):
    """Writes ``sequenceFiles/<split>/<name>.pkl`` and its images; returns the pickled dict.

    Each actor's body faces the camera about DEPTH away: the camera rotation is
    random, the world global rotation is ``R^T Rx(pi) S`` (``S`` a small random
    rotation), so the camera-frame global rotation is ``Rx(pi) S``.
    """
    n, a = num_frames, len(genders)
    cam_poses = np.tile(np.eye(4), (n, 1, 1))
    poses, trans = np.zeros((a, n, 72)), np.zeros((a, n, 3))
    poses2d = np.zeros((a, n, 3, 18))
    for i in range(n):
        rotation = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
        cam_poses[i, :3, :3] = rotation
        cam_poses[i, :3, 3] = [*rng.uniform(-0.1, 0.1, 2), DEPTH]
        for k in range(a):
            small = Rotation.from_rotvec(rng.normal(0.0, 0.15, 3)).as_matrix()
            poses[k, i, :3] = Rotation.from_matrix(rotation.T @ _rx(np.pi) @ small).as_rotvec()
            poses[k, i, 3:] = rng.normal(0.0, 0.15, 69)
            trans[k, i] = rotation.T @ np.array([0.7 * (2 * k - 1) * (a > 1), 0.0, 0.0])
            poses2d[k, i, :2] = (FIGURE + [8.0 * (2 * k - 1) * (a > 1) + 0.5 * i + 0.25, 0.25]).T
            poses2d[k, i, 2] = CONFIDENCE
    betas = [rng.normal(0.0, 0.5, size) for size in betas_sizes]
    campose_valid = [np.ones(n, bool) for _ in range(a)]
    data = {"sequence": name, "genders": list(genders), "poses": list(poses), "trans": list(trans),
            "betas": betas, "poses2d": list(poses2d), "cam_poses": cam_poses, "cam_intrinsics": INTRINSICS.copy(),
            "campose_valid": campose_valid, "img_frame_ids": np.arange(0, 2 * n, 2),
            # fields the builder ignores
            "poses_60Hz": [np.repeat(p, 2, axis=0) for p in poses],
            "trans_60Hz": [np.repeat(t, 2, axis=0) for t in trans],
            "betas_clothed": betas, "texture_maps": [np.zeros((4, 4, 3), np.uint8) for _ in range(a)]}
    if edit is not None:
        edit(data)
    data["jointPositions"] = [  # world joints: SMPL(pose, betas) + trans, as the release's demo poses the model
        np.stack([world_body(models, gender, data["poses"][k][i], data["betas"][k], data["trans"][k][i])[1]
                  .reshape(72) for i in range(n)]) for k, gender in enumerate(data["genders"])]
    folder = manual_dir / "sequenceFiles" / split
    folder.mkdir(parents=True, exist_ok=True)
    write_body_pickle(folder / f"{name}.pkl", data, how)
    images = manual_dir / "imageFiles" / name
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = images / f"image_{i:05d}.jpg"
        if i in corrupt_frames:
            path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
        else:
            assert cv2.imwrite(str(path), rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8))
    return data


def truth_of(data) -> dict:
    """``{(sequence, frame, actor): what its record must hold}`` of a sequence's pickled data."""
    return {(data["sequence"], i, k): {
        "pose": np.asarray(data["poses"][k][i]), "betas": np.asarray(data["betas"][k][:10]),
        "trans": np.asarray(data["trans"][k][i]), "cam_pose": data["cam_poses"][i],
        "poses2d": np.asarray(data["poses2d"][k][i]), "gender": data["genders"][k]}
        for i in range(len(data["cam_poses"])) for k in range(len(data["genders"]))}


def _train_edits(data):
    data["campose_valid"][0][1] = False                    # frame 1, actor 0: camera pose not aligned
    data["poses2d"][1][2] = np.zeros((3, 18))              # frame 2, actor 1: no 2D pose
    data["poses2d"][0][3][2] = np.where(np.arange(18) < 5, 0.9, 0.1)  # frame 3, actor 0: 5 confident keypoints
    data["poses2d"][1][3][1, OPENPOSE.index("right_ankle")] = 55.0   # frame 3, actor 1: ankle below the image


@pytest.fixture(scope="module")
def fake_pw3d(tmp_path_factory, models):
    """``(manual_dir, {(sequence, frame, actor): truth})``."""
    manual_dir = tmp_path_factory.mktemp("manual")
    rng = np.random.default_rng(0)
    truth = {}
    for split, name, genders, betas, frames, how, edit, corrupt in (
            ("train", "courtyard_fake_00", ("m", "f"), (10, 300), 5, "py2", _train_edits, (CORRUPT[1],)),
            ("validation", "downtown_fake_00", ("f",), (16,), 3, "py3", None, ()),
            ("test", "flat_fake_00", ("m",), (10,), 2, "py2", None, ())):
        truth.update(truth_of(make_sequence(manual_dir, split, name, genders, betas, frames, rng, models,
                                            how=how, edit=edit, corrupt_frames=corrupt)))
    # Two unusable sequences in validation: inconsistent frame counts, and a pickle that would run code.
    make_sequence(manual_dir, "validation", "outdoors_bad_00", ("m",), (10,), 3, rng, models,
                  edit=lambda d: d.update(cam_poses=d["cam_poses"][:2]))
    (manual_dir / "sequenceFiles" / "validation" / "outdoors_evil_00.pkl").write_bytes(
        b"cos\nsystem\n(S'echo hacked'\ntR.")
    (manual_dir / "imageFiles" / "outdoors_evil_00").mkdir()
    return manual_dir, truth


def _build(manual_dir, data_dir, **kwargs):
    builder = datasets.builder_class("pw3d")(data_dir=str(data_dir), manual_dir=str(manual_dir), **kwargs)
    builder.download_and_prepare()
    return builder


@pytest.fixture(scope="module")
def built(fake_pw3d, tmp_path_factory):
    """The data_dir of a build without body models (parameters only)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    _build(fake_pw3d[0], data_dir)
    return str(data_dir)


@pytest.fixture(scope="module")
def built_with_models(fake_pw3d, models, tmp_path_factory):
    """The data_dir of a build with the male and female models."""
    data_dir = tmp_path_factory.mktemp("tfds_mesh")
    _build(fake_pw3d[0], data_dir, smpl_male_path=models["male"][0], smpl_female_path=models["female"][0])
    return str(data_dir)


def _copy(manual_dir, target):
    """A copy of the fake release (hard links: replace a file, never write into it)."""
    source = str(manual_dir)
    for folder, _, files in os.walk(source):
        os.makedirs(os.path.join(target, os.path.relpath(folder, source)), exist_ok=True)
        for file in files:
            os.link(os.path.join(folder, file), os.path.join(target, os.path.relpath(folder, source), file))
    return target


def _records(data_dir):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    builder = tfds.builder_from_directory(os.path.join(data_dir, "pw3d", "1.0.0"))
    out = {}
    for split, source in builder.as_data_source().items():
        records = [source[i] for i in range(len(source))]
        out[split] = {r["record_id"].decode(): r for r in records}
    return builder, out


def _truth(truth, record_id):
    name, image, actor = record_id.split("/")
    return truth[(name, int(image[len("image_"):]), int(actor[len("actor"):]))]


# ----------------------------------------------------------------------------- tests


def test_registered_as_a_folder_builder():
    assert "pw3d" in datasets.builder_names()
    assert datasets.builder_class("pw3d") is pw3d.Builder
    # OpenPose's neck (between the shoulders) is not LSP's neck; head_top has no OpenPose counterpart.
    mapped = {schema.KEYPOINT_NAMES[target] for target, _ in pw3d.TO_COCOPLUS19}
    assert set(schema.KEYPOINT_NAMES) - mapped == {"neck", "head_top"}
    assert pw3d.OPENPOSE18_NAMES == OPENPOSE


def _minimal_sequence(num_frames: int = 2) -> dict:
    rotation = np.tile(np.eye(4), (num_frames, 1, 1))
    pose2d = np.concatenate([FIGURE.T, CONFIDENCE[None]])[None].repeat(num_frames, 0)
    return {"sequence": "s", "genders": ["f"], "poses": [np.zeros((num_frames, 72))], "betas": [np.zeros(10)],
            "trans": [np.zeros((num_frames, 3))], "poses2d": [pose2d], "campose_valid": [np.ones(num_frames, bool)],
            "cam_poses": rotation, "cam_intrinsics": INTRINSICS.copy(), "img_frame_ids": np.arange(num_frames)}


def test_inconsistent_annotations_are_rejected_with_the_reason():
    good = _minimal_sequence()
    sequence = pw3d.parse_sequence(good, "s")
    assert (sequence.num_actors, sequence.num_frames, sequence.genders) == (1, 2, ("female",))
    for change, reason in (({"genders": ["x"]}, r"genders\[0\] is 'x', expected 'm' or 'f'"),
                           ({"betas": [np.zeros(8)]}, r"betas\[0\] has 8 values, expected at least 10"),
                           ({"trans": []}, r"'trans' has 0 entries but 'poses' 1 actors"),
                           ({"poses2d": [np.zeros((2, 3, 17))]}, r"poses2d\[0\] has shape \(2, 3, 17\)"),
                           ({"img_frame_ids": np.arange(3)}, "'img_frame_ids' has 3 entries"),
                           ({"cam_intrinsics": np.zeros((3, 3))}, "no positive focal lengths"),
                           ({"poses": [[[0.0] * 72, [0.0]]]}, r"poses\[0\] is not numeric")):
        with pytest.raises(pw3d.Skip, match=reason):
            pw3d.parse_sequence(dict(good, **change), "s")
    with pytest.raises(pw3d.Skip, match="no 'cam_poses'"):
        pw3d.parse_sequence({k: v for k, v in good.items() if k != "cam_poses"}, "s")
    # Frame-level problems skip one record, not the sequence.
    image = cv2.imencode(".jpg", np.zeros((*IMAGE_SHAPE, 3), np.uint8))[1].tobytes()
    record, _ = pw3d.convert_record(sequence, 0, 0, image, IMAGE_SHAPE)
    assert record["record_id"] == "s/image_00000/actor0"
    broken = dict(good, poses=[np.array([np.zeros(72), np.full(72, np.nan)])],
                  cam_poses=np.array([np.diag([1.0, 1.0, 2.0, 1.0]), np.eye(4)]))
    broken = pw3d.parse_sequence(broken, "s")
    with pytest.raises(pw3d.Skip, match=r"cam_poses\[0\] is not a rigid motion"):
        pw3d.convert_record(broken, 0, 0, image, IMAGE_SHAPE)
    with pytest.raises(pw3d.Skip, match=r"poses\[0\]\[1\] has NaN or inf"):
        pw3d.convert_record(broken, 1, 0, image, IMAGE_SHAPE)


def test_records_keep_the_parameters_with_the_rotation_in_the_camera_frame(built, fake_pw3d):
    _, truth = fake_pw3d
    builder, records = _records(built)
    assert {split: sorted(r) for split, r in records.items()} == KEPT
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        split: len(ids) for split, ids in KEPT.items()}
    for by_id in records.values():
        for record_id, record in by_id.items():
            schema.validate_record(record)
            expected = _truth(truth, record_id)
            name, image, _ = record_id.split("/")
            assert record["image_id"].decode() == f"{name}/{image}"
            with open(os.path.join(fake_pw3d[0], "imageFiles", name, image + ".jpg"), "rb") as stream:
                assert record["image"] == stream.read()  # the JPEG as stored
            assert tuple(record["image_shape"]) == IMAGE_SHAPE
            assert record["gender"].decode() == {"m": "male", "f": "female"}[expected["gender"]]
            assert record["body_model"].decode() == "smpl"
            # Body pose unchanged; global rotation = camera rotation @ world global rotation (SciPy).
            np.testing.assert_array_equal(record["smpl_pose"][3:], expected["pose"][3:].astype(np.float32))
            rotation = expected["cam_pose"][:3, :3] @ Rotation.from_rotvec(expected["pose"][:3]).as_matrix()
            np.testing.assert_allclose(Rotation.from_rotvec(record["smpl_pose"][:3]).as_matrix(), rotation, atol=1e-5)
            np.testing.assert_array_equal(record["smpl_betas"], expected["betas"].astype(np.float32))
            assert record["has_smpl"] and record["has_keypoints"]
            assert not (record["has_camera"] or record["has_mesh"] or record["has_keypoints3d"] or record["has_dense"])
            assert record["vertices"].shape == (0, 3) and np.all(record["camera"] == 0)


def test_keypoints_go_where_their_names_say_and_the_crop_holds_them(built, fake_pw3d):
    _, truth = fake_pw3d
    _, records = _records(built)
    for by_id in records.values():
        for record_id, record in by_id.items():
            pose2d = _truth(truth, record_id)["poses2d"]
            xy, confidence = pose2d[:2].T + 0.5, pose2d[2]  # OpenPose's pixel centres are integers, the schema's +0.5
            inside = (xy >= 0).all(axis=1) & (xy[:, 0] <= IMAGE_SHAPE[1]) & (xy[:, 1] <= IMAGE_SHAPE[0])
            labelled = (confidence > 0.3) & inside
            for name in schema.KEYPOINT_NAMES:
                index = schema.KEYPOINT_NAMES.index(name)
                if name in ("neck", "head_top"):  # no OpenPose counterpart
                    assert record["keypoints_visibility"][index] == 0, (record_id, name)
                    continue
                source = OPENPOSE.index(name)
                if labelled[source]:
                    assert record["keypoints_visibility"][index] == 2, (record_id, name)
                    np.testing.assert_allclose(record["keypoints"][index], xy[source], atol=1e-5)
                else:
                    assert record["keypoints_visibility"][index] == 0, (record_id, name)
            # One joint by hand: the stick figure's left wrist, (40, 25) + shift in OpenPose's pixels.
            shift = pose2d[:2, 0] - FIGURE[0]  # the per-image shift of the stick figure
            np.testing.assert_allclose(record["keypoints"][schema.KEYPOINT_NAMES.index("left_wrist")],
                                       [40.5 + shift[0], 25.5 + shift[1]], atol=1e-5)
            assert record["keypoints_visibility"][schema.KEYPOINT_NAMES.index("left_ear")] == 0  # confidence 0.2
            assert record["keypoints_visibility"][schema.KEYPOINT_NAMES.index("right_ear")] == 2  # confidence 0.31
            # bbox: the labelled keypoints' box; crop: 1.2 x its longer side, same centre; it holds them.
            low, high = xy[labelled].min(axis=0), xy[labelled].max(axis=0)
            np.testing.assert_allclose(record["bbox"], [*low, *(high - low)], atol=1e-4)
            x, y, w, h = record["bbox"]
            x0, y0, side = record["crop_box"]
            assert side == pytest.approx(1.2 * max(w, h), rel=1e-6)
            assert (x0 + side / 2, y0 + side / 2) == pytest.approx((x + w / 2, y + h / 2), rel=1e-5)
            visible = record["keypoints"][record["keypoints_visibility"] > 0]
            assert np.all(visible >= [x0, y0]) and np.all(visible <= [x0 + side, y0 + side])
    outside = "/".join([OUTSIDE[0], f"image_{OUTSIDE[1]:05d}", f"actor{OUTSIDE[2]}"])
    assert records["train"][outside]["keypoints_visibility"][schema.KEYPOINT_NAMES.index("right_ankle")] == 0


def test_metadata_counts_invalid_frames_and_names_every_skip(fake_pw3d, tmp_path, caplog):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    with caplog.at_level("WARNING"):
        _build(fake_pw3d[0], tmp_path)
    metadata = tfds.builder_from_directory(str(tmp_path / "pw3d" / "1.0.0")).info.metadata
    # 3DPW's own exclusions are counted, not skipped.
    assert metadata["invalid_frames"] == {"train": 3, "validation": 0, "test": 0}
    assert metadata["invalid_frames_by_reason"]["train"] == {"campose_invalid": 1, "no_2d_pose": 1,
                                                            "few_keypoints": 1}
    assert metadata["listed"] == {"train": 10, "validation": 3, "test": 2}  # frames x actors of readable sequences
    # The corrupt image (both of its actors) and the two unusable sequences are skipped and named.
    assert metadata["num_skipped"] == {"train": 2, "validation": 2, "test": 0}
    name, frame = CORRUPT
    assert [s["record"] for s in metadata["skipped"]["train"]] == [
        f"{name}/image_{frame:05d}/actor0", f"{name}/image_{frame:05d}/actor1"]
    assert all("image_00004.jpg is not a readable image" in s["reason"] for s in metadata["skipped"]["train"])
    assert metadata["skipped"]["train"][0]["file"] == os.path.join("imageFiles", name, f"image_{frame:05d}.jpg")
    bad, evil = sorted(metadata["skipped"]["validation"], key=lambda s: s["record"])
    assert bad["record"] == "outdoors_bad_00/*" and bad["file"] == os.path.join(
        "sequenceFiles", "validation", "outdoors_bad_00.pkl")
    assert "cam_poses has shape (2, 4, 4), expected (3, 4, 4)" in bad["reason"]
    assert evil["record"] == "outdoors_evil_00/*" and "os.system" in evil["reason"]  # refused, not run
    assert metadata["sequences"]["validation"] == ["downtown_fake_00"]
    assert metadata["mesh_model"] == {"male": None, "female": None}
    assert metadata["meshes"]["train"] == {"male": 0, "female": 0, "none": 5}
    log = caplog.text
    assert f"pw3d train: skipped {name}/image_{frame:05d}/actor0: image_{frame:05d}.jpg is not a readable image" in log
    assert "pw3d validation: skipped outdoors_bad_00.pkl" in log


def test_missing_files_fail_at_once_saying_what_to_download(fake_pw3d, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        _build(empty, tmp_path / "tfds")
    message = str(info.value)
    for expected in ([f"no folder {empty / 'sequenceFiles' / s}" for s in ("train", "validation", "test")]
                     + [f"no folder {empty / 'imageFiles'}", "https://virtualhumans.mpi-inf.mpg.de/3DPW/",
                        "license.html", "sequenceFiles.zip", "imageFiles.zip", "M/sequenceFiles/train/<sequence>.pkl",
                        "M/imageFiles/<sequence>/image_00000.jpg", "--manual_dir=M", "--smpl_male_path"]):
        assert expected in message, (expected, message)
    assert not (tmp_path / "tfds" / "pw3d" / "1.0.0").exists()

    # A copy of the fake release without one image folder, then without one image: an error for the
    # splits asked for.
    partial = _copy(fake_pw3d[0], tmp_path / "partial")
    os.rename(partial / "imageFiles" / "flat_fake_00", partial / "flat")
    with pytest.raises(FileNotFoundError, match=r"no image folder in .*imageFiles for 1 sequence\(s\): flat_fake_00\."):
        _build(partial, tmp_path / "tfds", splits=("train", "test"))
    os.rename(partial / "flat", partial / "imageFiles" / "flat_fake_00")
    (partial / "imageFiles" / "downtown_fake_00" / "image_00001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) of the sequences' frames are not in .*: "
                                                r"imageFiles/downtown_fake_00/image_00001.jpg"):
        _build(partial, tmp_path / "tfds", splits=("validation",))
    # Only the requested splits' folders are read.
    assert sorted(pw3d.find_splits(partial, ("test",))) == ["test"]
    (partial / "sequenceFiles" / "test" / "flat_fake_00.pkl").unlink()
    assert pw3d.find_splits(partial)["test"].missing == (f"no sequence pickles in {partial / 'sequenceFiles' / 'test'}",)

    # The CLI reports it without a traceback (exit code 2).
    assert cli.main(["build", "pw3d", f"--manual_dir={empty}", f"--data_dir={tmp_path / 'tfds'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m datasets: error: 3DPW is not complete in --manual_dir") and "imageFiles.zip" in err


def test_without_the_validation_folder_the_other_splits_are_built(fake_pw3d, tmp_path, caplog, capsys):
    partial = _copy(fake_pw3d[0], tmp_path / "partial")
    shutil.rmtree(partial / "sequenceFiles" / "validation")
    with caplog.at_level("WARNING"):
        _build(partial, tmp_path / "tfds")
    builder, records = _records(str(tmp_path / "tfds"))
    assert {split: sorted(r) for split, r in records.items()} == {"train": KEPT["train"], "test": KEPT["test"]}
    lack = f"no folder {partial / 'sequenceFiles' / 'validation'}"
    assert (f"pw3d: building train, test; not building validation, which lacks: {lack} (pass splits= / --splits= "
            "to require a split)") in caplog.messages
    metadata = builder.info.metadata
    assert metadata["missing_splits"] == {"validation": [lack]}
    assert metadata["sequences"] == {"train": ["courtyard_fake_00"], "test": ["flat_fake_00"]}
    assert metadata["listed"] == {"train": 10, "test": 2} and metadata["num_skipped"] == {"train": 2, "test": 0}
    # Only what evaluation needs: --splits=test; a split asked for must be there.
    assert cli.main(["build", "pw3d", f"--manual_dir={partial}", f"--data_dir={tmp_path / 'test_only'}",
                     "--splits=test"]) == 0
    out = capsys.readouterr().out
    assert "pw3d 1.0.0: test 2 examples" in out and "not built" not in out
    assert cli.main(["build", "pw3d", f"--manual_dir={partial}", f"--data_dir={tmp_path / 'cli'}",
                     "--splits=validation,test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m datasets: error: 3DPW is not complete in --manual_dir {partial}: {lack}.")
    assert not (tmp_path / "cli" / "pw3d" / "1.0.0").exists()


def test_a_split_whose_every_image_is_unreadable_is_reported_and_the_others_are_written(
        fake_pw3d, tmp_path, caplog):
    manual = _copy(fake_pw3d[0], tmp_path / "manual")
    for frame in range(2):  # every frame of the test split's one sequence
        path = manual / "imageFiles" / "flat_fake_00" / f"image_{frame:05d}.jpg"
        path.unlink()
        path.write_bytes(b"not a JPEG")
    with caplog.at_level("WARNING"):
        _build(manual, tmp_path / "tfds")
    builder, records = _records(str(tmp_path / "tfds"))
    assert {split: sorted(r) for split, r in records.items()} == {
        "train": KEPT["train"], "validation": KEPT["validation"]}
    metadata = builder.info.metadata
    first = "image_00000.jpg is not a readable image (OpenCV cannot decode its 10 bytes)"
    assert metadata["empty_splits"] == {"test": {"listed": 2, "read": 2, "skipped": 2, "unit": "records",
                                                 "reasons": [{"reason": first, "count": 2}]}}
    assert [s["record"] for s in metadata["skipped"]["test"]] == [f"flat_fake_00/image_0000{i}/actor0" for i in (0, 1)]
    assert metadata["num_skipped"]["test"] == 2 and metadata["invalid_frames"]["test"] == 0
    assert (f'pw3d: split test is empty and was not written: all 2 records read were skipped (2 like "{first}")'
            in caplog.messages)


def test_gendered_models_fill_the_meshes_and_fit_the_camera(built_with_models, fake_pw3d, models):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    _, truth = fake_pw3d
    _, records = _records(built_with_models)
    for by_id in records.values():
        for record_id, record in by_id.items():
            schema.validate_record(record)
            expected = _truth(truth, record_id)
            model = models["male" if expected["gender"] == "m" else "female"][1]
            assert record["has_mesh"] and record["has_camera"] and record["body_model"].decode() == "smpl"
            vertices, joints = posed(model, record["smpl_pose"], record["smpl_betas"])
            np.testing.assert_allclose(record["vertices"], vertices, atol=1e-5)
            np.testing.assert_allclose(record["joints"], joints, atol=1e-5)
            # The record's weak-perspective camera lands the mesh where 3DPW's camera sees the
            # world mesh (SMPL(pose, betas) + trans, then cam_poses and cam_intrinsics).
            world, _ = world_body(models, expected["gender"], expected["pose"], expected["betas"], expected["trans"])
            rotation, translation = expected["cam_pose"][:3, :3], expected["cam_pose"][:3, 3]
            seen = world @ rotation.T + translation
            pixels = seen[:, :2] / seen[:, 2:] * np.diag(INTRINSICS)[:2] + INTRINSICS[:2, 2] + 0.5
            camera = record["camera"]
            weak = schema.crop_to_image(camera[0] * (record["vertices"][:, :2] + camera[1:]), record["crop_box"])
            error = np.linalg.norm(weak - pixels, axis=1)
            assert np.median(error) < 0.2 and error.max() < 1.0, (record_id, np.median(error), error.max())
    metadata = tfds.builder_from_directory(os.path.join(built_with_models, "pw3d", "1.0.0")).info.metadata
    assert metadata["mesh_model"] == {"male": models["male"][0], "female": models["female"][0]}
    assert metadata["smpl_path"] is None and metadata["smpl_male_path"] == models["male"][0]
    assert metadata["meshes"] == {"train": {"male": 2, "female": 3, "none": 0},
                                  "validation": {"male": 0, "female": 3, "none": 0},
                                  "test": {"male": 2, "female": 0, "none": 0}}
    # The pickles' jointPositions agree with this builder's reading of trans and cam_poses.
    assert metadata["joint_position_error_mm"]["train"]["max"] < 0.1


def test_neutral_model_stands_in_for_a_gender_without_its_own(models, tmp_path):
    builder = pw3d.Builder(data_dir=str(tmp_path), smpl_path=models["neutral"][0], smpl_male_path=models["male"][0])
    assert builder.mesh_models() == {"male": models["male"][0], "female": models["neutral"][0]}
    assert pw3d.Builder(data_dir=str(tmp_path)).mesh_models() == {"male": None, "female": None}
    with pytest.raises(FileNotFoundError, match="smpl_female_path .*none.pkl is not a file"):
        pw3d.Builder(data_dir=str(tmp_path), smpl_female_path=tmp_path / "none.pkl")
    with pytest.raises(ValueError, match="splits must be distinct names"):
        pw3d.Builder(data_dir=str(tmp_path), splits=("val",))


def test_cli_checks_and_passes_the_gendered_model_paths(monkeypatch, capsys, tmp_path):
    seen = {}

    class WithNeutralOnly:  # stands in for a builder with one body model (e.g. up3d)
        def __init__(self, *, file_format=None, data_dir=None, smpl_path=None):
            pass

    class WithGendered:
        def __init__(self, *, file_format=None, data_dir=None, smpl_path=None, smpl_male_path=None,
                     smpl_female_path=None):
            seen.update(smpl_path=smpl_path, smpl_male_path=smpl_male_path, smpl_female_path=smpl_female_path)
            raise RuntimeError("stop here")

    male, female = tmp_path / "male.pkl", tmp_path / "female.pkl"
    male.write_bytes(b"x")
    female.write_bytes(b"x")
    monkeypatch.setattr(datasets, "builder_class", lambda name: WithNeutralOnly)
    for flag, path in (("smpl_male_path", male), ("smpl_female_path", female)):
        assert cli.main(["build", "up3d", f"--data_dir={tmp_path}", f"--{flag}={path}"]) == 2
        assert f"dataset 'up3d' does not take --{flag}" in capsys.readouterr().err
    monkeypatch.setattr(datasets, "builder_class", lambda name: WithGendered)
    assert cli.main(["build", "pw3d", f"--data_dir={tmp_path}", f"--smpl_female_path={tmp_path}/none.pkl"]) == 2
    assert f"--smpl_female_path {tmp_path}/none.pkl is not a file" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="stop here"):
        cli.main(["build", "pw3d", f"--data_dir={tmp_path}", f"--smpl_male_path={male}",
                  f"--smpl_female_path={female}"])
    assert seen == {"smpl_path": None, "smpl_male_path": str(male), "smpl_female_path": str(female)}


def test_training_pipeline_reads_the_records(built):
    source = pipeline.load_source(os.path.join(built, "pw3d", "1.0.0"), data_dir=None, split="train")
    spec = pipeline.ExampleSpec(image_size=32, num_dense=8)
    batches = list(pipeline.eval_dataset(source, spec, batch_size=2))
    assert batches[0]["image"].shape == (2, 32, 32, 3)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [1.0] * 5 + [0.0]
    assert all(not e for b in batches for e in b["error"])
    genders = np.concatenate([b["gender"] for b in batches])[:5]
    assert sorted(genders.tolist()) == [1, 1, 2, 2, 2]  # male 1, female 2 (actors 0, 0 and 1, 1, 1)
    for b in batches:
        real = b["valid"] > 0
        assert np.all(b["has_smpl"][real] == 1) and np.all(b["has_camera"] == 0)
        assert np.all(b["keypoints_weight"][real].sum(axis=1) >= 6)
    assert "tensorflow" not in sys.modules


# ----------------------------------------------------------------------------- DensePose IUV maps (iuv_dir)


def test_iuv_dir_attaches_maps_from_sequence_folders_only(fake_pw3d, tmp_path, caplog):
    import tensorflow_datasets as tfds  # noqa: PLC0415
    from test_up3d import random_iuv

    with pytest.raises(NotADirectoryError, match="iuv_dir .*missing is not a directory"):
        pw3d.Builder(data_dir=str(tmp_path / "tfds"), iuv_dir=str(tmp_path / "missing"))
    iuv_dir = tmp_path / "iuv"
    rng = np.random.default_rng(5)
    written = {("courtyard_fake_00", 0): random_iuv(rng, IMAGE_SHAPE),
               ("downtown_fake_00", 1): random_iuv(rng, IMAGE_SHAPE)}
    for folder, key in ((iuv_dir / "courtyard_fake_00", ("courtyard_fake_00", 0)),  # one folder per sequence
                        (iuv_dir / "imageFiles" / "downtown_fake_00", ("downtown_fake_00", 1))):  # mirroring M
        folder.mkdir(parents=True)
        assert cv2.imwrite(str(folder / f"image_{key[1]:05d}_IUV.png"), written[key])
    assert cv2.imwrite(str(iuv_dir / "courtyard_fake_00" / "image_00002_IUV.png"), random_iuv(rng, (64, 48)))
    # Frame names repeat across sequences: a flat map is never taken (frame 1 of two sequences here).
    assert cv2.imwrite(str(iuv_dir / "image_00001_IUV.png"), random_iuv(rng, IMAGE_SHAPE))
    with caplog.at_level("WARNING"):
        _build(fake_pw3d[0], tmp_path / "tfds", iuv_dir=iuv_dir)
    _, records = _records(str(tmp_path / "tfds"))
    skipped = "courtyard_fake_00/image_00002/actor0"
    assert {split: sorted(r) for split, r in records.items()} == {
        split: [i for i in ids if i != skipped] for split, ids in KEPT.items()}
    with_iuv = []
    for by_id in records.values():
        for record_id, record in by_id.items():
            schema.validate_record(record)
            name, image, _ = record_id.split("/")
            key = (name, int(image[len("image_"):]))
            assert bool(record["has_iuv"]) == (key in written), record_id
            if key in written:
                with_iuv.append(record_id)
                np.testing.assert_array_equal(schema.decode_iuv(record["iuv"]), written[key])
    assert sorted(with_iuv) == ["courtyard_fake_00/image_00000/actor0", "courtyard_fake_00/image_00000/actor1",
                                "downtown_fake_00/image_00001/actor0"]
    metadata = tfds.builder_from_directory(str(tmp_path / "tfds" / "pw3d" / "1.0.0")).info.metadata
    assert metadata["iuv_dir"] == str(iuv_dir)
    assert metadata["with_iuv"] == {"train": 2, "validation": 1, "test": 0}
    assert metadata["no_iuv"] == {"train": 2, "validation": 2, "test": 2}
    (entry,) = [s for s in metadata["skipped"]["train"] if s["record"] == skipped]
    reason = ("IUV map courtyard_fake_00/image_00002_IUV.png is 64x48 (height x width), the image 48x64: "
              "it is not this image's map")
    assert entry["reason"].startswith(reason) and f"pw3d train: skipped {skipped}: {reason}" in caplog.text
