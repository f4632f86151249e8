"""Tests for dct_jax.data.pipeline: crops, cameras, flips, determinism, bad records."""

from __future__ import annotations

import collections
import dataclasses
import pickle

import numpy as np
import pytest

from dct_jax import camera as camera_lib
from dct_jax import densepose, keypoints, smpl
from dct_jax.data import pipeline, schema


@pytest.fixture(scope="module")
def source(tiny_data_dir):
    return pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="train")


@pytest.fixture(scope="module")
def body():
    return smpl.load(), keypoints.get_layout("cocoplus19", body="default")


def _spec(**kwargs):
    base = dict(image_size=48, inputs=("image", "iuv", "segmentation"), num_dense=60, refine_iuv=False)
    base.update(kwargs)
    return pipeline.ExampleSpec(**base)


def _project(body, batch):
    model, layout = body
    out = smpl.forward(model, batch["smpl_pose"], batch["smpl_betas"])
    kp = camera_lib.weak_perspective_project(keypoints.from_body(layout, out.vertices, out.joints), batch["camera"])
    points = densepose.SurfacePoints(batch["dense_vertex_ids"], batch["dense_barycentric"], batch["dense_weight"] > 0)
    dense = densepose.project_surface_points(out.vertices, points, batch["camera"])
    return np.asarray(kp), np.asarray(dense)


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_augmented_examples_stay_consistent(source, body, flip_prob):
    # Jittered (and flipped) crops: the ground-truth body through the adjusted
    # camera lands on the adjusted keypoints and dense keypoints.
    spec = _spec(scale_jitter=0.3, translate_jitter=0.2, flip_prob=flip_prob)
    batch = pipeline.train_dataset(source, spec, batch_size=6, seed=1)[0]
    assert batch["valid"].all() and not batch["skipped"].any()
    kp, dense = _project(body, batch)
    labelled = batch["keypoints_weight"] > 0
    assert labelled.sum() > 50
    np.testing.assert_allclose(kp[labelled], batch["keypoints"][labelled], atol=1e-4)
    weight = batch["dense_weight"] > 0
    assert weight.sum() > 100
    np.testing.assert_allclose(dense[weight], batch["dense_xy"][weight], atol=1e-4)


def test_flipped_example_mirrors_the_unflipped_one(source):
    # Same seed, same crop: with flip_prob 1 the image is the mirror of the unflipped one.
    plain = pipeline.ProcessRecord(_spec(), train=True)
    flipped = pipeline.ProcessRecord(_spec(flip_prob=1.0), train=True)
    a = plain.random_map((0, source[0]), np.random.default_rng(5))
    b = flipped.random_map((0, source[0]), np.random.default_rng(5))
    np.testing.assert_array_equal(b["image"], a["image"][:, ::-1])
    np.testing.assert_array_equal(b["segmentation"] > 0, a["segmentation"][:, ::-1] > 0)
    perm = list(keypoints.COCOPLUS19_FLIP_PERM)
    np.testing.assert_allclose(b["keypoints"][:, 0], -a["keypoints"][perm, 0], atol=1e-6)
    np.testing.assert_allclose(b["camera"], a["camera"] * [1, -1, 1], atol=1e-6)


def test_crop_image_pixel_convention():
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    np.testing.assert_array_equal(pipeline.crop_image(image, [5, 2, 10], 10), image[2:12, 5:15])
    # Beyond the image: zero-padded.
    out = pipeline.crop_image(image, [-4, -4, 8], 8, nearest=True)
    assert not out[:4].any() and not out[:, :4].any()
    np.testing.assert_array_equal(out[4:, 4:], image[:4, :4])
    # Shrinking by 2 averages 2x2 blocks (no aliasing).
    flat = np.zeros((8, 8, 3), np.uint8)
    flat[::2, ::2] = 200
    assert np.allclose(pipeline.crop_image(flat, [0, 0, 8], 4), 50, atol=1)


