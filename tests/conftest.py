"""Shared fixtures: a tiny synthetic dataset built once per test session."""

from __future__ import annotations

import os
import tempfile

import jax
import pytest

# Training tests compile the same small steps in several runs (and subprocesses):
# a persistent compilation cache for the session saves most of that time.
_CACHE_DIR = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dct_jax_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

TINY_SPLITS = {"train": 12, "test": 6}
TINY_STUDIO_SPLITS = {"train": 8, "test": 4}
TINY_IMAGE_SIZE = 64


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    """A data_dir holding ``synthetic`` (12 train, 6 test records) and ``studio`` (8, 4) of 64x64 pixels."""
    import datasets

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = datasets.builder_class("synthetic")(
        data_dir=data_dir, split_sizes=TINY_SPLITS, image_size=TINY_IMAGE_SIZE)
    builder.download_and_prepare()
    # The studio set (the Human3.6M stand-in of the paper's protocol) beside it.
    datasets.builder_class("studio")(
        data_dir=data_dir, split_sizes=TINY_STUDIO_SPLITS, image_size=TINY_IMAGE_SIZE).download_and_prepare()
    return data_dir


def tiny_config(data_dir: str, inputs: str = "image_iuv"):
    """A training config small enough for a test: ResNet-10 of width 8 on 32x32 crops."""
    from configs import default

    config = default.get_config()
    config.data_dir = data_dir
    config.batch_size = 4
    config.eval_batch_size = 4
    config.num_train_steps = 4
    config.learning_rate = 1e-3
    config.log_every_steps = 2
    config.image_summary_every_steps = 2
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 2
    config.max_checkpoints_to_keep = 5
    config.data.image_size = 32
    config.data.num_dense = 20
    config.data.threads = 0
    config.model.inputs = inputs
    config.model.depth = 10
    config.model.aux_depth = 10
    config.model.width = 8
    config.model.feature_dim = 32
    config.model.hidden_dim = 32
    return config


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_data_dir, tmp_path_factory):
    """``tiny_checkpoint(inputs) -> workdir`` of a 2-step tiny training run (one per inputs, cached)."""
    from dct_jax import train

    workdirs: dict[str, str] = {}

    def make(inputs: str = "image_iuv") -> str:
        if inputs not in workdirs:
            config = tiny_config(tiny_data_dir, inputs)
            config.num_train_steps = 2
            config.image_summary_every_steps = 0
            workdir = str(tmp_path_factory.mktemp(f"ckpt_{inputs}"))
            train.train_and_evaluate(config, workdir)
            workdirs[inputs] = workdir
        return workdirs[inputs]

    return make
