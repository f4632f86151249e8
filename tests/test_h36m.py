"""Tests for the Human3.6M builder (datasets/h36m) on tiny fake SPIN-style .npz files.

The fake manual directory has SPIN's layout: ``h36m_<split>.npz`` files with SPIN's
field names, shapes and dtypes (``imgname`` a string array of ``images/...jpg``,
``center`` (N, 2), ``scale`` (N,), ``part`` (N, 24, 3), ``S`` (N, 24, 4), ``openpose``,
``pose``, ``shape``, ``has_smpl``; the validation files without ``part``, as SPIN's
``h36m.py`` writes them) and JPEG frames under ``images/`` written with OpenCV. The
joints are the free default body's keypoints, placed in J24 exactly as SPIN's
``h36m.py`` fills them (``global_idx``; root-centred 3D), and the 2D joints their
perspective projection; the default body stands in for SMPL (``smpl_path``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import cv2
import jax
import numpy as np
import pytest

import datasets
from datasets import __main__ as cli
from datasets.h36m import h36m_dataset_builder as h36m
from dct_jax import keypoints, smpl
from dct_jax.data import pipeline, schema

DEFAULT_BODY_PATH = os.path.join(os.path.dirname(smpl.__file__), "assets", "default_body.npz")
IMAGE_SHAPE = (128, 120)  # (H, W) of every fake frame
FOCAL, DEPTH = 1000.0, 20.0  # the fake camera: pixels, metres (a body is ~85 px tall)

# From SPIN's constants.py (nkolot/SPIN): JOINT_NAMES[25:] (the 24 ground-truth joints) and
# J24_TO_J17[:14] = J24_TO_J14, the joints SPIN evaluates Human3.6M on.
SPIN_J24 = ["Right Ankle", "Right Knee", "Right Hip", "Left Hip", "Left Knee", "Left Ankle", "Right Wrist",
            "Right Elbow", "Right Shoulder", "Left Shoulder", "Left Elbow", "Left Wrist", "Neck (LSP)",
            "Top of Head (LSP)", "Pelvis (MPII)", "Thorax (MPII)", "Spine (H36M)", "Jaw (H36M)", "Head (H36M)",
            "Nose", "Left Eye", "Right Eye", "Left Ear", "Right Ear"]
SPIN_J24_TO_J14 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18]
# SPIN's datasets/preprocess/h36m.py: the J24 slots its 17 Human3.6M joints fill (confidence 1).
SPIN_H36M_GLOBAL_IDX = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]

# split -> rows: (kind, has SMPL fit); kinds other than "good" are skipped with a reason.
ROWS = {
    "train": [("good", True), ("good", False), ("corrupt_image", True), ("missing_image", True),
              ("zero_scale", True), ("nan_S", True), ("good", True)],
    "valid_protocol1": [("good", False), ("good", False)],
    "valid_protocol2": [("good", False)],
}
KEPT = {split: [i for i, (kind, _) in enumerate(rows) if kind == "good"] for split, rows in ROWS.items()}
REASONS = {"corrupt_image": "is not a readable image", "missing_image": "no image",
           "zero_scale": "'scale' = 0.0 is not positive", "nan_S": "'S' has NaN or inf"}


def _spin_name_to_cocoplus(name: str) -> str:
    """'Right Ankle' -> 'right_ankle', 'Neck (LSP)' -> 'neck' (the test's own reading of the names)."""
    return name.split(" (")[0].lower().replace(" ", "_")


# ----------------------------------------------------------------------------- fake SPIN files

_forward = jax.jit(smpl.forward)


@pytest.fixture(scope="module")
def body():
    return smpl.load()


def make_person(body, rng):
    """A posed default body: (pose, betas, cocoplus19 keypoints (19, 3) in the camera frame, root offset)."""
    pose = np.concatenate([[np.pi + rng.normal(0, 0.1), rng.normal(0, 0.3), rng.normal(0, 0.1)],
                           rng.normal(0, 0.15, 69)])
    betas = rng.normal(0, 0.5, 10)
    out = _forward(body, pose.astype(np.float32), betas.astype(np.float32))
    layout = keypoints.get_layout("cocoplus19", body="default")
    kp = np.asarray(keypoints.from_body(layout, out.vertices, out.joints), np.float64)
    return pose, betas, kp


def spin_j24(kp19: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(24, 3) J24 joints and (24,) confidence, filled as SPIN's h36m.py does (no face, no LSP head top)."""
    j24 = np.zeros((24, 3))
    j24[:13] = kp19[:13]
    j24[14] = 0.5 * (kp19[2] + kp19[3])           # pelvis
    j24[16] = 0.5 * (j24[14] + kp19[12])          # spine
    j24[17] = 0.5 * (kp19[12] + kp19[13])         # jaw
    j24[18] = kp19[13]                            # Human3.6M's head joint
    confidence = np.zeros(24)
    confidence[SPIN_H36M_GLOBAL_IDX] = 1.0
    return j24 * confidence[:, None], confidence


def project(points: np.ndarray, translation: np.ndarray) -> np.ndarray:
    placed = points + translation
    return FOCAL * placed[:, :2] / placed[:, 2:3] + [IMAGE_SHAPE[1] / 2, IMAGE_SHAPE[0] / 2]


def write_split(manual_dir, split, rows, body, rng, *, with_part: bool, with_smpl: bool):
    """Writes M/h36m_<split>.npz and its frames; returns the truth per row."""
    fields = {k: [] for k in ("imgname", "center", "scale", "part", "S", "openpose", "pose", "shape", "has_smpl")}
    truth = []
    for index, (kind, fitted) in enumerate(rows):
        pose, betas, kp19 = make_person(body, rng)
        pelvis = 0.5 * (kp19[2] + kp19[3])
        translation = np.array([*rng.uniform(-0.1, 0.1, 2), DEPTH]) + pelvis * [0, 0, 1]
        j24, confidence = spin_j24(kp19)
        S = np.concatenate([(j24 - pelvis) * confidence[:, None], confidence[:, None]], axis=1)
        xy = project(j24, translation) * confidence[:, None]
        part = np.concatenate([xy, confidence[:, None]], axis=1)
        labelled = xy[confidence > 0]
        low, high = labelled.min(axis=0) - 10, labelled.max(axis=0) + 10  # the "mask" box
        center, scale = (low + high) / 2, 0.9 * max(high - low) / 200.0  # SPIN's h36m.py
        imgname = f"images/S9_Directions_1.{54138969 + index}_{split}_{index + 1:06d}.jpg"
        image = rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8)
        path = os.path.join(manual_dir, imgname)
        if kind == "corrupt_image":
            with open(path, "wb") as stream:
                stream.write(b"\xff\xd8\xff\xe0 not a JPEG")
        elif kind != "missing_image":
            assert cv2.imwrite(path, image)
        if kind == "zero_scale":
            scale = 0.0
        if kind == "nan_S":
            S[4, 0] = np.nan
        for key, value in (("imgname", imgname), ("center", center), ("scale", scale), ("part", part), ("S", S),
                           ("openpose", rng.uniform(0, 100, (25, 3))), ("pose", pose if fitted else np.zeros(72)),
                           ("shape", betas if fitted else np.zeros(10)), ("has_smpl", float(fitted))):
            fields[key].append(value)
        truth.append({"pose": pose, "betas": betas, "kp19": kp19, "pelvis": pelvis, "S": S, "part": part,
                      "image": image, "imgname": imgname, "center": center, "scale": scale, "fitted": fitted})
    keep = ["imgname", "center", "scale", "S"] + (["part", "openpose"] if with_part else []) + (
        ["pose", "shape", "has_smpl"] if with_smpl else [])
    np.savez(os.path.join(manual_dir, f"h36m_{split}.npz"), **{k: np.array(fields[k]) for k in keep})
    return truth


@pytest.fixture(scope="module")
def fake_h36m(tmp_path_factory, body):
    """``(manual_dir, {split: [truth per row]})``."""
    manual_dir = tmp_path_factory.mktemp("manual")
    (manual_dir / "images").mkdir()
    rng = np.random.default_rng(0)
    truth = {
        "train": write_split(str(manual_dir), "train", ROWS["train"], body, rng, with_part=True, with_smpl=True),
        "valid_protocol1": write_split(str(manual_dir), "valid_protocol1", ROWS["valid_protocol1"], body, rng,
                                       with_part=True, with_smpl=False),
        "valid_protocol2": write_split(str(manual_dir), "valid_protocol2", ROWS["valid_protocol2"], body, rng,
                                       with_part=False, with_smpl=False),  # as SPIN's h36m.py: no 'part'
    }
    return str(manual_dir), truth


def _build(manual_dir, data_dir, **kwargs):
    builder = datasets.builder_class("h36m")(data_dir=str(data_dir), manual_dir=manual_dir, **kwargs)
    builder.download_and_prepare()
    return builder


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def built(fake_h36m, tmp_path_factory):
    """``(data_dir, warnings logged)`` of a build without a body model."""
    data_dir = tmp_path_factory.mktemp("tfds")
    handler = _Records()
    logging.getLogger().addHandler(handler)
    try:
        _build(fake_h36m[0], data_dir)
    finally:
        logging.getLogger().removeHandler(handler)
    return str(data_dir), handler.messages


def _records(data_dir):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    builder = tfds.builder_from_directory(os.path.join(data_dir, "h36m", "1.0.0"))
    out = {}
    for split, source in builder.as_data_source().items():
        records = [source[i] for i in range(len(source))]
        out[split] = {int(r["record_id"].decode().split("/")[2]): r for r in records}
    return builder, out


def _expected_keypoints3d(row):
    """The row's cocoplus19 3D keypoints, root-centred as SPIN's S: 0-13 labelled, face unlabelled."""
    expected = np.zeros((19, 3))
    expected[:14] = row["kp19"][:14] - row["pelvis"]
    return expected


# ----------------------------------------------------------------------------- tests


def test_registered_as_a_folder_builder():
    assert "h36m" in datasets.builder_names()
    assert datasets.builder_class("h36m") is h36m.Builder


def test_keypoint_mapping_puts_each_named_joint_where_it_belongs():
    assert list(h36m.SPIN_J24_NAMES) == SPIN_J24
    for k, name in enumerate(keypoints.COCOPLUS19_NAMES):
        first = h36m.J24_SOURCES[k, 0]
        if k < 14:  # SPIN's J24_TO_J14: what Human3.6M is evaluated on (the head top is H36M's head)
            assert first == SPIN_J24_TO_J14[k], name
        if name != "head_top":
            assert _spin_name_to_cocoplus(SPIN_J24[first]) == name
            assert h36m.J24_SOURCES[k, 1] == -1
    head_top = keypoints.COCOPLUS19_NAMES.index("head_top")
    assert [SPIN_J24[j] for j in h36m.J24_SOURCES[head_top]] == ["Head (H36M)", "Top of Head (LSP)"]

    # Distinct values per J24 joint: each keypoint takes its own joint's value.
    points = np.arange(24 * 3, dtype=np.float64).reshape(24, 3)
    mapped, labelled = h36m.map_j24(points, np.ones(24))
    assert labelled.all()
    for k, name in enumerate(keypoints.COCOPLUS19_NAMES):
        j = SPIN_J24.index("Head (H36M)") if name == "head_top" else \
            [_spin_name_to_cocoplus(n) for n in SPIN_J24].index(name)
        np.testing.assert_array_equal(mapped[k], points[j], err_msg=name)
    # The LSP head top stands in where Human3.6M's head is unlabelled; unlabelled joints give zeros.
    confidence = np.ones(24)
    confidence[18] = 0.0
    confidence[19] = 0.0  # nose
    mapped, labelled = h36m.map_j24(points[None], confidence[None])
    np.testing.assert_array_equal(mapped[0, head_top], points[13])
    nose = keypoints.COCOPLUS19_NAMES.index("nose")
    assert not labelled[0, nose] and np.all(mapped[0, nose] == 0) and labelled[0, head_top]


def test_malformed_files_are_reported_with_file_and_field(tmp_path):
    n = 2
    good = {"imgname": np.array(["images/a.jpg", "images/b.jpg"]), "center": np.zeros((n, 2)),
            "scale": np.ones(n), "S": np.zeros((n, 24, 4))}
    np.savez(tmp_path / "h36m_ok.npz", **good)
    assert len(h36m.read_annotations(str(tmp_path / "h36m_ok.npz"))) == 2
    for change, message in (({"S": np.zeros((n, 17, 4))}, r"h36m_x.npz: 'S' has shape \(2, 17, 4\)"),
                            ({"part": np.zeros((n + 1, 24, 3))}, r"'part' has shape \(3, 24, 3\)"),
                            ({"pose": np.zeros((n, 72))}, "has pose but not shape"),
                            ({"imgname": np.array(["a", None], dtype=object)}, "imgname.*string array"),
                            ({"center": None}, r"has no \['center'\]")):
        fields = {k: v for k, v in {**good, **change}.items() if v is not None}
        np.savez(tmp_path / "h36m_x.npz", **fields)
        with pytest.raises(ValueError, match=message):
            h36m.read_annotations(str(tmp_path / "h36m_x.npz"))
    (tmp_path / "h36m_x.npz").unlink()
    np.savez(tmp_path / "h36m_Valid-2.npz", **good)
    with pytest.raises(ValueError, match="split name 'Valid-2'"):
        h36m.find_split_files(str(tmp_path))


def test_missing_files_fail_at_once_saying_what_to_download(tmp_path, fake_h36m, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        _build(str(empty), tmp_path / "tfds")
    message = str(info.value)
    for expected in ("there is no h36m_*.npz file in", "http://vision.imar.ro/human3.6m/",
                     "https://github.com/nkolot/SPIN", "h36m_train.npz", "h36m_valid_protocol1.npz",
                     "h36m_valid_protocol2.npz", "M/images/", "D3 Positions Mono", "every 5th frame",
                     "--manual_dir=M"):
        assert expected in message, (expected, message)
    assert not (tmp_path / "tfds" / "h36m" / "1.0.0").exists()
    assert set(h36m.find_splits(str(empty))) == set(h36m.SPIN_SPLITS)  # each lacks its file

    # The annotation files without the extracted frames.
    partial = tmp_path / "partial"
    partial.mkdir()
    os.link(os.path.join(fake_h36m[0], "h36m_valid_protocol2.npz"), partial / "h36m_valid_protocol2.npz")
    with pytest.raises(FileNotFoundError,
                       match=r"image folder\(s\) that h36m_valid_protocol2.npz names are missing: .*images"):
        _build(str(partial), tmp_path / "tfds")
    (partial / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the 1 images that h36m_valid_protocol2.npz names"):
        _build(str(partial), tmp_path / "tfds")

    # The CLI reports it without a traceback (exit code 2).
    assert cli.main(["build", "h36m", f"--manual_dir={empty}", f"--data_dir={tmp_path / 'tfds'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m datasets: error: Human3.6M is not complete in --manual_dir")


def _copy(manual_dir, target):
    """A copy of the fake manual directory (hard links: replace a file, never write into it)."""
    shutil.copytree(manual_dir, target, copy_function=os.link)
    return str(target)


def test_a_split_without_its_images_is_left_out_unless_asked_for(fake_h36m, tmp_path, caplog, capsys):
    manual = _copy(fake_h36m[0], tmp_path / "manual")
    for row in fake_h36m[1]["valid_protocol1"]:
        os.unlink(os.path.join(manual, row["imgname"]))
    with caplog.at_level("WARNING"):
        _build(manual, tmp_path / "tfds")
    builder, records = _records(str(tmp_path / "tfds"))
    assert {split: sorted(r) for split, r in records.items()} == {
        "train": KEPT["train"], "valid_protocol2": KEPT["valid_protocol2"]}
    lack = (f"none of the 2 images that h36m_valid_protocol1.npz names is there "
            f"(e.g. {os.path.join(manual, fake_h36m[1]['valid_protocol1'][0]['imgname'])})")
    assert (f"h36m: building train, valid_protocol2; not building valid_protocol1, which lacks: {lack} "
            "(pass splits= / --splits= to require a split)") in caplog.messages
    assert builder.info.metadata["missing_splits"] == {"valid_protocol1": [lack]}
    assert builder.info.metadata["files"] == {"train": "h36m_train.npz", "valid_protocol2": "h36m_valid_protocol2.npz"}
    with pytest.raises(FileNotFoundError, match="none of the 2 images that h36m_valid_protocol1.npz names"):
        _build(manual, tmp_path / "tfds2", splits=("valid_protocol1",))
    assert cli.main(["build", "h36m", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'cli'}",
                     "--splits=valid_protocol2,valid_protocol3"]) == 2
    assert f"there is no h36m_valid_protocol3.npz in {manual}" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # a usage error of argparse's, one line
        cli.main(["build", "h36m", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'cli'}", "--splits=Valid"])
    assert "argument --splits: split name 'Valid' is not one TFDS can read back" in capsys.readouterr().err


def test_a_split_whose_every_image_is_unreadable_is_reported_and_the_others_are_written(fake_h36m, tmp_path, caplog):
    manual = _copy(fake_h36m[0], tmp_path / "manual")
    (row,) = fake_h36m[1]["valid_protocol2"]
    os.unlink(os.path.join(manual, row["imgname"]))
    with open(os.path.join(manual, row["imgname"]), "wb") as stream:
        stream.write(b"not a JPEG")
    with caplog.at_level("WARNING"):
        _build(manual, tmp_path / "tfds")
    builder, records = _records(str(tmp_path / "tfds"))
    assert sorted(records) == ["train", "valid_protocol1"]
    metadata = builder.info.metadata
    first = f"{os.path.basename(row['imgname'])} is not a readable image (OpenCV cannot decode its 10 bytes)"
    assert metadata["empty_splits"] == {"valid_protocol2": {"listed": 1, "read": 1, "skipped": 1, "unit": "rows",
                                                            "reasons": [{"reason": first, "count": 1}]}}
    assert metadata["num_skipped"]["valid_protocol2"] == 1 and metadata["skipped_not_listed"]["valid_protocol2"] == 0
    assert (f'h36m: split valid_protocol2 is empty and was not written: all 1 rows read were skipped (1 like "{first}")'
            in caplog.messages)


def test_records_follow_the_schema_and_keep_the_annotations(built, fake_h36m):
    _, truth = fake_h36m
    builder, records = _records(built[0])
    assert {split: sorted(r) for split, r in records.items()} == KEPT
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        split: len(rows) for split, rows in KEPT.items()}
    for split, by_row in records.items():
        for index, record in by_row.items():
            schema.validate_record(record)
            row = truth[split][index]
            assert record["image_id"].decode() == row["imgname"]
            assert record["record_id"].decode() == f"h36m/{split}/{index:07d}/{row['imgname']}"
            assert tuple(record["image_shape"]) == IMAGE_SHAPE
            decoded = schema.decode_image(record["image"])  # the JPEG as written (same bytes)
            on_disk = cv2.imread(os.path.join(fake_h36m[0], row["imgname"]))[..., ::-1]
            np.testing.assert_array_equal(decoded, on_disk)
            # S -> keypoints3d (metres, root-centred as stored); the face is not labelled by H36M.
            assert record["has_keypoints3d"]
            np.testing.assert_allclose(record["keypoints3d"], _expected_keypoints3d(row), atol=1e-6)
            np.testing.assert_array_equal(record["keypoints3d_visibility"], [2] * 14 + [0] * 5)
            # SPIN's crop: side 200 * scale around center.
            side = 200 * row["scale"]
            np.testing.assert_allclose(record["crop_box"], [*(row["center"] - side / 2), side], rtol=1e-6)
            if split == "valid_protocol2":  # no 'part' in the file
                assert not record["has_keypoints"] and np.all(record["keypoints_visibility"] == 0)
                np.testing.assert_allclose(record["bbox"], [*record["crop_box"], side], rtol=1e-6)
            else:
                assert record["has_keypoints"]
                np.testing.assert_allclose(record["keypoints"][:14], row["part"][SPIN_J24_TO_J14, :2], atol=1e-4)
                np.testing.assert_array_equal(record["keypoints_visibility"], [2] * 14 + [0] * 5)
                # The crop contains the visible keypoints; the box is theirs.
                x0, y0, side = record["crop_box"]
                xy = record["keypoints"][:14]
                assert np.all((xy >= [x0, y0]) & (xy <= [x0 + side, y0 + side]))
                low, high = xy.min(axis=0), xy.max(axis=0)
                np.testing.assert_allclose(record["bbox"], [*low, *(high - low)], atol=1e-4)
            # SMPL parameters exactly as stored where the row has a fit; parameters only (no mesh, no camera).
            if row["fitted"] and split == "train":
                assert record["has_smpl"] and record["body_model"].decode() == "smpl"
                np.testing.assert_array_equal(record["smpl_pose"], row["pose"].astype(np.float32))
                np.testing.assert_array_equal(record["smpl_betas"], row["betas"].astype(np.float32))
            else:
                assert not record["has_smpl"] and record["body_model"].decode() == ""
                assert np.all(record["smpl_pose"] == 0)
            assert not (record["has_mesh"] or record["has_camera"] or record["has_dense"] or record["has_iuv"])
            assert record["vertices"].shape == (0, 3)


def test_skipped_rows_are_named_in_the_log_and_the_metadata(built):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    data_dir, log = built
    metadata = tfds.builder_from_directory(os.path.join(data_dir, "h36m", "1.0.0")).info.metadata
    skipped = [(i, kind) for i, (kind, _) in enumerate(ROWS["train"]) if kind != "good"]
    assert metadata["num_skipped"] == {"train": len(skipped), "valid_protocol1": 0, "valid_protocol2": 0}
    assert [s["row"] for s in metadata["skipped"]["train"]] == [i for i, _ in skipped]
    for entry, (index, kind) in zip(metadata["skipped"]["train"], skipped, strict=True):
        assert entry["image"].startswith("images/S9_") and REASONS[kind] in entry["reason"], (entry, kind)
        assert any(f"h36m train: skipped row {index} ({entry['image']}): " in m and REASONS[kind] in m
                   for m in log), (kind, log)
    assert any(f"h36m train: skipped {len(skipped)} of {len(ROWS['train'])} rows" in m for m in log)
    assert metadata["files"] == {split: f"h36m_{split}.npz" for split in ROWS}
    assert metadata["keys"]["valid_protocol2"] == ["imgname", "center", "scale", "S"]
    assert metadata["keys"]["train"] == ["imgname", "center", "scale", "S", "part", "pose", "shape", "has_smpl"]
    assert metadata["with_smpl"] == {"train": 6, "valid_protocol1": 0, "valid_protocol2": 0}
    assert metadata["body_model"] == "smpl" and metadata["smpl_path"] is None


def test_body_model_fills_the_mesh_and_fits_the_camera(fake_h36m, tmp_path, body):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    _, truth = fake_h36m
    _build(fake_h36m[0], tmp_path, smpl_path=DEFAULT_BODY_PATH)
    _, records = _records(str(tmp_path))
    layout = keypoints.get_layout("cocoplus19", body="default")
    for split, by_row in records.items():
        for index, record in by_row.items():
            schema.validate_record(record)
            row = truth[split][index]
            if not (row["fitted"] and split == "train"):
                assert not (record["has_mesh"] or record["has_camera"]) and record["body_model"].decode() == ""
                continue
            assert record["has_mesh"] and record["has_camera"] and record["body_model"].decode() == "default"
            out = _forward(body, record["smpl_pose"], record["smpl_betas"])
            np.testing.assert_allclose(record["vertices"], out.vertices, atol=1e-5)
            np.testing.assert_allclose(record["joints"], out.joints, atol=1e-5)
            kp = np.asarray(keypoints.from_body(layout, record["vertices"], record["joints"]))[:14]
            uv = record["camera"][0] * (kp[:, :2] + record["camera"][1:])
            error = np.linalg.norm(schema.crop_to_image(uv, record["crop_box"]) - record["keypoints"][:14], axis=1)
            assert error.max() < 1.0, (index, error)  # pixels; bodies are ~85 px tall
    metadata = tfds.builder_from_directory(str(tmp_path / "h36m" / "1.0.0")).info.metadata
    assert metadata["body_model"] == "default" and metadata["smpl_path"] == DEFAULT_BODY_PATH
    assert metadata["keypoint_error_px"]["train"]["max"] < 1.0


def test_training_pipeline_reads_the_3d_keypoints(built, fake_h36m):
    _, truth = fake_h36m
    _, records = _records(built[0])
    process = pipeline.ProcessRecord(pipeline.ExampleSpec(image_size=32, num_dense=8, inputs=("image",)),
                                     train=False)
    rng = np.random.default_rng(0)
    for split, by_row in records.items():
        for index, record in by_row.items():
            example = process.random_map((index, record), rng)
            assert example["valid"] == 1 and not example["error"], example["error"]
            assert example["image"].shape == (32, 32, 3)
            assert example["has_keypoints3d"] == 1
            np.testing.assert_allclose(example["keypoints3d"], _expected_keypoints3d(truth[split][index]), atol=1e-6)
            np.testing.assert_array_equal(example["keypoints3d_weight"], [1] * 14 + [0] * 5)
            labelled = example["keypoints_weight"] > 0
            assert labelled.sum() == (0 if split == "valid_protocol2" else 14)
            assert np.all(np.abs(example["keypoints"][labelled]) <= 1)  # inside the crop
            assert example["has_smpl"] == float(truth[split][index]["fitted"] and split == "train")
            assert example["has_joints"] == 0 and example["has_camera"] == 0
    assert "tensorflow" not in sys.modules


# ----------------------------------------------------------------------------- DensePose IUV maps (iuv_dir)


def test_iuv_dir_attaches_maps_named_after_the_whole_frame_name(fake_h36m, tmp_path):
    from test_up3d import random_iuv

    manual_dir, truth = fake_h36m
    with pytest.raises(NotADirectoryError, match="iuv_dir .*missing is not a directory"):
        h36m.Builder(data_dir=str(tmp_path / "tfds"), iuv_dir=tmp_path / "missing")
    iuv_dir = tmp_path / "iuv"
    (iuv_dir / "images").mkdir(parents=True)
    rng = np.random.default_rng(6)

    def map_path(split, row, nested=True):  # S9_Directions_1.54138969_..._000001.jpg -> ..._000001_IUV.png
        stem = os.path.splitext(os.path.basename(truth[split][row]["imgname"]))[0]
        return iuv_dir / ("images" if nested else "") / f"{stem}_IUV.png"

    written = {("train", 0): random_iuv(rng, IMAGE_SHAPE), ("train", 1): random_iuv(rng, IMAGE_SHAPE),
               ("valid_protocol1", 0): random_iuv(rng, IMAGE_SHAPE)}
    for (split, row), iuv in written.items():
        assert cv2.imwrite(str(map_path(split, row, nested=row != 1)), iuv)  # train row 1 (no SMPL fit): flat
    assert cv2.imwrite(str(map_path("train", 6)), random_iuv(rng, (IMAGE_SHAPE[0], IMAGE_SHAPE[1] - 1)))
    _build(manual_dir, tmp_path / "tfds", iuv_dir=str(iuv_dir))
    builder, records = _records(str(tmp_path / "tfds"))
    assert {split: sorted(r) for split, r in records.items()} == {
        split: [i for i in rows if (split, i) != ("train", 6)] for split, rows in KEPT.items()}
    for split, by_row in records.items():
        for row, record in by_row.items():
            schema.validate_record(record)
            assert bool(record["has_iuv"]) == ((split, row) in written), (split, row)
            if (split, row) in written:
                np.testing.assert_array_equal(schema.decode_iuv(record["iuv"]), written[(split, row)])
                assert record["body_model"].decode() == "smpl"  # DensePose's chart, with or without a fit
            else:
                assert record["body_model"].decode() == ("smpl" if record["has_smpl"] else "")
    assert not records["train"][1]["has_smpl"] and records["train"][1]["has_iuv"]
    metadata = builder.info.metadata  # as read back from the directory
    assert metadata["iuv_dir"] == str(iuv_dir)
    assert metadata["with_iuv"] == {"train": 2, "valid_protocol1": 1, "valid_protocol2": 0}
    assert metadata["no_iuv"] == {"train": 0, "valid_protocol1": 1, "valid_protocol2": 1}
    (entry,) = [s for s in metadata["skipped"]["train"] if s["row"] == 6]
    assert entry["reason"].startswith(f"IUV map images/{map_path('train', 6).name} is 128x119 (height x width), "
                                      "the image 128x120: it is not this image's map")
