"""Checkpoints read back: a corrupt newest step falls back to the previous complete one, everywhere."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import tiny_config

from dct_jax import evaluate, inference, train
from dct_jax import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def two_step_run(tiny_data_dir, tmp_path_factory):
    """A tiny image-only run with checkpoints at steps 1 and 2 (copy it before damaging it)."""
    config = tiny_config(tiny_data_dir, "image")
    config.num_train_steps = 2
    config.checkpoint_every_steps = 1
    config.image_summary_every_steps = 0
    workdir = str(tmp_path_factory.mktemp("two_steps") / "run")
    train.train_and_evaluate(config, workdir)
    return config, workdir


def _copy(workdir: str, tmp_path) -> str:
    target = str(tmp_path / "run")
    shutil.copytree(workdir, target)
    return target


def _break_arrays(workdir: str, step: int) -> None:
    """Deletes the array data of one step (as a half-copied or cleaned-up disk leaves it)."""
    blobs = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "ocdbt.process_*", "d", "*"))
    assert blobs
    for blob in blobs:
        os.remove(blob)


def _warnings(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(state_lib.logging, "warning", lambda msg, *args: seen.append(msg % args))
    return seen


def test_a_corrupt_newest_step_falls_back_to_the_previous_one(two_step_run, tmp_path, monkeypatch):
    config, original = two_step_run
    workdir = _copy(original, tmp_path)
    _break_arrays(workdir, 2)
    warnings = _warnings(monkeypatch)

    trained = inference.load_checkpoint(workdir)  # the demo and the export load through this
    assert trained.step == 1
    assert len(warnings) == 1 and "step 2" in warnings[0] and "trying step 1" in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert evaluate.evaluate_checkpoint(config, workdir)["checkpoint_step"] == 1
    demo = subprocess.run([sys.executable, "run_demo.py", f"--checkpoint={workdir}", f"--output={tmp_path / 'demo'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    with open(tmp_path / "demo" / "params.json") as f:
        assert json.load(f)["step"] == 1

    # A step asked for by name is that step or a one-line error, never another one.
    with pytest.raises(state_lib.CheckpointError, match=r"no usable checkpoint in .*: step 2: ") as error:
        inference.load_checkpoint(workdir, step=2)
    assert "\n" not in str(error.value)

    _break_arrays(workdir, 1)
    with pytest.raises(state_lib.CheckpointError, match=r"step 2: .*; step 1: ") as error:
        inference.load_checkpoint(workdir)
    assert "\n" not in str(error.value)


def test_training_resumes_from_the_newest_usable_step(two_step_run, tmp_path, monkeypatch):
    config, original = two_step_run
    workdir = _copy(original, tmp_path)
    _break_arrays(workdir, 2)
    warnings = _warnings(monkeypatch)
    config = config.copy_and_resolve_references()
    config.num_train_steps = 3
    report = train.train_and_evaluate(config, workdir)
    assert report["checkpoint_step"] == 3
    assert any("step 2" in w for w in warnings), warnings
    # The broken step is kept, out of the way of the new step 2 that was trained again.
    assert os.path.isdir(os.path.join(workdir, "checkpoints_unusable", "2", "state"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2", "3"]

    # A garbled data-iterator state is a corrupt step too.
    with open(os.path.join(workdir, "checkpoints", "3", "data", "process_0-of-1.json"), "w") as f:
        f.write("{not json")
    warnings.clear()
    config.num_train_steps = 4
    assert train.train_and_evaluate(config, workdir)["checkpoint_step"] == 4
    assert any("step 3" in w and "trying step 2" in w for w in warnings), warnings