def test_crop_camera_matches_crop_coordinates():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(10, 3))
    cam = np.array([0.8, 0.1, -0.2])
    old, new = np.array([10.0, 20.0, 100.0]), np.array([-5.0, 30.0, 140.0])
    xy_old = np.asarray(camera_lib.weak_perspective_project(points, cam))
    pixels = schema.crop_to_image(xy_old, old)
    expected = schema.image_to_crop(pixels, new)
    got = np.asarray(camera_lib.weak_perspective_project(points, pipeline.crop_camera(cam, old, new)))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_deterministic_given_the_seed_and_resumable(source):
    spec = _spec(scale_jitter=0.2, translate_jitter=0.1, flip_prob=0.5)
    first = pipeline.make_iterator(pipeline.train_dataset(source, spec, batch_size=4, seed=3))
    again = pipeline.make_iterator(pipeline.train_dataset(source, spec, batch_size=4, seed=3))
    other = pipeline.make_iterator(pipeline.train_dataset(source, spec, batch_size=4, seed=4))
    a, b, c = next(first), next(again), next(other)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["record_index"], c["record_index"]) or not np.array_equal(a["image"], c["image"])
    state = first.get_state()
    expected = [next(first) for _ in range(4)]  # crosses an epoch boundary (12 records, batch 4)
    resumed = pipeline.make_iterator(pipeline.train_dataset(source, spec, batch_size=4, seed=3))
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["record_index"], want["record_index"])
        np.testing.assert_array_equal(got["iuv"], want["iuv"])
    # Every record appears once per epoch.
    assert sorted(np.concatenate([a["record_index"]] + [b["record_index"] for b in expected[:2]])) == list(range(12))


