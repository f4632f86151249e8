"""Tests for datasets/coco_densepose: a tiny fake COCO-DensePose layout built and read back."""

from __future__ import annotations

import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

import datasets
from datasets.coco_densepose import coco_densepose_dataset_builder as cdp
from dct_jax import keypoints as keypoints_lib
from dct_jax.data import pipeline, schema

# pycocotools' decoder under numpy 2 (its own code; the decoded masks are checked below).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# Image 1 of train: 96 x 128; person 101's box spans 32 x 64 pixels, so one
# pixel is 8 mask columns and 4 mask rows of the 256 x 256 dp_masks grid.
BBOX_101 = [10.0, 8.0, 32.0, 64.0]
DENSE_101 = {
    "dp_x": [10.5, 100.25, 200.0, 128.0, 64.75],
    "dp_y": [20.0, 30.5, 250.125, 12.0, 128.0],
    "dp_I": [1.0, 2.0, 3.0, 23.0, 24.0],
    "dp_U": [0.123456789, 0.5, 1.0, 0.0, 0.987654321],
    "dp_V": [0.25, 0.75, 0.333333333, 1.0, 0.0],
}
# COCO-17 index -> (x, y, v) for person 101; everything else unlabelled.
KEYPOINTS_101 = {5: (20, 30, 2), 14: (25, 60, 1), 0: (26, 12, 2), 15: (200, 50, 2)}  # 15: outside the image


def _mask(rows: slice, cols: slice) -> dict:
    grid = np.zeros((256, 256), np.uint8)
    grid[rows, cols] = 1
    rle = mask_util.encode(np.asfortranarray(grid))
    return {"counts": rle["counts"].decode(), "size": list(rle["size"])}


def _dp_masks_101() -> list:
    masks: list = [[] for _ in range(14)]
    masks[0] = _mask(slice(64, 192), slice(64, 192))     # torso
    masks[13] = _mask(slice(0, 64), slice(96, 160))      # head
    masks[1] = _mask(slice(128, 160), slice(160, 224))   # right hand, over the torso's edge: painted later
    return masks


def _coarse_101() -> np.ndarray:
    coarse = np.zeros((256, 256), np.uint8)
    coarse[64:192, 64:192] = 1
    coarse[0:64, 96:160] = 14
    coarse[128:160, 160:224] = 2
    return coarse


def _keypoints(table: dict) -> list:
    values = [0] * 51
    for k, (x, y, v) in table.items():
        values[3 * k: 3 * k + 3] = [x, y, v]
    return values


def _person(ann_id: int, image_id: int, bbox, *, dense=None, masks=None, keypoints=None) -> dict:
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": list(bbox),
           "area": float(bbox[2] * bbox[3]), "keypoints": keypoints if keypoints is not None else [0] * 51}
    if dense is not None:
        ann.update(dense)
        ann["dp_masks"] = masks if masks is not None else [[] for _ in range(14)]
    return ann


def _write_image(path: str, height: int, width: int, seed: int) -> None:
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 40 * seed)], -1).astype(np.uint8)
    assert cv2.imwrite(path, image)


