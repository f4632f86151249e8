"""Tests for the UP-3D builder (datasets/up3d) on a tiny fake UP-3D folder.

The fake folder has the release's layout and file formats (PNG images,
Python-2-style pickles of the fit, some with chumpy arrays, ``(3, 14)``
joints, crop info, rendered silhouettes, split lists). Its joints are the
perspective projection of a known body, the free default body, through the
fit's camera and crop info, so the records' weak-perspective cameras can be
checked against them; the default body stands in for SMPL (``smpl_path``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import struct
import sys
import types
from typing import ClassVar

import cv2
import jax
import numpy as np
import pytest

import datasets
from datasets import __main__ as cli
from datasets.up3d import up3d_dataset_builder as up3d
from dct_jax import keypoints, smpl
from dct_jax.data import pipeline, schema

DEFAULT_BODY_PATH = os.path.join(os.path.dirname(smpl.__file__), "assets", "default_body.npz")
IMAGE_SHAPE = (140, 130)  # (H, W) of every fake image
# image number -> (fit image H, W, y1, y2, x1, x2), depth t_z, how the fit is pickled
GOOD = {
    "00001": ((240, 200, 6, 126, 12, 112), 50.0, "py2"),         # fit image = a region at half size
    "00002": ((140, 130, 0, 140, 0, 130), 100.0, "chumpy"),      # fit image = the image
    "00003": ((281, 261, 0, 140, 0, 130), 60.0, "py3"),          # fit image = the image at about twice the size
    "00004": ((240, 200, 10, 130, 20, 120), 55.0, "py2"),        # no _render_light.png
}
CORRUPT_IMAGE, BAD_BETAS = "00005", "00006"
SPLIT_LISTS = {
    "train": ["00001", "00002", CORRUPT_IMAGE],
    "val": ["00003", BAD_BETAS],
    "test": ["00004"],
    "trainval": ["00001", "00002", "00003", CORRUPT_IMAGE, BAD_BETAS],
}
KEPT = {"train": ["00001", "00002"], "val": ["00003"], "test": ["00004"], "trainval": ["00001", "00002", "00003"]}


# ----------------------------------------------------------------------------- fake UP-3D files


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` opcodes (BINSTRING), as cPickle did."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


@contextlib.contextmanager
def _fake_chumpy():
    """A stand-in ``chumpy.ch.Ch`` (array in its state under ``'x'``) that pickles like chumpy's."""
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

        def __getstate__(self):
            return {"x": self.x}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch, package.ch = Ch, module
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        yield Ch
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


def write_body_pickle(path, fit: dict, how: str) -> None:
    """``how``: ``"py2"`` (protocol 2, Python 2 strings), ``"chumpy"`` (protocol 0, pose and
    betas as chumpy arrays, as an SMPLify session would leave them), ``"py3"`` (protocol 4)."""
    with open(path, "wb") as stream:
        if how == "py2":
            _Py2Pickler(stream, protocol=2).dump(fit)
        elif how == "chumpy":
            with _fake_chumpy() as Ch:
                pickle.dump(dict(fit, pose=Ch(fit["pose"]), betas=Ch(fit["betas"])), stream, protocol=0)
        else:
            pickle.dump(fit, stream, protocol=4)


