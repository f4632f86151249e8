"""Tests for dct_jax.train and dct_jax.evaluate: the step, the loop, resume, guards, scripts."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import tiny_config

from dct_jax import evaluate, train
from dct_jax import state as state_lib
from dct_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(config, tiny_data_dir, batch_size=8):
    model = state_lib.create_model(config.model)
    tx, _ = state_lib.create_optimizer(config)
    body, layout = state_lib.load_body(config)
    state = state_lib.initial_state(model, tx, config, jax.random.key(0))
    source = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="train")
    batch = pipeline.eval_dataset(source, state_lib.example_spec(config, train=False), batch_size=batch_size)[0]
    device, _ = pipeline.split_host_fields(batch)
    step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, body=body, layout=layout,
                                     weights=train.loss_weights(config), inputs=config.model.inputs))
    return state, device, step


def test_tiny_model_overfits_eight_examples(tiny_data_dir):
    config = tiny_config(tiny_data_dir, inputs="iuv")
    config.num_train_steps = 150
    config.learning_rate = 3e-3
    config.end_learning_rate = 3e-4
    state, batch, step = _setup(config, tiny_data_dir)
    state, first = step(state, batch)
    for _ in range(149):
        state, metrics = step(state, batch)
    assert float(first["loss"]) > 10 * float(metrics["loss"]), (first["loss"], metrics["loss"])
    assert int(state.step) == 150 and int(state.nonfinite_steps) == 0


def test_nan_guard_skips_a_poisoned_step(tiny_data_dir):
    config = tiny_config(tiny_data_dir, inputs="iuv")
    state, batch, step = _setup(config, tiny_data_dir, batch_size=4)
    before = jax.tree.map(np.asarray, state)
    poisoned = dict(batch, keypoints=batch["keypoints"].copy())
    poisoned["keypoints"][0, 0] = np.nan  # a labelled keypoint: the loss becomes NaN
    assert batch["keypoints_weight"][0, 0] > 0
    after, metrics = step(state, poisoned)
    assert float(metrics["finite"]) == 0 and not np.isfinite(float(metrics["loss"]))
    assert int(after.step) == 1 and int(after.nonfinite_steps) == 1
    for old, new in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)):
        np.testing.assert_array_equal(old, np.asarray(new))
    # A NaN where the weight is 0 (masked) is harmless.
    masked = dict(batch, keypoints_weight=batch["keypoints_weight"].copy(), keypoints=poisoned["keypoints"])
    masked["keypoints_weight"][0, 0] = 0
    _, metrics = step(after, masked)
    assert float(metrics["finite"]) == 1


def test_batch_must_divide_over_devices(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    with pytest.raises(ValueError, match=r"config.batch_size=6 must be a positive multiple of the device count \(4\)"):
        state_lib.check_batch_size(6)
    assert state_lib.check_batch_size(8) == 8


def test_config_errors_are_clear(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir)
    config.dataset = "nope"
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    config = tiny_config(tiny_data_dir)
    config.eval_split = "validation"
    with pytest.raises(ValueError, match="no split 'validation'"):
        train.train_and_evaluate(config, str(tmp_path / "b"))
    config = tiny_config(tiny_data_dir)
    config.model.inputs = "depth"
    with pytest.raises(ValueError, match="config.model.inputs must be one of"):
        train.train_and_evaluate(config, str(tmp_path / "c"))


def test_run_writes_its_report_and_counts_skipped_records(tiny_data_dir, tmp_path, monkeypatch):
    config = tiny_config(tiny_data_dir)
    full = str(tmp_path / "full")
    report = train.train_and_evaluate(config, full)
    assert report["checkpoint_step"] == 4 and report["num_examples"] == 6
    saved = json.load(open(os.path.join(full, "eval_test.json")))
    assert saved == json.loads(json.dumps(report))
    assert set(saved["metrics"]) == {"pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm", "dkd"}
    assert set(saved["baseline_mean_params"]) == set(saved["metrics"])
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(full))
    # TensorBoard (installed with the requirements, no TensorFlow) reads them.
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(full)
    events.Reload()
    assert {"train/loss", "train/learning_rate", "eval/pve_mm"} <= set(events.Tags()["scalars"])
    assert "train/predicted_meshes" in events.Tags()["images"]
    # Re-running the finished run: nothing trained or evaluated again, no new events file.
    files = sorted(os.listdir(full))
    assert train.train_and_evaluate(config, full) == saved
    assert sorted(os.listdir(full)) == files

    # Resuming after a kill is tested in test_scale.py (SIGTERM, SIGKILL at any moment).

    # A corrupt record is skipped, counted and logged; the run goes on.
    real_load = pipeline.load_source

    def corrupting(*args, **kwargs):
        source = real_load(*args, **kwargs)
        if kwargs.get("split") != "train":
            return source
        from test_pipeline import _Corrupting
        return _Corrupting(source)

    monkeypatch.setattr(pipeline, "load_source", corrupting)
    warnings = []
    monkeypatch.setattr(train.logging, "warning", lambda msg, *args: warnings.append(msg % args))
    config.num_train_steps = 6
    train.train_and_evaluate(config, str(tmp_path / "corrupt"))
    assert any("record 2" in w and "could not decode" in w for w in warnings), warnings
    assert any("record 5" in w and "disk read failed" in w for w in warnings), warnings


def test_scripts_end_to_end(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    overrides = [f"--config.data_dir={tiny_data_dir}", "--config.batch_size=4", "--config.eval_batch_size=4",
                 "--config.num_train_steps=2", "--config.data.image_size=32", "--config.data.num_dense=20",
                 "--config.model.depth=10", "--config.model.width=8", "--config.model.feature_dim=32",
                 "--config.model.hidden_dim=32", "--config.checkpoint_every_steps=1",
                 "--config.build_dataset_if_missing=False"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "run_train.py", "--config=configs/quickstart.py", f"--workdir={workdir}",
                          *overrides], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "PVE (mm)" in run.stdout and "mean params" in run.stdout
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
    os.remove(os.path.join(workdir, "eval_test.json"))
    # The run's ImageNet weights need not exist any more at evaluation time.
    run = subprocess.run([sys.executable, "run_eval.py", "--config=configs/quickstart.py", f"--workdir={workdir}",
                          "--split=test", "--config.model.init_image_from=/gone/resnet.safetensors", *overrides],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.load(open(os.path.join(workdir, "eval_test.json")))
    assert report["checkpoint_step"] == 2 and report["num_examples"] == 6
    assert "PVE (mm)" in run.stdout
    # Evaluating a directory without checkpoints says what to do.
    run = subprocess.run([sys.executable, "run_eval.py", "--config=configs/quickstart.py",
                          f"--workdir={tmp_path / 'empty'}", *overrides], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 2 and "train first with" in run.stderr and "Traceback" not in run.stderr


def test_evaluation_keeps_one_result_per_image(tiny_data_dir):
    config = tiny_config(tiny_data_dir)
    model = state_lib.create_model(config.model)
    body, _ = state_lib.load_body(config)
    tx, _ = state_lib.create_optimizer(config)
    state = state_lib.initial_state(model, tx, config, jax.random.key(0))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    report = evaluate.evaluate_split(config, variables, model=model, body=body, split="test", step=0)
    assert report["num_examples"] == 6 and report["counts"]["with_dense"] == 6
    # A fresh model predicts (nearly) the mean parameters: close to the baseline.
    for key, value in report["metrics"].items():
        assert value == pytest.approx(report["baseline_mean_params"][key], rel=0.05), key
    text = evaluate.format_report(report)
    assert "PVE (mm)" in text and "DKD" in text


def test_table3_config_cells():
    # The official protocol: the 3D source (studio; Human3.6M on real data) in every cell with its
    # SMPL and 2D labels, the cell deciding the in-the-wild labels; SMPL weight 10 everywhere.
    from configs import table3

    config = table3.get_config("image_seg:3d20_dense")  # spelled as the runner's --cells
    assert config.model.inputs == "image_seg" and config.dataset == "synthetic"
    assert config.train_mixture == "synthetic:train=1[2d,dense,3d=0.2],studio:train=1[2d,3d]"
    assert (config.loss.smpl, config.loss.dense, config.loss.joints3d) == (10.0, 1.0, 0.0)
    config = table3.get_config("iuv,dense")
    assert config.train_mixture == "synthetic:train=1[2d,dense],studio:train=1[2d,3d]"
    assert (config.loss.smpl, config.loss.dense, config.loss.keypoint) == (10.0, 10.0, 10.0)
    config = table3.get_config("image:2d:up3d")
    assert config.train_mixture == "up3d:trainval=1[2d],h36m:train=1[2d,3d]" and config.dataset == "up3d"
    assert config.loss.dense == 0.0 and not config.build_dataset_if_missing
    assert train.generated_datasets(table3.get_config("image,3d")) == ["synthetic", "studio"]
    assert table3.get_config("iuv:dense").to_dict() == table3.get_config("iuv,dense").to_dict()  # the old spelling
    for bad in ("image:4d", "image:3d:lsp"):
        with pytest.raises(ValueError, match="INPUT:SUPERVISION"):
            table3.get_config(bad)


def test_encoders_start_from_torchvision_weights(tiny_data_dir, tmp_path):
    import torch
    import torch_resnet
    from safetensors.numpy import save_file

    from dct_jax.models import convert

    torch.manual_seed(0)
    twin = torch_resnet.TorchResNet(10, 1000, 8).eval()
    path = str(tmp_path / "resnet10.safetensors")
    save_file(torch_resnet.state_dict_numpy(twin), path)
    config = tiny_config(tiny_data_dir, inputs="image")
    config.model.init_image_from = path
    model = state_lib.create_model(config.model)
    tx, _ = state_lib.create_optimizer(config)
    state = state_lib.initial_state(model, tx, config, jax.random.key(0))
    expected = convert.load_torchvision(path, 10, width=8)
    got = state.params["image_encoder"]
    for key, value in expected["params"].items():
        if key != "fc":
            for a, b in zip(jax.tree.leaves(value), jax.tree.leaves(got[key])):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    config.model.init_aux_from = path
    with pytest.raises(ValueError, match="has no auxiliary branch"):
        state_lib.initial_state(model, tx, config, jax.random.key(0))


def test_a_run_starts_from_another_runs_network(tiny_data_dir, tiny_checkpoint):
    from dct_jax import inference

    workdir = tiny_checkpoint("image_iuv")
    config = tiny_config(tiny_data_dir, "image_iuv")
    config.init_from = workdir
    model = state_lib.create_model(config.model)
    tx, _ = state_lib.create_optimizer(config)
    state = state_lib.initial_state(model, tx, config, jax.random.key(7))
    saved = inference.load_checkpoint(workdir).variables
    for key in ("params", "batch_stats"):
        jax.tree.map(np.testing.assert_array_equal, getattr(state, key), saved[key])
    assert int(state.step) == 0  # a fresh run: step and optimizer start anew
    config = tiny_config(tiny_data_dir, "image")
    config.init_from = workdir
    with pytest.raises(ValueError, match="holds another network"):
        state_lib.initial_state(state_lib.create_model(config.model), tx, config, jax.random.key(7))


def _protocol_batch(tiny_data_dir, cell, *, batch_size=16, shard_index=0, shard_count=1, index=0):
    """A real training batch of a Table 3 cell's config (its mixture, labels and weights)."""
    from configs import table3

    config = table3.get_config(cell)
    config.data_dir = tiny_data_dir
    config.data.image_size, config.data.num_dense, config.data.threads = 32, 20, 0
    sources, weights = train.load_train_sources(config)
    specs = [e.example_spec(state_lib.example_spec(config, train=True)) for e in train.mixture_sources(config)]
    ds = pipeline.train_dataset(sources, specs, batch_size=batch_size, seed=0, weights=weights,
                                shard_index=shard_index, shard_count=shard_count)
    return config, ds[index]


