"""Tests for dct_jax.data.schema: defaults, flags, validation, codecs, coordinates.

References: the COCO-DensePose point formula of DensePose's own notebook
(``x = bbox_x + dp_x / 255 * bbox_w``), and TFDS's own serializer for the
round trip of a record through the features (no TensorFlow).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dct_jax import keypoints
from dct_jax.data import schema

NUM_DEFAULT_VERTICES = keypoints.NUM_VERTICES["default"]


def _png(height=6, width=8):
    rgb = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    return rgb, schema.encode_image(rgb, ext=".png")


def _full_record(**overrides):
    _, image = _png()
    seg = np.zeros((6, 8), np.uint8)
    seg[2:4, 3:5] = 5
    iuv = np.stack([seg, seg * 10, seg * 20], -1)
    values = dict(
        record_id="r/1", image=image, body_model="default",
        bbox=(1.0, 2.0, 4.0, 3.0), crop_box=(0.0, -1.0, 8.0),
        keypoints=np.ones((19, 2)), keypoints_visibility=np.full(19, 2),
        dp_x=[0.0, 255.0], dp_y=[10.0, 20.0], dp_I=[1, 24], dp_U=[0.0, 1.0], dp_V=[0.5, 0.25],
        iuv=schema.encode_iuv(iuv), segmentation=schema.encode_segmentation(seg),
        smpl_pose=np.zeros(72), smpl_betas=np.zeros(10), camera=(0.9, 0.0, 0.0),
        vertices=np.zeros((NUM_DEFAULT_VERTICES, 3)), joints=np.zeros((24, 3)),
        keypoints3d=np.ones((19, 3)), keypoints3d_visibility=np.full(19, 2), gender="female")
    values.update(overrides)
    return schema.make_record(**values)


def test_minimal_record_gets_defaults_and_false_flags():
    rgb, image = _png()
    record = schema.make_record(record_id="a", image=image)
    assert set(record) == {f.name for f in schema.FIELDS}
    assert all(not record[flag] for flag in schema.FLAG_GROUPS)
    np.testing.assert_array_equal(record["image_shape"], [6, 8])
    np.testing.assert_array_equal(record["bbox"], [0, 0, 8, 6])
    np.testing.assert_array_equal(record["crop_box"], [0, -1, 8])  # square around the box
    assert record["image_id"] == "a" and record["body_model"] == ""
    assert record["dp_x"].shape == (0,) and record["vertices"].shape == (0, 3)
    assert record["iuv"] == b"" and record["keypoints"].shape == (19, 2)
    for field in schema.FIELDS:
        if field.dtype not in (schema.TEXT, schema.BYTES):
            assert record[field.name].dtype == np.dtype(field.dtype), field.name
    np.testing.assert_array_equal(schema.decode_image(record["image"]), rgb)


def test_flags_follow_the_fields_given():
    record = _full_record()
    assert all(record[flag] for flag in schema.FLAG_GROUPS)
    assert record["keypoints_visibility"].dtype == np.uint8
    record = _full_record(has_keypoints=False)  # explicit flags win
    assert not record["has_keypoints"]


@pytest.mark.parametrize("overrides, message", [
    (dict(keypoints=np.zeros((18, 2))), "'keypoints' must have shape"),
    (dict(dp_y=[1.0]), "differ in length"),
    (dict(dp_I=[0, 3]), "'dp_I' must be parts 1-24"),
    (dict(dp_U=[0.0, 1.5]), "'dp_U' must lie in"),
    (dict(body_model=""), "must be set when has_dense"),
    (dict(body_model="anny"), "'body_model' must be one of"),
    (dict(vertices=np.zeros((6890, 3))), f"6890 vertices; body 'default' has {NUM_DEFAULT_VERTICES}"),
    (dict(keypoints_visibility=np.full(19, 3)), "must be 0, 1 or 2"),
    (dict(keypoints3d_visibility=np.full(19, 7)), "'keypoints3d_visibility' must be 0, 1 or 2"),
    (dict(keypoints3d=np.zeros((17, 3))), "'keypoints3d' must have shape"),
    (dict(gender="f"), "'gender' must be one of"),
    (dict(bbox=(0, 0, 0, 3)), "'bbox' must have positive"),
    (dict(camera=(np.nan, 0, 0)), "'camera' has NaN"),
    (dict(segmentation=b"", has_segmentation=True), "'segmentation' is empty"),
])
def test_validation_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        _full_record(**overrides)


def test_records_built_before_the_added_fields_are_upgraded():
    # A dataset built before keypoints3d/gender existed reads back without them.
    record = _full_record()
    old = {k: v for k, v in record.items() if k not in schema.ADDED_FIELDS}
    with pytest.raises(ValueError, match="missing"):
        schema.validate_record(old)
    upgraded = schema.upgrade_record(old)
    schema.validate_record(upgraded)
    assert not upgraded["has_keypoints3d"] and upgraded["gender"] == ""
    assert upgraded["keypoints3d"].shape == (19, 3)
    assert schema.upgrade_record(record)["gender"] == "female"  # present fields are kept
    # TFDS gives the fields an old build's features lack as None.
    as_read = dict(old, **{name: None for name in schema.ADDED_FIELDS})
    schema.validate_record(schema.upgrade_record(as_read))


def test_unknown_or_missing_fields_are_rejected():
    _, image = _png()
    with pytest.raises(ValueError, match="unknown record field"):
        schema.make_record(record_id="a", image=image, keypoint=np.zeros((19, 2)))
    with pytest.raises(ValueError, match="needs 'record_id'"):
        schema.make_record(image=image)
    record = schema.make_record(record_id="a", image=image)
    del record["camera"]
    with pytest.raises(ValueError, match=r"missing \['camera'\]"):
        schema.validate_record(record)


def test_codecs_round_trip_and_fail_clearly():
    iuv = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(schema.decode_iuv(schema.encode_iuv(iuv)), iuv)
    seg = iuv[..., 0] % 25
    np.testing.assert_array_equal(schema.decode_segmentation(schema.encode_segmentation(seg)), seg)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red stays in channel 0 through JPEG (RGB in, RGB out)
    decoded = schema.decode_image(schema.encode_image(rgb))
    assert decoded[..., 0].min() > 150 and decoded[..., 2].max() < 50
    with pytest.raises(ValueError, match="iuv: no encoded data"):
        schema.decode_iuv(b"")
    with pytest.raises(ValueError, match="could not decode"):
        schema.decode_image(b"not an image")


def test_coordinate_helpers():
    rng = np.random.default_rng(1)
    bbox = np.array([10.5, 20.0, 40.0, 80.0])
    dp_x, dp_y = rng.uniform(0, 255, 50), rng.uniform(0, 255, 50)
    xy = schema.dense_to_image(dp_x, dp_y, bbox)
    # DensePose's notebook: x = bbox_x + dp_x / 255 * bbox_w (likewise y).
    np.testing.assert_allclose(xy[:, 0], bbox[0] + dp_x / 255.0 * bbox[2], rtol=1e-6)
    np.testing.assert_allclose(xy[:, 1], bbox[1] + dp_y / 255.0 * bbox[3], rtol=1e-6)
    back_x, back_y = schema.image_to_dense(xy, bbox)
    np.testing.assert_allclose(back_x, dp_x, atol=1e-3)
    np.testing.assert_allclose(back_y, dp_y, atol=1e-3)
    box = (4.0, 8.0, 16.0)
    np.testing.assert_allclose(schema.image_to_crop([[4.0, 24.0], [12.0, 16.0]], box), [[-1, 1], [0, 0]])
    uv = rng.uniform(-1, 1, (7, 2))
    np.testing.assert_allclose(schema.image_to_crop(schema.crop_to_image(uv, box), box), uv, atol=1e-6)
    np.testing.assert_allclose(schema.square_around((0, 0, 4, 10)), [-3, 0, 10])


def test_record_round_trips_through_the_tfds_features_without_tensorflow():
    from tensorflow_datasets.core import example_serializer  # noqa: PLC0415

    features = schema.features()
    assert set(features.keys()) == {f.name for f in schema.FIELDS}
    record = _full_record()
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    data = serializer.serialize_example(features.encode_example(record))
    back = features.deserialize_example_np(data)
    schema.validate_record(back)
    for field in schema.FIELDS:
        if field.dtype == schema.TEXT:
            assert back[field.name] == record[field.name].encode()
        elif field.dtype == schema.BYTES:
            assert back[field.name] == record[field.name]
        else:
            np.testing.assert_array_equal(back[field.name], record[field.name])
    assert "tensorflow" not in sys.modules