def project(points, fit, crop):
    """The test's own UP-3D camera: perspective into the fit image, then into the image."""
    height, width, y1, y2, x1, x2 = crop
    placed = points + fit["t"] + fit["trans"]
    uv = fit["f"] * placed[:, :2] / placed[:, 2:3] + [width // 2, height // 2]
    return uv * [(x2 - x1) / width, (y2 - y1) / height] + [x1, y1]


@pytest.fixture(scope="module")
def body():
    return smpl.load()


_forward = jax.jit(smpl.forward)  # (one compilation instead of op-by-op dispatch)


def make_example(root, image_id, crop, depth, how, rng, body, *, render=True):
    """Writes the files of one image; returns the fit and the exact (perspective) keypoints."""
    pose = np.concatenate([[np.pi + rng.normal(0, 0.1), rng.normal(0, 0.2), rng.normal(0, 0.1)],
                           rng.normal(0, 0.15, 69)])
    fit = {"pose": pose, "betas": rng.normal(0, 0.5, 10), "t": np.array([*rng.uniform(-0.2, 0.2, 2), depth]),
           "rt": np.zeros(3), "f": 5000.0, "trans": np.zeros(3)}
    out = _forward(body, pose.astype(np.float32), fit["betas"].astype(np.float32))
    vertices, joints = np.asarray(out.vertices, np.float64), np.asarray(out.joints, np.float64)
    layout = keypoints.get_layout("cocoplus19", body="default")
    lsp3d = np.asarray(keypoints.from_body(layout, vertices, joints))[:14]
    truth = project(lsp3d, fit, crop)
    head = vertices[keypoints.DEFAULT_VERTEX_IDS["head_top"]][None]
    height, width = crop[:2]
    fit["j2d"] = project(np.concatenate([joints, head]), fit, (height, width, 0, height, 0, width))
    write_body_pickle(os.path.join(root, f"{image_id}_body.pkl"), fit, how)

    visibility = np.ones(14)
    visibility[13] = 0.0  # head top not annotated
    xy = truth.copy()
    np.save(os.path.join(root, f"{image_id}_joints.npy"), np.concatenate([xy.T, visibility[None]]))
    with open(os.path.join(root, f"{image_id}_fit_crop_info.txt"), "w") as stream:
        stream.write(" ".join(str(v) for v in crop) + "\n")
    image = rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8)
    assert cv2.imwrite(os.path.join(root, f"{image_id}_image.png"), image)
    if render:
        silhouette = np.full((*IMAGE_SHAPE, 3), 255, np.uint8)
        pixels = np.floor(project(vertices, fit, crop)).astype(int)
        pixels = pixels[(pixels[:, 0] >= 0) & (pixels[:, 0] < IMAGE_SHAPE[1])
                        & (pixels[:, 1] >= 0) & (pixels[:, 1] < IMAGE_SHAPE[0])]
        silhouette[pixels[:, 1], pixels[:, 0]] = 160
        assert cv2.imwrite(os.path.join(root, f"{image_id}{up3d.RENDER_SUFFIX}"), silhouette)
    return fit, truth, vertices