def test_protocol_masks_follow_the_sources(tiny_data_dir):
    # Dense & 2D: an in-the-wild record never reaches the SMPL or 3D losses, a studio record always
    # does; dense keypoints only from the in-the-wild records; 2D keypoints from both.
    config, batch = _protocol_batch(tiny_data_dir, "image,dense")
    studio = np.array([str(i).startswith("studio/") for i in batch["image_id"]])
    assert 0 < studio.sum() < len(studio) and batch["valid"].all()
    assert (batch["has_smpl"] == studio).all()
    assert not batch["has_joints"][~studio].any() and not batch["has_keypoints3d"][~studio].any()
    assert (batch["has_dense"] == ~studio).all()
    assert (batch["keypoints_weight"].sum(1) > 0).all()
    # The SMPL loss of the real batch ignores the in-the-wild targets and follows the studio ones.
    model = state_lib.create_model(tiny_config(tiny_data_dir, "image").model)
    body, layout = state_lib.load_body(config)
    weights = train.loss_weights(config)
    device, _ = pipeline.split_host_fields(batch)
    variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), None, train=False)
    output = state_lib.predict(variables, device, model=model, inputs="image")

    def terms(pose):
        return train.compute_losses(output, dict(device, smpl_pose=pose), body, layout, weights)[1]

    base = terms(device["smpl_pose"])
    assert set(base) == {"keypoint", "smpl", "dense"}  # no 3D-joint terms in the protocol
    noise = np.random.default_rng(0).normal(size=device["smpl_pose"].shape).astype(np.float32)
    wild_changed = terms(np.where(studio[:, None], device["smpl_pose"], noise))
    studio_changed = terms(np.where(studio[:, None], noise, device["smpl_pose"]))
    assert float(wild_changed["smpl"]) == float(base["smpl"])
    assert abs(float(studio_changed["smpl"]) - float(base["smpl"])) > 1e-3