def make_layout(root: str) -> str:
    """A fake manual_dir: 4 images (one corrupt) and the three annotation files."""
    manual = os.path.join(root, "manual")
    for folder in ("train2014", "val2014", "annotations"):
        os.makedirs(os.path.join(manual, folder))
    _write_image(os.path.join(manual, "train2014", "COCO_train2014_000000000001.jpg"), 96, 128, 1)
    with open(os.path.join(manual, "train2014", "COCO_train2014_000000000002.jpg"), "wb") as f:
        f.write(b"\xff\xd8 this is not a JPEG")
    _write_image(os.path.join(manual, "val2014", "COCO_val2014_000000000003.jpg"), 80, 60, 3)
    _write_image(os.path.join(manual, "val2014", "COCO_val2014_000000000004.jpg"), 100, 120, 4)

    def image(image_id, folder, height, width):
        return {"id": image_id, "file_name": f"COCO_{folder}_{image_id:012d}.jpg", "height": height, "width": width}

    bad_dense = {k: list(v) for k, v in DENSE_101.items()}
    bad_dense["dp_x"] = bad_dense["dp_x"][:4]
    files = {
        "train": {
            "images": [image(1, "train2014", 96, 128), image(2, "train2014", 50, 50)],
            "annotations": [
                _person(101, 1, BBOX_101, dense=DENSE_101, masks=_dp_masks_101(),
                        keypoints=_keypoints(KEYPOINTS_101)),
                _person(102, 1, [60, 10, 30, 70], keypoints=_keypoints({0: (70, 20, 2)})),  # no DensePose data
                _person(103, 2, [5, 5, 20, 30], dense=DENSE_101),                            # corrupt image
                _person(104, 1, [70, 20, 40, 60], dense=bad_dense),                          # dp_x too short
            ],
        },
        "valminusminival": {
            "images": [image(3, "val2014", 80, 60)],
            "annotations": [_person(201, 3, [4.5, 6.25, 40.5, 60.0], dense=DENSE_101)],  # no masks, no keypoints
        },
        "minival": {
            "images": [image(4, "val2014", 100, 120)],
            "annotations": [
                _person(301, 4, [10, 10, 40, 80], dense=DENSE_101, masks=_dp_masks_101(),
                        keypoints=_keypoints({5: (30, 40, 2), 6: (45, 40, 2)})),
                _person(302, 4, [60, 15, 45, 80], dense=DENSE_101, masks=_dp_masks_101()),
                {"id": 303, "image_id": 4, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 50, 50]},
            ],
        },
    }
    for split, content in files.items():
        content["categories"] = [{"id": 1, "name": "person"}]
        with open(os.path.join(manual, "annotations", f"densepose_coco_2014_{split}.json"), "w") as f:
            json.dump(content, f)
    return manual


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(builder, data_dir, manual_dir, log records) of the fake layout, built once."""
    import tensorflow_datasets as tfds

    root = str(tmp_path_factory.mktemp("coco_densepose"))
    manual = make_layout(root)
    data_dir = os.path.join(root, "tfds")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.WARNING)
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(handler)
    load, reads = cdp.load_split_annotations, []
    cdp.load_split_annotations = lambda path: reads.append(os.path.basename(path)) or load(path)
    try:
        builder = datasets.builder_class("coco_densepose")(data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    finally:
        absl_logger.removeHandler(handler)
        cdp.load_split_annotations = load
    # Each annotation file (526 MB for train) is parsed once.
    assert sorted(reads) == sorted(f"densepose_coco_2014_{split}.json" for split in cdp.SPLITS)
    return builder, data_dir, manual, [r.getMessage() for r in records]


def _read_split(builder, split: str) -> dict[str, dict]:
    source = builder.as_data_source(split=split)
    out = {}
    for i in range(len(source)):
        record = {k: (v.item() if isinstance(v, np.ndarray) and v.dtype == object and v.ndim == 0 else v)
                  for k, v in source[i].items()}
        schema.validate_record(record)
        out[record["record_id"].decode() if isinstance(record["record_id"], bytes) else record["record_id"]] = record
    return out


# ----------------------------------------------------------------------------- conventions


def test_coarse_parts_follow_densepose_order_and_fine_parts():
    # Coarse order from detectron2's DENSEPOSE_DATASETS.md; fine part names from dct_jax.densepose.
    assert cdp.COARSE_PART_NAMES[0] == "torso" and cdp.COARSE_PART_NAMES[-1] == "head"
    assert sorted(p for fines in cdp.COARSE_TO_FINE for p in fines) == list(range(1, 25))
    assert cdp.FINE_TO_COARSE.tolist() == [0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11,
                                           12, 13, 12, 13, 14, 14]
    # Stored label -> coarse part is the identity on 0-14.
    assert cdp.FINE_TO_COARSE[cdp.COARSE_LABEL].tolist() == list(range(15))


def test_keypoint_table_matches_the_names():
    names = [keypoints_lib.COCO17_NAMES[i] if i >= 0 else None for i in cdp.COCO17_INDEX]
    expected = [n if n in keypoints_lib.COCO17_NAMES else None for n in keypoints_lib.COCOPLUS19_NAMES]
    assert names == expected
    assert expected.count(None) == 2  # neck, head_top


def test_paste_parts_matches_a_per_pixel_loop_for_a_fractional_box():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 15, (256, 256)).astype(np.uint8)
    bbox, shape = (3.3, 2.7, 17.2, 23.9), (30, 25)
    got = cdp.paste_parts(coarse, bbox, shape)
    expected = np.zeros(shape, np.uint8)
    for row in range(shape[0]):
        for col in range(shape[1]):
            cx, cy = col + 0.5, row + 0.5
            if bbox[0] <= cx < bbox[0] + bbox[2] and bbox[1] <= cy < bbox[1] + bbox[3]:
                j = int((cx - bbox[0]) / bbox[2] * 256)
                i = int((cy - bbox[1]) / bbox[3] * 256)
                expected[row, col] = cdp.COARSE_LABEL[coarse[i, j]]
    np.testing.assert_array_equal(got, expected)


def test_decode_dp_masks_paints_in_order_and_rejects_bad_masks():
    np.testing.assert_array_equal(cdp.decode_dp_masks(_dp_masks_101()), _coarse_101())
    assert cdp.decode_dp_masks([[] for _ in range(14)]) is None
    with pytest.raises(cdp.InconsistentAnnotation, match="list of 14"):
        cdp.decode_dp_masks(_dp_masks_101()[:13])
    broken = _dp_masks_101()
    broken[3] = {"counts": "not RLE !!", "size": [256, 256]}
    with pytest.raises(cdp.InconsistentAnnotation, match=r"dp_masks\[3\]"):
        cdp.decode_dp_masks(broken)


@pytest.mark.parametrize("change, match", [
    ({"dp_I": [0.0, 2.0, 3.0, 23.0, 24.0]}, "dp_I"),
    ({"dp_I": [1.5, 2.0, 3.0, 23.0, 24.0]}, "dp_I"),
    ({"dp_U": [1.2, 0.5, 1.0, 0.0, 0.9]}, "dp_U"),
    ({"dp_V": [0.1, float("nan"), 1.0, 0.0, 0.9]}, "NaN"),
    ({"dp_x": []}, "differ in length"),
    ({k: [] for k in cdp.DENSE_POINT_KEYS}, "no dense points"),
])
def test_dense_fields_reject_inconsistent_annotations(change, match):
    with pytest.raises(cdp.InconsistentAnnotation, match=match):
        cdp.dense_fields({**DENSE_101, **change})
    without = {k: v for k, v in DENSE_101.items() if k != "dp_V"}
    with pytest.raises(cdp.InconsistentAnnotation, match="lacks"):
        cdp.dense_fields(without)


# ----------------------------------------------------------------------------- the build


def test_splits_and_records(built):
    builder, *_ = built
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
        "train": 1, "valminusminival": 1, "minival": 2}
    assert set(_read_split(builder, "train")) == {"coco_densepose/train/101"}
    minival = _read_split(builder, "minival")
    assert set(minival) == {"coco_densepose/minival/301", "coco_densepose/minival/302"}
    assert {r["image_id"] for r in minival.values()} == {b"4"}  # two people, one image


def test_record_fields(built):
    builder, _, manual, _ = built
    record = _read_split(builder, "train")["coco_densepose/train/101"]
    with open(os.path.join(manual, "train2014", "COCO_train2014_000000000001.jpg"), "rb") as f:
        assert record["image"] == f.read()  # the JPEG as it is
    assert record["body_model"] == b"smpl" and record["image_id"] == b"1"
    np.testing.assert_array_equal(record["image_shape"], [96, 128])
    np.testing.assert_array_equal(record["bbox"], BBOX_101)
    np.testing.assert_array_equal(record["crop_box"], schema.square_around(BBOX_101))
    for key, values in DENSE_101.items():  # exactly the annotation's values
        dtype = schema.FIELDS_BY_NAME[key].dtype
        np.testing.assert_array_equal(record[key], np.asarray(values, np.float64).astype(dtype))
        assert record[key].dtype == dtype
    flags = {k: bool(record[k]) for k in schema.FLAG_GROUPS}
    assert flags == {"has_keypoints": True, "has_keypoints3d": False, "has_dense": True, "has_iuv": False,
                     "has_segmentation": True, "has_smpl": False, "has_camera": False, "has_mesh": False}


def test_keypoints_are_mapped_by_name_with_half_pixel_offset(built):
    builder, *_ = built
    record = _read_split(builder, "train")["coco_densepose/train/101"]
    index = {n: i for i, n in enumerate(keypoints_lib.COCOPLUS19_NAMES)}
    xy, vis = record["keypoints"], record["keypoints_visibility"]
    np.testing.assert_array_equal(xy[index["left_shoulder"]], [20.5, 30.5])
    np.testing.assert_array_equal(xy[index["right_knee"]], [25.5, 60.5])
    np.testing.assert_array_equal(xy[index["nose"]], [26.5, 12.5])
    assert vis[index["left_shoulder"]] == 2 and vis[index["right_knee"]] == 1 and vis[index["nose"]] == 2
    # Labelled outside the 128-wide image: unlabelled, like every keypoint COCO did not label.
    labelled = {n for n, v in zip(keypoints_lib.COCOPLUS19_NAMES, vis) if v > 0}
    assert labelled == {"left_shoulder", "right_knee", "nose"}
    np.testing.assert_array_equal(xy[vis == 0], 0.0)


def test_segmentation_is_the_masks_placed_over_the_box(built):
    builder, *_ = built
    record = _read_split(builder, "train")["coco_densepose/train/101"]
    seg = schema.decode_segmentation(record["segmentation"])
    assert seg.shape == (96, 128)
    # Known pixels: image (row, col) = box origin (8, 10) + mask (row / 4, col / 8).
    assert seg[40, 26] == 1    # torso, mask (128, 128)
    assert seg[16, 26] == 23   # head, mask (32, 128)
    assert seg[44, 32] == 3    # right hand painted over the torso, mask (144, 176)
    assert seg[68, 12] == 0    # inside the box, no part
    assert seg[0, 0] == 0 and seg[80, 100] == 0  # outside the box
    # DensePose's notebook: cv2.resize (nearest) of the label map to the box, pasted at the box.
    expected = np.zeros((96, 128), np.uint8)
    expected[8:72, 10:42] = cv2.resize(_coarse_101(), (32, 64), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(cdp.FINE_TO_COARSE[seg], expected)


def test_record_without_masks_or_keypoints(built):
    builder, *_ = built
    record = _read_split(builder, "valminusminival")["coco_densepose/valminusminival/201"]
    assert not record["has_segmentation"] and record["segmentation"] == b""
    assert not record["has_keypoints"] and record["has_dense"]
    np.testing.assert_array_equal(record["bbox"], [4.5, 6.25, 40.5, 60.0])


def test_skipped_annotations_are_counted_named_and_logged(built):
    import tensorflow_datasets as tfds

    builder, data_dir, _, log = built
    reread = tfds.builder_from_directory(os.path.join(data_dir, "coco_densepose", "1.0.0"))
    for metadata in (builder.info.metadata, reread.info.metadata):
        skipped = {entry["annotation_id"]: entry for entry in metadata["skipped"]["train"]}
        assert set(skipped) == {103, 104}
        assert skipped[103]["kind"] == "image" and "cannot decode" in skipped[103]["reason"]
        assert skipped[103]["file_name"] == "COCO_train2014_000000000002.jpg"
        assert skipped[104]["kind"] == "annotation" and "differ in length" in skipped[104]["reason"]
        assert metadata["skipped"]["minival"] == [] and metadata["skipped"]["valminusminival"] == []
        train = metadata["splits"]["train"]
        assert train == {"annotation_file": os.path.join("annotations", "densepose_coco_2014_train.json"),
                         "annotations": 4, "densepose_annotations": 3, "not_densepose": 1, "records": 1,
                         "skipped_image": 1, "skipped_annotation": 1, "skipped_iuv": 0,
                         "keypoints_outside_image": 1, "records_without_segmentation": 0}
        assert metadata["splits"]["minival"]["not_densepose"] == 1
        assert metadata["splits"]["valminusminival"]["records_without_segmentation"] == 1
        assert "FINE_TO_COARSE" in metadata["conventions"]["segmentation"]
    assert any("103" in m and "cannot decode" in m for m in log)
    assert any("104" in m and "differ in length" in m for m in log)


def test_pipeline_reads_a_record_with_dense_keypoints(built):
    _, data_dir, _, _ = built
    source = pipeline.load_source("coco_densepose", data_dir=data_dir, split="train")
    spec = pipeline.ExampleSpec(image_size=32, inputs=("image", "segmentation"), num_dense=8,
                                dense_source="annotation", refine_iuv=False)
    batch = pipeline.eval_dataset(source, spec, batch_size=1)[0]
    assert batch["valid"][0] == 1 and batch["skipped"][0] == 0 and batch["has_dense"][0] == 1
    # 5 annotated points in 8 slots, weights normalized per example (x 8/5) as the official loader.
    np.testing.assert_allclose(batch["dense_weight"][0], [1.6, 1.6, 1.6, 1.6, 1.6, 0, 0, 0], rtol=1e-6)
    crop_box = schema.square_around(BBOX_101)
    xy = schema.image_to_crop(schema.dense_to_image(DENSE_101["dp_x"], DENSE_101["dp_y"], BBOX_101), crop_box)
    np.testing.assert_allclose(batch["dense_xy"][0, :5], xy, atol=1e-5)
    assert batch["dense_vertex_ids"][0, :5].max() < keypoints_lib.NUM_VERTICES["smpl"]
    assert (batch["keypoints_weight"][0] > 0).sum() == 3 and batch["segmentation"][0].any()
    assert batch["image_id"][0] == "1"


def test_odd_entries_are_skipped_and_named(built, tmp_path):
    # The generator alone, on entries the fake files do not have.
    _, _, manual, _ = built
    good = _person(500, 1, BBOX_101, dense=DENSE_101)
    images = {1: {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 96, "width": 128},
              5: {"id": 5},  # no file_name
              6: {"id": 6, "file_name": "COCO_train2014_000000000001.jpg", "height": 10, "width": 10}}
    masks_only = {"id": 502, "image_id": 1, "bbox": BBOX_101, "dp_masks": _dp_masks_101()}
    by_image = {1: [good, dict(good), {**good, "id": "x"}, masks_only], 99: [_person(501, 99, BBOX_101, dense=DENSE_101)],
                5: [_person(503, 5, BBOX_101, dense=DENSE_101)], 6: [_person(504, 6, BBOX_101, dense=DENSE_101)]}
    annotations = cdp.SplitAnnotations(path=os.path.join(manual, "annotations", "x.json"), images=images,
                                       by_image=by_image, num_annotations=8, num_densepose=8,
                                       malformed=[(None, "annotations[7] is not an object")])
    builder = datasets.builder_class("coco_densepose")(data_dir=str(tmp_path), manual_dir=manual)
    written = [key for key, _ in builder._generate_examples("train", annotations)]
    assert written == [500]
    reasons = [(e["annotation_id"], e["kind"], e["reason"]) for e in builder.info.metadata["skipped"]["train"]]
    expected = [(None, "annotation", "is not an object"), (500, "annotation", "repeats"),
                ("x", "annotation", "no integer id"), (502, "annotation", "lacks"),
                (501, "annotation", "not among the file's images"), (503, "image", "no file_name"),
                (504, "image", "decodes to 96x128")]
    assert len(reasons) == len(expected)
    for (got_id, got_kind, got_reason), (want_id, want_kind, want_reason) in zip(reasons, expected):
        assert (got_id, got_kind) == (want_id, want_kind) and want_reason in got_reason, got_reason
    counts = builder.info.metadata["splits"]["train"]
    assert (counts["records"], counts["skipped_image"], counts["skipped_annotation"]) == (1, 2, 5)


def test_load_split_annotations_groups_densepose_people(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": [2]}],
        "annotations": [_person(1, 1, BBOX_101, dense=DENSE_101), _person(2, 1, BBOX_101), "junk",
                        _person(3, [1], BBOX_101, dense=DENSE_101), _person(4, 7, BBOX_101, dense=DENSE_101)]}))
    loaded = cdp.load_split_annotations(str(path))
    assert list(loaded.images) == [1]
    assert {k: [a["id"] for a in v] for k, v in loaded.by_image.items()} == {1: [1], 7: [4]}
    assert loaded.malformed == [(None, "annotations[2] is not an object"), (3, "has no usable image_id (got [1])")]
    assert (loaded.num_annotations, loaded.num_densepose) == (5, 4)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*download it again"):
        cdp.load_split_annotations(str(path))
    path.write_text("[]")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        cdp.load_split_annotations(str(path))


# ----------------------------------------------------------------------------- missing files


def test_missing_files_fail_at_once_with_what_to_download(tmp_path):
    import tensorflow_datasets as tfds

    manual = tmp_path / "manual"
    (manual / "val2014").mkdir(parents=True)
    (manual / "val2014" / "x.jpg").write_bytes(b"x")
    (manual / "densepose_coco_2014_minival.json").write_text("{}")  # in the wrong folder
    builder = datasets.builder_class("coco_densepose")(data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError) as info:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    message = str(info.value)
    for split in cdp.SPLITS:
        assert f"https://dl.fbaipublicfiles.com/densepose/densepose_coco_2014_{split}.json" in message
        assert os.path.join(str(manual), "annotations", f"densepose_coco_2014_{split}.json") in message
    assert "http://images.cocodataset.org/zips/train2014.zip" in message
    assert "val2014.zip" not in message  # val2014/ is there
    assert f"found {manual / 'densepose_coco_2014_minival.json'}: move it there" in message
    assert not builder.is_prepared()


def test_a_single_split_needs_only_its_files(tmp_path):
    manual = str(tmp_path)
    assert len(cdp.missing_files(manual, ("minival",))) == 2  # its json and val2014/
    assert not any("train" in line for line in cdp.missing_files(manual, ("minival",)))
    with pytest.raises(ValueError, match="splits"):
        datasets.builder_class("coco_densepose")(splits=("val",), data_dir=str(tmp_path))


def test_minival_alone_is_built_from_its_files(tmp_path, caplog, capsys):
    from datasets import __main__ as cli

    manual = make_layout(str(tmp_path))  # then keep only what evaluation needs: minival's json, val2014/
    shutil.rmtree(os.path.join(manual, "train2014"))
    for split in ("train", "valminusminival"):
        os.unlink(os.path.join(manual, "annotations", f"densepose_coco_2014_{split}.json"))
    builder = datasets.builder_class("coco_densepose")(data_dir=str(tmp_path / "tfds"), manual_dir=manual)
    with caplog.at_level("WARNING"):
        builder.download_and_prepare()
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"minival": 2}
    (line,) = [m for m in caplog.messages if "not building" in m]
    assert line.startswith("coco_densepose: building minival; not building train, which lacks: ")
    assert "train2014.zip" in line and "densepose_coco_2014_train.json" in line
    assert "; valminusminival, which lacks: " in line and "val2014.zip" not in line
    assert sorted(builder.info.metadata["missing_splits"]) == ["train", "valminusminival"]
    assert list(builder.info.metadata["splits"]) == ["minival"]
    # The CLI: --splits=minival builds it alone; asking for train too is an error naming its files.
    args = ["build", "coco_densepose", f"--manual_dir={manual}"]
    assert cli.main([*args, f"--data_dir={tmp_path / 'cli'}", "--splits=minival"]) == 0
    assert "coco_densepose 1.0.0: minival 2 examples" in capsys.readouterr().out
    assert cli.main([*args, f"--data_dir={tmp_path / 'cli2'}", "--splits=minival,train"]) == 2
    err = capsys.readouterr().err
    assert "train2014.zip" in err and "densepose_coco_2014_train.json" in err and "valminusminival" not in err


def test_a_split_whose_every_image_is_unreadable_is_reported_and_the_others_are_written(tmp_path, caplog):
    import tensorflow_datasets as tfds

    manual = make_layout(str(tmp_path))
    with open(os.path.join(manual, "val2014", "COCO_val2014_000000000003.jpg"), "wb") as f:  # valminusminival's
        f.write(b"not a JPEG")
    builder = datasets.builder_class("coco_densepose")(data_dir=str(tmp_path / "tfds"), manual_dir=manual)
    with caplog.at_level("WARNING"):
        builder.download_and_prepare()
    reread = tfds.builder_from_directory(os.path.join(tmp_path, "tfds", "coco_densepose", "1.0.0"))
    assert {s: i.num_examples for s, i in reread.info.splits.items()} == {"train": 1, "minival": 2}
    metadata = reread.info.metadata
    (reason,) = [entry["reason"] for entry in metadata["skipped"]["valminusminival"]]
    assert reason.startswith("OpenCV cannot decode ") and reason.endswith("COCO_val2014_000000000003.jpg (10 bytes)")
    assert metadata["empty_splits"] == {"valminusminival": {
        "listed": 1, "read": 1, "skipped": 1, "unit": "DensePose annotations", "reasons": [{"reason": reason, "count": 1}]}}
    assert metadata["splits"]["valminusminival"]["skipped_image"] == 1
    assert builder.empty_splits == metadata["empty_splits"]
    assert any(m.startswith("coco_densepose: split valminusminival is empty and was not written: all 1 DensePose "
                            "annotations read were skipped (1 like \"OpenCV cannot decode") for m in caplog.messages)
    assert len(reread.as_data_source(split="minival")) == 2


def test_cli_reports_missing_files_on_one_error(tmp_path, capsys):
    from datasets import __main__ as cli

    manual = tmp_path / "manual"
    manual.mkdir()
    code = cli.main(["build", "coco_densepose", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'tfds'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train2014.zip" in err and "densepose_coco_2014_minival.json" in err


# ----------------------------------------------------------------------------- DensePose IUV maps (iuv_dir)


def test_iuv_dir_attaches_one_map_per_image_to_its_people(tmp_path):
    import tensorflow_datasets as tfds
    from test_up3d import random_iuv

    manual = make_layout(str(tmp_path))
    # A fifth image, in minival, whose map has the wrong size.
    _write_image(os.path.join(manual, "val2014", "COCO_val2014_000000000005.jpg"), 70, 90, 5)
    path = os.path.join(manual, "annotations", "densepose_coco_2014_minival.json")
    with open(path) as f:
        minival = json.load(f)
    minival["images"].append({"id": 5, "file_name": "COCO_val2014_000000000005.jpg", "height": 70, "width": 90})
    minival["annotations"].append(_person(401, 5, [5, 5, 30, 50], dense=DENSE_101))
    with open(path, "w") as f:
        json.dump(minival, f)
    iuv_dir = tmp_path / "iuv"
    (iuv_dir / "train2014").mkdir(parents=True)
    rng = np.random.default_rng(4)
    written = {1: random_iuv(rng, (96, 128)), 4: random_iuv(rng, (100, 120))}
    assert cv2.imwrite(str(iuv_dir / "train2014" / "COCO_train2014_000000000001_IUV.png"), written[1])
    assert cv2.imwrite(str(iuv_dir / "COCO_val2014_000000000004_IUV.png"), written[4])  # flat
    assert cv2.imwrite(str(iuv_dir / "COCO_val2014_000000000005_IUV.png"), random_iuv(rng, (90, 70)))  # transposed
    with pytest.raises(NotADirectoryError, match="iuv_dir .*missing is not a directory"):
        datasets.builder_class("coco_densepose")(data_dir=str(tmp_path / "tfds"), iuv_dir=tmp_path / "missing")
    builder = datasets.builder_class("coco_densepose")(data_dir=str(tmp_path / "tfds"), iuv_dir=str(iuv_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))

    by_image = {}
    for split in cdp.SPLITS:
        for record in _read_split(builder, split).values():
            by_image.setdefault(int(record["image_id"]), []).append(record)
    assert {k: len(v) for k, v in by_image.items()} == {1: 1, 3: 1, 4: 2}  # 401 (image 5) skipped
    for image_id, records in by_image.items():
        for record in records:
            assert bool(record["has_iuv"]) == (image_id in written)
            if image_id in written:
                np.testing.assert_array_equal(schema.decode_iuv(record["iuv"]), written[image_id])
    reread = tfds.builder_from_directory(os.path.join(tmp_path, "tfds", "coco_densepose", "1.0.0"))
    metadata = reread.info.metadata
    assert metadata["iuv_dir"] == str(iuv_dir)
    assert metadata["with_iuv"] == {"train": 1, "valminusminival": 0, "minival": 2}
    assert metadata["no_iuv"] == {"train": 0, "valminusminival": 1, "minival": 0}
    (entry,) = metadata["skipped"]["minival"]
    assert entry["annotation_id"] == 401 and entry["kind"] == "iuv"
    assert entry["reason"].startswith("IUV map COCO_val2014_000000000005_IUV.png is 90x70 (height x width), "
                                      "the image 70x90: it is not this image's map")
    assert metadata["splits"]["minival"]["skipped_iuv"] == 1 and metadata["splits"]["minival"]["records"] == 2