@pytest.fixture(scope="module")
def fake_up3d(tmp_path_factory, body):
    """``(manual_dir, {image_id: (fit, true keypoints (14, 2), vertices)})``."""
    manual_dir = tmp_path_factory.mktemp("manual")
    root = manual_dir / "up-3d"
    root.mkdir()
    rng = np.random.default_rng(0)
    truth = {}
    for image_id, (crop, depth, how) in GOOD.items():
        truth[image_id] = make_example(str(root), image_id, crop, depth, how, rng, body,
                                       render=image_id != "00004")
    make_example(str(root), CORRUPT_IMAGE, GOOD["00001"][0], 50.0, "py2", rng, body)
    (root / f"{CORRUPT_IMAGE}_image.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    make_example(str(root), BAD_BETAS, GOOD["00001"][0], 50.0, "py3", rng, body)
    with open(root / f"{BAD_BETAS}_body.pkl", "rb") as stream:
        bad = pickle.load(stream)
    write_body_pickle(root / f"{BAD_BETAS}_body.pkl", dict(bad, betas=bad["betas"][:5]), "py3")
    for split, ids in SPLIT_LISTS.items():
        (root / f"{split}.txt").write_text("".join(f"/{i}_image.png\n" for i in ids))
    return str(manual_dir), truth


def _build(manual_dir, data_dir, **kwargs):
    builder = datasets.builder_class("up3d")(data_dir=str(data_dir), manual_dir=manual_dir, **kwargs)
    builder.download_and_prepare()
    return builder


@pytest.fixture(scope="module")
def built(fake_up3d, tmp_path_factory):
    """The data_dir of a build without a body model (parameters only)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    _build(fake_up3d[0], data_dir)
    return str(data_dir)


@pytest.fixture(scope="module")
def built_with_body(fake_up3d, tmp_path_factory):
    """The data_dir of a build with ``smpl_path`` (the default body stands in for SMPL)."""
    data_dir = tmp_path_factory.mktemp("tfds_mesh")
    _build(fake_up3d[0], data_dir, smpl_path=DEFAULT_BODY_PATH)
    return str(data_dir)


def _partial_copy(manual_dir, target, *, without: str) -> str:
    """A copy (hard links) of the fake ``manual_dir`` without ``up-3d/<without>``."""
    root = os.path.join(target, "up-3d")
    os.makedirs(root)
    source = os.path.join(manual_dir, "up-3d")
    for name in os.listdir(source):
        if name != without:
            os.link(os.path.join(source, name), os.path.join(root, name))
    return str(target)


def _records(data_dir):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    builder = tfds.builder_from_directory(os.path.join(data_dir, "up3d", "1.0.0"))
    out = {}
    for split, source in builder.as_data_source().items():
        records = [source[i] for i in range(len(source))]
        out[split] = {r["record_id"].decode().split("/")[1]: r for r in records}
    return builder, out


# ----------------------------------------------------------------------------- tests


def test_registered_as_a_folder_builder():
    assert "up3d" in datasets.builder_names()
    assert datasets.builder_class("up3d") is up3d.Builder


def test_body_pickles_python2_and_chumpy_are_read(tmp_path):
    fit = {"pose": np.arange(72) / 100.0, "betas": np.arange(10) / 10.0, "t": np.array([0.1, 0.2, 50.0]),
           "rt": np.zeros(3), "f": 5000.0, "trans": np.zeros(3)}
    for how in ("py2", "chumpy", "py3"):
        path = tmp_path / f"{how}.pkl"
        write_body_pickle(path, fit, how)
        read = up3d.read_body_file(str(path))
        assert sorted(read) == sorted(fit), how
        for key, value in fit.items():
            np.testing.assert_array_equal(np.asarray(read[key]).reshape(-1), np.reshape(value, -1), err_msg=how)
        parsed = up3d.parse_fit(read)
        np.testing.assert_array_equal(parsed.pose, fit["pose"])
    assert b"chumpy.ch" in (tmp_path / "chumpy.pkl").read_bytes()
    # Anything but numpy/chumpy/builtins is refused, not run.
    (tmp_path / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(up3d.Skip, match="os.system"):
        up3d.read_body_file(str(tmp_path / "evil.pkl"))


def test_inconsistent_fits_are_rejected_with_the_reason():
    good = {"pose": np.zeros(72), "betas": np.zeros(10), "t": np.array([0.0, 0.0, 50.0]), "rt": np.zeros(3),
            "f": 5000.0, "trans": np.zeros(3)}
    assert up3d.parse_fit(good).translation.tolist() == [0.0, 0.0, 50.0]
    np.testing.assert_array_equal(up3d.parse_fit(dict(good, trans=np.array([1.0, 2.0, 3.0]))).translation,
                                  [1.0, 2.0, 53.0])
    for change, reason in (({"betas": np.zeros(5)}, "'betas' has 5 values, expected 10"),
                           ({"pose": np.full(72, np.nan)}, "'pose' has NaN or inf"),
                           ({"t": np.array([0.0, 0.0, -1.0])}, "not in front of the camera"),
                           ({"f": 0.0}, "focal length f = 0.0 is not positive"),
                           ({"rt": np.array([0.0, 0.1, 0.0])}, "camera rotation rt"),
                           ({"t": "far"}, "'t' is not numeric")):
        with pytest.raises(up3d.Skip, match=reason):
            up3d.parse_fit(dict(good, **change), "x_body.pkl")
    with pytest.raises(up3d.Skip, match="has no 'betas'"):
        up3d.parse_fit({k: v for k, v in good.items() if k != "betas"})


def test_missing_files_fail_at_once_saying_what_to_download(tmp_path, fake_up3d, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        _build(str(empty), tmp_path / "tfds")
    message = str(info.value)
    for expected in (f"there is no folder {empty / 'up-3d'}", "http://files.is.tuebingen.mpg.de/classner/up/",
                     "up-3d.zip", "upi-s1h", "M/up-3d/", "_image.png", "_body.pkl", "_joints.npy",
                     "_fit_crop_info.txt", "trainval.txt", "--manual_dir=M"):
        assert expected in message, (expected, message)
    assert not (tmp_path / "tfds" / "up3d" / "1.0.0").exists()

    # A listed image without its joints, and a missing split list: an error for a split asked for.
    partial = _partial_copy(fake_up3d[0], tmp_path / "partial", without="00003_joints.npy")
    with pytest.raises(FileNotFoundError,
                       match=r"1 file\(s\) of the images val.txt lists are not in .*: 00003_joints.npy"):
        _build(partial, tmp_path / "tfds", splits=("train", "val"))
    os.unlink(os.path.join(partial, "up-3d", "test.txt"))
    with pytest.raises(FileNotFoundError, match="no split list .*test.txt"):
        _build(partial, tmp_path / "tfds", splits="test")
    assert not (tmp_path / "tfds" / "up3d" / "1.0.0").exists()

    # The CLI reports it without a traceback (exit code 2).
    assert cli.main(["build", "up3d", f"--manual_dir={empty}", f"--data_dir={tmp_path / 'tfds'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m datasets: error: UP-3D is not complete in --manual_dir") and "up-3d.zip" in err


def test_records_follow_the_schema_and_keep_the_fit(built, fake_up3d):
    _, truth = fake_up3d
    builder, records = _records(built)
    assert {split: sorted(r) for split, r in records.items()} == KEPT
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        split: len(ids) for split, ids in KEPT.items()}
    for by_id in records.values():
        for image_id, record in by_id.items():
            schema.validate_record(record)
            fit, xy, _ = truth[image_id]
            assert record["image_id"].decode() == f"{image_id}_image.png"
            assert record["body_model"].decode() == "smpl"
            assert schema.decode_image(record["image"]).shape == (*IMAGE_SHAPE, 3)
            assert tuple(record["image_shape"]) == IMAGE_SHAPE
            # Pose and shape exactly as fitted (float32).
            np.testing.assert_array_equal(record["smpl_pose"], fit["pose"].astype(np.float32))
            np.testing.assert_array_equal(record["smpl_betas"], fit["betas"].astype(np.float32))
            # LSP joints -> the first 14 cocoplus19 keypoints; visibility 0 -> unlabelled; rest unlabelled.
            np.testing.assert_allclose(record["keypoints"][:14], xy, atol=1e-4)
            assert np.all(record["keypoints"][14:] == 0)
            expected = np.full(19, schema.VISIBILITY_UNLABELLED)
            expected[:13] = schema.VISIBILITY_VISIBLE
            np.testing.assert_array_equal(record["keypoints_visibility"], expected)
            assert record["has_keypoints"] and record["has_smpl"] and record["has_camera"]
            assert not (record["has_mesh"] or record["has_dense"] or record["has_iuv"] or record["has_segmentation"])
            assert record["vertices"].shape == (0, 3)
            # The crop: 1.2 x the longer side of the person box, around its centre.
            x, y, w, h = record["bbox"]
            x0, y0, side = record["crop_box"]
            assert side == pytest.approx(1.2 * max(w, h), rel=1e-6)
            assert (x0 + side / 2, y0 + side / 2) == pytest.approx((x + w / 2, y + h / 2), rel=1e-5)


def test_person_box_is_the_rendered_silhouette_or_else_the_joints(built, fake_up3d):
    _, truth = fake_up3d
    _, records = _records(built)
    for image_id in ("00001", "00002", "00003"):
        _, _, vertices = truth[image_id]
        crop, _, _ = GOOD[image_id]
        pixels = np.floor(project(vertices, truth[image_id][0], crop))
        low, high = pixels.min(axis=0), pixels.max(axis=0) + 1
        np.testing.assert_allclose(records["trainval"][image_id]["bbox"], [*low, *(high - low)])
    xy = truth["00004"][1][:13]  # labelled joints (head top is not)
    low, high = xy.min(axis=0), xy.max(axis=0)
    np.testing.assert_allclose(records["test"]["00004"]["bbox"], [*low, *(high - low)], atol=1e-4)


def test_weak_perspective_camera_lands_on_the_joints(built, fake_up3d, body):
    """Without a body model the camera comes from the fit's perspective camera; posing the
    known body and projecting it with the record's camera must land on the annotated joints."""
    _, truth = fake_up3d
    _, records = _records(built)
    layout = keypoints.get_layout("cocoplus19", body="default")
    for image_id, record in [*records["trainval"].items(), *records["test"].items()]:
        out = _forward(body, record["smpl_pose"], record["smpl_betas"])
        lsp3d = np.asarray(keypoints.from_body(layout, out.vertices, out.joints))[:14]
        uv = np.asarray(record["camera"][0] * (lsp3d[:, :2] + record["camera"][1:]))
        error = np.linalg.norm(schema.crop_to_image(uv, record["crop_box"]) - truth[image_id][1], axis=1)
        assert error.max() < 1.0, (image_id, error)  # pixels; bodies are ~85 px tall


def test_metadata_and_log_name_every_skipped_image(fake_up3d, tmp_path, caplog):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    with caplog.at_level("WARNING"):
        _build(fake_up3d[0], tmp_path)
    log = caplog.text
    assert f"up3d train: skipped {CORRUPT_IMAGE}_image.png: {CORRUPT_IMAGE}_image.png is not a readable image" in log
    assert f"up3d val: skipped {BAD_BETAS}_image.png: {BAD_BETAS}_body.pkl: 'betas' has 5 values" in log
    assert "up3d trainval: skipped 2 of 5 images" in log
    metadata = tfds.builder_from_directory(str(tmp_path / "up3d" / "1.0.0")).info.metadata
    assert metadata["num_skipped"] == {"train": 1, "val": 1, "test": 0, "trainval": 2}
    assert [s["image"] for s in metadata["skipped"]["trainval"]] == [f"{CORRUPT_IMAGE}_image.png",
                                                                     f"{BAD_BETAS}_image.png"]
    assert "not a readable image" in metadata["skipped"]["train"][0]["reason"]
    assert "'betas' has 5 values, expected 10" in metadata["skipped"]["val"][0]["reason"]
    assert metadata["box_from_joints"]["test"] == [{"image": "00004_image.png", "reason": "no 00004_render_light.png"}]
    assert metadata["listed"] == {split: len(ids) for split, ids in SPLIT_LISTS.items()}
    assert metadata["body_model"] == "smpl" and metadata["smpl_path"] is None


def test_a_partial_download_builds_the_splits_whose_files_are_there(fake_up3d, tmp_path, caplog, capsys):
    partial = _partial_copy(fake_up3d[0], tmp_path / "partial", without="00003_joints.npy")  # of val, trainval
    with caplog.at_level("WARNING"):
        _build(partial, tmp_path / "tfds")
    builder, records = _records(str(tmp_path / "tfds"))
    assert {split: sorted(r) for split, r in records.items()} == {"train": KEPT["train"], "test": KEPT["test"]}
    (line,) = [m for m in caplog.messages if "not building" in m]  # one line: what is left out, and why
    assert line.startswith("up3d: building train, test; not building val, which lacks: 1 file(s) of the images "
                           "val.txt lists are not in ")
    assert "00003_joints.npy" in line and "; trainval, which lacks: 1 file(s) of the images trainval.txt" in line
    metadata = builder.info.metadata
    assert sorted(metadata["missing_splits"]) == ["trainval", "val"]
    assert "00003_joints.npy" in metadata["missing_splits"]["val"][0]
    assert metadata["listed"] == {"train": 3, "test": 1} and metadata["num_skipped"] == {"train": 1, "test": 0}
    assert metadata["empty_splits"] == {}

    # The CLI says what it did not build; a split asked for with --splits must be there.
    assert cli.main(["build", "up3d", f"--manual_dir={partial}", f"--data_dir={tmp_path / 'cli'}"]) == 0
    out = capsys.readouterr().out
    assert "up3d 1.0.0: test 1, train 2 examples" in out and "; not built: trainval, val (files missing" in out
    assert cli.main(["build", "up3d", f"--manual_dir={partial}", f"--data_dir={tmp_path / 'cli'}",
                     "--splits=test"]) == 0  # in the existing build: reused
    assert cli.main(["build", "up3d", f"--manual_dir={partial}", f"--data_dir={tmp_path / 'cli'}",
                     "--splits=val"]) == 2
    assert "already holds up3d with splits ['test', 'train'], not ['val']; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["build", "up3d", f"--manual_dir={partial}", f"--data_dir={tmp_path / 'cli2'}",
                     "--splits=test,val"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m datasets: error: UP-3D is not complete") and "00003_joints.npy" in err
    assert not (tmp_path / "cli2" / "up3d" / "1.0.0").exists()
    assert cli.main(["build", "up3d", f"--manual_dir={partial}", f"--data_dir={tmp_path / 'cli2'}",
                     "--splits=validation"]) == 2
    assert "splits must be distinct names among ('train', 'val', 'test', 'trainval')" in capsys.readouterr().err


def test_a_split_whose_every_image_is_unreadable_is_reported_and_the_others_are_written(
        fake_up3d, tmp_path, caplog, capsys):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    import datasets as datasets_lib  # noqa: PLC0415

    manual = _partial_copy(fake_up3d[0], tmp_path / "manual", without="")
    for image_id in ("00001", "00002"):  # with the corrupt 00005: every image of train
        path = os.path.join(manual, "up-3d", f"{image_id}_image.png")
        os.unlink(path)  # (a hard link to the fixture's file)
        with open(path, "wb") as stream:
            stream.write(b"not an image")
    with caplog.at_level("WARNING"):
        _build(manual, tmp_path / "tfds")
    builder, records = _records(str(tmp_path / "tfds"))
    assert {split: sorted(r) for split, r in records.items()} == {"val": ["00003"], "test": ["00004"],
                                                                  "trainval": ["00003"]}
    metadata = builder.info.metadata
    first = "00001_image.png is not a readable image (OpenCV cannot decode its 12 bytes)"
    assert metadata["empty_splits"] == {"train": {"listed": 3, "read": 3, "skipped": 3, "unit": "images",
                                                  "reasons": [{"reason": first, "count": 3}]}}
    assert metadata["num_skipped"]["train"] == 3 and metadata["listed"]["train"] == 3
    assert [s["image"] for s in metadata["skipped"]["train"]] == ["00001_image.png", "00002_image.png",
                                                                   "00005_image.png"]
    message = f'up3d: split train is empty and was not written: all 3 images read were skipped (3 like "{first}")'
    assert message in caplog.messages
    # The CLI writes the other splits and exits with status 1, saying which split and why.
    assert cli.main(["build", "up3d", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'cli'}"]) == 1
    captured = capsys.readouterr()
    assert "up3d 1.0.0: test 1, trainval 1, val 1 examples" in captured.out
    assert "not built: train (every record skipped)" in captured.out
    assert f"python -m datasets: error: {message}; the other splits were written" in captured.err.splitlines()
    assert len(tfds.builder_from_directory(str(tmp_path / "cli" / "up3d" / "1.0.0")).as_data_source("val")) == 1
    # Only empty splits asked for: nothing is written.
    with pytest.raises(datasets_lib.EmptySplitsError, match=r"split train is empty .*; nothing was written"):
        _build(manual, tmp_path / "only", splits=("train",))
    assert not (tmp_path / "only" / "up3d" / "1.0.0").exists()
    assert cli.main(["build", "up3d", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'only'}",
                     "--splits=train"]) == 1
    assert message in capsys.readouterr().err


def test_body_model_fills_the_mesh_and_fits_the_camera(built_with_body, fake_up3d, body):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    _, truth = fake_up3d
    _, records = _records(built_with_body)
    layout = keypoints.get_layout("cocoplus19", body="default")
    for image_id, record in [*records["trainval"].items(), *records["test"].items()]:
        schema.validate_record(record)
        assert record["has_mesh"] and record["body_model"].decode() == "default"
        out = _forward(body, record["smpl_pose"], record["smpl_betas"])
        np.testing.assert_allclose(record["vertices"], out.vertices, atol=1e-5)
        np.testing.assert_allclose(record["joints"], out.joints, atol=1e-5)
        lsp3d = np.asarray(keypoints.from_body(layout, record["vertices"], record["joints"]))[:14]
        uv = record["camera"][0] * (lsp3d[:, :2] + record["camera"][1:])
        error = np.linalg.norm(schema.crop_to_image(uv, record["crop_box"]) - truth[image_id][1], axis=1)
        assert error.max() < 1.0, (image_id, error)
    metadata = tfds.builder_from_directory(os.path.join(built_with_body, "up3d", "1.0.0")).info.metadata
    assert metadata["body_model"] == "default" and metadata["smpl_path"] == DEFAULT_BODY_PATH
    # The fit's own projected joints (j2d) agree with this builder's camera conventions.
    assert metadata["j2d_error_px"]["trainval"]["max"] < 0.01
    # ... and the records' cameras put the body's keypoints on the LSP joints.
    assert metadata["keypoint_error_px"]["trainval"]["max"] < 1.0


def test_training_pipeline_reads_the_records(built):
    source = pipeline.load_source(os.path.join(built, "up3d", "1.0.0"), data_dir=None, split="trainval")
    spec = pipeline.ExampleSpec(image_size=32, num_dense=8)
    batches = list(pipeline.eval_dataset(source, spec, batch_size=2))
    batch = batches[0]
    assert batch["image"].shape == (2, 32, 32, 3)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert all(not e for b in batches for e in b["error"])
    for b in batches:
        real = b["valid"] > 0
        assert np.all(b["has_smpl"][real] == 1) and np.all(b["has_camera"][real] == 1)
        assert np.all((b["keypoints_weight"][real] > 0).sum(axis=1) == 13)  # 13 of the 19 labelled
        np.testing.assert_allclose(b["keypoints_weight"][real].sum(axis=1), 19)  # normalized per example
        assert np.all(b["has_dense"] == 0) and np.all(b["has_joints"] == 0)
    assert "tensorflow" not in sys.modules


# ----------------------------------------------------------------------------- DensePose IUV maps (iuv_dir)


def random_iuv(rng, shape) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 map as Detectron's ``_IUV.png``: part 0-24, then 255 U, 255 V."""
    iuv = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    iuv[..., 0] = rng.integers(0, 25, shape, dtype=np.uint8)
    return iuv


def test_read_iuv_finds_checks_and_reencodes_detectron_maps(tmp_path):
    from datasets import _common  # noqa: PLC0415

    rng = np.random.default_rng(3)
    (tmp_path / "train2014").mkdir()
    iuv = random_iuv(rng, (6, 5))
    assert cv2.imwrite(str(tmp_path / "train2014" / "a_IUV.png"), iuv)  # as Detectron: cv2.imwrite of (I, U, V)
    found = _common.read_iuv(str(tmp_path), "train2014/a.jpg", (6, 5))
    np.testing.assert_array_equal(schema.decode_iuv(found), iuv)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "train2014" / "a_IUV.png"))[..., 0], iuv[..., 0])
    assert _common.read_iuv(str(tmp_path), "train2014/b.jpg", (6, 5)) is None  # no file: no map
    # The flat folder too, unless names repeat across folders (flat=False).
    assert cv2.imwrite(str(tmp_path / "c_IUV.png"), iuv)
    assert _common.read_iuv(str(tmp_path), "seq/c.jpg", (6, 5)) is not None
    assert _common.read_iuv(str(tmp_path), "seq/c.jpg", (6, 5), flat=False) is None
    assert _common.iuv_paths("/i", "imageFiles/s/x.1.jpg", flat=False) == [
        "/i/imageFiles/s/x.1_IUV.png", "/i/s/x.1_IUV.png"]
    bad_part = iuv.copy()
    bad_part[2, 3, 0] = 25
    for name, array, reason in (
            ("d", iuv[:5], "is 5x5 (height x width), the image 6x5: it is not this image's map"),
            ("e", iuv[..., 0], "has 1 channel(s) of uint8, expected 3 of uint8"),
            ("f", iuv.astype(np.uint16) * 256, "channel(s) of uint16"),
            ("g", bad_part, "has part index 25")):
        assert cv2.imwrite(str(tmp_path / f"{name}_IUV.png"), array)
        with pytest.raises(up3d.Skip, match=re.escape(reason)):
            _common.read_iuv(str(tmp_path), f"{name}.png", (6, 5))
    (tmp_path / "h_IUV.png").write_bytes(b"\x89PNG not a png")
    with pytest.raises(up3d.Skip, match="h_IUV.png is not a readable image"):
        _common.read_iuv(str(tmp_path), "h.png", (6, 5))
    with pytest.raises(up3d.Skip, match="not relative"):
        _common.read_iuv(str(tmp_path), "../a.jpg", (6, 5))


