"""The workdir owns its config: validation before writing, refused and allowed changes, evaluation settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import tiny_config

from dct_jax import workdir as workdir_lib
from dct_jax.experiments import table3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def trained_copy(tiny_checkpoint, tmp_path):
    """A copy of a tiny trained run (config.json + checkpoints) to change settings on."""
    target = str(tmp_path / "run")
    shutil.copytree(tiny_checkpoint("image_iuv"), target)
    return target


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("field, value, message", [
    ("num_train_steps", -1, r"config.num_train_steps must be at least 0, got -1"),
    ("checkpoint_every_steps", 0, r"config.checkpoint_every_steps must be greater than 0"),
    ("log_every_steps", 0, r"config.log_every_steps must be greater than 0"),
    ("learning_rate", 0.0, r"config.learning_rate must be greater than 0"),
    ("data.image_size", 0, r"config.data.image_size must be at least 32, got 0"),
    ("batch_size", 0, r"config.batch_size must be greater than 0"),
    ("model.inputs", "depth", r"config.model.inputs must be one of"),
    ("model.depth", 11, r"config.model.depth must be one of 10, 14, 18"),
    ("optimizer", "adamw", r"config.optimizer must be one of 'adam', 'sgd'"),
    ("smpl_path", "/nowhere/SMPL.pkl", r"config.smpl_path=/nowhere/SMPL.pkl does not exist"),
    ("train_mixture", "synthetic[3x]", r"config.train_mixture: mixture entry"),
])
def test_bad_values_are_refused_before_anything_is_written(tiny_data_dir, tmp_path, field, value, message):
    config = tiny_config(tiny_data_dir)
    workdir_lib.apply_overrides(config, {field: value})
    workdir = tmp_path / "new"
    with pytest.raises(workdir_lib.ConfigError, match=message):
        workdir_lib.claim(config, str(workdir))
    assert not workdir.exists()


def test_unknown_fields_get_a_suggestion(tiny_data_dir):
    config = tiny_config(tiny_data_dir)
    with pytest.raises(workdir_lib.ConfigError, match=r"no field 'model.widht'; did you mean 'model.width'"):
        workdir_lib.apply_overrides(config, {"model.widht": 3})
    with pytest.raises(workdir_lib.ConfigError, match=r"no field 'model.nosuch'"):
        table3.cell_config(table3.Cell("image", "dense"), steps=2, overrides={"model.nosuch": 3})
    assert workdir_lib.parse_overrides(["model.depth=18", "eval_split=test", "init_from=None", "x=1e-3"]) == {
        "model.depth": 18, "eval_split": "test", "init_from": None, "x": 1e-3}
    with pytest.raises(workdir_lib.ConfigError, match="--set takes FIELD=VALUE"):
        workdir_lib.parse_overrides(["model.depth"])


def test_a_workdir_that_is_a_file_is_refused(tiny_data_dir, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(workdir_lib.WorkdirError, match="is a file, not a directory"):
        workdir_lib.claim(tiny_config(tiny_data_dir), str(path))
    with pytest.raises(workdir_lib.WorkdirError, match="is a file, not a directory"):
        workdir_lib.claim(tiny_config(tiny_data_dir), str(path / "run"))


def test_a_run_keeps_the_settings_its_checkpoints_depend_on(trained_copy):
    path = os.path.join(trained_copy, "config.json")
    before = _read(path)
    recorded = workdir_lib.load_config(trained_copy)
    for changes in ({"model.inputs": "image"}, {"batch_size": 16}, {"model.width": 32},
                    {"loss.dense": 0.0, "seed": 3}):
        config = workdir_lib.load_config(trained_copy)
        workdir_lib.apply_overrides(config, changes)
        with pytest.raises(workdir_lib.WorkdirError, match="holds checkpoints trained with other settings") as error:
            workdir_lib.claim(config, trained_copy)
        for name in changes:
            assert name in str(error.value)
        assert _read(path) == before  # nothing written
    assert not os.path.exists(os.path.join(trained_copy, workdir_lib.HISTORY_FILE))

    # More steps, other intervals, another evaluation split: allowed, logged and kept in the history.
    config = workdir_lib.load_config(trained_copy)
    workdir_lib.apply_overrides(config, {"num_train_steps": 9, "log_every_steps": 3, "eval_split": "train"})
    changes = workdir_lib.claim(config, trained_copy)
    assert changes == {"eval_split": ("test", "train"), "log_every_steps": (recorded.log_every_steps, 3),
                       "num_train_steps": (recorded.num_train_steps, 9)}
    assert json.loads(_read(path))["num_train_steps"] == 9
    (entry,) = [json.loads(line) for line in _read(os.path.join(trained_copy, workdir_lib.HISTORY_FILE)).splitlines()]
    assert entry["changes"]["num_train_steps"] == [recorded.num_train_steps, 9]

    # An unreadable config.json is named, not a JSONDecodeError.
    with open(path, "w"):
        pass
    with pytest.raises(workdir_lib.WorkdirError, match="config.json is empty"):
        workdir_lib.load_config(trained_copy)


def test_evaluation_uses_the_runs_config(trained_copy, tiny_data_dir):
    config, changes = workdir_lib.evaluation_config(trained_copy)
    assert changes == {} and config.model.inputs == "image_iuv"
    given = tiny_config(tiny_data_dir)  # the run's settings except num_train_steps: ignored
    config, changes = workdir_lib.evaluation_config(trained_copy, given, {"eval_split": "train"})
    assert changes == {"eval_split": "train"} and config.eval_split == "train"
    given.model.inputs = "image"
    with pytest.raises(workdir_lib.WorkdirError, match=r"differs from .*config.json in training settings "
                                                       r"\(model.inputs: \"image_iuv\" -> \"image\"\)"):
        workdir_lib.evaluation_config(trained_copy, given)
    with pytest.raises(workdir_lib.ConfigError, match="batch_size is a training setting of this run"):
        workdir_lib.evaluation_config(trained_copy, None, {"batch_size": 2})


def _run(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_entry_points_report_user_errors_in_one_line(trained_copy, tiny_data_dir, tmp_path):
    path = os.path.join(trained_copy, "config.json")
    before = _read(path)
    # A typo in the config path: one line, status 2, the run's config.json untouched.
    run = _run("run_train.py", "--config=configs/quickstrat.py", f"--workdir={trained_copy}")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith("run_train.py: error: --config: ")
    assert _read(path) == before
    run = _run("run_train.py", "--config=configs/quickstart.py", f"--workdir={tmp_path / 'new'}",
               "--config.model.widht=3")
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().endswith("--config.model.widht: no such config field; did you mean "
                                       "--config.model.width?")
    assert not (tmp_path / "new").exists()
    # Evaluation with a training setting changed is refused, and the report is not overwritten.
    report = _read(os.path.join(trained_copy, "eval_test.json"))
    run = _run("run_eval.py", f"--workdir={trained_copy}", "--set=model.width=4")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "model.width is a training setting of this run" in run.stderr
    assert _read(os.path.join(trained_copy, "eval_test.json")) == report


def test_a_run_recorded_before_a_field_existed_reads_as_its_neutral_value(trained_copy):
    # Fields added later (workdir.ADDED_FIELDS): an old config.json neither differs from today's
    # config for them nor lacks them when loaded (so evaluation may override them).
    path = workdir_lib.config_path(trained_copy)
    recorded = json.loads(_read(path))
    for name in workdir_lib.ADDED_FIELDS:
        *parents, leaf = name.split(".")
        node = recorded
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    recorded["data"].pop("iuv_errors", None)
    with open(path, "w") as f:
        json.dump(recorded, f)
    current = workdir_lib.load_config(trained_copy)
    assert current.data.dense_keep == 1.0 and current.data.iuv_errors.part_swap == 0.0
    assert workdir_lib.differences(recorded, current) == {}
    current.data.dense_keep = 0.5  # a real change is still one
    assert set(workdir_lib.differences(recorded, current)) == {"data.dense_keep"}
    config, changes = workdir_lib.evaluation_config(trained_copy, overrides={"data.iuv_errors.part_swap": 0.05})
    assert config.data.iuv_errors.part_swap == 0.05 and changes == {"data.iuv_errors.part_swap": 0.05}
    with pytest.raises(workdir_lib.ConfigError):
        workdir_lib.evaluation_config(trained_copy, overrides={"data.dense_keep": 0.5})  # a training setting
