"""Tests for configs/: every config loads, and the per-dataset and mixed configs say what they train on."""

from __future__ import annotations

import glob
import importlib
import os

import pytest

from dct_jax import protocols, workdir
from dct_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("seed", "dataset", "data_dir", "batch_size", "num_train_steps", "learning_rate",
            "eval_every_steps", "checkpoint_every_steps", "model")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))))
def test_every_config_has_the_interface_fields(path):
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "__init__":
        return
    config = importlib.import_module(f"configs.{name}").get_config()
    for field in REQUIRED:
        assert field in config, (name, field)
    assert config.eval.protocol == "auto"
    # Valid as they are, and on 1, 2, 4 and 8 devices (evaluation pads any batch; training splits the batch).
    workdir.validate(config)
    assert config.batch_size % 8 == 0, (name, config.batch_size)


@pytest.mark.parametrize("name, protocol, eval_split", [
    ("up3d", "official", "test"), ("pw3d", "pw3d", "test"), ("h36m", "h36m", "valid_protocol2"),
    ("coco_densepose", "dense", "minival")])
def test_dataset_configs_select_the_dataset_and_its_protocol(name, protocol, eval_split):
    from configs import dataset

    config = dataset.get_config(name)
    assert config.dataset == name and config.eval_split == eval_split
    assert protocols.protocol_for(config.dataset, config.eval.protocol) == protocol
    with pytest.raises(ValueError, match="one of"):
        dataset.get_config("lsp")


def test_mixed_config_trains_on_three_datasets():
    from configs import mixed

    config = mixed.get_config()
    entries = pipeline.parse_mixture(config.train_mixture, config.train_split)
    assert [name for name, _, _ in entries] == ["up3d", "coco_densepose", "h36m"]
    assert config.loss.smpl > 0 and config.loss.dense > 0 and config.loss.keypoints3d > 0