def test_iuv_dir_attaches_densepose_maps_checks_their_size_and_counts_the_rest(fake_up3d, tmp_path, caplog):
    with pytest.raises(NotADirectoryError, match=f"iuv_dir {tmp_path / 'none'} is not a directory"):
        up3d.Builder(data_dir=str(tmp_path / "tfds"), iuv_dir=tmp_path / "none")
    assert not (tmp_path / "tfds").exists()
    iuv_dir = tmp_path / "iuv"
    (iuv_dir / "up-3d").mkdir(parents=True)
    rng = np.random.default_rng(2)
    written = {"00001": random_iuv(rng, IMAGE_SHAPE), "00003": random_iuv(rng, IMAGE_SHAPE)}
    assert cv2.imwrite(str(iuv_dir / "00001_image_IUV.png"), written["00001"])  # Detectron's flat output folder
    assert cv2.imwrite(str(iuv_dir / "up-3d" / "00003_image_IUV.png"), written["00003"])  # mirroring M
    assert cv2.imwrite(str(iuv_dir / "00002_image_IUV.png"), random_iuv(rng, (IMAGE_SHAPE[0] + 2, IMAGE_SHAPE[1])))
    with caplog.at_level("WARNING"):
        _build(fake_up3d[0], tmp_path / "tfds", iuv_dir=str(iuv_dir))
    builder, records = _records(str(tmp_path / "tfds"))
    # 00002's map has another size: its record is skipped with the reason; 00004 has no map.
    assert {split: sorted(r) for split, r in records.items()} == {
        split: [i for i in ids if i != "00002"] for split, ids in KEPT.items()}
    for by_id in records.values():
        for image_id, record in by_id.items():
            schema.validate_record(record)
            assert bool(record["has_iuv"]) == (image_id in written) and record["body_model"].decode() == "smpl"
            if image_id in written:
                np.testing.assert_array_equal(schema.decode_iuv(record["iuv"]), written[image_id])
            else:
                assert record["iuv"] == b""
    metadata = builder.info.metadata
    assert metadata["iuv_dir"] == str(iuv_dir)
    assert metadata["with_iuv"] == {"train": 1, "val": 1, "test": 0, "trainval": 2}
    assert metadata["no_iuv"] == {"train": 0, "val": 0, "test": 1, "trainval": 0}
    reason = ("IUV map 00002_image_IUV.png is 142x130 (height x width), the image 140x130: "
              "it is not this image's map")
    (entry,) = [s for s in metadata["skipped"]["train"] if s["image"] == "00002_image.png"]
    assert entry["reason"].startswith(reason)
    assert f"up3d train: skipped 00002_image.png: {reason}" in caplog.text
    # The image + IUV input reads the stored map.
    source = pipeline.load_source(os.path.join(tmp_path, "tfds", "up3d", "1.0.0"), data_dir=None, split="val")
    spec = pipeline.ExampleSpec(image_size=32, inputs=("image", "iuv"), num_dense=8)
    (batch,) = pipeline.eval_dataset(source, spec, batch_size=1)
    assert batch["valid"][0] == 1 and not batch["error"][0] and batch["iuv"].shape == (1, 32, 32, 3)
    # DensePose's maps are on SMPL's chart: refused with records of another body model.
    with pytest.raises(ValueError, match="SMPL's DensePose chart.*'default'"):
        _build(fake_up3d[0], tmp_path / "tfds_default", iuv_dir=str(iuv_dir), smpl_path=DEFAULT_BODY_PATH)