class _Corrupting:
    """A data source whose record 2 has a broken image and record 5 cannot be read."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        if index == 5:
            raise OSError("disk read failed")
        record = dict(self.source[index])
        if index == 2:
            record["image"] = b"not a jpeg"
        return record


def test_corrupt_records_are_skipped_and_named(source):
    spec = _spec(inputs=("image",))
    ds = pipeline.eval_dataset(_Corrupting(source), spec, batch_size=12)
    batch = ds[0]
    assert batch["skipped"].sum() == 2 and batch["valid"].sum() == 10
    by_index = dict(zip(batch["record_index"].tolist(), batch["error"].tolist()))
    assert "could not decode" in by_index[2] and "synthetic/train/" in by_index[2]
    assert "disk read failed" in by_index[5]
    assert not batch["image"][batch["skipped"] > 0].any()


class _CountingReads(_Corrupting):
    """_Corrupting, counting the reads of each record."""

    def __init__(self, source):
        super().__init__(source)
        self.reads = collections.Counter()

    def __getitem__(self, index):
        self.reads[index] += 1
        return super().__getitem__(index)


def test_cached_records_give_the_same_examples_and_are_read_once(source):
    # Three epochs of 12 records: with the cache every good record is read once, and every
    # example (augmented, flipped, dense keypoints resampled) is what it is without the cache.
    spec = _spec(scale_jitter=0.2, translate_jitter=0.1, flip_prob=0.5)
    plain = pipeline.train_dataset(_Corrupting(source), spec, batch_size=4, seed=3)
    counting = _CountingReads(source)
    cached = pipeline.train_dataset(counting, spec, batch_size=4, seed=3, cache_bytes=2**30)
    errors = []
    for k in range(9):
        a, b = plain[k], cached[k]
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"batch {k} {key}")
        errors += [e for e in b["error"].tolist() if e]
    assert sorted(counting.reads) == list(range(12))
    assert all(n == 1 for i, n in counting.reads.items() if i not in (2, 5)), counting.reads
    assert counting.reads[2] == 3 and counting.reads[5] == 3  # bad records are not kept: skipped each epoch
    assert len(errors) == 6 and sum("could not decode" in e for e in errors) == 3
    assert sum("disk read failed" in e for e in errors) == 3


def test_the_record_cache_keeps_its_bound_and_stays_out_of_pickles(source):
    process = pipeline.ProcessRecord(_spec(), train=True)
    one = process.prepare(source[0]).nbytes
    assert one > 48 * 48 * 3  # at least its decoded image
    bounded = pipeline.PreparedSource(source, process, cache_bytes=int(2.5 * one))
    for i in range(len(source)):
        _, prepared = bounded[i]
        assert isinstance(prepared, pipeline.PreparedRecord)
    assert bounded.cached_records == 2
    with pytest.raises(ValueError, match="read-only"):
        bounded[0][1].iuv[0, 0, 0] = 1  # a kept record cannot be changed by the examples made from it
    copy = pickle.loads(pickle.dumps(bounded))  # as sent to a worker process
    assert copy.cached_records == 0 and len(copy) == len(source)
    assert pipeline.PreparedSource(source, process, cache_bytes=0)[0][0] == 0


def test_programming_errors_are_not_swallowed(source, monkeypatch):
    monkeypatch.setattr(pipeline.densepose, "sample_dense_keypoints", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pipeline.ProcessRecord(_spec(), train=False).random_map((0, source[0]), np.random.default_rng(0))


def test_eval_dataset_pads_the_last_batch(tiny_data_dir):
    test = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="test")
    ds = pipeline.eval_dataset(test, _spec(), batch_size=4)
    batches = [ds[i] for i in range(len(ds))]
    assert len(batches) == 2
    assert batches[1]["valid"].tolist() == [1, 1, 0, 0]
    assert batches[0]["has_joints"].all()  # the test split stores the mesh


def test_smpl_subset_is_a_stable_fraction_by_record_id():
    ids = [f"synthetic/train/{i:06d}" for i in range(4000)]
    kept = [pipeline.in_smpl_subset(i, 0.2) for i in ids]
    assert 0.18 < np.mean(kept) < 0.22
    assert kept == [pipeline.in_smpl_subset(i, 0.2) for i in ids]
    assert all(pipeline.in_smpl_subset(i, 1.0) for i in ids[:10])


def test_load_source_errors(tiny_data_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'; known datasets: .*synthetic"):
        pipeline.load_source("nope", data_dir=tiny_data_dir, split="train")
    with pytest.raises(ValueError, match=r"no split 'validation'; it has \['test', 'train'\]"):
        pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="validation")
    with pytest.raises(ValueError, match="is not built.*python -m datasets build synthetic"):
        pipeline.load_source("synthetic", data_dir=str(tmp_path), split="train")


def test_spec_validation():
    with pytest.raises(ValueError, match="unknown inputs"):
        pipeline.ExampleSpec(inputs=("depth",))
    with pytest.raises(ValueError, match="dense_source"):
        pipeline.ExampleSpec(dense_source="magic")


def test_3d_keypoints_and_gender_reach_the_example(source):
    record = schema.upgrade_record({k: (v.item() if isinstance(v, np.ndarray) and v.dtype == object else v)
                                    for k, v in source[0].items()})
    kp3d = np.arange(57, dtype=np.float32).reshape(19, 3) / 57
    visibility = np.full(19, 2, np.uint8)
    visibility[14:] = 0  # face keypoints unlabelled (as Human3.6M)
    record.update(keypoints3d=kp3d, keypoints3d_visibility=visibility, has_keypoints3d=np.bool_(True),
                  gender="female")
    example = pipeline.ProcessRecord(_spec(inputs=("image",)), train=False).random_map(
        (3, record), np.random.default_rng(0))
    assert example["valid"] == 1 and example["has_keypoints3d"] == 1 and example["gender"] == 2
    np.testing.assert_array_equal(example["keypoints3d"], kp3d)
    np.testing.assert_array_equal(example["keypoints3d_weight"], (visibility > 0).astype(np.float32))
    # Like SMPL labels, 3D keypoints are kept on only smpl_fraction of the records (by id).
    rid = record["record_id"].decode() if isinstance(record["record_id"], bytes) else record["record_id"]
    fraction = 0.0 if pipeline.in_smpl_subset(rid, 0.5) else 1.0
    kept = pipeline.ProcessRecord(_spec(inputs=("image",), smpl_fraction=fraction), train=True).random_map(
        (3, record), np.random.default_rng(0))
    assert kept["has_keypoints3d"] == pipeline.in_smpl_subset(rid, fraction)
    # Records of datasets built before these fields existed still read.
    old = {k: v for k, v in record.items() if k not in schema.ADDED_FIELDS}
    example = pipeline.ProcessRecord(_spec(inputs=("image",)), train=False).random_map(
        (3, old), np.random.default_rng(0))
    assert example["valid"] == 1 and example["has_keypoints3d"] == 0 and example["gender"] == 0


def test_training_mixture_draws_from_every_source_by_weight(tiny_data_dir):
    train = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="train")
    test = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="test")
    spec = _spec(inputs=("image",), num_dense=8)
    ds = pipeline.train_dataset([train, test], spec, batch_size=8, seed=0, weights=[3.0, 1.0])
    test_ids = {test[i]["image_id"].decode() if isinstance(test[i]["image_id"], bytes) else test[i]["image_id"]
                for i in range(len(test))}
    ids = [image_id for b in (ds[0], ds[1]) for image_id in b["image_id"]]
    from_test = sum(image_id in test_ids for image_id in ids)
    assert from_test == 4  # 1 in 4 of 16 examples
    assert all(b["valid"].all() for b in (ds[0], ds[1]))
    # One source behaves exactly as before the mixture existed.
    single = pipeline.train_dataset(train, spec, batch_size=4, seed=0)[0]
    listed = pipeline.train_dataset([train], spec, batch_size=4, seed=0)[0]
    np.testing.assert_array_equal(single["image"], listed["image"])
    with pytest.raises(ValueError, match="2 mixture weights for 1 sources"):
        pipeline.train_dataset([train], spec, batch_size=4, seed=0, weights=[1.0, 2.0])


def test_parse_mixture():
    assert pipeline.parse_mixture("up3d:trainval=2, coco_densepose, h36m:train=0.5", "train") == [
        ("up3d", "trainval", 2.0), ("coco_densepose", "train", 1.0), ("h36m", "train", 0.5)]
    for bad, message in (("up3d=x", "not a number"), ("", "empty mixture"), ("a=0,b=0", "sum to 0"),
                         ("=2", "NAME"), ("up3d=-1", "weight >= 0")):
        with pytest.raises(ValueError, match=message):
            pipeline.parse_mixture(bad, "train")


def test_parse_sources_with_labels():
    sources = pipeline.parse_sources("synthetic:train=1[2d, dense, 3d=0.2],studio:train=2[2d,3d], coco[]", "train")
    assert [(e.name, e.split, e.weight, e.labels, e.fraction_3d) for e in sources] == [
        ("synthetic", "train", 1.0, ("2d", "dense", "3d"), 0.2), ("studio", "train", 2.0, ("2d", "3d"), 1.0),
        ("coco", "train", 1.0, (), 1.0)]
    # Written back as it reads (what config.json and the logs show).
    assert ",".join(map(str, sources)) == "synthetic:train=1[2d,dense,3d=0.2],studio:train=2[2d,3d],coco:train=1[]"
    assert pipeline.parse_sources("up3d", "trainval")[0].labels is None  # no brackets: every label
    (sparse,) = pipeline.parse_sources("s[2d=lsp14,2d_noise=1.5,dense]", "train")
    assert (sparse.keypoint_subset, sparse.keypoint_noise) == ("lsp14", 1.5)
    assert str(sparse) == "s:train=1[2d=lsp14,2d_noise=1.5,dense]"
    for bad, message in (("a[2d", "one bracketed label list"), ("a[2d]x", "one bracketed label list"),
                         ("a[4d]", "unknown label '4d'"), ("a[3d=2]", "3d=2 is not a number in \\[0, 1\\]"),
                         ("a[dense=0.5]", "unknown label"), ("a[2d,2d]", "given twice"),
                         ("a[2d=coco5]", "not a keypoint subset"), ("a[dense,2d_noise=1]", "needs the 2d label"),
                         ("a[2d,2d_noise=-1]", "not a number")):
        with pytest.raises(ValueError, match=message):
            pipeline.parse_sources(bad, "train")


def test_source_labels_select_the_supervision(source):
    spec = _spec(inputs=("image",), num_dense=40)
    record = source[0]
    rid = record["record_id"].decode()
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    full = pipeline.ProcessRecord(spec, train=True).random_map((0, record), rng())
    assert full["has_smpl"] == 1 and full["has_dense"] == 1 and full["keypoints_weight"].sum() > 0
    for text, has_2d, has_dense, has_3d in (
            ("s[2d,dense]", True, True, False), ("s[2d,3d]", True, False, True), ("s[dense,3d]", False, True, True),
            ("s[]", False, False, False), ("s[2d,3d=0.5]", True, False, pipeline.in_smpl_subset(rid, 0.5))):
        (entry,) = pipeline.parse_sources(text, "train")
        example = pipeline.ProcessRecord(entry.example_spec(spec), train=True).random_map((0, record), rng())
        assert (example["keypoints_weight"].sum() > 0) == has_2d, text
        assert example["has_dense"] == has_dense and (example["dense_weight"].sum() > 0) == has_dense, text
        assert example["has_smpl"] == has_3d, text
        if has_2d:
            np.testing.assert_array_equal(example["keypoints_weight"], full["keypoints_weight"])


def test_sparse_noisy_2d_labels(source):
    # LSP's 14 joints with annotator-like noise: fixed per record, COCO's scale per keypoint.
    spec = _spec(inputs=("image",), num_dense=8, normalize_point_weights=False)
    record = source[1]
    exact = pipeline.ProcessRecord(spec, train=False).random_map((1, record), np.random.default_rng(0))
    (entry,) = pipeline.parse_sources("s[2d=lsp14,2d_noise=2]", "train")
    sparse = pipeline.ProcessRecord(entry.example_spec(spec), train=False)
    first = sparse.random_map((1, record), np.random.default_rng(0))
    again = sparse.random_map((1, record), np.random.default_rng(99))  # another epoch, same annotation
    np.testing.assert_array_equal(first["keypoints"], again["keypoints"])
    assert first["keypoints_weight"][14:].sum() == 0
    np.testing.assert_array_equal(first["keypoints_weight"][:14], exact["keypoints_weight"][:14])
    offsets = pipeline.annotation_noise(record["record_id"].decode(), record["bbox"], 2.0)
    np.testing.assert_allclose(first["keypoints"] - exact["keypoints"],
                               offsets * 2.0 / (record["crop_box"][2]), atol=1e-5)  # crop coords: 2 / side
    # The draw has COCO's per-keypoint spread: over many records, std / (sigma * scale) ~ multiplier.
    box = np.array([0.0, 0.0, 100.0, 64.0])
    draws = np.stack([pipeline.annotation_noise(f"r{i}", box, 1.5) for i in range(4000)])
    expected = 1.5 * 80.0 * np.asarray(keypoints.COCOPLUS19_ANNOTATION_SIGMAS)
    np.testing.assert_allclose(draws.std(axis=(0, 2)), expected, rtol=0.05)


def test_point_weights_are_normalized_per_example(source):
    # As the official loader: each example's weights average to 1 over the slots, so
    # a mean over all slots is the mean over the example's own points.
    spec = _spec(inputs=("image",), num_dense=400)
    example = pipeline.ProcessRecord(spec, train=True).random_map((0, source[0]), np.random.default_rng(0))
    raw = pipeline.ProcessRecord(dataclasses.replace(spec, normalize_point_weights=False), train=True).random_map(
        (0, source[0]), np.random.default_rng(0))
    for key in ("keypoints_weight", "dense_weight"):
        count = np.count_nonzero(raw[key])
        assert 0 < count < raw[key].size, key  # some keypoints unlabelled, dense points padded to 400
        np.testing.assert_array_equal(raw[key] > 0, example[key] > 0)
        np.testing.assert_allclose(example[key][raw[key] > 0], raw[key].size / count, rtol=1e-6)
        assert example[key].mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(pipeline.per_example_mean_weights(np.zeros(5)), np.zeros(5))


def test_records_without_a_body_model_flip(source):
    # Motion-capture records (Human3.6M without SMPL fits) have keypoints and 3D keypoints only.
    record = schema.upgrade_record({k: (v.item() if isinstance(v, np.ndarray) and v.dtype == object else v)
                                    for k, v in source[0].items()})
    record.update(body_model="", has_smpl=np.bool_(False), has_dense=np.bool_(False), has_iuv=np.bool_(False),
                  has_mesh=np.bool_(False), has_camera=np.bool_(False), has_segmentation=np.bool_(False),
                  keypoints3d=np.random.default_rng(0).normal(size=(19, 3)).astype(np.float32),
                  keypoints3d_visibility=np.full(19, 2, np.uint8), has_keypoints3d=np.bool_(True))
    spec = _spec(inputs=("image",))
    plain = pipeline.ProcessRecord(spec, train=True).random_map((0, record), np.random.default_rng(1))
    flipped = pipeline.ProcessRecord(dataclasses.replace(spec, flip_prob=1.0), train=True).random_map(
        (0, record), np.random.default_rng(1))
    assert flipped["valid"] == 1, flipped["error"]
    perm = list(keypoints.COCOPLUS19_FLIP_PERM)
    np.testing.assert_allclose(flipped["keypoints3d"], plain["keypoints3d"][perm] * [-1, 1, 1])
    np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])


def test_global_batches_do_not_depend_on_the_process_count(source):
    # Two processes with 4 rows each see exactly the rows of one process with 8.
    spec = _spec(inputs=("image",), num_dense=8, scale_jitter=0.2, flip_prob=0.5)
    whole = pipeline.train_dataset(source, spec, batch_size=8, seed=3)
    halves = [pipeline.train_dataset(source, spec, batch_size=4, seed=3, shard_index=p, shard_count=2)
              for p in range(2)]
    for k in (0, 1):
        for key in ("image", "keypoints", "smpl_pose", "dense_xy"):
            np.testing.assert_array_equal(np.concatenate([halves[0][k][key], halves[1][k][key]]), whole[k][key])


def test_eval_examples_do_not_depend_on_the_process_count(tiny_data_dir):
    # Dense keypoints are sampled per record: the same sample on 1 or 2 processes.
    source = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="test")
    spec = _spec(inputs=("image",), num_dense=8)
    whole = pipeline.eval_dataset(source, spec, batch_size=2)[0]
    second = pipeline.eval_dataset(source, spec, batch_size=1, shard_index=1, shard_count=2)[0]
    assert second["record_index"][0] == whole["record_index"][1] == 1
    np.testing.assert_array_equal(second["dense_xy"][0], whole["dense_xy"][1])
    np.testing.assert_array_equal(second["dense_vertex_ids"][0], whole["dense_vertex_ids"][1])


def test_body_assets_load_once_across_threads(monkeypatch):
    # grain's read threads meet their first records together: one load, shared.
    import threading
    import time

    calls = []

    def slow_chart(name):
        calls.append(name)
        time.sleep(0.2)
        return f"chart of {name}"

    monkeypatch.setattr(pipeline.densepose, "load_chart", slow_chart)
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            pipeline.body_assets("threads-test", with_mirror=False))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert calls == ["threads-test"] and len(results) == 4
        assert all(result is results[0] for result in results)
    finally:
        pipeline._load_body_assets.cache_clear()


def test_the_iuv_map_is_decoded_only_when_used(source, monkeypatch):
    # Image input, dense keypoints from the records' annotations: the IUV map is not needed.
    record = source[0]
    assert record["has_dense"] and record["has_iuv"]
    decoded = []
    real = schema.decode_iuv
    monkeypatch.setattr(pipeline.schema, "decode_iuv", lambda data: decoded.append(1) or real(data))
    process = lambda spec: pipeline.ProcessRecord(spec, train=False).random_map(  # noqa: E731
        (0, record), np.random.default_rng(0))
    assert process(_spec(inputs=("image",), dense_source="auto"))["valid"] == 1 and not decoded
    process(_spec(inputs=("image",), dense_source="iuv"))
    process(_spec(inputs=("image", "iuv"), dense_source="auto"))
    assert len(decoded) == 2


def test_refinement_is_guided_by_the_visible_keypoints_alone(source, monkeypatch):
    # Sec. 3.2: "for each visible 2D keypoint"; an occluded keypoint lies on the part in front of it.
    seen = []
    monkeypatch.setattr(densepose, "refine_iuv", lambda iuv, kp, visibility: seen.append(np.array(visibility)) or iuv)
    index = next(i for i in range(len(source)) if np.any(np.asarray(source[i]["keypoints_visibility"]) == 1))
    pipeline.ProcessRecord(_spec(refine_iuv=True), train=False).process(source[index], np.random.default_rng(0))
    visibility = np.asarray(source[index]["keypoints_visibility"])
    np.testing.assert_array_equal(seen[0], np.where(visibility == 2, 2, 0))