def test_the_20_percent_are_fixed_records(tiny_data_dir):
    # "20% 3D": which in-the-wild records keep their SMPL labels depends on the record id only:
    # the same over the stream, on one process or two, and after a restart.
    def labelled(shard_index=0, shard_count=1, batches=(0, 1, 2)):
        seen = {}
        for index in batches:
            _, batch = _protocol_batch(tiny_data_dir, "image,3d20_dense", batch_size=16 // shard_count,
                                       shard_index=shard_index, shard_count=shard_count, index=index)
            for image_id, has in zip(batch["image_id"], batch["has_smpl"]):
                if str(image_id).startswith("synthetic/"):
                    assert seen.setdefault(str(image_id), bool(has)) == bool(has), image_id
        return seen

    one = labelled()
    assert one == {rid: pipeline.in_smpl_subset(rid, 0.2) for rid in one}
    assert len(one) == 12  # every in-the-wild record seen; which of them are labelled is its id's business
    fraction = np.mean([pipeline.in_smpl_subset(f"synthetic/train/{i:06d}", 0.2) for i in range(2000)])
    assert abs(fraction - 0.2) < 0.03
    two = {**labelled(0, 2), **labelled(1, 2)}
    assert two == one
    assert labelled(batches=(5, 6)) == {rid: one[rid] for rid in labelled(batches=(5, 6))}
